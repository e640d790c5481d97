package archive

import (
	"math/bits"
	"sync"
)

const (
	// minClass is the smallest buffer handed out: most files are smaller,
	// and a page is the least the allocator gives anyway.
	minClass = 4 << 10
	// maxPooled is the largest buffer the pool keeps: chunk.MaxChunkSize
	// (8 MiB). Larger buffers are left to the garbage collector.
	maxPooled = 8 << 20
	// classesPerDoubling is the number of size classes between two powers
	// of two. Four classes (5/4, 6/4, 7/4, 8/4 of the lower power) waste at
	// most 25% of a buffer where power-of-two classes waste up to 50%, so
	// the bytes-in-flight budget (charged by class size) holds more chunks.
	classesPerDoubling = 4
)

// bufPool hands out byte slices in size classes and takes them back. It
// refuses buffers larger than maxPooled or not of a class size, so one odd
// buffer cannot pin memory. It is safe for concurrent use.
type bufPool struct {
	pools [64 * classesPerDoubling]sync.Pool // of *[]byte, indexed by classIndex
}

// classOf returns the size class of n: the smallest class size >= n, and
// the index of its pool.
func classOf(n int) (size, index int) {
	if n <= minClass {
		n = minClass
	}
	// For n-1 with bit length L, the top three bits (n-1)>>(L-3) lie in
	// [4, 7]; one more gives a multiplier in [5, 8] of 2^(L-3).
	shift := bits.Len(uint(n-1)) - 3
	m := (n-1)>>shift + 1
	return m << shift, shift*classesPerDoubling + m - 5
}

// get returns a buffer of length n from the class that holds n.
func (p *bufPool) get(n int) []byte {
	size, i := classOf(n)
	if size <= maxPooled {
		if b, ok := p.pools[i].Get().(*[]byte); ok {
			return (*b)[:n]
		}
	}
	return make([]byte, n, size)
}

// put returns b to the pool unless it is oversized or not of a class size.
func (p *bufPool) put(b []byte) {
	c := cap(b)
	size, i := classOf(c)
	if size != c || c > maxPooled {
		return
	}
	b = b[:0]
	p.pools[i].Put(&b)
}
