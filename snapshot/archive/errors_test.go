package archive_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/archive"
)

func TestUnreadable(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	locked := filepath.Join(dir, "locked")
	writeFile(t, secret, []byte("no"))
	writeFile(t, filepath.Join(locked, "inside"), []byte("no"))
	writeFile(t, filepath.Join(dir, "fine"), []byte("yes"))

	store := snapshot.NewMemStore()
	opts, rep := options()
	// Root ignores mode 000, so the hook plays a file and a directory that
	// cannot be opened.
	archive.SetOpenHook(&opts, func(p string, flag int) (*os.File, error) {
		if p == secret || p == locked {
			return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrPermission}
		}
		return os.OpenFile(p, flag, 0)
	})
	res := run(t, store, []string{dir}, opts)
	if res.Errors != 2 || res.Summary.FilesUnreadable != 2 {
		t.Errorf("Errors %d FilesUnreadable %d, want 2 and 2", res.Errors, res.Summary.FilesUnreadable)
	}
	for _, p := range []string{secret, locked} {
		if err := rep.get(p); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("OnError for %s: %v, want a permission error", p, err)
		}
		if find(t, store, res.Tree, p) != nil {
			t.Errorf("unreadable %s is in the snapshot", p)
		}
	}
	if string(content(t, store, mustFind(t, store, res.Tree, filepath.Join(dir, "fine")))) != "yes" {
		t.Error("the readable file was not backed up")
	}
}

func TestFileChangedDuringRead(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "busy")
	data := randomBytes(8, 120<<10)
	writeFile(t, p, data)
	writeFile(t, filepath.Join(dir, "quiet"), []byte("calm"))

	store := snapshot.NewMemStore()
	opts, rep := options()
	archive.SetAfterReadHook(&opts, func(path string) {
		if path == p {
			later := time.Now().Add(time.Minute)
			if err := os.Chtimes(p, later, later); err != nil {
				t.Error(err)
			}
		}
	})
	res := run(t, store, []string{dir}, opts)
	if res.Warnings != 1 || res.Errors != 0 {
		t.Errorf("Warnings %d Errors %d, want 1 and 0", res.Warnings, res.Errors)
	}
	if err := rep.get(p); !errors.Is(err, archive.ErrFileChanged) {
		t.Errorf("OnError for the busy file: %v, want ErrFileChanged", err)
	}
	n := mustFind(t, store, res.Tree, p)
	if string(content(t, store, n)) != string(data) {
		t.Error("a changed file is still stored with what was read")
	}

	// The next backup must not trust the recorded metadata.
	opts, _ = options()
	opts.Parent = res.Tree
	next := run(t, store, []string{dir}, opts)
	if next.Summary.BytesRead != uint64(len(data)) || next.Summary.FilesChanged != 1 {
		t.Errorf("next run: BytesRead %d FilesChanged %d, want %d and 1", next.Summary.BytesRead, next.Summary.FilesChanged, len(data))
	}
}

// failingSaver fails every save of one kind after a number of saves.
type failingSaver struct {
	s     snapshot.ChunkSaver
	kind  chunk.Kind
	after int64
	saves atomic.Int64
}

var errRepo = errors.New("repository full")

func (f *failingSaver) SaveChunk(ctx context.Context, k chunk.Kind, data []byte) (chunk.ID, int, error) {
	if k == f.kind && f.saves.Add(1) > f.after {
		return chunk.ID{}, 0, errRepo
	}
	return f.s.SaveChunk(ctx, k, data)
}

func TestRepositoryErrorAborts(t *testing.T) {
	dir := t.TempDir()
	for i := range 30 {
		writeFile(t, filepath.Join(dir, "d", string(rune('a'+i))), randomBytes(uint64(i), 90<<10))
	}
	tests := []struct {
		name  string
		kind  chunk.Kind
		after int64
	}{
		{"first data chunk", chunk.KindData, 0},
		{"a later data chunk", chunk.KindData, 20},
		{"first tree", chunk.KindTree, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := snapshot.NewMemStore()
			opts, _ := options()
			fs := &failingSaver{s: store, kind: tt.kind, after: tt.after}
			_, err := archive.Run(context.Background(), fs, store, []string{dir}, opts)
			if !errors.Is(err, errRepo) {
				t.Errorf("Run = %v, want the repository's error", err)
			}
		})
	}
}

func TestCanceled(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), randomBytes(9, 1<<20))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	store := snapshot.NewMemStore()
	opts, _ := options()
	if _, err := archive.Run(ctx, store, store, []string{dir}, opts); !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a canceled context = %v, want context.Canceled", err)
	}
}

func TestProgressAndScan(t *testing.T) {
	dir := t.TempDir()
	for i := range 12 {
		writeFile(t, filepath.Join(dir, "x", string(rune('a'+i))), randomBytes(uint64(i), i*40<<10))
	}
	writeFile(t, filepath.Join(dir, "y", "z"), nil)
	store := snapshot.NewMemStore()
	opts, _ := options()
	opts.Progress = &archive.Progress{}
	files, bytes, err := archive.Scan(context.Background(), []string{dir}, opts)
	if err != nil {
		t.Fatal(err)
	}
	res := run(t, store, []string{dir}, opts)
	s := res.Summary
	if files != 13 || uint64(files) != s.TotalFilesProcessed || uint64(bytes) != s.TotalBytesProcessed {
		t.Errorf("Scan %d files %d bytes; Run %d files %d bytes; want 13 files, equal counts",
			files, bytes, s.TotalFilesProcessed, s.TotalBytesProcessed)
	}
	p := opts.Progress
	if p.Files.Load() != files || p.Bytes.Load() != bytes || uint64(p.BytesRead.Load()) != s.BytesRead {
		t.Errorf("progress: %d files %d bytes %d read; want %d, %d, %d",
			p.Files.Load(), p.Bytes.Load(), p.BytesRead.Load(), files, bytes, s.BytesRead)
	}
	if filepath.Dir(p.Current()) != filepath.Join(dir, "x") && filepath.Dir(p.Current()) != filepath.Join(dir, "y") {
		t.Errorf("current file %q, want one of the files", p.Current())
	}
	if _, _, err := archive.Scan(context.Background(), []string{filepath.Join(dir, "nope")}, opts); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Scan of a missing path = %v, want ErrNotExist", err)
	}
}

func TestProgressWithParent(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a"), randomBytes(10, 90<<10))
	writeFile(t, filepath.Join(dir, "b"), randomBytes(11, 10<<10))
	store := snapshot.NewMemStore()
	opts, _ := options()
	first := run(t, store, []string{dir}, opts)
	opts.Parent = first.Tree
	opts.Progress = &archive.Progress{}
	res := run(t, store, []string{dir}, opts)
	if got, want := opts.Progress.Bytes.Load(), int64(100<<10); got != want || res.Summary.FilesUnchanged != 2 {
		t.Errorf("progress bytes %d, want %d: reused files count as processed", got, want)
	}
	if got := opts.Progress.BytesRead.Load(); got != 0 {
		t.Errorf("progress bytes read %d, want 0", got)
	}
}
