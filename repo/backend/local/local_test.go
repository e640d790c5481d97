package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/backendtest"
)

func newTestBackend(t *testing.T) *Backend {
	t.Helper()
	be, err := Create(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	return be
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return newTestBackend(t) })
}

// filesUnder returns the paths of all regular files below dir, relative to
// it, sorted.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

func TestLayout(t *testing.T) {
	be := newTestBackend(t)
	ctx := context.Background()
	pack := strings.Repeat("ab", 32)
	handles := []backend.Handle{
		{Type: backend.Config},
		{Type: backend.Key, Name: "k1"},
		{Type: backend.Pack, Name: pack},
		{Type: backend.Index, Name: "i1"},
		{Type: backend.Snapshot, Name: "s1"},
		{Type: backend.Lock, Name: "l1"},
	}
	for _, h := range handles {
		if err := be.Save(ctx, h, strings.NewReader(h.String()), int64(len(h.String()))); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"config", "data/ab/" + pack, "index/i1", "keys/k1", "locks/l1", "snapshots/s1"}
	got := filesUnder(t, be.Location())
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("files on disk = %v, want %v", got, want)
	}
	b, err := os.ReadFile(filepath.Join(be.Location(), "data", "ab", pack))
	if err != nil || string(b) != "data/"+pack {
		t.Errorf("pack file holds %q, %v; want %q", b, err, "data/"+pack)
	}
}

func TestCreateMakesFoldersAndShards(t *testing.T) {
	be := newTestBackend(t)
	var dirs []string
	err := filepath.WalkDir(be.Location(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if fi.Mode().Perm() != dirMode {
				t.Errorf("folder %s has mode %v, want %v", p, fi.Mode().Perm(), dirMode)
			}
			rel, _ := filepath.Rel(be.Location(), p)
			dirs = append(dirs, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// ".", 5 type folders, 256 shards.
	if len(dirs) != 1+5+256 {
		t.Errorf("Create made %d folders, want %d", len(dirs), 1+5+256)
	}
	for _, d := range []string{"keys", "index", "snapshots", "locks", "data", "data/00", "data/7f", "data/ff"} {
		if fi, err := os.Stat(filepath.Join(be.Location(), d)); err != nil || !fi.IsDir() {
			t.Errorf("folder %s missing after Create: %v", d, err)
		}
	}
}

func TestCreateIntoExistingFolder(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	be, err := Create(dir)
	if err != nil {
		t.Fatalf("Create into a non-empty folder without config: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "README")); err != nil || string(b) != "mine" {
		t.Errorf("Create changed an existing file: %q, %v", b, err)
	}
	if _, err := Create(dir); err != nil {
		t.Errorf("second Create of the same folder: %v", err)
	}
	if be.Location() != filepath.Clean(dir) {
		t.Errorf("Location = %q, want %q", be.Location(), dir)
	}
}

func TestFilePermissions(t *testing.T) {
	be := newTestBackend(t)
	h := backend.Handle{Type: backend.Key, Name: "key"}
	if err := be.Save(context.Background(), h, strings.NewReader("secret"), 6); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(be.Location(), "keys", "key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != fileMode {
		t.Errorf("saved file has mode %v, want %v", fi.Mode().Perm(), fileMode)
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		dir      string
		ok       bool
		notExist bool
	}{
		{"existing folder", dir, true, false},
		{"missing folder", filepath.Join(dir, "nope"), false, true},
		{"a file", filepath.Join(dir, "file"), false, false},
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be, err := Open(tt.dir)
			if tt.ok != (err == nil) {
				t.Fatalf("Open(%s) = %v, want ok %v", tt.dir, err, tt.ok)
			}
			if errors.Is(err, backend.ErrNotExist) != tt.notExist {
				t.Errorf("Open(%s) = %v, want ErrNotExist %v", tt.dir, err, tt.notExist)
			}
			if be != nil && be.Location() != tt.dir {
				t.Errorf("Location = %q, want %q", be.Location(), tt.dir)
			}
		})
	}
}

func TestOpenSeesCreatedFiles(t *testing.T) {
	be := newTestBackend(t)
	ctx := context.Background()
	h := backend.Handle{Type: backend.Snapshot, Name: "s"}
	if err := be.Save(ctx, h, strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	again, err := Open(be.Location())
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := again.Stat(ctx, h); err != nil || fi.Size != 1 {
		t.Errorf("Stat through a second Open = %+v, %v; want size 1", fi, err)
	}
}

// failingReaderAt returns good bytes up to failAt and then an error.
type failingReaderAt struct {
	data   []byte
	failAt int64
	err    error
}

func (r failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.failAt {
		return 0, r.err
	}
	if off+int64(len(p)) > r.failAt {
		p = p[:r.failAt-off]
	}
	n := copy(p, r.data[off:])
	return n, nil
}

// fullFile accepts limit bytes and then fails every write with ENOSPC, as
// a full file system does. It wraps rather than embeds *os.File so that
// io.Copy cannot bypass Write through (*os.File).ReadFrom.
type fullFile struct {
	f     *os.File
	limit int
}

func (f *fullFile) Write(p []byte) (int, error) {
	if len(p) > f.limit {
		n, _ := f.f.Write(p[:f.limit])
		f.limit = 0
		return n, &fs.PathError{Op: "write", Path: f.f.Name(), Err: syscall.ENOSPC}
	}
	f.limit -= len(p)
	return f.f.Write(p)
}

func (f *fullFile) Sync() error  { return f.f.Sync() }
func (f *fullFile) Close() error { return f.f.Close() }
func (f *fullFile) Name() string { return f.f.Name() }

func TestFailedSaveLeavesNoFile(t *testing.T) {
	const size = 1 << 20 // Several copy buffers, so the failure is midway.
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	readErr := errors.New("source device read error")
	tests := []struct {
		name     string
		src      io.ReaderAt
		diskFull bool
		want     error
	}{
		{"source fails midway", failingReaderAt{data: data, failAt: size / 2, err: readErr}, false, readErr},
		{"disk full midway", bytes.NewReader(data), true, syscall.ENOSPC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newTestBackend(t)
			ctx := context.Background()
			h := backend.Handle{Type: backend.Pack, Name: "cafe"}
			old := []byte("previous version")
			if err := be.Save(ctx, h, bytes.NewReader(old), int64(len(old))); err != nil {
				t.Fatal(err)
			}
			if tt.diskFull {
				be.createTemp = func(dir string) (tempFile, error) {
					f, err := os.CreateTemp(dir, tempPrefix+"*")
					if err != nil {
						return nil, err
					}
					return &fullFile{f: f, limit: size / 3}, nil
				}
			}
			err := be.Save(ctx, h, tt.src, size)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Save = %v, want an error wrapping %v", err, tt.want)
			}
			got := filesUnder(t, be.Location())
			if want := []string{"data/ca/cafe"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("files after a failed Save = %v, want %v (no temporary file)", got, want)
			}
			b, err := backend.LoadAll(ctx, be, h, nil)
			if err != nil || !bytes.Equal(b, old) {
				t.Errorf("after a failed Save the file holds %q, %v; want the previous %q", b, err, old)
			}
		})
	}
}

func TestListIgnoresStrayFiles(t *testing.T) {
	be := newTestBackend(t)
	ctx := context.Background()
	pack := backend.Handle{Type: backend.Pack, Name: "abcd"}
	if err := be.Save(ctx, pack, strings.NewReader("pack"), 4); err != nil {
		t.Fatal(err)
	}
	root := be.Location()
	stray := map[string]string{
		"data/ab/.tmp-123":  "left by a crash",
		"data/ab/cdef":      "pack in the wrong shard",
		"data/loose":        "not in a shard",
		"index/.tmp-456":    "left by a crash",
		"snapshots/.hidden": "dot file",
	}
	for p, content := range stray {
		if err := os.WriteFile(filepath.Join(root, p), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "index", "subfolder"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, ft := range backend.FileTypes {
		var names []string
		err := be.List(ctx, ft, func(fi backend.FileInfo) error {
			names = append(names, fi.Name)
			return nil
		})
		if err != nil {
			t.Fatalf("List(%s): %v", ft, err)
		}
		want := 0
		if ft == backend.Pack {
			want = 1
		}
		if len(names) != want || (want == 1 && names[0] != "abcd") {
			t.Errorf("List(%s) = %q, want %d stored files only", ft, names, want)
		}
	}
}

func TestLoadDetectsShrunkFile(t *testing.T) {
	be := newTestBackend(t)
	ctx := context.Background()
	h := backend.Handle{Type: backend.Index, Name: "idx"}
	data := bytes.Repeat([]byte{7}, 1000)
	if err := be.Save(ctx, h, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	err := be.Load(ctx, h, 1000, 0, func(rd io.Reader) error {
		// Another process truncates the file after Load checked its size.
		if err := os.Truncate(filepath.Join(be.Location(), "index", "idx"), 600); err != nil {
			return err
		}
		_, err := io.ReadAll(rd)
		return err
	})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Load of a file that shrank = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestSaveRecreatesMissingShard(t *testing.T) {
	be := newTestBackend(t)
	ctx := context.Background()
	if err := os.Remove(filepath.Join(be.Location(), "data", "ee")); err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.Pack, Name: "eeee"}
	if err := be.Save(ctx, h, strings.NewReader("x"), 1); err != nil {
		t.Fatalf("Save into a missing shard: %v", err)
	}
	if fi, err := be.Stat(ctx, h); err != nil || fi.Size != 1 {
		t.Errorf("Stat = %+v, %v; want size 1", fi, err)
	}
}
