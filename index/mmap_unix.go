//go:build unix && !zos

package index

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapFile maps the first size bytes of f read-only. The mapping is shared, so
// its pages are the page cache's: they count in the resident set of the
// process only while its page tables point at them, and dropping them
// (dontNeed) costs no I/O. The mapping stays valid after f is closed and
// unlinked, and after another file is renamed over f's name; it must not be
// truncated in place, which would fault on access.
func mapFile(f *os.File, size int64) ([]byte, error) {
	if size <= 0 || size != int64(int(size)) {
		return nil, fmt.Errorf("map %s: size %d out of range", f.Name(), size)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", f.Name(), err)
	}
	return b, nil
}

// unmap releases a mapping made by mapFile.
func unmap(b []byte) error { return unix.Munmap(b) }

// pageMask rounds an address down to its page.
var pageMask = ^uintptr(os.Getpagesize() - 1)

// advise gives the kernel advice about the pages that hold b, which is a
// part of a mapping. The start is rounded down to a page boundary (madvise
// requires it); advice is a hint, so its errors are ignored.
func advise(b []byte, advice int) {
	if len(b) == 0 {
		return
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	off := uintptr(p) - uintptr(p)&pageMask
	_ = unix.Madvise(unsafe.Slice((*byte)(unsafe.Add(p, -int(off))), uintptr(len(b))+off), advice)
}

// dontNeed drops the pages of b from the page tables of the process. The
// pages stay in the page cache; touching them again faults them back in.
func dontNeed(b []byte) { advise(b, unix.MADV_DONTNEED) }

// willNeed starts reading the pages of b ahead of a sequential pass.
func willNeed(b []byte) { advise(b, unix.MADV_WILLNEED) }

// randomAccess turns off read-ahead for b: a lookup reads one page of a
// record section, and read-ahead would read 32 for it from a cold disk.
func randomAccess(b []byte) { advise(b, unix.MADV_RANDOM) }

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
