package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/faulty"
	"github.com/imagobackup/imago/repo/backend/mem"
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
	if s2.PacksDelete+s2.PacksRepack+s2.PacksUnindexed != 0 || s2.BytesUnused > s2.BytesUsed*5/100 {
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
		name string
		pick func(f *pruneFixture) chunk.Handle
		opts PruneOptions
	}{
		// The first dropped blob (13) sits in a half-used pack, which
		// MaxUnused 0 repacks without it.
		{"blob in a repacked pack", func(f *pruneFixture) chunk.Handle { return f.drop[0] }, PruneOptions{MaxUnused: 0}},
		// The last dropped blob (47) is in a pack only "drop" used.
		{"blob in an unused pack", func(f *pruneFixture) chunk.Handle { return f.drop[len(f.drop)-1] }, PruneOptions{MaxUnused: 100}},
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
