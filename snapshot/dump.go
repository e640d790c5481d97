package snapshot

import (
	"context"
	"fmt"
	"io"

	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/chunk"
)

// zeroBlock is written for holes, a block at a time. 64 KiB keeps writes
// large enough to be cheap while costing little memory.
var zeroBlock [64 << 10]byte

// maxDumpWorkers bounds the fetch parallelism of Dump: each worker holds one
// chunk buffer (up to 8 MiB for file chunks), so 64 workers cost at most
// 512 MiB.
const maxDumpWorkers = 64

// Dump writes the content c to w in order: data extents as loaded through l,
// holes as zeros. Up to workers chunks are fetched ahead in parallel (values
// below 1 mean 1, above 64 mean 64); memory is bounded by workers buffers of
// one chunk each. A loaded chunk whose length differs from its extent is an
// error. Dump stops at the first error, which it returns; w may then have
// received a prefix of the content.
func Dump(ctx context.Context, l ChunkLoader, c Content, w io.Writer, workers int) error {
	workers = min(max(workers, 1), maxDumpWorkers)
	r := NewContentReader(l, c)

	type result struct {
		e    Extent
		data []byte
		err  error
		done chan struct{} // closed when data and err are set
	}
	g, gctx := errgroup.WithContext(ctx)
	// free holds the chunk buffers; taking one is the permit to fetch, so at
	// most workers fetches run and at most workers chunks are held.
	free := make(chan []byte, workers)
	for range workers {
		free <- nil
	}
	// queue carries results in content order from the producer to the
	// writer. Holes need no buffer, so the queue is deeper than the number
	// of buffers to keep fetches flowing past runs of holes.
	queue := make(chan *result, 2*workers)

	g.Go(func() error {
		defer close(queue)
		return r.Extents(gctx, 0, func(_ uint64, e Extent) error {
			res := &result{e: e, done: make(chan struct{})}
			if e.Hole() {
				close(res.done)
			} else {
				var buf []byte
				select {
				case buf = <-free:
				case <-gctx.Done():
					return gctx.Err()
				}
				g.Go(func() error {
					defer close(res.done)
					res.data, res.err = l.LoadChunk(gctx, chunk.Handle{ID: e.ID, Kind: chunk.KindData}, buf)
					if res.err != nil {
						res.err = fmt.Errorf("load data blob %v: %w", e.ID.Short(), res.err)
					} else if uint64(len(res.data)) != e.Length {
						res.err = fmt.Errorf("data blob %v has %d bytes, its extent %d", e.ID.Short(), len(res.data), e.Length)
					}
					return res.err
				})
			}
			select {
			case queue <- res:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		})
	})

	g.Go(func() error {
		for res := range queue {
			select {
			case <-res.done:
			case <-gctx.Done():
				return gctx.Err()
			}
			if res.err != nil {
				return res.err
			}
			if res.e.Hole() {
				if err := writeZeros(w, res.e.Length); err != nil {
					return fmt.Errorf("dump: %w", err)
				}
				continue
			}
			if _, err := w.Write(res.data); err != nil {
				return fmt.Errorf("dump: %w", err)
			}
			free <- res.data // never blocks: one slot per buffer taken
		}
		return nil
	})
	return g.Wait()
}

// writeZeros writes n zero bytes to w.
func writeZeros(w io.Writer, n uint64) error {
	for n > 0 {
		k := min(n, uint64(len(zeroBlock)))
		if _, err := w.Write(zeroBlock[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
