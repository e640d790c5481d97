package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/zeebo/blake3"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// fileJob is one regular file being restored. Its extents are written by
// the restorer's batches; whoever drops the last reference (pending reaches
// zero) finishes the file: verify, metadata, rename, or removal on failure.
type fileJob struct {
	r        *restorer
	path     string // snapshot path, for errors
	dst, tmp string
	f        *os.File
	node     snapshot.Node // without Content; Content is read by the walker only

	// pending counts the extents being written plus one reference held by
	// the walker until it has queued all extents.
	pending atomic.Int64
	// failed is set when an extent could not be written; the file is then
	// removed instead of renamed into place.
	failed atomic.Bool

	mu   sync.Mutex // guards sums
	sums []extentSum
}

// extentSum records what was written at one data extent, for Verify.
type extentSum struct {
	start, length uint64
	sum           [32]byte // unkeyed BLAKE3-256 of the plaintext
}

// restoreFile creates the temporary file for n and queues its data extents.
func (r *restorer) restoreFile(ctx context.Context, p, dst string, n *snapshot.Node) error {
	j := &fileJob{r: r, path: p, dst: dst, tmp: tempName(filepath.Dir(dst)), node: *n}
	j.node.Content = snapshot.Content{}
	f, err := os.OpenFile(j.tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("restore %s: %w", p, err)
	}
	j.f = f
	j.pending.Store(1)
	err = f.Truncate(int64(n.Size))
	if err == nil {
		err = r.queueExtents(ctx, j, n)
	}
	if err != nil {
		j.failed.Store(true)
		err = fmt.Errorf("restore %s: %w", p, err)
	}
	if ferr := j.release(ctx); err == nil {
		err = ferr
	}
	return err
}

// queueExtents adds each data extent of n to the batch being collected;
// holes are only counted, the Truncate has made them already.
func (r *restorer) queueExtents(ctx context.Context, j *fileJob, n *snapshot.Node) error {
	var end uint64
	err := snapshot.NewContentReader(r.l, n.Content).Extents(ctx, 0, func(start uint64, e snapshot.Extent) error {
		if start != end || e.Length > n.Size-start {
			return fmt.Errorf("content list: extent at %d+%d does not fit a file of %d bytes after %d", start, e.Length, n.Size, end)
		}
		end = start + e.Length
		if e.Hole() {
			r.progressBytes(e.Length)
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		j.pending.Add(1)
		r.batch = append(r.batch, batchExtent{j: j, start: start, e: e})
		r.batchBytes += e.Length
		if r.batchBytes >= maxBatchBytes || len(r.batch) >= maxBatchExtents {
			r.dispatch(ctx)
		}
		return nil
	})
	if err == nil && end != n.Size {
		err = fmt.Errorf("content list covers %d of %d bytes", end, n.Size)
	}
	return err
}

func (r *restorer) progressBytes(n uint64) {
	if pr := r.opts.Progress; pr != nil {
		pr.Bytes.Add(int64(n))
	}
}

// Batches. The walker collects the data extents of consecutive files into
// batches, and each batch is loaded with one snapshot.LoadChunks call, so
// that a repository reads the chunks of many small files, stored side by
// side in a pack, with one ranged read instead of one read per file.
const (
	// maxBatchBytes closes a batch once its extents hold this many bytes.
	maxBatchBytes = 4 << 20
	// maxBatchExtents closes a batch of this many extents: each keeps its file
	// open until the batch is written.
	maxBatchExtents = 32
	// workersPerBatch divides Options.Workers to give the batches in
	// flight. A batch runs up to 3 loads at once (repo.Repository's
	// LoadChunks; the fallback 4) but fewer near its end, while it waits
	// for its slowest load, so 2 workers a batch keep about Workers loads
	// busy.
	workersPerBatch = 2
)

// batchExtent is one data extent of a batch.
type batchExtent struct {
	j     *fileJob
	start uint64
	e     snapshot.Extent
}

// dispatch hands the batch collected so far to a worker.
func (r *restorer) dispatch(ctx context.Context) {
	if len(r.batch) == 0 {
		return
	}
	b := r.batch
	r.batch, r.batchBytes = nil, 0
	r.g.Go(func() error { return r.writeBatch(ctx, b) })
}

// writeError marks an error of writing a loaded extent, which names its
// file already.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// writeBatch loads the chunks of b and writes each where its extents
// belong, then drops the batch's references to its files, finishing those
// whose last extent it held. A file whose extent failed is marked failed
// and removed when finished.
func (r *restorer) writeBatch(ctx context.Context, b []batchExtent) error {
	hs := make([]chunk.Handle, len(b))
	for i, x := range b {
		hs[i] = chunk.Handle{ID: x.e.ID, Kind: chunk.KindData}
	}
	written := make([]bool, len(b))
	err := snapshot.LoadChunks(ctx, r.l, hs, func(i int, data []byte) error {
		x := b[i]
		if err := x.j.write(x.start, x.e, data); err != nil {
			return writeError{fmt.Errorf("restore %s at offset %d: %w", x.j.path, x.start, err)}
		}
		written[i] = true
		return nil
	})
	var we writeError
	if err != nil && !errors.As(err, &we) && ctx.Err() == nil {
		// A chunk failed to load: load the unwritten extents one by one,
		// to name the file whose chunk it is (and to write the others if
		// the failure has passed).
		err = nil
		var buf []byte
		for i, x := range b {
			if written[i] {
				continue
			}
			var lerr error
			buf, lerr = r.l.LoadChunk(ctx, hs[i], buf[:0])
			if lerr == nil {
				lerr = x.j.write(x.start, x.e, buf)
			}
			if lerr != nil {
				err = fmt.Errorf("restore %s at offset %d: %w", x.j.path, x.start, lerr)
				break
			}
			written[i] = true
		}
	}
	for i, x := range b {
		if !written[i] {
			x.j.failed.Store(true)
		}
		if ferr := x.j.release(ctx); err == nil {
			err = ferr
		}
	}
	return err
}

// write writes data, the chunk of extent e, at start.
func (j *fileJob) write(start uint64, e snapshot.Extent, data []byte) error {
	if uint64(len(data)) != e.Length {
		return fmt.Errorf("chunk %v holds %d bytes, the content list says %d", e.ID.Short(), len(data), e.Length)
	}
	if _, err := j.f.WriteAt(data, int64(start)); err != nil {
		return err
	}
	if j.r.opts.Verify {
		s := extentSum{start: start, length: e.Length, sum: blake3.Sum256(data)}
		j.mu.Lock()
		j.sums = append(j.sums, s)
		j.mu.Unlock()
	}
	j.r.progressBytes(e.Length)
	return nil
}

// release drops one reference and finishes the file after the last one.
func (j *fileJob) release(ctx context.Context) error {
	if j.pending.Add(-1) != 0 {
		return nil
	}
	return j.finish(ctx)
}

// testHookBeforeVerify, if set by a test, is called with the temporary path
// of each file after its content is written and before it is verified.
var testHookBeforeVerify func(tmp string)

// finish verifies the written file, applies its metadata and renames it
// into place, or removes it when writing failed.
func (j *fileJob) finish(ctx context.Context) error {
	if j.failed.Load() {
		j.discard()
		return nil // the failing writer reports the error
	}
	if err := ctx.Err(); err != nil {
		j.discard()
		return err
	}
	r := j.r
	if r.opts.Verify {
		if testHookBeforeVerify != nil {
			testHookBeforeVerify(j.tmp)
		}
		if err := j.verify(ctx); err != nil {
			j.discard()
			return fmt.Errorf("verify %s: %w", j.path, err)
		}
		r.verified.Add(1)
	}
	if err := j.f.Close(); err != nil {
		_ = os.Remove(j.tmp)
		return fmt.Errorf("restore %s: %w", j.path, err)
	}
	r.applyMeta(j.path, j.tmp, &j.node)
	if err := replace(j.tmp, j.dst); err != nil {
		_ = os.Remove(j.tmp)
		return fmt.Errorf("restore %s: %w", j.path, err)
	}
	r.bytes.Add(int64(j.node.Size))
	r.fileDone()
	return nil
}

// discard closes and removes the temporary file.
func (j *fileJob) discard() {
	_ = j.f.Close()
	_ = os.Remove(j.tmp)
}

// dropBatch fails the files of the batch collected so far, which will not
// be dispatched because the walk failed.
func (r *restorer) dropBatch(ctx context.Context) {
	for _, x := range r.batch {
		x.j.failed.Store(true)
		_ = x.j.release(ctx)
	}
	r.batch, r.batchBytes = nil, 0
}
