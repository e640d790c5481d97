package blockdev

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
)

// TargetOptions configure OpenTarget.
type TargetOptions struct {
	// Sparse skips the holes of the image on a block device, leaving what
	// the device holds there. Set it only when the device is known to read
	// zeros where nothing was written (a new thin volume, a discarded SSD);
	// otherwise holes are written as zeros. Files always skip holes.
	Sparse bool
}

// Target is where Restore writes an image: a regular file (sparse) or a
// block device. The caller closes it.
type Target struct {
	f         *os.File
	name      string
	device    bool
	skipHoles bool
	size      int64 // the file's length, or the device's capacity

	// direct is the target opened again with O_DIRECT, or nil where that
	// is not possible; writeAt writes the aligned middle of each run of
	// chunks through it. noDirect is set once the kernel refused a direct
	// write; writes then all go through f.
	direct   *os.File
	noDirect atomic.Bool
	// directBytes counts the bytes written with O_DIRECT (for tests).
	directBytes atomic.Int64
	// testDirectEINVAL, set by tests, fails every direct write with EINVAL.
	testDirectEINVAL bool
}

// directMin is the shortest aligned run written with O_DIRECT. A direct
// write returns when the device has the bytes, so small ones cost a
// device round trip each; the page cache absorbs those better.
const directMin = 64 << 10

// writeAt writes p at off. When the target has a direct descriptor and p
// lies in memory aligned as it lies on the target, the part of p between
// the first and the last 4 KiB boundary goes around the page cache with
// O_DIRECT; the rest, and everything once the kernel has refused a direct
// write (EINVAL), through the page cache. Restoring a 1.2 GiB image this
// way on our 2-core test VM spent 0.16 s in the kernel where buffered
// writes spent 0.4–1.5 s (copying into and managing the page cache, most
// of a restore's CPU after decryption and decompression), and the final
// fsync has little left to wait for. It also leaves the machine's page
// cache alone, as a backup's reader does.
func (t *Target) writeAt(p []byte, off int64) error {
	if t.direct != nil && !t.noDirect.Load() {
		a, b := alignUp(off), alignDown(off+int64(len(p)))
		if b-a >= directMin && memAligned(p[a-off:]) {
			if err := t.writeBuffered(p[:a-off], off); err != nil {
				return err
			}
			n, err := t.writeDirect(p[a-off:b-off], a)
			if err != nil {
				return err
			}
			return t.writeBuffered(p[a-off+int64(n):], a+int64(n))
		}
	}
	return t.writeBuffered(p, off)
}

// writeBuffered writes p at off through the page cache.
func (t *Target) writeBuffered(p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	if _, err := t.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("write %s at offset %d: %w", t.name, off, err)
	}
	return nil
}

// writeDirect writes p at off with O_DIRECT and returns how many bytes it
// wrote: all of them, or fewer without an error when the kernel refused a
// direct write (EINVAL: a file system or device that accepted O_DIRECT at
// open but wants another alignment), after which the target writes
// through the page cache only.
func (t *Target) writeDirect(p []byte, off int64) (int, error) {
	var (
		n   int
		err error
	)
	if t.testDirectEINVAL {
		err = syscall.EINVAL
	} else {
		n, err = t.direct.WriteAt(p, off)
	}
	t.directBytes.Add(int64(n))
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, syscall.EINVAL):
		t.noDirect.Store(true)
		return int(alignDown(int64(n))), nil
	}
	return n, fmt.Errorf("write %s at offset %d: %w", t.name, off+int64(n), err)
}

// TargetPath returns where to restore an image named name (a source path
// such as /dev/sda or disk.img) when the user names path: inside path when
// it is an existing directory, else path itself.
func TargetPath(path, name string) string {
	fi, err := os.Stat(path)
	if err != nil || !fi.IsDir() {
		return path
	}
	base := filepath.Base(strings.TrimRight(name, "/"))
	if base == "." || base == "/" || base == "" || base == ".." {
		base = "image"
	}
	return filepath.Join(path, base)
}

// OpenTarget opens path to receive an image of size bytes. A regular file
// is created or truncated, then extended to size without writing, so that
// the image's holes stay unallocated. A block device is opened exclusively;
// it is refused with an error wrapping ErrTargetInUse when it or one of its
// partitions is mounted, used as swap or held by another device, and with
// ErrTargetTooSmall when it is smaller than size (a larger device keeps its
// bytes beyond the image). Directories and other special files are refused.
func OpenTarget(path string, size int64, opts TargetOptions) (*Target, error) {
	if size < 0 {
		return nil, fmt.Errorf("open restore target %s: negative image size %d", path, size)
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) || (err == nil && fi.Mode().IsRegular()):
		return openFileTarget(path, size)
	case err != nil:
		return nil, fmt.Errorf("open restore target: %w", err)
	case fi.IsDir():
		return nil, fmt.Errorf("open restore target: %s is a directory", path)
	case fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0:
		return openDeviceTarget(path, fi, size, opts)
	}
	return nil, fmt.Errorf("open restore target: %s is not a block device or regular file (mode %v)", path, fi.Mode())
}

func openFileTarget(path string, size int64) (*Target, error) {
	// 0600: a disk image holds everything its disk held, secrets included.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open restore target: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("open restore target: %w", err)
	}
	return &Target{f: f, name: path, skipHoles: true, size: size, direct: openDirect(f, os.O_WRONLY, false)}, nil
}

func openDeviceTarget(path string, fi fs.FileInfo, size int64, opts TargetOptions) (*Target, error) {
	if err := checkNotInUse(path, fi); err != nil {
		return nil, err
	}
	f, err := openDeviceExclusive(path)
	if err != nil {
		return nil, fmt.Errorf("open restore target: %w", err)
	}
	n, err := deviceSize(f)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("open restore target: %w", err)
	}
	if n < size {
		_ = f.Close()
		return nil, fmt.Errorf("%w: %s holds %d bytes, the image has %d", ErrTargetTooSmall, path, n, size)
	}
	return &Target{f: f, name: path, device: true, skipHoles: opts.Sparse, size: n, direct: openDirect(f, os.O_WRONLY, true)}, nil
}

// Name returns the target's path.
func (t *Target) Name() string { return t.name }

// Device reports whether the target is a block device.
func (t *Target) Device() bool { return t.device }

// Close closes the target. Restore has already flushed it to stable storage.
func (t *Target) Close() error {
	if t.direct != nil {
		_ = t.direct.Close() // f's close reports the file's errors
	}
	return t.f.Close()
}
