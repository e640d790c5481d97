package chunk

import (
	"slices"
	"testing"
)

func TestGroupRepeats(t *testing.T) {
	a := Handle{ID: ID{1}, Kind: KindData}
	b := Handle{ID: ID{2}, Kind: KindData}
	c := Handle{ID: ID{1}, Kind: KindTree} // same ID as a, another kind
	hs := []Handle{a, b, a, c, a, b}
	r := GroupRepeats(hs)
	if !slices.Equal(r.Order, []int{0, 1, 3}) {
		t.Fatalf("first indices %v, want [0 1 3]", r.Order)
	}
	for _, first := range r.Order {
		var got []int
		_ = r.Each(first, func(i int) error { got = append(got, i); return nil })
		var want []int
		for i, h := range hs {
			if h == hs[first] {
				want = append(want, i)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("handle %v: indices %v, want %v", hs[first], got, want)
		}
	}
}
