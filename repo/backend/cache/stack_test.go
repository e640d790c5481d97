package cache_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/faulty"
	"github.com/imagobackup/imago/repo/backend/mem"
	"github.com/imagobackup/imago/repo/backend/retry"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/archive"
	"github.com/imagobackup/imago/snapshot/restore"
)

// writeSource makes a small tree: random files across several packs, a
// compressible file, an empty file and a nested folder.
func writeSource(t *testing.T, dir string, seed uint64) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, 1))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	files := map[string][]byte{
		"a/random-1M":       random(1<<20 + 3),
		"a/b/random-600K":   random(600 << 10),
		"a/b/c/small":       []byte("small file\n"),
		"compressible":      bytes.Repeat([]byte("imago "), 100000),
		"empty":             nil,
		"a/b/c/random-300K": random(300 << 10),
	}
	// Many small files make many blobs, packs and so backend calls.
	for i := range 150 {
		files[filepath.Join("many", string(rune('a'+i%26)), string(rune('a'+i/26)))] = random(1000 + rnd.IntN(4000))
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// sameFiles fails t unless every regular file below want is below got with
// the same bytes.
func sameFiles(t *testing.T, want, got string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(want, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		a, _ := os.ReadFile(p)
		b, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s: restored %d bytes differ from the %d backed up", rel, len(b), len(a))
		}
		n++
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("compared %d files: %v", n, err)
	}
}

// TestTransientFailuresGiveCompleteBackups backs up and restores through
// the stack a remote repository gets (cache over retry over the store)
// while the store fails 10 % of its calls transiently.
func TestTransientFailuresGiveCompleteBackups(t *testing.T) {
	ctx := context.Background()
	store := faulty.New(mem.New())
	store.Transient(0.1, 7)
	var retries atomic.Int64
	remote := retry.New(store, retry.Options{
		Sleep:  func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
		Notify: func(string, backend.Handle, int, error) { retries.Add(1) },
	})
	w := repo.TestRepositoryWithBackend(t, remote, repo.TestPackSize(repo.MinPackSize))
	w.Close()
	base := t.TempDir()

	src := t.TempDir()
	writeSource(t, src, 1)
	var parent *snapshot.Snapshot
	for night := range 2 {
		if night == 1 {
			writeSource(t, filepath.Join(src, "a", "new"), 2)
		}
		r, _ := openCached(t, remote, base)
		opts := archive.Options{Params: r.Config().FileParams(), Workers: 2}
		if parent != nil {
			opts.Parent = parent.Tree
		}
		res, err := archive.Run(ctx, r, r, []string{src}, opts)
		if err != nil {
			t.Fatalf("night %d: backup: %v", night, err)
		}
		if res.Errors != 0 {
			t.Fatalf("night %d: %d files not read", night, res.Errors)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatalf("night %d: flush: %v", night, err)
		}
		parent = &snapshot.Snapshot{Time: time.Now(), Host: "h", Paths: []string{src}, Kind: snapshot.KindFiles, Tree: res.Tree, ProgramVersion: "test"}
		rec, err := snapshot.Encode(parent)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.SaveFile(ctx, backend.Snapshot, rec); err != nil {
			t.Fatalf("night %d: save snapshot: %v", night, err)
		}
		r.Close()

		// Restore in a new session, as another command would.
		r, _ = openCached(t, remote, base)
		target := t.TempDir()
		if _, err := restore.Run(ctx, r, parent.Tree, target, restore.Options{Verify: true, Workers: 2}); err != nil {
			t.Fatalf("night %d: restore: %v", night, err)
		}
		sameFiles(t, src, filepath.Join(target, src))
		r.Close()
	}
	if retries.Load() < 10 {
		t.Fatalf("only %d retries: the faults did not exercise the stack", retries.Load())
	}
	t.Logf("%d calls retried", retries.Load())
}
