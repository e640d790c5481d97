package snapshot

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/imagobackup/imago/chunk"
)

// TestPageViewShowsStoredPages decodes every level-0 page of a list built
// with a parent for display: the extents of each delta page's view, its
// runs applied to the view of its base, are exactly those of a page of the
// same list built without a parent, and full pages show their extents.
func TestPageViewShowsStoredPages(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 9))
	parentXs := imageExtents(rng, 3000)
	withParent, without := NewMemStore(), NewMemStore()
	pc, _, _ := buildWith(t, withParent, nil, parentXs)
	xs := mutate(rng, parentXs, 20)
	c, _, deltas := buildWith(t, withParent, NewContentReader(withParent, pc), xs)
	cFull, _, _ := buildWith(t, without, nil, xs)
	if deltas == 0 || c.Level == 0 {
		t.Fatalf("the list has %d delta pages at level %d: nothing to show", deltas, c.Level)
	}

	key := func(xs []Extent) string { return fmt.Sprint(xs) }
	full := map[string]bool{}
	for _, b := range levelZeroPages(t, without, cFull) {
		v, err := DecodePageView(b)
		if err != nil || v.Format != "page" || len(v.Extents) == 0 {
			t.Fatalf("full page: view %+v, %v", v, err)
		}
		full[key(v.Extents)] = true
	}
	shown := 0
	for id, b := range levelZeroPages(t, withParent, c) {
		if !IsPage(b) {
			t.Fatalf("page %v is not taken for a page", id.Short())
		}
		v, err := DecodePageView(b)
		if err != nil {
			t.Fatal(err)
		}
		xs := v.Extents
		if v.Format == "delta" {
			bb, err := withParent.LoadChunk(ctx, chunk.Handle{ID: *v.Base, Kind: chunk.KindTree}, nil)
			if err != nil {
				t.Fatal(err)
			}
			base, err := DecodePageView(bb)
			if err != nil || base.Format != "page" {
				t.Fatalf("base of %v: view %+v, %v", id.Short(), base, err)
			}
			xs = nil
			for _, r := range v.Runs {
				if len(r.Extents) > 0 {
					xs = append(xs, r.Extents...)
				} else {
					xs = append(xs, base.Extents[r.From:r.From+r.Keep]...)
				}
			}
			if uint64(len(xs)) != v.Count {
				t.Fatalf("delta page %v: runs give %d extents, count says %d", id.Short(), len(xs), v.Count)
			}
			shown++
		}
		if !full[key(xs)] {
			t.Fatalf("page %v (%s) shows extents that no page of the list has", id.Short(), v.Format)
		}
	}
	if shown == 0 {
		t.Fatal("no delta page shown")
	}

	tree, err := EncodeTree(&Tree{})
	if err != nil {
		t.Fatal(err)
	}
	if IsPage(tree) {
		t.Error("a directory tree is taken for a page")
	}
}
