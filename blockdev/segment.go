package blockdev

import (
	"bytes"
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

// worker is the reusable state of one chunking goroutine.
type worker struct {
	b      *backup
	split  *chunk.Splitter
	rd     bytes.Reader
	cbuf   []byte // the splitter's chunk copy, reused
	parent []parentExtent

	// miss remembers the last chunk reuse hashed without a match, so that
	// the chunker finding the same chunk does not hash it again.
	miss struct {
		off, n uint64
		id     chunk.ID
	}
}

// parentExtent is an extent of the parent image and its offset.
type parentExtent struct {
	start uint64
	snapshot.Extent
}

func newWorker(b *backup) *worker {
	w := &worker{b: b, cbuf: make([]byte, 0, b.opts.Params.Max)}
	w.split = chunk.NewSplitter(&w.rd, b.opts.Params)
	return w
}

// process reads seg's data, then turns its spans into extents.
func (w *worker) process(ctx context.Context, seg *segment) error {
	p := w.b.progress
	if w.b.src.f != nil {
		for _, sp := range seg.spans {
			if sp.Hole {
				continue
			}
			if err := w.b.src.readAt(ctx, seg.buf[sp.buf:sp.buf+sp.Length], sp.Offset); err != nil {
				return err
			}
			seg.st.read += uint64(sp.Length)
			p.BytesRead.Add(uint64(sp.Length))
		}
	} else {
		seg.st.read += uint64(seg.length) // read by the dispatcher
	}
	cur, err := w.loadParent(ctx, seg)
	if err != nil {
		return err
	}
	seg.extents = seg.extents[:0]
	for _, sp := range seg.spans {
		if sp.Hole {
			seg.st.holes += uint64(sp.Length)
			p.BytesHoles.Add(uint64(sp.Length))
			seg.emit(snapshot.Extent{Length: uint64(sp.Length)})
			continue
		}
		if err := w.chunkRange(ctx, seg, &cur, seg.buf[sp.buf:sp.buf+sp.Length], uint64(sp.Offset)); err != nil {
			return err
		}
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
	if n := len(seg.extents); n > 0 && e.Hole() && seg.extents[n-1].Hole() {
		seg.extents[n-1].Length += e.Length
		return
	}
	seg.extents = append(seg.extents, e)
}

// chunkRange turns the data range d, at image offset start and ending at a
// forced cut (its end is a hole, a segment edge or the image end), into
// extents: exactly the chunks a content-defined run over d from its start
// gives. Where the parent has an extent starting at a cut, the extent is
// reused when that provably yields the same chunk; runs of zeros are cut
// without the chunker (see zeroRun); elsewhere the chunker runs until one
// of its cuts lands on a parent extent's start or before a run of zeros.
func (w *worker) chunkRange(ctx context.Context, seg *segment, cur *cursor, d []byte, start uint64) error {
	for pos := uint64(0); pos < uint64(len(d)); {
		if i := cur.at(start + pos); i >= 0 {
			if n := w.reuse(seg, cur, i, d[pos:]); n > 0 {
				pos += n
				continue
			}
		}
		if z := w.zeroRun(d[pos:]); z > 0 {
			seg.st.zero += z
			seg.emit(snapshot.Extent{Length: z})
			pos += z
			continue
		}
		n, err := w.cdc(ctx, seg, cur, d[pos:], start+pos)
		if err != nil {
			return err
		}
		pos += n
	}
	return nil
}

// reuse tries to take parent extent i, which starts where d starts (at a
// cut of the full run), as the next chunk of d, the rest of a data range.
// It returns the bytes covered, or 0 when the chunker must run.
//
// A parent data extent of length L is the next chunk of the full run when
// d's first L bytes hash to its ID, and either L = len(d) (the range ends
// there, and the parent's chunker found no cut before), or the parent cut
// at L was decided by content (see cutByContent). A cut decided by content
// depends only on the chunk's bytes, which match.
//
// A parent hole is taken when it covers all of d and d is all zeros: every
// chunk of d is then zero, so d becomes one hole whatever the cuts.
func (w *worker) reuse(seg *segment, cur *cursor, i int, d []byte) uint64 {
	p := cur.ext[i]
	n := uint64(len(d))
	if p.Hole() {
		if p.Length < n || !chunk.IsZero(d) {
			return 0
		}
		seg.st.zero += n
		seg.emit(snapshot.Extent{Length: n})
		return n
	}
	minLen, maxLen := uint64(w.b.opts.Params.Min), uint64(w.b.opts.Params.Max)
	l := p.Length
	if l > n || l > maxLen {
		return 0
	}
	c := d[:l]
	if l < n && l != maxLen && (l < minLen || !w.cutByContent(cur, i, c)) {
		return 0
	}
	if id := w.b.hasher.HashChunk(c); id != p.ID || chunk.IsZero(c) {
		w.miss.off, w.miss.n, w.miss.id = p.start, l, id
		return 0
	}
	seg.st.reused += l
	w.b.progress.BytesReused.Add(l)
	seg.emit(p.Extent)
	return l
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

// cdc runs the chunker over d, which starts at image offset start at a cut
// of the full run and ends at a forced cut, and emits its chunks until one
// ends where a parent extent starts (so that reuse can take over) or d
// ends. It returns the bytes covered.
func (w *worker) cdc(ctx context.Context, seg *segment, cur *cursor, d []byte, start uint64) (uint64, error) {
	w.rd.Reset(d)
	w.split.Reset(&w.rd)
	var pos uint64
	i := cur.at(start) // the parent extent starting at pos, or -1
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		c, err := w.split.Next(w.cbuf)
		if err == io.EOF {
			return pos, nil
		}
		if err != nil {
			return 0, fmt.Errorf("chunk image at offset %d: %w", start+pos, err)
		}
		w.cbuf = c[:0]
		n := uint64(len(c))
		if err := w.emitChunk(ctx, seg, cur, i, start+pos, d[pos:pos+n]); err != nil {
			return 0, err
		}
		pos += n
		if pos == uint64(len(d)) {
			return pos, nil
		}
		if i = cur.at(start + pos); i >= 0 || w.zeroBlock(d[pos:]) {
			return pos, nil
		}
	}
}

// zeroRun returns how many bytes at the start of d, which starts at a cut,
// the chunker would cut into chunks of exactly Min zero bytes: k×Min for
// the k leading blocks of Min bytes that are all zero. The chunker decides
// a cut from the last 64 bytes it saw, never before Min bytes, and the
// fingerprint of 64 zero bytes is zero, which satisfies every cut mask; so
// a chunk that starts with Min zero bytes ends right there. Backup checks
// this on the splitter in use (zeroCuts) and runs it when it does not hold.
func (w *worker) zeroRun(d []byte) uint64 {
	n := 0
	for w.zeroBlock(d[n:]) {
		n += int(w.b.opts.Params.Min)
	}
	return uint64(n)
}

// zeroBlock reports whether d starts with Min zero bytes that zeroRun
// would cut as one chunk.
func (w *worker) zeroBlock(d []byte) bool {
	m := int(w.b.opts.Params.Min)
	return w.b.zeroCuts && m <= len(d) && chunk.IsZero(d[:m])
}

// emitChunk emits one chunk at image offset off found by the chunker: a
// hole when it is all zeros; the parent's extent, without saving, when
// parent extent i (-1: none) starts with it and has the same length and ID;
// otherwise the ID the saver returns.
func (w *worker) emitChunk(ctx context.Context, seg *segment, cur *cursor, i int, off uint64, c []byte) error {
	n := uint64(len(c))
	seg.st.chunked += n
	if chunk.IsZero(c) {
		seg.st.zero += n
		seg.emit(snapshot.Extent{Length: n})
		return nil
	}
	if i >= 0 {
		if p := cur.ext[i]; !p.Hole() && p.Length == n && w.sameAs(off, c, p.ID) {
			seg.st.reused += n
			w.b.progress.BytesReused.Add(n)
			seg.emit(p.Extent)
			return nil
		}
	}
	id, added, err := w.b.saver.SaveChunk(ctx, chunk.KindData, c)
	if err != nil {
		return fmt.Errorf("save image chunk: %w", err)
	}
	seg.st.blobs++
	if added > 0 {
		seg.st.blobsNew++
		seg.st.newBytes += n
		seg.st.added += uint64(added)
		w.b.progress.BytesNew.Add(n)
	}
	seg.emit(snapshot.Extent{Length: n, ID: id})
	return nil
}

// sameAs reports whether chunk c at image offset off has ID id, using the
// hash reuse computed for it when there is one.
func (w *worker) sameAs(off uint64, c []byte, id chunk.ID) bool {
	if w.miss.off == off && w.miss.n == uint64(len(c)) {
		return w.miss.id == id
	}
	return w.b.hasher.HashChunk(c) == id
}
