package blockdev

import (
	"context"
	"encoding/hex"
	"fmt"
	"sync/atomic"

	"github.com/zeebo/blake3"
	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// Restore windows. Restore cuts the image into windows, in order, and
// fetches and writes several at once; the digest is computed over the
// windows in order.
const (
	// windowData is the most chunk bytes a window holds (or one chunk,
	// when a chunk is larger). The chunks of a window are loaded together,
	// so the chunks that sit side by side in a pack are read with one
	// ranged read (repo.Repository.LoadChunks).
	windowData = 4 * miB
	// windowItems bounds the extents, holes included, of one window.
	windowItems = 4096
	// zeroTask is the most zeros one window writes for holes on a device
	// that does not skip them, so that a large hole is written by all
	// windows in flight.
	zeroTask = 64 * miB
	// defaultWindows is the number of windows in flight by default. With
	// O_DIRECT writes, restoring a 2 GiB image took the same time with 2, 3
	// or 5 windows on our 2-core test machine (2.5–2.7 s), and each window
	// more cost ~7 MiB of peak memory (47, 54, 70 MiB).
	defaultWindows = 2
)

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// Workers is the number of windows (about 4 MiB of chunks each) loaded
	// and written at once; 0 means 2. A repository loads each window's
	// chunks with a few ranged reads at a time (3 at most), so a restore
	// from a remote repository keeps up to 6 reads in flight. Memory is
	// Workers window buffers plus the loads' 1 MiB range buffers.
	Workers int
	// Progress, if not nil, is updated while Restore runs.
	Progress *RestoreProgress
	// Digest is the expected image digest (ImageDigest, in lowercase hex;
	// snapshot.ImageInfo.TreeDigest). PlainDigest is the expected plain
	// BLAKE3-256 of the whole image, which snapshots recorded before the
	// image digest (snapshot.ImageInfo.Digest). The restored bytes are
	// hashed in order for each one set, and a mismatch is an error
	// wrapping ErrDigestMismatch.
	Digest      string
	PlainDigest string
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

// restoreItem is one extent of a window: a chunk, or a hole piece.
type restoreItem struct {
	off int64
	e   snapshot.Extent
	at  int // where a chunk's bytes are in the window's buffer
}

// restoreWindow is a run of consecutive extents of the image, from the
// producer through a load-and-write task to the digest.
type restoreWindow struct {
	items []restoreItem
	data  int   // chunk bytes: the length of buf
	zeros int64 // hole bytes to write as zeros
	buf   []byte
	err   error
	done  chan struct{} // closed when the window is written or failed
}

// Restore writes the image with content list c and length size (the size
// t was opened for) to t. The image is cut into windows of about 4 MiB of
// chunks; up to opts.Workers windows are loaded and written at once, each
// loading its chunks through l with few large reads (snapshot.LoadChunks)
// and writing its runs of consecutive chunks with one write each. Holes
// are skipped on files and on devices opened with Sparse, and written as
// zeros otherwise. With opts.Digest (or PlainDigest) set, the image is
// hashed in order as it is written and checked against it. The target is flushed to stable
// storage (fsync) before Restore returns. On error the target holds part of
// the image.
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
	windows := opts.Workers
	if windows <= 0 {
		windows = defaultWindows
	}
	windows = min(windows, maxWorkers)
	progress := opts.Progress
	if progress == nil {
		progress = new(RestoreProgress)
	}

	// The window buffers, from one mapping with huge pages as Backup's read
	// blocks (arena); released once every goroutine below has ended.
	bufs := newArena(windows * windowData)
	defer bufs.release()
	g, gctx := errgroup.WithContext(ctx)
	// free holds the window buffers; taking one is the permit to start a
	// window, so at most windows windows are in flight.
	free := make(chan []byte, windows)
	for range windows {
		free <- nil
	}
	queue := make(chan *restoreWindow, windows)

	g.Go(func() error {
		defer close(queue)
		var tasks errgroup.Group
		cur := new(restoreWindow)
		flush := func() error {
			if len(cur.items) == 0 {
				return nil
			}
			w := cur
			cur = new(restoreWindow)
			select {
			case w.buf = <-free:
			case <-gctx.Done():
				return gctx.Err()
			}
			if cap(w.buf) < w.data {
				// Aligned, so that the target can write runs of chunks
				// that are aligned on it with O_DIRECT (Target.writeAt).
				if w.data <= windowData {
					w.buf = bufs.get(windowData)
				} else {
					w.buf = alignedBuf(w.data)
				}
			}
			w.buf = w.buf[:w.data]
			w.done = make(chan struct{})
			tasks.Go(func() error {
				defer close(w.done)
				w.err = restoreWindowTo(gctx, l, t, w, progress)
				return w.err
			})
			select {
			case queue <- w:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		add := func(it restoreItem) error {
			cur.items = append(cur.items, it)
			if len(cur.items) >= windowItems {
				return flush()
			}
			return nil
		}
		err := r.Extents(gctx, 0, func(start uint64, e snapshot.Extent) error {
			off := int64(start)
			switch {
			case e.Hole() && t.skipHoles:
				progress.BytesSkipped.Add(e.Length)
				return add(restoreItem{off: off, e: e})
			case e.Hole():
				for n := int64(e.Length); n > 0; {
					if cur.zeros == zeroTask {
						if err := flush(); err != nil {
							return err
						}
					}
					k := min(n, zeroTask-cur.zeros)
					cur.zeros += k
					if err := add(restoreItem{off: off, e: snapshot.Extent{Length: uint64(k)}}); err != nil {
						return err
					}
					off, n = off+k, n-k
				}
				return nil
			default:
				if cur.data > 0 && uint64(cur.data)+e.Length > windowData {
					if err := flush(); err != nil {
						return err
					}
				}
				it := restoreItem{off: off, e: e, at: cur.data}
				cur.data += int(e.Length)
				return add(it)
			}
		})
		if err == nil {
			err = flush()
		}
		if terr := tasks.Wait(); err == nil {
			err = terr
		}
		return err
	})

	digest := NewImageDigest()
	plain := blake3.New()
	g.Go(func() error {
		for w := range queue {
			select {
			case <-w.done:
			case <-gctx.Done():
				return gctx.Err()
			}
			if w.err != nil {
				return w.err
			}
			if opts.Digest != "" || opts.PlainDigest != "" {
				hashWindow(digest, plain, opts, w)
			}
			var n uint64
			for _, it := range w.items {
				n += it.e.Length
			}
			free <- w.buf // never blocks: one slot per buffer taken
			progress.BytesDone.Add(n)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return fmt.Errorf("restore image to %s: %w", t.name, err)
	}
	if opts.Digest != "" {
		if got := digest.Hex(); got != opts.Digest {
			return fmt.Errorf("%w: %s has image digest %s, the snapshot records %s", ErrDigestMismatch, t.name, got, opts.Digest)
		}
	}
	if opts.PlainDigest != "" {
		if got := hex.EncodeToString(plain.Sum(nil)); got != opts.PlainDigest {
			return fmt.Errorf("%w: %s has BLAKE3 %s, the snapshot records %s", ErrDigestMismatch, t.name, got, opts.PlainDigest)
		}
	}
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("restore image: sync %s: %w", t.name, err)
	}
	return nil
}

// restoreWindowTo loads the chunks of w into w.buf and writes w to t: each
// run of consecutive chunks with one write, and holes as zeros unless t
// skips them.
func restoreWindowTo(ctx context.Context, l snapshot.ChunkLoader, t *Target, w *restoreWindow, progress *RestoreProgress) error {
	var hs []chunk.Handle
	var which []int // which[k]: the item of hs[k]
	for i, it := range w.items {
		if !it.e.Hole() {
			hs = append(hs, chunk.Handle{ID: it.e.ID, Kind: chunk.KindData})
			which = append(which, i)
		}
	}
	err := snapshot.LoadChunks(ctx, l, hs, func(k int, plain []byte) error {
		it := &w.items[which[k]]
		if uint64(len(plain)) != it.e.Length {
			return fmt.Errorf("data blob %v has %d bytes, its extent %d", it.e.ID.Short(), len(plain), it.e.Length)
		}
		copy(w.buf[it.at:], plain)
		return nil
	})
	if err != nil {
		return err
	}
	err = w.eachRun(func(off int64, hole uint64, data []byte) error {
		switch {
		case data != nil:
			if err := t.writeAt(data, off); err != nil {
				return err
			}
			progress.BytesWritten.Add(uint64(len(data)))
		case !t.skipHoles:
			if err := writeZerosAt(t, off, int64(hole)); err != nil {
				return err
			}
			progress.BytesWritten.Add(hole)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return ctx.Err()
}

// hashWindow adds the bytes of w, in order, to the digests opts asks for.
func hashWindow(digest *ImageDigest, plain *blake3.Hasher, opts RestoreOptions, w *restoreWindow) {
	_ = w.eachRun(func(_ int64, hole uint64, data []byte) error {
		switch {
		case data == nil && opts.Digest != "":
			digest.Zeros(int64(hole))
		case opts.Digest != "":
			digest.Write(data)
		}
		switch {
		case data == nil && opts.PlainDigest != "":
			hashZeros(plain, int64(hole))
		case opts.PlainDigest != "":
			_, _ = plain.Write(data)
		}
		return nil
	})
}

// eachRun calls fn, in order, for each hole of w (hole bytes at off, data
// nil) and each run of consecutive chunks (their bytes in w.buf): chunks
// next to each other in the window are next to each other in the image
// and in the buffer, so that a run is written or hashed with one call.
func (w *restoreWindow) eachRun(fn func(off int64, hole uint64, data []byte) error) error {
	for i := 0; i < len(w.items); {
		it := w.items[i]
		if it.e.Hole() {
			if err := fn(it.off, it.e.Length, nil); err != nil {
				return err
			}
			i++
			continue
		}
		j, end := i+1, it.at+int(it.e.Length)
		for j < len(w.items) && !w.items[j].e.Hole() {
			end += int(w.items[j].e.Length)
			j++
		}
		if err := fn(it.off, 0, w.buf[it.at:end]); err != nil {
			return err
		}
		i = j
	}
	return nil
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
