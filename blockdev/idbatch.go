package blockdev

import (
	"sort"
	"sync"

	"github.com/imagobackup/imago/chunk"
)

// idBatch holds the IDs of the image's bytes under a run of contiguous
// parent data extents, hashed together by worker.hashAhead, until reuse
// and emitChunk ask for them (lookup).
type idBatch struct {
	hashers int // goroutines that share a batch, the caller's included
	offs    []uint64
	lens    []uint64
	ids     []chunk.ID
}

// reset forgets the batch.
func (b *idBatch) reset() {
	b.offs, b.lens, b.ids = b.offs[:0], b.lens[:0], b.ids[:0]
}

// lookup returns the ID of the n bytes at image offset off, if the batch
// holds it.
func (b *idBatch) lookup(off, n uint64) (chunk.ID, bool) {
	k := sort.Search(len(b.offs), func(k int) bool { return b.offs[k] >= off })
	if k < len(b.offs) && b.offs[k] == off && b.lens[k] == n {
		return b.ids[k], true
	}
	return chunk.ID{}, false
}

// hashBatchMin is the least number of chunks worth sharing between
// goroutines: below it the caller hashes them alone.
const hashBatchMin = 4

// hash replaces the batch with the IDs of the bytes under ext, contiguous
// data extents whose first starts at d[0]; the extents that d does not
// hold entirely (it ends early at a span's end) are left out. The hashing
// is split into contiguous parts, one per goroutine; hash returns when all
// are done, so that the caller may change d's memory afterwards.
func (b *idBatch) hash(h Hasher, ext []parentExtent, d []byte) {
	b.reset()
	base := ext[0].start
	for _, e := range ext {
		if e.start+e.Length-base > uint64(len(d)) {
			break
		}
		b.offs = append(b.offs, e.start)
		b.lens = append(b.lens, e.Length)
	}
	n := len(b.offs)
	if cap(b.ids) < n {
		b.ids = make([]chunk.ID, n)
	}
	b.ids = b.ids[:n]
	part := func(lo, hi int) {
		for k := lo; k < hi; k++ {
			rel := b.offs[k] - base
			b.ids[k] = h.HashChunk(d[rel : rel+b.lens[k]])
		}
	}
	parts := min(b.hashers, n/hashBatchMin)
	if parts <= 1 {
		part(0, n)
		return
	}
	var wg sync.WaitGroup
	for p := 1; p < parts; p++ {
		wg.Go(func() { part(p*n/parts, (p+1)*n/parts) })
	}
	part(0, n/parts)
	wg.Wait()
}
