package sftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"github.com/pkg/sftp"

	"github.com/imagobackup/imago/repo/backend"
)

// pool lends connections to one call at a time. At most cap(slots)
// connections exist; they are dialled when first needed and replaced when
// they break.
type pool struct {
	cfg  Config
	dial func(ctx context.Context, cfg Config) (*conn, error)

	// slots holds one token per connection that may be in use; a call
	// takes a token before it takes or dials a connection.
	slots chan struct{}

	// mu guards the fields below it.
	mu     sync.Mutex
	idle   []*conn
	closed bool
}

func newPool(cfg Config, first *conn) *pool {
	p := &pool{cfg: cfg, dial: dial, slots: make(chan struct{}, cfg.Connections)}
	p.idle = append(p.idle, first)
	return p
}

// errClosed is returned by the calls of a closed backend.
var errClosed = errors.New("sftp: backend is closed")

// get returns a connection for the caller's exclusive use until put. It
// waits for a free slot, reuses an idle connection that is still alive or
// dials a new one. A failed dial of an unreachable server is a
// backend.TransientError; authentication and host key errors are not.
func (p *pool) get(ctx context.Context) (*conn, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			<-p.slots
			return nil, errClosed
		}
		var c *conn
		if n := len(p.idle); n > 0 {
			c, p.idle = p.idle[n-1], p.idle[:n-1]
		}
		p.mu.Unlock()
		if c == nil {
			break
		}
		if !c.isDead() {
			return c, nil
		}
		c.close() // Dropped while idle (a server restart): dial anew.
	}
	c, err := p.dial(ctx, p.cfg)
	if err != nil {
		<-p.slots
		if errors.Is(err, ErrUnreachable) {
			return nil, &backend.TransientError{Err: err}
		}
		return nil, err
	}
	return c, nil
}

// put gives c back, closing it instead if it is broken.
func (p *pool) put(c *conn, broken bool) {
	p.mu.Lock()
	if broken || p.closed || c.isDead() {
		p.mu.Unlock()
		c.close()
	} else {
		p.idle = append(p.idle, c)
		p.mu.Unlock()
	}
	<-p.slots
}

// close closes the idle connections and makes later gets fail; connections
// in use are closed when they are put back.
func (p *pool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// do runs op on a pooled connection. Cancelling ctx closes the connection,
// which ends a blocked SFTP request; the error then wraps ctx.Err(). An
// error of the connection itself (it dropped) is wrapped in a
// backend.TransientError and the connection replaced; errors the server
// answered with (no such file, permission denied) are returned as they
// are, and so is the error of a *passError, unwrapped.
func (p *pool) do(ctx context.Context, op func(c *conn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := p.get(ctx)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, c.close)
	err = op(c)
	cancelled := !stop()
	if pe, ok := err.(*passError); ok {
		p.put(c, cancelled || pe.broken)
		return pe.err
	}
	broken := cancelled || (err != nil && isConnError(c, err))
	p.put(c, broken)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	case broken:
		return &backend.TransientError{Err: fmt.Errorf("connection to %s lost: %w", p.cfg.addr(), err)}
	}
	return err
}

// passError carries an error that is not the connection's (a Load
// callback's) through pool.do unchanged; broken tells whether the
// connection failed meanwhile.
type passError struct {
	err    error
	broken bool
}

func (e *passError) Error() string { return e.err.Error() }

// sourceError is a failure to read the data a Save was given: the
// connection is not to blame.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return "read source: " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// isConnError reports whether err, returned by a call on c, means that c
// cannot be used any more, as opposed to an answer of the server or a
// failing source.
func isConnError(c *conn, err error) bool {
	if errors.Is(err, sftp.ErrSSHFxConnectionLost) || c.isDead() {
		return true
	}
	// A bare io.EOF is a read at the end of a file; an EOF that pkg/sftp
	// wrapped ("failed to send packet: EOF") is the channel gone, even
	// before c notices that the connection died.
	// (A failing source's EOF is the source's, not the channel's.)
	var srcErr *sourceError
	if errors.Is(err, io.EOF) && err != io.EOF && !errors.As(err, &srcErr) { //nolint:errorlint // the bare value is the point
		return true
	}
	var se *sftp.StatusError
	var src *sourceError
	var re *rangeError
	switch {
	case errors.As(err, &se),
		errors.As(err, &src),
		errors.As(err, &re),
		errors.Is(err, fs.ErrNotExist),
		errors.Is(err, fs.ErrPermission),
		errors.Is(err, io.EOF), // A read at the end of a file.
		errors.Is(err, io.ErrUnexpectedEOF):
		return false
	}
	// Anything else (a write to a closed channel, a protocol error) is
	// not an answer of the server: start over on a new connection.
	return true
}
