package imageio

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// SaveTestContent stores data through s as a content list the way an image
// backup would, for tests of readers: chunks of pseudo-random lengths
// between minChunk and maxChunk bytes (seeded by seed), all-zero chunks as
// holes, pages written once the list is long enough. It returns the
// content root and the number of data chunks saved (distinct or not).
func SaveTestContent(ctx context.Context, s snapshot.ChunkSaver, data []byte, minChunk, maxChunk int, seed uint64) (snapshot.Content, int, error) {
	if minChunk < 1 || maxChunk < minChunk {
		return snapshot.Content{}, 0, fmt.Errorf("imageio: bad chunk bounds %d..%d", minChunk, maxChunk)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := snapshot.NewContentBuilder(s)
	chunks := 0
	for off := 0; off < len(data); {
		n := min(minChunk+rng.IntN(maxChunk-minChunk+1), len(data)-off)
		part := data[off : off+n]
		e := snapshot.Extent{Length: uint64(n)}
		if !chunk.IsZero(part) {
			id, _, err := s.SaveChunk(ctx, chunk.KindData, part)
			if err != nil {
				return snapshot.Content{}, 0, err
			}
			e.ID = id
			chunks++
		}
		if err := b.Add(ctx, e); err != nil {
			return snapshot.Content{}, 0, err
		}
		off += n
	}
	c, _, _, err := b.Finish(ctx)
	return c, chunks, err
}

// TestImage returns n bytes that look like a disk image to a reader test:
// pseudo-random data (seeded by seed) with all-zero runs that become holes
// and a few repeated blocks that deduplicate.
func TestImage(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	data := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	// Zero runs of 64–192 KiB every ~1 MiB.
	for off := 512 << 10; off < n; off += 1 << 20 {
		z := min(64<<10+rng.IntN(128<<10), n-off)
		clear(data[off : off+z])
	}
	// Repeat the first 32 KiB at a few places.
	for off := 3 << 20; off+32<<10 <= n; off += 5 << 20 {
		copy(data[off:off+32<<10], data[:32<<10])
	}
	return data
}
