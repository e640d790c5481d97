package repo

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
)

// Prune removes what no snapshot uses, in two steps: PlanPrune decides, and
// PrunePlan.Execute acts. The plan and the repacking run under a shared
// lock, beside backups; only the final step (finding the snapshots written
// meanwhile, replacing index files) needs an exclusive lock. See
// docs/PRUNE.md for the design and its crash and concurrency arguments.

// Prune limits.
const (
	// repackWorkers is how many packs are copied at once. Each holds one
	// whole pack in memory (at most PackSize + pack.MaxBlobSize + its
	// header, 28 MiB with the defaults) plus one blob's plaintext to verify
	// it: 2 × 40 MiB. Two keep a read and the copy into the write session
	// overlapping on the 2-core machines we target.
	repackWorkers = 2
	// removeWorkers is how many files are removed at once: removals are
	// small requests whose latency dominates on remote backends.
	removeWorkers = 8
	// packEntrySize is the size of one entry in a pack header
	// (docs/FORMAT.md, "Pack"): kind, codec, ID, length, raw length.
	packEntrySize = 42
)

// LiveSet marks every blob the repository's snapshots use. It must call
// mark for every blob reference of every snapshot that exists when it is
// called, a tree or content-list page before the blobs it references. When
// mark returns false the blob was marked before, and so was everything
// below it: live need not descend further. mark is safe for concurrent use.
//
// Execute calls live a second time, under the exclusive lock, to find the
// snapshots written since the plan; live may skip the snapshots it walked
// in an earlier call (walking them again costs one mark per snapshot).
// A backup stores its index files before its snapshot, so live should list
// the snapshots first and then call Repository.RefreshIndex before loading
// their trees, or it may not find the trees of a snapshot written meanwhile.
type LiveSet func(ctx context.Context, mark func(chunk.Handle) bool) error

// PruneOptions configure PlanPrune and Execute.
type PruneOptions struct {
	// MaxUnused is how many unused bytes may remain after the prune, in
	// percent of the used bytes (restic's --max-unused). The partly used
	// packs with the largest unused share are repacked until the unused
	// bytes left in the others are within the limit. 0 repacks every
	// partly used pack.
	MaxUnused float64
	// MaxRepackSize bounds the total size of the packs repacked by one
	// prune, in bytes; 0 means no limit.
	MaxRepackSize int64

	// Exclusive is called by Execute after repacking, to move from the
	// caller's shared lock to an exclusive one: it must release the shared
	// lock, then take an exclusive lock (waiting as long as it sees fit
	// for backups to end) and return the function that releases it, which
	// Execute calls when its exclusive step ends. Nil means the caller
	// holds an exclusive lock for the whole Execute.
	Exclusive func(ctx context.Context) (release func(), err error)
	// Report, when not nil, is called after each step of Execute, one call
	// at a time (it may be called from different goroutines).
	Report func(PruneEvent)
}

// PruneStep names a step of Execute.
type PruneStep string

// The steps of Execute, in order.
const (
	// PruneStepRepack: the used blobs of one more pack were copied.
	PruneStepRepack PruneStep = "repack"
	// PruneStepFlush: the new packs and the index files listing them are
	// stored.
	PruneStepFlush PruneStep = "flush"
	// PruneStepIndex: one more replacement index file is stored.
	PruneStepIndex PruneStep = "write-index"
	// PruneStepExclusive: the exclusive lock is held and the snapshots
	// written since the plan are marked.
	PruneStepExclusive PruneStep = "exclusive"
	// PruneStepRemoveIndex: one more superseded index file is removed.
	PruneStepRemoveIndex PruneStep = "remove-index"
	// PruneStepRemovePack: one more pack is removed.
	PruneStepRemovePack PruneStep = "remove-pack"
)

// PruneEvent reports progress: Done of Total items of Step are finished.
type PruneEvent struct {
	Step        PruneStep
	Done, Total int
}

// PruneSummary counts what a plan found and will do. Sizes are stored
// bytes.
type PruneSummary struct {
	BlobsUsed   int64 `json:"blobs_used"`
	BlobsUnused int64 `json:"blobs_unused"`
	BytesUsed   int64 `json:"bytes_used"`   // sealed bytes of used blobs, one copy each
	BytesUnused int64 `json:"bytes_unused"` // every other byte of the indexed packs

	PacksKeep         int   `json:"packs_keep"`
	BytesKeep         int64 `json:"bytes_keep"`
	PacksRepack       int   `json:"packs_repack"`
	BytesRepack       int64 `json:"bytes_repack"`        // size of the packs to repack
	BytesRepackCopy   int64 `json:"bytes_repack_copy"`   // used bytes copied out of them
	PacksDelete       int   `json:"packs_delete"`        // indexed packs no snapshot uses
	BytesDelete       int64 `json:"bytes_delete"`        // their size
	PacksUnindexed    int   `json:"packs_unindexed"`     // stored packs no index lists
	BytesUnindexed    int64 `json:"bytes_unindexed"`     // their size
	PacksMissing      int   `json:"packs_missing"`       // indexed, unused, and not stored
	IndexFilesReplace int   `json:"index_files_replace"` // index files to supersede

	// BytesUnusedAfter is the unused bytes left in kept packs afterwards.
	BytesUnusedAfter int64 `json:"bytes_unused_after"`
	// BytesBefore and BytesAfter are the total size of the stored packs
	// before and (expected) after the prune.
	BytesBefore int64 `json:"bytes_before"`
	BytesAfter  int64 `json:"bytes_after"`
}

// PruneResult counts what Execute did.
type PruneResult struct {
	PacksWritten      int   `json:"packs_written"`
	PacksRemoved      int   `json:"packs_removed"`
	BytesRemoved      int64 `json:"bytes_removed"`
	PacksRescued      int   `json:"packs_rescued"` // kept because a new snapshot uses them
	IndexFilesWritten int   `json:"index_files_written"`
	IndexFilesRemoved int   `json:"index_files_removed"`
}

// ErrPruneConflict means the repository changed under a prune in a way it
// cannot reconcile (another prune removed index files). Nothing was
// deleted; running prune again finishes the job.
var ErrPruneConflict = errors.New("repo: another prune changed the repository; run prune again")

// prunePack is what a plan knows about one pack.
type prunePack struct {
	size      int64 // stored size; -1 when the pack is not stored
	blobs     int   // blobs the in-memory index locates here
	usedBlobs int   // of them, the used ones
	usedBytes int64 // sealed bytes of the used ones
	indexed   bool  // some index file lists the pack
}

// unused returns the bytes of p no used blob needs: unused blobs,
// duplicates located elsewhere, and the header entries of both.
func (p *prunePack) unused(overhead int) int64 {
	if p.size < 0 {
		return 0
	}
	return p.size - p.usedBytes - headerSize(p.usedBlobs, overhead)
}

// headerSize is the size of a pack's sealed header and trailer for n blobs.
func headerSize(n, overhead int) int64 {
	return pack.PackSize(nil, overhead) + int64(n)*packEntrySize
}

// PrunePlan is the outcome of PlanPrune: which packs to delete, which to
// repack and which index files to replace. Execute carries it out once.
type PrunePlan struct {
	used    *blobSet
	packs   map[pack.ID]*prunePack // every indexed or stored pack
	files   map[string][]pack.ID   // the index files the plan read
	remove  map[pack.ID]struct{}   // indexed packs to delete: unused and repacked
	repack  []pack.ID
	replace []string // index files that list a pack in remove
	summary PruneSummary
	done    bool
}

// Summary returns the counts of the plan.
func (p *PrunePlan) Summary() PruneSummary { return p.summary }

// PlanPrune decides what a prune does. The caller holds a lock (shared is
// enough: backups may run meanwhile). It brings the index up to date, marks
// every blob live reports, and classifies every pack: unused (deleted),
// partly used (repacked when it helps reach opts.MaxUnused within
// opts.MaxRepackSize) or kept. Stored packs that no index file lists are
// counted but deleted only by Execute's exclusive step. Memory: the index
// (see package index), 44 bytes per indexed blob for the set of used blobs,
// and about 150 bytes per pack.
//
// A snapshot that refers to a blob no index file lists, or to a pack that
// is not stored, makes PlanPrune fail: the repository needs `check`.
func PlanPrune(ctx context.Context, r *Repository, live LiveSet, opts PruneOptions) (*PrunePlan, error) {
	if opts.MaxUnused < 0 || opts.MaxRepackSize < 0 {
		return nil, fmt.Errorf("repo: prune: negative limits (max unused %v%%, max repack size %d)", opts.MaxUnused, opts.MaxRepackSize)
	}
	if _, err := r.RefreshIndex(ctx); err != nil {
		return nil, fmt.Errorf("repo: prune: %w", err)
	}
	p := &PrunePlan{used: newBlobSet(r.idx.Len()), packs: make(map[pack.ID]*prunePack)}
	if err := live(ctx, p.used.insert); err != nil {
		return nil, fmt.Errorf("repo: prune: mark used blobs: %w", err)
	}
	// Index files and packs are listed after marking: live may have loaded
	// index files written meanwhile, and every pack an index file lists
	// was stored before it.
	p.files = r.idxFiles.snapshot()
	for _, ids := range p.files {
		for _, id := range ids {
			p.pack(id).indexed = true
		}
	}
	err := r.be.List(ctx, backend.Pack, func(fi backend.FileInfo) error {
		id, err := pack.ParseID(fi.Name)
		if err != nil {
			return nil // not a pack name: not ours to delete
		}
		p.pack(id).size = fi.Size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repo: prune: list packs: %w", err)
	}

	var indexedUsed int
	r.idx.Each(func(h chunk.Handle, loc index.Location) bool {
		pp := p.pack(loc.Pack)
		pp.blobs++
		if p.used.setFlag(h, flagIndexed) {
			indexedUsed++
			pp.usedBlobs++
			pp.usedBytes += int64(loc.Length)
		}
		return true
	})
	if missing := p.used.len() - indexedUsed; missing > 0 {
		return nil, fmt.Errorf("repo: prune: %d blobs used by snapshots are in no index file; run check", missing)
	}
	if err := p.classify(r, opts); err != nil {
		return nil, err
	}
	return p, nil
}

// pack returns the plan's record of pack id, creating it.
func (p *PrunePlan) pack(id pack.ID) *prunePack {
	pp := p.packs[id]
	if pp == nil {
		pp = &prunePack{size: -1}
		p.packs[id] = pp
	}
	return pp
}

// classify sorts the packs into delete, repack and keep, and fills in the
// summary.
func (p *PrunePlan) classify(r *Repository, opts PruneOptions) error {
	overhead := r.key.Overhead()
	s := &p.summary
	p.remove = make(map[pack.ID]struct{})
	var partly []pack.ID
	for id, pp := range p.packs {
		if pp.size >= 0 {
			s.BytesBefore += pp.size
		}
		s.BlobsUsed += int64(pp.usedBlobs)
		s.BlobsUnused += int64(pp.blobs - pp.usedBlobs)
		s.BytesUsed += pp.usedBytes
		switch {
		case !pp.indexed:
			s.PacksUnindexed++
			s.BytesUnindexed += pp.size
		case pp.size < 0 && pp.usedBlobs > 0:
			return fmt.Errorf("repo: prune: pack %v holds %d used blobs but is not stored; run check", id.Short(), pp.usedBlobs)
		case pp.size < 0:
			s.PacksMissing++
			p.remove[id] = struct{}{}
		case pp.usedBlobs == 0:
			s.PacksDelete++
			s.BytesDelete += pp.size
			s.BytesUnused += pp.size
			p.remove[id] = struct{}{}
		case pp.unused(overhead) <= 0:
			s.PacksKeep++
			s.BytesKeep += pp.size
		default:
			s.BytesUnused += pp.unused(overhead)
			partly = append(partly, id)
		}
	}

	// Repack the packs with the largest unused share first: they free the
	// most bytes per byte copied. Stop when what is left unused is within
	// MaxUnused percent of the used bytes.
	slices.SortFunc(partly, func(a, b pack.ID) int {
		pa, pb := p.packs[a], p.packs[b]
		// ua/sa > ub/sb, compared without division.
		if c := cmp.Compare(pb.unused(overhead)*pa.size, pa.unused(overhead)*pb.size); c != 0 {
			return c
		}
		return bytes.Compare(a[:], b[:])
	})
	var left int64
	copiedBlobs := 0
	for _, id := range partly {
		left += p.packs[id].unused(overhead)
	}
	limit := int64(math.MaxInt64)
	if f := opts.MaxUnused / 100 * float64(s.BytesUsed); f < math.MaxInt64 {
		limit = int64(f)
	}
	for _, id := range partly {
		pp := p.packs[id]
		fits := opts.MaxRepackSize == 0 || s.BytesRepack+pp.size <= opts.MaxRepackSize
		if left > limit && fits {
			p.repack = append(p.repack, id)
			p.remove[id] = struct{}{}
			s.PacksRepack++
			s.BytesRepack += pp.size
			s.BytesRepackCopy += pp.usedBytes
			copiedBlobs += pp.usedBlobs
			left -= pp.unused(overhead)
			continue
		}
		s.PacksKeep++
		s.BytesKeep += pp.size
	}
	s.BytesUnusedAfter = left

	for name, ids := range p.files {
		for _, id := range ids {
			if _, ok := p.remove[id]; ok {
				p.replace = append(p.replace, name)
				break
			}
		}
	}
	slices.Sort(p.replace)
	s.IndexFilesReplace = len(p.replace)
	// The new packs hold the copied blobs, their header entries, and one
	// fixed header part per PackSize of copied bytes or part thereof.
	copied := s.BytesRepackCopy
	if copied > 0 {
		copied += headerSize(copiedBlobs, overhead) + headerSize(0, overhead)*(copied/int64(r.cfg.PackSize))
	}
	s.BytesAfter = s.BytesKeep + copied
	return nil
}

// Execute carries out the plan; a plan is executed at most once. Under the
// caller's shared lock it copies the used blobs of the packs to repack
// into new packs, stores them with their index files, and stores index
// files that replace the ones listing a pack to delete (without those
// packs). Then, under the exclusive lock (see PruneOptions.Exclusive), it
// marks the snapshots written since the plan, keeps any pack to delete
// that one of them needs, and removes the replaced index files. Last, with
// no lock needed because no index file lists them any more, it removes the
// packs: those of the plan and those that no index file listed at the
// exclusive step (leftovers of interrupted backups and prunes).
//
// An interruption at any moment leaves a repository in which every blob of
// every snapshot is stored and indexed; the next prune finishes the job.
// After Execute the in-memory index may still list removed packs; call
// RefreshIndex before using it again.
func (p *PrunePlan) Execute(ctx context.Context, r *Repository, live LiveSet, opts PruneOptions) (PruneResult, error) {
	var res PruneResult
	if p.done {
		return res, errors.New("repo: prune: plan already executed")
	}
	p.done = true
	e := &pruneExec{p: p, r: r, opts: opts, res: &res}
	if err := e.repackAll(ctx); err != nil {
		return res, err
	}
	if err := e.writeReplacements(ctx); err != nil {
		return res, err
	}
	release := func() {}
	if opts.Exclusive != nil {
		var err error
		if release, err = opts.Exclusive(ctx); err != nil {
			return res, fmt.Errorf("repo: prune: %w", err)
		}
	}
	doomed, err := e.exclusiveStep(ctx, live)
	release()
	if err != nil {
		return res, err
	}
	return res, e.removePacks(ctx, doomed)
}

// pruneExec is the state of one Execute.
type pruneExec struct {
	p    *PrunePlan
	r    *Repository
	opts PruneOptions
	res  *PruneResult

	// written lists the index files this Execute stored.
	written []string

	// reportMu serialises calls of opts.Report.
	reportMu sync.Mutex
}

func (e *pruneExec) report(step PruneStep, done, total int) {
	if e.opts.Report == nil {
		return
	}
	e.reportMu.Lock()
	defer e.reportMu.Unlock()
	e.opts.Report(PruneEvent{Step: step, Done: done, Total: total})
}

// repackAll copies the used blobs of the packs to repack into new packs
// and flushes them with their index files.
func (e *pruneExec) repackAll(ctx context.Context) error {
	if len(e.p.repack) == 0 {
		return nil
	}
	r := e.r
	before := r.Stats()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(repackWorkers)
	var mu sync.Mutex
	done := 0
	for _, id := range e.p.repack {
		g.Go(func() error {
			if err := e.repack(gctx, ctx, id); err != nil {
				return err
			}
			mu.Lock()
			done++
			n := done
			mu.Unlock()
			e.report(PruneStepRepack, n, len(e.p.repack))
			return nil
		})
	}
	err := g.Wait()
	// Flush also when a copy failed: the packs already uploaded get their
	// index file, and the session's error is cleared.
	ferr := r.Flush(ctx)
	if err != nil {
		return fmt.Errorf("repo: prune: repack: %w", err)
	}
	if ferr != nil {
		return fmt.Errorf("repo: prune: repack: %w", ferr)
	}
	after := r.Stats()
	e.res.PacksWritten = int(after.PacksWritten - before.PacksWritten)
	e.res.IndexFilesWritten += int(after.IndexFilesWritten - before.IndexFilesWritten)
	e.report(PruneStepFlush, 1, 1)
	return nil
}

// repack copies the used blobs that the index locates in pack id into the
// write session, verifying each one first. It reads under ctx and stops
// when ctx ends; blobs go to the write session under sessionCtx, which
// must outlive the uploads they start (until Flush).
func (e *pruneExec) repack(ctx, sessionCtx context.Context, id pack.ID) error {
	r := e.r
	size := e.p.packs[id].size
	h := backend.Handle{Type: backend.Pack, Name: id.String()}
	var buf []byte
	// The whole pack is read into memory before any blob is copied: Load
	// may call the callback again after a transient error.
	err := r.be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		buf = make([]byte, size)
		_, err := io.ReadFull(rd, buf)
		return err
	})
	if err != nil {
		return fmt.Errorf("load pack %v: %w", id.Short(), err)
	}
	r.stats.bytesDownloaded.Add(size)
	entries, err := pack.ReadHeader(bytes.NewReader(buf), size, r.key, id)
	if err != nil {
		return err
	}
	var plain []byte
	for _, en := range entries {
		loc, ok := r.idx.Lookup(en.Handle)
		if !ok || loc.Pack != id || loc.Offset != en.Offset || !e.p.used.has(en.Handle) {
			continue // unused, or a duplicate whose counted copy is elsewhere
		}
		stored := buf[en.Offset : en.Offset+en.Length] // ReadHeader checked the tiling
		plain, err = pack.DecodeBlob(plain[:0], r.key, en.Handle, stored)
		if err != nil {
			return fmt.Errorf("pack %v: blob %v: %w", id.Short(), en.Handle.ID.Short(), err)
		}
		if got := r.hasher.Sum(plain); got != en.Handle.ID {
			return fmt.Errorf("pack %v: blob %v: content hashes to %v (damaged)", id.Short(), en.Handle.ID.Short(), got.Short())
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.addBlob(sessionCtx, en.Handle, stored, int(en.RawLength), en.Codec); err != nil {
			return fmt.Errorf("copy blob %v: %w", en.Handle.ID.Short(), err)
		}
	}
	return nil
}

// writeReplacements stores index files that list the packs of the files to
// replace, without the packs to delete and without packs that a file not
// being replaced lists too. A crash afterwards leaves packs listed twice,
// which readers accept.
func (e *pruneExec) writeReplacements(ctx context.Context) error {
	p := e.p
	replaced := make(map[string]struct{}, len(p.replace))
	for _, name := range p.replace {
		replaced[name] = struct{}{}
	}
	listed := make(map[pack.ID]struct{}) // by a file that stays, or written here
	for name, ids := range p.files {
		if _, ok := replaced[name]; !ok {
			for _, id := range ids {
				listed[id] = struct{}{}
			}
		}
	}
	var batch []index.PackBlobs
	blobs := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		name, err := e.r.saveIndexFile(ctx, batch)
		if err != nil {
			return fmt.Errorf("repo: prune: write index file: %w", err)
		}
		e.written = append(e.written, name)
		e.res.IndexFilesWritten++
		e.report(PruneStepIndex, e.res.IndexFilesWritten, 0)
		batch, blobs = nil, 0
		return nil
	}
	for _, name := range p.replace {
		f, err := e.r.loadIndexFile(ctx, name)
		if err != nil {
			return fmt.Errorf("repo: prune: %w", err)
		}
		for _, pb := range f.Packs {
			_, gone := p.remove[pb.ID]
			_, dup := listed[pb.ID]
			if gone || dup {
				continue
			}
			listed[pb.ID] = struct{}{}
			batch = append(batch, pb)
			blobs += len(pb.Blobs)
			if blobs >= indexMaxBlobs {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// exclusiveStep runs under the exclusive lock. It checks that no other
// prune removed index files, loads the index files written since the
// plan, marks the snapshots written since the plan and keeps the packs
// they need, works out the leftover packs, and removes the replaced index
// files. It returns the packs to remove with their sizes.
func (e *pruneExec) exclusiveStep(ctx context.Context, live LiveSet) (map[pack.ID]int64, error) {
	p, r := e.p, e.r
	names, err := r.listIndexFiles(ctx)
	if err != nil {
		return nil, fmt.Errorf("repo: prune: %w", err)
	}
	current := make(map[string]struct{}, len(names))
	for _, name := range names {
		current[name] = struct{}{}
	}
	for name := range p.files {
		if _, ok := current[name]; !ok {
			return nil, fmt.Errorf("%w (index file %s is gone)", ErrPruneConflict, shortName(backend.Index, name))
		}
	}
	for _, name := range e.written {
		if _, ok := current[name]; !ok {
			return nil, fmt.Errorf("%w (index file %s is gone)", ErrPruneConflict, shortName(backend.Index, name))
		}
	}
	var fresh []string
	for _, name := range names {
		if !r.idxFiles.has(name) {
			fresh = append(fresh, name)
		}
	}
	if err := r.loadIndexFiles(ctx, fresh); err != nil {
		return nil, fmt.Errorf("repo: prune: %w", err)
	}

	// Snapshots written since the plan: a blob they use that the plan
	// found unused and whose pack is to be removed keeps that pack.
	var mu sync.Mutex
	rescue := make(map[pack.ID]struct{})
	mark := func(h chunk.Handle) bool {
		if !p.used.insert(h) {
			return false
		}
		if loc, ok := r.idx.Lookup(h); ok {
			if _, doomed := p.remove[loc.Pack]; doomed {
				mu.Lock()
				rescue[loc.Pack] = struct{}{}
				mu.Unlock()
			}
		}
		return true
	}
	if err := live(ctx, mark); err != nil {
		return nil, fmt.Errorf("repo: prune: mark new snapshots: %w", err)
	}
	e.report(PruneStepExclusive, 1, 1)

	// A pack listed by a file that stays listed (written by someone else
	// since the plan, e.g. another prune's replacement) is kept too.
	replaced := make(map[string]struct{}, len(p.replace))
	for _, name := range p.replace {
		replaced[name] = struct{}{}
	}
	indexed := make(map[pack.ID]struct{})
	for name, ids := range r.idxFiles.snapshot() {
		if _, ok := current[name]; !ok {
			continue
		}
		if _, ok := replaced[name]; ok {
			continue
		}
		for _, id := range ids {
			indexed[id] = struct{}{}
			delete(p.remove, id)
		}
	}
	// The rescued packs are listed only by files being replaced: list them
	// in a new file before those are removed.
	var rescued []index.PackBlobs
	for _, id := range slices.SortedFunc(mapKeys(rescue), comparePackIDs) {
		if _, still := p.remove[id]; !still {
			continue
		}
		entries, err := r.LoadPackHeader(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("repo: prune: keep pack: %w", err)
		}
		rescued = append(rescued, index.PackBlobs{ID: id, Blobs: entries})
		delete(p.remove, id)
		indexed[id] = struct{}{}
		e.res.PacksRescued++
	}
	if len(rescued) > 0 {
		if _, err := r.saveIndexFile(ctx, rescued); err != nil {
			return nil, fmt.Errorf("repo: prune: write index file: %w", err)
		}
		e.res.IndexFilesWritten++
	}

	doomed := make(map[pack.ID]int64)
	for id := range p.remove {
		doomed[id] = max(p.packs[id].size, 0)
	}
	// Leftovers: packs stored at planning time that no index file listed
	// then or lists now. Every writer indexes its packs before it releases
	// its lock, so under the exclusive lock these belong to no one.
	for id, pp := range p.packs {
		if _, ok := indexed[id]; !ok && pp.size >= 0 && !pp.indexed {
			doomed[id] = pp.size
		}
	}

	err = e.removeFiles(ctx, backend.Index, p.replace, func(int) {
		e.res.IndexFilesRemoved++
		e.report(PruneStepRemoveIndex, e.res.IndexFilesRemoved, len(p.replace))
	})
	if err != nil {
		return nil, err
	}
	return doomed, nil
}

// removePacks removes the packs in doomed; a pack already gone is no error.
func (e *pruneExec) removePacks(ctx context.Context, doomed map[pack.ID]int64) error {
	ids := slices.SortedFunc(mapKeys(doomed), comparePackIDs)
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = id.String()
	}
	return e.removeFiles(ctx, backend.Pack, names, func(i int) {
		e.res.PacksRemoved++
		e.res.BytesRemoved += doomed[ids[i]]
		e.report(PruneStepRemovePack, e.res.PacksRemoved, len(ids))
	})
}

// removeFiles removes the files names of type t, removeWorkers at a time,
// calling done with the name's position (one call at a time) after each. A
// file already gone is no error.
func (e *pruneExec) removeFiles(ctx context.Context, t backend.FileType, names []string, done func(i int)) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(removeWorkers)
	var mu sync.Mutex
	for i, name := range names {
		g.Go(func() error {
			err := e.r.RemoveFile(gctx, t, name)
			if err != nil && !errors.Is(err, backend.ErrNotExist) {
				return fmt.Errorf("repo: prune: %w", err)
			}
			mu.Lock()
			defer mu.Unlock()
			done(i)
			return nil
		})
	}
	return g.Wait()
}

func comparePackIDs(a, b pack.ID) int { return bytes.Compare(a[:], b[:]) }

// mapKeys returns an iterator over the keys of m.
func mapKeys[K comparable, V any](m map[K]V) func(yield func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Flags of a blob in a blobSet.
const (
	flagIndexed byte = 1 << 2 // the index locates the blob (set by PlanPrune)
	kindMask    byte = 3      // chunk.KindData (1) or chunk.KindTree (2); 0: empty slot
)

// blobSet is a set of blob handles, each with a few flags: a flat
// open-addressing table (linear probing) of 33-byte slots, the 32-byte ID
// followed by a byte holding the kind (low 2 bits) and flags. It is kept at
// most 3/4 full, so it costs 44 to 88 bytes per blob, 44 when sized for
// the number of blobs in advance (as PlanPrune does from the index) and
// grown by doubling otherwise. It is safe for concurrent use.
type blobSet struct {
	// mu guards the fields below.
	mu    sync.Mutex
	slots []byte
	n     int
}

const (
	blobSlot   = chunk.IDSize + 1
	minSetSize = 1024
)

// newBlobSet returns a set with room for n blobs before it grows.
func newBlobSet(n int) *blobSet {
	return &blobSet{slots: make([]byte, blobSlot*max(minSetSize, n+n/3+1))}
}

func (s *blobSet) capLocked() int { return len(s.slots) / blobSlot }

// findLocked returns the slot of h, or of the empty slot where h belongs.
func (s *blobSet) findLocked(h chunk.Handle) (int, bool) {
	c := s.capLocked()
	// IDs are keyed hashes, uniformly distributed: 8 of their bytes make a
	// good hash, mapped onto [0, c) by a multiply-shift.
	x := binary.LittleEndian.Uint64(h.ID[8:16]) ^ uint64(h.Kind)*0x9e3779b97f4a7c15
	i, _ := bits.Mul64(x, uint64(c))
	for {
		slot := s.slots[int(i)*blobSlot : (int(i)+1)*blobSlot]
		k := chunk.Kind(slot[chunk.IDSize] & kindMask)
		if k == 0 {
			return int(i), false
		}
		if k == h.Kind && chunk.ID(slot[:chunk.IDSize]) == h.ID {
			return int(i), true
		}
		if i++; int(i) == c {
			i = 0
		}
	}
}

// insert adds h and reports whether it was not in the set before.
func (s *blobSet) insert(h chunk.Handle) bool {
	if !h.Kind.Valid() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.findLocked(h)
	if ok {
		return false
	}
	if 4*(s.n+1) > 3*s.capLocked() {
		s.growLocked()
		i, _ = s.findLocked(h)
	}
	slot := s.slots[i*blobSlot : (i+1)*blobSlot]
	copy(slot, h.ID[:])
	slot[chunk.IDSize] = byte(h.Kind)
	s.n++
	return true
}

// growLocked doubles the table.
func (s *blobSet) growLocked() {
	old := s.slots
	s.slots = make([]byte, 2*len(old))
	for off := 0; off < len(old); off += blobSlot {
		slot := old[off : off+blobSlot]
		k := chunk.Kind(slot[chunk.IDSize] & kindMask)
		if k == 0 {
			continue
		}
		i, _ := s.findLocked(chunk.Handle{ID: chunk.ID(slot[:chunk.IDSize]), Kind: k})
		copy(s.slots[i*blobSlot:], slot)
	}
}

// has reports whether h is in the set.
func (s *blobSet) has(h chunk.Handle) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.findLocked(h)
	return ok
}

// setFlag sets flag f on h and reports whether h is in the set (a handle
// not in the set is not added).
func (s *blobSet) setFlag(h chunk.Handle, f byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.findLocked(h)
	if ok {
		s.slots[i*blobSlot+chunk.IDSize] |= f
	}
	return ok
}

// len returns the number of blobs in the set.
func (s *blobSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}
