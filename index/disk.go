package index

// Local index file (cache, not part of the repository).
//
// Persist writes, and OpenFile maps, a file that holds a whole Index in the
// form its disk runs use, so that a process can start from it without
// reading the repository's index files, and serve lookups from it without
// holding its records on the heap. The file is a local cache: it is neither
// encrypted nor uploaded, and a reader that refuses it (ErrBadFile) deletes
// it and rebuilds the index from the repository.
//
// All integers are little-endian. Every section starts at a multiple of
// 4096 bytes, so that each is page-aligned in a mapping of the file:
//
//	offset 0, 96 bytes, then zeros up to 4096: the header
//	    magic     [8]  "imagoidx"
//	    version   u32  1
//	    reserved  u32  0
//	    next      u64  the first unused position (see segment)
//	    segments  u64  number of segments
//	    tagLen    u64  length of the caller's tag
//	    metaOff   u64  offset of the meta section
//	    then for kind 1 (data) and kind 2 (tree):
//	    count     u64  number of records
//	    tagsOff   u64  offset of the tag section
//	    recsOff   u64  offset of the record section
//	per kind, in kind order:
//	    tag section:    count × 4 bytes, bytes 2..5 of each record's blob ID
//	    record section: count × 39 bytes, the records of run (run.go), sorted
//	                    by blob ID
//	the meta section, at metaOff:
//	    segments × (pack ID [32], base u64, end u64), sorted by base
//	    per kind, the bucket table: 65537 × u32 (see run.starts)
//	    the tag, tagLen bytes
//	checksum [32]: BLAKE3-256 of the 96 header bytes followed by the meta
//	    section; it ends the file.
//
// Sections are in the order above; a writer may leave gaps between them,
// which a reader ignores (it finds each section by its offset). A reader
// must refuse, with an error wrapping ErrBadFile, a file whose magic,
// version or reserved field differ; whose sections are out of order,
// unaligned or out of bounds, or do not end at the checksum, which must end
// the file; whose checksum differs; whose bucket tables do not start at 0,
// decrease, or do not end at their count; or whose segments are empty,
// overlap, are out of order, or end beyond next, or whose next is beyond
// 2^48.
//
// The checksum leaves out the tag and record sections, which can be many
// GiB: hashing them at every open would read them all. They are trusted
// structurally: the bucket tables bound every access to them, so a flipped
// byte in a record or a tag can only make a lookup miss, or return a
// location whose blob then fails its AEAD and hash check when it is loaded.
// The file must not be changed in place while it is mapped (only replaced
// by a rename, as Persist does): a mapping of a truncated file faults.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/zeebo/blake3"

	"github.com/imagobackup/imago/pack"
)

// ErrBadFile is wrapped by the error OpenFile returns for a file that is
// not a complete, valid index file of this version.
var ErrBadFile = errors.New("index: not a valid index file")

const (
	diskMagic    = "imagoidx"
	diskVersion  = 1 // never reuse a version of a different layout
	headerSize   = 8 + 4 + 4 + 4*8 + numKinds*3*8
	segmentSize  = pack.IDSize + 8 + 8
	startsSize   = (numBuckets + 1) * 4
	checksumSize = 32
)

// header is the decoded header of an index file.
type header struct {
	next, segCount, tagLen, metaOff uint64
	kinds                           [numKinds]kindHeader
}

type kindHeader struct{ count, tagsOff, recsOff uint64 }

func (h *header) metaLen() uint64 {
	return h.segCount*segmentSize + numKinds*startsSize + h.tagLen
}

func (h *header) encode() []byte {
	b := make([]byte, 0, headerSize)
	b = append(b, diskMagic...)
	b = binary.LittleEndian.AppendUint32(b, diskVersion)
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, v := range []uint64{h.next, h.segCount, h.tagLen, h.metaOff} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	for _, k := range h.kinds {
		for _, v := range []uint64{k.count, k.tagsOff, k.recsOff} {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
	}
	return b
}

// decodeHeader decodes and checks the header of a file of size bytes.
func decodeHeader(b []byte, size int64) (*header, error) {
	if string(b[:8]) != diskMagic {
		return nil, errors.New("wrong magic")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != diskVersion {
		return nil, fmt.Errorf("unknown version %d", v)
	}
	if r := binary.LittleEndian.Uint32(b[12:]); r != 0 {
		return nil, fmt.Errorf("reserved field is %d", r)
	}
	u := func(i int) uint64 { return binary.LittleEndian.Uint64(b[16+8*i:]) }
	h := &header{next: u(0), segCount: u(1), tagLen: u(2), metaOff: u(3)}
	for k := range h.kinds {
		h.kinds[k] = kindHeader{count: u(4 + 3*k), tagsOff: u(5 + 3*k), recsOff: u(6 + 3*k)}
	}
	// Each field is at most size before any arithmetic, so sums of a few
	// of them cannot overflow.
	sz := uint64(size)
	if h.segCount > sz/segmentSize || h.tagLen > sz || h.metaOff > sz {
		return nil, errors.New("counts beyond the file size")
	}
	pos := uint64(pageSize)
	for k, kh := range h.kinds {
		switch {
		case kh.count > sz/(tagSize+recSize) || kh.count > math.MaxUint32 || kh.tagsOff > sz || kh.recsOff > sz:
			return nil, fmt.Errorf("kind %d: counts beyond the file size", k+1)
		case kh.tagsOff%pageSize != 0 || kh.recsOff%pageSize != 0:
			return nil, fmt.Errorf("kind %d: unaligned section", k+1)
		case kh.tagsOff < pos || kh.tagsOff+kh.count*tagSize > kh.recsOff:
			return nil, fmt.Errorf("kind %d: tag section out of place", k+1)
		}
		pos = kh.recsOff + kh.count*recSize
	}
	switch {
	case h.metaOff%pageSize != 0 || h.metaOff < pos:
		return nil, errors.New("meta section out of place")
	case h.metaOff+h.metaLen()+checksumSize != sz:
		return nil, fmt.Errorf("file of %d bytes does not end at its checksum at %d", size, h.metaOff+h.metaLen())
	}
	return h, nil
}

// writeMeta writes the meta section and the checksum to w.
func writeMeta(w io.Writer, h *header, segs []segment, starts [numKinds][]uint32, tag []byte) error {
	bw := bufio.NewWriterSize(w, writerBufSize)
	sum := blake3.New()
	sum.Write(h.encode())
	mw := io.MultiWriter(bw, sum)
	var b [segmentSize]byte
	for _, s := range segs {
		copy(b[:], s.id[:])
		binary.LittleEndian.PutUint64(b[pack.IDSize:], s.base)
		binary.LittleEndian.PutUint64(b[pack.IDSize+8:], s.end)
		_, _ = mw.Write(b[:])
	}
	for k := range numKinds {
		for _, v := range starts[k] {
			_, _ = mw.Write(binary.LittleEndian.AppendUint32(b[:0], v))
		}
	}
	_, _ = mw.Write(tag)
	_, _ = bw.Write(sum.Sum(nil))
	return bw.Flush()
}

// meta is the decoded meta section.
type meta struct {
	segs   []segment
	starts [numKinds][]uint32
	tag    []byte
}

// decodeMeta checks the checksum of the header and meta bytes and decodes
// the meta section.
func decodeMeta(hb, b []byte, h *header) (*meta, error) {
	sum := blake3.New()
	sum.Write(hb)
	sum.Write(b[:len(b)-checksumSize])
	if string(sum.Sum(nil)) != string(b[len(b)-checksumSize:]) {
		return nil, errors.New("checksum mismatch")
	}
	m := &meta{segs: make([]segment, h.segCount)}
	prevEnd := uint64(0)
	for i := range m.segs {
		r := b[i*segmentSize:]
		s := &m.segs[i]
		copy(s.id[:], r)
		s.base = binary.LittleEndian.Uint64(r[pack.IDSize:])
		s.end = binary.LittleEndian.Uint64(r[pack.IDSize+8:])
		switch {
		case s.base >= s.end:
			return nil, fmt.Errorf("segment %d [%d, %d) is empty", i, s.base, s.end)
		case s.base < prevEnd:
			return nil, fmt.Errorf("segment %d [%d, %d) overlaps the previous one", i, s.base, s.end)
		case s.end > h.next:
			return nil, fmt.Errorf("segment %d [%d, %d) ends beyond next position %d", i, s.base, s.end, h.next)
		}
		prevEnd = s.end
	}
	if h.next > maxPos {
		return nil, fmt.Errorf("next position %d beyond 2^48", h.next)
	}
	off := int(h.segCount) * segmentSize
	for k := range numKinds {
		st := make([]uint32, numBuckets+1)
		for i := range st {
			st[i] = binary.LittleEndian.Uint32(b[off+4*i:])
			if (i == 0 && st[i] != 0) || (i > 0 && st[i] < st[i-1]) {
				return nil, fmt.Errorf("kind %d: bucket table decreases at %d", k+1, i)
			}
		}
		if uint64(st[numBuckets]) != h.kinds[k].count {
			return nil, fmt.Errorf("kind %d: bucket table ends at %d, not %d", k+1, st[numBuckets], h.kinds[k].count)
		}
		m.starts[k] = st
		off += startsSize
	}
	// A copy, so that the caller's tag does not keep the rest alive.
	m.tag = slices.Clone(b[off : len(b)-checksumSize])
	return m, nil
}
