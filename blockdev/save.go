package blockdev

import (
	"context"
	"fmt"
	"sync"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// saveBudget is the size of the ring new chunks are cut into, and so the
// bound on the bytes queued for or held by the save workers: 8 MiB is ~40
// chunks of the default image sizes (192 KiB on average) and 8 of the
// largest (1 MiB). The design measurements found that one chunker feeding
// save workers starves them with an 8-chunk queue and keeps them busy with
// ~40 (docs: "Keep deep lookahead").
const saveBudget = 8 * miB

// saveQueue is the capacity of the channel to the save workers. The budget
// is the real bound; the channel only has to hold the chunks it allows.
const saveQueue = 64

// saveJob is one new chunk on its way to the repository. The worker sets
// id, added and err and closes done; buf goes back to the ring first.
type saveJob struct {
	buf    []byte
	region int64 // buf's region in the ring
	id     chunk.ID
	added  int
	err    error
	done   chan struct{}
}

// wait returns once the job is done, with its error.
func (j *saveJob) wait(ctx context.Context) error {
	select {
	case <-j.done:
		return j.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// saver hands chunks to a fixed set of save workers.
type saver struct {
	s        snapshot.ChunkSaver
	progress *Progress
	ring     *ring
	queue    chan *saveJob
}

// newSaver returns a saver whose chunks are cut into a ring of
// max(saveBudget, 2 × maxChunk) bytes.
func newSaver(s snapshot.ChunkSaver, p *Progress, maxChunk int) *saver {
	return &saver{s: s, progress: p, ring: newRing(max(saveBudget, 2*maxChunk)), queue: make(chan *saveJob, saveQueue)}
}

// close tells the workers that no more jobs come.
func (sv *saver) close() { close(sv.queue) }

// reserve returns room for the next chunk of at most n bytes; the chunker
// cuts it there and passes it to submit, or commits nothing.
func (sv *saver) reserve(ctx context.Context, n int) ([]byte, error) {
	return sv.ring.reserve(ctx, n)
}

// skip gives up the last reservation.
func (sv *saver) skip() { sv.ring.commit(0) }

// submit keeps c, a chunk cut into the last reservation, and queues it.
// Only the chunker calls it.
func (sv *saver) submit(ctx context.Context, c []byte) (*saveJob, error) {
	j := &saveJob{buf: c, region: sv.ring.commit(len(c)), done: make(chan struct{})}
	select {
	case sv.queue <- j:
		return j, nil
	case <-ctx.Done():
		sv.release(j)
		return nil, ctx.Err()
	}
}

func (sv *saver) release(j *saveJob) {
	j.buf = nil
	sv.ring.put(j.region)
}

// work saves queued chunks until the queue is closed or ctx ends. An error
// of the ChunkSaver ends it, which ends the backup.
func (sv *saver) work(ctx context.Context) error {
	for {
		var j *saveJob
		var ok bool
		select {
		case j, ok = <-sv.queue:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return nil
		}
		n := len(j.buf)
		j.id, j.added, j.err = sv.s.SaveChunk(ctx, chunk.KindData, j.buf)
		sv.release(j)
		if j.err != nil {
			j.err = fmt.Errorf("save image chunk: %w", j.err)
		} else if j.added > 0 {
			sv.progress.BytesNew.Add(uint64(n))
		}
		close(j.done)
		if j.err != nil {
			return j.err
		}
	}
}

// ring holds the new chunks of save jobs in one buffer of fixed size: the
// chunker reserves room for the next chunk at the head, the splitter cuts
// the chunk straight into it, and the chunker keeps what it used (commit);
// the save workers give regions back in any order, and a region is reused
// once it and every region before it are back. Save workers take jobs in
// order and finish them nearly so; a slow job holds back at most the ring.
// Unlike pooled buffers, the ring allocates nothing after its first use,
// holds exactly its size, and the chunk is never copied: a sync.Pool of
// size classes held 21 MiB for an 8 MiB budget.
type ring struct {
	buf []byte
	// res is the end, in ring order, of the reservation not yet
	// committed; only the allocating goroutine touches it.
	res int64

	// mu guards the fields below.
	mu         sync.Mutex
	head, tail int64         // bytes handed out and taken back, in ring order
	regions    []ringRegion  // handed out and not yet reclaimed, oldest first
	freed      chan struct{} // closed, and replaced, when tail moves
}

// ringRegion is a region of the ring: its end in ring order, and whether it
// was given back.
type ringRegion struct {
	end  int64
	back bool
}

func newRing(size int) *ring {
	return &ring{buf: make([]byte, size), freed: make(chan struct{})}
}

// reserve returns n contiguous bytes (at most the ring's size) at the head
// once they are free, for the chunk commit then keeps. One goroutine
// reserves and commits, alternately.
func (r *ring) reserve(ctx context.Context, n int) ([]byte, error) {
	size := int64(len(r.buf))
	if int64(n) > size {
		return nil, fmt.Errorf("image backup: internal error: chunk of %d bytes for a ring of %d", n, size)
	}
	for {
		r.mu.Lock()
		if len(r.regions) == 0 {
			// All back: start again at the ring's start.
			r.head = (r.head + size - 1) / size * size
			r.tail = r.head
		}
		start := r.head
		if off := start % size; off+int64(n) > size {
			start += size - off // skip the ring's end: a region never wraps
		}
		if start+int64(n)-r.tail <= size {
			r.head, r.res = start, start+int64(n)
			r.mu.Unlock()
			off := start % size
			return r.buf[off : off+int64(n) : off+int64(n)], nil
		}
		freed := r.freed
		r.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// commit keeps the first n bytes of the last reservation as a region, to
// be given back with put(end), and returns end; n = 0 keeps nothing (and
// put(0) does nothing).
func (r *ring) commit(n int) int64 {
	if n == 0 {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	end := r.head + int64(n)
	if end > r.res {
		panic("blockdev: ring commit beyond the reservation")
	}
	r.head = end
	r.regions = append(r.regions, ringRegion{end: end})
	return end
}

// put gives back the region that ends at end.
func (r *ring) put(end int64) {
	if end == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.regions {
		if r.regions[i].end == end {
			r.regions[i].back = true
			break
		}
	}
	moved := false
	for len(r.regions) > 0 && r.regions[0].back {
		r.tail = r.regions[0].end
		r.regions = r.regions[1:]
		moved = true
	}
	if moved {
		close(r.freed)
		r.freed = make(chan struct{})
	}
}
