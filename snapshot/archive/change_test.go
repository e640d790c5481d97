package archive_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagobackup/imago/snapshot"
)

func TestParentChangeDetection(t *testing.T) {
	dir := t.TempDir()
	var total uint64
	for i := range 20 {
		p := filepath.Join(dir, fmt.Sprintf("d%d", i%3), fmt.Sprintf("s%d", i%2), fmt.Sprintf("f%02d", i))
		size := 1000 + i*17<<10
		writeFile(t, p, randomBytes(uint64(100+i), size))
		total += uint64(size)
	}
	store := snapshot.NewMemStore()
	opts, _ := options()
	first := run(t, store, []string{dir}, opts)
	if s := first.Summary; s.FilesNew != 20 || s.BytesRead != total || s.DirsNew == 0 {
		t.Fatalf("first run: FilesNew %d BytesRead %d DirsNew %d, want 20, %d, > 0", s.FilesNew, s.BytesRead, s.DirsNew, total)
	}

	t.Run("nothing changed", func(t *testing.T) {
		before := store.Stats()
		opts.Parent = first.Tree
		res := run(t, store, []string{dir}, opts)
		s := res.Summary
		if s.BytesRead != 0 || s.DataBlobs != 0 {
			t.Errorf("BytesRead %d DataBlobs %d, want 0: unchanged files must not be read", s.BytesRead, s.DataBlobs)
		}
		if s.FilesUnchanged != 20 || s.FilesNew != 0 || s.FilesChanged != 0 || s.BytesReused != total {
			t.Errorf("unchanged %d new %d changed %d reused %d, want 20, 0, 0, %d",
				s.FilesUnchanged, s.FilesNew, s.FilesChanged, s.BytesReused, total)
		}
		// Only directories above dir may have changed meanwhile (/tmp is
		// shared with other tests): one new blob for each at most.
		t.Logf("new tree blobs: %d", s.TreeBlobs)
		newBlobs := store.Stats().NewBlobs - before.NewBlobs
		if s.TreeBlobs > 4 || uint64(newBlobs) != s.TreeBlobs {
			t.Errorf("%d new tree blobs (store: %d new blobs), want at most 4, all counted", s.TreeBlobs, newBlobs)
		}
		if s.DirsChanged+s.DirsNew > 4 || s.DirsUnchanged < 10 {
			t.Errorf("dirs new %d changed %d unchanged %d, want nearly all unchanged", s.DirsNew, s.DirsChanged, s.DirsUnchanged)
		}
		if mustFind(t, store, res.Tree, dir).Subtrees[0] != mustFind(t, store, first.Tree, dir).Subtrees[0] {
			t.Error("the backed-up directory got a different tree")
		}
	})

	t.Run("one touched and one new file", func(t *testing.T) {
		touched := filepath.Join(dir, "d1", "s0", "f04")
		later := time.Now().Add(time.Hour)
		if err := os.Chtimes(touched, later, later); err != nil {
			t.Fatal(err)
		}
		added := randomBytes(999, 70<<10)
		writeFile(t, filepath.Join(dir, "d2", "new"), added)
		st, err := os.Stat(touched)
		if err != nil {
			t.Fatal(err)
		}
		opts.Parent = first.Tree
		res := run(t, store, []string{dir}, opts)
		s := res.Summary
		if want := uint64(st.Size()) + uint64(len(added)); s.BytesRead != want {
			t.Errorf("BytesRead %d, want %d: only the touched and the new file are read", s.BytesRead, want)
		}
		if s.FilesChanged != 1 || s.FilesNew != 1 || s.FilesUnchanged != 19 {
			t.Errorf("changed %d new %d unchanged %d, want 1, 1, 19", s.FilesChanged, s.FilesNew, s.FilesUnchanged)
		}
		if s.DirsChanged < 4 { // d1/s0, d1, d2 and dir itself
			t.Errorf("DirsChanged %d, want at least 4", s.DirsChanged)
		}
		n := mustFind(t, store, res.Tree, touched)
		if n.MTime != later.UnixNano() {
			t.Errorf("touched file has mtime %d, want %d", n.MTime, later.UnixNano())
		}
		if !bytes.Equal(content(t, store, mustFind(t, store, res.Tree, filepath.Join(dir, "d2", "new"))), added) {
			t.Error("new file content differs")
		}
	})
}
