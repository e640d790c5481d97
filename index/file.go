package index

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
)

// File is the content of one index file: packs and the blobs in them.
type File struct {
	Packs []PackBlobs
}

// PackBlobs lists the blobs of one pack.
type PackBlobs struct {
	ID    pack.ID
	Blobs []pack.Entry
}

// FormatError reports a malformed index file.
type FormatError struct {
	Offset int64 // byte offset in the plaintext index file
	Reason string
}

// Error returns "index file: offset N: reason".
func (e *FormatError) Error() string {
	return fmt.Sprintf("index file: offset %d: %s", e.Offset, e.Reason)
}

// The index file layout (plaintext; all integers little-endian):
//
//	version u8 (1) ‖ pack count u32 ‖ packs
//	pack: id [32] ‖ blob count u32 ‖ blobs, in increasing offset order
//	blob: kind u8 ‖ codec u8 ‖ id [32] ‖ offset u32 ‖ length u32 ‖ rawLength u32
const (
	fileVersion  = 1
	fileHeadSize = 1 + 4
	packHeadSize = pack.IDSize + 4
	blobSize     = 1 + 1 + chunk.IDSize + 4 + 4 + 4
)

// EncodeFile encodes f. Blobs are written in increasing offset order,
// whatever their order in f.
func EncodeFile(f *File) []byte {
	n := fileHeadSize
	for _, p := range f.Packs {
		n += packHeadSize + len(p.Blobs)*blobSize
	}
	b := make([]byte, 0, n)
	b = append(b, fileVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(f.Packs)))
	for _, p := range f.Packs {
		b = append(b, p.ID[:]...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p.Blobs)))
		blobs := p.Blobs
		if !slices.IsSortedFunc(blobs, byOffset) {
			blobs = slices.Clone(blobs)
			slices.SortStableFunc(blobs, byOffset)
		}
		for _, e := range blobs {
			b = append(b, byte(e.Handle.Kind), byte(e.Codec))
			b = append(b, e.Handle.ID[:]...)
			b = binary.LittleEndian.AppendUint32(b, e.Offset)
			b = binary.LittleEndian.AppendUint32(b, e.Length)
			b = binary.LittleEndian.AppendUint32(b, e.RawLength)
		}
	}
	return b
}

func byOffset(a, b pack.Entry) int { return int(int64(a.Offset) - int64(b.Offset)) }

// DecodeFile strictly decodes an index file. It refuses an unknown version,
// counts that do not match the bytes, trailing bytes, a pack listed twice or
// without blobs, unknown kinds and codecs, lengths no valid pack holds, and
// blobs of a pack that overlap or are out of offset order. Every error is a
// *FormatError.
func DecodeFile(b []byte) (*File, error) {
	d := decoder{b: b}
	if len(b) < fileHeadSize {
		return nil, d.fail("%d bytes is shorter than the minimum %d", len(b), fileHeadSize)
	}
	if v := d.u8(); v != fileVersion {
		return nil, &FormatError{Offset: 0, Reason: fmt.Sprintf("unknown version %d", v)}
	}
	numPacks := int64(d.u32())
	if numPacks > int64(len(b)-d.off)/packHeadSize {
		return nil, d.fail("%d packs cannot fit in %d bytes", numPacks, len(b)-d.off)
	}
	f := &File{Packs: make([]PackBlobs, numPacks)}
	seen := make(map[pack.ID]struct{}, numPacks)
	for i := range f.Packs {
		p := &f.Packs[i]
		if len(b)-d.off < packHeadSize {
			return nil, d.fail("pack %d: truncated", i)
		}
		packOff := d.off
		copy(p.ID[:], d.bytes(pack.IDSize))
		if _, dup := seen[p.ID]; dup {
			return nil, &FormatError{Offset: int64(packOff), Reason: fmt.Sprintf("pack %v listed twice", p.ID)}
		}
		seen[p.ID] = struct{}{}
		count := int64(d.u32())
		if count == 0 {
			return nil, d.fail("pack %v lists no blobs", p.ID)
		}
		if count > int64(len(b)-d.off)/blobSize {
			return nil, d.fail("pack %v: %d blobs cannot fit in %d bytes", p.ID, count, len(b)-d.off)
		}
		p.Blobs = make([]pack.Entry, count)
		var end int64 // end of the previous blob
		for j := range p.Blobs {
			blobOff := int64(d.off)
			e := &p.Blobs[j]
			e.Handle.Kind = chunk.Kind(d.u8())
			e.Codec = pack.Codec(d.u8())
			copy(e.Handle.ID[:], d.bytes(chunk.IDSize))
			e.Offset, e.Length, e.RawLength = d.u32(), d.u32(), d.u32()
			var reason string
			switch {
			case !e.Handle.Kind.Valid():
				reason = fmt.Sprintf("invalid kind %d", uint8(e.Handle.Kind))
			case !e.Codec.Valid():
				reason = fmt.Sprintf("invalid codec %d", uint8(e.Codec))
			case e.Length == 0 || e.Length > maxLength:
				reason = fmt.Sprintf("length %d out of range", e.Length)
			case e.RawLength > pack.MaxBlobSize:
				reason = fmt.Sprintf("raw length %d exceeds pack.MaxBlobSize", e.RawLength)
			case int64(e.Offset) < end:
				reason = fmt.Sprintf("offset %d overlaps the previous blob, which ends at %d", e.Offset, end)
			case int64(e.Offset)+int64(e.Length) > math.MaxUint32:
				reason = fmt.Sprintf("blob at %d of %d bytes ends past 4 GiB", e.Offset, e.Length)
			}
			if reason != "" {
				return nil, &FormatError{Offset: blobOff, Reason: fmt.Sprintf("pack %v, blob %d (%v): %s", p.ID, j, e.Handle, reason)}
			}
			end = int64(e.Offset) + int64(e.Length)
		}
	}
	if d.off != len(b) {
		return nil, d.fail("%d trailing bytes", len(b)-d.off)
	}
	return f, nil
}

// decoder reads fixed-size fields; callers check the remaining length first.
type decoder struct {
	b   []byte
	off int
}

func (d *decoder) u8() uint8 {
	v := d.b[d.off]
	d.off++
	return v
}

func (d *decoder) u32() uint32 {
	v := binary.LittleEndian.Uint32(d.b[d.off:])
	d.off += 4
	return v
}

func (d *decoder) bytes(n int) []byte {
	v := d.b[d.off : d.off+n]
	d.off += n
	return v
}

func (d *decoder) fail(format string, args ...any) error {
	return &FormatError{Offset: int64(d.off), Reason: fmt.Sprintf(format, args...)}
}
