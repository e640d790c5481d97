package s3

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/imagobackup/imago/repo/backend"
)

// source reads the caller's ReaderAt for Save: it stops when ctx is
// cancelled, turns an early end into io.ErrUnexpectedEOF and remembers the
// first failure of the caller's reader, so that Save reports that error
// rather than the transport's view of it.
type source struct {
	ctx  context.Context
	rd   io.ReaderAt
	size int64

	// mu guards err: the transport may still read the body on its own
	// goroutine when PutObject returns early with an error.
	mu  sync.Mutex
	err error
}

func (s *source) ReadAt(p []byte, off int64) (int, error) {
	if err := s.failure(); err != nil {
		return 0, err
	}
	if err := s.ctx.Err(); err != nil {
		return 0, err // Not the source's failure: Save reports ctx's.
	}
	n, err := s.rd.ReadAt(p, off)
	if err == io.EOF && off+int64(n) < s.size && n < len(p) {
		err = fmt.Errorf("ended after %d of %d bytes: %w", off+int64(n), s.size, io.ErrUnexpectedEOF)
	}
	if err != nil && err != io.EOF {
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		s.mu.Unlock()
	}
	return n, err
}

// failure returns the first error of the caller's reader, if any.
func (s *source) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// exactReader reads the left bytes of a response body, failing with
// io.ErrUnexpectedEOF if it ends early and marking transport errors as
// transient. A negative left (a response without Content-Length) reads to
// the end of the body.
type exactReader struct {
	ctx  context.Context // Load's, to tell its end from a transport failure
	h    backend.Handle
	r    io.Reader
	left int64
}

func (r *exactReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if r.left > 0 && int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.r.Read(p)
	if r.left > 0 {
		r.left -= int64(n)
	}
	switch {
	case err == io.EOF && r.left > 0:
		return n, fmt.Errorf("s3: load %v: response ended %d bytes early: %w", r.h,
			r.left, &backend.TransientError{Err: io.ErrUnexpectedEOF})
	case err == io.EOF && r.left < 0:
		return n, io.EOF
	case err == io.EOF:
		return n, nil
	case err != nil:
		return n, classify(r.ctx, fmt.Sprintf("s3: load %v", r.h), "", err)
	}
	return n, nil
}
