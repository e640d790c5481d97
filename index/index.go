package index

import (
	"sort"
	"sync"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
)

// Location says where a sealed blob is stored.
type Location struct {
	Pack   pack.ID
	Offset uint32 // offset of the sealed blob in the pack
	Length uint32 // length of the sealed blob
}

// numKinds is the number of blob kinds; kind k is stored in slot k-1.
const numKinds = 2

// Memory layout.
//
// A blob's location is kept as a position in a virtual address space in
// which every pack segment (see segment) occupies a distinct range: 6 bytes
// instead of a 3-byte pack number plus a 4-byte offset. The pack and offset
// are found again by a binary search over the segments. Positions below
// 1<<48 (256 TiB of packs added in one process) are enough; the space is
// compacted when it runs out.
const (
	posBits = 48
	maxPos  = 1 << posBits

	// recentMax is how many blobs Add collects in a map before sorting them
	// into the mid-sized run. A map entry costs about 50 bytes, so this
	// holds at most ~3.5 MiB; merging into the mid run costs O(mid run).
	recentMax = 64 << 10

	// midMinMax is the smallest size at which the mid run is merged into
	// the main run; above it, the mid run may grow to len(main)/midRatio.
	// A larger mid run makes Adds cheaper and full merges rarer, at no
	// memory cost per blob (both runs use the same records).
	midMinMax = 256 << 10
	midRatio  = 8
)

// segment is a range of positions that belongs to one pack. A pack normally
// has one segment; if it is added again with blobs beyond its first
// segment's span, it gets another.
type segment struct {
	id   pack.ID
	base uint64 // position of offset 0 of the pack
	end  uint64 // base + the span of the pack's blobs added with it
}

// loc is a location inside the Index.
type loc struct {
	pos    uint64
	length uint32
}

// Index maps blob handles to locations. It is safe for concurrent use.
//
// Each kind has two sorted runs of fixed 39-byte records on the heap (see
// run): a main run and a mid run of at most about 1/8 of its size, plus a
// map of the most recently added blobs. Adds go to the map; a full map is
// merged into the mid run, and a large mid run into the main run, so merge
// costs are amortised. An Index from New keeps everything there: 39 bytes
// per blob plus a few MiB of fixed tables and about 100 bytes per pack.
//
// An Index from NewInDir or OpenFile also has disk runs (see diskRun): a
// main run that outgrows spillMin is merged into a new file-backed run, so
// the heap holds at most about 40 MiB of records per kind however many
// blobs there are, and lookups keep about 4 bytes per blob of the mappings
// resident (their tags). The sizes of disk runs grow geometrically (see
// spillRatio), so there are few of them.
//
// Lookup checks the map, then the runs; a handle is in at most one of them.
// Add, RemovePacks and Persist hold the lock exclusively, also while they
// merge (a merge of the main run of 10 million blobs takes a few hundred
// milliseconds; a spill writes its run to a file).
type Index struct {
	mu sync.RWMutex
	// The fields below are guarded by mu.
	main, mid [numKinds]run
	disk      [numKinds][]*diskRun // oldest first, each spillRatio times the next at least
	recent    map[chunk.Handle]packedLoc
	segs      []segment       // sorted by base, non-overlapping
	latest    map[pack.ID]int // index in segs of each pack's newest segment
	next      uint64          // the first unused position
	n         int             // number of blobs
	dir       string          // where disk runs are written; "" keeps them on the heap
	failed    [numKinds]int   // size of the main run at the last failed spill

	// Limits, constant after New; tests lower them to exercise merges,
	// spills and compaction with few blobs.
	recentMax, midMinMax int
	spillMin, spillRatio int
	posLimit             uint64
}

// New returns an empty Index that keeps everything on the heap.
func New() *Index { return newIndex("") }

func newIndex(dir string) *Index {
	x := &Index{
		recent:     make(map[chunk.Handle]packedLoc),
		latest:     make(map[pack.ID]int),
		dir:        dir,
		recentMax:  recentMax,
		midMinMax:  midMinMax,
		spillMin:   spillMin,
		spillRatio: spillRatio,
		posLimit:   maxPos,
	}
	if dir != "" {
		x.recentMax, x.midMinMax, x.spillMin = dirRecentMax, dirMidMinMax, dirSpillMin
	}
	return x
}

// Len returns the number of blobs in the index.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.n
}

// Add records that the blobs in entries are stored in pack id. A blob already
// in the index keeps its first location (in whichever pack), so each handle
// is counted once. Entries with an invalid kind or a length that no valid
// pack holds (1<<24 or more) are ignored; DecodeFile refuses such entries.
func (x *Index) Add(id pack.ID, entries []pack.Entry) {
	var span uint64
	for _, e := range entries {
		if valid(e) {
			span = max(span, uint64(e.Offset)+uint64(e.Length))
		}
	}
	if span == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	base := x.segmentLocked(id, span)
	for _, e := range entries {
		if !valid(e) || x.hasLocked(e.Handle) {
			continue
		}
		x.recent[e.Handle] = loc{pos: base + uint64(e.Offset), length: e.Length}.packed()
		x.n++
	}
	if len(x.recent) >= x.recentMax {
		x.flushLocked()
	}
}

// valid reports whether e can be stored in the index.
func valid(e pack.Entry) bool {
	return e.Handle.Kind.Valid() && e.Length > 0 && e.Length <= maxLength
}

// segmentLocked returns the base position for span bytes of pack id, reusing
// the pack's newest segment when the span fits in it.
func (x *Index) segmentLocked(id pack.ID, span uint64) uint64 {
	if i, ok := x.latest[id]; ok && x.segs[i].end-x.segs[i].base >= span {
		return x.segs[i].base
	}
	if x.next+span > x.posLimit {
		x.rebuildLocked(nil, true)
		if x.next+span > x.posLimit {
			panic("index: more than 256 TiB of packs in one index")
		}
	}
	x.latest[id] = len(x.segs)
	x.segs = append(x.segs, segment{id: id, base: x.next, end: x.next + span})
	x.next += span
	return x.segs[len(x.segs)-1].base
}

// flushLocked sorts the recent map into the mid runs, and merges the mid runs
// into the main runs when they have grown large.
func (x *Index) flushLocked() {
	var byKind [numKinds][]item
	for h, l := range x.recent {
		k := h.Kind - 1
		byKind[k] = append(byKind[k], item{id: h.ID, loc: getPacked(l[:])})
	}
	for k := range numKinds {
		if len(byKind[k]) == 0 {
			continue
		}
		x.mid[k] = merge(&x.mid[k], newRun(byKind[k]))
		if x.mid[k].len() > max(x.midMinMax, x.main[k].len()/midRatio) {
			x.main[k] = merge(&x.main[k], &x.mid[k])
			x.mid[k] = run{}
			if x.dir != "" && x.main[k].len() >= max(x.spillMin, 2*x.failed[k]) {
				x.spillLocked(k)
			}
		}
	}
	clear(x.recent)
	// A cleared map keeps its buckets; start afresh so that the memory of
	// the map does not stay at its peak.
	x.recent = make(map[chunk.Handle]packedLoc)
}

// hasLocked reports whether h is in the index.
func (x *Index) hasLocked(h chunk.Handle) bool {
	_, ok := x.findLocked(h)
	return ok
}

// findLocked returns the internal location of h.
func (x *Index) findLocked(h chunk.Handle) (loc, bool) {
	if l, ok := x.recent[h]; ok {
		return getPacked(l[:]), true
	}
	if !h.Kind.Valid() {
		return loc{}, false
	}
	k := h.Kind - 1
	if l, ok := x.mid[k].find(&h.ID); ok {
		return l, true
	}
	if l, ok := x.main[k].find(&h.ID); ok {
		return l, true
	}
	for i := len(x.disk[k]) - 1; i >= 0; i-- {
		if l, ok := x.disk[k][i].find(&h.ID); ok {
			return l, true
		}
	}
	return loc{}, false
}

// Has reports whether blob h is in the index.
func (x *Index) Has(h chunk.Handle) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.hasLocked(h)
}

// Lookup returns where blob h is stored.
func (x *Index) Lookup(h chunk.Handle) (Location, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	l, ok := x.findLocked(h)
	if !ok {
		return Location{}, false
	}
	return x.locationLocked(l)
}

// locationLocked resolves a position to its pack and offset. It fails only
// for a blob whose pack was removed, which RemovePacks prevents.
func (x *Index) locationLocked(l loc) (Location, bool) {
	i := x.segmentOfLocked(l.pos)
	if i < 0 {
		return Location{}, false
	}
	s := &x.segs[i]
	return Location{Pack: s.id, Offset: uint32(l.pos - s.base), Length: l.length}, true
}

// segmentOfLocked returns the index of the segment holding pos, or -1.
func (x *Index) segmentOfLocked(pos uint64) int {
	i := sort.Search(len(x.segs), func(i int) bool { return x.segs[i].end > pos })
	if i == len(x.segs) || x.segs[i].base > pos {
		return -1
	}
	return i
}

// Each calls fn for every blob in the index, in no particular order, until fn
// returns false. It holds a read lock while it runs: fn must not call methods
// of the Index. It reads disk runs sequentially and releases their pages
// behind it, so a pass over all blobs does not leave them resident.
func (x *Index) Each(fn func(h chunk.Handle, loc Location) bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	visit := func(h chunk.Handle, l loc) bool {
		where, ok := x.locationLocked(l)
		return !ok || fn(h, where)
	}
	for h, l := range x.recent {
		if !visit(h, getPacked(l[:])) {
			return
		}
	}
	for k := range numKinds {
		kind := chunk.Kind(k + 1)
		fn := func(id *chunk.ID, l loc) bool { return visit(chunk.Handle{ID: *id, Kind: kind}, l) }
		for _, r := range []*run{&x.mid[k], &x.main[k]} {
			if !r.each(nil, fn) {
				return
			}
		}
		for _, d := range x.disk[k] {
			if !d.each(newSweep(d.recs), fn) {
				return
			}
		}
	}
}

// Packs returns the packs that hold blobs of the index, each once, in the
// order they were first added.
func (x *Index) Packs() []pack.ID {
	x.mu.RLock()
	defer x.mu.RUnlock()
	ids := make([]pack.ID, 0, len(x.latest))
	seen := make(map[pack.ID]struct{}, len(x.latest))
	for _, s := range x.segs {
		if _, ok := seen[s.id]; !ok {
			seen[s.id] = struct{}{}
			ids = append(ids, s.id)
		}
	}
	return ids
}

// RemovePacks forgets the packs in set and every blob located in them. A blob
// also stored in a pack that is not removed is forgotten too if the index
// kept its location in a removed pack; prune re-adds the packs it keeps. It
// costs O(blobs × log packs); the disk runs of a kind are read once and
// written to one new run (or to the heap for an Index without a directory).
func (x *Index) RemovePacks(set map[pack.ID]struct{}) {
	if len(set) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.rebuildLocked(set, false)
}

// rebuildLocked drops the segments of the packs in remove and the blobs in
// them, and if compact is set assigns the remaining segments new, dense
// positions. Runs stay sorted: records on the heap are filtered and
// rewritten in place, and disk runs are streamed into a new one.
func (x *Index) rebuildLocked(remove map[pack.ID]struct{}, compact bool) {
	// newBase[i] is the new base of segment i, or ^0 if it is removed.
	newBase := make([]uint64, len(x.segs))
	var next uint64
	keep := x.segs[:0:0]
	for i, s := range x.segs {
		if _, gone := remove[s.id]; gone {
			newBase[i] = ^uint64(0)
			continue
		}
		newBase[i] = s.base
		if compact {
			newBase[i] = next
			next += s.end - s.base
		}
		keep = append(keep, segment{id: s.id, base: newBase[i], end: newBase[i] + s.end - s.base})
	}
	// move maps a position to its new value, or reports that it is dropped.
	move := func(pos uint64) (uint64, bool) {
		i := x.segmentOfLocked(pos)
		if i < 0 || newBase[i] == ^uint64(0) {
			return 0, false
		}
		return pos - x.segs[i].base + newBase[i], true
	}
	for h, pl := range x.recent {
		l := getPacked(pl[:])
		if p, ok := move(l.pos); ok {
			x.recent[h] = loc{pos: p, length: l.length}.packed()
		} else {
			delete(x.recent, h)
		}
	}
	x.n = len(x.recent)
	for k := range numKinds {
		for _, r := range []*run{&x.main[k], &x.mid[k]} {
			r.filter(move)
		}
		x.rebuildDiskLocked(k, move)
		x.n += x.main[k].len() + x.mid[k].len()
		for _, d := range x.disk[k] {
			x.n += d.len()
		}
	}
	x.segs = keep
	clear(x.latest)
	for i, s := range x.segs {
		x.latest[s.id] = i
	}
	if compact {
		x.next = next
	}
}
