package pack

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/imagobackup/imago/chunk"
)

// Entry describes one blob in a pack.
type Entry struct {
	Handle    chunk.Handle
	Offset    uint32 // where the sealed blob starts in the pack
	Length    uint32 // length of the sealed blob in the pack
	RawLength uint32 // length of the plaintext
	Codec     Codec
}

// FormatError reports a damaged or malformed pack.
type FormatError struct {
	Pack   ID
	Offset int64 // byte offset in the pack file where the damage was found
	Reason string
}

// Error returns "pack <id>: offset N: reason".
func (e *FormatError) Error() string {
	return fmt.Sprintf("pack %v: offset %d: %s", e.Pack, e.Offset, e.Reason)
}

// The header layout.
const (
	headerVersion   = 1
	headerFixedSize = 1 + 4                        // version, count
	headerEntrySize = 1 + 1 + chunk.IDSize + 4 + 4 // kind, codec, id, length, rawLength
	trailerSize     = 4                            // uint32 LE length of the sealed header

	// maxEntries bounds the blobs of one pack, and so the header a reader
	// must hold in memory (about 42 MiB). A 16 MiB pack of the smallest
	// possible blobs (41 bytes sealed) holds about 400 Ki blobs.
	maxEntries = 1 << 20
)

// headerAD is the associated data of a sealed pack header; it keeps a blob
// from being passed off as a header and the other way round.
var headerAD = []byte("imago pack header v1")

// maxSealedHeader is the largest sealed header a reader accepts.
func maxSealedHeader(overhead int) int64 {
	return headerFixedSize + maxEntries*headerEntrySize + int64(overhead)
}

// maxStored is the largest sealed blob: MaxBlobSize of plaintext plus the
// codec byte and the sealing overhead.
func maxStored(overhead int) int64 { return MaxBlobSize + 1 + int64(overhead) }

// checkEntry returns why a blob's recorded lengths and codes are invalid, or
// "" if they are consistent. A stored blob is codec byte ‖ payload, sealed;
// a raw payload is the plaintext and a zstd payload is kept only when it is
// smaller than the plaintext.
func checkEntry(k chunk.Kind, c Codec, length, rawLength int64, overhead int) string {
	switch {
	case !k.Valid():
		return fmt.Sprintf("invalid blob kind %d", uint8(k))
	case !c.Valid():
		return fmt.Sprintf("invalid codec %d", uint8(c))
	case length < int64(overhead)+1 || length > maxStored(overhead):
		return fmt.Sprintf("stored length %d out of range [%d, %d]", length, overhead+1, maxStored(overhead))
	case rawLength > MaxBlobSize:
		return fmt.Sprintf("raw length %d exceeds MaxBlobSize", rawLength)
	case c == CodecNone && length != rawLength+1+int64(overhead):
		return fmt.Sprintf("uncompressed blob: stored length %d does not match raw length %d", length, rawLength)
	case c == CodecZstd && length-1-int64(overhead) >= rawLength:
		return fmt.Sprintf("compressed blob: payload of %d bytes is not smaller than raw length %d", length-1-int64(overhead), rawLength)
	}
	return ""
}

// appendHeader appends the plaintext header describing entries to b.
func appendHeader(b []byte, entries []Entry) []byte {
	b = append(b, headerVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		b = append(b, byte(e.Handle.Kind), byte(e.Codec))
		b = append(b, e.Handle.ID[:]...)
		b = binary.LittleEndian.AppendUint32(b, e.Length)
		b = binary.LittleEndian.AppendUint32(b, e.RawLength)
	}
	return b
}

// parseHeader strictly decodes a plaintext header whose blobs must exactly
// tile the first dataLen bytes of the pack. hdrOff is the file offset of the
// sealed header, reported for damage that has no better place. Errors are
// *FormatError without Pack set.
func parseHeader(b []byte, dataLen, hdrOff int64, overhead int) ([]Entry, error) {
	bad := func(off int64, format string, args ...any) error {
		return &FormatError{Offset: off, Reason: "header: " + fmt.Sprintf(format, args...)}
	}
	if len(b) < headerFixedSize {
		return nil, bad(hdrOff, "%d bytes is shorter than the minimum %d", len(b), headerFixedSize)
	}
	if b[0] != headerVersion {
		return nil, bad(hdrOff, "unknown version %d", b[0])
	}
	count := int64(binary.LittleEndian.Uint32(b[1:5]))
	if count == 0 {
		return nil, bad(hdrOff, "no blobs")
	}
	if count > maxEntries {
		return nil, bad(hdrOff, "%d blobs exceed the maximum %d", count, maxEntries)
	}
	if want := headerFixedSize + count*headerEntrySize; int64(len(b)) != want {
		return nil, bad(hdrOff, "%d bytes for %d blobs, want %d", len(b), count, want)
	}
	if dataLen > math.MaxUint32 {
		return nil, bad(hdrOff, "blob area of %d bytes exceeds 32-bit offsets", dataLen)
	}
	entries := make([]Entry, count)
	var off int64
	p := b[headerFixedSize:]
	for i := range entries {
		e := &entries[i]
		e.Handle.Kind = chunk.Kind(p[0])
		e.Codec = Codec(p[1])
		copy(e.Handle.ID[:], p[2:2+chunk.IDSize])
		length := int64(binary.LittleEndian.Uint32(p[34:38]))
		raw := int64(binary.LittleEndian.Uint32(p[38:42]))
		p = p[headerEntrySize:]
		if r := checkEntry(e.Handle.Kind, e.Codec, length, raw, overhead); r != "" {
			return nil, bad(off, "blob %d (%v): %s", i, e.Handle, r)
		}
		if off+length > dataLen {
			return nil, bad(off, "blob %d (%v) of %d bytes runs past the end of the blob area (%d bytes)", i, e.Handle, length, dataLen)
		}
		e.Offset, e.Length, e.RawLength = uint32(off), uint32(length), uint32(raw)
		off += length
	}
	if off != dataLen {
		return nil, bad(off, "blobs end at %d, but the header starts at %d", off, dataLen)
	}
	return entries, nil
}

// PackSize returns the size of the pack file that holds exactly entries,
// sealed with a Sealer of the given overhead: the blobs, the sealed header
// and the trailer. check compares it with the stored file's size.
func PackSize(entries []Entry, overhead int) int64 {
	n := int64(headerFixedSize + len(entries)*headerEntrySize + overhead + trailerSize)
	for _, e := range entries {
		n += int64(e.Length)
	}
	return n
}

// ReadHeader reads, opens and strictly checks the header of the pack id of
// size bytes in r, and returns its entries with their offsets. Every length
// is bounds-checked before use; any damage is a *FormatError naming id. An
// error from r is returned wrapped, not as a FormatError. ReadHeader does not
// hash the pack: check does that when it reads the whole file.
func ReadHeader(r io.ReaderAt, size int64, s Sealer, id ID) ([]Entry, error) {
	overhead := s.Overhead()
	minSize := int64(headerFixedSize + overhead + trailerSize)
	if size < minSize {
		return nil, &FormatError{Pack: id, Offset: 0, Reason: fmt.Sprintf("%d bytes is shorter than the smallest pack (%d)", size, minSize)}
	}
	var trailer [trailerSize]byte
	if err := readFull(r, trailer[:], size-trailerSize); err != nil {
		return nil, fmt.Errorf("read pack %v trailer: %w", id, err)
	}
	hdrLen := int64(binary.LittleEndian.Uint32(trailer[:]))
	if hdrLen < int64(headerFixedSize+overhead) || hdrLen > maxSealedHeader(overhead) || hdrLen > size-trailerSize {
		return nil, &FormatError{Pack: id, Offset: size - trailerSize, Reason: fmt.Sprintf("header length %d out of range for a pack of %d bytes", hdrLen, size)}
	}
	if (hdrLen-int64(headerFixedSize+overhead))%headerEntrySize != 0 {
		return nil, &FormatError{Pack: id, Offset: size - trailerSize, Reason: fmt.Sprintf("header length %d is not a whole number of entries", hdrLen)}
	}
	hdrOff := size - trailerSize - hdrLen
	sealed := make([]byte, hdrLen)
	if err := readFull(r, sealed, hdrOff); err != nil {
		return nil, fmt.Errorf("read pack %v header: %w", id, err)
	}
	plain, err := s.Open(make([]byte, 0, hdrLen-int64(overhead)), sealed, headerAD)
	if err != nil {
		return nil, &FormatError{Pack: id, Offset: hdrOff, Reason: "header cannot be opened: " + err.Error()}
	}
	entries, err := parseHeader(plain, hdrOff, hdrOff, overhead)
	if err != nil {
		err.(*FormatError).Pack = id
		return nil, err
	}
	return entries, nil
}

// readFull fills p from r at off. A ReaderAt may return io.EOF together with
// a full read; that is not an error.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// sameHeader reports whether sealed opens to plain; Finish uses it to verify
// a header before it is written.
func sameHeader(s Sealer, sealed, plain []byte) bool {
	got, err := s.Open(nil, sealed, headerAD)
	return err == nil && bytes.Equal(got, plain)
}
