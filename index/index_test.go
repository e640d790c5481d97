package index

import (
	mrand "math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
)

// checkAll verifies that x holds exactly the blobs of want.
func checkAll(t *testing.T, x *Index, want map[chunk.Handle]Location) {
	t.Helper()
	if x.Len() != len(want) {
		t.Fatalf("Len = %d, want %d", x.Len(), len(want))
	}
	for h, w := range want {
		got, ok := x.Lookup(h)
		if !ok || got != w {
			t.Fatalf("Lookup(%v) = %+v, %v; want %+v", h, got, ok, w)
		}
		if !x.Has(h) {
			t.Fatalf("Has(%v) = false", h)
		}
	}
	seen := 0
	x.Each(func(h chunk.Handle, loc Location) bool {
		if w, ok := want[h]; !ok || w != loc {
			t.Fatalf("Each visited %v at %+v; want %+v (known %v)", h, loc, w, ok)
		}
		seen++
		return true
	})
	if seen != len(want) {
		t.Fatalf("Each visited %d blobs, want %d", seen, len(want))
	}
}

func TestAddLookupAcrossMerges(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		recentMax, midMinMax int
		packs                int
	}{
		{"defaults", recentMax, midMinMax, 300},
		{"every add merges", 1, 1, 40},
		{"small runs", 50, 200, 200},
		{"mid only", 100, 1 << 30, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mrand.New(mrand.NewPCG(1, 2))
			x := newSmall(tc.recentMax, tc.midMinMax)
			want := map[chunk.Handle]Location{}
			packs := randomPacks(t, r, tc.packs, 30)
			for i, p := range packs {
				x.Add(p.id, p.entries)
				for _, e := range p.entries {
					want[e.Handle] = wantLoc(p.id, e)
				}
				if i%37 == 0 || i == len(packs)-1 {
					checkAll(t, x, want)
				}
			}
			checkUnknown(t, x, r, 1000)
		})
	}
}

func TestKindsAreDistinct(t *testing.T) {
	x := newSmall(2, 2)
	var id chunk.ID
	fillRandom(t, id[:])
	data := chunk.Handle{ID: id, Kind: chunk.KindData}
	tree := chunk.Handle{ID: id, Kind: chunk.KindTree}
	x.Add(pack.ID{1}, []pack.Entry{{Handle: data, Offset: 0, Length: 100}})
	if x.Has(tree) {
		t.Fatal("a data blob is found as a tree blob")
	}
	x.Add(pack.ID{2}, []pack.Entry{{Handle: tree, Offset: 0, Length: 200}, {Handle: chunk.Handle{ID: chunk.ID{9}, Kind: chunk.KindTree}, Offset: 200, Length: 5}})
	checkAll(t, x, map[chunk.Handle]Location{
		data:                                    {Pack: pack.ID{1}, Offset: 0, Length: 100},
		tree:                                    {Pack: pack.ID{2}, Offset: 0, Length: 200},
		{ID: chunk.ID{9}, Kind: chunk.KindTree}: {Pack: pack.ID{2}, Offset: 200, Length: 5},
	})
}

func TestDuplicateBlobKeptOnce(t *testing.T) {
	for _, limits := range [][2]int{{1, 1}, {recentMax, midMinMax}} {
		x := newSmall(limits[0], limits[1])
		h := chunk.Handle{ID: chunk.ID{7}, Kind: chunk.KindData}
		x.Add(pack.ID{1}, []pack.Entry{{Handle: h, Offset: 10, Length: 100}})
		x.Add(pack.ID{2}, []pack.Entry{{Handle: h, Offset: 20, Length: 100}, {Handle: h, Offset: 120, Length: 100}})
		if x.Len() != 1 {
			t.Fatalf("Len = %d after adding one blob thrice", x.Len())
		}
		got, ok := x.Lookup(h)
		if !ok || !(got == Location{pack.ID{1}, 10, 100} || got == Location{pack.ID{2}, 20, 100}) {
			t.Fatalf("Lookup = %+v, %v", got, ok)
		}
	}
}

func TestInvalidEntriesIgnored(t *testing.T) {
	x := New()
	x.Add(pack.ID{1}, []pack.Entry{
		{Handle: chunk.Handle{ID: chunk.ID{1}, Kind: 0}, Length: 10},
		{Handle: chunk.Handle{ID: chunk.ID{2}, Kind: 3}, Length: 10},
		{Handle: chunk.Handle{ID: chunk.ID{3}, Kind: chunk.KindData}, Length: 0},
		{Handle: chunk.Handle{ID: chunk.ID{4}, Kind: chunk.KindData}, Length: 1 << 24},
	})
	x.Add(pack.ID{2}, nil)
	if x.Len() != 0 || len(x.Packs()) != 0 {
		t.Fatalf("Len %d, Packs %v after adding only invalid entries", x.Len(), x.Packs())
	}
}

func TestEachStops(t *testing.T) {
	x := newSmall(5, 5)
	for _, p := range randomPacks(t, mrand.New(mrand.NewPCG(3, 4)), 20, 10) {
		x.Add(p.id, p.entries)
	}
	for _, stop := range []int{1, 3, 7, x.Len()} {
		n := 0
		x.Each(func(chunk.Handle, Location) bool { n++; return n < stop })
		if n != stop {
			t.Errorf("Each called fn %d times after it returned false at %d", n, stop)
		}
	}
}

func TestRemovePacks(t *testing.T) {
	for _, limits := range [][2]int{{10, 40}, {recentMax, midMinMax}} {
		r := mrand.New(mrand.NewPCG(5, 6))
		x := newSmall(limits[0], limits[1])
		packs := randomPacks(t, r, 100, 20)
		for _, p := range packs {
			x.Add(p.id, p.entries)
		}
		remove := map[pack.ID]struct{}{}
		want := map[chunk.Handle]Location{}
		var wantPacks []pack.ID
		for i, p := range packs {
			if i%3 == 0 {
				remove[p.id] = struct{}{}
				continue
			}
			wantPacks = append(wantPacks, p.id)
			for _, e := range p.entries {
				want[e.Handle] = wantLoc(p.id, e)
			}
		}
		x.RemovePacks(remove)
		checkAll(t, x, want)
		if got := x.Packs(); !slices.Equal(got, wantPacks) {
			t.Fatalf("Packs after RemovePacks: %d packs, want %d", len(got), len(wantPacks))
		}
		for i, p := range packs {
			if i%3 == 0 && x.Has(p.entries[0].Handle) {
				t.Fatalf("blob of removed pack %v still found", p.id)
			}
		}
		// The index keeps working after a removal.
		more := randomPacks(t, r, 30, 20)
		for _, p := range more {
			x.Add(p.id, p.entries)
			for _, e := range p.entries {
				want[e.Handle] = wantLoc(p.id, e)
			}
		}
		checkAll(t, x, want)
	}
}

func TestPackAddedTwice(t *testing.T) {
	x := newSmall(3, 3)
	a := chunk.Handle{ID: chunk.ID{1}, Kind: chunk.KindData}
	b := chunk.Handle{ID: chunk.ID{2}, Kind: chunk.KindData}
	c := chunk.Handle{ID: chunk.ID{3}, Kind: chunk.KindTree}
	p, q := pack.ID{0xaa}, pack.ID{0xbb}
	x.Add(p, []pack.Entry{{Handle: a, Offset: 0, Length: 50}})
	x.Add(q, []pack.Entry{{Handle: c, Offset: 0, Length: 70}})
	// A second index file lists the same pack with a blob beyond the first.
	x.Add(p, []pack.Entry{{Handle: a, Offset: 0, Length: 50}, {Handle: b, Offset: 50, Length: 60}})
	checkAll(t, x, map[chunk.Handle]Location{
		a: {p, 0, 50}, b: {p, 50, 60}, c: {q, 0, 70},
	})
	if got := x.Packs(); !slices.Equal(got, []pack.ID{p, q}) {
		t.Fatalf("Packs = %v, want each pack once", got)
	}
	x.RemovePacks(map[pack.ID]struct{}{p: {}})
	checkAll(t, x, map[chunk.Handle]Location{c: {q, 0, 70}})
}

// TestPositionsCompacted runs out of positions on purpose: the index
// compacts them and every location stays right.
func TestPositionsCompacted(t *testing.T) {
	r := mrand.New(mrand.NewPCG(7, 8))
	x := newSmall(16, 64)
	x.posLimit = 400 << 20 // about 40 packs of up to 20 blobs
	want := map[chunk.Handle]Location{}
	packs := randomPacks(t, r, 200, 20)
	for i, p := range packs {
		x.Add(p.id, p.entries)
		for _, e := range p.entries {
			want[e.Handle] = wantLoc(p.id, e)
		}
		if i >= 3 { // keep at most 4 packs (80 MiB) alive
			gone := packs[i-3]
			x.RemovePacks(map[pack.ID]struct{}{gone.id: {}})
			for _, e := range gone.entries {
				delete(want, e.Handle)
			}
		}
	}
	checkAll(t, x, want)
	if x.next > x.posLimit {
		t.Fatalf("next position %d beyond the limit %d", x.next, x.posLimit)
	}
}

func TestConcurrentAddLookup(t *testing.T) {
	r := mrand.New(mrand.NewPCG(9, 10))
	x := newSmall(50, 200)
	packs := randomPacks(t, r, 200, 20)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < len(packs); i += 4 {
				p := packs[i]
				x.Add(p.id, p.entries)
				for _, e := range p.entries {
					if got, ok := x.Lookup(e.Handle); !ok || got != wantLoc(p.id, e) {
						t.Errorf("Lookup right after Add = %+v, %v", got, ok)
						return
					}
				}
				_ = x.Len()
				_ = x.Packs()
			}
		})
	}
	wg.Wait()
	want := map[chunk.Handle]Location{}
	for _, p := range packs {
		for _, e := range p.entries {
			want[e.Handle] = wantLoc(p.id, e)
		}
	}
	checkAll(t, x, want)
}
