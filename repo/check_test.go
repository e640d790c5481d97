package repo

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/faulty"
	"github.com/imagobackup/imago/repo/backend/mem"
)

// checkFixture is a repository of many small packs, with the blobs in it.
type checkFixture struct {
	mem   *mem.Backend
	fault *faulty.Backend
	r     *Repository
	data  []chunk.Handle // data blobs, 3 KiB of random bytes each
	trees []chunk.Handle
}

// newCheckFixture saves 24 data blobs and 4 tree blobs into 4 KiB packs
// (one data blob per pack, so a damaged pack loses exactly one blob).
func newCheckFixture(t *testing.T) *checkFixture {
	t.Helper()
	ctx := context.Background()
	f := &checkFixture{mem: mem.New()}
	f.fault = faulty.New(f.mem)
	f.r = TestRepositoryWithBackend(t, f.fault, TestPackSize(MinPackSize))
	for i := range 24 {
		id, _, err := f.r.SaveChunk(ctx, chunk.KindData, randomBytes(uint64(i), 5<<10))
		if err != nil {
			t.Fatal(err)
		}
		f.data = append(f.data, chunk.Handle{ID: id, Kind: chunk.KindData})
	}
	for i := range 4 {
		id, _, err := f.r.SaveChunk(ctx, chunk.KindTree, []byte(fmt.Sprintf("tree %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		f.trees = append(f.trees, chunk.Handle{ID: id, Kind: chunk.KindTree})
	}
	mustFlush(t, f.r)
	return f
}

// reopen opens the fixture's repository again without loading the index,
// as the check command does.
func (f *checkFixture) reopen(t *testing.T) *Repository {
	t.Helper()
	r, err := Open(context.Background(), f.fault, TestPassword, OpenOptions{NoIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// usedAll returns a Used walker: snapshot "snapA…" uses the first half of
// the blobs and extra, "snapB…" the second half.
func (f *checkFixture) usedAll(extra ...chunk.Handle) func(context.Context, *UsedSet) error {
	all := append(slices.Clone(f.trees), f.data...)
	return func(_ context.Context, u *UsedSet) error {
		for i, h := range all {
			snap := "aaaaaaaa00"
			if i >= len(all)/2 {
				snap = "bbbbbbbb00"
			}
			u.Mark(snap, h)
		}
		for _, h := range extra {
			u.Mark("aaaaaaaa00", h)
		}
		return nil
	}
}

// packOf returns the pack that holds h.
func (f *checkFixture) packOf(t *testing.T, h chunk.Handle) pack.ID {
	t.Helper()
	loc, ok := f.r.Lookup(h)
	if !ok {
		t.Fatalf("blob %v not indexed", h)
	}
	return loc.Pack
}

func packHandle(id pack.ID) backend.Handle {
	return backend.Handle{Type: backend.Pack, Name: id.String()}
}

// modifyPack replaces the stored bytes of pack id with change(bytes).
func (f *checkFixture) modifyPack(t *testing.T, id pack.ID, change func([]byte) []byte) {
	t.Helper()
	b, ok := f.mem.Raw(packHandle(id))
	if !ok {
		t.Fatalf("pack %v not stored", id.Short())
	}
	f.mem.SetRaw(packHandle(id), change(b))
}

func runCheck(t *testing.T, r *Repository, opts CheckOptions) *CheckReport {
	t.Helper()
	rep, err := Check(context.Background(), r, opts)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return rep
}

// wantErrors fails unless the report has exactly n errors and, for each
// group of parts, one error line containing all of them.
func wantErrors(t *testing.T, rep *CheckReport, n int, lines ...[]string) {
	t.Helper()
	if len(rep.Errors) != n {
		t.Errorf("got %d errors, want %d:\n%s", len(rep.Errors), n, strings.Join(rep.Errors, "\n"))
	}
	for _, parts := range lines {
		found := false
		for _, e := range rep.Errors {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(e, p)
			}
			found = found || ok
		}
		if !found {
			t.Errorf("no error mentions all of %q; errors:\n%s", parts, strings.Join(rep.Errors, "\n"))
		}
	}
}

func TestCheckCleanRepository(t *testing.T) {
	f := newCheckFixture(t)
	for _, readData := range []bool{false, true} {
		t.Run(fmt.Sprintf("readData=%v", readData), func(t *testing.T) {
			r := f.reopen(t)
			rep := runCheck(t, r, CheckOptions{ReadData: readData, Used: f.usedAll()})
			if !rep.OK() || len(rep.Warnings) != 0 {
				t.Fatalf("clean repository: errors %q, warnings %q", rep.Errors, rep.Warnings)
			}
			blobs := len(f.data) + len(f.trees)
			if rep.Blobs != blobs || rep.UsedBlobs != blobs || rep.Snapshots != 2 || rep.IndexFiles != 1 {
				t.Errorf("report counts %+v, want %d blobs all used by 2 snapshots, 1 index file", rep, blobs)
			}
			if rep.Packs < len(f.data) {
				t.Errorf("report lists %d packs, want at least %d", rep.Packs, len(f.data))
			}
			if wantRead := map[bool]int{false: 0, true: rep.Packs}[readData]; rep.PacksRead != wantRead {
				t.Errorf("read %d packs whole, want %d", rep.PacksRead, wantRead)
			}
			// Check loaded the index, so r can read blobs.
			if _, err := r.LoadChunk(context.Background(), f.data[3], nil); err != nil {
				t.Errorf("LoadChunk after Check: %v", err)
			}
		})
	}
}

func TestCheckFindsDamage(t *testing.T) {
	cases := []struct {
		name string
		// damage changes the fixture and returns the damaged pack and
		// the parts each expected error line contains.
		damage func(t *testing.T, f *checkFixture) (pack.ID, [][]string)
		// structural is whether the check without ReadData sees it.
		structural bool
		// blobDamage is whether the damaged blob is named.
		blobDamage bool
	}{
		{
			name: "deleted pack",
			damage: func(t *testing.T, f *checkFixture) (pack.ID, [][]string) {
				id := f.packOf(t, f.data[5])
				if err := f.mem.Remove(context.Background(), packHandle(id)); err != nil {
					t.Fatal(err)
				}
				return id, [][]string{{"pack " + id.Short(), "missing"}, {"snapshot aaaaaaaa", "uses 1 blob of damaged pack " + id.Short()}}
			},
			structural: true,
		},
		{
			name: "truncated pack",
			damage: func(t *testing.T, f *checkFixture) (pack.ID, [][]string) {
				id := f.packOf(t, f.data[20])
				var size int
				f.modifyPack(t, id, func(b []byte) []byte { size = len(b); return b[:len(b)-100] })
				return id, [][]string{{"pack " + id.Short(), fmt.Sprintf("size %d != %d", size-100, size)}, {"snapshot bbbbbbbb", id.Short()}}
			},
			structural: true,
		},
		{
			name: "flipped byte in a blob",
			damage: func(t *testing.T, f *checkFixture) (pack.ID, [][]string) {
				h := f.data[7]
				id := f.packOf(t, h)
				loc, _ := f.r.Lookup(h)
				f.modifyPack(t, id, func(b []byte) []byte { b[loc.Offset+100] ^= 0x40; return b })
				return id, [][]string{
					{"pack " + id.Short(), "content hashes to"},
					{"pack " + id.Short(), "data blob " + h.ID.Short()},
					{"snapshot aaaaaaaa", "uses 1 blob of damaged pack " + id.Short()},
				}
			},
			blobDamage: true,
		},
		{
			name: "flipped byte in a header",
			damage: func(t *testing.T, f *checkFixture) (pack.ID, [][]string) {
				id := f.packOf(t, f.data[9])
				f.modifyPack(t, id, func(b []byte) []byte { b[len(b)-10] ^= 1; return b })
				return id, [][]string{{"pack " + id.Short(), "header"}, {"snapshot aaaaaaaa", id.Short()}}
			},
			structural: true,
		},
	}
	for _, c := range cases {
		for _, readData := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/readData=%v", c.name, readData), func(t *testing.T) {
				f := newCheckFixture(t)
				id, lines := c.damage(t, f)
				rep := runCheck(t, f.reopen(t), CheckOptions{ReadData: readData, Used: f.usedAll()})
				t.Logf("errors:\n%s", strings.Join(rep.Errors, "\n"))
				if !c.structural && !readData {
					if !rep.OK() {
						t.Fatalf("structure check reports %q; the damage is only visible to a data check", rep.Errors)
					}
					return
				}
				if rep.OK() {
					t.Fatal("check found no damage")
				}
				if !slices.Contains(rep.DamagedPacks, id) || len(rep.DamagedPacks) != 1 {
					t.Errorf("damaged packs %v, want only %v", rep.DamagedPacks, id.Short())
				}
				if c.blobDamage && len(rep.DamagedBlobs) != 1 {
					t.Errorf("damaged blobs %v, want exactly one", rep.DamagedBlobs)
				}
				if len(rep.DamagedSnapshots) != 1 {
					t.Errorf("damaged snapshots %v, want the one using the pack", rep.DamagedSnapshots)
				}
				for _, parts := range lines {
					wantErrors(t, rep, len(rep.Errors), parts)
				}
			})
		}
	}
}

func TestCheckMissingIndexEntry(t *testing.T) {
	f := newCheckFixture(t)
	ghost := chunk.Handle{ID: chunk.ID{1, 2, 3, 4}, Kind: chunk.KindTree}
	rep := runCheck(t, f.reopen(t), CheckOptions{Used: f.usedAll(ghost)})
	wantErrors(t, rep, 1, []string{"snapshot aaaaaaaa: tree 01020304 missing from index"})
	if !slices.Equal(rep.MissingBlobs, []chunk.Handle{ghost}) || !slices.Equal(rep.DamagedSnapshots, []string{"aaaaaaaa00"}) {
		t.Errorf("missing blobs %v, damaged snapshots %v", rep.MissingBlobs, rep.DamagedSnapshots)
	}
}

func TestCheckNamesEverySnapshotUsingADamagedBlob(t *testing.T) {
	f := newCheckFixture(t)
	gone := f.data[2]
	if err := f.mem.Remove(context.Background(), packHandle(f.packOf(t, gone))); err != nil {
		t.Fatal(err)
	}
	ghost := chunk.Handle{ID: chunk.ID{9, 9, 9, 9}, Kind: chunk.KindData}
	used := func(_ context.Context, u *UsedSet) error {
		for _, snap := range []string{"aaaaaaaa00", "bbbbbbbb00", "cccccccc00"} {
			for _, h := range []chunk.Handle{f.trees[0], gone, ghost} {
				u.Mark(snap, h)
			}
		}
		return nil
	}
	rep := runCheck(t, f.reopen(t), CheckOptions{Used: used})
	if want := []string{"aaaaaaaa00", "bbbbbbbb00", "cccccccc00"}; !slices.Equal(rep.DamagedSnapshots, want) {
		t.Errorf("damaged snapshots %v, want all of %v", rep.DamagedSnapshots, want)
	}
	// One missing pack, and per snapshot: a missing blob, a blob in the
	// missing pack.
	wantErrors(t, rep, 7, []string{"snapshot cccccccc: data 09090909 missing from index"},
		[]string{"snapshot bbbbbbbb: uses 1 blob of damaged pack"})
	if len(rep.MissingBlobs) != 1 || rep.UsedBlobs != 3 {
		t.Errorf("missing blobs %v, %d used blobs; want the ghost once, 3 used", rep.MissingBlobs, rep.UsedBlobs)
	}
}

func TestCheckUnindexedPackIsAWarning(t *testing.T) {
	f := newCheckFixture(t)
	ctx := context.Background()
	before := listNames(t, f.mem, backend.Index)
	extra, _, err := f.r.SaveChunk(ctx, chunk.KindData, randomBytes(99, 5<<10))
	if err != nil {
		t.Fatal(err)
	}
	mustFlush(t, f.r)
	id := f.packOf(t, chunk.Handle{ID: extra, Kind: chunk.KindData})
	// Remove the index file the flush wrote, as if the backup was killed
	// before it.
	for _, name := range listNames(t, f.mem, backend.Index) {
		if !slices.Contains(before, name) {
			if err := f.mem.Remove(ctx, backend.Handle{Type: backend.Index, Name: name}); err != nil {
				t.Fatal(err)
			}
		}
	}
	rep := runCheck(t, f.reopen(t), CheckOptions{ReadData: true, Used: f.usedAll()})
	if !rep.OK() {
		t.Fatalf("an unindexed pack gave errors %q", rep.Errors)
	}
	if !slices.Equal(rep.UnindexedPacks, []pack.ID{id}) || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "pack "+id.Short()) {
		t.Errorf("unindexed %v, warnings %q; want pack %v", rep.UnindexedPacks, rep.Warnings, id.Short())
	}
}

func TestCheckDamagedIndexFile(t *testing.T) {
	f := newCheckFixture(t)
	names := listNames(t, f.mem, backend.Index)
	h := backend.Handle{Type: backend.Index, Name: names[0]}
	b, _ := f.mem.Raw(h)
	b[len(b)/2] ^= 1
	f.mem.SetRaw(h, b)
	rep := runCheck(t, f.reopen(t), CheckOptions{Used: f.usedAll()})
	wantErrors(t, rep, len(rep.Errors), []string{"index file " + names[0][:8]}, []string{"missing from index"})
	if len(rep.UnindexedPacks) == 0 {
		t.Error("packs of the damaged index file are not reported as unindexed")
	}
}

func TestCheckSubsetReadsOnlySelectedPacks(t *testing.T) {
	f := newCheckFixture(t)
	packs := f.r.Index().Packs()
	slices.SortFunc(packs, func(a, b pack.ID) int { return strings.Compare(a.String(), b.String()) })
	sub := Subset{N: 2, T: 3}
	sel := sub.choose(packs)
	if len(sel) == 0 || len(sel) == len(packs) {
		t.Fatalf("subset 2/3 selects %d of %d packs; the test needs some of each", len(sel), len(packs))
	}
	// Damage one selected and one unselected pack inside a blob: only the
	// selected one can be found.
	var in, out pack.ID
	for _, h := range f.data {
		id := f.packOf(t, h)
		loc, _ := f.r.Lookup(h)
		flip := func(b []byte) []byte { b[loc.Offset+50] ^= 1; return b }
		if sel[id] && in.IsNull() {
			in = id
			f.modifyPack(t, id, flip)
		} else if !sel[id] && out.IsNull() {
			out = id
			f.modifyPack(t, id, flip)
		}
	}
	r := f.reopen(t)
	f.fault.ResetCounts()
	rep := runCheck(t, r, CheckOptions{ReadData: true, Subset: sub})
	if rep.PacksRead != len(sel) {
		t.Errorf("read %d packs, want the %d selected", rep.PacksRead, len(sel))
	}
	// A whole-pack read is one load; a header check is two (trailer,
	// header).
	if got, want := f.fault.Counts().LoadsByType[backend.Pack], int64(len(sel)+2*(len(packs)-len(sel))); got != want {
		t.Errorf("%d pack loads, want %d", got, want)
	}
	if !slices.Equal(rep.DamagedPacks, []pack.ID{in}) {
		t.Errorf("damaged packs %v, want only the selected damaged pack %v (not %v)", rep.DamagedPacks, in.Short(), out.Short())
	}
	// Groups 1/3 … 3/3 read every pack exactly once.
	seen := map[pack.ID]int{}
	for n := uint64(1); n <= 3; n++ {
		for id := range (Subset{N: n, T: 3}).choose(packs) {
			seen[id]++
		}
	}
	for _, id := range packs {
		if seen[id] != 1 {
			t.Errorf("pack %v is in %d of the groups n/3", id.Short(), seen[id])
		}
	}
	if got := len((Subset{Percent: 10}).choose(packs)); got != (len(packs)+9)/10 {
		t.Errorf("10%% of %d packs selects %d", len(packs), got)
	}
}

func TestParseSubset(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Subset
		ok   bool
	}{
		{"1/5", Subset{N: 1, T: 5}, true},
		{"5/5", Subset{N: 5, T: 5}, true},
		{"10%", Subset{Percent: 10}, true},
		{"2.5%", Subset{Percent: 2.5}, true},
		{"0/5", Subset{}, false},
		{"6/5", Subset{}, false},
		{"1/0", Subset{}, false},
		{"0%", Subset{}, false},
		{"101%", Subset{}, false},
		{"x%", Subset{}, false},
		{"5", Subset{}, false},
	} {
		got, err := ParseSubset(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseSubset(%q) = %+v, %v; want %+v, ok %v", c.in, got, err, c.want, c.ok)
		}
		if c.ok && got.String() != c.in {
			t.Errorf("Subset %+v prints as %q, want %q", got, got.String(), c.in)
		}
	}
}

func TestRepairIndex(t *testing.T) {
	ctx := context.Background()
	f := newCheckFixture(t)
	// Lose every index file, and damage one pack's header.
	for _, name := range listNames(t, f.mem, backend.Index) {
		if err := f.mem.Remove(ctx, backend.Handle{Type: backend.Index, Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	bad := f.packOf(t, f.data[11])
	f.modifyPack(t, bad, func(b []byte) []byte { b[len(b)-20] ^= 1; return b })
	// A leftover (empty) index file must go too.
	stale, err := f.r.SaveFile(ctx, backend.Index, []byte{1, 0, 0, 0, 0})
	if err != nil {
		t.Fatal(err)
	}

	r := f.reopen(t)
	if _, err := r.LoadChunk(ctx, f.data[0], nil); err == nil {
		t.Fatal("blob loads without index files")
	}
	rep, err := RepairIndex(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(f.trees), f.data...)
	if rep.Blobs != len(all)-1 || rep.IndexFilesWritten != 1 || rep.IndexFilesRemoved != 1 {
		t.Errorf("report %+v: want %d blobs, 1 index file written, 1 removed", rep, len(all)-1)
	}
	if !slices.Equal(rep.DamagedPacks, []pack.ID{bad}) || len(rep.Damaged) != 1 || !strings.Contains(rep.Damaged[0], "pack "+bad.Short()) {
		t.Errorf("damaged %q %v, want pack %v", rep.Damaged, rep.DamagedPacks, bad.Short())
	}
	if slices.Contains(listNames(t, f.mem, backend.Index), stale) {
		t.Error("the old index file was not removed")
	}
	// Every blob but the one in the damaged pack loads, in this
	// repository and in a freshly opened one.
	fresh, err := Open(ctx, f.fault, TestPassword, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range []*Repository{r, fresh} {
		for _, h := range all {
			_, err := repo.LoadChunk(ctx, h, nil)
			if lost := h == f.data[11]; (err != nil) != lost {
				t.Errorf("LoadChunk(%v) after repair: %v (in the damaged pack: %v)", h, err, lost)
			}
		}
	}
	// The damaged pack is now unindexed: check warns, and finds no
	// other damage.
	crep := runCheck(t, f.reopen(t), CheckOptions{ReadData: true})
	if !crep.OK() || !slices.Equal(crep.UnindexedPacks, []pack.ID{bad}) {
		t.Errorf("check after repair: errors %q, unindexed %v", crep.Errors, crep.UnindexedPacks)
	}
}

func TestRepairIndexKeepsIndexOnBackendError(t *testing.T) {
	ctx := context.Background()
	f := newCheckFixture(t)
	before := listNames(t, f.mem, backend.Index)
	r := f.reopen(t)
	f.fault.FailLoad(func(h backend.Handle) error {
		if h.Type == backend.Pack {
			return fmt.Errorf("connection reset")
		}
		return nil
	})
	if _, err := RepairIndex(ctx, r); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("RepairIndex with failing reads: %v, want the read error", err)
	}
	f.fault.FailLoad(nil)
	if after := listNames(t, f.mem, backend.Index); !slices.Equal(after, before) {
		t.Errorf("index files changed from %v to %v after a failed repair", before, after)
	}
}

// listNames returns the sorted names of the files of type ft in be.
func listNames(t *testing.T, be backend.Backend, ft backend.FileType) []string {
	t.Helper()
	var names []string
	err := be.List(context.Background(), ft, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}
