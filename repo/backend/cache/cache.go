package cache

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/zeebo/blake3"

	"github.com/imagobackup/imago/repo/backend"
)

// tempPrefix starts the name of a copy being written. Stored names are hex,
// so no cached file can start with it.
const tempPrefix = ".tmp-"

// staleTemp is how old a temporary file must be before a listing removes
// it: an hour is far longer than any download of a pack takes, so a file
// that old belongs to a process that died.
const staleTemp = time.Hour

// Cache is a backend.Backend that keeps local copies of index files,
// snapshot files and announced packs of the backend it wraps. It is safe
// for concurrent use.
type Cache struct {
	be  backend.Backend
	dir string

	// mu guards the fields below. No I/O happens while it is held.
	mu sync.Mutex
	// packs holds the names of the packs to cache.
	packs map[string]struct{}
	// verified holds the copies checked against their name by this
	// process.
	verified map[backend.Handle]struct{}
	// filling holds the downloads in progress; waiters block on done.
	filling map[backend.Handle]*fill
	// damaged holds the files whose download did not match their name;
	// they are loaded from the backend from then on.
	damaged map[backend.Handle]struct{}
}

// fill is one download of a file into the cache.
type fill struct {
	done chan struct{}
	err  error // set before done is closed; nil: the copy is in place
}

var _ backend.Backend = (*Cache)(nil)

// New wraps be with a cache in the folder dir, which is made when first
// needed. dir should be specific to one repository (the command line uses
// <user cache folder>/imago/<repository ID>).
func New(be backend.Backend, dir string) *Cache {
	return &Cache{
		be:       be,
		dir:      dir,
		packs:    make(map[string]struct{}),
		verified: make(map[backend.Handle]struct{}),
		filling:  make(map[backend.Handle]*fill),
		damaged:  make(map[backend.Handle]struct{}),
	}
}

// Dir returns the cache folder.
func (c *Cache) Dir() string { return c.dir }

// AddPacks announces packs to cache when they are next loaded or saved.
func (c *Cache) AddPacks(names ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		c.packs[n] = struct{}{}
	}
}

// SetPacks makes names the set of packs to cache and deletes the copies of
// packs not in it. Errors deleting copies are ignored: a stale copy is
// never read, as no index entry points into it.
func (c *Cache) SetPacks(names []string) {
	set := make(map[string]struct{}, len(names))
	for _, n := range names {
		set[n] = struct{}{}
	}
	c.mu.Lock()
	c.packs = set
	c.mu.Unlock()
	c.prune(backend.Pack, set)
}

// cacheable reports whether h is a file this cache keeps.
func (c *Cache) cacheable(h backend.Handle) bool {
	if !isHexName(h.Name) {
		return false
	}
	if h.Type != backend.Index && h.Type != backend.Snapshot && h.Type != backend.Pack {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, bad := c.damaged[h]; bad {
		return false
	}
	if h.Type == backend.Pack {
		_, ok := c.packs[h.Name]
		return ok
	}
	return true
}

// isHexName reports whether name is 64 lowercase hex digits: the name of a
// content-addressed file, and safe to use as a file name.
func isHexName(name string) bool {
	if len(name) != 64 {
		return false
	}
	for _, ch := range name {
		if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f') {
			return false
		}
	}
	return true
}

// path returns where the copy of h is kept.
func (c *Cache) path(h backend.Handle) string {
	if h.Type == backend.Pack {
		return filepath.Join(c.dir, string(h.Type), h.Name[:2], h.Name)
	}
	return filepath.Join(c.dir, string(h.Type), h.Name)
}

// Location returns the location of the wrapped backend.
func (c *Cache) Location() string { return c.be.Location() }

// Save saves the file to the backend and then, for a cacheable file, keeps
// a copy.
func (c *Cache) Save(ctx context.Context, h backend.Handle, rd io.ReaderAt, size int64) error {
	if err := c.be.Save(ctx, h, rd, size); err != nil {
		return err
	}
	if c.cacheable(h) {
		// Best effort: a copy that cannot be written is fetched later.
		_ = c.writeCopy(h, func(w *copyWriter) error {
			_, err := io.Copy(w, io.NewSectionReader(rd, 0, size))
			return err
		})
	}
	return nil
}

// Load serves cacheable files from their local copy, downloading the whole
// file first when there is none; other files come from the backend.
func (c *Cache) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if !c.cacheable(h) || length < 0 || offset < 0 {
		return c.be.Load(ctx, h, length, offset, fn)
	}
	f, err := c.openCopy(ctx, h)
	if errors.Is(err, errNoCopy) {
		return c.be.Load(ctx, h, length, offset, fn)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return c.be.Load(ctx, h, length, offset, fn)
	}
	n := int64(length)
	if length == 0 {
		n = fi.Size() - offset
	}
	if offset > fi.Size() || n > fi.Size()-offset {
		// The copy matches the file's name, so it is the whole file:
		// the caller asked for bytes the file does not have.
		return fmt.Errorf("cache: load %v: %d bytes at offset %d, but the file has %d", h, n, offset, fi.Size())
	}
	return fn(io.NewSectionReader(f, offset, n))
}

// errNoCopy says that a file cannot be served from the cache and should
// be loaded from the backend.
var errNoCopy = errors.New("no usable copy")

// openCopy returns the verified copy of h, downloading it if needed. Errors
// of the backend (a missing file: ErrNotExist) are returned; problems of
// the cache itself give errNoCopy.
func (c *Cache) openCopy(ctx context.Context, h backend.Handle) (*os.File, error) {
	for attempt := 0; ; attempt++ {
		if f, ok := c.openVerified(h); ok {
			return f, nil
		}
		if attempt == 2 {
			// The copy was downloaded and is gone again (a concurrent
			// listing removed it): stop trying.
			return nil, errNoCopy
		}
		if err := c.fill(ctx, h); err != nil {
			return nil, err
		}
	}
}

// openVerified opens the copy of h if there is one that matches its name,
// checking it if this process has not yet. A copy that does not match is
// deleted.
func (c *Cache) openVerified(h backend.Handle) (*os.File, bool) {
	f, err := os.Open(c.path(h))
	if err != nil {
		return nil, false
	}
	c.mu.Lock()
	_, ok := c.verified[h]
	c.mu.Unlock()
	if ok {
		return f, true
	}
	hs := blake3.New()
	if _, err := io.Copy(hs, f); err != nil || hex.EncodeToString(hs.Sum(nil)) != h.Name {
		f.Close()
		_ = os.Remove(c.path(h))
		return nil, false
	}
	c.mu.Lock()
	c.verified[h] = struct{}{}
	c.mu.Unlock()
	return f, true
}

// fill downloads h into the cache, or waits for a download of it already
// running. Backend errors are returned; a download that cannot be stored
// or does not match its name gives errNoCopy.
func (c *Cache) fill(ctx context.Context, h backend.Handle) error {
	c.mu.Lock()
	if f, ok := c.filling[h]; ok {
		c.mu.Unlock()
		select {
		case <-f.done:
			if f.err != nil && ctx.Err() == nil &&
				(errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) {
				// The other caller gave up; this one has not.
				return errNoCopy
			}
			return f.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f := &fill{done: make(chan struct{})}
	c.filling[h] = f
	c.mu.Unlock()

	var loadErr error
	f.err = c.writeCopy(h, func(w *copyWriter) error {
		loadErr = c.be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
			// Load may call this again after a transient error:
			// start the copy over.
			if err := w.reset(); err != nil {
				return err
			}
			_, err := io.Copy(w, rd)
			return err
		})
		return loadErr
	})
	mismatch := errors.Is(f.err, errMismatch)
	if f.err != nil && loadErr == nil {
		f.err = errNoCopy
	}

	c.mu.Lock()
	delete(c.filling, h)
	if mismatch {
		c.damaged[h] = struct{}{}
	}
	c.mu.Unlock()
	close(f.done)
	return f.err
}

// copyWriter writes a temporary file and hashes what it writes.
type copyWriter struct {
	f  *os.File
	hs *blake3.Hasher
}

func (w *copyWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	_, _ = w.hs.Write(p[:n])
	return n, err
}

// reset empties the file and the hash.
func (w *copyWriter) reset() error {
	w.hs.Reset()
	if err := w.f.Truncate(0); err != nil {
		return err
	}
	_, err := w.f.Seek(0, io.SeekStart)
	return err
}

// errMismatch is returned by writeCopy for bytes that do not hash to the
// file's name.
var errMismatch = errors.New("content does not match its name")

// writeCopy writes the copy of h with write, checks it against h's name
// and renames it into place; the copy is then verified for this process.
// On any error nothing is left behind.
func (c *Cache) writeCopy(h backend.Handle, write func(w *copyWriter) error) error {
	target := c.path(h)
	dir := filepath.Dir(target)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, tempPrefix)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	w := &copyWriter{f: tmp, hs: blake3.New()}
	if err := write(w); err != nil {
		return err
	}
	if hex.EncodeToString(w.hs.Sum(nil)) != h.Name {
		return errMismatch
	}
	// No fsync: a copy lost or damaged in a crash is noticed by its hash
	// and fetched again.
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return err
	}
	ok = true
	c.mu.Lock()
	c.verified[h] = struct{}{}
	c.mu.Unlock()
	return nil
}

// Stat returns the size of h from the backend.
func (c *Cache) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	return c.be.Stat(ctx, h)
}

// List lists the backend's files; after a complete listing of index files,
// snapshots or packs, copies of the files it did not report are deleted.
func (c *Cache) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if t != backend.Index && t != backend.Snapshot && t != backend.Pack {
		return c.be.List(ctx, t, fn)
	}
	seen := make(map[string]struct{})
	err := c.be.List(ctx, t, func(fi backend.FileInfo) error {
		seen[fi.Name] = struct{}{}
		return fn(fi)
	})
	if err == nil {
		c.prune(t, seen)
	}
	return err
}

// prune deletes the copies of type t whose names are not in keep, and
// temporary files older than staleTemp.
func (c *Cache) prune(t backend.FileType, keep map[string]struct{}) {
	root := filepath.Join(c.dir, string(t))
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		name := d.Name()
		if strings.HasPrefix(name, tempPrefix) {
			if info, err := d.Info(); err == nil && time.Since(info.ModTime()) > staleTemp {
				_ = os.Remove(p)
			}
			return nil
		}
		if _, ok := keep[name]; !ok {
			c.forget(backend.Handle{Type: t, Name: name})
			_ = os.Remove(p)
		}
		return nil
	})
}

// forget drops h from the verified set.
func (c *Cache) forget(h backend.Handle) {
	c.mu.Lock()
	delete(c.verified, h)
	c.mu.Unlock()
}

// Remove removes h from the backend and its copy, if any.
func (c *Cache) Remove(ctx context.Context, h backend.Handle) error {
	err := c.be.Remove(ctx, h)
	if isHexName(h.Name) && (h.Type == backend.Index || h.Type == backend.Snapshot || h.Type == backend.Pack) {
		c.forget(h)
		_ = os.Remove(c.path(h))
	}
	return err
}

// Close closes the wrapped backend.
func (c *Cache) Close() error { return c.be.Close() }
