package pack

import (
	"io"
	"testing"

	"github.com/imagobackup/imago/chunk"
)

func BenchmarkEncodeBlob(b *testing.B) {
	s := newTestSealer(b)
	inputs := []struct {
		name  string
		plain []byte
	}{{"text", textBytes(1<<20, 1)}, {"random", randomBytes(b, 1<<20)}}
	for _, in := range inputs {
		for _, level := range []CompressionLevel{CompressionOff, CompressionFastest, CompressionDefault, CompressionBetter} {
			b.Run(in.name+"/"+level.String(), func(b *testing.B) {
				h := randomHandle(b, chunk.KindData)
				dst := make([]byte, 0, 2<<20)
				b.ReportAllocs()
				b.SetBytes(int64(len(in.plain)))
				for b.Loop() {
					var err error
					if dst, _, err = EncodeBlob(dst[:0], s, level, h, in.plain); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkDecodeBlob(b *testing.B) {
	s := newTestSealer(b)
	for _, in := range []struct {
		name  string
		plain []byte
	}{{"zstd", textBytes(1<<20, 1)}, {"raw", randomBytes(b, 1<<20)}} {
		b.Run(in.name, func(b *testing.B) {
			h := randomHandle(b, chunk.KindData)
			stored, _, err := EncodeBlob(nil, s, CompressionDefault, h, in.plain)
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]byte, 0, 2<<20)
			b.ReportAllocs()
			b.SetBytes(int64(len(in.plain)))
			for b.Loop() {
				if dst, err = DecodeBlob(dst, s, h, stored); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWriter writes packs of 16 sealed 1 MiB blobs, the default pack
// size, to io.Discard.
func BenchmarkWriter(b *testing.B) {
	s := newTestSealer(b)
	const blobs = 16
	hs := make([]chunk.Handle, blobs)
	stored := make([][]byte, blobs)
	for i := range stored {
		hs[i] = randomHandle(b, chunk.KindData)
		var err error
		if stored[i], _, err = EncodeBlob(nil, s, CompressionOff, hs[i], randomBytes(b, 1<<20)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.SetBytes(blobs * (1<<20 + 1 + int64(s.Overhead())))
	for b.Loop() {
		w := NewWriter(io.Discard, s)
		for i := range stored {
			if err := w.Add(hs[i], stored[i], 1<<20, CodecNone); err != nil {
				b.Fatal(err)
			}
		}
		if _, _, err := w.Finish(); err != nil {
			b.Fatal(err)
		}
	}
}
