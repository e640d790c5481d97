package chunk

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/restic/chunker"
)

const (
	kiB = 1 << 10
	miB = 1 << 20
)

// Limits on Params, so that a hostile or corrupted repository config cannot
// make the splitter misbehave.
const (
	// MinChunkSize is the smallest allowed Params.Min. The chunker starts
	// fingerprinting a 64-byte window before Min, and computes Min-64 with
	// unsigned arithmetic: a smaller Min would wrap around and never cut.
	MinChunkSize = 64

	// MaxChunkSize is the largest allowed Params.Max. Every chunk becomes one
	// blob, and blobs are kept below pack.MaxBlobSize (12 MiB) so that a sealed
	// blob's length fits the index's 24-bit length field.
	MaxChunkSize = 8 * miB

	// minAverageBits is the smallest allowed Params.AverageBits: an average
	// below the 64-byte fingerprint window cuts at almost every byte past Min.
	minAverageBits = 6

	// polynomialDegree is the degree of every chunker polynomial: the largest
	// prime below 64-8, so that the fingerprint and one shifted-in byte fit in
	// 64 bits (see restic/chunker).
	polynomialDegree = 53
)

// Params configures a Splitter. Polynomial is chosen once per repository with
// RandomPolynomial and stored in its config; Min and Max bound the chunk size
// (only the last chunk of a stream may be shorter than Min); a cut is made
// where the low AverageBits bits of the fingerprint are zero, so chunks are
// on average about Min + 2^AverageBits bytes long.
type Params struct {
	Polynomial  uint64
	Min, Max    uint
	AverageBits int
}

// FileParams are the chunk sizes for file trees: at least 512 KiB, about
// 1 MiB on average, at most 8 MiB (restic's proven choice). Polynomial is left
// zero: set it from the repository config before use.
var FileParams = Params{Min: 512 * kiB, Max: 8 * miB, AverageBits: 20}

// ErrInvalidParams is wrapped by the error Params.Validate returns.
var ErrInvalidParams = errors.New("chunk: invalid splitter parameters")

// RandomPolynomial returns a random irreducible polynomial of degree 53 over
// GF(2), read from the system's secure random source, for a new repository.
func RandomPolynomial() (uint64, error) {
	p, err := chunker.RandomPolynomial()
	if err != nil {
		return 0, fmt.Errorf("chunk: random polynomial: %w", err)
	}
	return uint64(p), nil
}

// Validate reports whether p is usable: the polynomial is irreducible of
// degree 53, MinChunkSize <= Min <= Max <= MaxChunkSize, and the average
// 2^AverageBits lies between 64 bytes and Max. The error wraps
// ErrInvalidParams.
func (p Params) Validate() error {
	pol := chunker.Pol(p.Polynomial)
	switch {
	case p.Polynomial == 0:
		return fmt.Errorf("%w: polynomial not set", ErrInvalidParams)
	case pol.Deg() != polynomialDegree:
		return fmt.Errorf("%w: polynomial %#x has degree %d, want %d", ErrInvalidParams, p.Polynomial, pol.Deg(), polynomialDegree)
	case !irreducible(pol):
		return fmt.Errorf("%w: polynomial %#x is reducible", ErrInvalidParams, p.Polynomial)
	case p.Min < MinChunkSize:
		return fmt.Errorf("%w: min size %d below %d", ErrInvalidParams, p.Min, MinChunkSize)
	case p.Max > MaxChunkSize:
		return fmt.Errorf("%w: max size %d above %d", ErrInvalidParams, p.Max, MaxChunkSize)
	case p.Min > p.Max:
		return fmt.Errorf("%w: min size %d above max size %d", ErrInvalidParams, p.Min, p.Max)
	case p.AverageBits < minAverageBits || uint64(1)<<uint(min(p.AverageBits, 63)) > uint64(p.Max):
		return fmt.Errorf("%w: average bits %d outside [%d, log2(max %d)]", ErrInvalidParams, p.AverageBits, minAverageBits, p.Max)
	}
	return nil
}

// irreducibleCache remembers polynomials already proven irreducible: the test
// takes about 0.7 ms, and a repository creates a Splitter per worker with the
// same polynomial. Its size is capped (maxCachedPolynomials) so that a stream
// of hostile configs cannot grow it.
var irreducibleCache struct {
	sync.Mutex
	known map[chunker.Pol]bool // guarded by the mutex
}

// maxCachedPolynomials bounds irreducibleCache: one repository needs one entry,
// and a few cover tests and "copy" between repositories.
const maxCachedPolynomials = 16

// irreducible reports whether pol is irreducible over GF(2), caching the
// answer.
func irreducible(pol chunker.Pol) bool {
	irreducibleCache.Lock()
	ok, found := irreducibleCache.known[pol]
	irreducibleCache.Unlock()
	if found {
		return ok
	}
	ok = pol.Irreducible() // slow: not under the lock
	irreducibleCache.Lock()
	if irreducibleCache.known == nil || len(irreducibleCache.known) >= maxCachedPolynomials {
		irreducibleCache.known = make(map[chunker.Pol]bool, maxCachedPolynomials)
	}
	irreducibleCache.known[pol] = ok
	irreducibleCache.Unlock()
	return ok
}

// Splitter cuts a stream into content-defined chunks. It is not safe for
// concurrent use; use one Splitter per goroutine and reuse it with Reset.
type Splitter struct {
	params Params
	err    error // from Params.Validate; returned by every Next
	c      *chunker.Chunker
}

// NewSplitter returns a Splitter that reads r and cuts it with p. Invalid
// parameters are reported by the first call to Next (the error wraps
// ErrInvalidParams); call p.Validate first to learn of them earlier.
//
// A Splitter owns a 512 KiB read buffer: reuse it with Reset rather than
// creating one per file.
func NewSplitter(r io.Reader, p Params) *Splitter {
	s := &Splitter{params: p, err: p.Validate()}
	if s.err != nil {
		return s
	}
	s.c = chunker.NewWithBoundaries(r, chunker.Pol(p.Polynomial), p.Min, p.Max)
	s.c.SetAverageBits(p.AverageBits)
	return s
}

// Reset makes s read the next stream from r with the same parameters, keeping
// its read buffer and polynomial tables. The next chunk starts at r's first
// byte, as if s were new.
func (s *Splitter) Reset(r io.Reader) {
	if s.err != nil {
		return
	}
	p := s.params
	s.c.ResetWithBoundaries(r, chunker.Pol(p.Polynomial), p.Min, p.Max)
	// ResetWithBoundaries restores the chunker's default 20-bit mask.
	s.c.SetAverageBits(p.AverageBits)
}

// Params returns the parameters s was created with.
func (s *Splitter) Params() Params { return s.params }

// Next reads the next chunk into buf[:0], growing it if its capacity is too
// small, and returns it; the caller owns buf and the result, which s does not
// keep. A buf with capacity Params.Max never needs to grow. After the last
// chunk Next returns io.EOF; an empty stream has no chunks. A read error is
// returned as is and leaves s undefined until Reset.
func (s *Splitter) Next(buf []byte) ([]byte, error) {
	if s.err != nil {
		return nil, s.err
	}
	c, err := s.c.Next(buf[:0])
	if err != nil {
		return nil, err
	}
	return c.Data, nil
}
