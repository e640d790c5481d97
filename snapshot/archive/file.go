package archive

import (
	"context"
	"errors"
	"io"
	"math"
	"os"
	"sync"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/internal/ring"
	"github.com/imagobackup/imago/snapshot"
	"golang.org/x/sys/unix"
)

// reader is the per-reader state reused across files: a splitter with its
// 512 KiB read buffer, and the ring it cuts chunks into (see readerRing).
type reader struct {
	sp      *chunk.Splitter
	ring    *ring.Ring
	reserve int // reserveLen
}

// getReader returns a free reader or a new one. At most workers readers
// run at a time, so at most workers exist.
func (a *archiver) getReader() *reader {
	select {
	case r := <-a.readers:
		return r
	default:
		return &reader{
			sp:      chunk.NewSplitter(nil, a.opts.Params),
			ring:    ring.New(readerRing(a.opts.Params)),
			reserve: reserveLen(a.opts.Params),
		}
	}
}

// putReader keeps r for the next file.
func (a *archiver) putReader(r *reader) {
	select {
	case a.readers <- r:
	default:
	}
}

// readError marks an error of reading the source file, as opposed to one of
// the repository or the context.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// saveFile reads the file at path (lstat result st) and fills in n's
// content, or sets n.Type to 0 when the file cannot be read. prev is the
// parent snapshot's node of the same name, for counting. Only errors of the
// repository or of ctx are returned.
func (a *archiver) saveFile(ctx context.Context, path string, n *snapshot.Node, st *unix.Stat_t, prev *snapshot.Node) error {
	a.opts.Progress.setCurrent(path)
	var link *linkEntry
	if st.Nlink > 1 {
		var first bool
		link, first = a.links.claim(linkKey{dev: uint64(st.Dev), ino: st.Ino})
		if !first {
			select {
			case <-link.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if link.ok {
				// Another name of the same file was read in this run.
				n.Content, n.Size = link.content, link.size
				a.countFile(n, prev)
				a.opts.Progress.addBytes(int64(n.Size), 0)
				return nil
			}
			link = nil // the other name failed: try this one
		} else {
			defer close(link.done)
		}
	}
	ok, err := a.readFile(ctx, path, n, st)
	if err != nil {
		return err
	}
	if !ok {
		n.Type = 0
		return nil
	}
	if link != nil {
		link.content, link.size, link.ok = n.Content, n.Size, true
	}
	a.countFile(n, prev)
	return nil
}

// countFile counts a stored file that was not reused from the parent.
func (a *archiver) countFile(n, prev *snapshot.Node) {
	if prev == nil || prev.Type != snapshot.TypeFile {
		a.stats.filesNew.Add(1)
	} else {
		a.stats.filesChanged.Add(1)
	}
	a.fileDone(n)
}

// fileDone counts a file done in the summary and the progress.
func (a *archiver) fileDone(n *snapshot.Node) {
	a.stats.files.Add(1)
	a.stats.bytes.Add(int64(n.Size))
	a.opts.Progress.fileDone()
}

// readFile reads the file into n.Content and n.Size. It reports the file
// and returns false when it cannot be read.
func (a *archiver) readFile(ctx context.Context, path string, n *snapshot.Node, st *unix.Stat_t) (bool, error) {
	// O_NONBLOCK: a path that became a FIFO since the lstat must not block
	// the open; it is refused below. Regular files ignore the flag.
	f, err := a.openFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if err != nil {
		a.unreadable(path, err)
		return false, nil
	}
	defer f.Close()
	fd := int(f.Fd())
	var before unix.Stat_t
	if err := unix.Fstat(fd, &before); err != nil {
		a.unreadable(path, &pathError{op: "fstat", path: path, err: err})
		return false, nil
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG {
		a.unreadable(path, errNotRegular)
		return false, nil
	}

	r := a.getReader()
	defer a.putReader(r)
	c, size, err := a.readContent(ctx, f, &before, r)
	var re *readError
	if errors.As(err, &re) {
		a.unreadable(path, &pathError{op: "read", path: path, err: re.err})
		return false, nil
	}
	if err != nil {
		return false, err
	}
	n.Content, n.Size = c, size

	if a.opts.afterRead != nil {
		a.opts.afterRead(path)
	}
	var after unix.Stat_t
	if err := unix.Fstat(fd, &after); err != nil {
		a.unreadable(path, &pathError{op: "fstat", path: path, err: err})
		return false, nil
	}
	if after.Size != st.Size || after.Mtim != st.Mtim || after.Ctim != st.Ctim {
		// The content is what was read; the node keeps the metadata from
		// before, so the next backup sees a difference and reads it again.
		a.report(path, ErrFileChanged, true)
	}
	return true, nil
}

// readContent cuts the file into extents and returns its content list and
// length.
//
// Determinism rule: when the file system reports holes (SEEK_DATA /
// SEEK_HOLE), each hole becomes a hole extent without being read, and each
// data region is chunked on its own, the splitter restarting at the
// region's first byte. Within a region, a chunk whose bytes are all zero
// becomes a hole extent and is never saved. Adjacent holes are merged into
// one extent. So the extents depend on the bytes and on the hole layout the
// file system reports, not on timing or the number of workers.
func (a *archiver) readContent(ctx context.Context, f *os.File, st *unix.Stat_t, r *reader) (snapshot.Content, uint64, error) {
	w := &extentWriter{b: snapshot.NewContentBuilder(a.count)}
	fd := int(f.Fd())
	// Only a file with fewer blocks allocated than its length can have
	// holes; skip the seeks for all others.
	sparse := st.Blocks*512 < st.Size
	var off int64
	for {
		start, length := off, int64(math.MaxInt64-off) // to EOF
		if sparse {
			data, err := unix.Seek(fd, off, unix.SEEK_DATA)
			switch {
			case errors.Is(err, unix.ENXIO):
				// No data at or after off: the rest is a hole.
				end, err := unix.Seek(fd, 0, io.SeekEnd)
				if err != nil {
					return snapshot.Content{}, 0, &readError{err}
				}
				a.skipHole(w, end-off)
				return a.finishContent(ctx, w)
			case err != nil:
				sparse = false // SEEK_DATA unsupported here: read it all
			default:
				hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
				if err != nil {
					return snapshot.Content{}, 0, &readError{err}
				}
				a.skipHole(w, data-off)
				start, length = data, hole-data
			}
		}
		expect := length
		if !sparse {
			expect = st.Size - start // the size at the lstat; the file may grow
		}
		n, err := a.chunkRegion(ctx, io.NewSectionReader(f, start, length), expect, r, w)
		if err != nil {
			return snapshot.Content{}, 0, err
		}
		off = start + n
		if !sparse || n < length {
			// Read to EOF, or the file shrank while being read.
			return a.finishContent(ctx, w)
		}
	}
}

// skipHole records n bytes of hole that are not read.
func (a *archiver) skipHole(w *extentWriter, n int64) {
	if n <= 0 {
		return
	}
	w.addHole(uint64(n))
	a.stats.bytesHoles.Add(n)
	a.opts.Progress.addBytes(n, 0)
}

// chunkRegion cuts the bytes of src, about expect of them, into chunks,
// queues the non-zero ones for saving and returns the number of bytes read.
func (a *archiver) chunkRegion(ctx context.Context, src io.Reader, expect int64, r *reader, w *extentWriter) (int64, error) {
	r.sp.Reset(src)
	var n int64
	for {
		l, j, err := a.saver.cut(ctx, r, expect-n)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n += int64(l)
		a.stats.bytesRead.Add(int64(l))
		a.opts.Progress.addBytes(int64(l), int64(l))
		if j == nil {
			w.addHole(uint64(l))
		} else {
			w.addData(j, uint64(l))
		}
		if err := w.drain(ctx, false); err != nil {
			return n, err
		}
	}
}

func (a *archiver) finishContent(ctx context.Context, w *extentWriter) (snapshot.Content, uint64, error) {
	if err := w.drain(ctx, true); err != nil {
		return snapshot.Content{}, 0, err
	}
	if err := w.flushHole(ctx); err != nil {
		return snapshot.Content{}, 0, err
	}
	c, size, _, err := w.b.Finish(ctx)
	return c, size, err
}

// extentWriter feeds a file's extents to a ContentBuilder in file order
// while their chunks are saved out of order.
type extentWriter struct {
	b    *snapshot.ContentBuilder
	q    []pendingExtent // from q[head] on: not yet added
	head int
	hole uint64 // hole bytes taken from the queue but not yet added
}

// pendingExtent is a queued chunk (job != nil) or hole.
type pendingExtent struct {
	job    *saveJob
	length uint64
}

func (w *extentWriter) addHole(n uint64) {
	if w.head == len(w.q) {
		w.hole += n // nothing queued before it
		return
	}
	if last := &w.q[len(w.q)-1]; last.job == nil {
		last.length += n // merge runs of zero chunks while waiting
		return
	}
	w.q = append(w.q, pendingExtent{length: n})
}

func (w *extentWriter) addData(j *saveJob, n uint64) {
	w.q = append(w.q, pendingExtent{job: j, length: n})
}

// drain adds the queued extents whose chunks are saved, in order; with
// block it waits for all of them.
func (w *extentWriter) drain(ctx context.Context, block bool) error {
	for w.head < len(w.q) {
		p := w.q[w.head]
		if p.job == nil {
			w.hole += p.length
		} else {
			if !block {
				select {
				case <-p.job.done:
				default:
					return nil
				}
			}
			id, err := p.job.wait(ctx)
			if err != nil {
				return err
			}
			if err := w.flushHole(ctx); err != nil {
				return err
			}
			if err := w.b.Add(ctx, snapshot.Extent{Length: p.length, ID: id}); err != nil {
				return err
			}
		}
		w.q[w.head] = pendingExtent{}
		w.head++
	}
	w.q, w.head = w.q[:0], 0
	return nil
}

// flushHole adds the merged pending hole, if any.
func (w *extentWriter) flushHole(ctx context.Context) error {
	if w.hole == 0 {
		return nil
	}
	err := w.b.Add(ctx, snapshot.Extent{Length: w.hole})
	w.hole = 0
	return err
}

// linkKey identifies a file with several hard links.
type linkKey struct{ dev, ino uint64 }

// linkEntry is the content of a hard-linked file, valid once done is
// closed and ok is true.
type linkEntry struct {
	done    chan struct{}
	content snapshot.Content
	size    uint64
	ok      bool
}

// linkTable remembers the hard-linked files read in this run.
type linkTable struct {
	mu sync.Mutex
	m  map[linkKey]*linkEntry // guarded by mu
}

// claim returns the entry for k; first is true for the caller that must
// read the file and close done.
func (t *linkTable) claim(k linkKey) (e *linkEntry, first bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.m[k]; ok {
		return e, false
	}
	if t.m == nil {
		t.m = make(map[linkKey]*linkEntry)
	}
	e = &linkEntry{done: make(chan struct{})}
	t.m[k] = e
	return e, true
}
