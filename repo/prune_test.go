package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/faulty"
	"github.com/imagobackup/imago/repo/backend/mem"
	"github.com/imagobackup/imago/repo/backend/retry"
)

// A test snapshot is a sealed file in snapshots/ listing blob handles
// (kind byte ‖ 32-byte ID each): enough for prune, which only needs to know
// which blobs each snapshot uses.

func saveTestSnapshot(t testing.TB, r *Repository, hs []chunk.Handle) string {
	t.Helper()
	var b []byte
	for _, h := range hs {
		b = append(b, byte(h.Kind))
		b = append(b, h.ID[:]...)
	}
	name, err := r.SaveFile(context.Background(), backend.Snapshot, b)
	if err != nil {
		t.Fatalf("save snapshot: %v", err)
	}
	return name
}

// testLive is the LiveSet of test snapshots, in the order the contract
// asks for: list the snapshots, refresh the index, then mark.
func testLive(r *Repository) LiveSet {
	return func(ctx context.Context, mark func(chunk.Handle) bool) error {
		var names []string
		err := r.ListFiles(ctx, backend.Snapshot, func(name string, _ int64) error {
			names = append(names, name)
			return nil
		})
		if err != nil {
			return err
		}
		if _, err := r.RefreshIndex(ctx); err != nil {
			return err
		}
		for _, name := range names {
			b, err := r.LoadFile(ctx, backend.Snapshot, name)
			if err != nil {
				return err
			}
			for ; len(b) >= 1+chunk.IDSize; b = b[1+chunk.IDSize:] {
				mark(chunk.Handle{Kind: chunk.Kind(b[0]), ID: chunk.ID(b[1 : 1+chunk.IDSize])})
			}
		}
		return nil
	}
}

// pruneFixture is a repository with two snapshots, "keep" and "drop".
// With 4 KiB random blobs and 16 KiB packs, each pack holds 4 blobs; keep
// uses blobs 0-11 (3 packs fully used after dropping "drop") and every
// even blob of 12-31 (5 packs half used), drop the rest (blobs 32-47 make
// 4 packs that only drop uses).
type pruneFixture struct {
	be         backend.Backend
	keep, drop []chunk.Handle
	data       map[chunk.ID][]byte
	dropName   string
}

const (
	fixtureBlobs    = 48
	fixtureBlobSize = 4 << 10
	fixturePackSize = 16 << 10
)

func newPruneFixture(t testing.TB, be backend.Backend) *pruneFixture {
	t.Helper()
	ctx := context.Background()
	r := TestRepositoryWithBackend(t, be, TestPackSize(fixturePackSize))
	f := &pruneFixture{be: be, data: make(map[chunk.ID][]byte)}
	for i := range fixtureBlobs {
		data := randomBytes(uint64(1000+i), fixtureBlobSize)
		id, _, err := r.SaveChunk(ctx, chunk.KindData, data)
		if err != nil {
			t.Fatal(err)
		}
		f.data[id] = data
		h := chunk.Handle{ID: id, Kind: chunk.KindData}
		if i < 12 || (i < 32 && i%2 == 0) {
			f.keep = append(f.keep, h)
		} else {
			f.drop = append(f.drop, h)
		}
	}
	tree := []byte("a tree blob, used by the kept snapshot")
	id, _, err := r.SaveChunk(ctx, chunk.KindTree, tree)
	if err != nil {
		t.Fatal(err)
	}
	f.data[id] = tree
	f.keep = append(f.keep, chunk.Handle{ID: id, Kind: chunk.KindTree})
	mustFlush(t, r)
	saveTestSnapshot(t, r, f.keep)
	f.dropName = saveTestSnapshot(t, r, f.drop)
	return f
}

// forget removes the "drop" snapshot.
func (f *pruneFixture) forget(t testing.TB) {
	t.Helper()
	if err := f.be.Remove(context.Background(), backend.Handle{Type: backend.Snapshot, Name: f.dropName}); err != nil {
		t.Fatal(err)
	}
}

// open opens the repository afresh, as another process would.
func (f *pruneFixture) open(t testing.TB) *Repository {
	t.Helper()
	r, err := Open(context.Background(), f.be, TestPassword, OpenOptions{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return r
}

// verify opens the repository afresh and checks what `check` and a restore
// need: every pack an index file lists is stored, and every blob of the
// kept snapshot loads with the right content.
func (f *pruneFixture) verify(t testing.TB, what string) {
	t.Helper()
	ctx := context.Background()
	r := f.open(t)
	for name, ids := range r.idxFiles.snapshot() {
		for _, id := range ids {
			if _, err := f.be.Stat(ctx, backend.Handle{Type: backend.Pack, Name: id.String()}); err != nil {
				t.Fatalf("%s: index file %s lists pack %v: %v", what, name[:8], id.Short(), err)
			}
		}
	}
	for _, h := range f.keep {
		got, err := r.LoadChunk(ctx, h, nil)
		if err != nil {
			t.Fatalf("%s: kept blob: %v", what, err)
		}
		if !bytes.Equal(got, f.data[h.ID]) {
			t.Fatalf("%s: kept blob %v has other content", what, h.ID.Short())
		}
	}
}

// prune plans and executes a prune on r.
func prune(ctx context.Context, r *Repository, opts PruneOptions) (PruneSummary, PruneResult, error) {
	plan, err := PlanPrune(ctx, r, testLive(r), opts)
	if err != nil {
		return PruneSummary{}, PruneResult{}, err
	}
	res, err := plan.Execute(ctx, r, testLive(r), opts)
	return plan.Summary(), res, err
}

// packBytes sums the sizes of the stored packs.
func packBytes(t testing.TB, be backend.Backend) (n int64, count int) {
	t.Helper()
	err := be.List(context.Background(), backend.Pack, func(fi backend.FileInfo) error {
		n += fi.Size
		count++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, count
}

// listAll returns every file name of the repository, by type.
func listAll(t testing.TB, be backend.Backend) map[backend.FileType][]string {
	t.Helper()
	m := map[backend.FileType][]string{}
	for _, ft := range []backend.FileType{backend.Pack, backend.Index, backend.Snapshot} {
		err := be.List(context.Background(), ft, func(fi backend.FileInfo) error {
			m[ft] = append(m[ft], fi.Name)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(m[ft])
	}
	return m
}

func TestPruneReclaimsSpace(t *testing.T) {
	ctx := context.Background()
	f := newPruneFixture(t, mem.New())
	f.forget(t)
	r := f.open(t)
	before, packsBefore := packBytes(t, f.be)

	// A dry run is a plan that is not executed: it changes nothing.
	files := listAll(t, f.be)
	plan, err := PlanPrune(ctx, r, testLive(r), PruneOptions{MaxUnused: 5})
	if err != nil {
		t.Fatal(err)
	}
	s := plan.Summary()
	if s.PacksDelete == 0 || s.PacksRepack == 0 || s.PacksKeep == 0 {
		t.Fatalf("plan %+v: want packs to delete, to repack and to keep", s)
	}
	if s.BlobsUsed != int64(len(f.keep)) || s.BlobsUnused != int64(len(f.drop)) {
		t.Errorf("plan counts %d used and %d unused blobs, want %d and %d", s.BlobsUsed, s.BlobsUnused, len(f.keep), len(f.drop))
	}
	if s.BytesBefore != before || s.BytesAfter >= before {
		t.Errorf("plan: %d bytes before (stored: %d), %d after: want a smaller repository", s.BytesBefore, before, s.BytesAfter)
	}
	if got := listAll(t, f.be); fmt.Sprint(got) != fmt.Sprint(files) {
		t.Fatalf("planning changed the repository")
	}

	res, err := plan.Execute(ctx, r, testLive(r), PruneOptions{MaxUnused: 5})
	if err != nil {
		t.Fatal(err)
	}
	after, packsAfter := packBytes(t, f.be)
	if after >= before || packsAfter >= packsBefore {
		t.Errorf("packs: %d bytes in %d packs before, %d in %d after: want fewer", before, packsBefore, after, packsAfter)
	}
	if res.PacksRemoved != s.PacksDelete+s.PacksRepack || res.PacksWritten == 0 {
		t.Errorf("result %+v for plan %+v", res, s)
	}
	if after != s.BytesAfter {
		t.Errorf("the plan expected %d bytes of packs afterwards, there are %d", s.BytesAfter, after)
	}
	f.verify(t, "after prune")
	// The dropped blobs are gone from the index.
	r2 := f.open(t)
	for _, h := range f.drop {
		if r2.HasChunk(h) {
			t.Fatalf("dropped blob %v is still indexed", h.ID.Short())
		}
	}
	// A second prune finds nothing to do.
	s2, _, err := prune(ctx, r2, PruneOptions{MaxUnused: 5})
	if err != nil {
		t.Fatal(err)
	}
	// At most 5% of the repository is unused (restic's --max-unused).
	if s2.PacksDelete+s2.PacksRepack+s2.PacksUnindexed != 0 || s2.BytesUnused*100 > (s2.BytesUsed+s2.BytesUnused)*5 {
		t.Errorf("second prune plans %+v: want nothing to do", s2)
	}
}

func TestPruneMaxUnusedAndRepackSize(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name       string
		opts       PruneOptions
		wantRepack bool
		wantUnused bool // unused bytes left after the prune
	}{
		{"max unused 0 repacks all partly used packs", PruneOptions{MaxUnused: 0}, true, false},
		{"max unused 100 repacks nothing", PruneOptions{MaxUnused: 100}, false, true},
		{"a repack size below one pack repacks nothing", PruneOptions{MaxRepackSize: 1}, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newPruneFixture(t, mem.New())
			f.forget(t)
			s, _, err := prune(ctx, f.open(t), c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if (s.PacksRepack > 0) != c.wantRepack {
				t.Errorf("plan repacks %d packs; want repacks: %v", s.PacksRepack, c.wantRepack)
			}
			if s.PacksDelete == 0 {
				t.Errorf("plan deletes no pack, want the unused ones deleted")
			}
			s2, _, err := prune(ctx, f.open(t), PruneOptions{MaxUnused: 100})
			if err != nil {
				t.Fatal(err)
			}
			if (s2.BytesUnused > 0) != c.wantUnused {
				t.Errorf("after the prune %d bytes are unused; want some: %v", s2.BytesUnused, c.wantUnused)
			}
			f.verify(t, c.name)
		})
	}
}

func TestPruneDeletesUnindexedPacks(t *testing.T) {
	ctx := context.Background()
	f := newPruneFixture(t, mem.New())
	// An interrupted backup leaves a pack that no index file lists.
	junk := randomBytes(7, 5000)
	sum := blake3.Sum256(junk)
	name := pack.ID(sum).String()
	if err := f.be.Save(ctx, backend.Handle{Type: backend.Pack, Name: name}, bytes.NewReader(junk), int64(len(junk))); err != nil {
		t.Fatal(err)
	}
	s, res, err := prune(ctx, f.open(t), PruneOptions{MaxUnused: 5})
	if err != nil {
		t.Fatal(err)
	}
	if s.PacksUnindexed != 1 || s.BytesUnindexed != int64(len(junk)) {
		t.Errorf("plan %+v: want 1 unindexed pack of %d bytes", s, len(junk))
	}
	if res.PacksRemoved != 1 {
		t.Errorf("removed %d packs, want the unindexed one", res.PacksRemoved)
	}
	if _, err := f.be.Stat(ctx, backend.Handle{Type: backend.Pack, Name: name}); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("unindexed pack still stored: %v", err)
	}
	f.verify(t, "after prune")
}

// TestPruneCrash fails the n-th save or remove of a prune, for every n
// until the prune completes: after each failure the kept blobs load from
// a freshly opened repository, and the next prune completes and leaves no
// unused or unindexed pack.
func TestPruneCrash(t *testing.T) {
	ctx := context.Background()
	injected := errors.New("injected crash")
	for _, op := range []string{"save", "remove"} {
		for n := 1; ; n++ {
			fb := faulty.New(mem.New())
			f := newPruneFixture(t, fb)
			f.forget(t)
			r := f.open(t)
			if op == "save" {
				fb.FailSaveAfter(n, injected)
			} else {
				fb.FailRemoveAfter(n, injected)
			}
			_, _, crashErr := prune(ctx, r, PruneOptions{MaxUnused: 0})
			fb.FailSaveAfter(0, nil)
			fb.FailRemoveAfter(0, nil)
			if crashErr != nil && !errors.Is(crashErr, injected) {
				t.Fatalf("%s %d: prune: %v", op, n, crashErr)
			}
			what := fmt.Sprintf("%s %d failed", op, n)
			f.verify(t, what)
			if _, _, err := prune(ctx, f.open(t), PruneOptions{MaxUnused: 0}); err != nil {
				t.Fatalf("%s: next prune: %v", what, err)
			}
			f.verify(t, what+", then a prune")
			s, _, err := prune(ctx, f.open(t), PruneOptions{MaxUnused: 0})
			if err != nil {
				t.Fatal(err)
			}
			if s.PacksDelete+s.PacksRepack+s.PacksUnindexed+s.PacksMissing != 0 || s.BytesUnused != 0 {
				t.Fatalf("%s, then a prune: a third prune still plans %+v", what, s)
			}
			if crashErr == nil {
				t.Logf("%s: prune completes after %d %ss", op, n-1, op)
				break
			}
			if n > 200 {
				t.Fatalf("%s: prune still fails after %d injected failures", op, n)
			}
		}
	}
}

// TestPruneKeepsBlobsOfConcurrentBackup runs a backup (another Repository
// on the same backend) between the plan and the exclusive step. It
// reuses a blob that the plan found unused: the blob's pack must stay.
func TestPruneKeepsBlobsOfConcurrentBackup(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		pick    func(f *pruneFixture) chunk.Handle
		opts    PruneOptions
		collide bool // the used set holds another data blob with the same fingerprint
	}{
		// The first dropped blob (13) sits in a half-used pack, which
		// MaxUnused 0 repacks without it.
		{"blob in a repacked pack", func(f *pruneFixture) chunk.Handle { return f.drop[0] }, PruneOptions{MaxUnused: 0}, false},
		// The last dropped blob (47) is in a pack only "drop" used.
		{"blob in an unused pack", func(f *pruneFixture) chunk.Handle { return f.drop[len(f.drop)-1] }, PruneOptions{MaxUnused: 100}, false},
		// The used set knows data blobs by fingerprint: a blob whose
		// fingerprint collides with a marked one still rescues its pack.
		{"colliding blob in a repacked pack", func(f *pruneFixture) chunk.Handle { return f.drop[0] }, PruneOptions{MaxUnused: 0}, true},
		{"colliding blob in an unused pack", func(f *pruneFixture) chunk.Handle { return f.drop[len(f.drop)-1] }, PruneOptions{MaxUnused: 100}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newPruneFixture(t, mem.New())
			f.forget(t)
			r := f.open(t)
			reused := c.pick(f)
			plan, err := PlanPrune(ctx, r, testLive(r), c.opts)
			if err != nil {
				t.Fatal(err)
			}
			loc, _ := r.Lookup(reused)
			if _, doomed := plan.remove[loc.Pack]; !doomed {
				t.Fatalf("the plan keeps the pack of the blob the backup reuses; the test needs it doomed")
			}
			if c.collide {
				twin := reused.ID
				twin[0] ^= 0xff // same bytes 8-16: the same fingerprint
				if !plan.used.insert(chunk.Handle{ID: twin, Kind: chunk.KindData}) || plan.used.insert(reused) {
					t.Fatal("the twin does not collide with the reused blob")
				}
			}

			// The backup: it finds the blob in its index and stores only
			// a new one, then writes its snapshot.
			b := f.open(t)
			fresh := []byte("new data of the concurrent backup")
			data := f.data[reused.ID]
			if _, added, err := b.SaveChunk(ctx, chunk.KindData, data); err != nil || added != 0 {
				t.Fatalf("backup SaveChunk of the known blob: added %d, %v; want deduplicated", added, err)
			}
			newID, _, err := b.SaveChunk(ctx, chunk.KindData, fresh)
			if err != nil {
				t.Fatal(err)
			}
			mustFlush(t, b)
			newH := chunk.Handle{ID: newID, Kind: chunk.KindData}
			saveTestSnapshot(t, b, []chunk.Handle{reused, newH})

			res, err := plan.Execute(ctx, r, testLive(r), c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.PacksRescued != 1 {
				t.Errorf("rescued %d packs, want 1", res.PacksRescued)
			}
			f.keep = append(f.keep, reused, newH)
			f.data[newID] = fresh
			f.verify(t, "after prune")
			// The next prune completes too, and keeps the blobs.
			if _, _, err := prune(ctx, f.open(t), c.opts); err != nil {
				t.Fatal(err)
			}
			f.verify(t, "after a second prune")
		})
	}
}

// TestRefreshIndexAfterPrune: a backup that loaded its index before a
// prune must not deduplicate against blobs the prune removed; RefreshIndex
// (called after taking the lock) rebuilds its index.
func TestRefreshIndexAfterPrune(t *testing.T) {
	ctx := context.Background()
	f := newPruneFixture(t, mem.New())
	f.forget(t)
	backup := f.open(t) // loads the index before the prune
	if _, _, err := prune(ctx, f.open(t), PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	rebuilt, err := backup.RefreshIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rebuilt {
		t.Fatal("RefreshIndex did not notice the prune")
	}
	h := f.drop[0]
	if _, added, err := backup.SaveChunk(ctx, chunk.KindData, f.data[h.ID]); err != nil || added == 0 {
		t.Fatalf("SaveChunk of a pruned blob: added %d, %v; want it stored again", added, err)
	}
	mustFlush(t, backup)
	f.keep = append(f.keep, h)
	f.verify(t, "after the backup")
	// With nothing changed, RefreshIndex does not rebuild.
	if rebuilt, err := backup.RefreshIndex(ctx); err != nil || rebuilt {
		t.Errorf("RefreshIndex on an unchanged repository: rebuilt %v, %v", rebuilt, err)
	}
}

// TestPruneConflict: of two prunes planned and repacking at the same time
// (both under shared locks), the second to reach its exclusive step gives
// up without deleting anything.
func TestPruneConflict(t *testing.T) {
	ctx := context.Background()
	f := newPruneFixture(t, mem.New())
	f.forget(t)
	r1, r2 := f.open(t), f.open(t)
	p1, err := PlanPrune(ctx, r1, testLive(r1), PruneOptions{MaxUnused: 0})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := PlanPrune(ctx, r2, testLive(r2), PruneOptions{MaxUnused: 50})
	if err != nil {
		t.Fatal(err)
	}
	// The exclusive lock, played by channels: the first prune's exclusive
	// step starts once the second prune has repacked too, and the second's
	// once the first has finished.
	secondWaits, firstDone := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := p1.Execute(ctx, r1, testLive(r1), PruneOptions{Exclusive: func(context.Context) (func(), error) {
			<-secondWaits
			return func() {}, nil
		}})
		close(firstDone)
		errc <- err
	}()
	_, err = p2.Execute(ctx, r2, testLive(r2), PruneOptions{Exclusive: func(context.Context) (func(), error) {
		close(secondWaits)
		<-firstDone
		return func() {}, nil
	}})
	if err := <-errc; err != nil {
		t.Fatalf("first prune: %v", err)
	}
	if !errors.Is(err, ErrPruneConflict) {
		t.Fatalf("second prune: %v, want ErrPruneConflict", err)
	}
	f.verify(t, "after two prunes")
	if _, _, err := prune(ctx, f.open(t), PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	f.verify(t, "after a third prune")
}

func TestPruneRefusesMissingBlobs(t *testing.T) {
	ctx := context.Background()
	f := newPruneFixture(t, mem.New())
	r := f.open(t)
	saveTestSnapshot(t, r, []chunk.Handle{{ID: r.HashChunk([]byte("never stored")), Kind: chunk.KindData}})
	if _, err := PlanPrune(ctx, r, testLive(r), PruneOptions{}); err == nil {
		t.Fatal("a snapshot refers to a blob that is nowhere, and prune planned anyway")
	}
}

func TestBlobSet(t *testing.T) {
	s := newBlobSet(0)
	const n = 5000 // more than minSetSize: the table grows
	var hs []chunk.Handle
	for i := range n {
		var id chunk.ID
		copy(id[:], randomBytes(uint64(i), chunk.IDSize))
		hs = append(hs, chunk.Handle{ID: id, Kind: chunk.KindData}, chunk.Handle{ID: id, Kind: chunk.KindTree})
	}
	for _, h := range hs[:n] {
		if !s.insert(h) {
			t.Fatalf("insert %v: reported as present", h)
		}
	}
	for i, h := range hs {
		if got, want := s.has(h), i < n; got != want {
			t.Fatalf("has(%d) = %v, want %v", i, got, want)
		}
	}
	if s.insert(hs[0]) || s.len() != n {
		t.Errorf("second insert reported new, or len %d != %d", s.len(), n)
	}
	if !s.setFlag(hs[1], flagIndexed) || s.setFlag(hs[n+1], flagIndexed) || !s.has(hs[1]) || s.has(hs[n+1]) {
		t.Errorf("setFlag changed membership")
	}
}

func TestRepackRanges(t *testing.T) {
	blob := func(off, length uint32) repackBlob {
		var id chunk.ID
		id[0] = byte(off >> 10)
		return repackBlob{h: chunk.Handle{ID: id, Kind: chunk.KindData}, off: off, length: length}
	}
	const g = repackMaxGap
	cases := []struct {
		name    string
		blobs   []repackBlob
		size    int64
		want    [][2]int64 // start and end of each range
		wantErr bool
	}{
		{"none", nil, 1 << 20, nil, false},
		{"one blob", []repackBlob{blob(100, 50)}, 1 << 20, [][2]int64{{100, 150}}, false},
		{"neighbours share a range", []repackBlob{blob(0, 10), blob(10, 10)}, 1 << 20, [][2]int64{{0, 20}}, false},
		{"a gap just below the limit is read", []repackBlob{blob(0, 10), blob(10+g-1, 10)}, 1 << 20, [][2]int64{{0, 20 + g - 1}}, false},
		{"a gap at the limit splits", []repackBlob{blob(0, 10), blob(10+g, 10)}, 1 << 20, [][2]int64{{0, 10}, {10 + g, 20 + g}}, false},
		{"unsorted input is sorted", []repackBlob{blob(3*g, 10), blob(0, 10), blob(20, 10)}, 1 << 20, [][2]int64{{0, 30}, {3 * g, 3*g + 10}}, false},
		{"a range ends before it would pass the limit", []repackBlob{blob(0, 2<<20), blob(2<<20, 2<<20), blob(4<<20, 10)}, 8 << 20, [][2]int64{{0, 4 << 20}, {4 << 20, 4<<20 + 10}}, false},
		{"a blob above the limit is a range of its own", []repackBlob{blob(0, 10), blob(20, 5<<20), blob(5<<20+20, 10)}, 8 << 20, [][2]int64{{0, 10}, {20, 5<<20 + 20}, {5<<20 + 20, 5<<20 + 30}}, false},
		{"overlapping blobs", []repackBlob{blob(0, 20), blob(10, 20)}, 1 << 20, nil, true},
		{"a blob past the end", []repackBlob{blob(0, 20), blob(100, 20)}, 110, nil, true},
		{"an empty blob", []repackBlob{blob(0, 0)}, 110, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ranges, err := repackRanges(c.blobs, c.size, repackMaxRange)
			if (err != nil) != c.wantErr {
				t.Fatalf("error %v, want error: %v", err, c.wantErr)
			}
			var got [][2]int64
			n := 0
			for _, rg := range ranges {
				got = append(got, [2]int64{int64(rg[0].off), rg[len(rg)-1].end()})
				n += len(rg)
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("ranges %v, want %v", got, c.want)
			}
			if err == nil && n != len(c.blobs) {
				t.Errorf("ranges hold %d blobs, want %d", n, len(c.blobs))
			}
		})
	}
}

// sparseFixture is a repository of two 1 MiB packs of 16 blobs of 64 KiB,
// one of them compressible, of which a snapshot keeps blobs 0, 1 and 15 of
// the first pack and blob 20 of the second: repacking them should read
// three ranges (0-1, 15, 20) and nothing else.
func newSparseFixture(t *testing.T, be backend.Backend) *pruneFixture {
	t.Helper()
	ctx := context.Background()
	r := TestRepositoryWithBackend(t, be, TestPackSize(1<<20))
	f := &pruneFixture{be: be, data: make(map[chunk.ID][]byte)}
	for i := range 32 {
		data := randomBytes(uint64(5000+i), 64<<10)
		if i == 1 {
			data = compressibleBytes(64 << 10)
		}
		id, _, err := r.SaveChunk(ctx, chunk.KindData, data)
		if err != nil {
			t.Fatal(err)
		}
		f.data[id] = data
		h := chunk.Handle{ID: id, Kind: chunk.KindData}
		if i == 0 || i == 1 || i == 15 || i == 20 {
			f.keep = append(f.keep, h)
		} else {
			f.drop = append(f.drop, h)
		}
	}
	mustFlush(t, r)
	saveTestSnapshot(t, r, f.keep)
	f.dropName = saveTestSnapshot(t, r, f.drop)
	return f
}

// TestPruneRepackReadsOnlyUsedRanges: repacking loads the ranges of the
// used blobs, not whole packs, and counts what it read.
func TestPruneRepackReadsOnlyUsedRanges(t *testing.T) {
	ctx := context.Background()
	fb := faulty.New(mem.New())
	f := newSparseFixture(t, fb)
	f.forget(t)
	r := f.open(t)
	opts := PruneOptions{MaxUnused: 0}
	plan, err := PlanPrune(ctx, r, testLive(r), opts)
	if err != nil {
		t.Fatal(err)
	}
	s := plan.Summary()
	if s.PacksRepack != 2 || s.RepackLoads != 3 {
		t.Fatalf("plan repacks %d packs in %d loads, want 2 packs in 3 loads", s.PacksRepack, s.RepackLoads)
	}
	if s.BytesRepackRead != s.BytesRepackCopy {
		t.Errorf("plan reads %d bytes to copy %d: the ranges hold only used blobs here", s.BytesRepackRead, s.BytesRepackCopy)
	}
	fb.ResetCounts()
	before := r.Stats().BytesDownloaded
	res, err := plan.Execute(ctx, r, testLive(r), opts)
	if err != nil {
		t.Fatal(err)
	}
	st := fb.Counts()
	if res.BytesReadRepack != s.BytesRepackRead || res.RepackLoads != 3 {
		t.Errorf("repack read %d bytes in %d loads, the plan said %d in %d", res.BytesReadRepack, res.RepackLoads, s.BytesRepackRead, s.RepackLoads)
	}
	if got := st.LoadsByType[backend.Pack]; got != 3 {
		t.Errorf("%d loads of packs reached the backend, want 3", got)
	}
	if got := r.Stats().BytesDownloaded - before; got != st.BytesLoaded {
		t.Errorf("the repository counts %d bytes downloaded, the backend %d", got, st.BytesLoaded)
	}
	if res.BytesReadRepack*4 > s.BytesRepack {
		t.Errorf("repack read %d bytes of %d bytes of packs: want a quarter at most", res.BytesReadRepack, s.BytesRepack)
	}
	f.verify(t, "after prune")
}

// flakyPacks is a backend whose pack loads fail with a transient error
// one byte before the end of the range, once per range: a retrying wrapper then
// calls the callback again.
type flakyPacks struct {
	backend.Backend
	mu     sync.Mutex
	failed map[string]bool
}

func (b *flakyPacks) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	key := fmt.Sprint(h, length, offset)
	b.mu.Lock()
	fail := h.Type == backend.Pack && length > 0 && !b.failed[key]
	b.failed[key] = true
	b.mu.Unlock()
	if !fail {
		return b.Backend.Load(ctx, h, length, offset, fn)
	}
	return b.Backend.Load(ctx, h, length, offset, func(rd io.Reader) error {
		return fn(io.MultiReader(io.LimitReader(rd, int64(length)-1), errReader{&backend.TransientError{Err: io.ErrUnexpectedEOF}}))
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestPruneRepackRetriesMidRange: a range whose read fails transiently
// near its end is read again from its start, and no blob is copied twice.
func TestPruneRepackRetriesMidRange(t *testing.T) {
	ctx := context.Background()
	base := mem.New()
	f := newSparseFixture(t, base)
	f.forget(t)
	flaky := &flakyPacks{Backend: base, failed: make(map[string]bool)}
	be := retry.New(flaky, retry.Options{Sleep: func(context.Context, time.Duration) error { return nil }})
	r, err := Open(ctx, be, TestPassword, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, res, err := prune(ctx, r, PruneOptions{MaxUnused: 0})
	if err != nil {
		t.Fatal(err)
	}
	if res.RepackLoads != 3 || res.BytesReadRepack <= 0 {
		t.Errorf("result %+v: want 3 loads", res)
	}
	f.verify(t, "after prune")
	// The new packs hold each kept blob once.
	r2 := f.open(t)
	blobs := 0
	for _, id := range r2.idx.Packs() {
		entries, err := r2.LoadPackHeader(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		blobs += len(entries)
	}
	if blobs != len(f.keep) {
		t.Errorf("the packs hold %d blobs, want the %d kept ones once each", blobs, len(f.keep))
	}
}

// TestPruneRepackRefusesDamagedBlob: a used blob that does not open in a
// pack to repack stops the prune before anything is removed.
func TestPruneRepackRefusesDamagedBlob(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	f := newSparseFixture(t, be)
	f.forget(t)
	r := f.open(t)
	loc, ok := r.Lookup(f.keep[2]) // blob 15, alone in its range
	if !ok {
		t.Fatal("kept blob not indexed")
	}
	ph := backend.Handle{Type: backend.Pack, Name: loc.Pack.String()}
	b, _ := be.Raw(ph)
	b = bytes.Clone(b)
	b[loc.Offset+loc.Length/2] ^= 1
	be.SetRaw(ph, b)
	files := listAll(t, be)
	_, _, err := prune(ctx, r, PruneOptions{MaxUnused: 0})
	wantErrContaining(t, err, loc.Pack.Short(), f.keep[2].ID.Short())
	after := listAll(t, be)
	for _, ft := range []backend.FileType{backend.Pack, backend.Index, backend.Snapshot} {
		for _, name := range files[ft] {
			if !slices.Contains(after[ft], name) {
				t.Errorf("a failed prune removed %s/%s", ft, name[:8])
			}
		}
	}
}

// TestPruneMaxUnusedIsShareOfRepository: --max-unused m leaves at most m%
// of the repository (used + unused) unused, as restic does, and repacks
// less as m grows.
func TestPruneMaxUnusedIsShareOfRepository(t *testing.T) {
	ctx := context.Background()
	f := newPruneFixture(t, mem.New())
	f.forget(t)
	r := f.open(t)
	last := -1
	for _, m := range []float64{0, 5, 20, 40, 60, 99, 100} {
		plan, err := PlanPrune(ctx, r, testLive(r), PruneOptions{MaxUnused: m})
		if err != nil {
			t.Fatal(err)
		}
		s := plan.Summary()
		if got := float64(s.BytesUnusedAfter); got > m/100*float64(s.BytesUsed+s.BytesUnusedAfter)+1 {
			t.Errorf("max unused %v%%: %d unused of %d used bytes left", m, s.BytesUnusedAfter, s.BytesUsed)
		}
		if last >= 0 && s.PacksRepack > last {
			t.Errorf("max unused %v%% repacks %d packs, more than a lower limit (%d)", m, s.PacksRepack, last)
		}
		if m >= 100 && s.PacksRepack != 0 {
			t.Errorf("max unused %v%% repacks %d packs, want none", m, s.PacksRepack)
		}
		last = s.PacksRepack
	}
}

func TestUsedSet(t *testing.T) {
	u := newUsedSet(0)
	var id chunk.ID
	copy(id[:], randomBytes(1, chunk.IDSize))
	twin := id
	twin[31] ^= 1 // bytes 8-16 unchanged: the same fingerprint
	data := func(id chunk.ID) chunk.Handle { return chunk.Handle{ID: id, Kind: chunk.KindData} }
	tree := func(id chunk.ID) chunk.Handle { return chunk.Handle{ID: id, Kind: chunk.KindTree} }
	if !u.insert(data(id)) || u.insert(data(twin)) || !u.has(data(twin)) {
		t.Errorf("data blobs with one fingerprint are not one member")
	}
	if !u.insert(tree(id)) || !u.insert(tree(twin)) || u.insert(tree(twin)) {
		t.Errorf("tree blobs are not kept exactly")
	}
	if got := u.unindexed(); got != 3 {
		t.Errorf("unindexed = %d, want 3 (one data fingerprint, two trees)", got)
	}
	if !u.setIndexed(data(twin)) || !u.setIndexed(tree(id)) || u.unindexed() != 1 {
		t.Errorf("setIndexed: %d unindexed left, want 1", u.unindexed())
	}
	var other chunk.ID
	copy(other[:], randomBytes(2, chunk.IDSize))
	if u.setIndexed(data(other)) || u.has(data(other)) {
		t.Errorf("setIndexed added a blob")
	}
	// Growing keeps members and flags.
	for i := range 5000 {
		var x chunk.ID
		copy(x[:], randomBytes(uint64(100+i), chunk.IDSize))
		u.insert(data(x))
	}
	if !u.has(data(id)) || u.unindexed() != 5001 {
		t.Errorf("after growing: member lost or flags changed (%d unindexed, want 5001)", u.unindexed())
	}
}
