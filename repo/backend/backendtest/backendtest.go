package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/imagobackup/imago/repo/backend"
)

// Run runs the conformance suite as subtests of t. newBackend returns a
// fresh, empty backend for each subtest; the suite closes it (cleanups
// registered by newBackend run after that).
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, be backend.Backend)
	}{
		{"RoundTrip", testRoundTrip},
		{"RangedLoad", testRangedLoad},
		{"LoadBeyondEnd", testLoadBeyondEnd},
		{"Missing", testMissing},
		{"List", testList},
		{"ListFnError", testListFnError},
		{"Overwrite", testOverwrite},
		{"Remove", testRemove},
		{"EmptyFile", testEmptyFile},
		{"LargeFile", testLargeFile},
		{"ShortSource", testShortSource},
		{"InvalidHandle", testInvalidHandle},
		{"Concurrent", testConcurrent},
		{"Cancelled", testCancelled},
		{"LoadFnError", testLoadFnError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newBackend(t)
			t.Cleanup(func() {
				if err := be.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, be)
		})
	}
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// handleFor returns a valid handle of type t; n makes names distinct.
func handleFor(t backend.FileType, n int) backend.Handle {
	if t == backend.Config {
		return backend.Handle{Type: t}
	}
	return backend.Handle{Type: t, Name: fmt.Sprintf("%02x%062x", n%256, n)}
}

func save(t *testing.T, be backend.Backend, h backend.Handle, data []byte) {
	t.Helper()
	if err := be.Save(context.Background(), h, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Save(%v, %d bytes): %v", h, len(data), err)
	}
}

// load returns the bytes of a ranged Load, or the error.
func load(be backend.Backend, h backend.Handle, length int, offset int64) ([]byte, error) {
	var got []byte
	err := be.Load(context.Background(), h, length, offset, func(rd io.Reader) error {
		var err error
		got, err = io.ReadAll(rd)
		return err
	})
	return got, err
}

func loadAll(t *testing.T, be backend.Backend, h backend.Handle) []byte {
	t.Helper()
	got, err := load(be, h, 0, 0)
	if err != nil {
		t.Fatalf("Load(%v): %v", h, err)
	}
	return got
}

func stat(t *testing.T, be backend.Backend, h backend.Handle) backend.FileInfo {
	t.Helper()
	fi, err := be.Stat(context.Background(), h)
	if err != nil {
		t.Fatalf("Stat(%v): %v", h, err)
	}
	return fi
}

// list returns name → size of every file of type ft.
func list(t *testing.T, be backend.Backend, ft backend.FileType) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	err := be.List(context.Background(), ft, func(fi backend.FileInfo) error {
		if _, dup := got[fi.Name]; dup {
			t.Errorf("List(%s) reported %q twice", ft, fi.Name)
		}
		got[fi.Name] = fi.Size
		return nil
	})
	if err != nil {
		t.Fatalf("List(%s): %v", ft, err)
	}
	return got
}

func testRoundTrip(t *testing.T, be backend.Backend) {
	for i, ft := range backend.FileTypes {
		t.Run(string(ft), func(t *testing.T) {
			h := handleFor(ft, i+1)
			data := randomBytes(uint64(i), 1000+i)
			save(t, be, h, data)
			if got := loadAll(t, be, h); !bytes.Equal(got, data) {
				t.Errorf("Load(%v) returned %d bytes that differ from the %d saved", h, len(got), len(data))
			}
			if fi := stat(t, be, h); fi.Size != int64(len(data)) || fi.Name != h.Name {
				t.Errorf("Stat(%v) = %+v, want name %q size %d", h, fi, h.Name, len(data))
			}
		})
	}
}

func testRangedLoad(t *testing.T, be backend.Backend) {
	data := randomBytes(1, 4096)
	h := handleFor(backend.Pack, 7)
	save(t, be, h, data)
	tests := []struct {
		name   string
		length int
		offset int64
		want   []byte
	}{
		{"whole", 0, 0, data},
		{"exact length", len(data), 0, data},
		{"prefix", 10, 0, data[:10]},
		{"middle", 100, 1000, data[1000:1100]},
		{"suffix", 96, 4000, data[4000:]},
		{"to end from offset", 0, 1234, data[1234:]},
		{"last byte", 1, 4095, data[4095:]},
		{"empty at end", 0, 4096, []byte{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := load(be, h, tt.length, tt.offset)
			if err != nil {
				t.Fatalf("Load(length %d, offset %d): %v", tt.length, tt.offset, err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("Load(length %d, offset %d) returned %d bytes, want %d matching bytes",
					tt.length, tt.offset, len(got), len(tt.want))
			}
		})
	}
}

func testLoadBeyondEnd(t *testing.T, be backend.Backend) {
	data := randomBytes(2, 100)
	h := handleFor(backend.Index, 1)
	save(t, be, h, data)
	tests := []struct {
		name   string
		length int
		offset int64
	}{
		{"one byte too long", 101, 0},
		{"range crosses end", 10, 95},
		{"offset past end", 0, 101},
		{"offset far past end", 1, 1 << 40},
		{"negative offset", 10, -1},
		{"negative length", -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A reader that ends early must also give an error, so the
			// callback reads exactly what was asked for where it can.
			err := be.Load(context.Background(), h, tt.length, tt.offset, func(rd io.Reader) error {
				if tt.length > 0 {
					_, err := io.ReadFull(rd, make([]byte, tt.length))
					return err
				}
				_, err := io.ReadAll(rd)
				return err
			})
			if err == nil {
				t.Errorf("Load(length %d, offset %d) of a 100-byte file succeeded, want an error", tt.length, tt.offset)
			}
			if errors.Is(err, backend.ErrNotExist) {
				t.Errorf("Load(length %d, offset %d) = %v, must not claim the file is missing", tt.length, tt.offset, err)
			}
		})
	}
}

func testMissing(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	for i, ft := range backend.FileTypes {
		h := handleFor(ft, i)
		t.Run(string(ft), func(t *testing.T) {
			called := false
			err := be.Load(ctx, h, 0, 0, func(io.Reader) error { called = true; return nil })
			if !errors.Is(err, backend.ErrNotExist) {
				t.Errorf("Load(missing %v) = %v, want ErrNotExist", h, err)
			}
			if called {
				t.Errorf("Load(missing %v) called fn", h)
			}
			if _, err := be.Stat(ctx, h); !errors.Is(err, backend.ErrNotExist) {
				t.Errorf("Stat(missing %v) = %v, want ErrNotExist", h, err)
			}
			if err := be.Remove(ctx, h); !errors.Is(err, backend.ErrNotExist) {
				t.Errorf("Remove(missing %v) = %v, want ErrNotExist", h, err)
			}
		})
	}
}

func testList(t *testing.T, be backend.Backend) {
	for _, ft := range backend.FileTypes {
		if got := list(t, be, ft); len(got) != 0 {
			t.Errorf("List(%s) of an empty backend = %v, want nothing", ft, got)
		}
	}
	want := map[backend.FileType]map[string]int64{}
	n := 0
	for _, ft := range backend.FileTypes {
		want[ft] = map[string]int64{}
		count := 5
		if ft == backend.Config {
			count = 1
		}
		for range count {
			n++
			// Packs get distinct shards here (handleFor puts n in the
			// shard); two packs in one shard follow below.
			h := handleFor(ft, n)
			data := randomBytes(uint64(n), 10*n)
			save(t, be, h, data)
			want[ft][h.Name] = int64(len(data))
		}
	}
	// Two packs in one shard.
	h := backend.Handle{Type: backend.Pack, Name: handleFor(backend.Pack, 3).Name[:2] + "ff"}
	save(t, be, h, []byte("same shard"))
	want[backend.Pack][h.Name] = int64(len("same shard"))

	for _, ft := range backend.FileTypes {
		got := list(t, be, ft)
		if !mapsEqual(got, want[ft]) {
			t.Errorf("List(%s) = %v, want %v", ft, got, want[ft])
		}
	}
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func testListFnError(t *testing.T, be backend.Backend) {
	for i := range 3 {
		save(t, be, handleFor(backend.Snapshot, i), []byte("snapshot"))
	}
	stop := errors.New("stop listing")
	calls := 0
	err := be.List(context.Background(), backend.Snapshot, func(backend.FileInfo) error {
		calls++
		return stop
	})
	if err != stop {
		t.Errorf("List returned %v, want fn's error unchanged", err)
	}
	if calls != 1 {
		t.Errorf("List called fn %d times after it returned an error, want 1", calls)
	}
}

func testOverwrite(t *testing.T, be backend.Backend) {
	for _, ft := range []backend.FileType{backend.Config, backend.Lock, backend.Pack} {
		t.Run(string(ft), func(t *testing.T) {
			h := handleFor(ft, 9)
			save(t, be, h, randomBytes(3, 500))
			second := []byte("shorter replacement")
			save(t, be, h, second)
			if got := loadAll(t, be, h); !bytes.Equal(got, second) {
				t.Errorf("after overwrite Load = %q, want %q", got, second)
			}
			if fi := stat(t, be, h); fi.Size != int64(len(second)) {
				t.Errorf("after overwrite Stat size = %d, want %d", fi.Size, len(second))
			}
			if got := list(t, be, ft); len(got) != 1 || got[h.Name] != int64(len(second)) {
				t.Errorf("after overwrite List = %v, want only %q with size %d", got, h.Name, len(second))
			}
		})
	}
}

func testRemove(t *testing.T, be backend.Backend) {
	keep, gone := handleFor(backend.Pack, 1), handleFor(backend.Pack, 2)
	save(t, be, keep, []byte("keep"))
	save(t, be, gone, []byte("gone"))
	if err := be.Remove(context.Background(), gone); err != nil {
		t.Fatalf("Remove(%v): %v", gone, err)
	}
	if _, err := load(be, gone, 0, 0); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("Load after Remove = %v, want ErrNotExist", err)
	}
	if got := list(t, be, backend.Pack); len(got) != 1 || got[keep.Name] != 4 {
		t.Errorf("List after Remove = %v, want only %q", got, keep.Name)
	}
	if got := loadAll(t, be, keep); string(got) != "keep" {
		t.Errorf("Load of the other file after Remove = %q, want %q", got, "keep")
	}
}

func testEmptyFile(t *testing.T, be backend.Backend) {
	h := handleFor(backend.Lock, 1)
	save(t, be, h, nil)
	if got := loadAll(t, be, h); len(got) != 0 {
		t.Errorf("Load of a 0-byte file returned %d bytes", len(got))
	}
	if fi := stat(t, be, h); fi.Size != 0 {
		t.Errorf("Stat of a 0-byte file: size %d, want 0", fi.Size)
	}
	if got := list(t, be, backend.Lock); len(got) != 1 || got[h.Name] != 0 {
		t.Errorf("List = %v, want %q with size 0", got, h.Name)
	}
}

func testLargeFile(t *testing.T, be backend.Backend) {
	// 20 MiB is larger than the 16 MiB default pack size and than any
	// internal copy buffer, yet quick to write on a test machine.
	const size = 20 << 20
	data := randomBytes(4, size)
	h := handleFor(backend.Pack, 0xab)
	save(t, be, h, data)
	if fi := stat(t, be, h); fi.Size != size {
		t.Errorf("Stat size = %d, want %d", fi.Size, size)
	}
	got, err := backend.LoadAll(context.Background(), be, h, nil)
	if err != nil {
		t.Fatalf("LoadAll: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("LoadAll returned %d bytes that differ from the %d saved", len(got), size)
	}
	// A range straddling the middle, read in one call.
	part, err := load(be, h, 3<<20, 9<<20)
	if err != nil {
		t.Fatalf("ranged Load: %v", err)
	}
	if !bytes.Equal(part, data[9<<20:12<<20]) {
		t.Errorf("ranged Load of 3 MiB at 9 MiB returned wrong bytes")
	}
}

// shortReaderAt holds fewer bytes than the size passed to Save.
type shortReaderAt struct{ data []byte }

func (r shortReaderAt) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(r.data).ReadAt(p, off)
}

func testShortSource(t *testing.T, be backend.Backend) {
	h := handleFor(backend.Pack, 5)
	err := be.Save(context.Background(), h, shortReaderAt{data: randomBytes(5, 1000)}, 2000)
	if err == nil {
		t.Fatal("Save of 2000 bytes from a 1000-byte source succeeded, want an error")
	}
	if _, err := be.Stat(context.Background(), h); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("Stat after a failed Save = %v, want ErrNotExist (no partial file)", err)
	}
	if got := list(t, be, backend.Pack); len(got) != 0 {
		t.Errorf("List after a failed Save = %v, want nothing", got)
	}
}

func testInvalidHandle(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	bad := []backend.Handle{
		{Type: backend.Pack, Name: "a"},
		{Type: backend.Index, Name: ""},
		{Type: backend.Snapshot, Name: "../config"},
		{Type: backend.Lock, Name: ".tmp-lock"},
		{Type: backend.Config, Name: "other"},
		{Type: "elsewhere", Name: "abcd"},
	}
	for _, h := range bad {
		t.Run(fmt.Sprintf("%s/%q", h.Type, h.Name), func(t *testing.T) {
			if err := be.Save(ctx, h, bytes.NewReader([]byte("x")), 1); !errors.Is(err, backend.ErrInvalidHandle) {
				t.Errorf("Save = %v, want ErrInvalidHandle", err)
			}
			if _, err := load(be, h, 0, 0); !errors.Is(err, backend.ErrInvalidHandle) {
				t.Errorf("Load = %v, want ErrInvalidHandle", err)
			}
			if _, err := be.Stat(ctx, h); !errors.Is(err, backend.ErrInvalidHandle) {
				t.Errorf("Stat = %v, want ErrInvalidHandle", err)
			}
			if err := be.Remove(ctx, h); !errors.Is(err, backend.ErrInvalidHandle) {
				t.Errorf("Remove = %v, want ErrInvalidHandle", err)
			}
		})
	}
	for _, ft := range backend.FileTypes {
		if got := list(t, be, ft); len(got) != 0 {
			t.Errorf("List(%s) after rejected saves = %v, want nothing", ft, got)
		}
	}
}

func testConcurrent(t *testing.T, be backend.Backend) {
	// 8 writers of 64 KiB files each, then 8 readers, with overlap: each
	// goroutine saves its own file and reads it back while the others do
	// the same. Memory: 8 × 3 × 64 KiB.
	const workers, size = 8, 64 << 10
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			h := handleFor(backend.Pack, 100+w)
			data := randomBytes(uint64(100+w), size)
			for round := range 3 {
				data[0] = byte(round)
				if err := be.Save(context.Background(), h, bytes.NewReader(data), size); err != nil {
					t.Errorf("worker %d: Save: %v", w, err)
					return
				}
				got, err := load(be, h, 0, 0)
				if err != nil {
					t.Errorf("worker %d: Load: %v", w, err)
					return
				}
				if !bytes.Equal(got, data) {
					t.Errorf("worker %d round %d: Load returned other bytes than saved", w, round)
				}
			}
		})
	}
	wg.Wait()
	got := list(t, be, backend.Pack)
	if len(got) != workers {
		t.Errorf("List after concurrent saves has %d files, want %d", len(got), workers)
	}
}

func testCancelled(t *testing.T, be backend.Backend) {
	existing := handleFor(backend.Snapshot, 1)
	save(t, be, existing, []byte("snapshot"))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h := handleFor(backend.Snapshot, 2)
	ops := []struct {
		name string
		call func() error
	}{
		{"Save", func() error { return be.Save(ctx, h, bytes.NewReader([]byte("new")), 3) }},
		{"Load", func() error {
			return be.Load(ctx, existing, 0, 0, func(rd io.Reader) error { _, err := io.ReadAll(rd); return err })
		}},
		{"Stat", func() error { _, err := be.Stat(ctx, existing); return err }},
		{"List", func() error { return be.List(ctx, backend.Snapshot, func(backend.FileInfo) error { return nil }) }},
		{"Remove", func() error { return be.Remove(ctx, existing) }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			if err := op.call(); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled context = %v, want an error wrapping context.Canceled", op.name, err)
			}
		})
	}
	got := list(t, be, backend.Snapshot)
	want := map[string]int64{existing.Name: 8}
	if !mapsEqual(got, want) {
		t.Errorf("after cancelled calls List = %v, want %v (nothing saved or removed)", got, want)
	}
}

func testLoadFnError(t *testing.T, be backend.Backend) {
	h := handleFor(backend.Index, 3)
	save(t, be, h, randomBytes(6, 300))
	sentinel := errors.New("callback failed")
	tests := []struct {
		name string
		fn   func(io.Reader) error
	}{
		{"before reading", func(io.Reader) error { return sentinel }},
		{"after reading some", func(rd io.Reader) error {
			if _, err := io.ReadFull(rd, make([]byte, 10)); err != nil {
				return err
			}
			return sentinel
		}},
		{"after reading all", func(rd io.Reader) error {
			if _, err := io.ReadAll(rd); err != nil {
				return err
			}
			return sentinel
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := be.Load(context.Background(), h, 0, 0, tt.fn); err != sentinel {
				t.Errorf("Load = %v, want fn's error unchanged", err)
			}
		})
	}
	// The file is still intact afterwards.
	if got := loadAll(t, be, h); !slices.Equal(got, randomBytes(6, 300)) {
		t.Errorf("Load after failing callbacks returned other bytes")
	}
}
