package faulty

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/imagobackup/imago/repo/backend"
)

// ErrInjected is the cause inside every transient error that Transient
// injects.
var ErrInjected = errors.New("faulty: injected failure")

// Stats counts the calls that reached a Backend since it was made or since
// ResetCounts. Saves, Loads, Lists and Removes count every call, also
// failed ones; BytesSaved counts the bytes of successful saves and
// BytesLoaded the bytes that Load callbacks read.
type Stats struct {
	Saves, Loads, BytesSaved, BytesLoaded, Lists, Removes int64
	LoadsByType                                           map[backend.FileType]int64
}

// Backend wraps another backend with fault injection and counters. It is
// safe for concurrent use.
type Backend struct {
	be backend.Backend

	// mu guards the knobs and counters below.
	mu          sync.Mutex
	saveFailAt  int // fail the saveFailAt-th Save since the knob was set, and later ones; 0: off
	saveErr     error
	saveCalls   int // Save calls since FailSaveAfter
	removeAt    int
	removeErr   error
	removeCalls int
	loadFail    func(h backend.Handle) error
	truncate    bool
	rate        float64
	rnd         *rand.Rand
	stats       Stats
}

var _ backend.Backend = (*Backend)(nil)

// New wraps be with every knob off.
func New(be backend.Backend) *Backend {
	return &Backend{be: be, stats: Stats{LoadsByType: map[backend.FileType]int64{}}}
}

// FailSaveAfter makes the n-th Save call from now on, and every later one,
// return err without saving anything: FailSaveAfter(1, err) fails all
// saves. n <= 0 or a nil err turns the knob off.
func (b *Backend) FailSaveAfter(n int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.saveFailAt, b.saveErr, b.saveCalls = n, err, 0
	if n <= 0 || err == nil {
		b.saveFailAt = 0
	}
}

// FailRemoveAfter makes the n-th Remove call from now on, and every later
// one, return err without removing anything. n <= 0 or a nil err turns the
// knob off.
func (b *Backend) FailRemoveAfter(n int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.removeAt, b.removeErr, b.removeCalls = n, err, 0
	if n <= 0 || err == nil {
		b.removeAt = 0
	}
}

// FailLoad calls fn before every Load and Stat; if fn returns an error, the
// call returns it without reading. Returning backend.ErrNotExist simulates
// a lost file. A nil fn turns the knob off. fn may be called from several
// goroutines at once.
func (b *Backend) FailLoad(fn func(h backend.Handle) error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.loadFail = fn
}

// TruncateLoads makes every Load hand its callback a reader that ends
// silently (io.EOF) after half of the requested bytes, as a broken store
// might. Callers must notice the short read.
func (b *Backend) TruncateLoads(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.truncate = on
}

// Transient makes every call (Save, Load, Stat, List, Remove) fail with a
// *backend.TransientError wrapping ErrInjected with probability rate,
// before it does anything. The failures follow a pseudo-random sequence
// from seed; rate <= 0 turns the knob off.
func (b *Backend) Transient(rate float64, seed int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rate = rate
	b.rnd = rand.New(rand.NewPCG(uint64(seed), 0))
}

// Counts returns the counters.
func (b *Backend) Counts() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.LoadsByType = make(map[backend.FileType]int64, len(b.stats.LoadsByType))
	for t, n := range b.stats.LoadsByType {
		s.LoadsByType[t] = n
	}
	return s
}

// ResetCounts sets every counter to zero. The call counts of FailSaveAfter
// and FailRemoveAfter are not affected.
func (b *Backend) ResetCounts() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats = Stats{LoadsByType: map[backend.FileType]int64{}}
}

// transientLocked returns an injected transient error or nil.
func (b *Backend) transientLocked(op string, h backend.Handle) error {
	if b.rate <= 0 || b.rnd.Float64() >= b.rate {
		return nil
	}
	return &backend.TransientError{Err: fmt.Errorf("%s %v: %w", op, h, ErrInjected)}
}

// Location returns the location of the wrapped backend.
func (b *Backend) Location() string { return b.be.Location() }

// Save passes the call on unless a knob fails it.
func (b *Backend) Save(ctx context.Context, h backend.Handle, rd io.ReaderAt, size int64) error {
	b.mu.Lock()
	b.stats.Saves++
	err := b.transientLocked("save", h)
	if err == nil && b.saveFailAt > 0 {
		b.saveCalls++
		if b.saveCalls >= b.saveFailAt {
			err = b.saveErr
		}
	}
	b.mu.Unlock()
	if err != nil {
		return err
	}
	if err := b.be.Save(ctx, h, rd, size); err != nil {
		return err
	}
	b.mu.Lock()
	b.stats.BytesSaved += size
	b.mu.Unlock()
	return nil
}

// Load passes the call on unless a knob fails it, counting the bytes fn
// reads and truncating them if asked to.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	b.mu.Lock()
	b.stats.Loads++
	b.stats.LoadsByType[h.Type]++
	err := b.transientLocked("load", h)
	failFn, truncate := b.loadFail, b.truncate
	b.mu.Unlock()
	if err != nil {
		return err
	}
	if failFn != nil {
		if err := failFn(h); err != nil {
			return err
		}
	}
	want := int64(length)
	if truncate && length == 0 {
		fi, err := b.be.Stat(ctx, h)
		if err != nil {
			return err
		}
		want = fi.Size - offset
	}
	return b.be.Load(ctx, h, length, offset, func(rd io.Reader) error {
		cr := &countingReader{r: rd}
		if truncate {
			cr.r = io.LimitReader(rd, want/2)
		}
		err := fn(cr)
		b.mu.Lock()
		b.stats.BytesLoaded += cr.n.Load()
		b.mu.Unlock()
		return err
	})
}

// countingReader counts the bytes read through it; fn may hand it to
// another goroutine, hence the atomic counter.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Stat passes the call on unless Transient or FailLoad fails it.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	b.mu.Lock()
	err := b.transientLocked("stat", h)
	failFn := b.loadFail
	b.mu.Unlock()
	if err != nil {
		return backend.FileInfo{}, err
	}
	if failFn != nil {
		if err := failFn(h); err != nil {
			return backend.FileInfo{}, err
		}
	}
	return b.be.Stat(ctx, h)
}

// List passes the call on unless Transient fails it.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	b.mu.Lock()
	b.stats.Lists++
	err := b.transientLocked("list", backend.Handle{Type: t})
	b.mu.Unlock()
	if err != nil {
		return err
	}
	return b.be.List(ctx, t, fn)
}

// Remove passes the call on unless a knob fails it.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	b.mu.Lock()
	b.stats.Removes++
	err := b.transientLocked("remove", h)
	if err == nil && b.removeAt > 0 {
		b.removeCalls++
		if b.removeCalls >= b.removeAt {
			err = b.removeErr
		}
	}
	b.mu.Unlock()
	if err != nil {
		return err
	}
	return b.be.Remove(ctx, h)
}

// Close closes the wrapped backend.
func (b *Backend) Close() error { return b.be.Close() }
