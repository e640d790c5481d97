//go:build linux

package local

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/imagobackup/imago/repo/backend"
)

// CreateTempFile creates an unnamed temporary file (O_TMPFILE) in the folder
// of file type t, open for reading and writing, to be stored with SaveFile.
// It has no name until SaveFile gives it one, so List never sees it, and
// closing it without SaveFile, or a crash, leaves nothing behind. File
// systems without O_TMPFILE give an error; callers then write the file
// elsewhere and use Save.
func (b *Backend) CreateTempFile(t backend.FileType) (*os.File, error) {
	dir := b.dir
	if t != backend.Config {
		dir = filepath.Join(b.dir, string(t))
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, uint32(fileMode))
	if err != nil {
		return nil, fmt.Errorf("local: create temporary file in %s: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir, "(unnamed)")), nil
}

// SaveFile stores the size bytes of f, a file made by CreateTempFile, as h
// without copying them: it syncs f, links it into h's folder under a
// temporary name, renames that over h and syncs the folder, so that h
// appears atomically and durably as with Save. Where the link cannot be
// made (no /proc), it copies f with Save instead. f stays open; the caller
// closes it.
func (b *Backend) SaveFile(ctx context.Context, h backend.Handle, f *os.File, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if err := b.saveFile(ctx, b.path(h), f, size); err != nil {
		return fmt.Errorf("local: save %v: %w", h, err)
	}
	return nil
}

func (b *Backend) saveFile(ctx context.Context, final string, f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != size {
		return fmt.Errorf("temporary file holds %d bytes, want %d", fi.Size(), size)
	}
	dir := filepath.Dir(final)
	tmp, err := linkTemp(f, dir)
	if err != nil {
		// No /proc, or the shard folder is missing: copy, as Save does
		// (it creates missing folders).
		return b.save(ctx, final, f, size)
	}
	if err = f.Sync(); err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		_ = os.Remove(tmp) // the first error is the one to report
		return err
	}
	// The file is complete and in place; a failed folder sync only means
	// the rename may not survive a crash.
	return syncDir(dir)
}

// linkTemp gives the unnamed file f a temporary name in dir and returns it.
func linkTemp(f *os.File, dir string) (string, error) {
	src := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	for range 10 {
		name := filepath.Join(dir, tempPrefix+strconv.FormatUint(rand.Uint64(), 36))
		err := unix.Linkat(unix.AT_FDCWD, src, unix.AT_FDCWD, name, unix.AT_SYMLINK_FOLLOW)
		if !errors.Is(err, unix.EEXIST) {
			return name, err
		}
	}
	return "", fmt.Errorf("link temporary file in %s: %w", dir, unix.EEXIST)
}
