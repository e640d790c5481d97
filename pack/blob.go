package pack

import (
	"errors"
	"fmt"
	"sync"

	"github.com/imagobackup/imago/chunk"
)

// MaxBlobSize is the largest plaintext a blob may hold. Chunks (at most 8 MiB)
// and tree blobs are kept below it. It is chosen so that a sealed blob, at
// most MaxBlobSize + 1 (codec byte) + 40 (sealing overhead) bytes, always
// fits in the index's 24-bit length field.
const MaxBlobSize = 12 << 20

// Sealer seals and opens byte strings with authenticated encryption.
// *crypto.Key satisfies it. Implementations must be safe for concurrent use.
type Sealer interface {
	// Seal appends the sealed form of plaintext, authenticated together
	// with ad, to dst and returns the extended slice. The sealed form is
	// exactly Overhead() bytes longer than plaintext.
	Seal(dst, plaintext, ad []byte) []byte
	// Open appends the plaintext of sealed to dst and returns the extended
	// slice, or an error when sealed or ad was altered.
	Open(dst, sealed, ad []byte) ([]byte, error)
	// Overhead is the number of bytes Seal adds.
	Overhead() int
}

// ErrTooLarge is returned (wrapped) by EncodeBlob for a plaintext larger than
// MaxBlobSize.
var ErrTooLarge = errors.New("pack: blob larger than MaxBlobSize")

// BlobError reports a blob that cannot be decoded: it was altered, moved to
// another ID or kind, or its payload is malformed.
type BlobError struct {
	Handle chunk.Handle
	Reason string
	Err    error // the underlying error, if any (e.g. from Sealer.Open)
}

// Error returns "pack: blob kind:id: reason[: err]".
func (e *BlobError) Error() string {
	s := "pack: blob " + e.Handle.String() + ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying error.
func (e *BlobError) Unwrap() error { return e.Err }

// blobADSize is the size of a blob's associated data: kind byte ‖ ID.
const blobADSize = 1 + chunk.IDSize

// blobAD returns the associated data that binds a blob to its handle.
func blobAD(h chunk.Handle) [blobADSize]byte {
	var ad [blobADSize]byte
	ad[0] = byte(h.Kind)
	copy(ad[1:], h.ID[:])
	return ad
}

// maxScratch is the largest buffer returned to scratchPool: a sealed blob or
// a compressed payload of MaxBlobSize plus slack for zstd's worst-case
// expansion. Larger buffers (never made by this package) are dropped.
const maxScratch = MaxBlobSize + 1<<16

// scratchPool holds buffers for compressed payloads and opened boxes. It is
// emptied by the garbage collector; under load it holds about one buffer of
// at most maxScratch bytes per concurrent caller.
var scratchPool sync.Pool

func getScratch() []byte {
	if p, ok := scratchPool.Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return nil
}

func putScratch(b []byte) {
	if cap(b) == 0 || cap(b) > maxScratch {
		return
	}
	b = b[:0]
	scratchPool.Put(&b)
}

// EncodeBlob compresses plain at level (keeping the compressed form only if it
// is smaller), seals codec byte ‖ payload with kind ‖ id as associated data,
// and appends the result to dst. It returns the extended slice and the codec
// used. plain must be at most MaxBlobSize bytes and h.Kind valid; dst must
// not overlap plain. EncodeBlob is safe for concurrent use.
func EncodeBlob(dst []byte, s Sealer, level CompressionLevel, h chunk.Handle, plain []byte) (stored []byte, codec Codec, err error) {
	if len(plain) > MaxBlobSize {
		return dst, 0, fmt.Errorf("encode blob %v: %d bytes: %w", h, len(plain), ErrTooLarge)
	}
	if !h.Kind.Valid() {
		return dst, 0, fmt.Errorf("pack: encode blob %v: invalid kind", h)
	}
	if !level.Valid() {
		return dst, 0, fmt.Errorf("pack: encode blob %v: invalid compression level %d", h, uint8(level))
	}
	buf := getScratch()
	defer func() { putScratch(buf) }()

	codec = CodecNone
	if level != CompressionOff && len(plain) > 0 {
		buf = append(buf, byte(CodecZstd))
		buf = encoder(level).EncodeAll(plain, buf)
		if len(buf)-1 < len(plain) {
			codec = CodecZstd
		}
	}
	if codec == CodecNone {
		buf = append(buf[:0], byte(CodecNone))
		buf = append(buf, plain...)
	}
	ad := blobAD(h)
	return s.Seal(dst, buf, ad[:]), codec, nil
}

// DecodeBlob opens stored, the sealed form of blob h, decompresses it and
// appends the plaintext to dst[:0]. dst may share memory with stored. The
// plaintext is at most MaxBlobSize bytes; the caller verifies that it hashes
// to h.ID. Every failure is a *BlobError; a blob sealed for another handle
// fails to open. DecodeBlob is safe for concurrent use.
func DecodeBlob(dst []byte, s Sealer, h chunk.Handle, stored []byte) ([]byte, error) {
	if len(stored) < s.Overhead()+1 {
		return dst[:0], &BlobError{Handle: h, Reason: fmt.Sprintf("sealed blob of %d bytes is shorter than the minimum %d", len(stored), s.Overhead()+1)}
	}
	if len(stored) > MaxBlobSize+1+s.Overhead() {
		return dst[:0], &BlobError{Handle: h, Reason: fmt.Sprintf("sealed blob of %d bytes is longer than the maximum %d", len(stored), MaxBlobSize+1+s.Overhead())}
	}
	ad := blobAD(h)
	box, err := s.Open(getScratch(), stored, ad[:])
	defer func() { putScratch(box) }()
	if err != nil {
		return dst[:0], &BlobError{Handle: h, Reason: "cannot open", Err: err}
	}
	if len(box) == 0 {
		return dst[:0], &BlobError{Handle: h, Reason: "missing codec byte"}
	}
	payload := box[1:]
	switch Codec(box[0]) {
	case CodecNone:
		return append(dst[:0], payload...), nil
	case CodecZstd:
		out, err := decoder().DecodeAll(payload, dst[:0])
		if err != nil {
			return dst[:0], &BlobError{Handle: h, Reason: "cannot decompress", Err: err}
		}
		return out, nil
	}
	return dst[:0], &BlobError{Handle: h, Reason: fmt.Sprintf("unknown codec %d", box[0])}
}
