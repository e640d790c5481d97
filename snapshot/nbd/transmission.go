package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"golang.org/x/sync/semaphore"
)

// errConnFailed wraps errors of the connection itself (a reply that could
// not be written), as opposed to the client closing it.
var errConnFailed = errors.New("connection failed")

// request is one transmission-phase request.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
	data   []byte // write payload
}

// transmission is the transmission phase of one connection. A reader loop
// decodes requests and hands each to a goroutine; at most cap(slots)
// requests and budget bytes are in flight.
type transmission struct {
	s      *server
	e      *Export
	conn   net.Conn
	peer   string
	slots  chan struct{}
	budget *semaphore.Weighted

	wmu sync.Mutex // serializes replies on conn
}

func newBudget(n int64) *semaphore.Weighted { return semaphore.NewWeighted(n) }

// run serves requests until the client disconnects (nil), the connection
// fails, or ctx ends. It waits for the requests in flight before returning.
func (t *transmission) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	// Cancelled before the wait: requests of a client that went away stop
	// their chunk loads instead of finishing reads nobody will receive.
	defer cancel(nil)
	var hdr [28]byte
	for {
		if _, err := io.ReadFull(t.conn, hdr[:]); err != nil {
			if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
				return cause
			}
			if errors.Is(err, io.EOF) {
				return errors.New("closed without NBD_CMD_DISC")
			}
			return fmt.Errorf("read request: %w", err)
		}
		if m := binary.BigEndian.Uint32(hdr[0:]); m != magicRequest {
			return fmt.Errorf("bad request magic %#x", m)
		}
		r := &request{
			flags:  binary.BigEndian.Uint16(hdr[4:]),
			typ:    binary.BigEndian.Uint16(hdr[6:]),
			cookie: binary.BigEndian.Uint64(hdr[8:]),
			offset: binary.BigEndian.Uint64(hdr[16:]),
			length: binary.BigEndian.Uint32(hdr[24:]),
		}
		if r.typ == cmdDisc {
			// Finish what is in flight, then close (the protocol's
			// soft disconnect).
			wg.Wait()
			return nil
		}
		// The budget a request holds: its read buffer or write payload.
		cost := int64(0)
		if r.typ == cmdRead || r.typ == cmdWrite {
			if r.length > maxPayload {
				if r.typ == cmdWrite {
					// The payload cannot be skipped safely: close.
					return fmt.Errorf("write of %d bytes, more than %d", r.length, maxPayload)
				}
				if err := t.reply(r.cookie, errInval, nil); err != nil {
					return err
				}
				continue
			}
			cost = int64(r.length)
		}
		select {
		case t.slots <- struct{}{}:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		if err := t.budget.Acquire(ctx, cost); err != nil {
			<-t.slots
			return context.Cause(ctx)
		}
		if r.typ == cmdWrite {
			r.data = make([]byte, r.length)
			if _, err := io.ReadFull(t.conn, r.data); err != nil {
				t.budget.Release(cost)
				<-t.slots
				return fmt.Errorf("read write payload: %w", err)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-t.slots }()
			defer t.budget.Release(cost)
			if err := t.handle(ctx, r); err != nil {
				// The reply could not be written: end the connection,
				// which also stops the reader loop and other requests.
				cancel(fmt.Errorf("%w: %v", errConnFailed, err))
				t.conn.Close()
			}
		}()
	}
}

// handle serves one request and writes its reply. It returns an error only
// when the reply could not be written.
func (t *transmission) handle(ctx context.Context, r *request) error {
	size := uint64(t.e.Size)
	inRange := r.offset <= size && uint64(r.length) <= size-r.offset
	ov := t.e.Overlay
	switch r.typ {
	case cmdRead:
		if !inRange {
			return t.reply(r.cookie, errInval, nil)
		}
		buf := make([]byte, r.length)
		var err error
		switch {
		case ov != nil:
			_, err = ov.ReadAtContext(ctx, buf, int64(r.offset))
		default:
			_, err = readAt(ctx, t.e.Data, buf, int64(r.offset))
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err() // the connection is going away
			}
			t.s.logf("nbd: client %s: read %d bytes at %d: %v", t.peer, r.length, r.offset, err)
			return t.reply(r.cookie, errIO, nil)
		}
		return t.reply(r.cookie, 0, buf)
	case cmdWrite, cmdWriteZeroes:
		if ov == nil {
			return t.reply(r.cookie, errPerm, nil)
		}
		if !inRange {
			return t.reply(r.cookie, errNoSpc, nil)
		}
		var err error
		if r.typ == cmdWrite {
			_, err = ov.WriteAt(r.data, int64(r.offset))
		} else {
			err = ov.WriteZeroes(int64(r.offset), int64(r.length))
		}
		if err == nil && r.flags&cmdFlagFUA != 0 {
			err = ov.Flush()
		}
		if err != nil {
			t.s.logf("nbd: client %s: write %d bytes at %d: %v", t.peer, r.length, r.offset, err)
			return t.reply(r.cookie, errIO, nil)
		}
		return t.reply(r.cookie, 0, nil)
	case cmdFlush:
		if ov != nil {
			if err := ov.Flush(); err != nil {
				t.s.logf("nbd: client %s: flush: %v", t.peer, err)
				return t.reply(r.cookie, errIO, nil)
			}
		}
		return t.reply(r.cookie, 0, nil)
	case cmdTrim:
		if ov == nil {
			return t.reply(r.cookie, errPerm, nil)
		}
		return t.reply(r.cookie, errInval, nil) // not advertised
	default:
		// NBD_CMD_CACHE, BLOCK_STATUS and unknown commands: not advertised.
		return t.reply(r.cookie, errInval, nil)
	}
}

// readAt reads len(p) bytes at off from d, with ctx when d supports it.
func readAt(ctx context.Context, d io.ReaderAt, p []byte, off int64) (int, error) {
	var n int
	var err error
	if c, ok := d.(ContextReaderAt); ok {
		n, err = c.ReadAtContext(ctx, p, off)
	} else {
		n, err = d.ReadAt(p, off)
	}
	if n == len(p) && errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}

// reply writes a simple reply, with data for a successful read.
func (t *transmission) reply(cookie uint64, errno uint32, data []byte) error {
	var hdr [16]byte
	binary.BigEndian.PutUint32(hdr[0:], magicSimple)
	binary.BigEndian.PutUint32(hdr[4:], errno)
	binary.BigEndian.PutUint64(hdr[8:], cookie)
	bufs := net.Buffers{hdr[:]}
	if errno == 0 && len(data) > 0 {
		bufs = append(bufs, data)
	}
	// The socket write happens under the lock: it is what the lock
	// serializes, so that replies never interleave.
	t.wmu.Lock()
	defer t.wmu.Unlock()
	_, err := bufs.WriteTo(t.conn)
	return err
}
