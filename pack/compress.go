package pack

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Codec says how a blob's payload is encoded inside its sealed box. It is
// stored on disk (in the blob, the pack header and index files): never
// renumber, and keep removed values reserved.
type Codec uint8

const (
	// CodecNone means the payload is the plaintext itself.
	CodecNone Codec = 0
	// CodecZstd means the payload is one or more zstd frames.
	CodecZstd Codec = 1
)

// Valid reports whether c is a known codec.
func (c Codec) Valid() bool { return c == CodecNone || c == CodecZstd }

// String returns "none", "zstd" or "codec(N)".
func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// CompressionLevel is how hard EncodeBlob tries to compress. It is a setting,
// not part of the format: a blob records only its Codec, and any level can
// read any blob. The zero value is CompressionDefault, so a forgotten setting
// still compresses. The level is persisted by name (see String), not number.
type CompressionLevel uint8

// The compression levels. Measured on this project's machines, zstd fastest
// compresses ~410 MB/s and default ~270 MB/s per core.
const (
	CompressionDefault CompressionLevel = 0 // zstd.SpeedDefault
	CompressionOff     CompressionLevel = 1 // store every blob uncompressed
	CompressionFastest CompressionLevel = 2 // zstd.SpeedFastest
	CompressionBetter  CompressionLevel = 3 // zstd.SpeedBetterCompression
)

// numLevels is the number of CompressionLevel values.
const numLevels = 4

// String returns "off", "fastest", "default" or "better".
func (l CompressionLevel) String() string {
	switch l {
	case CompressionOff:
		return "off"
	case CompressionFastest:
		return "fastest"
	case CompressionDefault:
		return "default"
	case CompressionBetter:
		return "better"
	}
	return fmt.Sprintf("level(%d)", uint8(l))
}

// Valid reports whether l is a known level.
func (l CompressionLevel) Valid() bool { return l < numLevels }

// ParseCompressionLevel parses the name of a level as returned by String.
func ParseCompressionLevel(s string) (CompressionLevel, error) {
	for l := CompressionLevel(0); l < numLevels; l++ {
		if l.String() == s {
			return l, nil
		}
	}
	return 0, fmt.Errorf("pack: unknown compression level %q (want off, fastest, default or better)", s)
}

// MarshalText encodes l by name.
func (l CompressionLevel) MarshalText() ([]byte, error) {
	if !l.Valid() {
		return nil, fmt.Errorf("pack: invalid compression level %d", uint8(l))
	}
	return []byte(l.String()), nil
}

// UnmarshalText decodes a level name.
func (l *CompressionLevel) UnmarshalText(b []byte) error {
	v, err := ParseCompressionLevel(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// zstdLevel maps a compressing level to klauspost's encoder level.
func (l CompressionLevel) zstdLevel() zstd.EncoderLevel {
	switch l {
	case CompressionFastest:
		return zstd.SpeedFastest
	case CompressionBetter:
		return zstd.SpeedBetterCompression
	}
	return zstd.SpeedDefault
}

// encoderWindow is the match window of the shared encoders: 1 MiB, the
// largest image chunk. EncodeAll keeps a history buffer of twice the window
// per internal state, so the window is the encoders' memory lever: with the
// default 8 MiB window a state held 16 MiB, 2 states (2 cores) 32 MiB of a
// backup's heap; now a state holds ~4.5 MiB with its match tables (default
// level). Measured on 200 MiB of a generated file tree (bench/gentree) cut
// into 1.5 MiB and 8 MiB blobs: the compressed size is the same to 0.01%
// with 1 to 8 MiB windows (matches farther than 1 MiB back in one blob are
// rare, and deduplication catches repeats across blobs); blobs larger than
// the window compress 3% (1.5 MiB) to 6% (8 MiB) slower, and not at all
// slower up to the window. WithLowerEncoderMem would keep only window +
// 128 KiB of history, but then moves it on every 128 KiB block of a larger
// blob: 12% (1.5 MiB) to 30% (8 MiB) slower. The window is an encoder
// setting only: DecodeBlob accepts any window up to MaxBlobSize.
const encoderWindow = 1 << 20

// encoders holds one shared encoder per level, created on first use.
// Encoder.EncodeAll is safe for concurrent use; each encoder keeps at most
// GOMAXPROCS internal states (see encoderWindow for their size).
var encoders [numLevels]struct {
	once sync.Once
	enc  *zstd.Encoder
}

// encoder returns the shared encoder for l, which must not be CompressionOff.
func encoder(l CompressionLevel) *zstd.Encoder {
	e := &encoders[l]
	e.once.Do(func() {
		enc, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(l.zstdLevel()),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithWindowSize(encoderWindow),
			// The sealed box authenticates every byte already; a zstd
			// checksum would only cost 4 bytes and a hash per blob.
			zstd.WithEncoderCRC(false),
		)
		if err != nil {
			panic(err) // unreachable: the options are constant and valid
		}
		e.enc = enc
	})
	return e.enc
}

// decoder returns the shared decoder. Its output is capped at MaxBlobSize
// per call, so a hostile frame cannot make it allocate more than one blob;
// at most GOMAXPROCS decodes run at once.
var decoder = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(MaxBlobSize),
		// A single-segment frame has a window as large as its content,
		// so the window must be allowed up to the largest blob.
		zstd.WithDecoderMaxWindow(MaxBlobSize),
	)
	if err != nil {
		panic(err) // unreachable: the options are constant and valid
	}
	return d
})
