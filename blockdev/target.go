package blockdev

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
	return &Target{f: f, name: path, skipHoles: true, size: size}, nil
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
	return &Target{f: f, name: path, device: true, skipHoles: opts.Sparse, size: n}, nil
}

// Name returns the target's path.
func (t *Target) Name() string { return t.name }

// Device reports whether the target is a block device.
func (t *Target) Device() bool { return t.device }

// Close closes the target. Restore has already flushed it to stable storage.
func (t *Target) Close() error { return t.f.Close() }
