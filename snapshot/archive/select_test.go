package archive_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/archive"
	"github.com/imagobackup/imago/snapshot/filter"
	"golang.org/x/sys/unix"
)

// selectionTree creates a tree for the exclusion tests under a temp dir.
func selectionTree(t *testing.T) string {
	dir := t.TempDir()
	for _, p := range []string{
		"src/main.go", "src/debug.log", "src/cache/obj", "src/cachefile",
		"home/cache", "data/keep/k1", "data/other/o1", "data/top",
		"skipme/.nobackup", "skipme/big", "deep/skip/.nobackup", "deep/kept",
	} {
		writeFile(t, filepath.Join(dir, p), []byte(p))
	}
	return dir
}

func TestExclude(t *testing.T) {
	dir := selectionTree(t)
	tests := []struct {
		name     string
		patterns []string
		present  []string
		absent   []string
	}{
		{"none", nil, []string{"src/debug.log", "skipme/big"}, nil},
		{"glob", []string{"*.log"}, []string{"src/main.go"}, []string{"src/debug.log"}},
		{"name at any depth", []string{"cache"}, []string{"src/cachefile"}, []string{"src/cache", "home/cache"}},
		{"directories only", []string{"cache/"}, []string{"home/cache", "src/cachefile"}, []string{"src/cache"}},
		{"anchored", []string{dir + "/src/cache"}, []string{"home/cache"}, []string{"src/cache"}},
		{"re-include below an excluded dir", []string{"data", "!data/keep"}, []string{"data/keep/k1"}, []string{"data/other", "data/top"}},
		{"excluded path given", []string{filepath.Base(dir)}, nil, []string{"src"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := filter.Compile(tt.patterns)
			if err != nil {
				t.Fatal(err)
			}
			store := snapshot.NewMemStore()
			opts, _ := options()
			opts.Exclude = m
			res := run(t, store, []string{dir}, opts)
			checkPresence(t, store, res.Tree, dir, tt.present, tt.absent)
			files, bytes, err := archive.Scan(context.Background(), []string{dir}, opts)
			if err != nil {
				t.Fatal(err)
			}
			if uint64(files) != res.Summary.TotalFilesProcessed || uint64(bytes) != res.Summary.TotalBytesProcessed {
				t.Errorf("Scan counted %d files, %d bytes; Run processed %d, %d",
					files, bytes, res.Summary.TotalFilesProcessed, res.Summary.TotalBytesProcessed)
			}
		})
	}
}

func TestExcludeIfPresent(t *testing.T) {
	dir := selectionTree(t)
	store := snapshot.NewMemStore()
	opts, _ := options()
	opts.ExcludeIfPresent = []string{".nobackup", "CACHEDIR.TAG"}
	res := run(t, store, []string{dir}, opts)
	checkPresence(t, store, res.Tree, dir, []string{"deep/kept", "src/main.go"}, []string{"skipme", "deep/skip"})
}

func checkPresence(t *testing.T, store *snapshot.MemStore, root chunk.ID, dir string, present, absent []string) {
	t.Helper()
	for _, p := range present {
		if find(t, store, root, filepath.Join(dir, p)) == nil {
			t.Errorf("%s is missing", p)
		}
	}
	for _, p := range absent {
		if find(t, store, root, filepath.Join(dir, p)) != nil {
			t.Errorf("%s is in the snapshot but excluded", p)
		}
	}
}

func TestOneFileSystem(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "local"), []byte("here"))
	mnt := filepath.Join(dir, "mnt")
	writeFile(t, filepath.Join(mnt, "remote"), []byte("elsewhere"))
	writeFile(t, filepath.Join(mnt, "sub", "deeper"), []byte("elsewhere too"))

	// The hook puts mnt and everything below it on another device, as a
	// mount point would.
	lstat := func(p string, st *unix.Stat_t) error {
		if err := unix.Lstat(p, st); err != nil {
			return err
		}
		if p == mnt || strings.HasPrefix(p, mnt+"/") {
			st.Dev++
		}
		return nil
	}
	for _, one := range []bool{true, false} {
		store := snapshot.NewMemStore()
		opts, _ := options()
		opts.OneFileSystem = one
		archive.SetLstatHook(&opts, lstat)
		res := run(t, store, []string{dir}, opts)
		mustFind(t, store, res.Tree, filepath.Join(dir, "local"))
		m := mustFind(t, store, res.Tree, mnt)
		remote := find(t, store, res.Tree, filepath.Join(mnt, "remote"))
		if one {
			if remote != nil {
				t.Error("OneFileSystem: a file on another device was backed up")
			}
			sub, err := snapshot.LoadTree(context.Background(), store, m.Subtrees)
			if err != nil || len(sub.Nodes) != 0 {
				t.Errorf("OneFileSystem: the mount point should be an empty directory (err %v)", err)
			}
		} else if remote == nil {
			t.Error("without OneFileSystem the other device must be backed up")
		}
		files, _, err := archive.Scan(context.Background(), []string{dir}, opts)
		if err != nil || uint64(files) != res.Summary.TotalFilesProcessed {
			t.Errorf("OneFileSystem %v: Scan counted %d files (err %v), Run %d", one, files, err, res.Summary.TotalFilesProcessed)
		}
	}

	t.Run("a given path on another device is backed up", func(t *testing.T) {
		store := snapshot.NewMemStore()
		opts, _ := options()
		opts.OneFileSystem = true
		archive.SetLstatHook(&opts, lstat)
		res := run(t, store, []string{dir, mnt}, opts)
		mustFind(t, store, res.Tree, filepath.Join(mnt, "sub", "deeper"))
	})
}
