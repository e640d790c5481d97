package repo

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/crypto"
)

// ConfigVersion is the only config version this package reads and writes.
const ConfigVersion = 1

const (
	kiB = 1 << 10
	miB = 1 << 20
)

// Pack size limits, checked at init and whenever a config is read.
const (
	// DefaultPackSize is the target size of a pack: large enough that a
	// 2 TiB image makes about 130 000 files, small enough that a failed
	// upload repeats little (design §2).
	DefaultPackSize = 16 * miB

	// MinPackSize lets tests make many packs from little data. Below it,
	// the pack header and one request per pack would dominate.
	MinPackSize = 4 * kiB

	// MaxPackSize keeps a pack's offsets far inside uint32 and bounds the
	// write session's temporary files (maxOpenPacks packs, ~1 GiB of disk
	// at this size).
	MaxPackSize = 128 * miB
)

// ImageChunker cuts disk images into fixed 8 KiB chunks (minimum =
// maximum), chosen by measurement (bench/image-nightly.sh, figures in
// docs/PERFORMANCE.md): on a 2 GiB ext4 image with 1.35% of its blocks
// changed per night, fixed 8 KiB adds 1.73× the ideal (new 4 KiB blocks,
// compressed) per night, fixed 16 KiB 2.23×, content-defined 8 KiB 2.00×,
// 64 KiB 4.0×. File-system data is block-aligned and rarely shifts, so
// content-defined cuts buy nothing here, and fixed cuts never run the
// rolling hash. 8 KiB costs twice the blobs of 16 KiB; the index keeps them
// in mapped local files (index.NewInDir) at ~4 resident bytes per blob
// looked up, so that is disk, not memory. Whatever a repository is created
// with stays in its config; `init --image-chunk-avg/--image-chunker` choose
// others.
var ImageChunker = ChunkerSizes{Min: 8 * kiB, Max: 8 * kiB, AverageBits: 13, Segment: DefaultImageSegment}

// DefaultImageSegment is the length of the segments images are cut into
// before chunking (a cut at every segment edge is part of the chunking
// definition, so segments can be chunked in parallel). Each backup worker
// buffers one segment: 16 MiB keeps an image backup's memory near 50 MiB on
// two cores while costing one forced cut per 16 MiB, too few to matter for
// deduplication.
const DefaultImageSegment = 16 * miB

// maxImageSegment bounds a config's segment size (memory per worker).
const maxImageSegment = 1 << 30

// configAD is the associated data of the sealed config, version 1.
var configAD = []byte("imago config v1")

// maxConfigSize bounds the sealed config read from a backend; a real one is
// about 350 bytes.
const maxConfigSize = 64 * kiB

// Config holds a repository's settings. It is fixed at init, stored sealed
// as JSON in the file "config", and read by Open.
type Config struct {
	// Version is ConfigVersion.
	Version int `json:"version"`
	// ID is 32 random bytes in hex; it tells repositories apart (caches).
	ID string `json:"id"`
	// Polynomial is the Rabin polynomial of both chunkers.
	Polynomial Polynomial `json:"chunker_polynomial"`
	// FileChunker sizes the chunks of file trees.
	FileChunker ChunkerSizes `json:"file_chunker"`
	// ImageChunker sizes the chunks of disk images.
	ImageChunker ChunkerSizes `json:"image_chunker"`
	// Compression is the level new blobs are compressed at, by name.
	Compression pack.CompressionLevel `json:"compression"`
	// PackSize is the size at which a pack is finished, in bytes.
	PackSize int `json:"pack_size"`
}

// ChunkerSizes are the size parameters of one chunker.
type ChunkerSizes struct {
	Min         uint `json:"min"`
	Max         uint `json:"max"`
	AverageBits int  `json:"average_bits"`
	// Segment is, for images only, the length of the fixed segments the
	// image is cut into before chunking; 0 for file trees.
	Segment int64 `json:"segment,omitempty"`
}

// Polynomial is a chunker polynomial, stored as a hex string (JSON numbers
// above 2^53 do not survive every JSON reader).
type Polynomial uint64

// MarshalText encodes p as lowercase hex without prefix.
func (p Polynomial) MarshalText() ([]byte, error) {
	return []byte(strconv.FormatUint(uint64(p), 16)), nil
}

// UnmarshalText decodes a hex polynomial.
func (p *Polynomial) UnmarshalText(b []byte) error {
	v, err := strconv.ParseUint(string(b), 16, 64)
	if err != nil {
		return fmt.Errorf("chunker polynomial %q: %w", b, err)
	}
	*p = Polynomial(v)
	return nil
}

// FileParams returns the splitter parameters for file trees.
func (c Config) FileParams() chunk.Params { return c.params(c.FileChunker) }

// ImageParams returns the splitter parameters for disk images.
func (c Config) ImageParams() chunk.Params { return c.params(c.ImageChunker) }

func (c Config) params(s ChunkerSizes) chunk.Params {
	return chunk.Params{Polynomial: uint64(c.Polynomial), Min: s.Min, Max: s.Max, AverageBits: s.AverageBits}
}

// newConfig returns the config of a new repository made with opts.
func newConfig(opts InitOptions) (Config, error) {
	var id [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return Config{}, fmt.Errorf("repo: random repository ID: %w", err)
	}
	pol := opts.Polynomial
	if pol == 0 {
		var err error
		if pol, err = chunk.RandomPolynomial(); err != nil {
			return Config{}, err
		}
	}
	packSize := opts.PackSize
	if packSize == 0 {
		packSize = DefaultPackSize
	}
	fp := chunk.FileParams
	imageChunker := ImageChunker
	if opts.ImageChunker != nil {
		imageChunker = *opts.ImageChunker
	}
	c := Config{
		Version:      ConfigVersion,
		ID:           hex.EncodeToString(id[:]),
		Polynomial:   Polynomial(pol),
		FileChunker:  ChunkerSizes{Min: fp.Min, Max: fp.Max, AverageBits: fp.AverageBits},
		ImageChunker: imageChunker,
		Compression:  opts.Compression,
		PackSize:     packSize,
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// validate checks every field a reader depends on.
func (c Config) validate() error {
	if c.Version != ConfigVersion {
		return fmt.Errorf("unsupported version %d, want %d", c.Version, ConfigVersion)
	}
	if id, err := hex.DecodeString(c.ID); err != nil || len(id) != 32 {
		return fmt.Errorf("id %q is not 64 hex digits", c.ID)
	}
	if err := c.FileParams().Validate(); err != nil {
		return fmt.Errorf("file_chunker: %w", err)
	}
	if err := c.ImageParams().Validate(); err != nil {
		return fmt.Errorf("image_chunker: %w", err)
	}
	if seg := c.ImageChunker.Segment; seg%(4*kiB) != 0 || seg < int64(c.ImageChunker.Max) || seg > maxImageSegment {
		return fmt.Errorf("image_chunker: segment %d must be a multiple of 4 KiB between the maximum chunk size and 1 GiB", seg)
	}
	if c.FileChunker.Segment != 0 {
		return fmt.Errorf("file_chunker: segment must be 0")
	}
	if !c.Compression.Valid() {
		return fmt.Errorf("invalid compression level %d", uint8(c.Compression))
	}
	if c.PackSize < MinPackSize || c.PackSize > MaxPackSize {
		return fmt.Errorf("pack_size %d outside [%d, %d]", c.PackSize, MinPackSize, MaxPackSize)
	}
	return nil
}

// sealConfig returns the stored form of c: its JSON sealed with k.
func sealConfig(k *crypto.Key, c Config) ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("repo: encode config: %w", err)
	}
	return k.Seal(nil, b, configAD), nil
}

// errConfigUnauthenticated marks a config that the key cannot open.
var errConfigUnauthenticated = errors.New("cannot be opened with the key (damaged, or written with another key)")

// openConfig opens and strictly decodes a stored config. Errors do not yet
// name the file; Open adds "config".
func openConfig(k *crypto.Key, sealed []byte) (Config, error) {
	plain, err := k.Open(nil, sealed, configAD)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", errConfigUnauthenticated, err)
	}
	return decodeConfig(plain)
}

// decodeConfig strictly decodes and validates a config's plaintext JSON:
// unknown fields, trailing data and invalid values are errors.
func decodeConfig(plain []byte) (Config, error) {
	dec := json.NewDecoder(bytes.NewReader(plain))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("decode: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Config{}, errors.New("decode: data after the JSON object")
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}
