package snapshot

import (
	"encoding/binary"
	"math"

	"github.com/imagobackup/imago/chunk"
)

// Format bytes: the first byte of every KindTree blob says what the blob is
// and which version of its encoding it uses. They are stored on disk: never
// renumber; retired values stay reserved.
const (
	// formatTreeV1 starts a directory tree blob (version 1).
	formatTreeV1 byte = 0x01
	// formatPageV1 starts a content-list page blob (version 1).
	formatPageV1 byte = 0x02
	// formatPageDeltaV1 starts a level-0 content-list page stated as edits
	// of a full (0x02) level-0 page, its base (version 1; see delta.go).
	formatPageDeltaV1 byte = 0x03
)

// Extent tags in tree blobs and level-0 pages. Stored on disk: never
// renumber.
const (
	tagData byte = 0x00 // followed by the data blob ID
	tagHole byte = 0x01 // no ID: the extent reads as zeros
)

// Minimum encoded sizes, used to reject counts that the remaining bytes could
// not hold before anything is allocated for them.
const (
	minExtentLen  = 2                // tag + 1-byte length (a hole)
	minPageRefLen = chunk.IDSize + 2 // ID + 1-byte length + 1-byte count
	minXattrLen   = 3                // name length, 1-byte name, value length
	// minNodeLen counts one byte for each of the node's 21 fields (name
	// length + 1 name byte, type, mode, uid, gid, user, group, 3 times, 5
	// numbers, link target, xattr count, content level, extent count,
	// subtree count).
	minNodeLen = 21
)

// encoder appends the primitive values of the binary formats to buf.
type encoder struct {
	buf []byte
}

func (e *encoder) byte(b byte)       { e.buf = append(e.buf, b) }
func (e *encoder) uvarint(v uint64)  { e.buf = binary.AppendUvarint(e.buf, v) }
func (e *encoder) varint(v int64)    { e.buf = binary.AppendVarint(e.buf, v) }
func (e *encoder) id(id chunk.ID)    { e.buf = append(e.buf, id[:]...) }
func (e *encoder) bytes(s string)    { e.uvarint(uint64(len(s))); e.buf = append(e.buf, s...) }
func (e *encoder) rawBytes(b []byte) { e.uvarint(uint64(len(b))); e.buf = append(e.buf, b...) }

// decoder reads the primitive values of the binary formats from b with every
// length bounds-checked. The first error sticks: later reads return zero
// values, so callers check err once per logical step.
type decoder struct {
	what string // object name for FormatError
	b    []byte
	off  int
	err  error
}

func (d *decoder) fail(reason string) {
	if d.err == nil {
		d.err = &FormatError{What: d.what, Offset: d.off, Reason: reason}
	}
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.remaining() < 1 {
		d.fail("unexpected end of data")
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

// uvarint reads a minimally encoded unsigned varint. Non-minimal encodings
// are rejected so that every value has exactly one encoding and a decoded
// object re-encodes to the same bytes.
func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		d.fail("unexpected end of data in varint")
		return 0
	case n < 0:
		d.fail("varint overflows 64 bits")
		return 0
	case n > 1 && d.b[d.off+n-1] == 0:
		d.fail("non-minimal varint")
		return 0
	}
	d.off += n
	return v
}

// varint reads a minimally encoded zig-zag signed varint.
func (d *decoder) varint() int64 {
	u := d.uvarint()
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

func (d *decoder) uint32() uint32 {
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.fail("value exceeds 32 bits")
		return 0
	}
	return uint32(v)
}

func (d *decoder) id() chunk.ID {
	var id chunk.ID
	if d.err != nil {
		return id
	}
	if d.remaining() < chunk.IDSize {
		d.fail("unexpected end of data in ID")
		return id
	}
	copy(id[:], d.b[d.off:])
	d.off += chunk.IDSize
	return id
}

// bytes reads a uvarint length and that many raw bytes.
func (d *decoder) bytes() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(d.remaining()) {
		d.fail("length exceeds remaining data")
		return ""
	}
	s := string(d.b[d.off : d.off+int(n)])
	d.off += int(n)
	return s
}

func (d *decoder) rawBytes() []byte {
	s := d.bytes()
	if s == "" {
		return nil
	}
	return []byte(s)
}

// count reads an element count and checks that the remaining bytes can
// hold that many elements of at least minLen bytes each.
func (d *decoder) count(minLen int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(d.remaining()/minLen) {
		d.fail("count exceeds what the remaining data can hold")
		return 0
	}
	return int(n)
}

// end fails unless all bytes were consumed.
func (d *decoder) end() {
	if d.err == nil && d.remaining() != 0 {
		d.fail("trailing bytes")
	}
}

// capHint limits preallocation for a count read from hostile bytes; slices
// grow by append beyond it.
func capHint(n int) int {
	const maxPrealloc = 1024 // 1024 × ≤ 400-byte Node: < 512 KiB up front
	return min(n, maxPrealloc)
}
