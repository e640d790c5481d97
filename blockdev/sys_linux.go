//go:build linux

package blockdev

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// control runs fn with f's descriptor, keeping f alive meanwhile.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// deviceSize returns the size of the block device f in bytes.
func deviceSize(f *os.File) (int64, error) {
	var n uint64
	err := control(f, func(fd int) error {
		// x/sys has no IoctlGetUint64; BLKGETSIZE64 writes a u64.
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n)))
		if e != 0 {
			return e
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("BLKGETSIZE64 %s: %w", f.Name(), err)
	}
	if n > 1<<62 {
		return 0, fmt.Errorf("BLKGETSIZE64 %s: implausible size %d", f.Name(), n)
	}
	return int64(n), nil
}

// errNoSeekData reports a file system without SEEK_DATA/SEEK_HOLE; the
// file is then read as all data.
var errNoSeekData = errors.New("SEEK_DATA not supported")

// seekData returns the offset of the first data byte at or after off, or
// ok=false when there is none before the end of the file.
func seekData(f *os.File, off int64) (next int64, ok bool, err error) {
	err = control(f, func(fd int) error {
		var e error
		next, e = unix.Seek(fd, off, unix.SEEK_DATA)
		return e
	})
	switch {
	case err == nil:
		return next, true, nil
	case errors.Is(err, unix.ENXIO):
		return 0, false, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP):
		return 0, false, errNoSeekData
	}
	return 0, false, fmt.Errorf("seek data %s at %d: %w", f.Name(), off, err)
}

// seekHole returns the offset of the first hole byte at or after off (the
// end of the file counts as a hole), or ok=false when off is beyond the end.
func seekHole(f *os.File, off int64) (next int64, ok bool, err error) {
	err = control(f, func(fd int) error {
		var e error
		next, e = unix.Seek(fd, off, unix.SEEK_HOLE)
		return e
	})
	switch {
	case err == nil:
		return next, true, nil
	case errors.Is(err, unix.ENXIO):
		return 0, false, nil
	}
	return 0, false, fmt.Errorf("seek hole %s at %d: %w", f.Name(), off, err)
}

// dropCache asks the kernel to drop the cached pages of f in [off, off+n).
// It is advice: errors are ignored.
func dropCache(f *os.File, off, n int64) {
	_ = control(f, func(fd int) error { return unix.Fadvise(fd, off, n, unix.FADV_DONTNEED) })
}

// noCachestat is set once cachestat(2) failed with ENOSYS (before Linux
// 6.5), so that mostlyCached stops asking.
var noCachestat atomic.Bool

// mostlyCached reports whether the page cache holds at least 7/8 of the
// pages of f in [off, off+n), so that a read through the cache adds few
// pages of its own to it. It answers false when it cannot tell: the source
// is then read as if cold.
func mostlyCached(f *os.File, off, n int64) bool {
	if n <= 0 || noCachestat.Load() {
		return false
	}
	var st unix.Cachestat_t
	err := control(f, func(fd int) error {
		return unix.Cachestat(uint(fd), &unix.CachestatRange{Off: uint64(off), Len: uint64(n)}, &st, 0)
	})
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			noCachestat.Store(true)
		}
		return false
	}
	page := int64(unix.Getpagesize())
	pages := (off+n+page-1)/page - off/page
	return int64(st.Cache)*8 >= pages*7
}

// mapHuge maps size bytes of anonymous memory at an address aligned to
// hugePage and asks for transparent huge pages there (advice: the kernel may
// give small pages). It returns nil where the mapping fails.
func mapHuge(size int) (mem []byte, unmap func()) {
	m, err := unix.Mmap(-1, 0, size+hugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, nil
	}
	k := (hugePage - int(uintptr(unsafe.Pointer(unsafe.SliceData(m)))%hugePage)) % hugePage
	mem = m[k : k+size : k+size]
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
	return mem, func() { _ = unix.Munmap(m) }
}

// adviseSequential tells the kernel f will be read sequentially, which
// doubles its readahead window. It is advice: errors are ignored.
func adviseSequential(f *os.File) {
	_ = control(f, func(fd int) error { return unix.Fadvise(fd, 0, 0, unix.FADV_SEQUENTIAL) })
}

// openDirect opens f again with O_DIRECT and flag (os.O_RDONLY for a
// source, os.O_WRONLY for a restore target), through /proc/self/fd so that
// it is f's file whatever happened to its path since, or returns nil when
// that is not possible here: O_DIRECT refused (some file systems), no
// /proc, or a device whose logical blocks are larger than directAlign. The
// caller then reads or writes f only, through the page cache.
func openDirect(f *os.File, flag int, device bool) *os.File {
	path := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	fd, err := unix.Open(path, flag|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	if device {
		bs, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
		if err != nil || bs <= 0 || directAlign%bs != 0 {
			_ = unix.Close(fd)
			return nil
		}
	}
	return os.NewFile(uintptr(fd), f.Name())
}

// openDeviceExclusive opens the block device path for writing with O_EXCL,
// which Linux refuses with EBUSY while the device is mounted or claimed by
// another driver (device mapper, md, swap).
func openDeviceExclusive(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_EXCL, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("%w: %s is busy (mounted or held by another driver)", ErrTargetInUse, path)
	}
	return f, err
}

// devMajor and devMinor split a Linux device number.
func devMajor(dev uint64) uint32 { return unix.Major(dev) }
func devMinor(dev uint64) uint32 { return unix.Minor(dev) }
