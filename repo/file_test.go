package repo

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/mem"
)

func TestSaveLoadFile(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := TestRepositoryWithBackend(t, be)
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"empty", []byte{}},
		{"small json", []byte(`{"time":"2024-01-01T00:00:00Z"}`)},
		{"compressible", compressibleBytes(1 << 20)},
		{"random", randomBytes(4, 64<<10)},
	} {
		name, err := r.SaveFile(ctx, backend.Snapshot, c.data)
		if err != nil {
			t.Fatalf("%s: SaveFile: %v", c.name, err)
		}
		stored, _ := be.Raw(backend.Handle{Type: backend.Snapshot, Name: name})
		if hashName(stored) != name {
			t.Errorf("%s: name %s is not the hash of the stored bytes", c.name, name)
		}
		if bytes.Contains(stored, []byte("time")) {
			t.Errorf("%s: plaintext visible in the stored file", c.name)
		}
		if len(c.data) > 1000 && bytes.Equal(c.data, compressibleBytes(len(c.data))) && len(stored) > len(c.data)/10 {
			t.Errorf("%s: stored %d bytes, want it compressed", c.name, len(stored))
		}
		got, err := r.LoadFile(ctx, backend.Snapshot, name)
		if err != nil {
			t.Fatalf("%s: LoadFile: %v", c.name, err)
		}
		if !bytes.Equal(got, c.data) {
			t.Errorf("%s: LoadFile returned other bytes", c.name)
		}
	}
}

func TestLoadFileRefusesFileOfOtherType(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := TestRepositoryWithBackend(t, be)
	name, err := r.SaveFile(ctx, backend.Snapshot, []byte("snapshot"))
	if err != nil {
		t.Fatal(err)
	}
	// The same bytes moved to index/: the name matches, the seal does not.
	b, _ := be.Raw(backend.Handle{Type: backend.Snapshot, Name: name})
	be.SetRaw(backend.Handle{Type: backend.Index, Name: name}, b)
	_, err = r.LoadFile(ctx, backend.Index, name)
	wantErrContaining(t, err, shortName(backend.Index, name))
}

func TestFindFile(t *testing.T) {
	ctx := context.Background()
	r := TestRepository(t)
	var names []string
	for i := range 40 {
		n, err := r.SaveFile(ctx, backend.Snapshot, randomBytes(uint64(i), 100))
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	got, err := r.FindFile(ctx, backend.Snapshot, names[7][:12])
	if err != nil || got != names[7] {
		t.Errorf("FindFile(unique prefix) = %q, %v; want %q", got, err, names[7])
	}
	if _, err := r.FindFile(ctx, backend.Snapshot, "zz"); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("FindFile(no match) = %v, want ErrNotExist", err)
	}
	_, err = r.FindFile(ctx, backend.Snapshot, "")
	wantErrContaining(t, err, "ambiguous", "40 files")

	listed := 0
	err = r.ListFiles(ctx, backend.Snapshot, func(name string, size int64) error {
		if size <= 0 || len(name) != 64 {
			t.Errorf("listed %q with size %d", name, size)
		}
		listed++
		return nil
	})
	if err != nil || listed != 40 {
		t.Errorf("ListFiles saw %d files, err %v", listed, err)
	}
	if err := r.RemoveFile(ctx, backend.Snapshot, names[7]); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LoadFile(ctx, backend.Snapshot, names[7]); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("LoadFile after RemoveFile = %v, want ErrNotExist", err)
	}
	if err := r.RemoveFile(ctx, backend.Snapshot, names[7]); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("second RemoveFile = %v, want ErrNotExist", err)
	}
	if !strings.HasPrefix(shortName(backend.Snapshot, names[0]), "snapshots/") {
		t.Error("shortName lost the type")
	}
}
