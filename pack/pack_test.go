package pack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/zeebo/blake3"
)

type testBlob struct {
	h     chunk.Handle
	plain []byte
}

// buildPack encodes blobs into one pack and returns its bytes, ID and entries.
func buildPack(tb testing.TB, s Sealer, blobs []testBlob) ([]byte, ID, []Entry) {
	tb.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, s)
	var stored []byte
	for _, b := range blobs {
		var codec Codec
		var err error
		stored, codec, err = EncodeBlob(stored[:0], s, CompressionFastest, b.h, b.plain)
		if err != nil {
			tb.Fatal(err)
		}
		if err := w.Add(b.h, stored, len(b.plain), codec); err != nil {
			tb.Fatal(err)
		}
	}
	if w.Count() != len(blobs) || w.Size() != int64(buf.Len()) {
		tb.Fatalf("Count %d Size %d, want %d and %d", w.Count(), w.Size(), len(blobs), buf.Len())
	}
	id, entries, err := w.Finish()
	if err != nil {
		tb.Fatal(err)
	}
	if w.Size() != int64(buf.Len()) {
		tb.Fatalf("Size after Finish = %d, wrote %d", w.Size(), buf.Len())
	}
	return buf.Bytes(), id, entries
}

// mixedBlobs returns n blobs of both kinds, compressible and not, of
// varied sizes up to max bytes.
func mixedBlobs(tb testing.TB, n, max int) []testBlob {
	blobs := make([]testBlob, n)
	for i := range blobs {
		kind := chunk.KindData
		if i%3 == 0 {
			kind = chunk.KindTree
		}
		size := (i*7919 + 13) % max
		plain := textBytes(size, uint64(i))
		if i%2 == 1 {
			plain = randomBytes(tb, size)
		}
		blobs[i] = testBlob{h: randomHandle(tb, kind), plain: plain}
	}
	return blobs
}

func TestPackRoundTrip(t *testing.T) {
	s := newTestSealer(t)
	blobs := mixedBlobs(t, 200, 20000)
	// The same ID as data and as tree are two different blobs.
	blobs = append(blobs, testBlob{chunk.Handle{ID: blobs[0].h.ID, Kind: chunk.KindData}, []byte("as data")})
	blobs[0].h.Kind = chunk.KindTree
	file, id, entries := buildPack(t, s, blobs)

	if want := ID(blake3.Sum256(file)); id != want {
		t.Fatalf("pack ID %v is not the BLAKE3 of its bytes %v", id, want)
	}
	if got := PackSize(entries, s.Overhead()); got != int64(len(file)) {
		t.Errorf("PackSize = %d, file has %d bytes", got, len(file))
	}
	read, err := ReadHeader(bytes.NewReader(file), int64(len(file)), s, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(read) != len(entries) {
		t.Fatalf("ReadHeader returned %d entries, Finish %d", len(read), len(entries))
	}
	codecs := map[Codec]int{}
	for i, e := range read {
		if e != entries[i] {
			t.Fatalf("entry %d: read %+v, written %+v", i, e, entries[i])
		}
		if e.Handle != blobs[i].h || int(e.RawLength) != len(blobs[i].plain) {
			t.Fatalf("entry %d describes %v/%d, want %v/%d", i, e.Handle, e.RawLength, blobs[i].h, len(blobs[i].plain))
		}
		plain, err := DecodeBlob(nil, s, e.Handle, file[e.Offset:e.Offset+e.Length])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(plain, blobs[i].plain) {
			t.Fatalf("blob %d decodes to different bytes", i)
		}
		codecs[e.Codec]++
	}
	if codecs[CodecNone] == 0 || codecs[CodecZstd] == 0 {
		t.Errorf("codecs used: %v; want both raw and compressed blobs", codecs)
	}
}

// TestPackBitFlips flips one bit at every byte of a small pack: either the
// header is refused or the blob holding that byte fails to decode.
func TestPackBitFlips(t *testing.T) {
	s := newTestSealer(t)
	file, id, entries := buildPack(t, s, mixedBlobs(t, 6, 300))
	for pos := range file {
		damaged := bytes.Clone(file)
		damaged[pos] ^= 1 << (pos % 8)
		read, err := ReadHeader(bytes.NewReader(damaged), int64(len(damaged)), s, id)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Pack != id {
				t.Fatalf("flip at %d: err = %v, want *FormatError for the pack", pos, err)
			}
			continue
		}
		found := false
		for i, e := range read {
			if e != entries[i] {
				t.Fatalf("flip at %d changed entry %d but the header was accepted", pos, i)
			}
			if int64(pos) >= int64(e.Offset) && int64(pos) < int64(e.Offset+e.Length) {
				found = true
				if _, err := DecodeBlob(nil, s, e.Handle, damaged[e.Offset:e.Offset+e.Length]); err == nil {
					t.Fatalf("flip at %d in blob %d went unnoticed", pos, i)
				}
			}
		}
		if !found {
			t.Fatalf("flip at %d is outside every blob, yet the header was accepted", pos)
		}
	}
}

// sealedPack builds a pack file from a hand-made header plaintext and
// dataLen bytes of blob area.
func sealedPack(s Sealer, dataLen int, hdr []byte) []byte {
	file := make([]byte, dataLen)
	file = s.Seal(file, hdr, headerAD)
	return binary.LittleEndian.AppendUint32(file, uint32(len(file)-dataLen))
}

func TestReadHeaderDamage(t *testing.T) {
	s := newTestSealer(t)
	ov := s.Overhead()
	one := []Entry{{Handle: chunk.Handle{Kind: chunk.KindData}, Length: uint32(ov + 11), RawLength: 10, Codec: CodecNone}}
	hdr := func(mod func(e []Entry), version byte) []byte {
		e := append([]Entry(nil), one...)
		if mod != nil {
			mod(e)
		}
		b := appendHeader(nil, e)
		b[0] = version
		return b
	}
	good := sealedPack(s, ov+11, hdr(nil, headerVersion))
	if _, err := ReadHeader(bytes.NewReader(good), int64(len(good)), s, ID{}); err != nil {
		t.Fatalf("the undamaged hand-made pack is refused: %v", err)
	}
	setTrailer := func(n uint32) []byte {
		b := bytes.Clone(good)
		binary.LittleEndian.PutUint32(b[len(b)-4:], n)
		return b
	}
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"empty file", nil, "shorter than the smallest pack"},
		{"trailer only", []byte{0, 0, 0, 0}, "shorter than the smallest pack"},
		{"header length past start", setTrailer(uint32(len(good))), "header length"},
		{"header length huge", setTrailer(0xffffffff), "header length"},
		{"header length zero", setTrailer(0), "header length"},
		{"header length not whole entries", setTrailer(uint32(ov + 5 + 41)), "whole number"},
		{"first byte missing", good[1:], "runs past"},
		{"header byte missing", append(bytes.Clone(good[:len(good)-6]), good[len(good)-5:]...), "cannot be opened"},
		{"sealed with another AD", func() []byte {
			f := s.Seal(make([]byte, ov+11), hdr(nil, headerVersion), []byte("other"))
			return binary.LittleEndian.AppendUint32(f, uint32(len(f)-ov-11))
		}(), "cannot be opened"},
		{"unknown version", sealedPack(s, ov+11, hdr(nil, 2)), "unknown version"},
		{"no blobs", sealedPack(s, 0, appendHeader(nil, nil)), "no blobs"},
		{"invalid kind", sealedPack(s, ov+11, hdr(func(e []Entry) { e[0].Handle.Kind = 0 }, 1)), "invalid blob kind"},
		{"invalid codec", sealedPack(s, ov+11, hdr(func(e []Entry) { e[0].Codec = 2 }, 1)), "invalid codec"},
		{"raw length mismatch", sealedPack(s, ov+11, hdr(func(e []Entry) { e[0].RawLength = 11 }, 1)), "does not match"},
		{"zstd not smaller", sealedPack(s, ov+11, hdr(func(e []Entry) { e[0].Codec = CodecZstd }, 1)), "not smaller"},
		{"blob past header", sealedPack(s, ov+10, hdr(nil, 1)), "runs past"},
		{"gap before header", sealedPack(s, ov+12, hdr(nil, 1)), "header starts at"},
		{"stored length below overhead", sealedPack(s, ov, hdr(func(e []Entry) { e[0].Length = uint32(ov) }, 1)), "out of range"},
		{"count larger than entries", sealedPack(s, ov+11, func() []byte {
			b := hdr(nil, 1)
			binary.LittleEndian.PutUint32(b[1:], 2)
			return b
		}()), "want"},
	}
	id := ID{1, 2, 3}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadHeader(bytes.NewReader(tc.file), int64(len(tc.file)), s, id)
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v (%T), want *FormatError", err, err)
			}
			if fe.Pack != id || !strings.Contains(err.Error(), id.String()) {
				t.Errorf("error %q does not name the pack", err)
			}
			if !strings.Contains(fe.Reason, tc.want) {
				t.Errorf("reason %q, want it to mention %q", fe.Reason, tc.want)
			}
		})
	}
}

// failingReaderAt fails every read.
type failingReaderAt struct{}

var errRead = errors.New("disk on fire")

func (failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, errRead }

func TestReadHeaderReadError(t *testing.T) {
	_, err := ReadHeader(failingReaderAt{}, 1000, newTestSealer(t), ID{})
	var fe *FormatError
	if !errors.Is(err, errRead) || errors.As(err, &fe) {
		t.Fatalf("err = %v; want the read error, not a FormatError", err)
	}
}

func TestWriterRejects(t *testing.T) {
	s := newTestSealer(t)
	h := randomHandle(t, chunk.KindData)
	stored, codec, err := EncodeBlob(nil, s, CompressionDefault, h, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		h      chunk.Handle
		stored []byte
		raw    int
		codec  Codec
	}{
		{"invalid kind", chunk.Handle{ID: h.ID}, stored, 5, codec},
		{"invalid codec", h, stored, 5, 9},
		{"raw length mismatch", h, stored, 6, codec},
		{"negative raw length", h, stored, -1, codec},
		{"shorter than overhead", h, stored[:s.Overhead()], 5, codec},
		{"too long", h, make([]byte, MaxBlobSize+2+s.Overhead()), MaxBlobSize + 1, CodecNone},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf, s)
			if err := w.Add(tc.h, tc.stored, tc.raw, tc.codec); err == nil {
				t.Fatal("Add accepted it")
			}
			if buf.Len() != 0 || w.Count() != 0 {
				t.Errorf("a refused Add wrote %d bytes, %d blobs", buf.Len(), w.Count())
			}
		})
	}
	t.Run("empty pack", func(t *testing.T) {
		if _, _, err := NewWriter(&bytes.Buffer{}, s).Finish(); err == nil {
			t.Fatal("Finish of an empty pack succeeded")
		}
	})
	t.Run("add after finish", func(t *testing.T) {
		w := NewWriter(&bytes.Buffer{}, s)
		if err := w.Add(h, stored, 5, codec); err != nil {
			t.Fatal(err)
		}
		if _, _, err := w.Finish(); err != nil {
			t.Fatal(err)
		}
		if err := w.Add(h, stored, 5, codec); err == nil {
			t.Error("Add after Finish succeeded")
		}
		if _, _, err := w.Finish(); err == nil {
			t.Error("second Finish succeeded")
		}
	})
}

// shortWriter accepts limit bytes, then fails.
type shortWriter struct{ limit int }

func (w *shortWriter) Write(p []byte) (int, error) {
	if len(p) > w.limit {
		n := w.limit
		w.limit = 0
		return n, errors.New("disk full")
	}
	w.limit -= len(p)
	return len(p), nil
}

func TestWriterWriteErrorSticks(t *testing.T) {
	s := newTestSealer(t)
	h := randomHandle(t, chunk.KindData)
	stored, codec, err := EncodeBlob(nil, s, CompressionDefault, h, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(&shortWriter{limit: len(stored) + 3}, s)
	if err := w.Add(h, stored, 5, codec); err != nil {
		t.Fatal(err)
	}
	if err := w.Add(h, stored, 5, codec); err == nil {
		t.Fatal("short write not reported")
	}
	if _, _, err := w.Finish(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Finish after a failed write: err = %v", err)
	}
}
