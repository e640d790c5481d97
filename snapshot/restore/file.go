package restore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/zeebo/blake3"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// maxPooledBuf is the largest chunk buffer kept for reuse: pack.MaxBlobSize
// (12 MiB), which no stored blob exceeds.
const maxPooledBuf = 12 << 20

// chunkBufs holds chunk buffers. A worker holds at most one at a time, so
// with chunks of at most 8 MiB the buffers in use never exceed
// Workers × 8 MiB.
var chunkBufs = sync.Pool{New: func() any { return new([]byte) }}

// fileJob is one regular file being restored. Its extents are written by
// the restorer's workers; whoever drops the last reference (pending reaches
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

// queueExtents hands each data extent of n to a worker; holes are only
// counted, the Truncate has made them already.
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
		r.g.Go(func() error { return j.writeExtent(ctx, start, e) })
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

// writeExtent loads one data extent and writes it at start. It runs on a
// worker and drops the extent's reference when done.
func (j *fileJob) writeExtent(ctx context.Context, start uint64, e snapshot.Extent) error {
	err := j.write(ctx, start, e)
	if err != nil {
		j.failed.Store(true)
		if ctx.Err() == nil {
			err = fmt.Errorf("restore %s at offset %d: %w", j.path, start, err)
		}
	}
	if ferr := j.release(ctx); err == nil {
		err = ferr
	}
	return err
}

func (j *fileJob) write(ctx context.Context, start uint64, e snapshot.Extent) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	bp := chunkBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledBuf {
			chunkBufs.Put(bp)
		}
	}()
	data, err := j.r.l.LoadChunk(ctx, chunk.Handle{ID: e.ID, Kind: chunk.KindData}, (*bp)[:0])
	if err != nil {
		return err
	}
	*bp = data
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
