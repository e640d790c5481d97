package index

import (
	"bytes"
	"encoding/binary"
	"slices"

	"github.com/imagobackup/imago/chunk"
)

// Record layout. A run stores each blob as a fixed 39-byte record:
//
//	[0:30]  bytes 2..31 of the blob ID (bytes 0..1 are the record's bucket)
//	[30:36] position, uint48 little-endian (see segment)
//	[36:39] sealed length, uint24 little-endian
//
// The 24-bit length holds any sealed blob: at most pack.MaxBlobSize + 1 + 40
// bytes, below 16 MiB.
const (
	bucketBytes = 2
	numBuckets  = 1 << (8 * bucketBytes)
	suffixSize  = chunk.IDSize - bucketBytes
	recSize     = suffixSize + 6 + 3
	maxLength   = 1<<24 - 1
)

// run is a sorted array of records of one kind. Records are sorted by ID and
// grouped by bucket (the first two ID bytes): the records of bucket b are
// recs[starts[b]*recSize : starts[b+1]*recSize]. The bucket table costs
// 256 KiB per run, which is why an Index has only a few runs.
type run struct {
	recs   []byte
	starts []uint32 // numBuckets+1 entries; nil if the run is empty
}

// item is a blob waiting to be sorted into a run.
type item struct {
	id  chunk.ID
	loc loc
}

func (r *run) len() int { return len(r.recs) / recSize }

func bucketOf(id *chunk.ID) int { return int(id[0])<<8 | int(id[1]) }

func putRecord(rec []byte, id *chunk.ID, l loc) {
	copy(rec[:suffixSize], id[bucketBytes:])
	l.put(rec[suffixSize:recSize])
}

func getLoc(rec []byte) loc { return getPacked(rec[suffixSize:recSize]) }

func putLoc(rec []byte, l loc) { l.put(rec[suffixSize:recSize]) }

// locSize is the packed size of a loc: a 48-bit position and a 24-bit length.
const locSize = 9

// packedLoc is a loc packed as in a record; the recent map stores it, which
// makes a map slot 42 bytes instead of 56.
type packedLoc [locSize]byte

func (l loc) put(p []byte) {
	_ = p[locSize-1]
	p[0], p[1], p[2] = byte(l.pos), byte(l.pos>>8), byte(l.pos>>16)
	p[3], p[4], p[5] = byte(l.pos>>24), byte(l.pos>>32), byte(l.pos>>40)
	p[6], p[7], p[8] = byte(l.length), byte(l.length>>8), byte(l.length>>16)
}

func (l loc) packed() (p packedLoc) {
	l.put(p[:])
	return p
}

func getPacked(p []byte) loc {
	_ = p[locSize-1]
	pos := uint64(p[0]) | uint64(p[1])<<8 | uint64(p[2])<<16 | uint64(p[3])<<24 | uint64(p[4])<<32 | uint64(p[5])<<40
	return loc{pos: pos, length: uint32(p[6]) | uint32(p[7])<<8 | uint32(p[8])<<16}
}

// compare orders two ID suffixes. Comparing the first 8 bytes as an integer
// settles almost every comparison of random IDs without a call to
// bytes.Compare.
func compare(a, b []byte) int {
	x, y := binary.BigEndian.Uint64(a), binary.BigEndian.Uint64(b)
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return bytes.Compare(a[8:suffixSize], b[8:suffixSize])
}

// find returns the location of id in r. IDs are keyed hashes, uniform
// within a bucket, so the search first guesses the position from the ID
// (interpolation) and looks at a few neighbours; a binary search settles
// what they do not. In a large run this costs about two cache misses
// instead of one per halving.
func (r *run) find(id *chunk.ID) (loc, bool) {
	if r.starts == nil {
		return loc{}, false
	}
	b := bucketOf(id)
	lo, hi := int(r.starts[b]), int(r.starts[b+1])
	if lo == hi {
		return loc{}, false
	}
	key := id[bucketBytes:]
	g := lo + int((binary.BigEndian.Uint64(key)>>32)*uint64(hi-lo)>>32)
	// probeSteps is how far a guess is followed before binary search takes
	// over; with ~150 records per bucket (10M blobs) the guess is usually
	// off by fewer than 4.
	const probeSteps = 4
	for range probeSteps {
		rec := r.recs[g*recSize : (g+1)*recSize]
		c := compare(rec, key)
		switch {
		case c == 0:
			return getLoc(rec), true
		case c < 0:
			lo = g + 1
			g++
		default:
			hi = g
			g--
		}
		if lo >= hi {
			return loc{}, false
		}
		g = min(max(g, lo), hi-1)
	}
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		rec := r.recs[m*recSize : (m+1)*recSize]
		switch c := compare(rec, key); {
		case c == 0:
			return getLoc(rec), true
		case c < 0:
			lo = m + 1
		default:
			hi = m
		}
	}
	return loc{}, false
}

// newRun sorts items (which must have distinct IDs) into a run. Items are
// placed by bucket with a counting sort; a bucket then holds only a few
// records (len(items)/65536 on average), which an insertion sort orders.
func newRun(items []item) *run {
	r := &run{recs: make([]byte, len(items)*recSize), starts: make([]uint32, numBuckets+1)}
	for i := range items {
		r.starts[bucketOf(&items[i].id)+1]++
	}
	for b := range numBuckets {
		r.starts[b+1] += r.starts[b]
	}
	fill := slices.Clone(r.starts[:numBuckets])
	for i := range items {
		b := bucketOf(&items[i].id)
		putRecord(r.recs[int(fill[b])*recSize:], &items[i].id, items[i].loc)
		fill[b]++
	}
	var tmp [recSize]byte
	for b := range numBuckets {
		lo, hi := int(r.starts[b]), int(r.starts[b+1])
		for i := lo + 1; i < hi; i++ {
			j := i
			copy(tmp[:], r.recs[i*recSize:])
			for j > lo && compare(r.recs[(j-1)*recSize:], tmp[:]) > 0 {
				j--
			}
			if j < i {
				copy(r.recs[(j+1)*recSize:(i+1)*recSize], r.recs[j*recSize:i*recSize])
				copy(r.recs[j*recSize:], tmp[:])
			}
		}
	}
	return r
}

// merge returns a run holding the records of a and b. Should both hold an ID
// (which Add prevents), the record of a is kept.
func merge(a, b *run) run {
	if b.len() == 0 {
		return *a
	}
	if a.len() == 0 {
		return *b
	}
	out := run{recs: make([]byte, len(a.recs)+len(b.recs)), starts: make([]uint32, numBuckets+1)}
	w := 0 // records written
	for bk := range numBuckets {
		out.starts[bk] = uint32(w)
		ai, aj := int(a.starts[bk]), int(a.starts[bk+1])
		bi, bj := int(b.starts[bk]), int(b.starts[bk+1])
		for ai < aj && bi < bj {
			ra := a.recs[ai*recSize : (ai+1)*recSize]
			rb := b.recs[bi*recSize : (bi+1)*recSize]
			switch c := compare(ra, rb); {
			case c < 0:
				copy(out.recs[w*recSize:], ra)
				ai++
			case c > 0:
				copy(out.recs[w*recSize:], rb)
				bi++
			default:
				copy(out.recs[w*recSize:], ra)
				ai++
				bi++
			}
			w++
		}
		w += copy(out.recs[w*recSize:], a.recs[ai*recSize:aj*recSize]) / recSize
		w += copy(out.recs[w*recSize:], b.recs[bi*recSize:bj*recSize]) / recSize
	}
	out.starts[numBuckets] = uint32(w)
	if w*recSize < len(out.recs) {
		out.recs = slices.Clone(out.recs[:w*recSize])
	}
	return out
}

// each calls fn for every record until fn returns false, and reports
// whether it ran to the end. sw, if not nil, follows the pass over a mapped
// run.
func (r *run) each(sw *sweep, fn func(id *chunk.ID, l loc) bool) bool {
	if r.starts == nil {
		return true
	}
	defer sw.finish()
	var id chunk.ID
	for bk := range numBuckets {
		id[0], id[1] = byte(bk>>8), byte(bk)
		sw.at(int(r.starts[bk]) * recSize)
		for i := r.starts[bk]; i < r.starts[bk+1]; i++ {
			rec := r.recs[int(i)*recSize : int(i+1)*recSize]
			copy(id[bucketBytes:], rec[:suffixSize])
			if !fn(&id, getLoc(rec)) {
				return false
			}
		}
	}
	return true
}

// filter rewrites every record's position with move, dropping the records
// for which move reports false. Order is kept, so the run stays sorted.
func (r *run) filter(move func(pos uint64) (uint64, bool)) {
	if r.starts == nil {
		return
	}
	n := r.len()
	w := 0
	i := 0
	for bk := range numBuckets {
		end := int(r.starts[bk+1])
		r.starts[bk] = uint32(w)
		for ; i < end; i++ {
			rec := r.recs[i*recSize : (i+1)*recSize]
			l := getLoc(rec)
			p, ok := move(l.pos)
			if !ok {
				continue
			}
			dst := r.recs[w*recSize : (w+1)*recSize]
			copy(dst, rec)
			putLoc(dst, loc{pos: p, length: l.length})
			w++
		}
	}
	r.starts[numBuckets] = uint32(w)
	switch {
	case w == 0:
		*r = run{}
	case w < n:
		// Give the memory of the dropped records back.
		r.recs = slices.Clone(r.recs[:w*recSize])
	}
}
