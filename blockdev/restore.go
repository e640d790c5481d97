package blockdev

import (
	"context"
	"encoding/hex"
	"fmt"
	"runtime"
	"sync/atomic"

	"github.com/zeebo/blake3"
	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// zeroTask is the most zeros one restore task writes for a hole on a device
// that does not skip holes, so that a large hole is written by all workers.
const zeroTask = 64 * miB

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// Workers is the number of chunks fetched and written in parallel;
	// 0 means GOMAXPROCS, at least 4 (fetches wait on the repository as
	// much as on the CPU). Memory is Workers chunk buffers (1 MiB each at
	// the default image chunk size, at most 8 MiB).
	Workers int
	// Progress, if not nil, is updated while Restore runs.
	Progress *RestoreProgress
	// Digest is the expected lowercase hex BLAKE3-256 of the image
	// (snapshot.ImageInfo.Digest). When set, the restored bytes are hashed
	// in order and a mismatch is an error wrapping ErrDigestMismatch.
	Digest string
}

// RestoreProgress counts the work of a running Restore; it may be read at
// any time.
type RestoreProgress struct {
	// BytesWritten counts data bytes and zeros written to the target.
	BytesWritten atomic.Uint64
	// BytesSkipped counts hole bytes left unwritten.
	BytesSkipped atomic.Uint64
	// BytesDone counts the image bytes restored, in order.
	BytesDone atomic.Uint64
}

// restoreItem is one piece of the image, in order, from the producer
// through a fetch-and-write task to the digest.
type restoreItem struct {
	off  int64
	e    snapshot.Extent // a hole piece of at most zeroTask bytes, or a chunk
	data []byte          // a chunk's bytes, in a buffer from the pool
	err  error
	done chan struct{} // closed when data and err are set
}

// Restore writes the image with content list c and length size (the size
// t was opened for) to t. Data chunks are loaded through l and written by
// up to opts.Workers tasks in parallel; holes are skipped on files and on
// devices opened with Sparse, and written as zeros otherwise. With
// opts.Digest set, the image is hashed in order as it is written and
// checked against it. The target is flushed to stable storage (fsync)
// before Restore returns. On error the target holds part of the image.
func Restore(ctx context.Context, l snapshot.ChunkLoader, c snapshot.Content, size int64, t *Target, opts RestoreOptions) error {
	r := snapshot.NewContentReader(l, c)
	if size < 0 || r.Size() != uint64(size) {
		return fmt.Errorf("restore image: content list covers %d bytes, the image has %d", r.Size(), size)
	}
	switch {
	case t.device && size > t.size:
		return fmt.Errorf("%w: %s holds %d bytes, the image has %d", ErrTargetTooSmall, t.name, t.size, size)
	case !t.device && size != t.size:
		return fmt.Errorf("restore image: %s was opened for %d bytes, the image has %d", t.name, t.size, size)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = max(runtime.GOMAXPROCS(0), 4)
	}
	workers = min(workers, maxWorkers)
	progress := opts.Progress
	if progress == nil {
		progress = new(RestoreProgress)
	}

	g, gctx := errgroup.WithContext(ctx)
	// free holds the chunk buffers; taking one is the permit to fetch, so
	// at most workers chunks are held.
	free := make(chan []byte, workers)
	for range workers {
		free <- nil
	}
	// queue carries the items in image order to the digest. It is deeper
	// than the number of buffers so that fetches keep flowing past runs of
	// holes, which need none.
	queue := make(chan *restoreItem, 2*workers)

	g.Go(func() error {
		defer close(queue)
		var tasks errgroup.Group
		tasks.SetLimit(workers)
		send := func(it *restoreItem) error {
			select {
			case queue <- it:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		err := r.Extents(gctx, 0, func(start uint64, e snapshot.Extent) error {
			off := int64(start)
			if e.Hole() {
				if t.skipHoles {
					progress.BytesSkipped.Add(e.Length)
					it := &restoreItem{off: off, e: e, done: make(chan struct{})}
					close(it.done)
					return send(it)
				}
				for n := int64(e.Length); n > 0; {
					k := min(n, zeroTask)
					it := &restoreItem{off: off, e: snapshot.Extent{Length: uint64(k)}, done: make(chan struct{})}
					tasks.Go(func() error {
						defer close(it.done)
						it.err = writeZerosAt(t, it.off, k)
						progress.BytesWritten.Add(uint64(k))
						return it.err
					})
					if err := send(it); err != nil {
						return err
					}
					off, n = off+k, n-k
				}
				return nil
			}
			var buf []byte
			select {
			case buf = <-free:
			case <-gctx.Done():
				return gctx.Err()
			}
			it := &restoreItem{off: off, e: e, done: make(chan struct{})}
			tasks.Go(func() error {
				defer close(it.done)
				it.data, it.err = fetch(gctx, l, it.e, buf)
				if it.err == nil {
					if _, err := t.f.WriteAt(it.data, it.off); err != nil {
						it.err = fmt.Errorf("write %s at offset %d: %w", t.name, it.off, err)
					}
					progress.BytesWritten.Add(it.e.Length)
				}
				return it.err
			})
			return send(it)
		})
		if terr := tasks.Wait(); err == nil {
			err = terr
		}
		return err
	})

	digest := blake3.New()
	g.Go(func() error {
		for it := range queue {
			select {
			case <-it.done:
			case <-gctx.Done():
				return gctx.Err()
			}
			if it.err != nil {
				return it.err
			}
			switch {
			case opts.Digest == "":
			case it.e.Hole():
				hashZeros(digest, int64(it.e.Length))
			default:
				_, _ = digest.Write(it.data)
			}
			if !it.e.Hole() {
				free <- it.data // never blocks: one slot per buffer taken
			}
			progress.BytesDone.Add(it.e.Length)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return fmt.Errorf("restore image to %s: %w", t.name, err)
	}
	if opts.Digest != "" {
		if got := hex.EncodeToString(digest.Sum(nil)); got != opts.Digest {
			return fmt.Errorf("%w: %s has BLAKE3 %s, the snapshot records %s", ErrDigestMismatch, t.name, got, opts.Digest)
		}
	}
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("restore image: sync %s: %w", t.name, err)
	}
	return nil
}

// fetch loads the data chunk of e into buf and checks its length.
func fetch(ctx context.Context, l snapshot.ChunkLoader, e snapshot.Extent, buf []byte) ([]byte, error) {
	data, err := l.LoadChunk(ctx, chunk.Handle{ID: e.ID, Kind: chunk.KindData}, buf)
	if err != nil {
		return nil, fmt.Errorf("load data blob %v: %w", e.ID.Short(), err)
	}
	if uint64(len(data)) != e.Length {
		return nil, fmt.Errorf("data blob %v has %d bytes, its extent %d", e.ID.Short(), len(data), e.Length)
	}
	return data, nil
}

// writeZerosAt writes n zero bytes to t at off.
func writeZerosAt(t *Target, off, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := t.f.WriteAt(zeros[:k], off); err != nil {
			return fmt.Errorf("write zeros to %s at offset %d: %w", t.name, off, err)
		}
		off, n = off+k, n-k
	}
	return nil
}
