package snapshot

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/imagobackup/imago/chunk"
)

// dataExtents returns n extents of distinct 8 KiB data chunks.
func dataExtents(rng *rand.Rand, n int) []Extent {
	xs := make([]Extent, n)
	for i := range xs {
		xs[i] = Extent{Length: 8192, ID: fakeID(rng.Uint64())}
	}
	return xs
}

// replaced returns a copy of xs with about one extent in oneIn given new
// data, scattered as a night's churn.
func replaced(rng *rand.Rand, xs []Extent, oneIn int) []Extent {
	next := slices.Clone(xs)
	for i := range next {
		if rng.IntN(oneIn) == 0 {
			next[i].ID = fakeID(rng.Uint64())
		}
	}
	return next
}

// imageExtents returns n extents as an image gives them: 8 KiB data chunks
// with a hole of a few chunks every ~50.
func imageExtents(rng *rand.Rand, n int) []Extent {
	xs := make([]Extent, n)
	for i := range xs {
		xs[i].Length = 8192
		if rng.IntN(50) == 0 {
			xs[i].Length *= uint64(1 + rng.IntN(4))
			continue
		}
		xs[i].ID = fakeID(rng.Uint64())
	}
	return normalizeExtents(xs)
}

// normalizeExtents drops empty extents and merges adjacent holes, as
// ContentBuilder does.
func normalizeExtents(xs []Extent) []Extent {
	var out []Extent
	for _, x := range xs {
		if x.Length == 0 {
			continue
		}
		if k := len(out) - 1; k >= 0 && out[k].Hole() && x.Hole() {
			out[k].Length += x.Length
			continue
		}
		out = append(out, x)
	}
	return out
}

// pageEdges returns the indexes of the entries that end a level-0 page of
// the list xs (as paged by ContentBuilder).
func pageEdges(xs []Extent) []int {
	var edges []int
	n := 0
	for i, x := range xs {
		n++
		if isBoundary(boundaryKey(x), n) {
			edges = append(edges, i)
			n = 0
		}
	}
	return edges
}

// mutate returns a copy of xs with k random edits: replacements, inserts,
// deletes, data turned into holes (holes grow and merge) and holes partly
// overwritten (holes shrink or split), half of them at page edges.
func mutate(rng *rand.Rand, xs []Extent, k int) []Extent {
	out := slices.Clone(xs)
	for range k {
		i := rng.IntN(len(out))
		if edges := pageEdges(out); rng.IntN(2) == 0 && len(edges) > 0 {
			i = min(len(out)-1, edges[rng.IntN(len(edges))]+rng.IntN(3)-1)
			i = max(i, 0)
		}
		newData := Extent{Length: 8192, ID: fakeID(rng.Uint64())}
		switch rng.IntN(5) {
		case 0: // replace
			out[i] = Extent{Length: out[i].Length, ID: newData.ID}
		case 1: // insert
			out = slices.Insert(out, i, newData)
		case 2: // delete
			if len(out) > 1 {
				out = slices.Delete(out, i, i+1)
			}
		case 3: // hole grows
			out[i] = Extent{Length: out[i].Length}
		case 4: // hole shrinks, or splits
			if out[i].Hole() && out[i].Length > 8192 {
				h := out[i].Length - 8192
				out = slices.Replace(out, i, i+1, Extent{Length: h / 2}, newData, Extent{Length: h - h/2})
			} else {
				out[i] = newData
			}
		}
		out = normalizeExtents(out)
	}
	return out
}

// buildWith runs xs through a builder saving to m, with parent (nil: full
// pages), and returns the root, the bytes its pages added and the number
// of delta pages it saved.
func buildWith(t testing.TB, m *MemStore, parent *ContentReader, xs []Extent) (Content, int, int) {
	t.Helper()
	ctx := context.Background()
	b := NewContentBuilderWithParent(m, parent)
	for _, x := range xs {
		if err := b.Add(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	c, _, added, err := b.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, added, b.deltas
}

// levelZeroPages returns the raw bytes of every level-0 page of c.
func levelZeroPages(t testing.TB, m *MemStore, c Content) map[chunk.ID][]byte {
	t.Helper()
	ctx := context.Background()
	r := NewContentReader(m, c)
	out := map[chunk.ID][]byte{}
	var walk func(p *page)
	walk = func(p *page) {
		for _, ref := range p.refs {
			child, err := r.load(ctx, ref, p.level-1)
			if err != nil {
				t.Fatal(err)
			}
			if child.level > 0 {
				walk(child)
				continue
			}
			b, err := m.LoadChunk(ctx, chunk.Handle{ID: ref.ID, Kind: chunk.KindTree}, nil)
			if err != nil {
				t.Fatal(err)
			}
			out[ref.ID] = b
		}
	}
	walk(r.root)
	return out
}

func TestDeltaPagesReadBackTheSameExtents(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 7))
		n := 65 + rng.IntN(6000)
		if seed == 0 {
			n = 3000
		}
		edits := 1 + rng.IntN(n/50+1)
		t.Run("", func(t *testing.T) {
			parentXs := imageExtents(rng, n)
			withParent, without := NewMemStore(), NewMemStore()
			pc, _, _ := buildWith(t, withParent, nil, parentXs)
			buildWith(t, without, nil, parentXs)
			parent := NewContentReader(withParent, pc)

			xs := parentXs
			var savedTotal, deltasTotal int
			// Several nights, each built on the last: deltas of a
			// delta's base, pages written in full again, and so on.
			for night := range 6 {
				xs = mutate(rng, xs, edits)
				c, added, deltas := buildWith(t, withParent, parent, xs)
				cFull, addedFull, _ := buildWith(t, without, nil, xs)
				got, _ := collect(t, NewContentReader(withParent, c), 0)
				if !slices.Equal(got, xs) {
					t.Fatalf("night %d: list built with a parent reads back %d extents that differ from the %d added", night, len(got), len(xs))
				}
				gotFull, _ := collect(t, NewContentReader(without, cFull), 0)
				if !slices.Equal(gotFull, got) {
					t.Fatalf("night %d: lists built with and without a parent differ", night)
				}
				if c.Size() != cFull.Size() || c.Count() != cFull.Count() || c.Level != cFull.Level || len(c.Pages) != len(cFull.Pages) {
					t.Fatalf("night %d: roots differ in shape: %d/%d bytes, %d/%d extents, level %d/%d", night,
						c.Size(), cFull.Size(), c.Count(), cFull.Count(), c.Level, cFull.Level)
				}
				for i := range c.Pages {
					if c.Pages[i].Length != cFull.Pages[i].Length || c.Pages[i].Count != cFull.Pages[i].Count {
						t.Fatalf("night %d: page %d cut elsewhere with a parent", night, i)
					}
				}
				for id, b := range levelZeroPages(t, withParent, c) {
					if b[0] == formatPageDeltaV1 {
						d, err := decodeDeltaPage(b)
						if err != nil {
							t.Fatal(err)
						}
						base, err := withParent.LoadChunk(ctx, chunk.Handle{ID: d.base, Kind: chunk.KindTree}, nil)
						if err != nil || base[0] != formatPageV1 {
							t.Fatalf("night %d: delta page %v has base %v that is not a full page (%v)", night, id.Short(), d.base.Short(), err)
						}
					}
				}
				savedTotal += addedFull - added
				deltasTotal += deltas
				parent = NewContentReader(withParent, c)
			}
			if pc.Level > 0 && (deltasTotal == 0 || savedTotal <= 0) {
				t.Fatalf("%d delta pages saved %d bytes over 6 nights of %d edits in %d extents", deltasTotal, savedTotal, edits, n)
			}
		})
	}
}

func TestDeltaPagesScatteredChurn(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	xs := dataExtents(rng, 100_000)
	m := NewMemStore()
	pc, _, _ := buildWith(t, m, nil, xs)
	parent := NewContentReader(m, pc)
	for night := range 3 {
		next := replaced(rng, xs, 100)
		_, full, _ := buildWith(t, NewMemStore(), nil, next) // the whole list, in full pages
		c, added, deltas := buildWith(t, m, parent, next)
		t.Logf("night %d: %d bytes added with a parent (%d delta pages), the list is %d bytes", night, added, deltas, full)
		if 4*added >= full {
			t.Fatalf("night %d: 1%% scattered change added %d bytes of pages, the full list is %d", night, added, full)
		}
		got, _ := collect(t, NewContentReader(m, c), 0)
		if !slices.Equal(got, next) {
			t.Fatal("list built with a parent reads back other extents")
		}
		xs, parent = next, NewContentReader(m, c)
	}
}

// TestDeltaPagesLowChurnRewriteBases runs 300 nights of 0.1% scattered
// change: every page is touched now and then, its delta grows slowly, and
// the half-page cap alone would carry deltas for hundreds of nights (6% of
// the full list a night here, a quarter in the long run). Rewriting a page
// once its base's deltas cost more than the page keeps the mean near
// √(2cF) (3% here), and the list still reads back the same.
func TestDeltaPagesLowChurnRewriteBases(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	xs := dataExtents(rng, 20_000)
	m := NewMemStore()
	pc, full, _ := buildWith(t, m, nil, xs)
	parent := NewContentReader(m, pc)
	const nights = 300
	total := 0
	for range nights {
		next := replaced(rng, xs, 1000)
		c, added, _ := buildWith(t, m, parent, next)
		total += added
		xs, parent = next, NewContentReader(m, c)
	}
	mean := float64(total) / nights / float64(full)
	t.Logf("mean %.1f%% of the full list (%d bytes) a night", 100*mean, full)
	if mean > 0.04 {
		t.Fatalf("0.1%% change a night added %.1f%% of the full list a night", 100*mean)
	}
	got, _ := collect(t, parent, 0)
	if !slices.Equal(got, xs) {
		t.Fatal("the last night's list reads back other extents")
	}
}

func TestDeltaPagesUnchangedDeduplicate(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	xs := imageExtents(rng, 20_000)
	m := NewMemStore()
	pc, _, _ := buildWith(t, m, nil, xs)
	next := mutate(rng, xs, 40)
	c1, _, deltas := buildWith(t, m, NewContentReader(m, pc), next)
	if deltas == 0 {
		t.Fatal("no delta pages")
	}
	// The same list again on a parent with delta pages: nothing new.
	c2, added, _ := buildWith(t, m, NewContentReader(m, c1), next)
	if added != 0 || !slices.Equal(c1.Pages, c2.Pages) {
		t.Fatalf("an unchanged list on its own delta pages added %d bytes", added)
	}
	// Built on an unchanged parent of full pages: the same pages as without.
	c3, added, deltas := buildWith(t, m, NewContentReader(m, pc), xs)
	if added != 0 || deltas != 0 || !slices.Equal(c3.Pages, pc.Pages) {
		t.Fatalf("the parent's own list added %d bytes, %d delta pages", added, deltas)
	}
}

// deltaFixture is a store with a full level-0 page and helpers to save
// hand-made pages against it.
type deltaFixture struct {
	m      *MemStore
	baseXs []Extent
	base   chunk.ID
}

func newDeltaFixture(t *testing.T) *deltaFixture {
	f := &deltaFixture{m: NewMemStore(), baseXs: genExtents(40, 11)}
	f.base = f.save(t, f.page(t, 0, f.baseXs))
	return f
}

func (f *deltaFixture) page(t *testing.T, level uint8, xs []Extent) []byte {
	t.Helper()
	b, err := appendPage(nil, level, xs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *deltaFixture) save(t *testing.T, b []byte) chunk.ID {
	t.Helper()
	id, _, err := f.m.SaveChunk(context.Background(), chunk.KindTree, b)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// read reads a list of one level-0 page, id, said to hold length bytes in
// count extents.
func (f *deltaFixture) read(id chunk.ID, length, count uint64) error {
	r := NewContentReader(f.m, Content{Level: 1, Pages: []PageRef{{ID: id, Length: length, Count: count}}})
	return r.Extents(context.Background(), 0, func(uint64, Extent) error { return nil })
}

func sumLength(xs []Extent) uint64 {
	var n uint64
	for _, x := range xs {
		n += x.Length
	}
	return n
}

func TestDeltaPageReaderRefuses(t *testing.T) {
	f := newDeltaFixture(t)
	good := &deltaPage{base: f.base, count: 12, runs: []deltaRun{{from: 0, n: 10}, {lits: []Extent{{Length: 7, ID: fakeID(99)}, {Length: 3}}}}}
	goodLen := sumLength(f.baseXs[:10]) + 10
	enc := func(d *deltaPage) []byte {
		b, err := appendDeltaPage(nil, d)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	goodID := f.save(t, enc(good))
	if err := f.read(goodID, goodLen, 12); err != nil {
		t.Fatalf("a good delta page: %v", err)
	}

	deltaOfDelta := f.save(t, enc(&deltaPage{base: goodID, count: 1, runs: []deltaRun{{from: 0, n: 1}}}))
	level1Base := f.save(t, func() []byte {
		b, _ := appendPage(nil, 1, nil, []PageRef{{ID: f.base, Length: sumLength(f.baseXs), Count: 40}})
		return b
	}())
	missing := fakeID(12345)
	raw := func(b []byte) chunk.ID { return f.save(t, b) }
	level1 := enc(good)
	level1[1] = 1
	countHigh := enc(&deltaPage{base: f.base, count: 1, runs: []deltaRun{{from: 0, n: 1}}})
	countHigh[34] = 2 // count says 2, the runs hold 1
	tests := []struct {
		name          string
		id            chunk.ID
		length, count uint64
		wantFormat    bool
		wantIn        string
	}{
		{"base is a delta page", deltaOfDelta, f.baseXs[0].Length, 1, true, "is a delta page"},
		{"base is a level-1 page", f.save(t, enc(&deltaPage{base: level1Base, count: 1, runs: []deltaRun{{from: 0, n: 1}}})), 1, 1, true, "not a full level-0 page"},
		{"level 1 delta", raw(level1), goodLen, 12, true, "level 1"},
		{"copy run past the base", f.save(t, enc(&deltaPage{base: f.base, count: 2, runs: []deltaRun{{from: 39, n: 2}}})), 1, 2, true, "outside the 40 entries"},
		{"copy run from past the base", f.save(t, enc(&deltaPage{base: f.base, count: 1, runs: []deltaRun{{from: 40, n: 1}}})), 1, 1, true, "outside"},
		{"count above the runs", raw(countHigh), 1, 2, true, "runs hold 1"},
		{"ref count differs", goodID, goodLen, 13, true, "does not match its ref"},
		{"ref length differs", goodID, goodLen + 1, 12, true, "does not match its ref"},
		{"missing base", f.save(t, enc(&deltaPage{base: missing, count: 1, runs: []deltaRun{{from: 0, n: 1}}})), 1, 1, false, missing.Short()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := f.read(tt.id, tt.length, tt.count)
			if err == nil {
				t.Fatal("read succeeded")
			}
			if tt.wantFormat {
				wantFormatError(t, err)
			} else if !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("got %v, want an error wrapping fs.ErrNotExist", err)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Fatalf("error %q does not say %q", err, tt.wantIn)
			}
		})
	}
}

func TestDeltaPageCodecRejects(t *testing.T) {
	base := fakeID(1)
	valid, err := appendDeltaPage(nil, &deltaPage{base: base, count: 4, runs: []deltaRun{{from: 3, n: 2}, {lits: []Extent{{Length: 9, ID: fakeID(2)}, {Length: 5}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeDeltaPage(valid); err != nil {
		t.Fatal(err)
	}
	for n := range len(valid) {
		if _, err := decodeDeltaPage(valid[:n]); err == nil {
			t.Fatalf("decodeDeltaPage accepted %d of %d bytes", n, len(valid))
		} else {
			wantFormatError(t, err)
		}
	}
	head := func(level byte, id chunk.ID, count uint64, runs uint64) []byte {
		b := append([]byte{formatPageDeltaV1, level}, id[:]...)
		b = append(b, byte(count))
		if count >= 0x80 {
			b = append(b[:len(b)-1], byte(count|0x80), byte(count>>7))
		}
		return append(b, byte(runs))
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"full page format", append([]byte{formatPageV1}, valid[1:]...)},
		{"level 1", head(1, base, 1, 1)},
		{"null base", append(head(0, chunk.ID{}, 1, 1), runCopy, 0, 1)},
		{"count 0", head(0, base, 0, 0)},
		{"no runs", head(0, base, 1, 0)},
		{"empty copy run", append(head(0, base, 1, 2), runCopy, 0, 0, runCopy, 0, 1)},
		{"empty literal run", append(head(0, base, 1, 2), runLiteral, 0, runCopy, 0, 1)},
		{"unknown run tag", append(head(0, base, 1, 1), 2, 0, 1)},
		{"runs hold more than count", append(head(0, base, 1, 1), runCopy, 0, 2)},
		{"runs hold less than count", append(head(0, base, 3, 1), runCopy, 0, 2)},
		{"zero-length literal", append(head(0, base, 1, 1), runLiteral, 1, tagHole, 0)},
		{"trailing bytes", append(bytes.Clone(valid), 0)},
		{"copy run overflows", append(head(0, base, 1, 1), runCopy, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1)},
		{"count above the bound", binaryDelta(base, maxDeltaEntries+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeDeltaPage(tt.b)
			wantFormatError(t, err)
		})
	}
}

// binaryDelta returns a delta page of count entries in count/2048 runs of
// 2048 copied entries: few bytes for many entries.
func binaryDelta(base chunk.ID, count int) []byte {
	e := &encoder{}
	e.byte(formatPageDeltaV1)
	e.byte(0)
	e.id(base)
	e.uvarint(uint64(count))
	runs := (count + 2047) / 2048
	e.uvarint(uint64(runs))
	for i := range runs {
		e.byte(runCopy)
		e.uvarint(0)
		e.uvarint(uint64(min(2048, count-i*2048)))
	}
	return e.buf
}

func TestBlobsVisitsDeltaBases(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	m := NewMemStore()
	xs := imageExtents(rng, 10_000)
	save := func(c Content) chunk.ID {
		ids, _, err := SaveTree(ctx, m, &Tree{Nodes: []Node{{Name: "disk.img", Type: TypeImage, Size: c.Size(), Content: c}}})
		if err != nil {
			t.Fatal(err)
		}
		return ids[0]
	}
	pc, _, _ := buildWith(t, m, nil, xs)
	parentRoot := save(pc)
	next := mutate(rng, xs, 30)
	c, _, deltas := buildWith(t, m, NewContentReader(m, pc), next)
	if deltas == 0 {
		t.Fatal("no delta pages")
	}
	childRoot := save(c)

	live := map[chunk.Handle]bool{}
	err := Blobs(ctx, m, childRoot, nil, func(h chunk.Handle) error { live[h] = true; return nil })
	if err != nil {
		t.Fatal(err)
	}
	var bases int
	for _, b := range levelZeroPages(t, m, c) {
		if b[0] != formatPageDeltaV1 {
			continue
		}
		d, err := decodeDeltaPage(b)
		if err != nil {
			t.Fatal(err)
		}
		bases++
		if !live[chunk.Handle{ID: d.base, Kind: chunk.KindTree}] {
			t.Fatalf("walking the child did not visit base page %v", d.base.Short())
		}
	}
	if bases == 0 {
		t.Fatal("no delta pages found")
	}
	// Forget and prune the parent: remove every blob the child's walk
	// did not visit. The child still reads back in full.
	var all []chunk.Handle
	Blobs(ctx, m, parentRoot, nil, func(h chunk.Handle) error { all = append(all, h); return nil })
	removed := 0
	for _, h := range all {
		if !live[h] && m.Has(h) {
			m.Remove(h)
			removed++
		}
	}
	if removed == 0 {
		t.Fatal("the parent had nothing of its own to prune")
	}
	got, _ := collect(t, NewContentReader(m, c), 0)
	if !slices.Equal(got, next) {
		t.Fatal("child reads back other extents after the parent was pruned")
	}
}

// TestBlobsLiveSetWithSharedBases walks a parent and a child with delta
// pages as prune does, with one seen set for both, in both orders: every
// blob of either snapshot must be marked. The child's walk meets the
// parent's pages as bases first; the parent's walk must not then skip
// their data.
func TestBlobsLiveSetWithSharedBases(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(8, 9))
	m := NewMemStore()
	save := func(c Content) chunk.ID {
		ids, _, err := SaveTree(ctx, m, &Tree{Nodes: []Node{{Name: "disk.img", Type: TypeImage, Size: c.Size(), Content: c}}})
		if err != nil {
			t.Fatal(err)
		}
		return ids[0]
	}
	xs := imageExtents(rng, 10_000)
	pc, _, _ := buildWith(t, m, nil, xs)
	c, _, deltas := buildWith(t, m, NewContentReader(m, pc), mutate(rng, xs, 30))
	if deltas == 0 {
		t.Fatal("no delta pages")
	}
	parent, child := save(pc), save(c)
	for _, tt := range []struct {
		name  string
		order []chunk.ID
		bases *BaseSet
	}{
		{"child first", []chunk.ID{child, parent}, nil},
		{"parent first", []chunk.ID{parent, child}, nil},
		{"child first, BaseSet", []chunk.ID{child, parent}, NewBaseSet()},
		{"parent first, BaseSet", []chunk.ID{parent, child}, NewBaseSet()},
	} {
		order := tt.order
		live := map[chunk.Handle]bool{}
		seen := func(h chunk.Handle) bool {
			if live[h] {
				return true
			}
			live[h] = true
			return false
		}
		for _, root := range order {
			if err := BlobsWithBases(ctx, m, root, seen, tt.bases, func(chunk.Handle) error { return nil }); err != nil {
				t.Fatal(err)
			}
		}
		for _, root := range order {
			err := Blobs(ctx, m, root, nil, func(h chunk.Handle) error {
				if !live[h] {
					t.Fatalf("%s: blob %v of snapshot %v not marked when walking with one seen set", tt.name, h, root.Short())
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestBlobsWithBasesLeavesReplacedData checks that a walk with a BaseSet
// marks a delta page's base but not the data of the base entries the
// child replaced, while Blobs marks them.
func TestBlobsWithBasesLeavesReplacedData(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(10, 11))
	m := NewMemStore()
	xs := imageExtents(rng, 10_000)
	pc, _, _ := buildWith(t, m, nil, xs)
	next := slices.Clone(xs)
	replaced := map[chunk.ID]bool{}
	for i := 0; i < len(next); i += 97 {
		if !next[i].Hole() {
			replaced[next[i].ID] = true
			next[i].ID = fakeID(rng.Uint64())
		}
	}
	c, _, deltas := buildWith(t, m, NewContentReader(m, pc), next)
	if deltas == 0 {
		t.Fatal("no delta pages")
	}
	ids, _, err := SaveTree(ctx, m, &Tree{Nodes: []Node{{Name: "disk.img", Type: TypeImage, Size: c.Size(), Content: c}}})
	if err != nil {
		t.Fatal(err)
	}
	walk := func(bases *BaseSet) (data map[chunk.ID]bool, trees int) {
		data = map[chunk.ID]bool{}
		err := BlobsWithBases(ctx, m, ids[0], nil, bases, func(h chunk.Handle) error {
			if h.Kind == chunk.KindData {
				data[h.ID] = true
			} else {
				trees++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return data, trees
	}
	precise, preciseTrees := walk(NewBaseSet())
	all, allTrees := walk(nil)
	var inAll, inPrecise int
	for id := range replaced {
		if all[id] {
			inAll++
		}
		if precise[id] {
			inPrecise++
		}
	}
	if preciseTrees != allTrees || inPrecise != 0 || inAll == 0 {
		t.Fatalf("of %d replaced data blobs, Blobs visited %d and BlobsWithBases %d (want some and none); tree blobs %d and %d",
			len(replaced), inAll, inPrecise, allTrees, preciseTrees)
	}
}
