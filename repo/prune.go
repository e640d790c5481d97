package repo

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

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
	// repackWorkers is how many packs are copied at once, each with one
	// ranged Load at a time. A worker reads a range into its range buffer
	// (at most repackMaxRange, or one blob when a blob is larger: at most
	// pack.MaxBlobSize + 41 bytes, 8 MiB + 41 for the largest chunk) and
	// opens one blob at a time into its plaintext buffer, through
	// pack.DecodeBlob's scratch buffer (each as large as the largest
	// blob): 2 × (4 + 2 × 8) MiB at worst, about 2 × 4 MiB for 8 KiB
	// image chunks. No pack is held whole. Two keep a read and the copy into
	// the write session overlapping on the 2-core machines we target.
	repackWorkers = 2
	// repackMaxGap is the largest run of unneeded bytes between two used
	// blobs of a pack that repack reads and discards rather than starting
	// a new ranged Load. 256 KiB is about one seek of a disk (≈ 2 ms at
	// 150 MB/s) and far below the cost of one request to a remote backend,
	// so coalescing reads at most 256 KiB more per blob than it keeps and
	// saves most requests where used blobs are scattered.
	repackMaxGap = 256 * kiB
	// repackMaxRange bounds a coalesced range, and so a worker's range
	// buffer: a quarter of a default pack. Each range is read with a
	// single read of its exact length, which a local disk serves without
	// read-ahead beyond it (the kernel treats it as one random read; reads
	// blob by blob through a stream looked sequential and were read ahead
	// up to 8 MiB past the range, 2.4 × the bytes needed on our test VM).
	repackMaxRange = 4 * miB
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
	// percent of the repository's bytes after it (used + unused), as
	// restic's --max-unused: unused ≤ MaxUnused / (100 − MaxUnused) × used.
	// The partly used packs with the largest unused share are repacked
	// until the unused bytes left in the others are within the limit. 0
	// repacks every partly used pack; 100 or more, none.
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
	BytesRepackRead   int64 `json:"bytes_repack_read"`   // bytes the ranged loads of the repack read: the copied blobs and the small gaps between them
	RepackLoads       int   `json:"repack_loads"`        // ranged loads of the repack
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
	// BytesReadRepack counts the bytes loaded from the packs to repack
	// (reads repeated by a retrying backend included), RepackLoads the
	// ranged loads. Everything else prune reads is metadata: index
	// files, snapshots, trees and content lists, pack headers.
	BytesReadRepack int64 `json:"bytes_read_repack"`
	RepackLoads     int   `json:"repack_loads"`
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
	used    *usedSet
	packs   map[pack.ID]*prunePack // every indexed or stored pack
	files   map[string][]pack.ID   // the index files the plan read
	remove  map[pack.ID]struct{}   // indexed packs to delete: unused and repacked
	repack  []pack.ID
	copy    map[pack.ID][][]repackBlob // the ranges to read from each pack to repack
	replace []string                   // index files that list a pack in remove
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
// (see package index), about 11 bytes per indexed blob and 44 to 88 per
// used tree blob for the set of used blobs (see usedSet), about 150 bytes
// per pack, and 48 bytes per blob the repack will copy.
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
	p := &PrunePlan{used: newUsedSet(r.idx.Len()), packs: make(map[pack.ID]*prunePack)}
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

	r.idx.Each(func(h chunk.Handle, loc index.Location) bool {
		pp := p.pack(loc.Pack)
		pp.blobs++
		if p.used.setIndexed(h) {
			pp.usedBlobs++
			pp.usedBytes += int64(loc.Length)
		}
		return true
	})
	if missing := p.used.unindexed(); missing > 0 {
		return nil, fmt.Errorf("repo: prune: %d blobs used by snapshots are in no index file; run check", missing)
	}
	if err := p.classify(r, opts); err != nil {
		return nil, err
	}
	if err := p.planCopies(r); err != nil {
		return nil, err
	}
	return p, nil
}

// repackBlob is a used blob to copy out of a pack being repacked, where
// the index locates it.
type repackBlob struct {
	h           chunk.Handle
	off, length uint32
}

func (b repackBlob) end() int64 { return int64(b.off) + int64(b.length) }

// planCopies finds, with one pass over the index, the used blobs whose
// counted copy is in a pack to repack, and groups those of each pack into
// ranges read by one Load each: neighbours whose gap is below
// repackMaxGap share a range. Memory: about 48 bytes per blob copied.
func (p *PrunePlan) planCopies(r *Repository) error {
	if len(p.repack) == 0 {
		return nil
	}
	blobs := make(map[pack.ID][]repackBlob, len(p.repack))
	for _, id := range p.repack {
		blobs[id] = make([]repackBlob, 0, p.packs[id].usedBlobs)
	}
	r.idx.Each(func(h chunk.Handle, loc index.Location) bool {
		if bs, ok := blobs[loc.Pack]; ok && p.used.has(h) {
			blobs[loc.Pack] = append(bs, repackBlob{h: h, off: loc.Offset, length: loc.Length})
		}
		return true
	})
	p.copy = make(map[pack.ID][][]repackBlob, len(p.repack))
	for _, id := range p.repack {
		ranges, err := repackRanges(blobs[id], p.packs[id].size, repackMaxRange)
		if err != nil {
			return fmt.Errorf("repo: prune: pack %v: %w; run check", id.Short(), err)
		}
		p.copy[id] = ranges
		for _, rg := range ranges {
			p.summary.RepackLoads++
			p.summary.BytesRepackRead += rg[len(rg)-1].end() - int64(rg[0].off)
		}
	}
	return nil
}

// copied reports whether the repack copies blob h from loc.
func (p *PrunePlan) copied(h chunk.Handle, loc index.Location) bool {
	for _, rg := range p.copy[loc.Pack] {
		if loc.Offset < rg[0].off || int64(loc.Offset) >= rg[len(rg)-1].end() {
			continue
		}
		i, found := slices.BinarySearchFunc(rg, loc.Offset, func(b repackBlob, off uint32) int { return cmp.Compare(b.off, off) })
		return found && rg[i].h == h
	}
	return false
}

// repackRanges sorts the blobs of one pack of size bytes by offset and
// splits them into ranges whose gaps are below repackMaxGap and that are
// at most maxRange long (or one blob). Blobs that overlap or end past the
// pack (an index that does not match the pack) are an error.
func repackRanges(bs []repackBlob, size, maxRange int64) ([][]repackBlob, error) {
	slices.SortFunc(bs, func(a, b repackBlob) int { return cmp.Compare(a.off, b.off) })
	var ranges [][]repackBlob
	start := 0
	for i, b := range bs {
		if b.length == 0 || b.end() > size {
			return nil, fmt.Errorf("index locates blob %v at %d+%d, outside the pack's %d bytes", b.h.ID.Short(), b.off, b.length, size)
		}
		if i == 0 {
			continue
		}
		prev := bs[i-1].end()
		if int64(b.off) < prev {
			return nil, fmt.Errorf("index locates blobs %v and %v overlapping at %d", bs[i-1].h.ID.Short(), b.h.ID.Short(), b.off)
		}
		if int64(b.off)-prev >= repackMaxGap || b.end()-int64(bs[start].off) > maxRange {
			ranges = append(ranges, bs[start:i])
			start = i
		}
	}
	if len(bs) > 0 {
		ranges = append(ranges, bs[start:])
	}
	return ranges, nil
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
	// MaxUnused percent of what is left (used + unused), as restic does.
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
	if m := opts.MaxUnused; m < 100 {
		if f := m / (100 - m) * float64(s.BytesUsed); f < math.MaxInt64 {
			limit = int64(f)
		}
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
	// bytesRead and loads count the repack's reads from packs.
	bytesRead, loads atomic.Int64

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
	// bufs holds one repackBuffers per worker: a worker takes one when it
	// starts a pack and gives it back when it is done.
	bufs := make(chan *repackBuffers, repackWorkers)
	for range repackWorkers {
		bufs <- new(repackBuffers)
	}
	var mu sync.Mutex
	done := 0
	for _, id := range e.p.repack {
		g.Go(func() error {
			b := <-bufs // never blocks: SetLimit bounds the workers
			err := e.repack(gctx, ctx, id, b)
			bufs <- b
			if err != nil {
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
	e.res.BytesReadRepack = e.bytesRead.Load()
	e.res.RepackLoads = int(e.loads.Load())
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

// repackBuffers are one repack worker's buffers: rg for a range, plain
// for one blob's plaintext. Each grows to the largest it had to hold.
type repackBuffers struct {
	rg, plain []byte
}

// repack copies the used blobs that the index locates in pack id into the
// write session, reading only the ranges planned for them. It reads under
// ctx and stops when ctx ends; blobs go to the write session under
// sessionCtx, which must outlive the uploads they start (until Flush).
func (e *pruneExec) repack(ctx, sessionCtx context.Context, id pack.ID, b *repackBuffers) error {
	for _, rg := range e.p.copy[id] {
		if err := e.repackRange(ctx, sessionCtx, id, rg, b); err != nil {
			return err // names the pack
		}
	}
	return nil
}

// repackRange reads the blobs rg of pack id (in offset order) and the gaps
// between them with one ranged Load (Repository.loadRange, which opens
// each blob and hashes its plaintext: verify on read) and copies each
// blob's sealed bytes to the write session unchanged.
func (e *pruneExec) repackRange(ctx, sessionCtx context.Context, id pack.ID, rg []repackBlob, b *repackBuffers) error {
	r := e.r
	e.loads.Add(1)
	err := r.loadRange(ctx, id, rg, b, func(bl repackBlob, stored, plain []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.addBlob(sessionCtx, bl.h, stored, len(plain), storedCodec(stored, plain, r.key.Overhead())); err != nil {
			return fmt.Errorf("copy blob %v: %w", bl.h.ID.Short(), err)
		}
		return nil
	})
	if err == nil {
		e.bytesRead.Add(rg[len(rg)-1].end() - int64(rg[0].off))
	}
	return err
}

// storedCodec returns the codec of stored, a sealed blob whose plaintext is
// plain. It follows from the lengths (docs/FORMAT.md): a stored blob is
// the sealed codec byte ‖ payload, and a compressed payload is kept only
// when it is shorter than the plaintext, so the payload has the
// plaintext's length exactly when it is not compressed.
func storedCodec(stored, plain []byte, overhead int) pack.Codec {
	if len(stored) == len(plain)+1+overhead {
		return pack.CodecNone
	}
	return pack.CodecZstd
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
	// A data blob is checked even when the set reports it marked before:
	// the set knows data blobs by a 64-bit fingerprint, and a new blob
	// that collides with a marked one must still rescue its pack unless
	// the repack copied it (a blob marked by the plan was). Trees are
	// known exactly, and one marked before had its pack checked then.
	mark := func(h chunk.Handle) bool {
		isNew := p.used.insert(h)
		if !isNew && h.Kind != chunk.KindData {
			return false
		}
		if loc, ok := r.idx.Lookup(h); ok {
			if _, doomed := p.remove[loc.Pack]; doomed && (isNew || !p.copied(h, loc)) {
				mu.Lock()
				rescue[loc.Pack] = struct{}{}
				mu.Unlock()
			}
		}
		return isNew
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

// usedSet is the set of used blobs of a prune. Tree blobs (and any kind
// but data) are kept exactly, in a blobSet, because the live set skips
// everything below a tree it is told was marked before: a false "marked"
// would lose what is below. Data blobs have nothing below them, so they
// are kept as 64-bit fingerprints in an fpSet: a collision (probability
// about n²/2⁶⁴ for n blobs, 5·10⁻⁶ for 10 million) only makes an unused
// blob count as used and stay. Memory: about 11 bytes per indexed blob for
// the data set sized in advance, plus 44 to 88 bytes per tree blob (that
// table grows by doubling), instead of 44 bytes per blob for all. It is
// safe for concurrent use.
type usedSet struct {
	trees *blobSet
	data  *fpSet
}

// newUsedSet returns a set with room for n data blobs before it grows.
func newUsedSet(n int) *usedSet {
	return &usedSet{trees: newBlobSet(0), data: newFPSet(n)}
}

// insert adds h and reports whether it was not in the set before.
func (u *usedSet) insert(h chunk.Handle) bool {
	if h.Kind == chunk.KindData {
		return u.data.insert(h.ID)
	}
	return u.trees.insert(h)
}

// has reports whether h is in the set.
func (u *usedSet) has(h chunk.Handle) bool {
	if h.Kind == chunk.KindData {
		return u.data.has(h.ID)
	}
	return u.trees.has(h)
}

// setIndexed records that the index locates h and reports whether h is
// in the set (a handle not in the set is not added).
func (u *usedSet) setIndexed(h chunk.Handle) bool {
	if h.Kind == chunk.KindData {
		return u.data.setIndexed(h.ID)
	}
	return u.trees.setFlag(h, flagIndexed)
}

// unindexed returns how many blobs of the set were never passed to
// setIndexed.
func (u *usedSet) unindexed() int { return u.trees.without(flagIndexed) + u.data.unindexed() }

// fpSet is a set of data blob IDs by fingerprint: bytes 8-16 of the ID
// (a keyed hash, uniformly distributed) with the top bit cleared, 0
// mapped to 1. The top bit of a slot marks the blob indexed; 0 is an empty
// slot. A flat open-addressing table (linear probing) of 8-byte slots at
// most 3/4 full: 10.7 bytes per blob when sized in advance. It is safe for
// concurrent use.
type fpSet struct {
	// mu guards the fields below.
	mu    sync.Mutex
	slots []uint64
	n     int
}

const fpIndexed = 1 << 63

func newFPSet(n int) *fpSet { return &fpSet{slots: make([]uint64, max(minSetSize, n+n/3+1))} }

func fingerprint(id chunk.ID) uint64 {
	fp := binary.LittleEndian.Uint64(id[8:16]) &^ fpIndexed
	if fp == 0 {
		fp = 1
	}
	return fp
}

// findLocked returns the slot of fp, or of the empty slot where it
// belongs.
func (s *fpSet) findLocked(fp uint64) (int, bool) {
	c := len(s.slots)
	i, _ := bits.Mul64(fp*0x9e3779b97f4a7c15, uint64(c))
	for {
		v := s.slots[i]
		if v == 0 {
			return int(i), false
		}
		if v&^fpIndexed == fp {
			return int(i), true
		}
		if i++; int(i) == c {
			i = 0
		}
	}
}

func (s *fpSet) insert(id chunk.ID) bool {
	fp := fingerprint(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.findLocked(fp)
	if ok {
		return false
	}
	if 4*(s.n+1) > 3*len(s.slots) {
		old := s.slots
		s.slots = make([]uint64, 2*len(old))
		for _, v := range old {
			if v != 0 {
				j, _ := s.findLocked(v &^ fpIndexed)
				s.slots[j] = v
			}
		}
		i, _ = s.findLocked(fp)
	}
	s.slots[i] = fp
	s.n++
	return true
}

func (s *fpSet) has(id chunk.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.findLocked(fingerprint(id))
	return ok
}

func (s *fpSet) setIndexed(id chunk.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.findLocked(fingerprint(id))
	if ok {
		s.slots[i] |= fpIndexed
	}
	return ok
}

func (s *fpSet) unindexed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.slots {
		if v != 0 && v&fpIndexed == 0 {
			n++
		}
	}
	return n
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

// without returns the number of blobs in the set without flag f.
func (s *blobSet) without(f byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for off := 0; off < len(s.slots); off += blobSlot {
		if fl := s.slots[off+chunk.IDSize]; fl&kindMask != 0 && fl&f == 0 {
			n++
		}
	}
	return n
}

// len returns the number of blobs in the set.
func (s *blobSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}
