package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/imagobackup/imago/repo/backend"
)

// Modes of what the backend creates: the repository is readable only by its
// owner, since key files and lock files name hosts and users.
const (
	dirMode  fs.FileMode = 0o700
	fileMode fs.FileMode = 0o600 // os.CreateTemp's mode, checked by the tests
)

// tempPrefix starts the name of every temporary file. Handle.Validate
// rejects names that start with '.', so no stored file can have it.
const tempPrefix = ".tmp-"

// Backend is a repository in a local folder. It is safe for concurrent use.
type Backend struct {
	dir string

	// createTemp creates a temporary file in a folder; tests replace it to
	// simulate a full disk.
	createTemp func(dir string) (tempFile, error)
}

var _ backend.Backend = (*Backend)(nil)

// tempFile is the part of *os.File that Save writes through.
type tempFile interface {
	io.Writer
	Sync() error
	Close() error
	Name() string
}

func createTemp(dir string) (tempFile, error) {
	return os.CreateTemp(dir, tempPrefix+"*")
}

func newBackend(dir string) *Backend {
	return &Backend{dir: filepath.Clean(dir), createTemp: createTemp}
}

// Open opens the repository folder dir, which must exist. A missing folder
// gives an error wrapping backend.ErrNotExist.
func Open(dir string) (*Backend, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("local: open %s: %w (%w)", dir, backend.ErrNotExist, err)
	}
	if err != nil {
		return nil, fmt.Errorf("local: open: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("local: open %s: not a folder", dir)
	}
	return newBackend(dir), nil
}

// Create creates the repository folder dir with a folder for every file type
// and the 256 pack shards data/00 … data/ff, and opens it. Folders that
// exist already are kept as they are: whether dir may hold a repository
// (it must have no config) is decided by the caller.
func Create(dir string) (*Backend, error) {
	dirs := []string{dir}
	for _, t := range backend.FileTypes {
		if t != backend.Config {
			dirs = append(dirs, filepath.Join(dir, string(t)))
		}
	}
	for i := range 256 {
		dirs = append(dirs, filepath.Join(dir, string(backend.Pack), fmt.Sprintf("%02x", i)))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, dirMode); err != nil {
			return nil, fmt.Errorf("local: create: %w", err)
		}
	}
	// Make the new folder entries durable before any file is saved in
	// them: Save syncs only the folder it writes into.
	for _, d := range []string{filepath.Dir(filepath.Clean(dir)), dir, filepath.Join(dir, string(backend.Pack))} {
		if err := syncDir(d); err != nil {
			return nil, fmt.Errorf("local: create: %w", err)
		}
	}
	return newBackend(dir), nil
}

// Location returns the repository folder.
func (b *Backend) Location() string { return b.dir }

// path returns where h is stored; h must be valid.
func (b *Backend) path(h backend.Handle) string {
	switch h.Type {
	case backend.Config:
		return filepath.Join(b.dir, string(backend.Config))
	case backend.Pack:
		return filepath.Join(b.dir, string(backend.Pack), h.Name[:2], h.Name)
	}
	return filepath.Join(b.dir, string(h.Type), h.Name)
}

// Save writes the size bytes of rd to a temporary file next to h's place,
// syncs it, renames it to h and syncs the folder. On error the temporary
// file is removed, so a failed Save leaves h as it was; the error wraps the
// cause, e.g. syscall.ENOSPC for a full disk.
func (b *Backend) Save(ctx context.Context, h backend.Handle, rd io.ReaderAt, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("local: save %v: negative size %d", h, size)
	}
	if err := b.save(ctx, b.path(h), rd, size); err != nil {
		return fmt.Errorf("local: save %v: %w", h, err)
	}
	return nil
}

func (b *Backend) save(ctx context.Context, final string, rd io.ReaderAt, size int64) (err error) {
	dir := filepath.Dir(final)
	f, err := b.createTemp(dir)
	if errors.Is(err, fs.ErrNotExist) {
		// The type folder or shard is missing (a repository copied
		// without its empty folders): create it and try once more.
		if err := os.MkdirAll(dir, dirMode); err != nil {
			return err
		}
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return err
		}
		f, err = b.createTemp(dir)
	}
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if err == nil {
			return
		}
		if !closed {
			_ = f.Close() // The write error is the one to report.
		}
		// Removing may fail too (the folder went away); the write error
		// stays the one to report.
		_ = os.Remove(f.Name())
	}()

	n, err := io.CopyN(f, ctxReader{ctx: ctx, r: io.NewSectionReader(rd, 0, size)}, size)
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("source gave %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
	}
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	closed = true
	if err := f.Close(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), final); err != nil {
		return err
	}
	// The file is complete and in place; a failed folder sync only means
	// the rename may not survive a crash.
	return syncDir(dir)
}

// ctxReader ends a copy when its context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// syncDir makes the entries of folder dir durable. File systems that cannot
// sync a folder (EINVAL, ENOTSUP) are accepted: there is nothing more to do.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		err = nil
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Load opens h and calls fn with a reader of exactly the requested range;
// the reader returns io.ErrUnexpectedEOF if the file shrinks meanwhile.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if length < 0 || offset < 0 {
		return fmt.Errorf("local: load %v: negative length %d or offset %d", h, length, offset)
	}
	f, err := os.Open(b.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local: load %v: %w (%w)", h, backend.ErrNotExist, err)
	}
	if err != nil {
		return fmt.Errorf("local: load %v: %w", h, err)
	}
	defer f.Close() // Read-only: closing cannot lose data.

	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("local: load %v: %w", h, err)
	}
	size := fi.Size()
	n := int64(length)
	if length == 0 && offset <= size {
		n = size - offset
	}
	if offset > size || n > size-offset {
		return fmt.Errorf("local: load %v: range %d+%d beyond end of %d-byte file", h, offset, length, size)
	}
	return fn(&exactReader{f: f, off: offset, left: n})
}

// exactReader reads left bytes of f from off and fails with
// io.ErrUnexpectedEOF if the file ends before.
type exactReader struct {
	f    *os.File
	off  int64
	left int64
}

func (r *exactReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	r.left -= int64(n)
	if err == io.EOF {
		if r.left > 0 {
			return n, fmt.Errorf("local: %s ended %d bytes early: %w", r.f.Name(), r.left, io.ErrUnexpectedEOF)
		}
		err = nil
	}
	return n, err
}

// Stat returns the size of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, err
	}
	if err := h.Validate(); err != nil {
		return backend.FileInfo{}, err
	}
	fi, err := os.Stat(b.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return backend.FileInfo{}, fmt.Errorf("local: stat %v: %w (%w)", h, backend.ErrNotExist, err)
	}
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("local: stat %v: %w", h, err)
	}
	return backend.FileInfo{Name: h.Name, Size: fi.Size()}, nil
}

// List calls fn for every stored file of type t; for packs it walks every
// shard folder. Temporary files, folders and packs outside their shard are
// skipped.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !slices.Contains(backend.FileTypes, t) {
		return fmt.Errorf("local: list %q: %w: unknown file type", t, backend.ErrInvalidHandle)
	}
	switch t {
	case backend.Config:
		fi, err := os.Stat(b.path(backend.Handle{Type: t}))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("local: list config: %w", err)
		}
		return fn(backend.FileInfo{Size: fi.Size()})
	case backend.Pack:
		data := filepath.Join(b.dir, string(backend.Pack))
		shards, err := os.ReadDir(data)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("local: list packs: %w", err)
		}
		for _, s := range shards {
			if !s.IsDir() || len(s.Name()) != 2 || strings.HasPrefix(s.Name(), ".") {
				continue
			}
			if err := listDir(ctx, filepath.Join(data, s.Name()), s.Name(), fn); err != nil {
				return err
			}
		}
		return nil
	}
	return listDir(ctx, filepath.Join(b.dir, string(t)), "", fn)
}

// listBatch is how many folder entries List reads at a time: enough to keep
// syscalls few, small enough (~100 KiB) not to matter for memory.
const listBatch = 1000

// listDir calls fn for every regular file in dir whose name starts with
// prefix and not with '.'. A missing folder holds no files.
func listDir(ctx context.Context, dir, prefix string, fn func(backend.FileInfo) error) error {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("local: list: %w", err)
	}
	defer d.Close() // Read-only: closing cannot lose data.
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		entries, err := d.ReadDir(listBatch)
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") || !strings.HasPrefix(name, prefix) || !e.Type().IsRegular() {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // Removed since the folder was read.
			}
			if err != nil {
				return fmt.Errorf("local: list: %w", err)
			}
			if err := fn(backend.FileInfo{Name: name, Size: fi.Size()}); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("local: list: %w", err)
		}
	}
}

// Remove deletes h. It does not sync the folder: a removal that a crash
// undoes leaves a file that is simply removed again.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return err
	}
	err := os.Remove(b.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local: remove %v: %w (%w)", h, backend.ErrNotExist, err)
	}
	if err != nil {
		return fmt.Errorf("local: remove %v: %w", h, err)
	}
	return nil
}

// Close does nothing: the backend holds no open files between calls.
func (b *Backend) Close() error { return nil }
