package snapshot

import (
	"bytes"
	"context"
	"errors"
	"io"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/imagobackup/imago/chunk"
)

// genExtents returns n extents of varied lengths with IDs derived from seed;
// every 17th is a hole, and no two holes are adjacent.
func genExtents(n int, seed uint64) []Extent {
	xs := make([]Extent, n)
	for i := range xs {
		xs[i].Length = 4096 + uint64(i%977)*13
		if i%17 != 5 {
			xs[i].ID = fakeID(seed<<32 | uint64(i))
		}
	}
	return xs
}

// build runs xs through a ContentBuilder saving to m.
func build(t testing.TB, m *MemStore, xs []Extent) (Content, uint64) {
	t.Helper()
	ctx := context.Background()
	b := NewContentBuilder(m)
	for _, x := range xs {
		if err := b.Add(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	c, size, _, err := b.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, size
}

// collect returns every extent from offset from on, and their starts.
func collect(t testing.TB, r *ContentReader, from uint64) ([]Extent, []uint64) {
	t.Helper()
	var xs []Extent
	var starts []uint64
	err := r.Extents(context.Background(), from, func(start uint64, e Extent) error {
		xs = append(xs, e)
		starts = append(starts, start)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return xs, starts
}

func TestContentRoundTrip(t *testing.T) {
	tests := []struct {
		n         int
		wantLevel uint8
	}{
		{0, 0},
		{1, 0},
		{InlineExtents, 0},
		{InlineExtents + 1, 1},
		{100_000, 2},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n)+" extents", func(t *testing.T) {
			m := NewMemStore()
			in := genExtents(tt.n, 1)
			c, size := build(t, m, in)
			var want uint64
			for _, x := range in {
				want += x.Length
			}
			if size != want || c.Size() != want || c.Count() != uint64(tt.n) {
				t.Fatalf("size %d, Size() %d, Count() %d; want %d bytes in %d extents", size, c.Size(), c.Count(), want, tt.n)
			}
			if c.Level != tt.wantLevel {
				t.Fatalf("level %d, want %d", c.Level, tt.wantLevel)
			}
			if len(c.Extents)+len(c.Pages) > InlineExtents {
				t.Fatalf("root holds %d entries inline", len(c.Extents)+len(c.Pages))
			}
			if c.Level == 0 && m.Len() != 0 {
				t.Fatalf("an inline list saved %d blobs", m.Len())
			}

			r := NewContentReader(m, c)
			got, starts := collect(t, r, 0)
			if !slices.Equal(got, in) {
				t.Fatalf("Extents returned %d extents that differ from the %d added", len(got), len(in))
			}
			var off uint64
			for i, x := range in {
				if starts[i] != off {
					t.Fatalf("extent %d starts at %d, want %d", i, starts[i], off)
				}
				for _, at := range []uint64{off, off + x.Length/2, off + x.Length - 1} {
					s, e, err := r.Find(ctx, at)
					if err != nil || s != off || e != x {
						t.Fatalf("Find(%d) = %d, %v, %v; want extent %d at %d", at, s, e, err, i, off)
					}
				}
				off += x.Length
			}
			if _, _, err := r.Find(ctx, want); err != io.EOF {
				t.Fatalf("Find at the end: %v, want io.EOF", err)
			}
			checkPageSizes(t, r, r.root, true)
		})
	}
}

// checkPageSizes checks that every page below p holds between
// minPageEntries (except the last page of its level) and maxPageEntries
// entries.
func checkPageSizes(t testing.TB, r *ContentReader, p *page, last bool) {
	t.Helper()
	for i, ref := range p.refs {
		child, err := r.load(context.Background(), ref, p.level-1)
		if err != nil {
			t.Fatal(err)
		}
		n := len(child.ends)
		isLast := last && i == len(p.refs)-1
		if n > maxPageEntries || (n < minPageEntries && !isLast) {
			t.Fatalf("level %d page %d of %d holds %d entries", child.level, i, len(p.refs), n)
		}
		if child.level > 0 {
			checkPageSizes(t, r, child, isLast)
		}
	}
}

func TestContentExtentsFrom(t *testing.T) {
	m := NewMemStore()
	in := genExtents(5000, 2)
	c, size := build(t, m, in)
	r := NewContentReader(m, c)
	_, starts := collect(t, r, 0)
	for _, i := range []int{0, 1, 63, 64, 2500, 4999} {
		for _, from := range []uint64{starts[i], starts[i] + 1, starts[i] + in[i].Length - 1} {
			got, gotStarts := collect(t, r, from)
			if !slices.Equal(got, in[i:]) || gotStarts[0] != starts[i] {
				t.Fatalf("Extents from %d: got %d extents from %d, want %d from %d", from, len(got), gotStarts[0], len(in)-i, starts[i])
			}
		}
	}
	if got, _ := collect(t, r, size); len(got) != 0 {
		t.Fatalf("Extents from the end returned %d extents", len(got))
	}
	stop := errors.New("stop")
	calls := 0
	err := r.Extents(context.Background(), 0, func(uint64, Extent) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Fatalf("Extents returned %v after %d calls; want the callback's error after 1", err, calls)
	}
}

func TestContentBuilderNormalizes(t *testing.T) {
	id := func(n uint64) chunk.ID { return fakeID(n) }
	tests := []struct {
		name string
		in   []Extent
		want []Extent
	}{
		{"zero-length dropped", []Extent{{Length: 0, ID: id(1)}, {Length: 5, ID: id(2)}, {Length: 0}}, []Extent{{Length: 5, ID: id(2)}}},
		{"adjacent holes merged", []Extent{{Length: 3}, {Length: 4}, {Length: 0}, {Length: 5}}, []Extent{{Length: 12}}},
		{"holes around data", []Extent{{Length: 1}, {Length: 1}, {Length: 2, ID: id(1)}, {Length: 3}, {Length: 3}}, []Extent{{Length: 2}, {Length: 2, ID: id(1)}, {Length: 6}}},
		{"equal data extents not merged", []Extent{{Length: 2, ID: id(1)}, {Length: 2, ID: id(1)}}, []Extent{{Length: 2, ID: id(1)}, {Length: 2, ID: id(1)}}},
		{"only zero lengths", []Extent{{}, {ID: id(1)}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, size := build(t, NewMemStore(), tt.in)
			if !reflect.DeepEqual(c.Extents, tt.want) || c.Level != 0 {
				t.Fatalf("got %+v, want %+v", c, tt.want)
			}
			if size != c.Size() {
				t.Fatalf("size %d, content covers %d", size, c.Size())
			}
		})
	}
}

func TestContentSplitHolesGiveSamePages(t *testing.T) {
	// Holes reported in pieces and empty extents must not change a single
	// page: the pages depend on the normalized sequence alone.
	m := NewMemStore()
	in := genExtents(20_000, 3)
	c1, _ := build(t, m, in)
	before := m.Stats().NewBlobs
	var pieces []Extent
	for _, x := range in {
		if x.Hole() {
			pieces = append(pieces, Extent{Length: 1}, Extent{}, Extent{Length: x.Length - 1})
			continue
		}
		pieces = append(pieces, x, Extent{ID: x.ID})
	}
	c2, _ := build(t, m, pieces)
	if !reflect.DeepEqual(c1, c2) {
		t.Fatal("the same content fed in pieces gave another root")
	}
	if n := m.Stats().NewBlobs - before; n != 0 {
		t.Fatalf("the same content fed in pieces saved %d new pages", n)
	}
}

func TestContentChangeRewritesFewPages(t *testing.T) {
	const n = 100_000
	base := genExtents(n, 4)
	tests := []struct {
		name     string
		edit     func([]Extent) []Extent
		maxPages int
	}{
		{"unchanged", func(xs []Extent) []Extent { return xs }, 0},
		{"insert in the middle", func(xs []Extent) []Extent {
			return slices.Insert(xs, n/2, Extent{Length: 777, ID: fakeID(1 << 60)})
		}, 6},
		{"replace in the middle", func(xs []Extent) []Extent {
			xs[n/3] = Extent{Length: 777, ID: fakeID(1 << 61)}
			return xs
		}, 6},
		{"delete near the start", func(xs []Extent) []Extent { return slices.Delete(xs, 10, 11) }, 6},
		{"append at the end", func(xs []Extent) []Extent { return append(xs, Extent{Length: 1, ID: fakeID(1 << 62)}) }, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMemStore()
			build(t, m, base)
			before := m.Stats().NewBlobs
			edited := tt.edit(slices.Clone(base))
			c, _ := build(t, m, edited)
			added := m.Stats().NewBlobs - before
			t.Logf("%d new pages", added)
			if added > tt.maxPages {
				t.Fatalf("a one-extent change saved %d new pages, want at most %d", added, tt.maxPages)
			}
			if got, _ := collect(t, NewContentReader(m, c), 0); !slices.Equal(got, edited) {
				t.Fatal("edited list does not read back")
			}
		})
	}
}

func TestContentRepeatedEntries(t *testing.T) {
	// A disk full of one repeated chunk: every entry has the same boundary
	// key, so pages are cut only by the minimum or the maximum.
	for _, x := range []Extent{{Length: 10, ID: fakeID(7)}, {Length: 10, ID: fakeID(8)}} {
		isB := boundaryKey(x)&pageBoundaryMask == 0
		xs := make([]Extent, 10_000)
		for i := range xs {
			xs[i] = x
		}
		m := NewMemStore()
		c, _ := build(t, m, xs)
		r := NewContentReader(m, c)
		checkPageSizes(t, r, r.root, true)
		if got, _ := collect(t, r, 0); !slices.Equal(got, xs) {
			t.Fatalf("boundary=%v: list does not read back", isB)
		}
	}
}

func TestContentReaderErrors(t *testing.T) {
	ctx := context.Background()
	m := NewMemStore()
	c, _ := build(t, m, genExtents(3000, 5))
	if c.Level < 1 {
		t.Fatal("want a paged list")
	}
	tamper := func(f func(*Content)) Content {
		d := Content{Level: c.Level, Pages: slices.Clone(c.Pages)}
		f(&d)
		return d
	}
	tests := []struct {
		name   string
		c      Content
		format bool // want a *FormatError
	}{
		{"ref length too long", tamper(func(d *Content) { d.Pages[0].Length++ }), true},
		{"ref count wrong", tamper(func(d *Content) { d.Pages[0].Count-- }), true},
		{"wrong level", tamper(func(d *Content) { d.Level++ }), true},
		{"missing page", tamper(func(d *Content) { d.Pages[0].ID = fakeID(12345) }), false},
		{"invalid root", Content{Extents: []Extent{{Length: 1}}, Pages: c.Pages}, true},
		{"root level too high", Content{Level: MaxLevel + 1, Pages: c.Pages}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewContentReader(m, tt.c)
			_, _, err := r.Find(ctx, 0)
			if err == nil {
				t.Fatal("Find succeeded")
			}
			if tt.format {
				wantFormatError(t, err)
			}
			if err := r.Extents(ctx, 0, func(uint64, Extent) error { return nil }); err == nil {
				t.Fatal("Extents succeeded")
			}
		})
	}
	t.Run("corrupt page", func(t *testing.T) {
		m := NewMemStore()
		c, _ := build(t, m, genExtents(3000, 6))
		m.Corrupt(c.Pages[0].ID)
		if _, _, err := NewContentReader(m, c).Find(ctx, 0); err == nil {
			t.Fatal("Find read a corrupt page")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, err := NewContentReader(m, c).Find(cctx, 0); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

func TestContentReaderConcurrent(t *testing.T) {
	ctx := context.Background()
	m := NewMemStore()
	in := genExtents(20_000, 8)
	c, size := build(t, m, in)
	r := NewContentReader(m, c)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for off := uint64(g) * 7919; off < size; off += size / 500 {
				if _, e, err := r.Find(ctx, off); err != nil || e.Length == 0 {
					t.Errorf("Find(%d): %v", off, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestContentBuilderErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("overflow", func(t *testing.T) {
		b := NewContentBuilder(NewMemStore())
		if err := b.Add(ctx, Extent{Length: 1 << 63}); err != nil {
			t.Fatal(err)
		}
		if err := b.Add(ctx, Extent{Length: 1 << 63, ID: fakeID(1)}); err == nil {
			t.Fatal("content of 2^64 bytes accepted")
		}
		if _, _, _, err := b.Finish(ctx); err == nil {
			t.Fatal("Finish succeeded after an error")
		}
	})
	t.Run("save fails", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		b := NewContentBuilder(NewMemStore())
		cancel()
		var err error
		for _, x := range genExtents(1000, 9) {
			if err = b.Add(cctx, x); err != nil {
				break
			}
		}
		if err == nil {
			_, _, _, err = b.Finish(cctx)
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
	t.Run("finish twice", func(t *testing.T) {
		b := NewContentBuilder(NewMemStore())
		if _, _, _, err := b.Finish(ctx); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := b.Finish(ctx); err == nil {
			t.Fatal("second Finish succeeded")
		}
		if err := b.Add(ctx, Extent{Length: 1}); err == nil {
			t.Fatal("Add after Finish succeeded")
		}
	})
}

func TestPageCodecRejects(t *testing.T) {
	valid, err := appendPage(nil, 0, genExtents(40, 10), nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(valid) {
		if _, err := decodePage(valid[:n]); err == nil {
			t.Fatalf("decodePage accepted %d of %d bytes", n, len(valid))
		} else {
			wantFormatError(t, err)
		}
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"tree blob", []byte{formatTreeV1, 0}},
		{"empty level 0 page", []byte{formatPageV1, 0, 0}},
		{"empty level 1 page", []byte{formatPageV1, 1, 0}},
		{"level too high", []byte{formatPageV1, MaxLevel, 1, tagHole, 1}},
		{"unknown tag", []byte{formatPageV1, 0, 1, 7, 1}},
		{"zero-length hole", []byte{formatPageV1, 0, 1, tagHole, 0}},
		{"data extent with null ID", append([]byte{formatPageV1, 0, 1, tagData, 1}, make([]byte, 32)...)},
		{"trailing bytes", append(bytes.Clone(valid), 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodePage(tt.b)
			wantFormatError(t, err)
		})
	}
}

func FuzzDecodePage(f *testing.F) {
	seed := func(level uint8, xs []Extent, ps []PageRef) {
		b, err := appendPage(nil, level, xs, ps)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(0, genExtents(40, 11), nil)
	seed(3, nil, []PageRef{{ID: fakeID(1), Length: 1 << 40, Count: 300}, {ID: fakeID(2), Length: 5, Count: 1}})
	f.Add([]byte{formatPageV1, 0, 1, tagHole, 1})
	// Delta pages (0x03) against the base below.
	base := newPage(0, genExtents(40, 11), nil)
	baseID := fakeID(77)
	for _, d := range []*deltaPage{
		{base: baseID, count: 40, runs: []deltaRun{{from: 0, n: 40}}},
		{base: baseID, count: 5, runs: []deltaRun{{from: 3, n: 2}, {lits: []Extent{{Length: 9, ID: fakeID(2)}, {Length: 5}}}, {from: 39, n: 1}}},
		{base: baseID, count: 2, runs: []deltaRun{{from: 40, n: 2}}},
	} {
		b, err := appendDeltaPage(nil, d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 && b[0] == formatPageDeltaV1 {
			d, err := decodeDeltaPage(b)
			if err != nil {
				wantFormatError(t, err)
				return
			}
			enc, err := appendDeltaPage(nil, d)
			if err != nil {
				t.Fatalf("decoded delta page does not encode: %v", err)
			}
			if !bytes.Equal(enc, b) {
				t.Fatalf("re-encoding differs:\n in %x\nout %x", b, enc)
			}
			p, err := d.resolve(base)
			if err != nil {
				wantFormatError(t, err)
				return
			}
			if p.count != d.count || p.level != 0 || p.delta != d {
				t.Fatalf("resolved page holds %d extents at level %d, delta says %d", p.count, p.level, d.count)
			}
			return
		}
		p, err := decodePage(b)
		if err != nil {
			wantFormatError(t, err)
			return
		}
		enc, err := appendPage(nil, p.level, p.extents, p.refs)
		if err != nil {
			t.Fatalf("decoded page does not encode: %v", err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, enc)
		}
		p2, err := decodePage(enc)
		if err != nil || !reflect.DeepEqual(p, p2) {
			t.Fatalf("decode(encode(decode(b))) differs: %v", err)
		}
	})
}
