package repo

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/mem"
)

// indexLoadCounter counts the index files loaded through it.
type indexLoadCounter struct {
	backend.Backend
	loads atomic.Int64
}

func (c *indexLoadCounter) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if h.Type == backend.Index {
		c.loads.Add(1)
	}
	return c.Backend.Load(ctx, h, length, offset, fn)
}

// saveRandomChunks saves n random chunks (seeds from seed on) and flushes.
func saveRandomChunks(t *testing.T, r *Repository, seed uint64, n int) []chunk.ID {
	t.Helper()
	var ids []chunk.ID
	for i := range n {
		id, _, err := r.SaveChunk(context.Background(), chunk.KindData, randomBytes(seed+uint64(i), 4<<10))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	mustFlush(t, r)
	return ids
}

// wantBlobs fails unless r holds exactly the chunks of ids and each loads.
func wantBlobs(t *testing.T, r *Repository, seed uint64, ids []chunk.ID, present bool) {
	t.Helper()
	for i, id := range ids {
		h := chunk.Handle{ID: id, Kind: chunk.KindData}
		if got := r.Index().Has(h); got != present {
			t.Fatalf("blob %d: in index %v, want %v", i, got, present)
		}
		if !present {
			continue
		}
		b, err := r.LoadChunk(context.Background(), h, nil)
		if err != nil || !bytes.Equal(b, randomBytes(seed+uint64(i), 4<<10)) {
			t.Fatalf("blob %d: wrong content, err %v", i, err)
		}
	}
}

func TestLocalIndex(t *testing.T) {
	ctx := context.Background()
	be := &indexLoadCounter{Backend: mem.New()}
	r := TestRepositoryWithBackend(t, be, TestPackSize(64<<10))
	first := saveRandomChunks(t, r, 0, 40)
	r.Close()

	dir := filepath.Join(t.TempDir(), "blobindex")
	opts := OpenOptions{IndexDir: func(Config) string { return dir }}
	open := func(wantLoads int64) *Repository {
		t.Helper()
		be.loads.Store(0)
		r, err := Open(ctx, be, TestPassword, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		if n := be.loads.Load(); wantLoads >= 0 && n != wantLoads {
			t.Errorf("Open loaded %d index files, want %d", n, wantLoads)
		}
		return r
	}
	names := func() map[string]bool {
		t.Helper()
		m := map[string]bool{}
		err := be.List(ctx, backend.Index, func(fi backend.FileInfo) error { m[fi.Name] = true; return nil })
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	// The first Open with the folder builds the index from the
	// repository and leaves a copy; the next ones map the copy and load
	// only the index files written since.
	// A crash left temporary files: a day-old one is deleted, a fresh
	// one may belong to a running process and stays.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	oldTemp, newTemp := filepath.Join(dir, "imago-index-1.tmp"), filepath.Join(dir, indexFileName+".tmp-2")
	for _, p := range []string{oldTemp, newTemp} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(oldTemp, time.Now().Add(-25*time.Hour), time.Now().Add(-25*time.Hour)); err != nil {
		t.Fatal(err)
	}
	firstFiles := names()
	r2 := open(int64(len(firstFiles)))
	if _, err := os.Stat(oldTemp); !os.IsNotExist(err) {
		t.Errorf("stale temporary file kept: %v", err)
	}
	if _, err := os.Stat(newTemp); err != nil {
		t.Errorf("fresh temporary file removed: %v", err)
	}
	wantBlobs(t, r2, 0, first, true)
	copyPath := filepath.Join(dir, indexFileName)
	if x, _, err := index.OpenFile(copyPath, ""); err != nil {
		t.Fatalf("no local copy of the index: %v", err)
	} else {
		x.Close()
	}
	second := saveRandomChunks(t, r2, 1000, 10)
	r2.Close()
	r3 := open(int64(len(names()) - len(firstFiles)))
	wantBlobs(t, r3, 0, first, true)
	wantBlobs(t, r3, 1000, second, true)
	if n := r3.Index().Len(); n != 50 {
		t.Errorf("index holds %d blobs, want 50", n)
	}
	r3.Close()

	// The index files the copy was built from are gone (as after a
	// prune): the copy is stale, and the index holds only what the
	// repository's index files list.
	for name := range firstFiles {
		if err := be.Remove(ctx, backend.Handle{Type: backend.Index, Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	r4 := open(int64(len(names())))
	wantBlobs(t, r4, 0, first, false)
	wantBlobs(t, r4, 1000, second, true)
	r4.Close()
	// It left a new copy, which the next Open maps.
	r5 := open(0)
	wantBlobs(t, r5, 1000, second, true)
	r5.Close()

	// A damaged copy is replaced, not trusted.
	if err := os.WriteFile(copyPath, bytes.Repeat([]byte("x"), 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	r6 := open(int64(len(names())))
	wantBlobs(t, r6, 1000, second, true)
	if n := r6.Index().Len(); n != 10 {
		t.Errorf("index holds %d blobs, want 10", n)
	}
	r6.Close()
	if x, _, err := index.OpenFile(copyPath, ""); err != nil {
		t.Errorf("damaged copy not rewritten: %v", err)
	} else {
		x.Close()
	}
}

// TestLocalIndexUnusableFolder: a folder that cannot be created costs the
// local index, not the Open.
func TestLocalIndexUnusableFolder(t *testing.T) {
	be := mem.New()
	r := TestRepositoryWithBackend(t, be)
	ids := saveRandomChunks(t, r, 0, 5)
	r.Close()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r2, err := Open(context.Background(), be, TestPassword, OpenOptions{IndexDir: func(Config) string { return filepath.Join(file, "blobindex") }})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	wantBlobs(t, r2, 0, ids, true)
}
