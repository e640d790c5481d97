package pack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/imagobackup/imago/chunk"
	"github.com/zeebo/blake3"
)

// Writer writes one pack to an io.Writer: blobs with Add, then the header and
// trailer with Finish. It hashes every byte it writes, so the pack's ID is
// known when Finish returns. A Writer is not safe for concurrent use.
type Writer struct {
	w       io.Writer
	s       Sealer
	hash    *blake3.Hasher
	size    int64
	entries []Entry
	err     error // sticky: the first write error, or errFinished
}

var errFinished = errors.New("pack: writer already finished")

// NewWriter returns a Writer that writes a pack to w, sealing its header
// with s. Blobs passed to Add must have been sealed by EncodeBlob with a
// Sealer of the same overhead.
func NewWriter(w io.Writer, s Sealer) *Writer {
	return &Writer{w: w, s: s, hash: blake3.New()}
}

// Add appends stored, the sealed blob h made by EncodeBlob from rawLen bytes
// of plaintext with codec, to the pack. It rejects lengths and codes that
// ReadHeader would reject, a pack grown past 32-bit offsets or past the
// maximum number of blobs, and any call after a write error or Finish.
// Add does not keep stored.
func (w *Writer) Add(h chunk.Handle, stored []byte, rawLen int, codec Codec) error {
	if w.err != nil {
		return w.err
	}
	if rawLen < 0 {
		return fmt.Errorf("pack: add blob %v: negative raw length %d", h, rawLen)
	}
	if r := checkEntry(h.Kind, codec, int64(len(stored)), int64(rawLen), w.s.Overhead()); r != "" {
		return fmt.Errorf("pack: add blob %v: %s", h, r)
	}
	if len(w.entries) >= maxEntries {
		return fmt.Errorf("pack: add blob %v: pack already holds %d blobs", h, maxEntries)
	}
	if w.size+int64(len(stored)) > math.MaxUint32 {
		return fmt.Errorf("pack: add blob %v: pack would exceed 4 GiB of blobs", h)
	}
	if err := w.write(stored); err != nil {
		return err
	}
	w.entries = append(w.entries, Entry{
		Handle:    h,
		Offset:    uint32(w.size),
		Length:    uint32(len(stored)),
		RawLength: uint32(rawLen),
		Codec:     codec,
	})
	w.size += int64(len(stored))
	return nil
}

// write writes p to the underlying writer and the hash.
func (w *Writer) write(p []byte) error {
	n, err := w.w.Write(p)
	_, _ = w.hash.Write(p[:n])
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("pack: write: %w", err)
		return w.err
	}
	return nil
}

// Size returns the number of bytes written so far.
func (w *Writer) Size() int64 { return w.size }

// Count returns the number of blobs added so far.
func (w *Writer) Count() int { return len(w.entries) }

// Finish seals the header, checks that it opens again, writes it and the
// trailer, and returns the pack's ID (the BLAKE3-256 of every byte written)
// and its entries. A pack without blobs is an error. After Finish, the
// Writer accepts no more calls.
func (w *Writer) Finish() (ID, []Entry, error) {
	if w.err != nil {
		return ID{}, nil, w.err
	}
	if len(w.entries) == 0 {
		return ID{}, nil, errors.New("pack: finish: no blobs")
	}
	plain := appendHeader(make([]byte, 0, headerFixedSize+len(w.entries)*headerEntrySize), w.entries)
	sealed := w.s.Seal(make([]byte, 0, len(plain)+w.s.Overhead()+trailerSize), plain, headerAD)
	if len(sealed) != len(plain)+w.s.Overhead() || !sameHeader(w.s, sealed, plain) {
		w.err = errors.New("pack: finish: sealed header does not open to what was sealed")
		return ID{}, nil, w.err
	}
	sealed = binary.LittleEndian.AppendUint32(sealed, uint32(len(sealed)))
	if err := w.write(sealed); err != nil {
		return ID{}, nil, err
	}
	w.size += int64(len(sealed))
	w.err = errFinished
	var id ID
	w.hash.Sum(id[:0])
	return id, w.entries, nil
}
