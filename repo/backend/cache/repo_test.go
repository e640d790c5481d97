package cache_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/cache"
	"github.com/imagobackup/imago/repo/backend/faulty"
	"github.com/imagobackup/imago/repo/backend/mem"
	"github.com/imagobackup/imago/snapshot"
)

// writeSnapshots stores n small file-tree snapshots, each a folder with a
// few files of their own data, in separate packs of the small test size.
func writeSnapshots(t *testing.T, r *repo.Repository, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		var files []snapshot.Node
		for j := range 20 {
			data := fmt.Appendf(nil, "snapshot %d file %d %0500d", i, j, j)
			id, _, err := r.SaveChunk(ctx, chunk.KindData, data)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, snapshot.Node{
				Name: fmt.Sprintf("file%02d", j), Type: snapshot.TypeFile, Mode: 0o644, Size: uint64(len(data)),
				Content: snapshot.Content{Extents: []snapshot.Extent{{Length: uint64(len(data)), ID: id}}},
			})
		}
		sub, _, err := snapshot.SaveTree(ctx, r, &snapshot.Tree{Nodes: files})
		if err != nil {
			t.Fatal(err)
		}
		root, _, err := snapshot.SaveTree(ctx, r, &snapshot.Tree{Nodes: []snapshot.Node{{Name: "home", Type: snapshot.TypeDir, Mode: 0o755, Subtrees: sub}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		rec, err := snapshot.Encode(&snapshot.Snapshot{
			Time: time.Date(2025, 1, 1+i, 0, 0, 0, 0, time.UTC), Host: "h", Paths: []string{"/home"},
			Kind: snapshot.KindFiles, Tree: root[0], ProgramVersion: "test",
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.SaveFile(ctx, backend.Snapshot, rec); err != nil {
			t.Fatal(err)
		}
	}
}

// openCached opens the repository on remote through a cache in base, as
// the command line does, and announces its tree packs.
func openCached(t *testing.T, remote backend.Backend, base string) (*repo.Repository, *cache.Cache) {
	t.Helper()
	var c *cache.Cache
	r, err := repo.Open(context.Background(), remote, repo.TestPassword, repo.OpenOptions{
		WrapBackend: func(cfg repo.Config, be backend.Backend) backend.Backend {
			c = cache.New(be, filepath.Join(base, cfg.ID))
			return c
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var trees []string
	seen := map[string]bool{}
	r.Index().Each(func(h chunk.Handle, loc index.Location) bool {
		if name := loc.Pack.String(); h.Kind == chunk.KindTree && !seen[name] {
			seen[name] = true
			trees = append(trees, name)
		}
		return true
	})
	c.SetPacks(trees)
	return r, c
}

// listAndWalk does what `snapshots` and `ls` do: list and read every
// snapshot record, then walk each snapshot's trees.
func listAndWalk(t *testing.T, r *repo.Repository) (snapshots, nodes int) {
	t.Helper()
	ctx := context.Background()
	err := r.ListFiles(ctx, backend.Snapshot, func(name string, _ int64) error {
		b, err := r.LoadFile(ctx, backend.Snapshot, name)
		if err != nil {
			return err
		}
		s, err := snapshot.Decode(b)
		if err != nil {
			return err
		}
		snapshots++
		return snapshot.Walk(ctx, r, s.Tree, func(string, *snapshot.Node) error {
			nodes++
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return snapshots, nodes
}

func TestWarmCacheLoadsNothingButListings(t *testing.T) {
	remote := faulty.New(mem.New())
	w := repo.TestRepositoryWithBackend(t, remote, repo.TestPackSize(repo.MinPackSize))
	writeSnapshots(t, w, 3)
	base := t.TempDir()

	// A cold cache loads what it needs once...
	remote.ResetCounts()
	r, _ := openCached(t, remote, base)
	snaps, nodes := listAndWalk(t, r)
	if snaps != 3 || nodes != 3*21 {
		t.Fatalf("saw %d snapshots and %d nodes, want 3 and 63", snaps, nodes)
	}
	cold := remote.Counts()
	if cold.LoadsByType[backend.Pack] == 0 {
		t.Fatal("cold cache: no pack was loaded; the test does not exercise tree packs")
	}

	// ...and a warm one, in a new process, loads only config and keys.
	for round := range 2 {
		remote.ResetCounts()
		r, _ = openCached(t, remote, base)
		if s, n := listAndWalk(t, r); s != snaps || n != nodes {
			t.Fatalf("warm cache: saw %d snapshots and %d nodes, want %d and %d", s, n, snaps, nodes)
		}
		got := remote.Counts()
		for _, ft := range []backend.FileType{backend.Pack, backend.Index, backend.Snapshot} {
			if got.LoadsByType[ft] != 0 {
				t.Errorf("round %d: warm cache loaded %d %s files from the backend, want 0", round, got.LoadsByType[ft], ft)
			}
		}
		if got.BytesLoaded > 4096 {
			t.Errorf("round %d: warm cache loaded %d bytes, want only config and key (<4 KiB)", round, got.BytesLoaded)
		}
	}

	// No data pack was ever copied: the cache holds metadata only.
	var cachedPacks int
	_ = filepath.WalkDir(filepath.Join(base, r.Config().ID, "data"), func(_ string, d os.DirEntry, _ error) error {
		if d != nil && !d.IsDir() {
			cachedPacks++
		}
		return nil
	})
	if want := int(cold.LoadsByType[backend.Pack]); cachedPacks == 0 || cachedPacks > want {
		t.Errorf("%d packs cached, want between 1 and the %d tree packs loaded", cachedPacks, want)
	}
}

func TestCorruptedCacheIsNotUsed(t *testing.T) {
	remote := faulty.New(mem.New())
	w := repo.TestRepositoryWithBackend(t, remote, repo.TestPackSize(repo.MinPackSize))
	writeSnapshots(t, w, 2)
	base := t.TempDir()
	r, _ := openCached(t, remote, base)
	snaps, nodes := listAndWalk(t, r)

	// Damage every cached file: a bit flip in each.
	var damaged int
	err := filepath.WalkDir(filepath.Join(base, r.Config().ID), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b[len(b)/2] ^= 1
		damaged++
		return os.WriteFile(p, b, 0o600)
	})
	if err != nil || damaged == 0 {
		t.Fatalf("damaged %d files: %v", damaged, err)
	}
	remote.ResetCounts()
	r, _ = openCached(t, remote, base)
	if s, n := listAndWalk(t, r); s != snaps || n != nodes {
		t.Fatalf("after damage: saw %d snapshots and %d nodes, want %d and %d", s, n, snaps, nodes)
	}
	if got := remote.Counts().Loads; got == 0 {
		t.Fatal("damaged copies were used instead of being reloaded")
	}
	// The copies were replaced: the next run loads nothing again.
	remote.ResetCounts()
	r, _ = openCached(t, remote, base)
	listAndWalk(t, r)
	for _, ft := range []backend.FileType{backend.Pack, backend.Index, backend.Snapshot} {
		if n := remote.Counts().LoadsByType[ft]; n != 0 {
			t.Errorf("after repair, %d %s files loaded, want 0", n, ft)
		}
	}
}
