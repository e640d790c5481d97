package snapshot

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/imagobackup/imago/chunk"
)

// dumpFixture saves n chunks of varied sizes with holes between some of them
// and returns the content list and the bytes it stands for.
func dumpFixture(t testing.TB, m *MemStore, n int) (Content, []byte) {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	b := NewContentBuilder(m)
	var want []byte
	for i := range n {
		if i%5 == 2 {
			hole := uint64(rng.IntN(200_000)) + 1
			want = append(want, make([]byte, hole)...)
			if err := b.Add(ctx, Extent{Length: hole}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data := make([]byte, rng.IntN(20_000)+1)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		id, _, err := m.SaveChunk(ctx, chunk.KindData, data)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, data...)
		if err := b.Add(ctx, Extent{Length: uint64(len(data)), ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	c, _, _, err := b.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, want
}

func TestDump(t *testing.T) {
	ctx := context.Background()
	m := NewMemStore()
	for _, n := range []int{0, 3, 500} {
		c, want := dumpFixture(t, m, n)
		for _, workers := range []int{0, 1, 4, 1000} {
			var buf bytes.Buffer
			if err := Dump(ctx, m, c, &buf, workers); err != nil {
				t.Fatalf("%d extents, %d workers: %v", n, workers, err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("%d extents, %d workers: dumped %d bytes that differ from the %d expected", n, workers, buf.Len(), len(want))
			}
		}
	}
}

type failWriter struct{ after int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.after < len(p) {
		return 0, errors.New("disk full")
	}
	w.after -= len(p)
	return len(p), nil
}

func TestDumpErrors(t *testing.T) {
	ctx := context.Background()
	m := NewMemStore()
	c, want := dumpFixture(t, m, 300)
	var firstData chunk.ID
	r := NewContentReader(m, c)
	_ = r.Extents(ctx, 0, func(_ uint64, e Extent) error {
		if !e.Hole() && firstData.IsNull() {
			firstData = e.ID
		}
		return nil
	})

	t.Run("writer fails", func(t *testing.T) {
		err := Dump(ctx, m, c, &failWriter{after: len(want) / 2}, 4)
		if err == nil || err.Error() != "dump: disk full" {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := Dump(cctx, m, c, io.Discard, 4); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("length mismatch", func(t *testing.T) {
		id, _, _ := m.SaveChunk(ctx, chunk.KindData, []byte("four"))
		c := Content{Extents: []Extent{{Length: 5, ID: id}}}
		if err := Dump(ctx, m, c, io.Discard, 2); err == nil {
			t.Fatal("a 4-byte chunk was dumped for a 5-byte extent")
		}
	})
	t.Run("corrupt chunk", func(t *testing.T) {
		m := NewMemStore()
		c, _ := dumpFixture(t, m, 300)
		m.Corrupt(firstData) // same data, same ID as in the outer store
		var buf bytes.Buffer
		if err := Dump(ctx, m, c, &buf, 4); err == nil {
			t.Fatal("Dump wrote a corrupt chunk")
		}
	})
}

func BenchmarkDump(b *testing.B) {
	ctx := context.Background()
	m := NewMemStore()
	c, want := dumpFixture(b, m, 500)
	b.ReportAllocs()
	b.SetBytes(int64(len(want)))
	for b.Loop() {
		if err := Dump(ctx, m, c, io.Discard, 4); err != nil {
			b.Fatal(err)
		}
	}
}
