package blockdev

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// baseImage writes the parent image of the guided tests to path: random
// data, unallocated holes, allocated zeros, a low-entropy run (cut at the
// maximum size) and an unaligned tail, 3 MiB + 12345 bytes in all.
func baseImage(t testing.TB, path string) {
	t.Helper()
	const size = 3*miB + 12345
	truncate(t, path, size)
	writeAt(t, path, 0, randomBytes(1, 600*kiB))
	// Data that ends with less than a chunker window of zeros, then a
	// hole in [600K, 700K).
	writeAt(t, path, 600*kiB-40, make([]byte, 40))
	writeAt(t, path, 700*kiB, randomBytes(2, 300*kiB))
	writeAt(t, path, 1000*kiB, make([]byte, 200*kiB)) // allocated zeros
	writeAt(t, path, 1200*kiB, bytes.Repeat([]byte("imago!"), 200*kiB/6))
	writeAt(t, path, 1400*kiB, randomBytes(3, 600*kiB))
	// [2000K, 2600K) stays a hole.
	writeAt(t, path, 2600*kiB, randomBytes(4, size-2600*kiB))
}

// mutation changes the image at path; parent lists the parent's extents.
type mutation func(t testing.TB, path string, parent []extentAt)

func punchHole(t testing.TB, path string, off, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		t.Skipf("punch hole: %v", err)
	}
}

// randomWrites makes n writes of 1 to 300 bytes (a fifth of them zeros) at
// random offsets.
func randomWrites(seed uint64, n int) mutation {
	return func(t testing.TB, path string, _ []extentAt) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(seed, 7))
		for i := range n {
			b := randomBytes(seed*1000+uint64(i), 1+r.IntN(300))
			if r.IntN(5) == 0 {
				clear(b)
			}
			writeAt(t, path, r.Int64N(fi.Size()-int64(len(b))), b)
		}
	}
}

var mutations = []struct {
	name string
	fn   mutation
}{
	{"unchanged", func(testing.TB, string, []extentAt) {}},
	{"segment edge", func(t testing.TB, p string, _ []extentAt) {
		writeAt(t, p, 2*testSegment-50, randomBytes(10, 100))
	}},
	{"first byte of segment", func(t testing.TB, p string, _ []extentAt) {
		writeAt(t, p, testSegment, []byte{0x5a})
	}},
	{"chunk edges", func(t testing.TB, p string, parent []extentAt) {
		// Flip the bytes on both sides of a few data extent boundaries.
		n := 0
		for i := 1; i < len(parent) && n < 4; i += 9 {
			if !parent[i].Hole() && !parent[i-1].Hole() {
				writeAt(t, p, int64(parent[i].start)-1, randomBytes(uint64(i), 2))
				n++
			}
		}
		if n == 0 {
			t.Fatal("no data extent boundaries in the parent")
		}
	}},
	{"last byte of chunk", func(t testing.TB, p string, parent []extentAt) {
		e := parent[3]
		writeAt(t, p, int64(e.start+e.Length)-1, []byte{0xa5})
	}},
	{"data in hole", func(t testing.TB, p string, _ []extentAt) {
		writeAt(t, p, 2200*kiB, randomBytes(11, 5000))
	}},
	{"data at hole start", func(t testing.TB, p string, _ []extentAt) {
		writeAt(t, p, 600*kiB, randomBytes(12, 4096))
	}},
	{"hole punched in data", func(t testing.TB, p string, _ []extentAt) {
		punchHole(t, p, 300*kiB, 100*kiB)
	}},
	{"data zeroed", func(t testing.TB, p string, _ []extentAt) {
		writeAt(t, p, 1500*kiB+123, make([]byte, 40*kiB))
	}},
	{"zeros allocated in hole", func(t testing.TB, p string, _ []extentAt) {
		writeAt(t, p, 620*kiB, make([]byte, 40*kiB))
	}},
	{"zeros become data", func(t testing.TB, p string, _ []extentAt) {
		writeAt(t, p, 1100*kiB, randomBytes(13, 10))
	}},
	{"insertion shifts the rest", func(t testing.TB, p string, _ []extentAt) {
		b := readFile(t, p)
		ins := append(append(append([]byte(nil), b[:800*kiB]...), randomBytes(14, 77)...), b[800*kiB:]...)
		writeAt(t, p, 0, ins)
	}},
	{"grown with data", func(t testing.TB, p string, _ []extentAt) {
		fi, _ := os.Stat(p)
		writeAt(t, p, fi.Size(), randomBytes(15, 700*kiB))
	}},
	{"grown with a hole", func(t testing.TB, p string, _ []extentAt) {
		truncate(t, p, 5*miB+3)
	}},
	{"shrunk mid chunk", func(t testing.TB, p string, _ []extentAt) {
		truncate(t, p, 1900*kiB+777)
	}},
	{"shrunk to a segment edge", func(t testing.TB, p string, _ []extentAt) {
		truncate(t, p, 4*testSegment)
	}},
	{"random writes seed 1", randomWrites(1, 20)},
	{"random writes seed 2", randomWrites(2, 20)},
	{"random writes seed 3", randomWrites(3, 60)},
	{"random writes seed 4", randomWrites(4, 5)},
}

// TestGuidedEqualsFull checks the central promise of parent-guided
// re-chunking: with a parent, Backup gives exactly the content list (same
// extents, same IDs, pages cut in the same places; level-0 pages may be
// stored as delta pages of the parent's) that a run without parent gives,
// wherever the image changed, and reads it back byte for byte.
func TestGuidedEqualsFull(t *testing.T) {
	opts := BackupOptions{Params: testParams, SegmentSize: testSegment, Workers: 3}
	g := newGuidedBase(t, opts)
	m, parent, streamParent := g.m, g.parent, g.streamParent

	for _, mu := range mutations {
		t.Run(mu.name, func(t *testing.T) {
			path, want := g.mutated(t, mu.fn)

			full := backupPath(t, path, m, opts)
			guidedOpts := opts
			guidedOpts.Parent, guidedOpts.ParentLoader = &parent.Content, m
			guided := backupPath(t, path, m, guidedOpts)
			checkSame(t, m, full, guided)
			checkReadsBack(t, m, guided, want)
			if guided.BytesReused == 0 {
				t.Errorf("nothing reused from the parent")
			}
			t.Logf("size %d: reused %d, chunked %d (full run: %d)", guided.Size, guided.BytesReused, guided.BytesChunked, full.BytesChunked)

			// The same image read as a stream has no holes: a different
			// content list, but guided and full runs still agree.
			fullStream := backupStream(t, path, m, opts)
			guidedStream := backupStream(t, path, m, guidedOpts)
			checkSame(t, m, fullStream, guidedStream)
			if guidedStream.Digest != guided.Digest {
				t.Errorf("stream digest %s, file digest %s", guidedStream.Digest, guided.Digest)
			}
			guidedOpts.Parent = &streamParent.Content
			checkSame(t, m, full, backupPath(t, path, m, guidedOpts))
		})
	}
}

// guidedBase is the parent image of the guided tests, backed up as a file
// and as a stream (which has no holes, so it guides the file with cuts in
// other places than the file's own), with the file's extents for the
// mutations.
type guidedBase struct {
	path                 string
	m                    *snapshot.MemStore
	parent, streamParent *BackupResult
	extents              []extentAt
}

func newGuidedBase(t *testing.T, opts BackupOptions) guidedBase {
	t.Helper()
	g := guidedBase{path: t.TempDir() + "/parent.img", m: snapshot.NewMemStore()}
	baseImage(t, g.path)
	g.parent = backupPath(t, g.path, g.m, opts)
	g.extents = listExtents(t, g.m, g.parent.Content)
	g.streamParent = backupStream(t, g.path, g.m, opts)
	return g
}

// mutated returns a copy of the parent image changed by fn, and its bytes.
func (g guidedBase) mutated(t *testing.T, fn mutation) (path string, data []byte) {
	t.Helper()
	path = copyFile(t, g.path, t.TempDir())
	fn(t, path, g.extents)
	return path, readFile(t, path)
}

// randomImage writes a random image of about 1.5 MiB to path: pieces of
// random data, holes, allocated zeros and a repeated pattern of random
// lengths, some not 4 KiB aligned.
func randomImage(t testing.TB, path string, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 11))
	var off int64
	for i := 0; off < 1536*kiB; i++ {
		n := 1 + r.Int64N(120*kiB)
		switch r.IntN(4) {
		case 0:
			writeAt(t, path, off, randomBytes(seed<<8|uint64(i), int(n)))
		case 1:
			writeAt(t, path, off, make([]byte, n))
		case 2:
			writeAt(t, path, off, bytes.Repeat([]byte{byte(i)}, int(n)))
		case 3:
			// A hole: nothing written, the file extended below.
		}
		off += n
	}
	truncate(t, path, off)
}

// TestGuidedEqualsFullRandomImages is the property test: on random images
// with random changes (writes, zeroed and punched ranges, a new length),
// guided and full runs agree, read as files and as streams.
func TestGuidedEqualsFullRandomImages(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		dir := t.TempDir()
		path := dir + "/disk.img"
		randomImage(t, path, seed)
		m := snapshot.NewMemStore()
		opts := BackupOptions{Params: testParams, SegmentSize: testSegment, Workers: 2}
		parent := backupPath(t, path, m, opts)

		r := rand.New(rand.NewPCG(seed, 12))
		fi, _ := os.Stat(path)
		size := fi.Size()
		for i := range 10 {
			off, n := r.Int64N(size), 1+r.Int64N(40*kiB)
			switch r.IntN(3) {
			case 0:
				writeAt(t, path, off, randomBytes(seed<<16|uint64(i), int(n)))
			case 1:
				writeAt(t, path, off, make([]byte, n))
			case 2:
				punchHole(t, path, off&^(4*kiB-1), n)
			}
		}
		truncate(t, path, size+r.Int64N(300*kiB)-150*kiB)

		guidedOpts := opts
		guidedOpts.Parent, guidedOpts.ParentLoader = &parent.Content, m
		full := backupPath(t, path, m, opts)
		guided := backupPath(t, path, m, guidedOpts)
		checkSame(t, m, full, guided)
		if got := dump(t, m, guided.Content); !bytes.Equal(got, readFile(t, path)) {
			t.Fatalf("seed %d: guided image reads back differently", seed)
		}
		checkSame(t, m, backupStream(t, path, m, opts), backupStream(t, path, m, guidedOpts))
		t.Logf("seed %d: size %d, reused %d, chunked %d", seed, guided.Size, guided.BytesReused, guided.BytesChunked)
	}
}

// TestGuidedUnchangedSkipsChunker checks that an unchanged image is matched
// by hash alone: the chunker never runs, no data blob is saved and the
// content list adds no page.
func TestGuidedUnchangedSkipsChunker(t *testing.T) {
	path := t.TempDir() + "/disk.img"
	baseImage(t, path)
	m := snapshot.NewMemStore()
	opts := BackupOptions{Params: testParams, SegmentSize: testSegment}
	parent := backupPath(t, path, m, opts)
	opts.Parent, opts.ParentLoader = &parent.Content, m
	blobs := m.Len()
	res := backupPath(t, path, m, opts)

	if res.BytesChunked != 0 || res.DataBlobs != 0 {
		t.Errorf("unchanged image: chunker ran over %d bytes, %d data blobs saved again", res.BytesChunked, res.DataBlobs)
	}
	if res.BytesReused+res.BytesZero+res.BytesHoles != res.Size {
		t.Errorf("reused %d + zeros %d + holes %d bytes of %d", res.BytesReused, res.BytesZero, res.BytesHoles, res.Size)
	}
	if added := m.Len() - blobs; added != 0 || res.TreeAdded != 0 {
		t.Errorf("unchanged image added %d blobs (%d bytes of pages)", added, res.TreeAdded)
	}
	if !reflect.DeepEqual(res.Content, parent.Content) {
		t.Errorf("unchanged image has a different content root")
	}
}

// TestWorkersDoNotChangeResult checks that the content list is the same
// for any number of workers, with and without a parent.
func TestWorkersDoNotChangeResult(t *testing.T) {
	path := t.TempDir() + "/disk.img"
	baseImage(t, path)
	m := snapshot.NewMemStore()
	opts := BackupOptions{Params: testParams, SegmentSize: testSegment, Workers: 1}
	one := backupPath(t, path, m, opts)
	randomWrites(9, 30)(t, path, nil)
	for _, workers := range []int{1, 2, 7} {
		opts.Workers = workers
		opts.Parent, opts.ParentLoader = nil, nil
		full := backupPath(t, path, m, opts)
		opts.Parent, opts.ParentLoader = &one.Content, m
		guided := backupPath(t, path, m, opts)
		checkSame(t, m, full, guided)
		if workers == 1 {
			one = full
			continue
		}
		checkSame(t, m, one, full)
		if !reflect.DeepEqual(one.Content, full.Content) {
			t.Fatalf("%d workers: a different content root", workers)
		}
	}
}

// backupStream backs up the file at path read as a stream.
func backupStream(t testing.TB, path string, m *snapshot.MemStore, opts BackupOptions) *BackupResult {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := Backup(context.Background(), OpenReader(f, "stdin"), m, storeHasher{m}, opts)
	if err != nil {
		t.Fatalf("backup stream %s: %v", path, err)
	}
	return res
}

// checkSame fails unless a and b describe the same image with the same
// content list.
func checkSame(t testing.TB, m *snapshot.MemStore, a, b *BackupResult) {
	t.Helper()
	if a.Size != b.Size || a.Digest != b.Digest {
		t.Fatalf("size/digest %d/%s differ from %d/%s", b.Size, b.Digest[:8], a.Size, a.Digest[:8])
	}
	ea, eb := listExtents(t, m, a.Content), listExtents(t, m, b.Content)
	for i := range min(len(ea), len(eb)) {
		if ea[i] != eb[i] {
			t.Fatalf("extent %d differs: %+v, want %+v", i, eb[i], ea[i])
		}
	}
	if len(ea) != len(eb) {
		t.Fatalf("%d extents, want %d", len(eb), len(ea))
	}
	// A parent changes how level-0 pages are stored (delta pages), so
	// page IDs may differ; where the pages are cut may not.
	ca, cb := a.Content, b.Content
	if ca.Level != cb.Level || !reflect.DeepEqual(ca.Extents, cb.Extents) || len(ca.Pages) != len(cb.Pages) {
		t.Fatalf("same extents but differently shaped content roots")
	}
	for i := range ca.Pages {
		if ca.Pages[i].Length != cb.Pages[i].Length || ca.Pages[i].Count != cb.Pages[i].Count {
			t.Fatalf("same extents but page %d of the root cut differently", i)
		}
	}
	if ca.Level <= 1 && !reflect.DeepEqual(ca, cb) && deltaPages(t, m, cb) == 0 && deltaPages(t, m, ca) == 0 {
		t.Fatalf("same extents but different content roots without delta pages")
	}
}

// deltaPages counts the delta pages (format byte 0x03) a content root of
// level 1 refers to.
func deltaPages(t testing.TB, m *snapshot.MemStore, c snapshot.Content) int {
	t.Helper()
	if c.Level != 1 {
		return 0
	}
	n := 0
	for _, p := range c.Pages {
		b, err := m.LoadChunk(context.Background(), chunk.Handle{ID: p.ID, Kind: chunk.KindTree}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b[0] == 0x03 {
			n++
		}
	}
	return n
}

// TestZeroWindowCuts checks the splitter property both zero shortcuts rely
// on, for image and test parameters and several polynomials.
func TestZeroWindowCuts(t *testing.T) {
	for _, pol := range []uint64{testPol, 0x2793634EFC8BC7} {
		for _, p := range []chunk.Params{testParams, imageParams, {Min: 64, Max: 1024, AverageBits: 6}} {
			p.Polynomial = pol
			ok, err := zeroWindowCuts(p)
			if err != nil || !ok {
				t.Errorf("params %+v: zero windows do not cut (%v)", p, err)
			}
		}
	}
}
