package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/imagobackup/imago/repo/backend"
)

// Defaults for the zero fields of Options. Ten attempts with pauses of
// 0.1, 0.2, 0.4 … s capped at 10 s wait up to about 40 s in all: long
// enough to ride out a restarting server or a dropped connection, short
// enough that a dead server is reported within a minute.
const (
	DefaultMaxAttempts = 10
	DefaultBaseDelay   = 100 * time.Millisecond
	DefaultMaxDelay    = 10 * time.Second
)

// Options tunes the retries. Zero fields take the defaults above.
type Options struct {
	// MaxAttempts is how many times a call is made at most, the first
	// one included.
	MaxAttempts int
	// BaseDelay is the pause before the second attempt; each further
	// pause doubles, up to MaxDelay. Every pause is drawn at random
	// between half and all of that value, so that clients failing
	// together do not retry together.
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// Sleep pauses for d or until ctx is done, returning ctx.Err() then.
	// Tests replace it to run without waiting; nil means a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Notify, if set, is called before each pause with the failed
	// operation, the attempt that failed (1 for the first) and its error,
	// e.g. to log retries. It is called on the goroutine of the call.
	Notify func(op string, h backend.Handle, attempt int, err error)
}

// retrier retries the calls of the backend it wraps.
type retrier struct {
	be   backend.Backend
	opts Options
}

var _ backend.Backend = (*retrier)(nil)

// New wraps be with retries as opts describes.
func New(be backend.Backend, opts Options) backend.Backend {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.BaseDelay <= 0 {
		opts.BaseDelay = DefaultBaseDelay
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	if opts.MaxDelay < opts.BaseDelay {
		opts.MaxDelay = opts.BaseDelay
	}
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	return &retrier{be: be, opts: opts}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryable reports whether err may go away when the call is made again.
func retryable(err error) bool {
	return backend.IsTransient(err) &&
		!errors.Is(err, backend.ErrNotExist) &&
		!errors.Is(err, context.Canceled) &&
		!errors.Is(err, context.DeadlineExceeded)
}

// delay returns the pause after the given failed attempt (1 for the first):
// BaseDelay·2^(attempt-1), capped at MaxDelay, times a random factor in
// [0.5, 1].
func (b *retrier) delay(attempt int) time.Duration {
	d := b.opts.MaxDelay
	if shift := attempt - 1; shift < 32 && b.opts.BaseDelay<<shift < b.opts.MaxDelay {
		d = b.opts.BaseDelay << shift
	}
	return d/2 + rand.N(d/2+1)
}

// do calls op until it succeeds, fails for good, or the attempts run out.
// op returns its error and whether that error may be retried.
func (b *retrier) do(ctx context.Context, name string, h backend.Handle, op func() (bool, error)) error {
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		again, err := op()
		if err == nil || !again {
			return err
		}
		if attempt >= b.opts.MaxAttempts {
			return fmt.Errorf("retry: %s %v: giving up after %d attempts: %w", name, h, attempt, err)
		}
		if b.opts.Notify != nil {
			b.opts.Notify(name, h, attempt, err)
		}
		if err := b.opts.Sleep(ctx, b.delay(attempt)); err != nil {
			return err
		}
	}
}

// Location returns the location of the wrapped backend.
func (b *retrier) Location() string { return b.be.Location() }

// Save saves rd, reading it again from offset 0 on every attempt.
func (b *retrier) Save(ctx context.Context, h backend.Handle, rd io.ReaderAt, size int64) error {
	return b.do(ctx, "save", h, func() (bool, error) {
		err := b.be.Save(ctx, h, rd, size)
		return retryable(err), err
	})
}

// Load loads h, retrying failures before fn ran and transient errors of fn.
func (b *retrier) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	return b.do(ctx, "load", h, func() (bool, error) {
		called := false
		var fnErr error
		err := b.be.Load(ctx, h, length, offset, func(rd io.Reader) error {
			called = true
			fnErr = fn(rd)
			return fnErr
		})
		if called {
			return fnErr != nil && retryable(fnErr), err
		}
		return retryable(err), err
	})
}

// Stat returns the size of h.
func (b *retrier) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	var fi backend.FileInfo
	err := b.do(ctx, "stat", h, func() (bool, error) {
		var err error
		fi, err = b.be.Stat(ctx, h)
		return retryable(err), err
	})
	return fi, err
}

// List lists the files of type t, retrying only until fn is first called.
func (b *retrier) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	return b.do(ctx, "list", backend.Handle{Type: t}, func() (bool, error) {
		called := false
		err := b.be.List(ctx, t, func(fi backend.FileInfo) error {
			called = true
			return fn(fi)
		})
		return !called && retryable(err), err
	})
}

// Remove removes h.
func (b *retrier) Remove(ctx context.Context, h backend.Handle) error {
	return b.do(ctx, "remove", h, func() (bool, error) {
		err := b.be.Remove(ctx, h)
		return retryable(err), err
	})
}

// Close closes the wrapped backend.
func (b *retrier) Close() error { return b.be.Close() }
