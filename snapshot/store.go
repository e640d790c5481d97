package snapshot

import (
	"context"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/chunk"
)

// ChunkSaver stores blobs. *repo.Repository satisfies it.
type ChunkSaver interface {
	// SaveChunk stores data as a blob of kind k unless a blob with the same
	// ID exists, and returns the ID. added is the number of bytes the call
	// added to the repository (after compression and encryption; 0 when the
	// blob was known). It is safe for concurrent use and does not retain
	// data after it returns.
	SaveChunk(ctx context.Context, k chunk.Kind, data []byte) (id chunk.ID, added int, err error)
}

// ChunkLoader reads blobs. *repo.Repository satisfies it.
type ChunkLoader interface {
	// LoadChunk returns the plaintext of blob h, verified against its ID,
	// in buf (grown when too small). Safe for concurrent use.
	LoadChunk(ctx context.Context, h chunk.Handle, buf []byte) ([]byte, error)
}

// BatchLoader is a ChunkLoader that reads many blobs at once, grouping the
// blobs of each pack into few large reads. *repo.Repository satisfies it.
type BatchLoader interface {
	ChunkLoader
	// LoadChunks loads the blobs hs and calls fn(i, plain) once for every
	// index i of hs, in no particular order and possibly from several
	// goroutines at once; plain is hs[i]'s plaintext, verified against its
	// ID, and valid only during the call. A handle listed more than once
	// is read once. The first error, of a load or of fn, stops the loads
	// and is returned.
	LoadChunks(ctx context.Context, hs []chunk.Handle, fn func(i int, plain []byte) error) error
}

// loadParallel is how many blobs LoadChunks loads at once from a loader
// that has no LoadChunks of its own.
const loadParallel = 4

// LoadChunks loads hs through l as BatchLoader.LoadChunks does: with l's
// own LoadChunks when l is a BatchLoader, else with one LoadChunk call per
// distinct blob, loadParallel at a time.
func LoadChunks(ctx context.Context, l ChunkLoader, hs []chunk.Handle, fn func(i int, plain []byte) error) error {
	if b, ok := l.(BatchLoader); ok {
		return b.LoadChunks(ctx, hs, fn)
	}
	rep := chunk.GroupRepeats(hs)
	order := rep.Order
	g, gctx := errgroup.WithContext(ctx)
	var taken atomic.Int64
	for range min(loadParallel, len(order)) {
		g.Go(func() error {
			var buf []byte
			for {
				k := int(taken.Add(1) - 1)
				if k >= len(order) {
					return nil
				}
				i := order[k]
				var err error
				if buf, err = l.LoadChunk(gctx, hs[i], buf); err != nil {
					return err
				}
				if err := rep.Each(i, func(i int) error { return fn(i, buf) }); err != nil {
					return err
				}
			}
		})
	}
	return g.Wait()
}
