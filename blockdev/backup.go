package blockdev

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

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
// reader through the chunker to the in-order collector.
type segment struct {
	off    int64
	length int64  // -1 until the chunker has seen the end of a stream's segment
	spans  []span // data and hole ranges, in order; a stream's one data span has Length -1 until its end

	// Set by the chunker before the segment is queued for the collector.
	extents []pendingExtent
	st      counters
}

// span is a data or hole range of a segment.
type span struct {
	Range
}

// pendingExtent is an extent of a segment whose ID, for a new chunk, is
// known once its save job is done.
type pendingExtent struct {
	snapshot.Extent
	job *saveJob // nil: Extent is complete
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
// The image is read once, in order, and cut into segments of
// opts.SegmentSize bytes, each chunked on its own; up to opts.Workers new
// chunks are compressed, sealed and saved in parallel, and the extents are
// added to the content list in order (see run for the pipeline and its
// memory). The extents are a function of the image's bytes, its holes,
// Params and SegmentSize only: neither the number of workers nor
// a parent changes them (a parent changes only how the content list's
// pages are stored: as delta pages of the parent's where that is smaller). With a parent, chunks whose bytes still hash to the
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
	b.fixed = fixedSize(opts.Params) && !testNoFixedCutter
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
	zeroCuts bool   // the splitter cuts after every zero window (zeroWindowCuts)
	fixed    bool   // chunks are cut every Params.Max bytes (fixedSize)
	blocks   *arena // the read blocks' memory, for the run
}

// chunkerWindow is the number of bytes the chunker's rolling fingerprint
// covers (restic/chunker's windowSize): a cut at a position depends only on
// the chunkerWindow bytes before it, once Params.Min bytes are in the chunk.
const chunkerWindow = 64

// zeroWindowCuts reports whether the splitter with p cuts wherever the
// last chunkerWindow bytes are zero and the chunk has at least p.Min bytes
// (the fingerprint of a zero window is zero, which satisfies every cut
// mask). Backup then cuts runs of zeros without running the splitter
// (worker.zeroScan) and trusts a parent's cut after a zero window
// (worker.reuse). It holds for the Rabin chunker in use; checking it on the
// splitter keeps both shortcuts exact should the splitter ever change: a
// splitter that fails the check is simply run.
func zeroWindowCuts(p chunk.Params) (bool, error) {
	if fixedSize(p) && !testNoFixedCutter {
		// Every chunk is cut after exactly Min bytes (the repository's
		// default image chunker), zero or not.
		return true, nil
	}
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

// fixedSize reports whether p cuts fixed-size chunks: Min = Max, so the
// splitter cuts every chunk after exactly Max bytes (only a span's last
// chunk is shorter), whatever the content.
func fixedSize(p chunk.Params) bool { return p.Min == p.Max }

// testNoFixedCutter, set by tests, runs the splitter for fixed-size chunks
// too, without the shortcuts that fixedSize allows, as Backup did before
// them: the tests check that the result is the same.
var testNoFixedCutter = false

// zeroReader reads zeros.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// run runs the backup pipeline, whose memory does not depend on the segment
// size, the image size or the number of workers:
//
//   - read (one goroutine) maps each segment's holes, reads its data in
//     order in blocks of readBlock bytes (sequential reads are what disks
//     do best), readDepth blocks at a time (readQueue), and passes each
//     block to both the digest and the chunker: readBlocks × readBlock = 8
//     MiB. It does nothing else, so that the next read is issued as soon
//     as a buffer is free and the disk never waits for the hashing.
//   - digest (one goroutine) hashes every byte into the image digest, in
//     order (holes as zeros). BLAKE3 runs at ~3.5 GB/s on one core here,
//     faster than the disks we read; hashed on the reader's goroutine, it
//     left the disk idle for a third of a cold read.
//   - chunk (one goroutine) turns the spans of each segment into extents
//     (worker: parent reuse, zero runs, the chunker) through a window over
//     the blocks (Params.Max + 512 KiB + readBlock = 2.5 MiB, and the
//     splitter's own 512 KiB), and cuts each new chunk straight into the
//     save ring: max(saveBudget, 2 × Params.Max) = 8 MiB. The IDs of the
//     parent's chunks it checks against the image are hashed in batches,
//     split between up to Workers goroutines (worker.hashAhead).
//   - save (opts.Workers goroutines) hashes, compresses, seals and stores
//     the chunks through the ChunkSaver and gives their room back.
//   - collect (one goroutine) takes the segments in order, waits for their
//     chunks' IDs and adds the extents to the content list.
//
// A block goes back to the free list once both the digest and the chunker
// are done with it.
//
// So Backup holds ~19 MiB with the default chunk sizes, plus the parent's
// extents of one segment (48 bytes each) and what the ChunkSaver keeps per
// concurrent SaveChunk. Until 2026-11 each worker read and chunked a whole
// segment: (Workers+1) × SegmentSize, 48 MiB on 2 cores, of a 1 GiB image
// backup's 175 MiB peak RSS.
func (b *backup) run(ctx context.Context) (*BackupResult, error) {
	if b.src.direct != nil && b.parent != nil && !mostlyCached(b.src.f, 0, b.src.size) {
		// Only with a parent: a backup without one is bound by compressing
		// its new chunks on every core, and the extra processors only
		// oversubscribe them (first backup of a 2 GiB image, warm: 4.4 s
		// and 50 MiB without the raise, 5.1 s and 61 MiB with it; the cold
		// nightly of an 8 GiB image: 4.9–5.1 s with it, 5.6–5.7 s without).
		// Nor for an image the page cache holds, which readAt copies from
		// there without waiting for the disk (2 GiB unchanged, warm:
		// 1.19–1.26 s without the raise, 1.37–1.47 s with it).
		defer raiseProcs(directDepth)()
	}
	// Released once every goroutine below has ended (g.Wait), the readers
	// of readQueue included (read waits for them).
	b.blocks = newArena(readBlocks * readBlock)
	defer b.blocks.release()
	g, gctx := errgroup.WithContext(ctx)

	free := make(chan *block, readBlocks) // the read buffers not in use
	for range readBlocks {
		free <- &block{} // buffers allocated on first use: a sparse image needs few
	}
	items := make(chan item, readBlocks)
	sums := make(chan item, readBlocks)
	sv := newSaver(b.saver, b.progress, int(b.opts.Params.Max))
	digest := NewImageDigest()

	g.Go(func() error {
		err := b.read(gctx, free, items, sums)
		if err == nil {
			// On error the chunker and the digest end with the context
			// instead, so that the reader's error is the one Backup
			// returns.
			close(items)
			close(sums)
		}
		return err
	})
	g.Go(func() error { return hashDigest(gctx, digest, free, sums, digestParallel()) })
	segs := make(chan *segment, segmentQueue)
	g.Go(func() error {
		defer close(segs)
		defer sv.close()
		w := newWorker(b, sv, free, items)
		return w.run(gctx, segs)
	})
	for range b.opts.Workers {
		g.Go(func() error { return sv.work(gctx) })
	}
	var res *BackupResult
	g.Go(func() error {
		var err error
		res, err = b.collect(gctx, segs)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	res.Digest = digest.Hex()
	if err := b.src.checkSize(); err != nil {
		return nil, err
	}
	if b.src.size >= 0 && res.Size != uint64(b.src.size) {
		return nil, fmt.Errorf("%w: read %d bytes of %s, its size is %d", ErrSourceChanged, res.Size, b.src.name, b.src.size)
	}
	return res, nil
}

// Read-ahead of the backup's reader (see run).
const (
	// readBlock is the length of one read: 1 MiB reads from a cold disk
	// ran as fast here as 4 MiB and 16 MiB ones (dd, ~700 MB/s), and keep
	// the blocks in flight small. With O_DIRECT, 2 and 4 MiB blocks were
	// no faster than 1 MiB ones with directDepth in flight.
	readBlock = 1 * miB
	// readBlocks is the number of blocks the reader may be ahead of the
	// slower of the digest and the chunker, readDepth of them being read.
	// 8 (was 4 while the reader hashed the digest itself) lets the reader
	// run ahead through a burst of slow chunks (new chunks to save, a
	// parent page to load).
	readBlocks = 8
	// segmentQueue is the number of chunked segments that may wait for the
	// collector; their chunks are bounded by saveBudget, their extents
	// cost ~40 bytes each.
	segmentQueue = 4
)

// block is a read buffer, shared by the digest and the chunker.
type block struct {
	buf  []byte
	refs atomic.Int32 // the digest and the chunker until they are done
}

// release gives blk back to free once its last user is done with it. It
// never blocks: free has room for every block.
func (blk *block) release(free chan<- *block) {
	if blk.refs.Add(-1) == 0 {
		free <- blk
	}
}

// item is the reader's next message to the chunker or the digest: a
// segment whose data follows (chunker), a block of that data, or a hole
// of zeros bytes (digest). Blocks never cross a span's end.
type item struct {
	seg   *segment // a new segment starts; its data spans follow as blocks
	blk   *block   // a block from the free list; its data is blk.buf[at:at+n]
	at    int
	n     int
	last  bool  // the last block of its data span
	zeros int64 // digest only: a hole of this many bytes
}

// data returns the bytes of its block.
func (it item) data() []byte { return it.blk.buf[it.at : it.at+it.n] }

// read plans the segments in order, maps their holes, and reads their data
// spans in blocks, which it sends to the chunker, after the segment itself,
// and to the digest, with the holes. Holes are never read. Up to
// readDepth blocks are read at the same time (see readQueue); they are
// passed on in order.
func (b *backup) read(ctx context.Context, free chan *block, items, sums chan<- item) error {
	if b.src.f == nil {
		q := &readQueue{b: b, ctx: ctx, free: free, items: items, sums: sums}
		return b.readStream(ctx, q)
	}
	// On an error, the reads still queued end at once (cancel runs before
	// stop waits for them).
	ctx, cancel := context.WithCancel(ctx)
	q := &readQueue{b: b, ctx: ctx, free: free, items: items, sums: sums}
	q.start()
	defer q.stop()
	defer cancel()
	size := b.opts.SegmentSize
	var ranges []Range
	for off := int64(0); off < b.src.size; off += size {
		seg := &segment{off: off, length: min(size, b.src.size-off)}
		var err error
		if ranges, err = b.src.ranges(off, off+seg.length, ranges[:0]); err != nil {
			return err
		}
		for _, r := range ranges {
			seg.spans = append(seg.spans, span{Range: r})
		}
		if err := q.push(items, item{seg: seg}); err != nil {
			return err
		}
		for _, sp := range seg.spans {
			if sp.Hole {
				if err := q.push(sums, item{zeros: sp.Length}); err != nil {
					return err
				}
				continue
			}
			for pos, end := sp.Offset, sp.Offset+sp.Length; pos < end; {
				blk, err := q.take()
				if err != nil {
					return err
				}
				// End each block on a multiple of readBlock, so that reads
				// stay aligned after an unaligned span start.
				n := min(end-pos, readBlock-pos%readBlock)
				// The block's bytes start as far into its buffer (which
				// is aligned) as pos is past an aligned offset, so that
				// its aligned offsets are at aligned addresses and can be
				// read directly (readAt). They still end within readBlock.
				at := int(pos % directAlign)
				if err := q.read(item{blk: blk, at: at, n: int(n), last: pos+n == end}, pos); err != nil {
					return err
				}
				pos += n
			}
		}
	}
	return q.flush()
}

// readDepth is the number of blocks the reader reads at the same time
// through the page cache. With one read at a time, the disk waited
// whenever the reader waited for a core (the hashing keeps both busy)
// before asking for the next block: the cold nightly backup ran at ~1.7
// GB/s here. Two keep the page cache's readahead going (~2.5-3 GB/s, the
// disk's speed); four ran at ~1.6 GB/s, as out-of-order reads of a
// sequential file disturb the readahead.
const readDepth = 2

// directDepth is readDepth for a source read with O_DIRECT, which has no
// kernel readahead: the disk only sees the reads in flight, so more of
// them are needed (8 GiB image, cold nightly: 1 MiB × 4 ran as fast as
// 2 MiB × 3 and 4 MiB × 2).
const directDepth = 4

// raiseProcs raises GOMAXPROCS by n until the function it returns is
// called, so that the goroutines of n direct reads get a processor as
// soon as their reads return. With as many processors as cores, both
// taken by the hashing, a goroutine back from a read waited in the global
// run queue, often for the rest of a 10 ms time slice, before it could
// pass its block on and issue the next read: with O_DIRECT, which has no
// readahead to cover that wait, the cold nightly backup of an 8 GiB image
// took 8 s instead of 4.3 s. The extra threads mostly sleep in their
// reads; the kernel's scheduler, which favours a thread waking from IO,
// runs them at once. Concurrent backups share one raise.
func raiseProcs(n int) (restore func()) {
	procs.Lock()
	defer procs.Unlock()
	if procs.users == 0 {
		procs.prev = runtime.GOMAXPROCS(0)
		runtime.GOMAXPROCS(procs.prev + n)
	}
	procs.users++
	return func() {
		procs.Lock()
		defer procs.Unlock()
		if procs.users--; procs.users == 0 {
			runtime.GOMAXPROCS(procs.prev)
		}
	}
}

var procs struct {
	sync.Mutex
	users, prev int
}

// readQueue passes the reader's messages on in order while readDepth
// goroutines read the queued blocks. Each goes on to the next queued block
// as soon as its read returns: the reader's goroutine, which passes the
// blocks on and queues more, may wait for a core meanwhile without the
// reads waiting with it.
type readQueue struct {
	b           *backup
	ctx         context.Context
	free        chan *block
	items, sums chan<- item
	pending     []*queued // in order; the first is passed on next
	jobs        chan *queued
	readers     sync.WaitGroup
}

// queued is a message waiting in a readQueue: for c, or, for a block,
// to the digest and the chunker once read (done closed, err set).
type queued struct {
	c    chan<- item
	it   item
	off  int64
	done chan struct{}
	err  error
}

// start starts the readers.
func (q *readQueue) start() {
	// Every queued read holds a block: the channel never blocks.
	q.jobs = make(chan *queued, readBlocks)
	depth := readDepth
	if q.b.src.direct != nil {
		depth = directDepth
	}
	for range depth {
		q.readers.Go(func() {
			for m := range q.jobs {
				m.err = q.b.src.readAt(q.ctx, m.it.data(), m.off)
				close(m.done)
			}
		})
	}
}

// stop ends the readers once they are done: their buffers and the source
// must not be in use once Backup returns.
func (q *readQueue) stop() {
	close(q.jobs)
	q.readers.Wait()
}

// send sends it to c.
func (q *readQueue) send(c chan<- item, it item) error {
	select {
	case c <- it:
		return nil
	case <-q.ctx.Done():
		return q.ctx.Err()
	}
}

// push queues it for c.
func (q *readQueue) push(c chan<- item, it item) error {
	if len(q.pending) == 0 {
		return q.send(c, it)
	}
	q.pending = append(q.pending, &queued{c: c, it: it})
	return nil
}

// take returns a free block, passing on the queue's first message while
// none is free: the block it waits for may be held by a consumer that
// needs that message to go on.
func (q *readQueue) take() (*block, error) {
	for {
		var blk *block
		select {
		case blk = <-q.free:
		default:
			if len(q.pending) > 0 {
				if err := q.next(); err != nil {
					return nil, err
				}
				continue
			}
			select {
			case blk = <-q.free:
			case <-q.ctx.Done():
				return nil, q.ctx.Err()
			}
		}
		if blk.buf == nil {
			blk.buf = q.b.blocks.get(readBlock)
		}
		blk.refs.Store(2) // the digest and the chunker
		return blk, nil
	}
}

// read queues the read of its block, it.n bytes at off, and passes on the
// messages before it that are ready.
func (q *readQueue) read(it item, off int64) error {
	m := &queued{it: it, off: off, done: make(chan struct{})}
	q.pending = append(q.pending, m)
	q.jobs <- m
	for len(q.pending) > 0 {
		if d := q.pending[0].done; d != nil {
			select {
			case <-d:
			default:
				return nil
			}
		}
		if err := q.next(); err != nil {
			return err
		}
	}
	return nil
}

// next passes on the queue's first message, waiting for its read.
func (q *readQueue) next() error {
	m := q.pending[0]
	q.pending[0] = nil
	q.pending = q.pending[1:]
	if m.done == nil {
		return q.send(m.c, m.it)
	}
	<-m.done // a read ends on its own; readAt checks ctx between requests
	if m.err != nil {
		return m.err
	}
	if q.b.src.afterRead != nil {
		q.b.src.afterRead(m.off, m.it.n)
	}
	return q.pass(m.it)
}

// pass sends a block read to the digest and the chunker.
func (q *readQueue) pass(it item) error {
	q.b.progress.BytesRead.Add(uint64(it.n))
	if err := q.send(q.sums, it); err != nil {
		return err
	}
	return q.send(q.items, it)
}

// flush passes on every queued message.
func (q *readQueue) flush() error {
	for len(q.pending) > 0 {
		if err := q.next(); err != nil {
			return err
		}
	}
	return nil
}

// readStream is read for a stream: each segment is one data span whose
// length is known when it ends (after SegmentSize bytes, or at the end of
// the stream). A segment starts only once its first byte was read. A
// stream is read one block at a time.
func (b *backup) readStream(ctx context.Context, q *readQueue) error {
	size := b.opts.SegmentSize
	for off := int64(0); ; off += size {
		var seg *segment
		for pos := int64(0); pos < size; {
			blk, err := q.take()
			if err != nil {
				return err
			}
			n, err := b.src.readStream(blk.buf[:min(size-pos, readBlock)])
			if err != nil {
				return err
			}
			end := n < int(min(size-pos, readBlock)) // the stream ended
			if seg == nil {
				if n == 0 {
					return nil
				}
				seg = &segment{off: off, length: -1, spans: []span{{Range{Offset: off, Length: -1}}}}
				if err := q.send(q.items, item{seg: seg}); err != nil {
					return err
				}
			}
			pos += int64(n)
			if err := q.pass(item{blk: blk, n: n, last: end || pos == size}); err != nil {
				return err
			}
			if end {
				return nil
			}
		}
	}
}

// hashDigest hashes the image into digest, in order, from the blocks and
// holes the reader sends to sums, and gives the blocks back. Blocks that
// are whole leaves of the digest, as aligned reads of a dense image are,
// are hashed up to parallel at a time (those already waiting, never
// waiting for more), so that the digest is not bound to one core: one
// core hashes ~3.5 GB/s with AVX2, less than fast disks read.
func hashDigest(ctx context.Context, digest *ImageDigest, free chan<- *block, sums <-chan item, parallel int) error {
	var (
		batch  []item
		leaves [][32]byte
	)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		leaves = slices.Grow(leaves[:0], len(batch))[:len(batch)]
		var wg sync.WaitGroup
		for i := 1; i < len(batch); i++ {
			wg.Go(func() { leaves[i] = LeafHash(batch[i].data()) })
		}
		leaves[0] = LeafHash(batch[0].data())
		wg.Wait()
		for i, it := range batch {
			digest.AddLeaf(leaves[i])
			it.blk.release(free)
		}
		batch = batch[:0]
	}
	for {
		var (
			it item
			ok bool
		)
		select {
		case it, ok = <-sums:
		default:
			// Nothing more is waiting: hash what is, then wait.
			flush()
			select {
			case it, ok = <-sums:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if !ok {
			flush()
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if it.blk != nil && it.n == DigestLeaf && digest.AtLeaf() {
			if batch = append(batch, it); len(batch) >= parallel {
				flush()
			}
			continue
		}
		flush()
		if it.blk == nil {
			digest.Zeros(it.zeros)
			continue
		}
		digest.Write(it.data())
		it.blk.release(free)
	}
}

// collect takes the segments in order as the chunker finishes them, waits
// for the IDs of their new chunks and adds their extents to the content
// list.
func (b *backup) collect(ctx context.Context, segs <-chan *segment) (*BackupResult, error) {
	// With a parent, level-0 pages are saved as delta pages of the
	// parent's pages where that is at most half their size: a night's
	// scattered changes touch nearly every page, but few of its entries.
	builder := snapshot.NewContentBuilderWithParent(b.saver, b.parent)
	var st counters
	for {
		var seg *segment
		var ok bool
		select {
		case seg, ok = <-segs:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if !ok {
			break
		}
		for _, e := range seg.extents {
			if j := e.job; j != nil {
				if err := j.wait(ctx); err != nil {
					return nil, err
				}
				e.ID = j.id
				seg.st.blobs++
				if j.added > 0 {
					seg.st.blobsNew++
					seg.st.newBytes += e.Length
					seg.st.added += uint64(j.added)
				}
			}
			if err := builder.Add(ctx, e.Extent); err != nil {
				return nil, fmt.Errorf("image content list: %w", err)
			}
		}
		st.add(seg.st)
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
