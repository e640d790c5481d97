package archive_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/imagobackup/imago/snapshot"
)

// region is a run of content: data or hole.
type region struct {
	start, length uint64
	hole          bool
}

// regions merges a file's extents into alternating data and hole runs.
func regions(xs []snapshot.Extent) []region {
	var rs []region
	var off uint64
	for _, x := range xs {
		if n := len(rs); n > 0 && rs[n-1].hole == x.Hole() {
			rs[n-1].length += x.Length
		} else {
			rs = append(rs, region{start: off, length: x.Length, hole: x.Hole()})
		}
		off += x.Length
	}
	return rs
}

func TestSparseFile(t *testing.T) {
	const (
		size    = 32 << 20
		dataAt  = 8 << 20
		dataLen = 100 << 10 // a multiple of the 4 KiB block size
		tailLen = 64 << 10
	)
	dir := t.TempDir()
	p := filepath.Join(dir, "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	copy(want[dataAt:], randomBytes(3, dataLen))
	copy(want[size-tailLen:], randomBytes(4, tailLen))
	for _, off := range []int{dataAt, size - tailLen} {
		n := dataLen
		if off != dataAt {
			n = tailLen
		}
		if _, err := f.WriteAt(want[off:off+n], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	store := snapshot.NewMemStore()
	opts, _ := options()
	res := run(t, store, []string{p}, opts)
	n := mustFind(t, store, res.Tree, p)
	if n.Size != size || !bytes.Equal(content(t, store, n), want) {
		t.Fatalf("size %d, want %d with the same bytes", n.Size, size)
	}
	got := regions(extents(t, store, n))
	exp := []region{
		{0, dataAt, true},
		{dataAt, dataLen, false},
		{dataAt + dataLen, size - tailLen - dataAt - dataLen, true},
		{size - tailLen, tailLen, false},
	}
	if len(got) != len(exp) {
		t.Fatalf("regions %v, want %v", got, exp)
	}
	for i := range exp {
		if got[i] != exp[i] {
			t.Errorf("region %d = %+v, want %+v", i, got[i], exp[i])
		}
	}
	s := res.Summary
	if s.BytesRead != dataLen+tailLen || s.BytesSkippedHoles != size-dataLen-tailLen {
		t.Errorf("BytesRead %d, BytesSkippedHoles %d; want %d and %d: holes must not be read",
			s.BytesRead, s.BytesSkippedHoles, dataLen+tailLen, size-dataLen-tailLen)
	}
}

func TestZeroChunksAreHoles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "zeros")
	data := make([]byte, 768<<10) // written out, so the file has no holes
	copy(data[256<<10:], randomBytes(5, 50<<10))
	writeFile(t, p, data)

	store := snapshot.NewMemStore()
	opts, _ := options()
	res := run(t, store, []string{dir}, opts)
	n := mustFind(t, store, res.Tree, p)
	if !bytes.Equal(content(t, store, n), data) {
		t.Fatal("content differs")
	}
	var holes uint64
	var dataExtents uint64
	for _, x := range extents(t, store, n) {
		if x.Hole() {
			holes += x.Length
		} else {
			dataExtents++
		}
	}
	// Only the chunks around the random bytes may hold zeros; at most one
	// maximum-size chunk on each side.
	if min := uint64(len(data)-50<<10) - 2*uint64(testParams.Max); holes < min {
		t.Errorf("%d bytes of holes, want at least %d", holes, min)
	}
	if res.Summary.DataBlobs != dataExtents {
		t.Errorf("%d data blobs saved for %d data extents: zero chunks must not be saved", res.Summary.DataBlobs, dataExtents)
	}
	if res.Summary.BytesRead != uint64(len(data)) || res.Summary.BytesSkippedHoles != 0 {
		t.Errorf("BytesRead %d skipped %d, want the whole file read", res.Summary.BytesRead, res.Summary.BytesSkippedHoles)
	}
}

func TestDuplicateDataStoredOnce(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(6, 400<<10)
	writeFile(t, filepath.Join(dir, "one"), data)
	writeFile(t, filepath.Join(dir, "sub", "two"), data)
	writeFile(t, filepath.Join(dir, "other"), randomBytes(7, 100<<10))

	store := snapshot.NewMemStore()
	opts, _ := options()
	res := run(t, store, []string{dir}, opts)
	one := extents(t, store, mustFind(t, store, res.Tree, filepath.Join(dir, "one")))
	two := extents(t, store, mustFind(t, store, res.Tree, filepath.Join(dir, "sub", "two")))
	other := extents(t, store, mustFind(t, store, res.Tree, filepath.Join(dir, "other")))
	if len(one) != len(two) {
		t.Fatalf("copies have %d and %d extents", len(one), len(two))
	}
	for i := range one {
		if one[i] != two[i] {
			t.Fatalf("extent %d differs between the copies", i)
		}
	}
	if want := uint64(len(one) + len(other)); res.Summary.DataBlobs != want {
		t.Errorf("%d data blobs, want %d: the second copy must add nothing", res.Summary.DataBlobs, want)
	}
	if want := uint64(len(data)*2 + 100<<10); res.Summary.BytesRead != want {
		t.Errorf("BytesRead %d, want %d", res.Summary.BytesRead, want)
	}
}
