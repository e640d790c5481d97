package pack

import (
	"bytes"
	"testing"

	"github.com/imagobackup/imago/chunk"
)

// The fuzzers use nullSealer, which does not encrypt, so that mutated bytes
// reach the parsers behind the authentication; with a real sealer every
// mutation would stop at Open.

// FuzzReadHeader reads arbitrary bytes as a pack.
func FuzzReadHeader(f *testing.F) {
	s := nullSealer{}
	for _, n := range []int{1, 3, 17} {
		file, _, _ := buildPack(f, s, mixedBlobs(f, n, 200))
		f.Add(file)
	}
	f.Add([]byte{})
	f.Add([]byte{5, 0, 0, 0})
	f.Add(sealedPack(s, 0, appendHeader(nil, nil)))
	f.Fuzz(func(t *testing.T, file []byte) {
		entries, err := ReadHeader(bytes.NewReader(file), int64(len(file)), s, ID{})
		if err != nil {
			if _, ok := err.(*FormatError); !ok {
				t.Fatalf("error %v is a %T, not a *FormatError", err, err)
			}
			return
		}
		if got := PackSize(entries, s.Overhead()); got != int64(len(file)) {
			t.Fatalf("accepted a pack of %d bytes whose entries make %d", len(file), got)
		}
		var off uint32
		for _, e := range entries {
			if e.Offset != off {
				t.Fatalf("entry at %d, want %d", e.Offset, off)
			}
			off += e.Length
		}
	})
}

// FuzzParseHeader parses arbitrary plaintext headers; what it accepts must
// encode back to the same bytes.
func FuzzParseHeader(f *testing.F) {
	s := newTestSealer(f)
	for _, n := range []int{1, 2, 9} {
		_, _, entries := buildPack(f, s, mixedBlobs(f, n, 500))
		f.Add(appendHeader(nil, entries), PackSize(entries, s.Overhead())-int64(len(entries)*headerEntrySize+headerFixedSize+s.Overhead()+trailerSize), s.Overhead())
	}
	f.Add([]byte{1, 0, 0, 0, 0}, int64(0), 0)
	f.Add([]byte{1, 1, 0, 0, 0}, int64(41), 40)
	f.Fuzz(func(t *testing.T, hdr []byte, dataLen int64, overhead int) {
		if overhead < 0 || overhead > 1<<10 {
			return // Overhead comes from the code, never from disk.
		}
		entries, err := parseHeader(hdr, dataLen, 0, overhead)
		if err != nil {
			return
		}
		if !bytes.Equal(appendHeader(nil, entries), hdr) {
			t.Fatal("accepted header does not encode back to its bytes")
		}
		var end int64
		for _, e := range entries {
			end = int64(e.Offset) + int64(e.Length)
		}
		if end != dataLen {
			t.Fatalf("blobs end at %d, blob area is %d", end, dataLen)
		}
	})
}

// FuzzDecodeBlob decodes arbitrary stored blobs.
func FuzzDecodeBlob(f *testing.F) {
	s := nullSealer{}
	h := chunk.Handle{Kind: chunk.KindData}
	for _, plain := range [][]byte{nil, []byte("x"), textBytes(3000, 1), textBytes(100, 2)} {
		stored, _, err := EncodeBlob(nil, s, CompressionDefault, h, plain)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(stored)
	}
	f.Add([]byte{byte(CodecZstd)})
	f.Add([]byte{2, 0})
	f.Fuzz(func(t *testing.T, stored []byte) {
		plain, err := DecodeBlob(nil, s, h, stored)
		if err != nil {
			if _, ok := err.(*BlobError); !ok {
				t.Fatalf("error %v is a %T, not a *BlobError", err, err)
			}
			return
		}
		if len(plain) > MaxBlobSize {
			t.Fatalf("decoded %d bytes, more than MaxBlobSize", len(plain))
		}
	})
}
