package mem_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/backendtest"
	"github.com/imagobackup/imago/repo/backend/mem"
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return mem.New() })
}

func TestRawSetRaw(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	h := backend.Handle{Type: backend.Pack, Name: "abcd"}
	if _, ok := be.Raw(h); ok {
		t.Fatal("Raw of a missing file reported ok")
	}
	orig := []byte("stored bytes")
	if err := be.Save(ctx, h, bytes.NewReader(orig), int64(len(orig))); err != nil {
		t.Fatal(err)
	}
	raw, ok := be.Raw(h)
	if !ok || !bytes.Equal(raw, orig) {
		t.Fatalf("Raw = %q, %v; want %q, true", raw, ok, orig)
	}
	raw[0] = 'X' // Changing the returned copy must not damage the file.
	damaged := []byte("Stored bytes")
	be.SetRaw(h, damaged)
	damaged[1] = 'Y' // Nor changing the slice passed to SetRaw afterwards.
	got, err := backend.LoadAll(ctx, be, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "Stored bytes" {
		t.Errorf("Load after SetRaw = %q, want %q", got, "Stored bytes")
	}
}

func TestSaveCopiesSource(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	h := backend.Handle{Type: backend.Index, Name: "idx"}
	src := []byte("original")
	if err := be.Save(ctx, h, bytes.NewReader(src), int64(len(src))); err != nil {
		t.Fatal(err)
	}
	copy(src, "mutated!")
	got, err := backend.LoadAll(ctx, be, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "original" {
		t.Errorf("Load = %q after the caller reused its buffer, want %q", got, "original")
	}
}
