package restore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// verifyBufSize is the read size when verifying: large enough for
// sequential read throughput, small beside the chunk buffers.
const verifyBufSize = 1 << 20

// verifyBufs holds verify read buffers: one per worker verifying.
var verifyBufs = sync.Pool{New: func() any {
	b := make([]byte, verifyBufSize)
	return &b
}}

// zeros is compared against ranges that must read as zeros.
var zeros [verifyBufSize]byte

// verify reads the written file back and compares it with what was meant:
// each data extent must hash to the sum taken when it was written, and
// everything else must read as zeros. The error wraps ErrVerify when the
// content differs.
func (j *fileJob) verify(ctx context.Context) error {
	fi, err := j.f.Stat()
	if err != nil {
		return err
	}
	if uint64(fi.Size()) != j.node.Size {
		return fmt.Errorf("%w: size is %d, want %d", ErrVerify, fi.Size(), j.node.Size)
	}
	slices.SortFunc(j.sums, func(a, b extentSum) int { return cmp.Compare(a.start, b.start) })
	bp := verifyBufs.Get().(*[]byte)
	defer verifyBufs.Put(bp)
	buf := *bp
	var pos uint64
	for _, s := range j.sums {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := j.checkZeros(pos, s.start, buf); err != nil {
			return err
		}
		h := blake3.New()
		if err := j.readRange(s.start, s.start+s.length, buf, func(_ uint64, b []byte) error {
			_, _ = h.Write(b)
			return nil
		}); err != nil {
			return err
		}
		var sum [32]byte
		h.Sum(sum[:0])
		if sum != s.sum {
			return fmt.Errorf("%w: bytes %d to %d", ErrVerify, s.start, s.start+s.length)
		}
		pos = s.start + s.length
	}
	return j.checkZeros(pos, j.node.Size, buf)
}

// checkZeros checks that bytes [from, to) of the file are zeros. Ranges the
// file system reports as holes (SEEK_DATA) are not read.
func (j *fileJob) checkZeros(from, to uint64, buf []byte) error {
	for from < to {
		data, err := j.f.Seek(int64(from), unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			return nil // no data after from: the rest is a hole
		case err != nil:
			data = int64(from) // no SEEK_DATA here: read everything
		}
		if uint64(data) >= to {
			return nil
		}
		hole, err := j.f.Seek(data, unix.SEEK_HOLE)
		if err != nil || uint64(hole) > to {
			hole = int64(to)
		}
		if err := j.readRange(uint64(data), uint64(hole), buf, func(off uint64, b []byte) error {
			if bytes.Equal(b, zeros[:len(b)]) {
				return nil
			}
			i := slices.IndexFunc(b, func(c byte) bool { return c != 0 })
			return fmt.Errorf("%w: byte %d should be zero", ErrVerify, off+uint64(i))
		}); err != nil {
			return err
		}
		from = uint64(hole)
	}
	return nil
}

// readRange reads bytes [from, to) through buf and hands them to fn piece
// by piece with their offsets.
func (j *fileJob) readRange(from, to uint64, buf []byte, fn func(off uint64, b []byte) error) error {
	for from < to {
		n := min(uint64(len(buf)), to-from)
		got, err := j.f.ReadAt(buf[:n], int64(from))
		if uint64(got) < n {
			if err == nil || err == io.EOF {
				err = fmt.Errorf("%w: file ends at %d", ErrVerify, from+uint64(got))
			}
			return err
		}
		if err := fn(from, buf[:n]); err != nil {
			return err
		}
		from += n
	}
	return nil
}
