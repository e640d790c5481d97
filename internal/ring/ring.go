// Package ring is the fixed-size buffer that backup pipelines cut chunks
// into: one goroutine reserves and commits regions at the head, save
// workers give them back in any order. snapshot/archive (file trees) and
// blockdev (images) both use it.
package ring

import (
	"context"
	"fmt"
	"sync"
)

// Ring holds the chunks a reader cut until they are saved, in one buffer of
// fixed size: the reader reserves room for the next chunk at the head, the
// splitter cuts the chunk straight into it, and the reader keeps what it
// used (commit); the save workers give regions back in any order, and a
// region is reused once it and every region before it are back. Save
// workers take jobs in order and finish them nearly so; a slow job holds
// back at most the ring. Unlike pooled buffers, the ring allocates nothing
// after its first use, holds exactly its size, and a chunk is never copied.
type Ring struct {
	buf []byte
	// res is the end, in ring order, of the reservation not yet
	// committed; only the allocating goroutine touches it.
	res int64

	// mu guards the fields below.
	mu         sync.Mutex
	head, tail int64         // bytes handed out and taken back, in ring order
	regions    []region      // handed out and not yet reclaimed, oldest first
	freed      chan struct{} // closed, and replaced, when tail moves
}

// region is a region of the ring: its end in ring order, and whether it
// was given back.
type region struct {
	end  int64
	back bool
}

// New returns a ring of size bytes.
func New(size int) *Ring {
	return &Ring{buf: make([]byte, size), freed: make(chan struct{})}
}

// Reserve returns n contiguous bytes (at most the ring's size) at the head
// once they are free, for the chunk commit then keeps. One goroutine
// reserves and commits, alternately.
func (r *Ring) Reserve(ctx context.Context, n int) ([]byte, error) {
	size := int64(len(r.buf))
	if int64(n) > size {
		return nil, fmt.Errorf("ring: internal error: chunk of %d bytes for a ring of %d", n, size)
	}
	for {
		r.mu.Lock()
		if len(r.regions) == 0 {
			// All back: start again at the ring's start.
			r.head = (r.head + size - 1) / size * size
			r.tail = r.head
		}
		start := r.head
		if off := start % size; off+int64(n) > size {
			start += size - off // skip the ring's end: a region never wraps
		}
		if start+int64(n)-r.tail <= size {
			r.head, r.res = start, start+int64(n)
			r.mu.Unlock()
			off := start % size
			return r.buf[off : off+int64(n) : off+int64(n)], nil
		}
		freed := r.freed
		r.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Commit keeps the first n bytes of the last reservation as a region, to
// be given back with Put(end), and returns end; n = 0 keeps nothing (and
// Put(0) does nothing).
func (r *Ring) Commit(n int) int64 {
	if n == 0 {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	end := r.head + int64(n)
	if end > r.res {
		panic("ring: commit beyond the reservation")
	}
	r.head = end
	r.regions = append(r.regions, region{end: end})
	return end
}

// Put gives back the region that ends at end.
func (r *Ring) Put(end int64) {
	if end == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.regions {
		if r.regions[i].end == end {
			r.regions[i].back = true
			break
		}
	}
	moved := false
	for len(r.regions) > 0 && r.regions[0].back {
		r.tail = r.regions[0].end
		r.regions = r.regions[1:]
		moved = true
	}
	if moved {
		close(r.freed)
		r.freed = make(chan struct{})
	}
}
