package index

import (
	"crypto/rand"
	mrand "math/rand/v2"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
)

// testPack is a pack with random blobs that tile it, as a pack.Writer makes.
type testPack struct {
	id      pack.ID
	entries []pack.Entry
}

// randomPacks returns n packs of 1..maxBlobs random blobs each, both kinds.
func randomPacks(tb testing.TB, r *mrand.Rand, n, maxBlobs int) []testPack {
	tb.Helper()
	packs := make([]testPack, n)
	for i := range packs {
		p := &packs[i]
		fillRandom(tb, p.id[:])
		var off uint32
		for range 1 + r.IntN(maxBlobs) {
			e := pack.Entry{Offset: off, Length: 41 + uint32(r.IntN(1<<20)), Codec: pack.CodecNone}
			e.RawLength = e.Length - 41
			e.Handle.Kind = chunk.Kind(1 + r.IntN(2))
			fillRandom(tb, e.Handle.ID[:])
			off += e.Length
			p.entries = append(p.entries, e)
		}
	}
	return packs
}

func fillRandom(tb testing.TB, b []byte) {
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
}

// newSmall returns an Index with tiny merge thresholds, so that a few
// thousand blobs go through every kind of merge.
func newSmall(recentMax, midMinMax int) *Index {
	x := New()
	x.recentMax, x.midMinMax = recentMax, midMinMax
	return x
}

// wantLoc is the location Lookup must return for e in p.
func wantLoc(p pack.ID, e pack.Entry) Location {
	return Location{Pack: p, Offset: e.Offset, Length: e.Length}
}

// newSmallInDir returns an Index that spills to dir with tiny thresholds,
// so that a few thousand blobs make several disk runs.
func newSmallInDir(dir string) *Index {
	x := NewInDir(dir)
	shrink(x)
	return x
}

// shrink lowers the thresholds of x as newSmallInDir does.
func shrink(x *Index) {
	x.recentMax, x.midMinMax = 64, 64
	x.spillMin, x.spillRatio = 60, 2
}

// diskRuns returns the number of disk runs of each kind of x.
func diskRuns(x *Index) (n [numKinds]int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for k := range numKinds {
		n[k] = len(x.disk[k])
	}
	return n
}

// checkUnknown fails if x finds any of n random handles.
func checkUnknown(t *testing.T, x *Index, r *mrand.Rand, n int) {
	t.Helper()
	for range n {
		var h chunk.Handle
		fillRandom(t, h.ID[:])
		h.Kind = chunk.Kind(1 + r.IntN(2))
		if _, ok := x.Lookup(h); ok || x.Has(h) {
			t.Fatalf("unknown blob %v found", h)
		}
	}
}
