package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"time"
)

// Export is one image served under a name.
type Export struct {
	// Data holds the image bytes. When it also implements
	// ContextReaderAt, a read is cancelled when its client disconnects.
	Data io.ReaderAt
	// Size is the image length in bytes.
	Size int64
	// Description is shown to clients that ask for it (NBD_INFO_DESCRIPTION).
	Description string
	// Overlay, when set, makes the export writable: writes go to the
	// overlay and reads see them; Data is only ever read. Its base must be
	// Data. nil serves the export read-only.
	Overlay *Overlay
}

// ContextReaderAt is implemented by image readers whose reads can be
// cancelled (imageio.ReaderAt).
type ContextReaderAt interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

// flags returns the transmission flags advertised for e. Both kinds allow
// several connections: reads are consistent across them, and a flush
// syncs the shared overlay, covering writes done on every connection.
func (e *Export) flags() uint16 {
	if e.Overlay == nil {
		return FlagHasFlags | FlagReadOnly | FlagCanMultiConn
	}
	return FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendWriteZeroes | FlagCanMultiConn
}

// Defaults of Options.
const (
	// DefaultMaxConns bounds the connections served at once; more wait in
	// the listen backlog. Each costs two goroutines and at most
	// DefaultMaxRequests request buffers.
	DefaultMaxConns = 64
	// DefaultMaxRequests bounds the requests one connection handles at
	// once. Clients such as nbdcopy keep 16–64 requests in flight; 16
	// overlap enough chunk loads to keep two cores busy.
	DefaultMaxRequests = 16
	// maxConnBytes bounds the payload bytes of one connection's requests in
	// flight (read buffers and write data): 16 4-KiB requests need 64 KiB,
	// 16 of nbdcopy's 256 KiB requests 4 MiB, and one maximal request
	// fits. The server holds at most DefaultMaxConns × 64 MiB.
	maxConnBytes = 64 << 20
	// handshakeTimeout bounds the negotiation phase, so that a client that
	// connects and says nothing does not hold a connection slot forever.
	handshakeTimeout = 30 * time.Second
)

// Options configure Serve.
type Options struct {
	// DefaultExport names the export served to clients asking for the
	// empty name (nbdinfo nbd://host/). When empty and there is exactly
	// one export, that one is the default.
	DefaultExport string
	// MaxConns bounds the connections served at once (0: DefaultMaxConns).
	MaxConns int
	// MaxRequests bounds the requests in flight per connection (0:
	// DefaultMaxRequests).
	MaxRequests int
	// Logf, when set, receives one line per error: a failed read or
	// write, a client that broke the protocol or went away mid-request.
	// It may be called from many goroutines at once.
	Logf func(format string, args ...any)
	// Tracef, when set, receives one line per client that connects or
	// disconnects cleanly. It may be called from many goroutines at once.
	Tracef func(format string, args ...any)
}

// Serve accepts NBD clients on ln and serves them the exports until ctx
// ends, then closes ln and every connection, waits for their goroutines and
// returns ctx.Err(). An error of ln.Accept other than a temporary one ends
// Serve with that error. A client's failure (a protocol error, a
// disconnect mid-request, a failing read) ends that client's connection
// only. Exports must not change while Serve runs.
func Serve(ctx context.Context, ln net.Listener, exports map[string]Export, opts Options) error {
	if len(exports) == 0 {
		return errors.New("nbd: no exports")
	}
	s := &server{exports: exports, opts: opts}
	if s.opts.MaxConns <= 0 {
		s.opts.MaxConns = DefaultMaxConns
	}
	if s.opts.MaxRequests <= 0 {
		s.opts.MaxRequests = DefaultMaxRequests
	}
	if s.opts.DefaultExport == "" && len(exports) == 1 {
		for name := range exports {
			s.opts.DefaultExport = name
		}
	}
	for name := range exports {
		s.names = append(s.names, name)
	}
	sort.Strings(s.names)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	slots := make(chan struct{}, s.opts.MaxConns)
	var delay time.Duration
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		conn, err := ln.Accept()
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: back off as
				// net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return ctx.Err()
				}
				continue
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		delay = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			s.serveConn(ctx, conn)
		}()
	}
}

type server struct {
	exports map[string]Export
	names   []string // export names, sorted, for NBD_OPT_LIST
	opts    Options
}

func (s *server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

func (s *server) tracef(format string, args ...any) {
	if s.opts.Tracef != nil {
		s.opts.Tracef(format, args...)
	}
}

// lookup returns the export a client named.
func (s *server) lookup(name string) (*Export, string, bool) {
	if name == "" {
		name = s.opts.DefaultExport
	}
	e, ok := s.exports[name]
	return &e, name, ok
}

// serveConn runs one client's handshake and transmission phase and closes
// the connection.
func (s *server) serveConn(ctx context.Context, conn net.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	peer := conn.RemoteAddr().String()

	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	e, name, err := s.handshake(conn)
	if err != nil {
		if !errors.Is(err, errAborted) && ctx.Err() == nil {
			s.logf("nbd: client %s: handshake: %v", peer, err)
		}
		return
	}
	conn.SetDeadline(time.Time{})
	s.tracef("nbd: client %s: connected to export %q", peer, name)
	t := &transmission{s: s, e: e, conn: conn, peer: peer,
		slots: make(chan struct{}, s.opts.MaxRequests), budget: newBudget(maxConnBytes)}
	err = t.run(ctx)
	switch {
	case err == nil:
		s.tracef("nbd: client %s: disconnected", peer)
	case ctx.Err() != nil && !errors.Is(err, errConnFailed):
		// Server shutdown: nothing to report.
	default:
		s.logf("nbd: client %s: %v", peer, err)
	}
}
