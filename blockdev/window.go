package blockdev

import (
	"context"
	"fmt"
	"io"
)

// splitterBuffer is how far restic/chunker reads ahead of its current chunk
// (its chunkerBufSize): the window must still hold those bytes when the
// chunker is stopped, so that the next step starts at the chunk's end.
const splitterBuffer = 512 * kiB

// window gives the chunker the bytes of the current data span, which the
// reader sends in blocks, addressed by their offset in the span: get returns
// a slice of them, and Read serves the splitter from the offset seek set.
// Bytes before the committed offset are no longer needed and are dropped as
// more arrive; the window holds size bytes from there, so every get and
// Read must end within size bytes of the committed offset. The worker's
// largest is a chunker step: a chunk of up to Params.Max bytes plus the
// splitter's read-ahead (splitterBuffer), so size is Params.Max +
// splitterBuffer + readBlock (the last term keeps the copies large).
type window struct {
	buf  []byte // buf[:n] holds the span's bytes [base, base+n)
	n    int
	base uint64
	keep uint64 // committed: the bytes before keep are not needed
	rd   uint64 // Read's offset

	free  chan<- *block
	items <-chan item
	blk   []byte // the part of the current block not yet in buf
	block *block // the current block, released when it is used up
	last  bool   // the current block is the span's last
	ended bool   // the span's last byte is in buf (or was)

	// ctx is the context of the worker step that runs the splitter, for
	// Read, which has no context parameter; seek sets it. err is Read's
	// first error (the context's, or the reader's end), which the splitter
	// returns as is.
	ctx context.Context
	err error
}

func (w *window) init(size int, free chan<- *block, items <-chan item) {
	w.buf = make([]byte, size)
	w.free, w.items = free, items
}

// reset starts the next data span.
func (w *window) reset() {
	w.n, w.base, w.keep, w.rd = 0, 0, 0, 0
	w.ended, w.err = false, nil
}

// next returns the reader's next item after a segment's last span; ok is
// false when the image has ended.
func (w *window) next(ctx context.Context) (it item, ok bool, err error) {
	select {
	case it, ok = <-w.items:
		return it, ok, nil
	case <-ctx.Done():
		return item{}, false, ctx.Err()
	}
}

// commit declares the bytes before off no longer needed.
func (w *window) commit(off uint64) {
	w.keep = max(w.keep, off)
}

// get returns the span's bytes [off, off+n), fewer only at the span's end
// (none at or after it). The result is valid until the next call.
//
// Where every byte in buf is committed and the range lies in the current
// block, the result is a slice of the block itself (inPlace): on an
// unchanged or new image of fixed-size chunks aligned in the blocks,
// nothing is copied into buf at all. Copying every byte cost ~10% of the
// CPU of a nightly backup.
func (w *window) get(ctx context.Context, off uint64, n int) ([]byte, error) {
	if off < w.keep || off+uint64(n)-w.keep > uint64(len(w.buf)) {
		return nil, fmt.Errorf("image backup: internal error: window [%d, +%d) outside [%d, +%d)", off, n, w.keep, len(w.buf))
	}
	for {
		if w.inPlace(off) >= uint64(n) {
			k := off - w.base
			return w.blk[k : k+uint64(n)], nil
		}
		if w.base+uint64(w.n) >= off+uint64(n) || w.ended {
			break
		}
		if err := w.fill(ctx); err != nil {
			return nil, err
		}
	}
	end := w.base + uint64(w.n)
	lo, hi := min(off, end), min(off+uint64(n), end)
	return w.buf[lo-w.base : hi-w.base], nil
}

// inPlace returns how many bytes from off get can return from the current
// block without copying them into buf: when buf holds no byte that is
// still needed, it is emptied, and the block's bytes before keep dropped.
func (w *window) inPlace(off uint64) uint64 {
	start := w.base + uint64(w.n) // the offset of blk[0]
	if w.keep < start || w.keep-start > uint64(len(w.blk)) {
		return 0
	}
	w.blk = w.blk[w.keep-start:]
	w.base, w.n = w.keep, 0
	if off < w.base || off > w.base+uint64(len(w.blk)) {
		return 0
	}
	return w.base + uint64(len(w.blk)) - off
}

// fill appends the next bytes of the span, dropping the bytes before keep
// when the window is full.
func (w *window) fill(ctx context.Context) error {
	if len(w.blk) == 0 {
		if w.block != nil {
			w.block.release(w.free)
			w.block = nil
			if w.last {
				w.ended = true
				return nil
			}
		}
		select {
		case it, ok := <-w.items:
			if !ok || it.seg != nil {
				return fmt.Errorf("image backup: internal error: data span ended early")
			}
			w.block, w.blk, w.last = it.blk, it.data(), it.last
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	if len(w.buf)-w.n < len(w.blk) && w.keep > w.base {
		k := int(w.keep - w.base)
		w.n = copy(w.buf, w.buf[k:w.n])
		w.base = w.keep
	}
	c := copy(w.buf[w.n:], w.blk)
	if c == 0 {
		return fmt.Errorf("image backup: internal error: window full")
	}
	w.n += c
	w.blk = w.blk[c:]
	return nil
}

// seek makes Read read from offset off under ctx.
func (w *window) seek(ctx context.Context, off uint64) {
	w.ctx, w.rd, w.err = ctx, off, nil
}

// Read reads the span from the offset set by seek, for the splitter; it
// returns io.EOF at the span's end.
func (w *window) Read(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := min(len(p), len(w.buf)-int(w.rd-w.keep))
	if n <= 0 && len(p) > 0 {
		w.err = fmt.Errorf("image backup: internal error: splitter %d bytes ahead of a window of %d", w.rd-w.keep, len(w.buf))
		return 0, w.err
	}
	d, err := w.get(w.ctx, w.rd, n)
	if err != nil {
		w.err = err
		return 0, err
	}
	if len(d) == 0 {
		return 0, io.EOF
	}
	c := copy(p, d)
	w.rd += uint64(c)
	return c, nil
}
