package faulty_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/backendtest"
	"github.com/imagobackup/imago/repo/backend/faulty"
	"github.com/imagobackup/imago/repo/backend/mem"
)

func TestConformanceKnobsOff(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return faulty.New(mem.New()) })
}

var errDiskFull = errors.New("disk full")

func pack(i int) backend.Handle {
	return backend.Handle{Type: backend.Pack, Name: fmt.Sprintf("%02x%02x", i, i)}
}

func saveN(be backend.Backend, h backend.Handle, n int) error {
	return be.Save(context.Background(), h, bytes.NewReader(make([]byte, n)), int64(n))
}

func TestFailSaveAfter(t *testing.T) {
	tests := []struct {
		n        int
		err      error
		wantFail []bool // outcome of saves 1 … 4
	}{
		{1, errDiskFull, []bool{true, true, true, true}},
		{3, errDiskFull, []bool{false, false, true, true}},
		{0, errDiskFull, []bool{false, false, false, false}},
		{2, nil, []bool{false, false, false, false}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("n=%d,err=%v", tt.n, tt.err), func(t *testing.T) {
			m := mem.New()
			be := faulty.New(m)
			// Saves before the knob is set do not count towards n.
			if err := saveN(be, pack(100), 1); err != nil {
				t.Fatal(err)
			}
			be.FailSaveAfter(tt.n, tt.err)
			for i, wantFail := range tt.wantFail {
				err := saveN(be, pack(i), 10)
				if wantFail != (err != nil) {
					t.Errorf("save %d: err = %v, want failure %v", i+1, err, wantFail)
				}
				if err != nil && !errors.Is(err, tt.err) {
					t.Errorf("save %d: err = %v, want %v", i+1, err, tt.err)
				}
				if _, stored := m.Raw(pack(i)); stored == wantFail {
					t.Errorf("save %d: file stored = %v, want %v", i+1, stored, !wantFail)
				}
			}
		})
	}
}

func TestFailRemoveAfter(t *testing.T) {
	m := mem.New()
	be := faulty.New(m)
	for i := range 3 {
		if err := saveN(be, pack(i), 1); err != nil {
			t.Fatal(err)
		}
	}
	be.FailRemoveAfter(2, errDiskFull)
	ctx := context.Background()
	if err := be.Remove(ctx, pack(0)); err != nil {
		t.Errorf("first Remove: %v", err)
	}
	for i := 1; i < 3; i++ {
		if err := be.Remove(ctx, pack(i)); !errors.Is(err, errDiskFull) {
			t.Errorf("Remove %d = %v, want %v", i+1, err, errDiskFull)
		}
		if _, ok := m.Raw(pack(i)); !ok {
			t.Errorf("a failed Remove deleted %v", pack(i))
		}
	}
	be.FailRemoveAfter(0, nil)
	if err := be.Remove(ctx, pack(1)); err != nil {
		t.Errorf("Remove after turning the knob off: %v", err)
	}
}

func TestFailLoad(t *testing.T) {
	be := faulty.New(mem.New())
	ctx := context.Background()
	idx := backend.Handle{Type: backend.Index, Name: "idx"}
	for _, h := range []backend.Handle{pack(1), idx} {
		if err := saveN(be, h, 5); err != nil {
			t.Fatal(err)
		}
	}
	be.FailLoad(func(h backend.Handle) error {
		if h.Type == backend.Pack {
			return fmt.Errorf("lost %v: %w", h, backend.ErrNotExist)
		}
		return nil
	})
	called := false
	err := be.Load(ctx, pack(1), 0, 0, func(io.Reader) error { called = true; return nil })
	if !errors.Is(err, backend.ErrNotExist) || called {
		t.Errorf("Load of a failed pack = %v (fn called %v), want ErrNotExist without calling fn", err, called)
	}
	if _, err := be.Stat(ctx, pack(1)); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("Stat of a failed pack = %v, want ErrNotExist", err)
	}
	if _, err := backend.LoadAll(ctx, be, idx, nil); err != nil {
		t.Errorf("Load of an index file the knob lets through: %v", err)
	}
	be.FailLoad(nil)
	if _, err := backend.LoadAll(ctx, be, pack(1), nil); err != nil {
		t.Errorf("Load after turning the knob off: %v", err)
	}
}

func TestTruncateLoads(t *testing.T) {
	be := faulty.New(mem.New())
	ctx := context.Background()
	h := pack(1)
	if err := saveN(be, h, 1000); err != nil {
		t.Fatal(err)
	}
	be.TruncateLoads(true)
	tests := []struct {
		name   string
		length int
		offset int64
		want   int // bytes io.ReadAll sees
	}{
		{"ranged", 400, 100, 200},
		{"to end", 0, 200, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n int
			err := be.Load(ctx, h, tt.length, tt.offset, func(rd io.Reader) error {
				b, err := io.ReadAll(rd)
				n = len(b)
				return err
			})
			if err != nil || n != tt.want {
				t.Errorf("ReadAll got %d bytes, %v; want %d bytes, silently", n, err, tt.want)
			}
			err = be.Load(ctx, h, tt.length, tt.offset, func(rd io.Reader) error {
				_, err := io.ReadFull(rd, make([]byte, 2*tt.want))
				return err
			})
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("ReadFull of the asked length = %v, want io.ErrUnexpectedEOF", err)
			}
		})
	}
	be.TruncateLoads(false)
	if b, err := backend.LoadAll(ctx, be, h, nil); err != nil || len(b) != 1000 {
		t.Errorf("LoadAll after turning truncation off = %d bytes, %v; want 1000", len(b), err)
	}
}

// transientOutcomes runs 200 saves of distinct files against a fresh
// backend with Transient(rate, seed) and reports which failed.
func transientOutcomes(t *testing.T, rate float64, seed int64) []bool {
	t.Helper()
	m := mem.New()
	be := faulty.New(m)
	be.Transient(rate, seed)
	out := make([]bool, 200)
	for i := range out {
		h := backend.Handle{Type: backend.Lock, Name: fmt.Sprint(i)}
		err := saveN(be, h, 1)
		out[i] = err != nil
		if err != nil && (!backend.IsTransient(err) || !errors.Is(err, faulty.ErrInjected)) {
			t.Fatalf("injected error %v is not a transient ErrInjected", err)
		}
		if _, stored := m.Raw(h); stored == out[i] {
			t.Fatalf("save %d failed=%v but file stored=%v", i, out[i], stored)
		}
	}
	return out
}

func TestTransient(t *testing.T) {
	a := transientOutcomes(t, 0.3, 42)
	failed := 0
	for _, f := range a {
		if f {
			failed++
		}
	}
	// 200 draws at 0.3: the mean is 60 and the standard deviation 6.5, so
	// 30 … 90 holds unless the generator is broken.
	if failed < 30 || failed > 90 {
		t.Errorf("%d of 200 calls failed at rate 0.3, want about 60", failed)
	}
	if b := transientOutcomes(t, 0.3, 42); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Error("the same seed gave a different failure sequence")
	}
	if c := transientOutcomes(t, 0, 42); fmt.Sprint(c) != fmt.Sprint(make([]bool, 200)) {
		t.Error("rate 0 failed some calls")
	}
}

func TestCounts(t *testing.T) {
	ctx := context.Background()
	be := faulty.New(mem.New())
	idx := backend.Handle{Type: backend.Index, Name: "idx"}
	if err := saveN(be, pack(1), 1000); err != nil {
		t.Fatal(err)
	}
	if err := saveN(be, idx, 24); err != nil {
		t.Fatal(err)
	}
	be.FailSaveAfter(1, errDiskFull)
	_ = saveN(be, pack(2), 5000) // Fails: counted as a call, not as bytes.
	if err := be.Load(ctx, pack(1), 100, 10, func(rd io.Reader) error {
		_, err := io.ReadAll(rd)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.LoadAll(ctx, be, idx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.LoadAll(ctx, be, idx, nil); err != nil {
		t.Fatal(err)
	}
	if err := be.List(ctx, backend.Pack, func(backend.FileInfo) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := be.Remove(ctx, idx); err != nil {
		t.Fatal(err)
	}
	got := be.Counts()
	want := faulty.Stats{Saves: 3, Loads: 3, BytesSaved: 1024, BytesLoaded: 148, Lists: 1, Removes: 1,
		LoadsByType: map[backend.FileType]int64{backend.Pack: 1, backend.Index: 2}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Counts() = %+v, want %+v", got, want)
	}
	got.LoadsByType[backend.Pack] = 99 // Counts returns a copy.
	be.ResetCounts()
	if got := be.Counts(); fmt.Sprint(got) != fmt.Sprint(faulty.Stats{LoadsByType: map[backend.FileType]int64{}}) {
		t.Errorf("Counts() after ResetCounts = %+v, want zeros", got)
	}
}

func TestKnobsUnderConcurrentUse(t *testing.T) {
	be := faulty.New(mem.New())
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				h := pack(w*50 + i)
				_ = saveN(be, h, 10)
				_, _ = backend.LoadAll(ctx, be, h, nil)
				_ = be.Remove(ctx, h)
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			be.Transient(0.1, int64(i))
			be.TruncateLoads(i%2 == 0)
			be.FailSaveAfter(i%3, errDiskFull)
			be.FailRemoveAfter(i%4, errDiskFull)
			be.FailLoad(func(backend.Handle) error { return nil })
			_ = be.Counts()
			be.ResetCounts()
		}
	})
	wg.Wait()
}
