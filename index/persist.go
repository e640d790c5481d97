package index

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/imagobackup/imago/chunk"
)

// Persist writes the whole index (every blob of every kind, and the pack
// segments) with tag (opaque bytes of the caller) to path atomically: a
// temporary file in the same directory, fsync, rename. It then makes x use
// that file: its runs on the heap and its recent map are dropped, and its
// records are served from a mapping of the file. Later Adds spill to private
// files in x's directory, or in the directory of path if x has none. See the
// top of disk.go for the format.
//
// Persist holds the write lock while it runs. On error, x is unchanged.
func (x *Index) Persist(path string, tag []byte) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("persist index: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := x.writeFileLocked(f, tag); err != nil {
		return fmt.Errorf("persist index to %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("persist index to %s: %w", f.Name(), err)
	}
	// Map what was written: it checks the file as OpenFile would.
	l, err := load(f)
	if err != nil {
		return fmt.Errorf("persist index to %s: %w", f.Name(), err)
	}
	err = f.Close()
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		l.release()
		return fmt.Errorf("persist index: %w", err)
	}
	ok = true
	for k := range numKinds {
		_ = x.releaseDiskLocked(k)
		x.main[k], x.mid[k] = run{}, run{}
		if l.runs[k] != nil {
			x.disk[k] = []*diskRun{l.runs[k]}
		}
	}
	x.recent = make(map[chunk.Handle]packedLoc)
	x.n = l.n
	x.failed = [numKinds]int{}
	if x.dir == "" {
		x.dir = dir
	}
	return nil
}

// writeFileLocked writes the index file of x to f.
func (x *Index) writeFileLocked(f *os.File, tag []byte) error {
	var recent [numKinds][]item
	for h, l := range x.recent {
		recent[h.Kind-1] = append(recent[h.Kind-1], item{id: h.ID, loc: getPacked(l[:])})
	}
	h := &header{next: x.next, segCount: uint64(len(x.segs)), tagLen: uint64(len(tag))}
	var starts [numKinds][]uint32
	off := int64(pageSize)
	for k := range numKinds {
		// Older runs first, so that a duplicate (which Add prevents) keeps
		// its first location, as in a merge.
		srcs, upper := diskSources(x.disk[k])
		rs := []*run{&x.main[k], &x.mid[k]}
		if len(recent[k]) > 0 {
			rs = append(rs, newRun(recent[k]))
		}
		for _, r := range rs {
			srcs = append(srcs, source{r: r})
			upper += r.len()
		}
		recsOff := alignUp(off + int64(upper)*tagSize)
		w := newFileWriter(f, off, recsOff)
		mergeRuns(w, srcs, nil)
		if err := w.finish(); err != nil {
			return err
		}
		h.kinds[k] = kindHeader{count: uint64(w.n), tagsOff: uint64(off), recsOff: uint64(recsOff)}
		starts[k] = w.starts
		off = alignUp(recsOff + int64(w.n)*recSize)
	}
	h.metaOff = uint64(off)
	if err := writeMeta(io.NewOffsetWriter(f, off), h, x.segs, starts, tag); err != nil {
		return err
	}
	page := make([]byte, pageSize)
	copy(page, h.encode())
	_, err := f.WriteAt(page, 0)
	return err
}

// OpenFile maps an index file written by Persist and returns it with its
// tag. Later Adds spill to private files in dir; dir == "" keeps them on
// the heap. A file that is not a complete, valid index file of this version
// gives an error wrapping ErrBadFile: the caller deletes it and rebuilds the
// index from the repository.
func OpenFile(path, dir string) (*Index, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	l, err := load(f)
	if err != nil {
		return nil, nil, err
	}
	x := newIndex(dir)
	x.segs, x.next, x.n = l.segs, l.next, l.n
	for i, s := range x.segs {
		x.latest[s.id] = i
	}
	for k, d := range l.runs {
		if d != nil {
			x.disk[k] = []*diskRun{d}
		}
	}
	return x, l.tag, nil
}

// loaded is an index file checked and mapped.
type loaded struct {
	meta
	next uint64
	runs [numKinds]*diskRun // nil for a kind without records
	n    int
}

func (l *loaded) release() {
	for _, d := range l.runs {
		if d != nil {
			_ = d.m.release()
		}
	}
}

// load checks the index file f and maps it. Its errors wrap ErrBadFile,
// except those of reading and mapping the file.
func load(f *os.File) (*loaded, error) {
	bad := func(err error) error { return fmt.Errorf("%w: %s: %w", ErrBadFile, f.Name(), err) }
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size != int64(int(size)) {
		return nil, fmt.Errorf("%s: %d bytes do not fit in the address space", f.Name(), size)
	}
	if size < pageSize+checksumSize {
		return nil, bad(fmt.Errorf("%d bytes is shorter than the minimum %d", size, pageSize+checksumSize))
	}
	hb := make([]byte, headerSize)
	if _, err := f.ReadAt(hb, 0); err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	h, err := decodeHeader(hb, size)
	if err != nil {
		return nil, bad(err)
	}
	mb := make([]byte, h.metaLen()+checksumSize)
	if _, err := f.ReadAt(mb, int64(h.metaOff)); err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	m, err := decodeMeta(hb, mb, h)
	if err != nil {
		return nil, bad(err)
	}
	l := &loaded{meta: *m, next: h.next}
	var users int
	for _, kh := range h.kinds {
		if kh.count > 0 {
			users++
		}
	}
	if users == 0 {
		return l, nil
	}
	data, err := mapFile(f, size)
	if err != nil {
		return nil, err
	}
	mp := &mapping{data: data, refs: users}
	for k, kh := range h.kinds {
		if kh.count == 0 {
			continue
		}
		n := int(kh.count)
		d := &diskRun{
			run:  run{recs: data[kh.recsOff:][:n*recSize], starts: m.starts[k]},
			tags: data[kh.tagsOff:][:n*tagSize],
			m:    mp,
		}
		randomAccess(d.recs)
		l.runs[k] = d
		l.n += n
	}
	return l, nil
}
