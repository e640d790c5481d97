//go:build linux

package local

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/imagobackup/imago/repo/backend"
)

// TestSaveFile stores files written to CreateTempFile, including over an
// existing name and in a missing shard folder, and checks that nothing but
// the stored files is left, also of a temporary file closed unsaved.
func TestSaveFile(t *testing.T) {
	ctx := context.Background()
	be := newTestBackend(t)
	write := func(data []byte) *os.File {
		t.Helper()
		f, err := be.CreateTempFile(backend.Pack)
		if err != nil {
			t.Skipf("no unnamed temporary files here: %v", err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		return f
	}
	h := backend.Handle{Type: backend.Pack, Name: "ab" + string(bytes.Repeat([]byte("0"), 62))}
	for i, data := range [][]byte{[]byte("first"), []byte("second, longer")} {
		f := write(data)
		if err := be.SaveFile(ctx, h, f, int64(len(data))); err != nil {
			t.Fatalf("save %d: %v", i, err)
		}
		f.Close()
		var got []byte
		err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
			var err error
			got, err = io.ReadAll(rd)
			return err
		})
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("load after save %d: %q, %v; want %q", i, got, err, data)
		}
	}
	// A size that does not match is refused.
	f := write([]byte("12345"))
	if err := be.SaveFile(ctx, h, f, 4); err == nil {
		t.Error("SaveFile with a wrong size succeeded")
	}
	f.Close()
	// A missing shard folder is created (by the copying fallback).
	if err := os.RemoveAll(filepath.Join(be.dir, "data", "cd")); err != nil {
		t.Fatal(err)
	}
	h2 := backend.Handle{Type: backend.Pack, Name: "cd" + string(bytes.Repeat([]byte("1"), 62))}
	f = write([]byte("elsewhere"))
	if err := be.SaveFile(ctx, h2, f, 9); err != nil {
		t.Fatalf("save into a missing shard: %v", err)
	}
	f.Close()
	// A temporary file closed without SaveFile leaves nothing.
	write([]byte("abandoned")).Close()

	want := []string{"data/ab/" + h.Name, "data/cd/" + h2.Name}
	if got := filesUnder(t, be.dir); !slices.Equal(got, want) {
		t.Errorf("files %v, want %v", got, want)
	}
	var listed []string
	if err := be.List(ctx, backend.Pack, func(fi backend.FileInfo) error { listed = append(listed, fi.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2 {
		t.Errorf("listed %v, want the 2 saved packs", listed)
	}
}
