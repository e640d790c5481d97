package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/mem"
	"github.com/imagobackup/imago/repo/crypto"
)

func TestReopenSeesConfigAndBlobs(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := TestRepositoryWithBackend(t, be, TestPackSize(64<<10), TestCompression(pack.CompressionBetter))
	var ids []chunk.ID
	for i := range 20 {
		id, _, err := r.SaveChunk(ctx, chunk.KindData, randomBytes(uint64(i), 10<<10))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	mustFlush(t, r)

	r2, err := Open(ctx, be, TestPassword, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Config() != r.Config() {
		t.Errorf("reopened config %+v, want %+v", r2.Config(), r.Config())
	}
	c := r2.Config()
	if c.Polynomial != TestPolynomial || c.PackSize != 64<<10 || c.Compression != pack.CompressionBetter {
		t.Errorf("config %+v lost an init option", c)
	}
	if err := c.ImageParams().Validate(); err != nil {
		t.Errorf("image chunker params: %v", err)
	}
	if p := c.FileParams(); p.Min != chunk.FileParams.Min || p.Max != chunk.FileParams.Max || p.Polynomial != TestPolynomial {
		t.Errorf("file chunker params %+v", p)
	}
	if r2.HashChunk([]byte("a")) != r.HashChunk([]byte("a")) {
		t.Error("reopened repository hashes differently")
	}
	for i, id := range ids {
		got, err := r2.LoadChunk(ctx, chunk.Handle{ID: id, Kind: chunk.KindData}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, randomBytes(uint64(i), 10<<10)) {
			t.Errorf("blob %d: wrong content", i)
		}
	}

	r3, err := Open(ctx, be, TestPassword, OpenOptions{NoIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	if n := r3.Index().Len(); n != 0 {
		t.Errorf("NoIndex: index holds %d blobs", n)
	}
	if err := r3.LoadIndex(ctx); err != nil || r3.Index().Len() != len(ids) {
		t.Errorf("LoadIndex: %d blobs, err %v; want %d", r3.Index().Len(), err, len(ids))
	}
}

func TestOpenAndInitErrors(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	if _, err := Open(ctx, be, TestPassword, OpenOptions{}); !errors.Is(err, ErrNoRepository) {
		t.Errorf("Open on an empty backend = %v, want ErrNoRepository", err)
	}
	TestRepositoryWithBackend(t, be)
	if _, err := Open(ctx, be, "not the password", OpenOptions{}); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("Open with a wrong password = %v, want ErrWrongPassword", err)
	}
	_, err := Init(ctx, be, TestPassword, InitOptions{KDF: crypto.TestKDF})
	if !errors.Is(err, ErrAlreadyInitialized) {
		t.Errorf("second Init = %v, want ErrAlreadyInitialized", err)
	}
	n := 0
	_ = be.List(ctx, backend.Key, func(backend.FileInfo) error { n++; return nil })
	if n != 1 {
		t.Errorf("refused Init left %d key files, want the original 1", n)
	}
}

func TestInitRejectsBadOptionsBeforeWriting(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		opts InitOptions
	}{
		{"pack size too small", InitOptions{KDF: crypto.TestKDF, PackSize: MinPackSize - 1}},
		{"pack size too large", InitOptions{KDF: crypto.TestKDF, PackSize: MaxPackSize + 1}},
		{"reducible polynomial", InitOptions{KDF: crypto.TestKDF, Polynomial: 1 << 53}},
		{"bad KDF", InitOptions{KDF: crypto.KDFParams{Time: 0, Memory: 64, Threads: 1}}},
	} {
		be := mem.New()
		if _, err := Init(ctx, be, TestPassword, c.opts); err == nil {
			t.Errorf("%s: Init succeeded", c.name)
		}
		if _, err := be.Stat(ctx, backend.Handle{Type: backend.Config}); !errors.Is(err, backend.ErrNotExist) {
			t.Errorf("%s: refused Init wrote a config", c.name)
		}
	}
}

func TestOpenIgnoresStrayKeyOfCrashedInit(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	TestRepositoryWithBackend(t, be)
	// A key for another master key with the same password, as an Init that
	// crashed before its config would leave behind.
	other, err := crypto.NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := saveKeyFile(ctx, be, other, TestPassword, crypto.TestKDF, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, be, TestPassword, OpenOptions{}); err != nil {
		t.Fatalf("Open with a stray key present: %v", err)
	}
}

// TestFlippedByteIsDetected damages one byte of each kind of stored object
// and checks that every read of it fails with an error naming the object.
func TestFlippedByteIsDetected(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T) (*mem.Backend, *Repository, chunk.Handle, string) {
		be := mem.New()
		r := TestRepositoryWithBackend(t, be)
		id, _, err := r.SaveChunk(ctx, chunk.KindData, randomBytes(9, 20<<10))
		if err != nil {
			t.Fatal(err)
		}
		mustFlush(t, r)
		snap, err := r.SaveFile(ctx, backend.Snapshot, []byte(`{"paths":["/home"]}`))
		if err != nil {
			t.Fatal(err)
		}
		return be, r, chunk.Handle{ID: id, Kind: chunk.KindData}, snap
	}
	only := func(t *testing.T, be *mem.Backend, ft backend.FileType) backend.Handle {
		var names []string
		_ = be.List(ctx, ft, func(fi backend.FileInfo) error { names = append(names, fi.Name); return nil })
		if len(names) != 1 {
			t.Fatalf("%d %s files, want 1", len(names), ft)
		}
		return backend.Handle{Type: ft, Name: names[0]}
	}
	// flipAt damages h at each position given as a fraction of its length,
	// calling check after each flip and restoring the byte afterwards.
	flipAt := func(t *testing.T, be *mem.Backend, h backend.Handle, check func(t *testing.T)) {
		orig, ok := be.Raw(h)
		if !ok {
			t.Fatalf("%v missing", h)
		}
		for _, pos := range []int{0, len(orig) / 3, len(orig) / 2, len(orig) - 1} {
			b := bytes.Clone(orig)
			b[pos] ^= 0x04
			be.SetRaw(h, b)
			check(t)
		}
		be.SetRaw(h, orig)
	}

	t.Run("pack", func(t *testing.T) {
		be, r, h, _ := setup(t)
		loc, _ := r.Lookup(h)
		ph := backend.Handle{Type: backend.Pack, Name: loc.Pack.String()}
		orig, _ := be.Raw(ph)
		for _, pos := range []int{int(loc.Offset), int(loc.Offset + loc.Length/2), int(loc.Offset + loc.Length - 1)} {
			b := bytes.Clone(orig)
			b[pos] ^= 0x80
			be.SetRaw(ph, b)
			got, err := r.LoadChunk(ctx, h, nil)
			wantErrContaining(t, err, "data blob "+h.ID.Short(), "pack "+loc.Pack.Short())
			if len(got) != 0 {
				t.Errorf("LoadChunk returned %d bytes with its error", len(got))
			}
		}
		be.Remove(ctx, ph)
		_, err := r.LoadChunk(ctx, h, nil)
		wantErrContaining(t, err, "data blob "+h.ID.Short(), "pack "+loc.Pack.Short())
		if !errors.Is(err, backend.ErrNotExist) {
			t.Errorf("missing pack: %v does not wrap ErrNotExist", err)
		}
	})
	t.Run("index file", func(t *testing.T) {
		be, _, _, _ := setup(t)
		h := only(t, be, backend.Index)
		flipAt(t, be, h, func(t *testing.T) {
			_, err := Open(ctx, be, TestPassword, OpenOptions{})
			wantErrContaining(t, err, shortName(backend.Index, h.Name))
		})
	})
	t.Run("snapshot file", func(t *testing.T) {
		be, r, _, snap := setup(t)
		h := backend.Handle{Type: backend.Snapshot, Name: snap}
		flipAt(t, be, h, func(t *testing.T) {
			got, err := r.LoadFile(ctx, backend.Snapshot, snap)
			wantErrContaining(t, err, shortName(backend.Snapshot, snap))
			if got != nil {
				t.Error("LoadFile returned data with its error")
			}
		})
	})
	t.Run("config", func(t *testing.T) {
		be, _, _, _ := setup(t)
		flipAt(t, be, backend.Handle{Type: backend.Config}, func(t *testing.T) {
			_, err := Open(ctx, be, TestPassword, OpenOptions{})
			wantErrContaining(t, err, "config")
			if errors.Is(err, ErrWrongPassword) {
				t.Errorf("damaged config reported as a wrong password: %v", err)
			}
		})
	})
	t.Run("key file", func(t *testing.T) {
		be, _, _, _ := setup(t)
		h := only(t, be, backend.Key)
		flipAt(t, be, h, func(t *testing.T) {
			_, err := Open(ctx, be, TestPassword, OpenOptions{})
			wantErrContaining(t, err, shortName(backend.Key, h.Name))
			if !errors.Is(err, ErrWrongPassword) {
				t.Errorf("no key opens, so %v should wrap ErrWrongPassword", err)
			}
		})
	})
}

func TestConfigJSONFields(t *testing.T) {
	be := mem.New()
	r := TestRepositoryWithBackend(t, be, TestCompression(pack.CompressionFastest))
	sealed, _ := be.Raw(backend.Handle{Type: backend.Config})
	plain, err := r.key.Open(nil, sealed, []byte("imago config v1"))
	if err != nil {
		t.Fatalf("config is not sealed with AD %q: %v", "imago config v1", err)
	}
	var got map[string]any
	if err := json.Unmarshal(plain, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"version":            1.0,
		"chunker_polynomial": "3da3358b4dc173",
		"compression":        "fastest",
		"pack_size":          float64(DefaultPackSize),
		"file_chunker":       map[string]any{"min": 524288.0, "max": 8388608.0, "average_bits": 20.0},
		"image_chunker":      map[string]any{"min": 8192.0, "max": 8192.0, "average_bits": 13.0, "segment": 16777216.0},
	}
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("config field %q = %#v, want %#v", k, got[k], v)
		}
	}
	if id, _ := got["id"].(string); len(id) != 64 {
		t.Errorf("config id %q is not 64 hex digits", id)
	}
	if len(got) != len(want)+1 {
		t.Errorf("config has fields %v, want exactly %d", got, len(want)+1)
	}
	t.Logf("config: %s", plain)
}
