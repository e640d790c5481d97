package blockdev

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/zeebo/blake3"
	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// zeros is hashed for holes and written for holes on devices that do not
// read zeros. 1 MiB makes each hash or write call large enough to run at
// full speed; the array is never written, so its pages stay the kernel's
// shared zero page.
var zeros [1 * miB]byte

// segment is one fixed-size piece of the image, from its planning by the
// dispatcher through a worker to the in-order collector.
type segment struct {
	off, length int64
	spans       []span
	buf         []byte // the data spans' bytes, packed; from the buffer pool

	// Set by the worker before done is closed.
	extents []snapshot.Extent
	st      counters
	err     error
	done    chan struct{}
}

// span is a data or hole range of a segment; a data span's bytes are at
// buf in the segment's buffer.
type span struct {
	Range
	buf int64
}

// counters are the per-segment statistics, summed into BackupResult.
type counters struct {
	read, holes, zero, reused, chunked, newBytes uint64
	blobs, blobsNew, added                       uint64
}

func (c *counters) add(o counters) {
	c.read += o.read
	c.holes += o.holes
	c.zero += o.zero
	c.reused += o.reused
	c.chunked += o.chunked
	c.newBytes += o.newBytes
	c.blobs += o.blobs
	c.blobsNew += o.blobsNew
	c.added += o.added
}

// Backup reads src and saves it as an image: the content list of its data
// chunks and holes, saved through s, with the digest of the whole image.
//
// The image is cut into segments of opts.SegmentSize bytes that up to
// opts.Workers workers read and chunk in parallel; the extents are added to
// the content list in order. The result is a function of the image's bytes,
// its holes, Params and SegmentSize only: neither the number of workers nor
// a parent changes it. With a parent, chunks whose bytes still hash to the
// parent's chunk at the same offset are reused without running the chunker
// or saving them again (see docs/format-fragments/blockdev.md).
//
// A source that changes size or ends early while it is read gives an error
// wrapping ErrSourceChanged. On any error, blobs already saved stay in the
// repository (unreferenced until a later backup or prune) and no result is
// returned.
func Backup(ctx context.Context, src *Source, s snapshot.ChunkSaver, h Hasher, opts BackupOptions) (*BackupResult, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if opts.Parent != nil && h == nil {
		return nil, fmt.Errorf("image backup: a parent needs a Hasher")
	}
	b := &backup{src: src, saver: s, hasher: h, opts: opts, progress: opts.Progress}
	if b.progress == nil {
		b.progress = new(Progress)
	}
	if opts.Parent != nil {
		b.parent = snapshot.NewContentReader(opts.ParentLoader, *opts.Parent)
	}
	if b.zeroCuts, err = zeroWindowCuts(opts.Params); err != nil {
		return nil, err
	}
	return b.run(ctx)
}

// backup is the state shared by one Backup's goroutines. Its fields are set
// before they start and only read afterwards.
type backup struct {
	src      *Source
	saver    snapshot.ChunkSaver
	hasher   Hasher
	opts     BackupOptions
	parent   *snapshot.ContentReader // nil without a parent
	progress *Progress
	zeroCuts bool // the splitter cuts after every zero window (zeroWindowCuts)
}

// chunkerWindow is the number of bytes the chunker's rolling fingerprint
// covers (restic/chunker's windowSize): a cut at a position depends only on
// the chunkerWindow bytes before it, once Params.Min bytes are in the chunk.
const chunkerWindow = 64

// zeroWindowCuts reports whether the splitter with p cuts wherever the
// last chunkerWindow bytes are zero and the chunk has at least p.Min bytes
// (the fingerprint of a zero window is zero, which satisfies every cut
// mask). Backup then cuts runs of zeros without running the splitter
// (worker.zeroRun) and trusts a parent's cut after a zero window
// (worker.reuse). It holds for the Rabin chunker in use; checking it on the
// splitter keeps both shortcuts exact should the splitter ever change: a
// splitter that fails the check is simply run.
func zeroWindowCuts(p chunk.Params) (bool, error) {
	// Min bytes of a pattern, a zero window, then Min zeros: cuts are
	// expected after the window and after the zeros. A pattern that cuts
	// inside the window proves nothing; another pattern is tried.
	pattern := make([]byte, p.Min)
	buf := make([]byte, 0, p.Max)
	for _, mul := range []int{7, 13, 31, 101} {
		for i := range pattern {
			pattern[i] = byte(i*mul + 1)
		}
		r := io.MultiReader(bytes.NewReader(pattern), io.LimitReader(zeroReader{}, int64(p.Min)+chunkerWindow))
		sp := chunk.NewSplitter(r, p)
		first, err := sp.Next(buf)
		if err != nil {
			return false, fmt.Errorf("image backup: check splitter: %w", err)
		}
		switch n := uint(len(first)); {
		case n < p.Min+chunkerWindow:
			continue
		case n > p.Min+chunkerWindow:
			return false, nil
		}
		second, err := sp.Next(buf)
		if err != nil {
			return false, fmt.Errorf("image backup: check splitter: %w", err)
		}
		return uint(len(second)) == p.Min, nil
	}
	return false, nil
}

// zeroReader reads zeros.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func (b *backup) run(ctx context.Context) (*BackupResult, error) {
	workers := b.opts.Workers
	g, gctx := errgroup.WithContext(ctx)

	// buffers holds the segment buffers; taking one is the permit to plan a
	// segment, so at most workers+1 segments are in flight: workers being
	// chunked and one being digested. Buffers grow to the data a segment
	// holds, at most SegmentSize: memory is (workers+1) × SegmentSize.
	buffers := make(chan []byte, workers+1)
	for range workers + 1 {
		buffers <- nil
	}
	// states holds one chunker state per worker (a splitter with its
	// 512 KiB buffer, a chunk buffer of up to Params.Max bytes and the
	// parent extents of a segment).
	states := make(chan *worker, workers)
	for range workers {
		states <- newWorker(b)
	}
	// queue carries the segments in image order to the collector.
	queue := make(chan *segment, workers+1)

	g.Go(func() error {
		defer close(queue)
		return b.dispatch(gctx, buffers, states, queue)
	})
	var res *BackupResult
	g.Go(func() error {
		var err error
		res, err = b.collect(gctx, buffers, queue)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := b.src.checkSize(); err != nil {
		return nil, err
	}
	if b.src.size >= 0 && res.Size != uint64(b.src.size) {
		return nil, fmt.Errorf("%w: read %d bytes of %s, its size is %d", ErrSourceChanged, res.Size, b.src.name, b.src.size)
	}
	return res, nil
}

// dispatch plans the segments in order, hands each to a worker and queues
// it for the collector. A stream's segments are read here, in order.
func (b *backup) dispatch(ctx context.Context, buffers chan []byte, states chan *worker, queue chan<- *segment) error {
	var wg errgroup.Group
	wg.SetLimit(b.opts.Workers)
	err := b.plan(ctx, buffers, func(seg *segment) error {
		select {
		case queue <- seg:
		case <-ctx.Done():
			return ctx.Err()
		}
		wg.Go(func() error {
			defer close(seg.done)
			var w *worker
			select {
			case w = <-states:
			case <-ctx.Done():
				seg.err = ctx.Err()
				return seg.err
			}
			seg.err = w.process(ctx, seg)
			states <- w // never blocks: one slot per state taken
			return seg.err
		})
		return nil
	})
	if werr := wg.Wait(); err == nil {
		err = werr
	}
	return err
}

// plan calls fn with each segment of the source in order, its spans mapped
// and its buffer taken from buffers and sized for its data.
func (b *backup) plan(ctx context.Context, buffers chan []byte, fn func(*segment) error) error {
	size := b.opts.SegmentSize
	var spans []span
	var ranges []Range
	for off := int64(0); b.src.size < 0 || off < b.src.size; off += size {
		var buf []byte
		select {
		case buf = <-buffers:
		case <-ctx.Done():
			return ctx.Err()
		}
		seg := &segment{off: off, done: make(chan struct{})}
		if b.src.f == nil {
			if int64(cap(buf)) < size {
				buf = make([]byte, size)
			}
			n, err := b.src.readStream(buf[:size])
			if err != nil {
				return err
			}
			if n == 0 {
				buffers <- buf // never blocks: the slot was just freed
				return nil
			}
			b.progress.BytesRead.Add(uint64(n))
			seg.length, seg.buf = int64(n), buf[:n]
			seg.spans = []span{{Range: Range{Offset: off, Length: int64(n)}}}
			if err := fn(seg); err != nil {
				return err
			}
			if int64(n) < size {
				return nil
			}
			continue
		}
		seg.length = min(size, b.src.size-off)
		var err error
		if ranges, err = b.src.ranges(off, off+seg.length, ranges[:0]); err != nil {
			return err
		}
		spans = spans[:0]
		need := int64(0)
		for _, r := range ranges {
			spans = append(spans, span{Range: r, buf: need})
			if !r.Hole {
				need += r.Length
			}
		}
		seg.spans = append([]span(nil), spans...)
		if int64(cap(buf)) < need {
			// Round up to whole reads so that a buffer grows a few times
			// at most.
			buf = make([]byte, min((need+readSize-1)/readSize*readSize, size))
		}
		seg.buf = buf[:need]
		if err := fn(seg); err != nil {
			return err
		}
	}
	return nil
}

// collect takes the segments in order as their workers finish, hashes them
// into the image digest, adds their extents to the content list and returns
// their buffers.
func (b *backup) collect(ctx context.Context, buffers chan<- []byte, queue <-chan *segment) (*BackupResult, error) {
	builder := snapshot.NewContentBuilder(b.saver)
	digest := blake3.New()
	var st counters
	for seg := range queue {
		select {
		case <-seg.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if seg.err != nil {
			return nil, seg.err
		}
		for _, sp := range seg.spans {
			if sp.Hole {
				hashZeros(digest, sp.Length)
			} else {
				_, _ = digest.Write(seg.buf[sp.buf : sp.buf+sp.Length])
			}
		}
		for _, e := range seg.extents {
			if err := builder.Add(ctx, e); err != nil {
				return nil, fmt.Errorf("image content list: %w", err)
			}
		}
		st.add(seg.st)
		buffers <- seg.buf // never blocks: one slot per buffer taken
		b.progress.BytesDone.Add(uint64(seg.length))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, size, added, err := builder.Finish(ctx)
	if err != nil {
		return nil, fmt.Errorf("image content list: %w", err)
	}
	return &BackupResult{
		Content:      c,
		Size:         size,
		Digest:       hex.EncodeToString(digest.Sum(nil)),
		Extents:      c.Count(),
		BytesRead:    st.read,
		BytesHoles:   st.holes,
		BytesZero:    st.zero,
		BytesReused:  st.reused,
		BytesChunked: st.chunked,
		BytesNew:     st.newBytes,
		DataBlobs:    st.blobs,
		DataBlobsNew: st.blobsNew,
		DataAdded:    st.added,
		TreeAdded:    uint64(added),
	}, nil
}

// hashZeros writes n zero bytes to h.
func hashZeros(h *blake3.Hasher, n int64) {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		_, _ = h.Write(zeros[:k])
		n -= k
	}
}
