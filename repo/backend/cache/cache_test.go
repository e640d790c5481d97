package cache_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/backendtest"
	"github.com/imagobackup/imago/repo/backend/cache"
	"github.com/imagobackup/imago/repo/backend/faulty"
	"github.com/imagobackup/imago/repo/backend/mem"
)

// named returns content and the handle of type t it is stored under: its
// BLAKE3-256 in hex, as the repository names its files.
func named(t backend.FileType, content string) (backend.Handle, []byte) {
	sum := blake3.Sum256([]byte(content))
	return backend.Handle{Type: t, Name: hex.EncodeToString(sum[:])}, []byte(content)
}

func save(t *testing.T, be backend.Backend, h backend.Handle, b []byte) {
	t.Helper()
	if err := be.Save(context.Background(), h, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
}

func load(t *testing.T, be backend.Backend, h backend.Handle, length int, offset int64) []byte {
	t.Helper()
	var got []byte
	err := be.Load(context.Background(), h, length, offset, func(rd io.Reader) error {
		var err error
		got, err = io.ReadAll(rd)
		return err
	})
	if err != nil {
		t.Fatalf("load %v: %v", h, err)
	}
	return got
}

// copyPath is where the cache in dir keeps h.
func copyPath(dir string, h backend.Handle) string {
	if h.Type == backend.Pack {
		return filepath.Join(dir, string(h.Type), h.Name[:2], h.Name)
	}
	return filepath.Join(dir, string(h.Type), h.Name)
}

func TestSavedFilesAreServedLocally(t *testing.T) {
	remote := faulty.New(mem.New())
	dir := t.TempDir()
	idx, idxBytes := named(backend.Index, "index file")
	snap, snapBytes := named(backend.Snapshot, "snapshot file")
	save(t, cache.New(remote, dir), idx, idxBytes)
	save(t, cache.New(remote, dir), snap, snapBytes)

	// A new Cache over the same folder, as the next command would open.
	remote.ResetCounts()
	c := cache.New(remote, dir)
	if got := load(t, c, idx, 0, 0); !bytes.Equal(got, idxBytes) {
		t.Errorf("index file = %q, want %q", got, idxBytes)
	}
	if got := load(t, c, snap, 4, 2); string(got) != "apsh" {
		t.Errorf("range of snapshot file = %q, want %q", got, "apsh")
	}
	if n := remote.Counts().Loads; n != 0 {
		t.Errorf("%d loads reached the backend, want 0", n)
	}
}

func TestOnlyAnnouncedPacksAreCached(t *testing.T) {
	remote := faulty.New(mem.New())
	dir := t.TempDir()
	tree, treeBytes := named(backend.Pack, "a tree pack, say 0123456789")
	data, dataBytes := named(backend.Pack, "a data pack")
	save(t, remote, tree, treeBytes)
	save(t, remote, data, dataBytes)

	c := cache.New(remote, dir)
	c.SetPacks([]string{tree.Name})
	if got := load(t, c, tree, 10, 17); string(got) != "0123456789" {
		t.Errorf("range of tree pack = %q", got)
	}
	if got := load(t, c, tree, 4, 2); string(got) != "tree" {
		t.Errorf("range of tree pack = %q", got)
	}
	load(t, c, data, 4, 0)
	load(t, c, data, 4, 0)
	if n := remote.Counts().LoadsByType[backend.Pack]; n != 3 {
		t.Errorf("%d pack loads reached the backend, want 3 (the tree pack once, the data pack twice)", n)
	}
	if _, err := os.Stat(copyPath(dir, tree)); err != nil {
		t.Errorf("no copy of the tree pack: %v", err)
	}
	if _, err := os.Stat(copyPath(dir, data)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the data pack was copied: %v", err)
	}
	// A read past the end is an error, as with any backend.
	err := c.Load(context.Background(), tree, 100, 0, func(io.Reader) error { return nil })
	if err == nil {
		t.Error("loading past the end of a cached pack succeeded")
	}
}

func TestDamagedCopyIsReplaced(t *testing.T) {
	remote := faulty.New(mem.New())
	dir := t.TempDir()
	h, content := named(backend.Index, "the real index file")
	save(t, cache.New(remote, dir), h, content)

	for name, damage := range map[string]func(p string) error{
		"flipped byte": func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[3] ^= 0xff
			return os.WriteFile(p, b, 0o600)
		},
		"truncated": func(p string) error { return os.Truncate(p, 5) },
		"empty":     func(p string) error { return os.WriteFile(p, nil, 0o600) },
	} {
		t.Run(name, func(t *testing.T) {
			if err := damage(copyPath(dir, h)); err != nil {
				t.Fatal(err)
			}
			remote.ResetCounts()
			c := cache.New(remote, dir)
			if got := load(t, c, h, 0, 0); !bytes.Equal(got, content) {
				t.Fatalf("load = %q, want %q", got, content)
			}
			if n := remote.Counts().Loads; n != 1 {
				t.Errorf("%d loads reached the backend, want 1", n)
			}
			b, err := os.ReadFile(copyPath(dir, h))
			if err != nil || !bytes.Equal(b, content) {
				t.Errorf("copy on disk = %q, %v; want it repaired", b, err)
			}
		})
	}
}

func TestDamagedRemoteFileIsNotCached(t *testing.T) {
	remote := faulty.New(mem.New())
	dir := t.TempDir()
	h, _ := named(backend.Pack, "what the pack should hold")
	stored := []byte("what the pack holds instead")
	save(t, remote, h, stored)

	c := cache.New(remote, dir)
	c.AddPacks(h.Name)
	for range 2 {
		// The bytes come from the backend, so the repository's blob
		// checks see (and report) the real damage.
		if got := load(t, c, h, 4, 5); string(got) != "the " {
			t.Fatalf("load = %q", got)
		}
	}
	if _, err := os.Stat(copyPath(dir, h)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a damaged download was cached: %v", err)
	}
	// One full download that failed its check, then ranged loads only.
	if n := remote.Counts().Loads; n != 3 {
		t.Errorf("%d loads reached the backend, want 3", n)
	}
}

func TestMissingFile(t *testing.T) {
	h, _ := named(backend.Snapshot, "never saved")
	c := cache.New(mem.New(), t.TempDir())
	err := c.Load(context.Background(), h, 0, 0, func(io.Reader) error { return nil })
	if !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("load of a missing file: %v, want ErrNotExist", err)
	}
}

func TestStaleCopiesAreRemoved(t *testing.T) {
	remote := mem.New()
	dir := t.TempDir()
	c := cache.New(remote, dir)
	keep, keepBytes := named(backend.Snapshot, "kept snapshot")
	gone, goneBytes := named(backend.Snapshot, "forgotten elsewhere")
	save(t, c, keep, keepBytes)
	save(t, c, gone, goneBytes)
	removedHere, b := named(backend.Index, "removed through the cache")
	save(t, c, removedHere, b)

	ctx := context.Background()
	// Another client forgets a snapshot: only the listing can tell.
	if err := remote.Remove(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx, removedHere); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(copyPath(dir, removedHere)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("copy of a removed file kept: %v", err)
	}
	var listed []string
	if err := c.List(ctx, backend.Snapshot, func(fi backend.FileInfo) error {
		listed = append(listed, fi.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0] != keep.Name {
		t.Errorf("listed %v, want only %s", listed, keep.Name)
	}
	if _, err := os.Stat(copyPath(dir, gone)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale copy kept after listing: %v", err)
	}
	if _, err := os.Stat(copyPath(dir, keep)); err != nil {
		t.Errorf("copy of a listed file removed: %v", err)
	}

	// Packs no longer announced (pruned) lose their copies too.
	p1, p1b := named(backend.Pack, "pack one")
	p2, p2b := named(backend.Pack, "pack two")
	c.AddPacks(p1.Name, p2.Name)
	save(t, c, p1, p1b)
	save(t, c, p2, p2b)
	c.SetPacks([]string{p2.Name})
	if _, err := os.Stat(copyPath(dir, p1)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("copy of a pack no longer announced kept: %v", err)
	}
	if _, err := os.Stat(copyPath(dir, p2)); err != nil {
		t.Errorf("copy of an announced pack removed: %v", err)
	}
}

func TestConcurrentLoadsDownloadOnce(t *testing.T) {
	remote := faulty.New(mem.New())
	h, content := named(backend.Pack, string(bytes.Repeat([]byte("tree blobs "), 10000)))
	save(t, remote, h, content)
	c := cache.New(remote, t.TempDir())
	c.AddPacks(h.Name)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			off := int64(i * 1000)
			var got []byte
			err := c.Load(context.Background(), h, 11, off, func(rd io.Reader) error {
				var err error
				got, err = io.ReadAll(rd)
				return err
			})
			if err != nil || !bytes.Equal(got, content[off:off+11]) {
				t.Errorf("load at %d = %q, %v", off, got, err)
			}
		})
	}
	wg.Wait()
	if n := remote.Counts().Loads; n != 1 {
		t.Errorf("%d loads reached the backend, want 1", n)
	}
}

func TestTransientFailuresDuringDownload(t *testing.T) {
	// A download interrupted by a transient error (retried by the retry
	// wrapper below the cache) must not leave a partial copy.
	remote := faulty.New(mem.New())
	h, content := named(backend.Index, string(bytes.Repeat([]byte("x"), 1<<16)))
	save(t, remote, h, content)
	remote.FailLoad(func(backend.Handle) error {
		return &backend.TransientError{Err: errors.New("connection reset")}
	})
	dir := t.TempDir()
	c := cache.New(remote, dir)
	if err := c.Load(context.Background(), h, 0, 0, func(io.Reader) error { return nil }); !backend.IsTransient(err) {
		t.Fatalf("load = %v, want the transient error", err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, string(backend.Index)))
	if len(entries) != 0 {
		t.Fatalf("files left after a failed download: %v", entries)
	}
	remote.FailLoad(nil)
	if got := load(t, c, h, 0, 0); !bytes.Equal(got, content) {
		t.Fatal("load after the failure returned other bytes")
	}
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return cache.New(mem.New(), t.TempDir())
	})
}
