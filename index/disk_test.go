package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
)

// model is the reference an Index is compared with: a map and the packs in
// the order they were first added.
type model struct {
	blobs map[chunk.Handle]Location
	packs []pack.ID
	ends  map[pack.ID]uint32 // end of the blobs added with each pack
}

func newModel() *model {
	return &model{blobs: map[chunk.Handle]Location{}, ends: map[pack.ID]uint32{}}
}

func (m *model) add(id pack.ID, entries []pack.Entry) {
	if _, ok := m.ends[id]; !ok {
		m.packs = append(m.packs, id)
	}
	for _, e := range entries {
		if _, ok := m.blobs[e.Handle]; !ok {
			m.blobs[e.Handle] = wantLoc(id, e)
		}
		m.ends[id] = max(m.ends[id], e.Offset+e.Length)
	}
}

func (m *model) remove(set map[pack.ID]struct{}) {
	for h, l := range m.blobs {
		if _, ok := set[l.Pack]; ok {
			delete(m.blobs, h)
		}
	}
	m.packs = slices.DeleteFunc(m.packs, func(id pack.ID) bool { _, ok := set[id]; return ok })
	for id := range set {
		delete(m.ends, id)
	}
}

// check compares x with m, fully or only Len and a sample of lookups.
func (m *model) check(t *testing.T, x *Index, r *mrand.Rand, full bool) {
	t.Helper()
	if full {
		checkAll(t, x, m.blobs)
		if got := x.Packs(); !slices.Equal(got, m.packs) {
			t.Fatalf("Packs: %d packs, want %d", len(got), len(m.packs))
		}
	} else if x.Len() != len(m.blobs) {
		t.Fatalf("Len = %d, want %d", x.Len(), len(m.blobs))
	}
	n := 0
	for h, w := range m.blobs {
		if got, ok := x.Lookup(h); !ok || got != w {
			t.Fatalf("Lookup(%v) = %+v, %v; want %+v", h, got, ok, w)
		}
		if n++; n == 20 {
			break
		}
	}
	checkUnknown(t, x, r, 50)
}

// TestDiskEquivalence drives an Index of each kind through random adds,
// re-adds, removals and lookups with thresholds so low that it spills,
// compacts its positions and removes packs from disk runs many times, and
// compares every answer with a map.
func TestDiskEquivalence(t *testing.T) {
	for _, mode := range []string{"memory", "dir", "persisted", "opened without dir"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			r := mrand.New(mrand.NewPCG(21, 22))
			var x *Index
			if mode == "memory" {
				x = newSmall(64, 64)
			} else {
				x = newSmallInDir(dir)
			}
			x.posLimit = 1 << 30
			defer func() { _ = x.Close() }()
			m := newModel()
			var compactions, diskRemovals, maxRuns int
			const steps = 300
			for step := range steps {
				var p testPack
				switch {
				case len(m.packs) > 0 && r.IntN(10) == 0:
					// A second index file lists a pack again, with a
					// blob beyond the first ones.
					p.id = m.packs[r.IntN(len(m.packs))]
					extra := randomPacks(t, r, 1, 1)[0].entries[0]
					extra.Offset = m.ends[p.id]
					p.entries = []pack.Entry{extra}
				default:
					p = randomPacks(t, r, 1, 20)[0]
					if len(m.blobs) > 0 && r.IntN(4) == 0 {
						// A blob stored again in another pack keeps
						// its first location.
						for h := range m.blobs {
							p.entries[0].Handle = h
							break
						}
					}
				}
				before := x.next
				x.Add(p.id, p.entries)
				m.add(p.id, p.entries)
				if x.next < before {
					compactions++
				}
				runs := diskRuns(x)
				maxRuns = max(maxRuns, runs[0], runs[1])
				if step%40 == 39 {
					set := map[pack.ID]struct{}{}
					for _, id := range m.packs {
						if r.IntN(10) < 3 {
							set[id] = struct{}{}
						}
					}
					if runs[0]+runs[1] > 0 {
						diskRemovals++
					}
					x.RemovePacks(set)
					m.remove(set)
				}
				if step == steps/2 && mode != "memory" && mode != "dir" {
					path := filepath.Join(dir, "index")
					if err := x.Persist(path, []byte("tag")); err != nil {
						t.Fatal(err)
					}
					m.check(t, x, r, true)
					odir := dir
					if mode == "opened without dir" {
						odir = ""
					}
					y, tag, err := OpenFile(path, odir)
					if err != nil || string(tag) != "tag" {
						t.Fatalf("OpenFile = %q, %v", tag, err)
					}
					if err := x.Close(); err != nil {
						t.Fatal(err)
					}
					x = y
					shrink(x)
					x.posLimit = 1 << 30
				}
				m.check(t, x, r, step%20 == 0 || step == steps-1)
			}
			t.Logf("%d blobs, %d compactions, %d removals with disk runs, up to %d disk runs", len(m.blobs), compactions, diskRemovals, maxRuns)
			if compactions == 0 {
				t.Error("positions were never compacted")
			}
			if mode == "dir" || mode == "persisted" {
				if diskRemovals < 3 || maxRuns < 2 {
					t.Errorf("%d removals with disk runs, up to %d disk runs: the test does not exercise them", diskRemovals, maxRuns)
				}
			}
		})
	}
}

// persistTestIndex returns an Index of both kinds persisted to path, and its
// model.
func persistTestIndex(t *testing.T, path string, tag []byte) (*Index, *model) {
	t.Helper()
	r := mrand.New(mrand.NewPCG(23, 24))
	x := newSmallInDir(filepath.Dir(path))
	m := newModel()
	for _, p := range randomPacks(t, r, 40, 20) {
		x.Add(p.id, p.entries)
		m.add(p.id, p.entries)
	}
	if err := x.Persist(path, tag); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.Close() })
	return x, m
}

func TestPersistRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "index")
	tag := bytes.Repeat([]byte("pack-id-and-something"), 5000)
	x, m := persistTestIndex(t, path, tag)
	r := mrand.New(mrand.NewPCG(25, 26))
	m.check(t, x, r, true)

	y, gotTag, err := OpenFile(path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer y.Close()
	if !bytes.Equal(gotTag, tag) {
		t.Fatal("OpenFile returned another tag")
	}
	m.check(t, y, r, true)

	// x adds more and persists over the file that y maps.
	m2 := newModel()
	for _, id := range m.packs {
		m2.packs = append(m2.packs, id)
		m2.ends[id] = m.ends[id]
	}
	maps := func(dst, src map[chunk.Handle]Location) {
		for h, l := range src {
			dst[h] = l
		}
	}
	maps(m2.blobs, m.blobs)
	for _, p := range randomPacks(t, r, 30, 20) {
		x.Add(p.id, p.entries)
		m2.add(p.id, p.entries)
	}
	if err := x.Persist(path, []byte("second")); err != nil {
		t.Fatal(err)
	}
	m.check(t, y, r, true)
	m2.check(t, x, r, true)
	z, gotTag, err := OpenFile(path, dir)
	if err != nil || string(gotTag) != "second" {
		t.Fatalf("OpenFile = %q, %v", gotTag, err)
	}
	defer z.Close()
	m2.check(t, z, r, true)

	// y, opened without a directory, keeps additions and removals on the
	// heap, then persists elsewhere.
	shrink(y)
	for _, p := range randomPacks(t, r, 20, 20) {
		y.Add(p.id, p.entries)
		m.add(p.id, p.entries)
	}
	if runs := diskRuns(y); runs != [numKinds]int{1, 1} {
		t.Fatalf("an Index without a directory has %v disk runs", runs)
	}
	gone := map[pack.ID]struct{}{m.packs[0]: {}, m.packs[len(m.packs)-1]: {}}
	y.RemovePacks(gone)
	m.remove(gone)
	m.check(t, y, r, true)
	if runs := diskRuns(y); runs != [numKinds]int{} {
		t.Fatalf("RemovePacks without a directory left %v disk runs", runs)
	}
	other := filepath.Join(dir, "other")
	if err := y.Persist(other, nil); err != nil {
		t.Fatal(err)
	}
	m.check(t, y, r, true)
	w, gotTag, err := OpenFile(other, "")
	if err != nil || len(gotTag) != 0 {
		t.Fatalf("OpenFile = %q, %v", gotTag, err)
	}
	defer w.Close()
	m.check(t, w, r, true)
}

func TestPersistEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index")
	x := New()
	if err := x.Persist(path, nil); err != nil {
		t.Fatal(err)
	}
	y, tag, err := OpenFile(path, "")
	if err != nil || len(tag) != 0 || y.Len() != 0 || len(y.Packs()) != 0 {
		t.Fatalf("OpenFile of an empty index = %v, %q, %v", y, tag, err)
	}
	h := chunk.Handle{ID: chunk.ID{1}, Kind: chunk.KindData}
	y.Add(pack.ID{1}, []pack.Entry{{Handle: h, Length: 10}})
	if got, ok := y.Lookup(h); !ok || got != (Location{pack.ID{1}, 0, 10}) {
		t.Fatalf("Lookup after Add = %+v, %v", got, ok)
	}
	for range 2 {
		if err := y.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSpillFilesUnlinked checks that spills leave no files behind, and that
// a directory that vanishes only moves the records to the heap.
func TestSpillFilesUnlinked(t *testing.T) {
	dir := t.TempDir()
	r := mrand.New(mrand.NewPCG(27, 28))
	x := newSmallInDir(dir)
	m := newModel()
	files := func(want ...string) {
		t.Helper()
		des, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, de := range des {
			names = append(names, de.Name())
		}
		if !slices.Equal(names, want) {
			t.Fatalf("files in dir: %q, want %q", names, want)
		}
	}
	addSome := func() {
		for _, p := range randomPacks(t, r, 30, 20) {
			x.Add(p.id, p.entries)
			m.add(p.id, p.entries)
		}
	}
	addSome()
	if runs := diskRuns(x); runs[0] == 0 || runs[1] == 0 {
		t.Fatalf("no spill: %v disk runs", runs)
	}
	files()
	if err := x.Persist(filepath.Join(dir, "index"), nil); err != nil {
		t.Fatal(err)
	}
	addSome()
	gone := map[pack.ID]struct{}{m.packs[3]: {}}
	x.RemovePacks(gone)
	m.remove(gone)
	files("index")
	m.check(t, x, r, true)

	// Without the directory, spills and removals keep the records on the
	// heap; the mappings stay valid.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	addSome()
	gone = map[pack.ID]struct{}{m.packs[5]: {}}
	x.RemovePacks(gone)
	m.remove(gone)
	m.check(t, x, r, true)
	if runs := diskRuns(x); runs != [numKinds]int{} {
		t.Fatalf("%v disk runs left after a failed rebuild", runs)
	}
	for range 2 {
		if err := x.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := New().Close(); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentAddLookupInDir(t *testing.T) {
	r := mrand.New(mrand.NewPCG(29, 30))
	x := newSmallInDir(t.TempDir())
	defer x.Close()
	packs := randomPacks(t, r, 120, 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			x.Each(func(chunk.Handle, Location) bool { return i%2 == 0 })
			_ = x.Len()
		}
	}()
	m := newModel()
	for i, p := range packs {
		x.Add(p.id, p.entries)
		m.add(p.id, p.entries)
		if i%40 == 39 {
			set := map[pack.ID]struct{}{packs[i-20].id: {}}
			x.RemovePacks(set)
			m.remove(set)
		}
		for _, e := range p.entries {
			if _, ok := x.Lookup(e.Handle); !ok {
				t.Fatalf("Lookup right after Add missed %v", e.Handle)
			}
		}
	}
	done <- struct{}{}
	<-done
	m.check(t, x, r, true)
}

// TestOpenFileRejects damages a valid file in every checked place: OpenFile
// must refuse it with ErrBadFile, never panic.
func TestOpenFileRejects(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "index")
	persistTestIndex(t, path, []byte("the tag"))
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	metaOff := int(le.Uint64(good[40:]))
	segCount := int(le.Uint64(good[24:]))
	starts := metaOff + segCount*segmentSize
	// reseal recomputes the checksum, so that the checks behind it are
	// reached.
	reseal := func(b []byte) []byte {
		mo := int(le.Uint64(b[40:]))
		s := blake3.New()
		s.Write(b[:headerSize])
		s.Write(b[mo : len(b)-checksumSize])
		copy(b[len(b)-checksumSize:], s.Sum(nil))
		return b
	}
	mod := func(f func(b []byte)) []byte { b := bytes.Clone(good); f(b); return b }
	flip := func(off int) []byte { return mod(func(b []byte) { b[off] ^= 0x10 }) }
	put64 := func(off int, v uint64) []byte {
		return reseal(mod(func(b []byte) { le.PutUint64(b[off:], v) }))
	}
	put32 := func(off int, v uint32) []byte {
		return reseal(mod(func(b []byte) { le.PutUint32(b[off:], v) }))
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "shorter"},
		{"truncated header", good[:100], "shorter"},
		{"truncated", good[:len(good)-1], "does not end at its checksum"},
		{"trailing byte", append(bytes.Clone(good), 0), "does not end at its checksum"},
		{"wrong magic", flip(0), "magic"},
		{"wrong version", mod(func(b []byte) { b[8] = 2 }), "unknown version"},
		{"reserved field", mod(func(b []byte) { b[12] = 1 }), "reserved"},
		{"flipped next", flip(16), "checksum"},
		{"flipped count", flip(48), ""},
		{"flipped segment", flip(metaOff + 40), "checksum"},
		{"flipped bucket table", flip(starts + 4000), "checksum"},
		{"flipped tag", flip(len(good) - checksumSize - 2), "checksum"},
		{"flipped checksum", flip(len(good) - 1), "checksum"},
		{"huge segment count", put64(24, 1<<62), "beyond the file size"},
		{"huge record count", put64(48, 1<<62), "beyond the file size"},
		{"unaligned section", put64(56, 4097), "unaligned"},
		{"overlapping sections", put64(80, 4096), "tag section out of place"},
		{"meta inside records", put64(40, 4096), "out of place"},
		{"next beyond 2^48", put64(16, 1<<48+1), "beyond 2^48"},
		{"segment beyond next", put64(16, 1), "ends beyond"},
		{"empty segment", put64(metaOff+pack.IDSize+8, 0), "is empty"},
		{"overlapping segments", put64(metaOff+segmentSize+pack.IDSize, 0), "overlaps"},
		{"bucket table decreases", put32(starts+4*1000, 1<<30), "decreases"},
		{"bucket table starts late", put32(starts, 1), "decreases"},
		{"bucket table ends elsewhere", put32(starts+4*numBuckets, 1<<30), "ends at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "bad")
			if err := os.WriteFile(p, tc.b, 0o600); err != nil {
				t.Fatal(err)
			}
			x, _, err := OpenFile(p, "")
			if !errors.Is(err, ErrBadFile) {
				t.Fatalf("OpenFile = %v, %v; want ErrBadFile", x, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	if _, _, err := OpenFile(filepath.Join(dir, "missing"), ""); err == nil || errors.Is(err, ErrBadFile) {
		t.Errorf("OpenFile of a missing file = %v", err)
	}
}

// TestDamagedRecords flips bytes of the tag and record sections, which the
// checksum leaves out: lookups may miss or return another location, but
// never panic.
func TestDamagedRecords(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "index")
	_, m := persistTestIndex(t, path, nil)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := mrand.New(mrand.NewPCG(31, 32))
	metaOff := int(binary.LittleEndian.Uint64(good[40:]))
	for range 20 {
		b := bytes.Clone(good)
		for range 50 {
			b[pageSize+r.IntN(metaOff-pageSize)] = byte(r.Uint32())
		}
		p := filepath.Join(dir, "damaged")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		x, _, err := OpenFile(p, dir)
		if err != nil {
			t.Fatal(err)
		}
		for h := range m.blobs {
			x.Lookup(h)
		}
		x.Each(func(chunk.Handle, Location) bool { return true })
		x.RemovePacks(map[pack.ID]struct{}{m.packs[0]: {}})
		if err := x.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzOpenFile(f *testing.F) {
	dir := f.TempDir()
	x := New()
	for _, p := range randomPacks(f, mrand.New(mrand.NewPCG(33, 34)), 3, 4) {
		x.Add(p.id, p.entries)
	}
	path := filepath.Join(dir, "index")
	if err := x.Persist(path, []byte("tag")); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "index")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		x, _, err := OpenFile(p, "")
		if err != nil {
			if !errors.Is(err, ErrBadFile) {
				t.Fatalf("OpenFile = %v, not ErrBadFile", err)
			}
			return
		}
		defer x.Close()
		x.Each(func(h chunk.Handle, _ Location) bool { return true })
		x.Has(chunk.Handle{ID: chunk.ID{1}, Kind: chunk.KindData})
		x.RemovePacks(map[pack.ID]struct{}{{1}: {}})
	})
}
