package imageio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/imagobackup/imago/snapshot"
)

// DefaultReadAhead is the number of chunks prefetched ahead of a sequential
// reader when Options leaves ReadAhead 0: 8 image chunks are ~1 MiB, enough
// to keep the prefetch slots of a Cache busy while the reader copies.
const DefaultReadAhead = 8

// maxStreams is the number of sequential streams a ReaderAt tracks at once
// (several processes or NBD clients reading one image in order).
const maxStreams = 8

// seqSlack is how far a read may start from where a stream's last read
// ended and still count as sequential: the kernel issues a couple of
// 128 KiB reads at once and they may arrive out of order. Reads of a client
// with a deeper queue that land further ahead start streams of their own
// (up to maxStreams), which continue the same way.
const seqSlack = 256 << 10

// Options configure a ReaderAt.
type Options struct {
	// Cache holds decoded chunks. Readers of one repository should share
	// one; nil gives the reader a private cache of DefaultCacheBytes.
	Cache *Cache
	// ReadAhead is the number of chunks to prefetch after the one a
	// sequential read ends in: 0 means DefaultReadAhead, a negative value
	// turns read-ahead off.
	ReadAhead int
}

// ReaderAt reads a content list at random offsets. It implements io.ReaderAt
// and is safe for concurrent use. Close stops its background loads.
type ReaderAt struct {
	l         snapshot.ChunkLoader
	cr        *snapshot.ContentReader
	size      int64
	cache     *Cache
	readAhead int
	err       error // the content list does not match size

	// bg is the reader's lifetime context, not a request's: read-ahead
	// loads run under it after the read that started them has returned,
	// and Close cancels it.
	bg       context.Context
	stop     context.CancelFunc
	prefetch sync.WaitGroup // background loads in flight

	mu sync.Mutex // guards streams
	// streams holds, for recent sequential readers, where their next read
	// is expected and the offset up to which read-ahead was started. Slot
	// 0 is the most recently used.
	streams [maxStreams]stream
}

type stream struct {
	next     int64 // where the next sequential read should start; -1: unused
	prefetch int64 // read-ahead was started for chunks starting before this
}

// NewReaderAt returns a reader of the content c, which must be size bytes
// long (an image node's Size); a mismatch is reported by every read.
func NewReaderAt(l snapshot.ChunkLoader, c snapshot.Content, size int64, opts Options) *ReaderAt {
	r := &ReaderAt{l: l, cr: snapshot.NewContentReader(l, c), size: size, cache: opts.Cache, readAhead: opts.ReadAhead}
	if r.cache == nil {
		r.cache = NewCache(DefaultCacheBytes)
	}
	if r.readAhead == 0 {
		r.readAhead = DefaultReadAhead
	}
	if got := c.Size(); size < 0 || got != uint64(size) {
		r.err = fmt.Errorf("imageio: content list covers %d bytes, the image has %d", got, size)
	}
	for i := range r.streams {
		r.streams[i].next = -1
	}
	r.bg, r.stop = context.WithCancel(context.Background())
	return r
}

// Size returns the content length in bytes.
func (r *ReaderAt) Size() int64 { return r.size }

// Cache returns the reader's chunk cache.
func (r *ReaderAt) Cache() *Cache { return r.cache }

// Close cancels the reader's background loads and waits for them. It must
// not run concurrently with a read; reads after Close still work, without
// read-ahead. Close is idempotent.
func (r *ReaderAt) Close() error {
	r.stop()
	r.prefetch.Wait()
	return nil
}

// ReadAt reads len(p) bytes at off, as io.ReaderAt specifies: fewer bytes
// only at the end of the content (with io.EOF) or on an error.
func (r *ReaderAt) ReadAt(p []byte, off int64) (int, error) {
	return r.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt with a context that cancels the chunk loads the
// read waits for. A damaged or missing chunk gives an error naming it.
func (r *ReaderAt) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if off < 0 {
		return 0, errors.New("imageio: negative offset")
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := p
	if int64(len(p)) > r.size-off {
		want = p[:r.size-off]
	}
	if r.readAhead > 0 && len(want) > 64<<10 {
		r.prefetchWithin(ctx, off, off+int64(len(want)))
	}
	n := 0
	for n < len(want) {
		pos := off + int64(n)
		start, e, err := r.cr.Find(ctx, uint64(pos))
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("imageio: content list ends before offset %d", pos)
			}
			return n, err
		}
		within := uint64(pos) - start
		k := int(min(e.Length-within, uint64(len(want)-n)))
		if e.Hole() {
			clear(want[n : n+k])
		} else {
			data, err := r.cache.get(ctx, r.l, e)
			if err != nil {
				return n, err
			}
			copy(want[n:n+k], data[within:])
		}
		n += k
	}
	if r.readAhead > 0 {
		r.readAheadAfter(ctx, off, off+int64(n))
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// prefetchWithin starts background loads of the chunks of a large read
// [off, end) after its first one, so that they load in parallel while the
// read waits for the first (as far as free prefetch slots allow).
func (r *ReaderAt) prefetchWithin(ctx context.Context, off, end int64) {
	if r.bg.Err() != nil {
		return
	}
	errStop := errors.New("stop")
	first := true
	_ = r.cr.Extents(ctx, uint64(off), func(start uint64, e snapshot.Extent) error {
		if int64(start) >= end {
			return errStop
		}
		if first {
			first = false // the read loads its first chunk itself
			return nil
		}
		if !e.Hole() && !r.cache.startPrefetch(r.bg, r.l, e, &r.prefetch) && !r.cache.has(e.ID) {
			return errStop
		}
		return nil
	})
}

// readAheadAfter records the read [off, end) and, when it continues a
// sequential stream, starts background loads of the next ReadAhead chunks
// after the one holding end, skipping those earlier read-ahead started.
func (r *ReaderAt) readAheadAfter(ctx context.Context, off, end int64) {
	covered, ok := r.advanceStream(off, end)
	if !ok || r.bg.Err() != nil || end >= r.size {
		return
	}
	seen := 0
	upTo := covered // read-ahead now covers the chunks starting before upTo
	errStop := errors.New("stop")
	err := r.cr.Extents(ctx, uint64(end), func(start uint64, e snapshot.Extent) error {
		if int64(start) < end {
			return nil // the chunk holding end: the reader loads it itself
		}
		if seen >= r.readAhead {
			return errStop
		}
		seen++
		if int64(start) < covered {
			return nil
		}
		if !e.Hole() && !r.cache.startPrefetch(r.bg, r.l, e, &r.prefetch) && !r.cache.has(e.ID) {
			return errStop // no prefetch slot free: try again on the next read
		}
		upTo = int64(start + e.Length)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return // read-ahead is best effort; reads report their own errors
	}
	r.mu.Lock()
	if s := &r.streams[0]; s.next == end {
		s.prefetch = max(s.prefetch, upTo)
	}
	r.mu.Unlock()
}

// advanceStream records that [off, end) was read. When the read continues
// a known stream it returns the offset up to which read-ahead of that
// stream was started, and true; a read that starts a new stream only
// records it. It never waits for I/O.
func (r *ReaderAt) advanceStream(off, end int64) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	hit := -1
	for i, s := range r.streams {
		if s.next >= 0 && off >= s.next-seqSlack && off <= s.next+seqSlack {
			hit = i
			break
		}
	}
	if hit < 0 {
		// A new stream replaces the least recently used one.
		copy(r.streams[1:], r.streams[:maxStreams-1])
		r.streams[0] = stream{next: end, prefetch: end}
		return 0, false
	}
	s := r.streams[hit]
	copy(r.streams[1:hit+1], r.streams[:hit])
	s.next = end
	r.streams[0] = s
	return s.prefetch, true
}
