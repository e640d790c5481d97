package sftp_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/sftp"
	"github.com/imagobackup/imago/repo/backend/sftp/sftptest"
)

// freezingProxy forwards TCP connections to target until frozen; frozen,
// it stops forwarding in both directions without closing anything, like a
// server or network that went silent.
type freezingProxy struct {
	l      net.Listener
	target string
	frozen atomic.Bool
	done   chan struct{} // closed at cleanup

	// mu guards conns.
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, target string) *freezingProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezingProxy{l: l, target: target, done: make(chan struct{})}
	go p.serve()
	t.Cleanup(func() {
		close(p.done)
		l.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

func (p *freezingProxy) port() int { return p.l.Addr().(*net.TCPAddr).Port }

func (p *freezingProxy) serve() {
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

// pipe copies src to dst while not frozen; frozen, it holds what it read.
func (p *freezingProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.frozen.Load() {
			select {
			case <-p.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				dst.Close()
			}
			return
		}
	}
}

// TestSilentServer checks that a call on a connection whose server stopped
// answering fails within the keepalive bound with a transient error,
// instead of hanging, and that the backend recovers.
func TestSilentServer(t *testing.T) {
	srv := sftptest.StartServer(t)
	proxy := startProxy(t, srv.Addr())
	cfg := srv.Config(filepath.Join(t.TempDir(), "repo"))
	cfg.Port = proxy.port()
	cfg.ConnectTimeout = time.Second
	cfg.KnownHostsFile = filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{net.JoinHostPort("127.0.0.1", strconv.Itoa(proxy.port()))}, srv.HostKey)
	if err := os.WriteFile(cfg.KnownHostsFile, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sftp.SetKeepalive(&cfg, 100*time.Millisecond)
	be, err := sftp.Create(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	h := backend.Handle{Type: backend.Lock, Name: "l1"}
	if err := be.Save(context.Background(), h, strings.NewReader("lock"), 4); err != nil {
		t.Fatal(err)
	}

	proxy.frozen.Store(true)
	start := time.Now()
	_, err = be.Stat(context.Background(), h)
	took := time.Since(start)
	proxy.frozen.Store(false)
	if !backend.IsTransient(err) {
		t.Errorf("Stat on a silent server = %v, want a transient error", err)
	}
	// Keepalive interval + ConnectTimeout, with slack for the race
	// detector.
	if took > 3*time.Second {
		t.Errorf("Stat on a silent server took %v, want about 1.1 s", took)
	}
	if fi, err := be.Stat(context.Background(), h); err != nil || fi.Size != 4 {
		t.Errorf("Stat once the server answers again = %+v, %v", fi, err)
	}
}
