package blockdev

import (
	"context"
	"fmt"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/internal/ring"
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
	ring     *ring.Ring
	queue    chan *saveJob
}

// newSaver returns a saver whose chunks are cut into a ring of
// max(saveBudget, 2 × maxChunk) bytes.
func newSaver(s snapshot.ChunkSaver, p *Progress, maxChunk int) *saver {
	return &saver{s: s, progress: p, ring: ring.New(max(saveBudget, 2*maxChunk)), queue: make(chan *saveJob, saveQueue)}
}

// close tells the workers that no more jobs come.
func (sv *saver) close() { close(sv.queue) }

// reserve returns room for the next chunk of at most n bytes; the chunker
// cuts it there and passes it to submit, or commits nothing.
func (sv *saver) reserve(ctx context.Context, n int) ([]byte, error) {
	return sv.ring.Reserve(ctx, n)
}

// skip gives up the last reservation.
func (sv *saver) skip() { sv.ring.Commit(0) }

// submit keeps c, a chunk cut into the last reservation, and queues it.
// Only the chunker calls it.
func (sv *saver) submit(ctx context.Context, c []byte) (*saveJob, error) {
	j := &saveJob{buf: c, region: sv.ring.Commit(len(c)), done: make(chan struct{})}
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
	sv.ring.Put(j.region)
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
