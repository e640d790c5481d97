package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
)

var update = flag.Bool("update", false, "rewrite the golden files of the current format version")

// goldenFile is a fixed index file: two packs, both kinds, both codecs.
func goldenFile() *File {
	e := func(kind chunk.Kind, codec pack.Codec, idByte byte, off, length, raw uint32) pack.Entry {
		var id chunk.ID
		for i := range id {
			id[i] = idByte + byte(i)
		}
		return pack.Entry{Handle: chunk.Handle{ID: id, Kind: kind}, Codec: codec, Offset: off, Length: length, RawLength: raw}
	}
	return &File{Packs: []PackBlobs{
		{ID: pack.ID{0x01, 0x02}, Blobs: []pack.Entry{
			e(chunk.KindData, pack.CodecZstd, 0x10, 0, 1000, 5000),
			e(chunk.KindData, pack.CodecNone, 0x20, 1000, 141, 100),
		}},
		{ID: pack.ID{0xfe}, Blobs: []pack.Entry{
			e(chunk.KindTree, pack.CodecZstd, 0x30, 0, 300, 900),
		}},
	}}
}

func TestFileGolden(t *testing.T) {
	path := filepath.Join("testdata", "v1", "index.bin")
	enc := EncodeFile(goldenFile())
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, enc, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, golden) {
		t.Error("EncodeFile output differs from the v1 golden file")
	}
	f, err := DecodeFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f, goldenFile()) {
		t.Errorf("golden file decodes to %+v", f)
	}
}

func TestFileRoundTrip(t *testing.T) {
	r := mrand.New(mrand.NewPCG(11, 12))
	f := &File{}
	for _, p := range randomPacks(t, r, 50, 40) {
		f.Packs = append(f.Packs, PackBlobs{ID: p.id, Blobs: p.entries})
	}
	for _, in := range []*File{{}, f} {
		b := EncodeFile(in)
		got, err := DecodeFile(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Packs) != len(in.Packs) || (len(in.Packs) > 0 && !reflect.DeepEqual(got, in)) {
			t.Fatal("round trip changed the file")
		}
	}
}

func TestEncodeFileSortsByOffset(t *testing.T) {
	f := goldenFile()
	blobs := f.Packs[0].Blobs
	blobs[0], blobs[1] = blobs[1], blobs[0]
	got, err := DecodeFile(EncodeFile(f))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, goldenFile()) {
		t.Fatal("blobs out of offset order were not sorted")
	}
	if f.Packs[0].Blobs[0].Offset != 1000 {
		t.Fatal("EncodeFile reordered the caller's slice")
	}
}

func TestDecodeFileRejects(t *testing.T) {
	good := EncodeFile(goldenFile())
	const blob0 = fileHeadSize + packHeadSize // offset of the first blob
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	put32 := func(off int, v uint32) []byte {
		return mod(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return b })
	}
	set := func(off int, v byte) []byte { return mod(func(b []byte) []byte { b[off] = v; return b }) }
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "shorter"},
		{"unknown version", set(0, 2), "unknown version"},
		{"pack count too large", put32(1, 1000), "cannot fit"},
		{"pack count huge", put32(1, 0xffffffff), "cannot fit"},
		{"blob count too large", put32(fileHeadSize+pack.IDSize, 1000), "cannot fit"},
		{"blob count zero", EncodeFile(&File{Packs: []PackBlobs{{ID: pack.ID{1}}}}), "no blobs"},
		{"trailing byte", append(bytes.Clone(good), 0), "trailing"},
		{"truncated", good[:len(good)-1], ""},
		{"truncated pack head", good[:blob0+2*blobSize+10], "truncated"},
		{"invalid kind", set(blob0, 3), "invalid kind"},
		{"invalid codec", set(blob0+1, 2), "invalid codec"},
		{"zero length", put32(blob0+34+4, 0), "length 0"},
		{"length beyond 24 bits", put32(blob0+34+4, 1<<24), "out of range"},
		{"raw length too large", put32(blob0+34+8, pack.MaxBlobSize+1), "raw length"},
		{"overlapping blobs", put32(blob0+blobSize+34, 999), "overlaps"},
		{"past 4 GiB", put32(blob0+blobSize+34, 0xffffffa0), "past 4 GiB"},
		{"pack twice", EncodeFile(&File{Packs: []PackBlobs{goldenFile().Packs[1], goldenFile().Packs[1]}}), "listed twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeFile(tc.b)
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("DecodeFile = %v, %v; want *FormatError", f, err)
			}
			if !strings.Contains(fe.Reason, tc.want) {
				t.Errorf("reason %q, want it to mention %q", fe.Reason, tc.want)
			}
			if fe.Offset < 0 || fe.Offset > int64(len(tc.b)) {
				t.Errorf("offset %d outside the %d-byte file", fe.Offset, len(tc.b))
			}
		})
	}
}

func FuzzDecodeFile(f *testing.F) {
	f.Add(EncodeFile(goldenFile()))
	f.Add(EncodeFile(&File{}))
	r := mrand.New(mrand.NewPCG(13, 14))
	var rf File
	for _, p := range randomPacks(f, r, 3, 4) {
		rf.Packs = append(rf.Packs, PackBlobs{ID: p.id, Blobs: p.entries})
	}
	f.Add(EncodeFile(&rf))
	f.Add([]byte{1, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := DecodeFile(b)
		if err != nil {
			if _, ok := err.(*FormatError); !ok {
				t.Fatalf("error %v is a %T, not a *FormatError", err, err)
			}
			return
		}
		if !bytes.Equal(EncodeFile(file), b) {
			t.Fatal("accepted file does not encode back to its bytes")
		}
		x := New()
		for _, p := range file.Packs {
			x.Add(p.ID, p.Blobs)
		}
		x.Each(func(h chunk.Handle, loc Location) bool {
			if !x.Has(h) {
				t.Fatalf("blob %v visited but not found", h)
			}
			return true
		})
	})
}
