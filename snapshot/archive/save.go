package archive

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"golang.org/x/sync/semaphore"
)

// inFlightBytes bounds the chunk buffers queued for or held by the save
// workers. The design measurements (docs: "Keep deep lookahead") found that
// an 8-chunk queue starved the workers while ~40 chunks kept both cores
// busy; 64 MiB holds ~50 average (1 MiB, class-rounded) chunks and at least
// 7 of the largest (8 MiB). Together with the readers' splitters (each
// Params.Max scratch bytes plus the chunker's 512 KiB read buffer) this is
// the pipeline's memory bound: 64 MiB + readers × (Max + 512 KiB).
const inFlightBytes = 64 << 20

// saveQueueLen is the capacity of the channel to the save workers. The
// semaphore is the real bound; the channel only needs to be deep enough
// that readers rarely wait on it, so it matches the chunk count the budget
// holds.
const saveQueueLen = 64

// saveJob is one data chunk on its way to the repository. The worker sets
// id and closes done; buf returns to the pool and weight to the semaphore.
type saveJob struct {
	buf    []byte
	weight int64
	id     chunk.ID
	done   chan struct{}
}

// saver queues chunks for a fixed set of save workers.
type saver struct {
	s     snapshot.ChunkSaver
	sem   *semaphore.Weighted
	pool  bufPool
	queue chan *saveJob
}

func newSaver(s snapshot.ChunkSaver) *saver {
	return &saver{
		s:     s,
		sem:   semaphore.NewWeighted(inFlightBytes),
		queue: make(chan *saveJob, saveQueueLen),
	}
}

// submit copies data into a pooled buffer and queues it for saving, first
// waiting until the bytes in flight allow it. The caller waits on the job's
// done channel (with ctx) before reading its id.
func (sv *saver) submit(ctx context.Context, data []byte) (*saveJob, error) {
	size, _ := classOf(len(data))
	w := min(int64(size), inFlightBytes)
	if err := sv.sem.Acquire(ctx, w); err != nil {
		return nil, err
	}
	j := &saveJob{buf: sv.pool.get(len(data)), weight: w, done: make(chan struct{})}
	copy(j.buf, data)
	select {
	case sv.queue <- j:
		return j, nil
	case <-ctx.Done():
		sv.release(j)
		return nil, ctx.Err()
	}
}

func (sv *saver) release(j *saveJob) {
	sv.pool.put(j.buf)
	j.buf = nil
	sv.sem.Release(j.weight)
}

// work saves queued chunks until the queue is closed or ctx is done. An
// error of the repository ends it, which cancels the run.
func (sv *saver) work(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case j, ok := <-sv.queue:
			if !ok {
				return nil
			}
			id, _, err := sv.s.SaveChunk(ctx, chunk.KindData, j.buf)
			sv.release(j)
			if err != nil {
				return fmt.Errorf("save data: %w", err)
			}
			j.id = id
			close(j.done)
		}
	}
}

// wait returns the ID of a submitted chunk once it is saved.
func (j *saveJob) wait(ctx context.Context) (chunk.ID, error) {
	select {
	case <-j.done:
		return j.id, nil
	case <-ctx.Done():
		return chunk.ID{}, ctx.Err()
	}
}

// counter wraps the repository's ChunkSaver to count new blobs and added
// bytes for the summary, whoever saves through it.
type counter struct {
	s          snapshot.ChunkSaver
	dataBlobs  atomic.Int64
	treeBlobs  atomic.Int64
	bytesAdded atomic.Int64
}

// SaveChunk saves through the wrapped saver and counts what it added.
func (c *counter) SaveChunk(ctx context.Context, k chunk.Kind, data []byte) (chunk.ID, int, error) {
	id, added, err := c.s.SaveChunk(ctx, k, data)
	if err != nil || added == 0 {
		return id, added, err
	}
	if k == chunk.KindTree {
		c.treeBlobs.Add(1)
	} else {
		c.dataBlobs.Add(1)
	}
	c.bytesAdded.Add(int64(added))
	return id, added, nil
}
