package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/imageio"
)

// testImage is an image stored in a MemStore and its reader.
type testImage struct {
	store *snapshot.MemStore
	data  []byte
	r     *imageio.ReaderAt
}

// newTestImage stores n bytes of image-like data; n need not be a multiple
// of the overlay block.
func newTestImage(t *testing.T, n int, l func(snapshot.ChunkLoader) snapshot.ChunkLoader) *testImage {
	t.Helper()
	s := snapshot.NewMemStore()
	data := imageio.TestImage(n, 11)
	c, _, err := imageio.SaveTestContent(context.Background(), s, data, 16<<10, 64<<10, 11)
	if err != nil {
		t.Fatal(err)
	}
	var loader snapshot.ChunkLoader = s
	if l != nil {
		loader = l(s)
	}
	r := imageio.NewReaderAt(loader, c, int64(n), imageio.Options{})
	t.Cleanup(func() { r.Close() })
	return &testImage{store: s, data: data, r: r}
}

// serve runs Serve on a loopback port until the test ends and returns the
// address. The test fails if Serve returns anything but context.Canceled.
func serve(t *testing.T, exports map[string]Export, opts Options) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, exports, opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Serve returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context was cancelled")
		}
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr, name string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantErrno(t *testing.T, what string, err error, errno uint32) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Errno != errno {
		t.Errorf("%s: err %v, want server error %d", what, err, errno)
	}
}

func TestHandshakeAndReads(t *testing.T) {
	img := newTestImage(t, 3<<20+1234, nil)
	addr := serve(t, map[string]Export{"disk.img": {Data: img.r, Size: int64(len(img.data))}}, Options{})

	c := dial(t, addr, "") // the only export is the default
	if c.Size() != int64(len(img.data)) {
		t.Errorf("size %d, want %d", c.Size(), len(img.data))
	}
	if c.Flags()&FlagReadOnly == 0 || c.Flags()&FlagHasFlags == 0 {
		t.Errorf("flags %#x: not advertised read-only", c.Flags())
	}
	if c.BlockSize != [3]uint32{1, 4096, 32 << 20} {
		t.Errorf("block sizes %v", c.BlockSize)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 300 {
		n := 1 + rng.IntN(300<<10)
		off := rng.Int64N(int64(len(img.data) - n))
		buf := make([]byte, n)
		if _, err := c.ReadAt(buf, off); err != nil {
			t.Fatalf("read %d at %d: %v", n, off, err)
		}
		if !bytes.Equal(buf, img.data[off:off+int64(n)]) {
			t.Fatalf("read %d at %d differs from the image", n, off)
		}
	}
	// The last bytes, and a read past the end (EINVAL, connection alive).
	buf := make([]byte, 1234)
	if _, err := c.ReadAt(buf, int64(len(img.data)-1234)); err != nil || !bytes.Equal(buf, img.data[len(img.data)-1234:]) {
		t.Fatalf("read of the tail: %v", err)
	}
	_, err := c.ReadAt(buf, int64(len(img.data)-100))
	wantErrno(t, "read past the end", err, errInval)
	if _, err := c.ReadAt(buf[:10], 0); err != nil {
		t.Fatalf("read after a refused one: %v", err)
	}

	named := dial(t, addr, "disk.img")
	if named.Size() != c.Size() {
		t.Errorf("export by name: size %d", named.Size())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Dial(ctx, addr, "other"); err == nil || !strings.Contains(err.Error(), "refused export") {
		t.Errorf("unknown export: %v", err)
	}
}

// rawHandshake opens a connection and sends the client flags.
func rawHandshake(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var hello [18]byte
	if _, err := io.ReadFull(conn, hello[:]); err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint16(hello[16:]); got != flagFixedNewstyle|flagNoZeroes {
		t.Errorf("handshake flags %#x", got)
	}
	if _, err := conn.Write([]byte{0, 0, 0, 1}); err != nil { // fixed newstyle, zeroes wanted
		t.Fatal(err)
	}
	return conn
}

func TestListExportNameAndAbort(t *testing.T) {
	img := newTestImage(t, 1<<20, nil)
	e := Export{Data: img.r, Size: int64(len(img.data))}
	addr := serve(t, map[string]Export{"b": e, "a": e}, Options{DefaultExport: "a"})

	conn := rawHandshake(t, addr)
	c := &Client{conn: conn}
	if err := c.sendOption(optList, nil); err != nil {
		t.Fatal(err)
	}
	var names []string
	for {
		typ, p, err := c.readOptReply(optList)
		if err != nil {
			t.Fatal(err)
		}
		if typ == repAck {
			break
		}
		if typ != repServer || len(p) < 4 {
			t.Fatalf("list reply %#x %q", typ, p)
		}
		names = append(names, string(p[4:4+binary.BigEndian.Uint32(p)]))
	}
	if strings.Join(names, ",") != "a,b" {
		t.Errorf("listed %v, want [a b]", names)
	}
	// Structured replies are not offered: the option is refused and the
	// negotiation goes on.
	if err := c.sendOption(optStructuredReply, nil); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := c.readOptReply(optStructuredReply); err != nil || typ != repErrUnsup {
		t.Errorf("structured reply option: %#x %v", typ, err)
	}
	// The old NBD_OPT_EXPORT_NAME: size, flags and 124 zero bytes.
	if err := c.sendOption(optExportName, []byte("b")); err != nil {
		t.Fatal(err)
	}
	var reply [10 + 124]byte
	if _, err := io.ReadFull(conn, reply[:]); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint64(reply[:]) != uint64(len(img.data)) || binary.BigEndian.Uint16(reply[8:])&FlagReadOnly == 0 {
		t.Errorf("export name reply %x", reply[:10])
	}
	buf := make([]byte, 4096)
	if _, err := c.ReadAt(buf, 8192); err != nil || !bytes.Equal(buf, img.data[8192:8192+4096]) {
		t.Errorf("read after NBD_OPT_EXPORT_NAME: %v", err)
	}

	conn = rawHandshake(t, addr)
	c = &Client{conn: conn}
	if err := c.sendOption(optAbort, nil); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := c.readOptReply(optAbort); err != nil || typ != repAck {
		t.Errorf("abort: %#x %v", typ, err)
	}
	if _, err := conn.Read(buf); err != io.EOF {
		t.Errorf("connection open after abort: %v", err)
	}
}

func TestWritesRefusedReadOnly(t *testing.T) {
	img := newTestImage(t, 1<<20, nil)
	addr := serve(t, map[string]Export{"": {Data: img.r, Size: int64(len(img.data))}}, Options{})
	c := dial(t, addr, "")
	_, err := c.WriteAt(make([]byte, 4096), 0)
	wantErrno(t, "write", err, errPerm)
	wantErrno(t, "trim", c.Trim(0, 4096), errPerm)
	if err := c.Flush(); err != nil {
		t.Errorf("flush of a read-only export: %v", err)
	}
	buf := make([]byte, 4096)
	if _, err := c.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, img.data[:4096]) {
		t.Errorf("read after refused writes: %v (image changed: %v)", err, !bytes.Equal(buf, img.data[:4096]))
	}
}

// gatedLoader blocks data-chunk loads until its gate is closed (or the
// load's context ends) and counts loads cancelled that way.
type gatedLoader struct {
	snapshot.ChunkLoader
	gate      chan struct{}
	started   chan struct{}
	mu        sync.Mutex
	cancelled int
}

func (l *gatedLoader) LoadChunk(ctx context.Context, h chunk.Handle, buf []byte) ([]byte, error) {
	if h.Kind == chunk.KindData {
		select {
		case l.started <- struct{}{}:
		default:
		}
		select {
		case <-l.gate:
		case <-ctx.Done():
			l.mu.Lock()
			l.cancelled++
			l.mu.Unlock()
			return nil, ctx.Err()
		}
	}
	return l.ChunkLoader.LoadChunk(ctx, h, buf)
}

func TestDisconnectMidReadKeepsServing(t *testing.T) {
	gl := &gatedLoader{gate: make(chan struct{}), started: make(chan struct{}, 1)}
	img := newTestImage(t, 2<<20, func(l snapshot.ChunkLoader) snapshot.ChunkLoader { gl.ChunkLoader = l; return gl })
	var logMu sync.Mutex
	var logs []string
	addr := serve(t, map[string]Export{"": {Data: img.r, Size: int64(len(img.data))}}, Options{
		Logf: func(format string, args ...any) {
			logMu.Lock()
			defer logMu.Unlock()
			logs = append(logs, format)
		},
	})

	// Client A asks for 1 MiB, waits until the server is loading it, and
	// hangs up.
	a := dial(t, addr, "")
	a.mu.Lock()
	if err := a.writeRequest(cmdRead, 0, 512<<10, 1<<20, nil); err != nil {
		t.Fatal(err)
	}
	a.mu.Unlock()
	select {
	case <-gl.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the server never started loading")
	}
	a.conn.Close()

	// The abandoned load is cancelled, not left running.
	deadline := time.Now().Add(10 * time.Second)
	for {
		gl.mu.Lock()
		n := gl.cancelled
		gl.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the load of a disconnected client was not cancelled")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Client B is served as before.
	close(gl.gate)
	b := dial(t, addr, "")
	buf := make([]byte, 64<<10)
	if _, err := b.ReadAt(buf, 512<<10); err != nil || !bytes.Equal(buf, img.data[512<<10:576<<10]) {
		t.Fatalf("read after another client disconnected: %v", err)
	}

	// A client speaking garbage is dropped alone too.
	conn := rawHandshake(t, addr)
	conn.Write(bytes.Repeat([]byte{0xff}, 64))
	// The server hangs up: EOF, or a reset because it did not read all.
	if _, err := io.ReadAll(conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("garbage client: %v", err)
	}
	if _, err := b.ReadAt(buf, 0); err != nil {
		t.Fatalf("read after a garbage client: %v", err)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if len(logs) == 0 {
		t.Error("nothing logged about the failed clients")
	}
}

func TestConcurrentClients(t *testing.T) {
	img := newTestImage(t, 4<<20, nil)
	addr := serve(t, map[string]Export{"": {Data: img.r, Size: int64(len(img.data))}}, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		c := dial(t, addr, "")
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			for range 100 {
				n := 4096 << rng.IntN(6)
				off := rng.Int64N(int64(len(img.data) - n))
				buf := make([]byte, n)
				if _, err := c.ReadAt(buf, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, img.data[off:off+int64(n)]) {
					errs <- errors.New("wrong bytes")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
