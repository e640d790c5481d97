package sftp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/backendtest"
	"github.com/imagobackup/imago/repo/backend/retry"
	"github.com/imagobackup/imago/repo/backend/sftp"
	"github.com/imagobackup/imago/repo/backend/sftp/sftptest"
)

// create makes a repository in a new folder on srv and returns the backend
// and the folder, closing the backend at cleanup.
func create(t *testing.T, srv *sftptest.Server) (*sftp.Backend, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	be, err := sftp.Create(context.Background(), srv.Config(dir))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { _ = be.Close() }) // Closing twice is fine.
	return be, dir
}

func TestConformance(t *testing.T) {
	srv := sftptest.StartServer(t)
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		be, _ := create(t, srv)
		return be
	})
}

func TestConformanceRetry(t *testing.T) {
	srv := sftptest.StartServer(t)
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		be, _ := create(t, srv)
		return retry.New(be, retry.Options{})
	})
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
	srv := sftptest.StartServer(t)
	be, dir := create(t, srv)
	ctx := context.Background()
	pack := strings.Repeat("ab", 32)
	for _, h := range []backend.Handle{
		{Type: backend.Config},
		{Type: backend.Pack, Name: pack},
		{Type: backend.Snapshot, Name: "s1"},
	} {
		if err := be.Save(ctx, h, strings.NewReader("x"), 1); err != nil {
			t.Fatalf("Save(%v): %v", h, err)
		}
	}
	want := []string{"config", "data/ab/" + pack, "snapshots/s1"}
	if got := filesUnder(t, dir); !slices.Equal(got, want) {
		t.Errorf("files on the server = %v, want %v", got, want)
	}
	for _, sub := range []string{"keys", "index", "locks", "data/00", "data/ff"} {
		if fi, err := os.Stat(filepath.Join(dir, sub)); err != nil || !fi.IsDir() {
			t.Errorf("Create did not make folder %s: %v", sub, err)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("repository folder mode = %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	if got, want := be.Location(), fmt.Sprintf("sftp://%s@127.0.0.1:%d%s", srv.User, srv.Port, dir); got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
}

func TestOpen(t *testing.T) {
	srv := sftptest.StartServer(t)
	ctx := context.Background()
	t.Run("existing", func(t *testing.T) {
		_, dir := create(t, srv)
		be, err := sftp.Open(ctx, srv.Config(dir))
		if err != nil {
			t.Fatalf("Open of a created repository: %v", err)
		}
		defer be.Close()
		if err := be.Save(ctx, backend.Handle{Type: backend.Config}, strings.NewReader("cfg"), 3); err != nil {
			t.Fatalf("Save: %v", err)
		}
	})
	t.Run("missing folder", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "nothing-here")
		_, err := sftp.Open(ctx, srv.Config(dir))
		if !errors.Is(err, backend.ErrNotExist) {
			t.Fatalf("Open(%s) = %v, want ErrNotExist", dir, err)
		}
		if !strings.Contains(err.Error(), dir) {
			t.Errorf("error %q does not name the folder", err)
		}
	})
	t.Run("file instead of folder", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := sftp.Open(ctx, srv.Config(file))
		if err == nil || errors.Is(err, backend.ErrNotExist) || !strings.Contains(err.Error(), "not a folder") {
			t.Fatalf("Open(a file) = %v, want a 'not a folder' error", err)
		}
	})
}

// failingReaderAt returns its data up to failAt, then fails.
type failingReaderAt struct {
	data   []byte
	failAt int64
}

var errSourceBroken = errors.New("source disk failed")

func (r failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > r.failAt {
		n := max(0, int(r.failAt-off))
		copy(p, r.data[off:off+int64(n)])
		return n, errSourceBroken
	}
	return copy(p, r.data[off:]), nil
}

// cancellingReaderAt cancels its context once a read reaches cancelAt, so
// the Save is cancelled mid-upload.
type cancellingReaderAt struct {
	data     []byte
	cancelAt int64
	cancel   context.CancelFunc
}

func (r cancellingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > r.cancelAt {
		r.cancel()
		// Give the cancellation time to close the connection while
		// requests are in flight.
		time.Sleep(20 * time.Millisecond)
	}
	return bytes.NewReader(r.data).ReadAt(p, off)
}

func TestInterruptedSaveLeavesNothing(t *testing.T) {
	srv := sftptest.StartServer(t)
	const size = 4 << 20
	data := bytes.Repeat([]byte("imago"), size/5+1)[:size]
	old := []byte("the earlier content")
	h := backend.Handle{Type: backend.Pack, Name: strings.Repeat("cd", 32)}
	tests := []struct {
		name    string
		save    func(be backend.Backend) error
		wantErr error
	}{
		{"failing source", func(be backend.Backend) error {
			return be.Save(context.Background(), h, failingReaderAt{data: data, failAt: size / 2}, size)
		}, errSourceBroken},
		{"context cancelled mid-upload", func(be backend.Backend) error {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			return be.Save(ctx, h, cancellingReaderAt{data: data, cancelAt: size / 2, cancel: cancel}, size)
		}, context.Canceled},
		{"short source", func(be backend.Backend) error {
			return be.Save(context.Background(), h, bytes.NewReader(data[:size/2]), size)
		}, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be, dir := create(t, srv)
			ctx := context.Background()
			if err := be.Save(ctx, h, bytes.NewReader(old), int64(len(old))); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err := tt.save(be)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Save = %v, want an error wrapping %v", err, tt.wantErr)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("the failed Save took %v", d)
			}
			want := []string{"data/cd/" + h.Name}
			if got := filesUnder(t, dir); !slices.Equal(got, want) {
				t.Errorf("files on the server after the failed Save = %v, want only %v (no temporary file)", got, want)
			}
			got, err := backend.LoadAll(ctx, be, h, nil)
			if err != nil || !bytes.Equal(got, old) {
				t.Errorf("after the failed Save Load = %q, %v; want the earlier content %q", got, err, old)
			}
		})
	}
}
