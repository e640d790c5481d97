package sftp

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/pkg/sftp"

	"github.com/imagobackup/imago/repo/backend"
)

// tempPrefix starts the name of every temporary file. Handle.Validate
// rejects names that start with '.', so no stored file can have it.
const tempPrefix = ".tmp-"

// Backend is a repository in a folder of an SFTP server. It is safe for
// concurrent use; at most Config.Connections calls run at a time, the
// others wait.
type Backend struct {
	cfg  Config
	pool *pool
}

var _ backend.Backend = (*Backend)(nil)

// Open connects to the server of cfg and opens the repository folder
// cfg.Path, which must exist: a missing folder gives an error wrapping
// backend.ErrNotExist. Zero fields of cfg take their defaults (see Config);
// Open does not read ~/.ssh/config: call cfg.FromSSHConfig first for that.
// Connection failures wrap ErrUnreachable, ErrAuth, ErrUnknownHost or
// ErrHostKeyMismatch and come within cfg.ConnectTimeout.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c, err := dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	fi, err := c.sftp.Stat(cfg.Path)
	if err == nil && !fi.IsDir() {
		err = errors.New("not a folder")
	}
	if err != nil {
		c.close()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("sftp: open %s: %w: no such folder", cfg, backend.ErrNotExist)
		}
		return nil, fmt.Errorf("sftp: open %s: %w", cfg, err)
	}
	return &Backend{cfg: cfg, pool: newPool(cfg, c)}, nil
}

// mkdirWorkers is how many folders Create makes at a time over its one
// connection: the 256 pack shards then take ~10 round trips, not 256.
const mkdirWorkers = 32

// Create connects like Open and makes the repository folder cfg.Path (and
// its parents) with a folder for every file type and the 256 pack shards
// data/00 … data/ff. Folders that exist already are kept as they are; a
// folder Create makes for the repository itself gets mode 0700, since key
// and lock files name hosts and users. Whether the folder may hold a new
// repository is decided by the caller.
func Create(ctx context.Context, cfg Config) (*Backend, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c, err := dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := makeLayout(ctx, c.sftp, cfg.Path); err != nil {
		c.close()
		return nil, fmt.Errorf("sftp: create %s: %w", cfg, err)
	}
	return &Backend{cfg: cfg, pool: newPool(cfg, c)}, nil
}

// makeLayout makes the repository folders under dir.
func makeLayout(ctx context.Context, c *sftp.Client, dir string) error {
	if _, err := c.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := c.MkdirAll(dir); err != nil {
			return fmt.Errorf("make folder %s: %w", dir, err)
		}
		if err := c.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("chmod %s: %w", dir, err)
		}
	} else if err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	var dirs []string
	for _, t := range backend.FileTypes {
		if t != backend.Config {
			dirs = append(dirs, path.Join(dir, string(t)))
		}
	}
	if err := mkdirs(ctx, c, dirs); err != nil {
		return err
	}
	dirs = dirs[:0]
	for i := range 256 {
		dirs = append(dirs, path.Join(dir, string(backend.Pack), fmt.Sprintf("%02x", i)))
	}
	return mkdirs(ctx, c, dirs)
}

// mkdirs makes the folders dirs, whose parent exists, concurrently.
func mkdirs(ctx context.Context, c *sftp.Client, dirs []string) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(mkdirWorkers)
	for _, d := range dirs {
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			err := c.Mkdir(d)
			if err == nil {
				return nil
			}
			// OpenSSH answers a generic failure for an existing folder.
			if fi, serr := c.Lstat(d); serr == nil && fi.IsDir() {
				return nil
			}
			return fmt.Errorf("mkdir %s: %w", d, err)
		})
	}
	return g.Wait()
}

// Location returns the repository's location as an sftp:// URL.
func (b *Backend) Location() string { return b.cfg.String() }

// path returns where h is stored; h must be valid.
func (b *Backend) path(h backend.Handle) string {
	switch h.Type {
	case backend.Config:
		return path.Join(b.cfg.Path, string(backend.Config))
	case backend.Pack:
		return path.Join(b.cfg.Path, string(backend.Pack), h.Name[:2], h.Name)
	}
	return path.Join(b.cfg.Path, string(h.Type), h.Name)
}

// Save writes the size bytes of rd to a temporary file ".tmp-…" next to h's
// place, syncs it (where the server has fsync@openssh.com) and renames it
// to h, replacing an existing file atomically with posix-rename@openssh.com
// or, on other servers, by removing it first. Data goes out in 32 KiB
// requests read from rd as they are sent, at most 64 in flight. On error
// the temporary file is removed, over another connection if its own broke;
// only a server unreachable for that too keeps it, and List never reports
// it.
func (b *Backend) Save(ctx context.Context, h backend.Handle, rd io.ReaderAt, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("sftp: save %v: negative size %d", h, size)
	}
	final := b.path(h)
	tmp := path.Join(path.Dir(final), tempPrefix+randomName())
	// leftover is set while the temporary file may exist and the
	// connection that made it could not remove it.
	leftover := false
	err := b.pool.do(ctx, func(c *conn) error { return c.save(ctx, tmp, final, rd, size, &leftover) })
	if err != nil {
		if leftover {
			b.removeTemp(ctx, tmp)
		}
		return wrapErr("save", h, err)
	}
	return nil
}

// randomName returns 16 random hex digits.
func randomName() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails.
	return hex.EncodeToString(b[:])
}

// save uploads to tmp and renames it to final. If it fails after creating
// tmp, it removes tmp, or sets *leftover if it cannot.
func (c *conn) save(ctx context.Context, tmp, final string, rd io.ReaderAt, size int64, leftover *bool) (err error) {
	const flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL
	// The server may have created the file even if its answer to
	// OpenFile was lost: from here on, a failure removes it.
	defer func() {
		if err == nil {
			return
		}
		rerr := c.sftp.Remove(tmp)
		*leftover = rerr != nil && !errors.Is(rerr, fs.ErrNotExist)
	}()
	f, err := c.sftp.OpenFile(tmp, flags)
	if errors.Is(err, fs.ErrNotExist) {
		// The type folder or shard is missing (a repository copied
		// without its empty folders): create it and try once more.
		if err := c.sftp.MkdirAll(path.Dir(tmp)); err != nil {
			return err
		}
		f, err = c.sftp.OpenFile(tmp, flags)
	}
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed {
			_ = f.Close() // The error that got us here is the one to report.
		}
	}()
	src := &sourceReader{ctx: ctx, r: io.NewSectionReader(rd, 0, size)}
	// Concurrency 0 means the client's maximum, 64 requests of 32 KiB.
	n, err := f.ReadFromWithConcurrency(src, 0)
	if err != nil {
		return err
	}
	if n != size {
		return &sourceError{fmt.Errorf("source gave %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)}
	}
	if c.fsync {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	closed = true
	if err := f.Close(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.posixRename {
		return c.sftp.PosixRename(tmp, final)
	}
	// Plain SFTP rename refuses to replace a file: remove it first. A
	// reader may then briefly see no file, never a partial one.
	if err := c.sftp.Remove(final); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return c.sftp.Rename(tmp, final)
}

// sourceReader reads a Save's data, ending the upload when ctx is cancelled
// and marking read errors as the source's.
type sourceReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *sourceReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = &sourceError{err}
	}
	return n, err
}

// removeTemp removes the temporary file of a failed Save whose connection
// broke, over another connection, also when ctx is cancelled, waiting at
// most about two connection timeouts.
func (b *Backend) removeTemp(ctx context.Context, tmp string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*b.cfg.ConnectTimeout)
	defer cancel()
	// A file that was never created is fine; a server that is gone keeps
	// the file, which List skips and a later prune may remove.
	_ = b.pool.do(ctx, func(c *conn) error {
		err := c.sftp.Remove(tmp)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	})
}

// readBuffer is the size of the buffer in front of a Load's reader: one
// SFTP request, so small reads do not each cost a round trip; larger reads
// bypass it.
const readBuffer = 32 << 10

// Load opens h and calls fn with a reader of exactly the requested range;
// the reader returns io.ErrUnexpectedEOF if the file shrinks meanwhile and
// an error wrapping a backend.TransientError if the connection drops. fn
// holds one of the backend's connections while it runs, so it should not
// wait for other calls of the same backend.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if length < 0 || offset < 0 {
		return fmt.Errorf("sftp: load %v: negative length %d or offset %d", h, length, offset)
	}
	p := b.path(h)
	called := false
	var fnErr error
	err := b.pool.do(ctx, func(c *conn) error {
		f, err := c.sftp.Open(p)
		if err != nil {
			return err
		}
		defer f.Close() // Read-only: closing cannot lose data.
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		size := fi.Size()
		n := int64(length)
		if length == 0 && offset <= size {
			n = size - offset
		}
		if offset > size || n > size-offset {
			return &rangeError{offset: offset, length: length, size: size}
		}
		r := &exactReader{ctx: ctx, c: c, f: f, name: p, off: offset, left: n}
		called = true
		fnErr = fn(bufio.NewReaderSize(r, readBuffer))
		return &passError{err: fnErr, broken: r.broken}
	})
	if called {
		return fnErr
	}
	return wrapErr("load", h, err)
}

// rangeError is a Load of a range beyond the end of the file.
type rangeError struct {
	offset int64
	length int
	size   int64
}

func (e *rangeError) Error() string {
	return fmt.Sprintf("range %d+%d beyond end of %d-byte file", e.offset, e.length, e.size)
}

// wrapErr adds the operation and handle to the error of a call, making a
// missing file an error wrapping backend.ErrNotExist.
func wrapErr(op string, h backend.Handle, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("sftp: %s %v: %w", op, h, backend.ErrNotExist)
	}
	return fmt.Errorf("sftp: %s %v: %w", op, h, err)
}

// exactReader reads left bytes of f from off and fails with
// io.ErrUnexpectedEOF if the file ends before.
type exactReader struct {
	ctx    context.Context
	c      *conn
	f      *sftp.File
	name   string
	off    int64
	left   int64
	broken bool // the connection failed
}

func (r *exactReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	r.left -= int64(n)
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF) && r.left == 0:
		return n, nil
	case errors.Is(err, io.EOF):
		return n, fmt.Errorf("sftp: %s ended %d bytes early: %w", r.name, r.left, io.ErrUnexpectedEOF)
	case r.ctx.Err() != nil:
		r.broken = true
		return n, fmt.Errorf("sftp: read %s: %w", r.name, r.ctx.Err())
	case isConnError(r.c, err):
		r.broken = true
		return n, &backend.TransientError{Err: fmt.Errorf("sftp: read %s: connection lost: %w", r.name, err)}
	}
	return n, fmt.Errorf("sftp: read %s: %w", r.name, err)
}

// Stat returns the size of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, err
	}
	if err := h.Validate(); err != nil {
		return backend.FileInfo{}, err
	}
	var fi os.FileInfo
	err := b.pool.do(ctx, func(c *conn) error {
		var err error
		fi, err = c.sftp.Stat(b.path(h))
		return err
	})
	if err != nil {
		return backend.FileInfo{}, wrapErr("stat", h, err)
	}
	return backend.FileInfo{Name: h.Name, Size: fi.Size()}, nil
}

// listShards is how many pack shards List reads at a time over one
// connection: 256 shards take 16 round trips, and at most 16 shard
// listings (~100 bytes per pack) are held in memory.
const listShards = 16

// List calls fn for every stored file of type t; for packs it reads every
// shard folder. Temporary files, folders and packs outside their shard are
// skipped. fn runs while no connection is held, so it may call the backend.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !slices.Contains(backend.FileTypes, t) {
		return fmt.Errorf("sftp: list %q: %w: unknown file type", t, backend.ErrInvalidHandle)
	}
	switch t {
	case backend.Config:
		fi, err := b.Stat(ctx, backend.Handle{Type: t})
		if errors.Is(err, backend.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(fi)
	case backend.Pack:
		data := path.Join(b.cfg.Path, string(backend.Pack))
		var shards []string
		err := b.pool.do(ctx, func(c *conn) error {
			entries, err := c.sftp.ReadDirContext(ctx, data)
			for _, e := range entries {
				if e.IsDir() && len(e.Name()) == 2 && !strings.HasPrefix(e.Name(), ".") {
					shards = append(shards, e.Name())
				}
			}
			return err
		})
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("sftp: list packs: %w", err)
		}
		for batch := range slices.Chunk(shards, listShards) {
			lists := make([][]backend.FileInfo, len(batch))
			err := b.pool.do(ctx, func(c *conn) error {
				var g errgroup.Group
				for i, s := range batch {
					g.Go(func() error {
						var err error
						lists[i], err = readDir(ctx, c.sftp, path.Join(data, s), s)
						return err
					})
				}
				return g.Wait()
			})
			if err != nil {
				return fmt.Errorf("sftp: list packs: %w", err)
			}
			for _, list := range lists {
				if err := backend.CallEach(ctx, list, fn); err != nil {
					return err
				}
			}
		}
		return nil
	}
	var list []backend.FileInfo
	err := b.pool.do(ctx, func(c *conn) error {
		var err error
		list, err = readDir(ctx, c.sftp, path.Join(b.cfg.Path, string(t)), "")
		return err
	})
	if err != nil {
		return fmt.Errorf("sftp: list %s: %w", t, err)
	}
	return backend.CallEach(ctx, list, fn)
}

// readDir returns the regular files in dir whose names start with prefix
// and not with '.'. A missing folder holds no files.
func readDir(ctx context.Context, c *sftp.Client, dir, prefix string) ([]backend.FileInfo, error) {
	entries, err := c.ReadDirContext(ctx, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list []backend.FileInfo
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasPrefix(name, prefix) || !e.Mode().IsRegular() {
			continue
		}
		list = append(list, backend.FileInfo{Name: name, Size: e.Size()})
	}
	return list, nil
}

// Remove deletes h.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return err
	}
	return wrapErr("remove", h, b.pool.do(ctx, func(c *conn) error { return c.sftp.Remove(b.path(h)) }))
}

// Close closes the backend's connections; calls still running end when
// their connection is given back. Close is idempotent.
func (b *Backend) Close() error {
	b.pool.close()
	return nil
}
