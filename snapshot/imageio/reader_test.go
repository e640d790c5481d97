package imageio

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// testContent stores a TestImage of n bytes in a MemStore.
func testContent(t testing.TB, n int) (*snapshot.MemStore, []byte, snapshot.Content, int) {
	t.Helper()
	s := snapshot.NewMemStore()
	data := TestImage(n, 7)
	c, chunks, err := SaveTestContent(context.Background(), s, data, 4<<10, 32<<10, 7)
	if err != nil {
		t.Fatal(err)
	}
	if c.Level == 0 {
		t.Fatalf("test content is not paged (%d extents)", c.Count())
	}
	return s, data, c, chunks
}

// slowLoader delays every data-chunk load and counts them per ID.
type slowLoader struct {
	snapshot.ChunkLoader
	delay time.Duration
	loads atomic.Int64

	mu    sync.Mutex
	perID map[chunk.ID]int
}

func (l *slowLoader) LoadChunk(ctx context.Context, h chunk.Handle, buf []byte) ([]byte, error) {
	if h.Kind == chunk.KindData {
		l.loads.Add(1)
		l.mu.Lock()
		if l.perID == nil {
			l.perID = make(map[chunk.ID]int)
		}
		l.perID[h.ID]++
		l.mu.Unlock()
		select {
		case <-time.After(l.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return l.ChunkLoader.LoadChunk(ctx, h, buf)
}

func TestRandomReadsEqualSource(t *testing.T) {
	s, data, c, _ := testContent(t, 5<<20)
	r := NewReaderAt(s, c, int64(len(data)), Options{})
	defer r.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 256<<10)
	for i := range 2000 {
		off := rng.Int64N(int64(len(data)))
		n := 1 + rng.IntN(len(buf))
		if i%4 == 0 {
			n = 4096 // the typical block read
		}
		got, err := r.ReadAt(buf[:n], off)
		want := data[off:min(off+int64(n), int64(len(data)))]
		if len(want) < n {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("read %d at %d past the end: err %v, want io.EOF", n, off, err)
			}
		} else if err != nil {
			t.Fatalf("read %d at %d: %v", n, off, err)
		}
		if got != len(want) || !bytes.Equal(buf[:got], want) {
			t.Fatalf("read %d at %d: got %d bytes differing from the source", n, off, got)
		}
	}
	if n, err := r.ReadAt(buf[:10], int64(len(data))); n != 0 || err != io.EOF {
		t.Errorf("read at the end: %d, %v; want 0, io.EOF", n, err)
	}
	if _, err := r.ReadAt(buf[:10], -1); err == nil {
		t.Error("read at a negative offset succeeded")
	}
	// io.SectionReader over the ReaderAt gives the whole image.
	all, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("sequential read of the whole image: %v, equal %v", err, bytes.Equal(all, data))
	}
}

func TestCacheStaysBoundedAndServesRepeats(t *testing.T) {
	s, data, c, _ := testContent(t, 6<<20)
	cache := NewCache(1 << 20)
	r := NewReaderAt(s, c, int64(len(data)), Options{Cache: cache, ReadAhead: -1})
	defer r.Close()
	buf := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		off := rng.Int64N(int64(len(data)) - 4096)
		if _, err := r.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if st := cache.Stats(); st.Bytes > 1<<20 {
			t.Fatalf("cache holds %d bytes, limit 1 MiB", st.Bytes)
		}
	}
	st := cache.Stats()
	if st.Evictions == 0 {
		t.Errorf("no evictions after random reads over 6 MiB through a 1 MiB cache: %+v", st)
	}
	// Reading one block again and again loads its chunk once.
	before := s.Stats().Loads
	for range 100 {
		if _, err := r.ReadAt(buf, 123<<10); err != nil {
			t.Fatal(err)
		}
	}
	if loads := s.Stats().Loads - before; loads > 1 {
		t.Errorf("100 reads of one block loaded %d chunks, want at most 1", loads)
	}
}

func TestConcurrentReadersLoadEachChunkOnce(t *testing.T) {
	s, data, c, _ := testContent(t, 4<<20)
	l := &slowLoader{ChunkLoader: s, delay: time.Millisecond}
	cache := NewCache(64 << 20) // everything fits: a second load of a chunk can only come from a race
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Several readers share the cache; some share a ReaderAt.
			r := NewReaderAt(l, c, int64(len(data)), Options{Cache: cache})
			defer r.Close()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			buf := make([]byte, 64<<10)
			for range 200 {
				off := rng.Int64N(int64(len(data)) - int64(len(buf)))
				if _, err := r.ReadAt(buf, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
					errs <- errors.New("concurrent read returned wrong bytes")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, n := range l.perID {
		if n > 1 {
			t.Fatalf("chunk %v loaded %d times by concurrent readers sharing a cache", id.Short(), n)
		}
	}
}

func TestSequentialReaderIsPrefetched(t *testing.T) {
	// Chunks of 32–128 KiB, like the image chunker's (64 KiB–1 MiB, 128 KiB
	// on average), a little smaller to keep the test quick.
	s := snapshot.NewMemStore()
	data := TestImage(8<<20, 7)
	c, chunks, err := SaveTestContent(context.Background(), s, data, 32<<10, 128<<10, 7)
	if err != nil {
		t.Fatal(err)
	}
	read := func(readAhead int) (CacheStats, time.Duration) {
		l := &slowLoader{ChunkLoader: s, delay: 2 * time.Millisecond}
		cache := NewCache(64 << 20)
		r := NewReaderAt(l, c, int64(len(data)), Options{Cache: cache, ReadAhead: readAhead})
		defer r.Close()
		start := time.Now()
		// 128 KiB reads, as the kernel's read-ahead and NBD clients issue.
		buf := make([]byte, 128<<10)
		for off := int64(0); off < r.Size(); off += int64(len(buf)) {
			n, err := r.ReadAt(buf, off)
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
				t.Fatalf("sequential read at %d differs from the source", off)
			}
		}
		return cache.Stats(), time.Since(start)
	}
	on, tOn := read(0)
	off, tOff := read(-1)
	t.Logf("%d chunks; read-ahead on: %+v in %v; off: %+v in %v", chunks, on, tOn, off, tOff)
	if off.Prefetches != 0 {
		t.Errorf("read-ahead off still prefetched %d chunks", off.Prefetches)
	}
	// With read-ahead the reader itself starts only a few loads: the rest
	// were started in the background before it asked.
	if on.Misses > int64(chunks)/4 {
		t.Errorf("sequential reader with read-ahead started %d of %d loads itself", on.Misses, chunks)
	}
	if on.Prefetches+on.Misses > int64(chunks) {
		t.Errorf("read-ahead loaded %d chunks for %d", on.Prefetches+on.Misses, chunks)
	}
}

func TestRandomReaderIsNotPrefetched(t *testing.T) {
	s, data, c, _ := testContent(t, 16<<20)
	cache := NewCache(64 << 20)
	r := NewReaderAt(s, c, int64(len(data)), Options{Cache: cache})
	defer r.Close()
	buf := make([]byte, 4096)
	for i := range 30 {
		// Offsets 512 KiB apart in a scrambled order: never sequential.
		off := int64((i*7)%30) * (512 << 10)
		if _, err := r.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	if p := cache.Stats().Prefetches; p != 0 {
		t.Errorf("random 4 KiB reads prefetched %d chunks", p)
	}
}

func TestBadContentGivesErrors(t *testing.T) {
	s, data, c, _ := testContent(t, 2<<20)
	buf := make([]byte, 4096)

	r := NewReaderAt(s, c, int64(len(data))+1, Options{})
	if _, err := r.ReadAt(buf, 0); err == nil || !strings.Contains(err.Error(), "covers") {
		t.Errorf("size mismatch: err %v", err)
	}
	r.Close()

	// Damage the chunk at offset 0: reading it fails, naming the blob,
	// and never returns wrong bytes; other chunks still read.
	r = NewReaderAt(s, c, int64(len(data)), Options{ReadAhead: -1})
	defer r.Close()
	_, e, err := snapshot.NewContentReader(s, c).Find(context.Background(), 0)
	if err != nil || e.Hole() {
		t.Fatalf("find: %v, hole %v", err, e.Hole())
	}
	s.Corrupt(e.ID)
	if _, err := r.ReadAt(buf, 0); err == nil || !strings.Contains(err.Error(), e.ID.Short()) {
		t.Errorf("damaged chunk: err %v, want one naming %v", err, e.ID.Short())
	}
	off := int64(1<<20 - 4096)
	if _, err := r.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+4096]) {
		t.Errorf("undamaged chunk after a damaged one: %v", err)
	}

	// A cancelled context stops a read.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.ReadAtContext(ctx, buf, 1<<20+5); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled read: %v", err)
	}
}
