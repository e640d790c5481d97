package archive

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/internal/ring"
	"github.com/imagobackup/imago/snapshot"
)

// saveQueueLen is the capacity of the channel to the save workers. The
// readers' rings are the real bound (see readerRing); the channel only
// needs to be deep enough that readers rarely wait on it.
const saveQueueLen = 64

// readerRing is the size of the ring each reader cuts its chunks into,
// where they stay until saved: Params.Max, 8 MiB with chunk.FileParams.
// A reader reserves reserveLen bytes (half of it) for the next chunk, so at
// least as much again of its chunks can wait to be saved: 3 to 5 chunks of
// the usual ~1.5 MiB. With the splitter's 512 KiB read buffer, this is the
// pipeline's memory for file data: workers × (Max + 512 KiB), 17 MiB on 2
// cores. Until 2026-11 each reader cut into a scratch buffer of Max bytes
// and copied every chunk into a pooled buffer, with 64 MiB in flight: 81
// MiB allowed, 53 MiB of pooled buffers measured in use. One ring of 2 ×
// Max shared by the readers, who then had to cut one at a time, left the
// save workers idle a quarter of the time on 2 cores (the cutter shares
// them).
func readerRing(p chunk.Params) int { return int(p.Max) }

// reserveLen is the room reserved in a reader's ring for a chunk before it
// is cut: half the largest chunk. About 3% of the chunks of chunk.FileParams
// are longer (a cut is 2^-20 likely at each byte after the 512 KiB
// minimum, so P(> 4 MiB) = e^-3.5); the splitter then grows the slice on the
// heap, and the chunk is copied into a reservation of its length.
func reserveLen(p chunk.Params) int { return int(p.Max) / 2 }

// minReserve is the smallest reservation for a chunk: a file that seems to
// be at its end may still have a few bytes (it grew).
const minReserve = 4 << 10

// saveJob is one data chunk on its way to the repository, in its reader's
// ring. The worker sets id and closes done; the region goes back to the
// ring first.
type saveJob struct {
	buf    []byte
	ring   *ring.Ring
	region int64
	id     chunk.ID
	done   chan struct{}
}

// saver queues chunks for a fixed set of save workers.
type saver struct {
	s     snapshot.ChunkSaver
	queue chan *saveJob
}

func newSaver(s snapshot.ChunkSaver) *saver {
	return &saver{s: s, queue: make(chan *saveJob, saveQueueLen)}
}

// cut cuts the next chunk of r's splitter, which has about expect bytes
// left, straight into r's ring: into a reservation of reserveLen bytes, or
// of expect when that is less, so that small files take little of the
// ring. A chunk that is not all zeros is queued for saving; cut returns its
// length and job (nil for zeros), or io.EOF after the last chunk. A read
// error is a *readError. The caller waits on the job's done channel (with
// ctx) before reading its id.
func (sv *saver) cut(ctx context.Context, r *reader, expect int64) (int, *saveJob, error) {
	buf, err := r.ring.Reserve(ctx, int(min(int64(r.reserve), max(expect, minReserve))))
	if err != nil {
		return 0, nil, err
	}
	data, err := r.sp.Next(buf)
	if err != nil {
		r.ring.Commit(0)
		if err == io.EOF {
			return 0, nil, err
		}
		return 0, nil, &readError{err}
	}
	if len(data) > len(buf) {
		// The splitter grew the slice on the heap: copy the chunk into
		// a reservation of its length.
		r.ring.Commit(0)
		if buf, err = r.ring.Reserve(ctx, len(data)); err != nil {
			return 0, nil, err
		}
		data = buf[:copy(buf, data)]
	}
	if chunk.IsZero(data) {
		r.ring.Commit(0)
		return len(data), nil, nil
	}
	j := &saveJob{buf: data, ring: r.ring, region: r.ring.Commit(len(data)), done: make(chan struct{})}
	select {
	case sv.queue <- j:
		return len(data), j, nil
	case <-ctx.Done():
		sv.release(j)
		return 0, nil, ctx.Err()
	}
}

func (sv *saver) release(j *saveJob) {
	j.buf = nil
	j.ring.Put(j.region)
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
