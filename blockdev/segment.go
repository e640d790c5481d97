package blockdev

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// maxParentExtents bounds the parent extents a worker holds for one
// segment (48 bytes each, so 3 MiB). A segment of 64 MiB cut with the
// default 64 KiB minimum has at most ~2050 (data and holes alternating); a
// parent with more was not cut with these parameters, and the segment is
// then chunked without guidance.
const maxParentExtents = 1 << 16

// worker is the chunker of a backup: one goroutine that turns each
// segment's spans into extents, in order, reading the data through a
// window over the reader's blocks.
type worker struct {
	b      *backup
	sv     *saver
	win    window
	split  *chunk.Splitter
	parent []parentExtent
	ids    idBatch
}

// parentExtent is an extent of the parent image and its offset.
type parentExtent struct {
	start uint64
	snapshot.Extent
}

func newWorker(b *backup, sv *saver, free chan<- *block, items <-chan item) *worker {
	w := &worker{b: b, sv: sv}
	w.win.init(int(b.opts.Params.Max)+splitterBuffer+readBlock, free, items)
	if !b.fixed {
		w.split = chunk.NewSplitter(&w.win, b.opts.Params)
	}
	w.ids.hashers = b.opts.Workers
	return w
}

// run chunks the segments the reader announces, in order, and queues each
// for the collector.
func (w *worker) run(ctx context.Context, segs chan<- *segment) error {
	for {
		it, ok, err := w.win.next(ctx)
		if err != nil || !ok {
			return err
		}
		seg := it.seg
		if seg == nil {
			return fmt.Errorf("image backup: internal error: data block without a segment")
		}
		if err := w.process(ctx, seg); err != nil {
			return err
		}
		select {
		case segs <- seg:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// process turns seg's spans into extents, reading the data spans' blocks.
func (w *worker) process(ctx context.Context, seg *segment) error {
	p := w.b.progress
	cur, err := w.loadParent(ctx, seg)
	if err != nil {
		return err
	}
	for i := range seg.spans {
		sp := &seg.spans[i]
		if sp.Hole {
			seg.st.holes += uint64(sp.Length)
			p.BytesHoles.Add(uint64(sp.Length))
			seg.emit(snapshot.Extent{Length: uint64(sp.Length)})
			continue
		}
		w.win.reset()
		w.ids.reset()
		n, err := w.chunkRange(ctx, seg, &cur, uint64(sp.Offset))
		if err != nil {
			return err
		}
		if sp.Length < 0 {
			// A stream's segment: its length is known now.
			sp.Length, seg.length = int64(n), int64(n)
		} else if n != uint64(sp.Length) {
			return fmt.Errorf("image backup: internal error: span at %d has %d bytes, read %d", sp.Offset, sp.Length, n)
		}
		seg.st.read += n
	}
	return nil
}

var errStop = errors.New("stop")

// loadParent returns a cursor over the parent extents that start in seg.
func (w *worker) loadParent(ctx context.Context, seg *segment) (cursor, error) {
	w.parent = w.parent[:0]
	if w.b.parent == nil {
		return cursor{}, nil
	}
	end := uint64(seg.off + seg.length)
	if seg.length < 0 {
		// A stream's segment, whose length is not known yet: it ends
		// at SegmentSize at the latest.
		end = uint64(seg.off + w.b.opts.SegmentSize)
	}
	overflow := false
	err := w.b.parent.Extents(ctx, uint64(seg.off), func(start uint64, e snapshot.Extent) error {
		if start >= end {
			return errStop
		}
		if len(w.parent) == maxParentExtents {
			overflow = true
			return errStop
		}
		w.parent = append(w.parent, parentExtent{start: start, Extent: e})
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return cursor{}, fmt.Errorf("read parent image content: %w", err)
	}
	if overflow {
		w.parent = w.parent[:0]
	}
	return cursor{ext: w.parent}, nil
}

// cursor walks the parent extents of a segment forward.
type cursor struct {
	ext []parentExtent
	i   int
}

// at returns the index of the parent extent starting at off, or -1. Calls
// must come with non-decreasing off.
func (c *cursor) at(off uint64) int {
	for c.i < len(c.ext) && c.ext[c.i].start < off {
		c.i++
	}
	if c.i < len(c.ext) && c.ext[c.i].start == off {
		return c.i
	}
	return -1
}

// emit appends e to the segment's extents, merging adjacent holes.
func (seg *segment) emit(e snapshot.Extent) {
	if n := len(seg.extents); n > 0 && e.Hole() && seg.extents[n-1].job == nil && seg.extents[n-1].Hole() {
		seg.extents[n-1].Length += e.Length
		return
	}
	seg.extents = append(seg.extents, pendingExtent{Extent: e})
}

// emitJob appends the extent of a new chunk of n bytes whose ID the save
// job j will have.
func (seg *segment) emitJob(n uint64, j *saveJob) {
	seg.extents = append(seg.extents, pendingExtent{Extent: snapshot.Extent{Length: n}, job: j})
}

// chunkRange turns the current data span of the window, at image offset
// start and ending at a forced cut (its end is a hole, a segment edge or the
// image end), into extents: exactly the chunks a content-defined run over
// the span from its start gives. Where the parent has an extent starting at
// a cut, the extent is reused when that provably yields the same chunk;
// runs of zeros are cut without the chunker (see zeroScan); elsewhere the
// chunker runs until one of its cuts lands on a parent extent's start or
// before a run of zeros. It returns the span's length.
func (w *worker) chunkRange(ctx context.Context, seg *segment, cur *cursor, start uint64) (uint64, error) {
	var pos uint64
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		// Every byte before pos is turned into extents.
		w.win.commit(pos)
		more, err := w.win.get(ctx, pos, 1)
		if err != nil {
			return 0, err
		}
		if len(more) == 0 {
			return pos, nil
		}
		if i := cur.at(start + pos); i >= 0 {
			n, err := w.reuse(ctx, seg, cur, i, pos)
			if err != nil {
				return 0, err
			}
			if n > 0 {
				pos += n
				continue
			}
		}
		z, _, _, err := w.zeroScan(ctx, pos, false)
		if err != nil {
			return 0, err
		}
		if z > 0 {
			seg.st.zero += z
			seg.emit(snapshot.Extent{Length: z})
			pos += z
			continue
		}
		n, err := w.cdc(ctx, seg, cur, pos, start)
		if err != nil {
			return 0, err
		}
		pos += n
	}
}

// reuse tries to take parent extent i, which starts at span offset pos (at
// a cut of the full run), as the next chunk of the rest d of the data span.
// It returns the bytes covered, or 0 when the chunker must run.
//
// A parent data extent of length L is the next chunk of the full run when
// d's first L bytes hash to its ID, and either L = len(d) (the range ends
// there, and the parent's chunker found no cut before), or the parent cut
// at L was decided by content (see cutByContent). A cut decided by content
// depends only on the chunk's bytes, which match.
//
// A parent hole is taken when it covers all of d and d is all zeros: every
// chunk of d is then zero, so d becomes one hole whatever the cuts. Finding
// that out reads d as far as it is zero: when it is not all zero, its
// leading run of zero blocks is taken as the zero run chunkRange would cut
// next (so that it is not read twice).
func (w *worker) reuse(ctx context.Context, seg *segment, cur *cursor, i int, pos uint64) (uint64, error) {
	p := cur.ext[i]
	if p.Hole() {
		if !w.b.zeroCuts {
			// The chunker runs over the zeros instead; it gives the same
			// hole.
			return 0, nil
		}
		run, rest, allZero, err := w.zeroScan(ctx, pos, true)
		if err != nil {
			return 0, err
		}
		if allZero && rest <= p.Length {
			run = rest
		}
		if run > 0 {
			seg.st.zero += run
			seg.emit(snapshot.Extent{Length: run})
		}
		return run, nil
	}
	minLen, maxLen := uint64(w.b.opts.Params.Min), uint64(w.b.opts.Params.Max)
	l := p.Length
	if l > maxLen {
		return 0, nil
	}
	if err := w.hashAhead(ctx, cur, i, pos); err != nil {
		return 0, err
	}
	// One byte more tells whether the span goes on after a chunk shorter
	// than Max (a chunk of Max bytes is cut there in any case); not asking
	// for it keeps a chunk at the end of a block in place (window.get).
	n := int(l)
	if l != maxLen {
		n++
	}
	d, err := w.win.get(ctx, pos, n)
	if err != nil {
		return 0, err
	}
	if uint64(len(d)) < l {
		return 0, nil
	}
	c := d[:l]
	if uint64(len(d)) > l && l != maxLen && (l < minLen || !w.cutByContent(cur, i, c)) {
		return 0, nil
	}
	if w.chunkID(p.start, c) != p.ID || chunk.IsZero(c) {
		return 0, nil
	}
	seg.st.reused += l
	w.b.progress.BytesReused.Add(l)
	seg.emit(p.Extent)
	return l, nil
}

// cutByContent reports whether the parent's cut at the end of its data
// extent i, whose bytes c (at least Min of them) the image holds at the same
// offset, was decided by the chunk's content, so that the full run cuts
// there too: when the chunk has Max bytes, when it ends with a zero window
// (zeroWindowCuts), or when the parent's next extent is data. A cut forced
// by a hole or a segment edge instead is followed by a hole extent, or lies
// at a segment edge, which the caller has ruled out.
func (w *worker) cutByContent(cur *cursor, i int, c []byte) bool {
	switch {
	case uint(len(c)) == w.b.opts.Params.Max:
		return true
	case w.b.zeroCuts && chunk.IsZero(c[len(c)-chunkerWindow:]):
		return true
	}
	return i+1 < len(cur.ext) && !cur.ext[i+1].Hole()
}

// cdc runs the chunker over the data span from offset pos, at image offset
// start+pos at a cut of the full run, and emits its chunks until one ends
// where a parent extent starts (so that reuse can take over) or the span
// ends. It returns the bytes covered.
func (w *worker) cdc(ctx context.Context, seg *segment, cur *cursor, pos, start uint64) (uint64, error) {
	from := pos
	next := w.cutFixed
	if !w.b.fixed {
		w.win.seek(ctx, pos)
		w.split.Reset(&w.win)
		next = func(_ context.Context, _ uint64, buf []byte) ([]byte, error) { return w.split.Next(buf) }
	}
	i := cur.at(start + pos) // the parent extent starting at pos, or -1
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		// The splitter cuts the chunk straight into the save ring; a
		// buffer of Params.Max bytes never grows (Splitter.Next).
		buf, err := w.sv.reserve(ctx, int(w.b.opts.Params.Max))
		if err != nil {
			return 0, err
		}
		c, err := next(ctx, pos, buf)
		if err == nil && len(c) > len(buf) {
			err = fmt.Errorf("chunk of %d bytes, more than the maximum %d", len(c), len(buf))
		}
		if err == io.EOF {
			w.sv.skip()
			return pos - from, nil
		}
		if err != nil {
			w.sv.skip()
			if w.b.fixed {
				return 0, err // the window's: the reader's or the context's
			}
			if err := w.win.err; err != nil {
				return 0, err // the reader's or the context's, not the data's
			}
			return 0, fmt.Errorf("chunk image at offset %d: %w", start+pos, err)
		}
		n := uint64(len(c))
		if err := w.emitChunk(ctx, seg, cur, i, start+pos, c); err != nil {
			return 0, err
		}
		pos += n
		w.win.commit(pos)
		more, err := w.win.get(ctx, pos, 1)
		if err != nil {
			return 0, err
		}
		if len(more) == 0 {
			return pos - from, nil
		}
		if i = cur.at(start + pos); i >= 0 {
			return pos - from, nil
		}
		if z, err := w.zeroBlock(ctx, pos); err != nil || z {
			return pos - from, err
		}
	}
}

// cutFixed is the splitter for fixed-size chunks (Params.Min = Max): from
// a cut at span offset pos, the next chunk is the next Max bytes, fewer at
// the span's end, io.EOF after it; restic/chunker cuts exactly there too.
// It copies the chunk from the window straight into buf (Max bytes), where
// the splitter copied it twice and ran the rolling hash over 64 bytes of
// every chunk, to no effect.
func (w *worker) cutFixed(ctx context.Context, pos uint64, buf []byte) ([]byte, error) {
	d, err := w.win.get(ctx, pos, len(buf))
	if err != nil {
		return nil, err
	}
	if len(d) == 0 {
		return nil, io.EOF
	}
	return buf[:copy(buf, d)], nil
}

// zeroScan reads the data span from offset pos, which is at a cut, as long
// as it is zero. It returns run, how many bytes the chunker would cut into
// chunks of exactly Min zero bytes: k×Min for the k leading blocks of Min
// bytes that are all zero. The chunker decides a cut from the last 64 bytes
// it saw, never before Min bytes, and the fingerprint of 64 zero bytes is
// zero, which satisfies every cut mask; so a chunk that starts with Min zero
// bytes ends right there. Backup checks this on the splitter in use
// (zeroCuts); without it, run is 0. With toEnd, zeroScan also reports
// whether the whole rest of the span, rest bytes, is zero. The bytes of
// the run are dropped from the window as the scan goes, so a run of any
// length costs no memory.
func (w *worker) zeroScan(ctx context.Context, pos uint64, toEnd bool) (run, rest uint64, allZero bool, err error) {
	if !w.b.zeroCuts {
		return 0, 0, false, nil
	}
	m := int(w.b.opts.Params.Min)
	for {
		d, err := w.win.get(ctx, pos+run, m)
		if err != nil {
			return 0, 0, false, err
		}
		if len(d) < m || !chunk.IsZero(d) {
			if toEnd && len(d) < m && chunk.IsZero(d) {
				return run, run + uint64(len(d)), true, nil
			}
			return run, 0, false, nil
		}
		run += uint64(m)
		// The scanned zeros are needed again only as zeros.
		w.win.commit(pos + run)
	}
}

// zeroBlock reports whether the data span has, at offset pos, Min zero
// bytes that zeroScan would cut as one chunk.
func (w *worker) zeroBlock(ctx context.Context, pos uint64) (bool, error) {
	if !w.b.zeroCuts {
		return false, nil
	}
	m := int(w.b.opts.Params.Min)
	d, err := w.win.get(ctx, pos, m)
	return err == nil && len(d) == m && chunk.IsZero(d), err
}

// emitChunk emits one chunk at image offset off found by the chunker: a
// hole when it is all zeros; the parent's extent, without saving, when
// parent extent i (-1: none) starts with it and has the same length and ID;
// otherwise a save job, whose ID the collector waits for. c is the save
// ring's last reservation, which emitChunk keeps or gives up.
func (w *worker) emitChunk(ctx context.Context, seg *segment, cur *cursor, i int, off uint64, c []byte) error {
	n := uint64(len(c))
	seg.st.chunked += n
	if chunk.IsZero(c) {
		w.sv.skip()
		seg.st.zero += n
		seg.emit(snapshot.Extent{Length: n})
		return nil
	}
	if i >= 0 {
		if p := cur.ext[i]; !p.Hole() && p.Length == n && w.sameAs(off, c, p.ID) {
			w.sv.skip()
			seg.st.reused += n
			w.b.progress.BytesReused.Add(n)
			seg.emit(p.Extent)
			return nil
		}
	}
	j, err := w.sv.submit(ctx, c)
	if err != nil {
		return err
	}
	seg.emitJob(n, j)
	return nil
}

// sameAs reports whether chunk c at image offset off has ID id, using the
// hash hashAhead computed for it when there is one.
func (w *worker) sameAs(off uint64, c []byte, id chunk.ID) bool {
	return w.chunkID(off, c) == id
}

// chunkID returns the ID of chunk c at image offset off: hashed ahead
// when it is a parent extent's (hashAhead), else hashed now.
func (w *worker) chunkID(off uint64, c []byte) chunk.ID {
	if id, ok := w.ids.lookup(off, uint64(len(c))); ok {
		return id
	}
	return w.b.hasher.HashChunk(c)
}

// hashAhead makes sure the ID of the bytes under parent data extent i,
// which starts at span offset pos, is known (chunkID), hashing them
// together with those under the parent data extents that follow it
// contiguously, as far as the window reaches: reuse needs them next on an
// unchanged image. The chunker hashed every reused chunk itself, on one
// core; as a batch, the hashing is split between up to Workers
// goroutines, the chunker's own included. The result does not change: the
// IDs are those of the image's bytes, whichever goroutine hashes them.
func (w *worker) hashAhead(ctx context.Context, cur *cursor, i int, pos uint64) error {
	first := cur.ext[i]
	if _, ok := w.ids.lookup(first.start, first.Length); ok || pos < w.win.keep {
		return nil
	}
	// A batch must fit the window from pos (the committed offset, see
	// chunkRange) with the byte after it that reuse looks at; it stays in
	// the current block, if the first chunk is in it, so that it is hashed
	// in place.
	budget := uint64(len(w.win.buf)) - (pos - w.win.keep) - 1
	if a := w.win.inPlace(pos); a >= first.Length {
		budget = min(budget, a)
	}
	maxLen := uint64(w.b.opts.Params.Max)
	var total uint64
	j := i
	for ; j < len(cur.ext); j++ {
		e := cur.ext[j]
		if e.Hole() || e.Length > maxLen || e.start != first.start+total || total+e.Length > budget {
			break
		}
		total += e.Length
	}
	if j == i {
		return nil
	}
	d, err := w.win.get(ctx, pos, int(total))
	if err != nil {
		return err
	}
	w.ids.hash(w.b.hasher, cur.ext[i:j], d)
	return nil
}
