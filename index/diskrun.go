package index

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"slices"

	"github.com/imagobackup/imago/chunk"
)

// A disk run is an immutable sorted run whose records are served from a
// read-only file mapping instead of the heap. Its bucket table (256 KiB) is
// on the heap; the mapping holds two sections:
//
//	tags:    4 bytes per record, bytes 2..5 of its blob ID (the first four
//	         bytes of the record's suffix), in record order
//	records: the 39-byte records of run, in the same layout and order
//
// A lookup searches the dense tag section of the blob's bucket and reads a
// record only where the tag matches, so a blob that is absent touches one or
// two pages of tags and, with about 2^32/records-per-bucket tags to choose
// from, almost never a record. The pages that lookups keep resident are
// therefore about 4 bytes per blob, against 39 for a run on the heap.
type diskRun struct {
	run         // recs are mapped; starts is on the heap
	tags []byte // mapped
	m    *mapping
}

// tagSize is the size of a tag: bytes 2..5 of a blob ID.
const tagSize = 4

// mapping is a file mapping shared by the disk runs made from one file.
type mapping struct {
	data []byte
	refs int // disk runs that use data; guarded by the Index's mu
}

// release drops one user of m, and unmaps it when it was the last.
func (m *mapping) release() error {
	m.refs--
	if m.refs > 0 || m.data == nil {
		return nil
	}
	b := m.data
	m.data = nil
	return unmap(b)
}

func (d *diskRun) tag(i int) uint32 { return binary.BigEndian.Uint32(d.tags[i*tagSize:]) }

// find returns the location of id in d. Like run.find, it guesses the
// position of the tag from its value and settles the rest by binary search,
// here for the first tag not below the key's; it then compares the records
// whose tags are equal to it (about one in 2^32/records-per-bucket lookups
// of absent blobs meets one).
func (d *diskRun) find(id *chunk.ID) (loc, bool) {
	b := bucketOf(id)
	lo, hi := int(d.starts[b]), int(d.starts[b+1])
	if lo == hi {
		return loc{}, false
	}
	end := hi
	key := id[bucketBytes:]
	t := binary.BigEndian.Uint32(key)
	// Invariant: tags before lo are below t, tags from hi on are not.
	g := lo + int(uint64(t)*uint64(hi-lo)>>32)
	const probeSteps = 4 // as in run.find
	for range probeSteps {
		if d.tag(g) < t {
			lo = g + 1
			g++
		} else {
			hi = g
			g--
		}
		if lo >= hi {
			break
		}
		g = min(max(g, lo), hi-1)
	}
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if d.tag(m) < t {
			lo = m + 1
		} else {
			hi = m
		}
	}
	for i := lo; i < end && d.tag(i) == t; i++ {
		rec := d.recs[i*recSize : (i+1)*recSize]
		switch c := compare(rec, key); {
		case c == 0:
			return getLoc(rec), true
		case c > 0:
			return loc{}, false
		}
	}
	return loc{}, false
}

// sweepStep is how often a sequential pass over a mapped section (Each, a
// merge) releases the pages behind it and asks for the pages ahead. With
// 8 MiB, a pass keeps about 16 MiB of the section resident, at the cost of
// two madvise calls per 215,000 records.
const sweepStep = 8 << 20

// sweep follows a sequential pass over b, a mapped section, so that the
// pass does not leave the whole section resident. The methods of a nil
// *sweep do nothing, which is what a run on the heap needs.
type sweep struct {
	b    []byte
	done int // the pages before done are released
}

func newSweep(b []byte) *sweep {
	willNeed(b[:min(len(b), sweepStep)])
	return &sweep{b: b}
}

// at reports that the pass has reached offset off.
func (s *sweep) at(off int) {
	if s == nil || off-s.done < sweepStep {
		return
	}
	dontNeed(s.b[s.done:off])
	willNeed(s.b[off:min(len(s.b), off+sweepStep)])
	s.done = off
}

// finish releases the rest of the section.
func (s *sweep) finish() {
	if s != nil {
		dontNeed(s.b[s.done:])
	}
}

// source is a run to read sequentially, with the sweep of its mapping if it
// is a disk run.
type source struct {
	r  *run
	sw *sweep
}

// diskSources returns the sources of runs and their number of records.
func diskSources(runs []*diskRun) ([]source, int) {
	srcs := make([]source, 0, len(runs)+3)
	n := 0
	for _, d := range runs {
		srcs = append(srcs, source{r: &d.run, sw: newSweep(d.recs)})
		n += d.len()
	}
	return srcs, n
}

// runWriter collects the records of a new run, in order: into a file (tags
// and records at two offsets) or into memory.
type runWriter struct {
	tags, recs *bufio.Writer // nil when writing to memory
	mem        []byte        // the records, when writing to memory
	starts     []uint32      // starts[b+1] counts bucket b until finish
	n          int
}

// writerBufSize is the buffer of each section of a runWriter: large writes
// for little memory.
const writerBufSize = 1 << 20

func newFileWriter(f *os.File, tagsOff, recsOff int64) *runWriter {
	return &runWriter{
		tags:   bufio.NewWriterSize(io.NewOffsetWriter(f, tagsOff), writerBufSize/4),
		recs:   bufio.NewWriterSize(io.NewOffsetWriter(f, recsOff), writerBufSize),
		starts: make([]uint32, numBuckets+1),
	}
}

func newMemWriter(upper int) *runWriter {
	return &runWriter{mem: make([]byte, 0, upper*recSize), starts: make([]uint32, numBuckets+1)}
}

// add appends the record rec of bucket bk with location l.
func (w *runWriter) add(bk int, rec []byte, l loc) {
	var out [recSize]byte
	copy(out[:suffixSize], rec)
	putLoc(out[:], l)
	w.starts[bk+1]++
	w.n++
	if w.recs == nil {
		w.mem = append(w.mem, out[:]...)
		return
	}
	// bufio.Writer keeps the first error; flush reports it.
	_, _ = w.tags.Write(out[:tagSize])
	_, _ = w.recs.Write(out[:])
}

// finish flushes the writer and turns the bucket counts into starts.
func (w *runWriter) finish() error {
	for b := range numBuckets {
		w.starts[b+1] += w.starts[b]
	}
	if w.recs == nil {
		return nil
	}
	return errors.Join(w.tags.Flush(), w.recs.Flush())
}

// memRun returns the run a memory writer collected.
func (w *runWriter) memRun() run {
	if w.n == 0 {
		return run{}
	}
	if cap(w.mem) > len(w.mem) {
		w.mem = slices.Clip(slices.Clone(w.mem))
	}
	return run{recs: w.mem, starts: w.starts}
}

// mergeRuns streams the records of srcs, in ID order, through move (if not
// nil) into w. Should several sources hold an ID (which Add prevents), the
// record of the first is kept.
func mergeRuns(w *runWriter, srcs []source, move func(pos uint64) (uint64, bool)) {
	type cursor struct {
		source
		i, end int
	}
	cs := make([]cursor, 0, len(srcs))
	for _, s := range srcs {
		if s.r.len() > 0 {
			cs = append(cs, cursor{source: s})
		}
	}
	for bk := range numBuckets {
		for i := range cs {
			c := &cs[i]
			c.i, c.end = int(c.r.starts[bk]), int(c.r.starts[bk+1])
			c.sw.at(c.i * recSize)
		}
		for {
			best := -1
			var br []byte
			for i := range cs {
				c := &cs[i]
				if c.i == c.end {
					continue
				}
				rec := c.r.recs[c.i*recSize : (c.i+1)*recSize]
				if best < 0 {
					best, br = i, rec
					continue
				}
				switch compare(rec, br) {
				case -1:
					best, br = i, rec
				case 0:
					c.i++
				}
			}
			if best < 0 {
				break
			}
			cs[best].i++
			l := getLoc(br)
			if move != nil {
				p, ok := move(l.pos)
				if !ok {
					continue
				}
				l.pos = p
			}
			w.add(bk, br, l)
		}
	}
	for _, c := range cs {
		c.sw.finish()
	}
}

// pageSize is the alignment of the sections of the files this package
// writes, so that each section starts on a page of the mapping.
const pageSize = 4096

func alignUp(n int64) int64 { return (n + pageSize - 1) &^ (pageSize - 1) }

// writeRun streams srcs (upper records at most) through move into a new
// private file in dir, maps it and unlinks it. It returns nil for a run
// without records.
func writeRun(dir string, srcs []source, move func(uint64) (uint64, bool), upper int) (d *diskRun, err error) {
	f, err := os.CreateTemp(dir, "imago-index-*.tmp")
	if err != nil {
		return nil, err
	}
	defer func() {
		// The mapping keeps the data; the name is not needed any more.
		err = errors.Join(err, f.Close(), os.Remove(f.Name()))
		if err != nil && d != nil {
			_ = d.m.release()
			d = nil
		}
	}()
	recsOff := alignUp(int64(upper) * tagSize)
	w := newFileWriter(f, 0, recsOff)
	mergeRuns(w, srcs, move)
	if err := w.finish(); err != nil {
		return nil, err
	}
	if w.n == 0 {
		return nil, nil
	}
	size := recsOff + int64(w.n)*recSize
	data, err := mapFile(f, size)
	if err != nil {
		return nil, err
	}
	d = &diskRun{
		run:  run{recs: data[recsOff:size], starts: w.starts},
		tags: data[:w.n*tagSize],
		m:    &mapping{data: data, refs: 1},
	}
	randomAccess(d.recs)
	return d, nil
}
