package blockdev

import (
	"runtime"
	"testing"
	"unsafe"
)

// TestArenaBlocks takes more blocks than the arena holds: each is aligned
// for direct reads, the mapped ones do not overlap and come from the
// mapping in order, and the rest (and all after release) come from the
// heap, still aligned and writable.
func TestArenaBlocks(t *testing.T) {
	a := newArena(4 * readBlock)
	if a.unmap == nil && runtime.GOOS == "linux" {
		t.Fatal("no mapping on Linux")
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(a.mem)))
	if a.unmap != nil && start%hugePage != 0 {
		t.Fatalf("mapping at %#x, not aligned to a huge page", start)
	}
	var blocks [][]byte
	for range 6 {
		b := a.get(readBlock)
		if len(b) != readBlock || cap(b) != readBlock || !memAligned(b) {
			t.Fatalf("block of %d bytes (cap %d), aligned %v", len(b), cap(b), memAligned(b))
		}
		b[0], b[readBlock-1] = 1, 2
		blocks = append(blocks, b)
	}
	for i, b := range blocks[:4] {
		at := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		if a.unmap != nil && at != start+uintptr(i*readBlock) {
			t.Fatalf("block %d at %#x, want %#x", i, at, start+uintptr(i*readBlock))
		}
	}
	for _, b := range blocks[4:] {
		at := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		if a.unmap != nil && at >= start && at < start+4*readBlock {
			t.Fatal("a block beyond the arena's size is inside its mapping")
		}
	}
	a.release()
	a.release() // twice is harmless
	if b := a.get(readBlock); !memAligned(b) || len(b) != readBlock {
		t.Fatal("a block after release is not a usable heap block")
	}
}
