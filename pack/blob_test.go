package pack

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/klauspost/compress/zstd"
)

func TestIDText(t *testing.T) {
	var id ID
	copy(id[:], randomBytes(t, IDSize))
	got, err := ParseID(id.String())
	if err != nil || got != id {
		t.Fatalf("ParseID(String()) = %v, %v; want %v", got, err, id)
	}
	if id.Short() != id.String()[:8] {
		t.Errorf("Short = %q, want prefix of %q", id.Short(), id.String())
	}
	txt, _ := id.MarshalText()
	var back ID
	if err := back.UnmarshalText(txt); err != nil || back != id {
		t.Errorf("text round trip = %v, %v", back, err)
	}
	if id.IsNull() || !(ID{}).IsNull() {
		t.Error("IsNull wrong")
	}
	for _, bad := range []string{"", "00", strings.Repeat("g", 64), strings.Repeat("0", 63), strings.Repeat("0", 66)} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) succeeded", bad)
		}
	}
}

func TestCompressionLevelNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		want CompressionLevel
	}{{"off", CompressionOff}, {"fastest", CompressionFastest}, {"default", CompressionDefault}, {"better", CompressionBetter}} {
		got, err := ParseCompressionLevel(tc.name)
		if err != nil || got != tc.want || got.String() != tc.name {
			t.Errorf("ParseCompressionLevel(%q) = %v, %v", tc.name, got, err)
		}
	}
	for _, bad := range []string{"", "max", "Default", "9"} {
		if _, err := ParseCompressionLevel(bad); err == nil {
			t.Errorf("ParseCompressionLevel(%q) succeeded", bad)
		}
	}
	var l CompressionLevel
	if err := l.UnmarshalText([]byte("better")); err != nil || l != CompressionBetter {
		t.Errorf("UnmarshalText = %v, %v", l, err)
	}
	if _, err := CompressionLevel(9).MarshalText(); err == nil {
		t.Error("MarshalText of an invalid level succeeded")
	}
}

func TestBlobRoundTrip(t *testing.T) {
	s := newTestSealer(t)
	levels := []CompressionLevel{CompressionOff, CompressionFastest, CompressionDefault, CompressionBetter}
	inputs := []struct {
		name       string
		plain      []byte
		compresses bool
	}{
		{"empty", nil, false},
		{"one byte", []byte{42}, false},
		{"short text", []byte("abc"), false},
		{"text 1MiB", textBytes(1<<20, 1), true},
		{"random 1MiB", randomBytes(t, 1<<20), false},
		{"zeros MaxBlobSize", make([]byte, MaxBlobSize), true},
	}
	for _, in := range inputs {
		for _, level := range levels {
			t.Run(in.name+"/"+level.String(), func(t *testing.T) {
				for _, kind := range []chunk.Kind{chunk.KindData, chunk.KindTree} {
					h := randomHandle(t, kind)
					prefix := []byte("keep")
					stored, codec, err := EncodeBlob(prefix, s, level, h, in.plain)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.HasPrefix(stored, []byte("keep")) {
						t.Fatal("EncodeBlob did not append to dst")
					}
					stored = stored[4:]
					wantCodec := CodecNone
					if in.compresses && level != CompressionOff {
						wantCodec = CodecZstd
					}
					if codec != wantCodec {
						t.Fatalf("codec = %v, want %v", codec, wantCodec)
					}
					if codec == CodecNone && len(stored) != len(in.plain)+1+s.Overhead() {
						t.Errorf("raw blob stored in %d bytes, want %d", len(stored), len(in.plain)+1+s.Overhead())
					}
					if codec == CodecZstd && len(stored) >= len(in.plain) {
						t.Errorf("compressed blob stored in %d bytes, not less than %d", len(stored), len(in.plain))
					}
					if r := checkEntry(kind, codec, int64(len(stored)), int64(len(in.plain)), s.Overhead()); r != "" {
						t.Errorf("the pack header would reject this blob: %s", r)
					}
					got, err := DecodeBlob(make([]byte, 10), s, h, stored)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, in.plain) {
						t.Fatalf("decoded %d bytes, differ from the %d-byte plaintext", len(got), len(in.plain))
					}
				}
			})
		}
	}
}

func TestEncodeBlobRejects(t *testing.T) {
	s := newTestSealer(t)
	h := randomHandle(t, chunk.KindData)
	if _, _, err := EncodeBlob(nil, s, CompressionDefault, h, make([]byte, MaxBlobSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized blob: err = %v, want ErrTooLarge", err)
	}
	if _, _, err := EncodeBlob(nil, s, CompressionDefault, chunk.Handle{ID: h.ID, Kind: 3}, []byte("x")); err == nil {
		t.Error("invalid kind accepted")
	}
	if _, _, err := EncodeBlob(nil, s, CompressionLevel(9), h, []byte("x")); err == nil {
		t.Error("invalid level accepted")
	}
}

func TestDecodeBlobRejects(t *testing.T) {
	s := newTestSealer(t)
	h := randomHandle(t, chunk.KindData)
	plain := textBytes(64<<10, 2)
	stored, _, err := EncodeBlob(nil, s, CompressionDefault, h, plain)
	if err != nil {
		t.Fatal(err)
	}
	otherID := h
	otherID.ID[31] ^= 1
	flipped := bytes.Clone(stored)
	flipped[len(flipped)/2] ^= 0x10

	// bomb is a validly sealed zstd payload that inflates past MaxBlobSize.
	bomb := append([]byte{byte(CodecZstd)}, encoder(CompressionFastest).EncodeAll(make([]byte, MaxBlobSize+1), nil)...)
	bombAD := blobAD(h)
	badCodecAD := blobAD(h)

	cases := []struct {
		name   string
		h      chunk.Handle
		stored []byte
	}{
		{"moved to another ID", otherID, stored},
		{"moved to another kind", chunk.Handle{ID: h.ID, Kind: chunk.KindTree}, stored},
		{"bit flipped", h, flipped},
		{"truncated", h, stored[:len(stored)-1]},
		{"empty", h, nil},
		{"shorter than overhead", h, stored[:s.Overhead()]},
		{"too long", h, make([]byte, MaxBlobSize+2+s.Overhead())},
		{"decompression bomb", h, s.Seal(nil, bomb, bombAD[:])},
		{"unknown codec", h, s.Seal(nil, []byte{7, 1, 2, 3}, badCodecAD[:])},
		{"garbage zstd", h, s.Seal(nil, []byte{byte(CodecZstd), 1, 2, 3}, badCodecAD[:])},
		{"no codec byte", h, s.Seal(nil, nil, badCodecAD[:])},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeBlob(nil, s, tc.h, tc.stored)
			var be *BlobError
			if !errors.As(err, &be) {
				t.Fatalf("err = %v (%T), want *BlobError", err, err)
			}
			if be.Handle != tc.h || !strings.Contains(err.Error(), tc.h.ID.String()) {
				t.Errorf("error %q does not name the blob %v", err, tc.h)
			}
			if len(got) != 0 {
				t.Errorf("returned %d bytes with an error", len(got))
			}
		})
	}
}

func TestDecodeBlobIntoStoredBuffer(t *testing.T) {
	s := newTestSealer(t)
	for _, plain := range [][]byte{textBytes(300<<10, 3), randomBytes(t, 300<<10)} {
		h := randomHandle(t, chunk.KindTree)
		stored, _, err := EncodeBlob(make([]byte, 0, 1<<20), s, CompressionFastest, h, plain)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeBlob(stored, s, h, stored)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("decoding into the stored buffer: err %v, equal %v", err, bytes.Equal(got, plain))
		}
	}
}

// TestZstdStreamsDecode checks that a payload of several zstd frames, as
// another writer might make, decodes to their concatenation.
func TestZstdStreamsDecode(t *testing.T) {
	s := newTestSealer(t)
	h := randomHandle(t, chunk.KindData)
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := textBytes(5000, 4), textBytes(7000, 5)
	payload := append([]byte{byte(CodecZstd)}, enc.EncodeAll(a, nil)...)
	payload = enc.EncodeAll(b, payload)
	ad := blobAD(h)
	got, err := DecodeBlob(nil, s, h, s.Seal(nil, payload, ad[:]))
	if err != nil || !bytes.Equal(got, append(a, b...)) {
		t.Fatalf("err %v; equal %v", err, bytes.Equal(got, append(a, b...)))
	}
}
