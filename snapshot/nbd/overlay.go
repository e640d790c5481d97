package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
)

// OverlayBlock is the unit in which an overlay records written data.
const OverlayBlock = 4096

// Overlay file format. An overlay is two files:
//
//   - FILE, the data file: a sparse file of the image's size holding the
//     written blocks at their image offsets;
//   - FILE.map, the map: a 4096-byte header, then a bitmap with one bit per
//     4 KiB block of the image (block i is bit i%8 of byte i/8), set when
//     FILE holds that block.
//
// The header is "IMAGOOVL", then big-endian: version (uint32, 1), block
// size (uint32, 4096), image size (uint64), label length (uint16) and the
// label (the snapshot the overlay belongs to), zero-padded to 4096 bytes.
//
// Flush makes written data durable in this order: FILE is synced first,
// then the map bytes that changed are written and synced. A crash can lose
// writes since the last flush (as with any disk's write cache) but never
// leaves a bit set for a block whose data is not on disk.
const (
	overlayMagic      = "IMAGOOVL"
	overlayVersion    = 1
	overlayHeaderSize = 4096
	maxOverlayLabel   = 1024
	// mapPage is the granularity of map writes: 4 KiB of bitmap covers
	// 128 MiB of image.
	mapPage = 4096
	// stripes is the number of locks serializing read-modify-write of
	// partially written blocks (block number modulo stripes).
	stripes = 64
)

// ErrOverlayMismatch is wrapped by OpenOverlay's error when an existing
// overlay belongs to another image.
var ErrOverlayMismatch = errors.New("nbd: overlay belongs to another image")

// Overlay is a local copy-on-write layer over a read-only image: writes go
// to a sparse file, reads take written blocks from it and the rest from the
// base. Its bitmap is held in memory: size/32768 bytes (32 MiB for a
// 1 TiB image). It is safe for concurrent use.
type Overlay struct {
	base  io.ReaderAt
	size  int64
	data  *os.File
	mapf  *os.File
	locks [stripes]sync.Mutex // read-modify-write of partial blocks

	flushMu sync.Mutex // serializes Flush

	mu sync.RWMutex // guards the fields below
	// bits has one bit per block, set once the block's data was written
	// to the data file.
	bits []byte
	// dirty holds the map pages (indexes of mapPage bytes of bits) changed
	// since the last Flush.
	dirty  map[int]struct{}
	closed bool
}

// OpenOverlay opens the overlay at path (data file path, map path+".map")
// over base, an image of size bytes, creating both files when neither
// exists. label names the image (a snapshot ID); an existing overlay with a
// different label or size is refused with an error wrapping
// ErrOverlayMismatch, and a data file without its map is refused too.
func OpenOverlay(path string, base io.ReaderAt, size int64, label string) (*Overlay, error) {
	if size < 0 || len(label) > maxOverlayLabel {
		return nil, fmt.Errorf("nbd: overlay %s: bad size %d or label", path, size)
	}
	nblocks := (size + OverlayBlock - 1) / OverlayBlock
	o := &Overlay{base: base, size: size, bits: make([]byte, (nblocks+7)/8), dirty: make(map[int]struct{})}
	header := overlayHeader(size, label)

	mapPath := path + ".map"
	_, derr := os.Stat(path)
	mf, err := os.OpenFile(mapPath, os.O_RDWR, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if derr == nil {
			return nil, fmt.Errorf("nbd: overlay %s exists without its map %s", path, mapPath)
		}
		if mf, err = os.OpenFile(mapPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return nil, fmt.Errorf("nbd: create overlay map: %w", err)
		}
		if _, err := mf.WriteAt(append(header, o.bits...), 0); err != nil {
			mf.Close()
			return nil, fmt.Errorf("nbd: create overlay map: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("nbd: open overlay map: %w", err)
	case derr != nil:
		mf.Close()
		return nil, fmt.Errorf("nbd: overlay map %s exists without its data file %s", mapPath, path)
	default:
		got := make([]byte, overlayHeaderSize)
		if _, err := mf.ReadAt(got, 0); err != nil {
			mf.Close()
			return nil, fmt.Errorf("nbd: overlay map %s: read header: %w", mapPath, err)
		}
		if !bytes.Equal(got, header) {
			mf.Close()
			return nil, fmt.Errorf("nbd: overlay map %s: %w (want %d bytes of %q, found %s)",
				mapPath, ErrOverlayMismatch, size, label, describeHeader(got))
		}
		if _, err := mf.ReadAt(o.bits, overlayHeaderSize); err != nil {
			mf.Close()
			return nil, fmt.Errorf("nbd: overlay map %s: read bitmap: %w", mapPath, err)
		}
	}
	o.mapf = mf
	df, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		err = df.Truncate(size) // sparse: costs no space until written
	}
	if err != nil {
		mf.Close()
		if df != nil {
			df.Close()
		}
		return nil, fmt.Errorf("nbd: overlay data file: %w", err)
	}
	o.data = df
	return o, nil
}

func overlayHeader(size int64, label string) []byte {
	h := make([]byte, overlayHeaderSize)
	copy(h, overlayMagic)
	binary.BigEndian.PutUint32(h[8:], overlayVersion)
	binary.BigEndian.PutUint32(h[12:], OverlayBlock)
	binary.BigEndian.PutUint64(h[16:], uint64(size))
	binary.BigEndian.PutUint16(h[24:], uint16(len(label)))
	copy(h[26:], label)
	return h
}

// describeHeader says what an overlay header that did not match holds.
func describeHeader(h []byte) string {
	if string(h[:8]) != overlayMagic {
		return "no overlay header"
	}
	n := int(binary.BigEndian.Uint16(h[24:]))
	if n > maxOverlayLabel {
		return "a damaged header"
	}
	return fmt.Sprintf("version %d, %d bytes of %q", binary.BigEndian.Uint32(h[8:]),
		binary.BigEndian.Uint64(h[16:]), h[26:26+n])
}

// Size returns the image size.
func (o *Overlay) Size() int64 { return o.size }

func (o *Overlay) has(block int64) bool {
	return o.bits[block>>3]&(1<<(block&7)) != 0
}

// mark records blocks [first, last] as written.
func (o *Overlay) mark(first, last int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for b := first; b <= last; b++ {
		o.bits[b>>3] |= 1 << (b & 7)
		o.dirty[int(b>>3)/mapPage] = struct{}{}
	}
}

// ReadAt reads from the overlay where blocks were written, else from the
// base.
func (o *Overlay) ReadAt(p []byte, off int64) (int, error) {
	return o.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt with a context for the base's reads.
func (o *Overlay) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("nbd: overlay: negative offset")
	}
	if off >= o.size {
		return 0, io.EOF
	}
	want := p[:min(int64(len(p)), o.size-off)]
	n := 0
	for n < len(want) {
		pos := off + int64(n)
		b := pos / OverlayBlock
		// Extend the run while blocks have the same state.
		o.mu.RLock()
		written := o.has(b)
		end := (b + 1) * OverlayBlock
		for end < off+int64(len(want)) && o.has(end/OverlayBlock) == written {
			end += OverlayBlock
		}
		o.mu.RUnlock()
		k := int(min(end, off+int64(len(want))) - pos)
		var err error
		if written {
			_, err = o.data.ReadAt(want[n:n+k], pos)
		} else {
			_, err = readAt(ctx, o.base, want[n:n+k], pos)
		}
		if err != nil {
			return n, err
		}
		n += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes p at off into the overlay. A block written in part for the
// first time is completed from the base first. Writes beyond the image are
// refused.
func (o *Overlay) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > o.size || int64(len(p)) > o.size-off {
		return 0, fmt.Errorf("nbd: overlay: write of %d bytes at %d beyond the image (%d bytes)", len(p), off, o.size)
	}
	if len(p) == 0 {
		return 0, nil
	}
	end := off + int64(len(p))
	first, last := off/OverlayBlock, (end-1)/OverlayBlock
	// Partial head and tail blocks.
	for _, b := range []int64{first, last} {
		bs, be := b*OverlayBlock, min((b+1)*OverlayBlock, o.size)
		if off <= bs && end >= be {
			continue // fully covered
		}
		if err := o.mergeBlock(b, p, off); err != nil {
			return 0, err
		}
		if first == last {
			return len(p), nil
		}
	}
	// The fully covered blocks in between, in one write.
	lo, hi := first, last
	if off > first*OverlayBlock {
		lo++
	}
	if end < min((last+1)*OverlayBlock, o.size) {
		hi--
	}
	if lo <= hi {
		ws, we := lo*OverlayBlock, min((hi+1)*OverlayBlock, o.size)
		if _, err := o.data.WriteAt(p[ws-off:we-off], ws); err != nil {
			return 0, fmt.Errorf("nbd: overlay: %w", err)
		}
		o.mark(lo, hi)
	}
	return len(p), nil
}

// mergeBlock writes the part of p (written at off) that falls into block b,
// completing the block from the base if it was never written.
func (o *Overlay) mergeBlock(b int64, p []byte, off int64) error {
	bs, be := b*OverlayBlock, min((b+1)*OverlayBlock, o.size)
	ps, pe := max(bs, off), min(be, off+int64(len(p)))
	l := &o.locks[b%stripes]
	l.Lock()
	defer l.Unlock()
	o.mu.RLock()
	written := o.has(b)
	o.mu.RUnlock()
	if written {
		if _, err := o.data.WriteAt(p[ps-off:pe-off], ps); err != nil {
			return fmt.Errorf("nbd: overlay: %w", err)
		}
		return nil
	}
	blk := make([]byte, be-bs)
	if _, err := readAt(context.Background(), o.base, blk, bs); err != nil {
		return fmt.Errorf("nbd: overlay: read base block %d: %w", b, err)
	}
	copy(blk[ps-bs:], p[ps-off:pe-off])
	if _, err := o.data.WriteAt(blk, bs); err != nil {
		return fmt.Errorf("nbd: overlay: %w", err)
	}
	o.mark(b, b)
	return nil
}

// zeroBuf is written by WriteZeroes, 1 MiB at a time.
var zeroBuf [1 << 20]byte

// WriteZeroes writes n zero bytes at off.
func (o *Overlay) WriteZeroes(off, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeroBuf)))
		if _, err := o.WriteAt(zeroBuf[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// Flush makes every write that completed before it durable: it syncs the
// data file, then writes and syncs the changed parts of the map.
func (o *Overlay) Flush() error {
	o.flushMu.Lock()
	defer o.flushMu.Unlock()
	// Copy the changed map pages first: every bit in the copy was set
	// after its data was written, so the sync below covers that data.
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return errors.New("nbd: overlay closed")
	}
	pages := make(map[int][]byte, len(o.dirty))
	for pg := range o.dirty {
		lo := pg * mapPage
		pages[pg] = bytes.Clone(o.bits[lo:min(lo+mapPage, len(o.bits))])
	}
	clear(o.dirty)
	o.mu.Unlock()
	fail := func(err error) error {
		// Mark the pages dirty again so that the next Flush retries.
		o.mu.Lock()
		for pg := range pages {
			o.dirty[pg] = struct{}{}
		}
		o.mu.Unlock()
		return fmt.Errorf("nbd: overlay flush: %w", err)
	}
	if err := o.data.Sync(); err != nil {
		return fail(err)
	}
	if len(pages) == 0 {
		return nil // only blocks already in the map were rewritten
	}
	for pg, b := range pages {
		if _, err := o.mapf.WriteAt(b, overlayHeaderSize+int64(pg)*mapPage); err != nil {
			return fail(err)
		}
	}
	if err := o.mapf.Sync(); err != nil {
		return fail(err)
	}
	return nil
}

// Written returns the number of image bytes the overlay holds.
func (o *Overlay) Written() int64 {
	o.mu.RLock()
	defer o.mu.RUnlock()
	var n int64
	for _, x := range o.bits {
		for ; x != 0; x &= x - 1 {
			n += OverlayBlock
		}
	}
	return min(n, o.size)
}

// Close flushes the overlay and closes its files.
func (o *Overlay) Close() error {
	err := o.Flush()
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.closed = true
	o.mu.Unlock()
	if e := o.data.Close(); err == nil {
		err = e
	}
	if e := o.mapf.Close(); err == nil {
		err = e
	}
	return err
}
