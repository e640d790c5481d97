package blockdev

import (
	"errors"
	"io"
	"syscall"
	"unsafe"
)

// directAlign is the alignment of direct reads: their offset, length and
// buffer address. 4096 is a multiple of the logical block size of every
// disk we read (512 or 4096) and of the page size; a device with larger
// blocks, or a read the kernel still refuses (EINVAL), is read through the
// page cache instead.
const directAlign = 4096

// alignedBuf returns n bytes whose first byte is at a multiple of
// directAlign in memory.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	k := directAlign - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))%directAlign)
	k %= directAlign
	return b[k : k+n : k+n]
}

// memAligned reports whether p starts at a multiple of directAlign.
func memAligned(p []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign == 0
}

// alignDown and alignUp round off to a multiple of directAlign.
func alignDown(off int64) int64 { return off - off%directAlign }
func alignUp(off int64) int64   { return alignDown(off + directAlign - 1) }

// readDirect reads p (aligned in memory, offset and length) at off with
// O_DIRECT and returns how many bytes it read; the caller reads the rest
// the buffered way. It stops early, without an error, at a short read (the
// caller's buffered read then reports the file's end) and when the kernel
// refuses the read with EINVAL, after which the source reads buffered for
// the rest of the run: a file system may accept O_DIRECT at open and not
// at read, or want a larger alignment.
func (s *Source) readDirect(p []byte, off int64) (int, error) {
	var (
		n   int
		err error
	)
	if s.testDirectEINVAL {
		err = syscall.EINVAL
	} else {
		n, err = s.direct.ReadAt(p, off)
	}
	s.directBytes.Add(int64(n))
	switch {
	case err == nil || errors.Is(err, io.EOF):
		return n, nil
	case errors.Is(err, syscall.EINVAL):
		s.noDirect.Store(true)
		return n, nil
	}
	return n, err
}
