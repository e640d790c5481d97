package blockdev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
)

// readSize is the length of one read from a source. 4 MiB keeps a disk's
// request queue busy with few system calls (restic and dd users settle on
// 1-4 MiB), and lets the page cache behind each read be dropped soon after
// it was filled.
const readSize = 4 << 20

// Range is a run of a source: Length bytes at Offset that are either data or
// a hole that reads as zeros without being stored.
type Range struct {
	Offset int64
	Length int64
	Hole   bool
}

// Source is a disk or disk image to back up: a block device, a regular file
// read as a disk image, or a stream. A Source is safe for concurrent use by
// Backup's workers; the caller closes it.
type Source struct {
	name   string
	f      *os.File  // nil for a stream
	r      io.Reader // streams only
	size   int64     // -1 for a stream
	device bool
	holes  bool // SEEK_DATA and SEEK_HOLE work on f

	// direct is f opened again with O_DIRECT (nil where that failed), which
	// readAt uses for the aligned part of each read: a cold image read
	// through the page cache cost more CPU in the kernel (copies, page
	// allocation, the fadvise to drop them again) than the hashing, on 2
	// cores that both hash. noDirect is set once a direct read failed with
	// EINVAL; the source then reads buffered until it is closed.
	direct   *os.File
	noDirect atomic.Bool
	// directBytes counts the bytes read with O_DIRECT, cachedBytes those
	// read from the page cache because it held them (for tests).
	directBytes atomic.Int64
	cachedBytes atomic.Int64
	// testDirectEINVAL, set by tests, fails every direct read with EINVAL.
	testDirectEINVAL bool

	// keepCache, set by benchmarks, leaves the page cache alone so that
	// they measure the pipeline rather than the disk.
	keepCache bool
	// afterRead, when set (by tests), is called after every read of n bytes
	// at off (a block of Backup's reader, in order, before it is passed
	// on; off is -1 for a stream).
	afterRead func(off int64, n int)
}

// Open opens the block device or regular file at path as a source. A
// regular file is read as a disk image: its holes are found with SEEK_DATA
// and SEEK_HOLE and never read. Directories, character devices and other
// special files are refused.
func Open(path string) (*Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open image source: %w", err)
	}
	s, err := newFileSource(f)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	s.direct = openDirect(f, os.O_RDONLY, s.device)
	return s, nil
}

func newFileSource(f *os.File) (*Source, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open image source: %w", err)
	}
	s := &Source{name: f.Name(), f: f}
	switch m := fi.Mode(); {
	case m.IsRegular():
		s.size = fi.Size()
		_, _, err := seekData(f, 0)
		switch {
		case errors.Is(err, errNoSeekData):
			// The file system cannot report holes: read everything.
		case err != nil:
			return nil, fmt.Errorf("open image source: %w", err)
		default:
			s.holes = true
		}
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		s.device = true
		if s.size, err = deviceSize(f); err != nil {
			return nil, fmt.Errorf("open image source: %w", err)
		}
	default:
		return nil, fmt.Errorf("open image source: %s is not a block device or regular file (mode %v)", f.Name(), m)
	}
	adviseSequential(f)
	return s, nil
}

// OpenReader returns a source that reads r once, in order, for example
// stdin. Its size is unknown until it ends and it has no holes (all-zero
// chunks still become holes). name is recorded as the source's name. The
// caller closes r, if needed, after Backup returns.
func OpenReader(r io.Reader, name string) *Source {
	return &Source{name: name, r: r, size: -1}
}

// Name returns the path or name the source was opened with.
func (s *Source) Name() string { return s.name }

// Size returns the source's length in bytes, or -1 for a stream.
func (s *Source) Size() int64 { return s.size }

// Device reports whether the source is a block device.
func (s *Source) Device() bool { return s.device }

// Close closes the file or device; it does not close a stream's reader.
func (s *Source) Close() error {
	if s.f == nil {
		return nil
	}
	if s.direct != nil {
		_ = s.direct.Close()
	}
	return s.f.Close()
}

// Ranges calls fn for the data and hole ranges of the source in order. A
// block device, or a file on a file system that cannot report holes, is one
// data range. A stream has no known ranges: Ranges returns an error. An
// error from fn stops the iteration and is returned unchanged.
func (s *Source) Ranges(ctx context.Context, fn func(Range) error) error {
	if s.f == nil {
		return fmt.Errorf("blockdev: ranges of stream %q are unknown", s.name)
	}
	// Map a segment-sized step at a time so that a file with millions of
	// holes is not listed into memory at once.
	const step = DefaultSegmentSize
	var rs []Range
	for off := int64(0); off < s.size; off += step {
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		if rs, err = s.ranges(off, min(off+step, s.size), rs[:0]); err != nil {
			return err
		}
		for _, r := range rs {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// ranges appends to dst the data and hole ranges covering [from, to), in
// order, adjacent ranges never of the same kind. A file that shrank shows
// as a hole at its end (checkSize catches it).
func (s *Source) ranges(from, to int64, dst []Range) ([]Range, error) {
	add := func(off, end int64, hole bool) {
		if end <= off {
			return
		}
		if n := len(dst); n > 0 && dst[n-1].Hole == hole {
			dst[n-1].Length += end - off
			return
		}
		dst = append(dst, Range{Offset: off, Length: end - off, Hole: hole})
	}
	if !s.holes {
		add(from, to, false)
		return dst, nil
	}
	for off := from; off < to; {
		d, ok, err := seekData(s.f, off)
		if err != nil {
			return nil, err
		}
		if !ok || d >= to {
			add(off, to, true)
			break
		}
		add(off, d, true)
		h, ok, err := seekHole(s.f, d)
		if err != nil {
			return nil, err
		}
		if !ok {
			// d is beyond the end: the file shrank after SEEK_DATA.
			add(d, to, true)
			break
		}
		h = min(h, to)
		add(d, h, false)
		off = h
	}
	return dst, nil
}

// readAt fills p with the source's bytes at off. A short read wraps
// ErrSourceChanged. Only for files and devices; Backup's readers call it
// concurrently for different blocks.
//
// The part of p whose offsets are aligned to directAlign, and at an
// address aligned the same way, is read in one direct read, bypassing
// the page cache; the rest (an unaligned head or tail of a data span, the
// end of a file whose size is not a multiple of directAlign, or all of p
// when the source cannot read directly) is read through the page cache.
//
// Unless the page cache already holds nearly all of p's bytes (7/8; a
// warm image, such as a VM disk just written or read): then all of p is
// copied from the cache, which is cheaper than reading the disk again (2
// GiB unchanged image, warm: 1.3–1.6 s instead of 1.6–2.1 s), and left
// there, since the backup did not bring it in.
func (s *Source) readAt(ctx context.Context, p []byte, off int64) error {
	if s.direct == nil || s.noDirect.Load() {
		return s.readBuffered(ctx, p, off, !s.keepCache)
	}
	if mostlyCached(s.f, off, int64(len(p))) {
		s.cachedBytes.Add(int64(len(p)))
		return s.readBuffered(ctx, p, off, false)
	}
	end := off + int64(len(p))
	lo, hi := alignUp(off), alignDown(min(end, s.size))
	if hi <= lo || !memAligned(p[lo-off:]) {
		return s.readBuffered(ctx, p, off, !s.keepCache)
	}
	if err := s.readBuffered(ctx, p[:lo-off], off, !s.keepCache); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n, err := s.readDirect(p[lo-off:hi-off], lo)
	if err != nil {
		return fmt.Errorf("read %s at offset %d: %w", s.name, lo+int64(n), err)
	}
	// After a short or refused direct read, the buffered read goes on
	// where it stopped (and reports a file that shrank).
	return s.readBuffered(ctx, p[lo-off+int64(n):], lo+int64(n), !s.keepCache)
}

// readBuffered is readAt through the page cache, in aligned reads of at
// most readSize bytes, dropping the cache behind each if drop is set.
func (s *Source) readBuffered(ctx context.Context, p []byte, off int64, drop bool) error {
	for len(p) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		// End each read on a multiple of readSize, so that reads stay
		// aligned after an unaligned start.
		n := min(int64(len(p)), readSize-off%readSize)
		got, err := s.f.ReadAt(p[:n], off)
		if got > 0 && drop {
			dropCache(s.f, off, int64(got))
		}
		if int64(got) < n {
			if err == nil || err == io.EOF {
				return fmt.Errorf("%w: %s ended at offset %d, %d bytes before its recorded size %d",
					ErrSourceChanged, s.name, off+int64(got), s.size-off-int64(got), s.size)
			}
			return fmt.Errorf("read %s at offset %d: %w", s.name, off+int64(got), err)
		}
		p, off = p[n:], off+n
	}
	return nil
}

// readStream reads the next len(p) bytes of a stream. It returns fewer only
// at the end of the stream, with a nil error.
func (s *Source) readStream(p []byte) (int, error) {
	n, err := io.ReadFull(s.r, p)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("read %s: %w", s.name, err)
	}
	if n > 0 && s.afterRead != nil {
		s.afterRead(-1, n)
	}
	return n, nil
}

// checkSize returns an error wrapping ErrSourceChanged when a file or device
// no longer has the size it had when opened.
func (s *Source) checkSize() error {
	if s.f == nil {
		return nil
	}
	var (
		now int64
		err error
	)
	if s.device {
		now, err = deviceSize(s.f)
	} else {
		var fi os.FileInfo
		if fi, err = s.f.Stat(); err == nil {
			now = fi.Size()
		}
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", s.name, err)
	}
	if now != s.size {
		return fmt.Errorf("%w: %s is now %d bytes, was %d", ErrSourceChanged, s.name, now, s.size)
	}
	return nil
}
