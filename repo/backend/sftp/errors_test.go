package sftp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/retry"
	"github.com/imagobackup/imago/repo/backend/sftp"
	"github.com/imagobackup/imago/repo/backend/sftp/sftptest"
)

// newKey writes a fresh ed25519 key to a file and returns the file name and
// the public key.
func newKey(t *testing.T) (string, ssh.PublicKey) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "id_ed25519")
	return name, sftptest.WriteKey(t, name)
}

// checkConnectError checks that opening cfg fails with an error wrapping
// want, on one line containing every part of wantText, within limit, and
// that Create made nothing.
func checkConnectError(t *testing.T, cfg sftp.Config, want error, limit time.Duration, wantText ...string) {
	t.Helper()
	start := time.Now()
	be, err := sftp.Create(context.Background(), cfg)
	took := time.Since(start)
	if err == nil {
		be.Close()
		t.Fatalf("Create succeeded, want an error wrapping %v", want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("Create = %v, want an error wrapping %v", err, want)
	}
	if backend.IsTransient(err) {
		t.Errorf("Create = %v, marked transient", err)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans lines: %q", msg)
	}
	for _, s := range wantText {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not contain %q", msg, s)
		}
	}
	if took > limit {
		t.Errorf("Create took %v to fail, want at most %v", took, limit)
	}
	if _, err := os.Stat(cfg.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed Create left %s behind (%v)", cfg.Path, err)
	}
}

func TestConnectErrors(t *testing.T) {
	srv := sftptest.StartServer(t)
	repo := func(t *testing.T) string { return filepath.Join(t.TempDir(), "repo") }

	t.Run("wrong key", func(t *testing.T) {
		cfg := srv.Config(repo(t))
		cfg.IdentityFiles = []string{mustKey(t)}
		checkConnectError(t, cfg, sftp.ErrAuth, cfg.ConnectTimeout,
			"permission denied (publickey)", srv.User+"@"+srv.Addr(), cfg.IdentityFiles[0])
	})
	t.Run("no key at all", func(t *testing.T) {
		cfg := srv.Config(repo(t))
		cfg.IdentityFiles = []string{filepath.Join(t.TempDir(), "missing")}
		checkConnectError(t, cfg, sftp.ErrAuth, cfg.ConnectTimeout, "no key file found")
	})
	t.Run("passphrase-protected key", func(t *testing.T) {
		cfg := srv.Config(repo(t))
		// A throwaway key protected by the passphrase "imago-test".
		cfg.IdentityFiles = []string{filepath.Join("testdata", "encrypted_ed25519")}
		checkConnectError(t, cfg, sftp.ErrAuth, cfg.ConnectTimeout, "passphrase-protected "+cfg.IdentityFiles[0], "ssh-agent")
	})
	t.Run("host key mismatch", func(t *testing.T) {
		_, other := newKey(t)
		cfg := srv.Config(repo(t))
		cfg.KnownHostsFile = filepath.Join(t.TempDir(), "known_hosts")
		if err := os.WriteFile(cfg.KnownHostsFile, []byte(knownhosts.Line([]string{srv.Addr()}, other)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		checkConnectError(t, cfg, sftp.ErrHostKeyMismatch, cfg.ConnectTimeout,
			"host key mismatch for [127.0.0.1]:", ssh.FingerprintSHA256(srv.HostKey), cfg.KnownHostsFile+":1")
	})
	t.Run("unknown host", func(t *testing.T) {
		cfg := srv.Config(repo(t))
		cfg.KnownHostsFile = filepath.Join(t.TempDir(), "known_hosts") // Missing: knows nothing.
		checkConnectError(t, cfg, sftp.ErrUnknownHost, cfg.ConnectTimeout,
			"unknown host key for [127.0.0.1]:", ssh.FingerprintSHA256(srv.HostKey), "ssh-keyscan -p")
	})
	t.Run("closed port", func(t *testing.T) {
		cfg := srv.Config(repo(t))
		cfg.Port = closedPort(t)
		checkConnectError(t, cfg, sftp.ErrUnreachable, 2*time.Second, "connection refused")
	})
	t.Run("server that never answers", func(t *testing.T) {
		cfg := srv.Config(repo(t))
		cfg.Port = silentServer(t)
		cfg.ConnectTimeout = 500 * time.Millisecond
		checkConnectError(t, cfg, sftp.ErrUnreachable, 2*time.Second, "within 500ms")
	})
}

func mustKey(t *testing.T) string {
	name, _ := newKey(t)
	return name
}

// closedPort returns a port of 127.0.0.1 nothing listens on.
func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// silentServer accepts connections and never sends a byte.
func silentServer(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().(*net.TCPAddr).Port
}

func TestAcceptNewHostKey(t *testing.T) {
	srv := sftptest.StartServer(t)
	cfg := srv.Config(filepath.Join(t.TempDir(), "repo"))
	cfg.KnownHostsFile = filepath.Join(t.TempDir(), "ssh", "known_hosts")
	cfg.AcceptNewHostKey = true
	be, err := sftp.Create(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Create with AcceptNewHostKey: %v", err)
	}
	be.Close()
	b, err := os.ReadFile(cfg.KnownHostsFile)
	if err != nil || !strings.Contains(string(b), srv.KnownHosts) {
		t.Fatalf("known_hosts after accepting = %q (%v), want the line %q", b, err, srv.KnownHosts)
	}
	// Now known, the host is accepted strictly too.
	cfg.AcceptNewHostKey = false
	be, err = sftp.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open with the accepted key: %v", err)
	}
	be.Close()
}

// TestServerGone checks that a call on a server that went away fails
// quickly with a transient error, and that the backend reconnects once the
// server is back.
func TestServerGone(t *testing.T) {
	srv := sftptest.StartServer(t)
	be, _ := create(t, srv)
	ctx := context.Background()
	h := backend.Handle{Type: backend.Index, Name: "i1"}
	if err := be.Save(ctx, h, strings.NewReader("index"), 5); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	start := time.Now()
	_, err := be.Stat(ctx, h)
	if !backend.IsTransient(err) {
		t.Errorf("Stat with the server gone = %v, want a transient error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stat with the server gone took %v", d)
	}
	// The second call finds no idle connection and cannot dial.
	_, err = be.Stat(ctx, h)
	if !backend.IsTransient(err) || !errors.Is(err, sftp.ErrUnreachable) {
		t.Errorf("second Stat with the server gone = %v, want a transient error wrapping ErrUnreachable", err)
	}

	srv.Restart(t)
	fi, err := be.Stat(ctx, h)
	if err != nil || fi.Size != 5 {
		t.Errorf("Stat after the server came back = %+v, %v; want size 5", fi, err)
	}
}

// TestReconnect drops every connection of a busy backend behind the retry
// wrapper: the calls ride it out.
func TestReconnect(t *testing.T) {
	srv := sftptest.StartServer(t)
	be, _ := create(t, srv)
	rb := retry.New(be, retry.Options{BaseDelay: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond})
	ctx := context.Background()
	data := bytes.Repeat([]byte{7}, 256<<10)
	h := backend.Handle{Type: backend.Pack, Name: strings.Repeat("ef", 32)}
	if err := rb.Save(ctx, h, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	// Hold connections open, then restart the server under them.
	srv.Restart(t)
	got, err := backend.LoadAll(ctx, rb, h, nil)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("LoadAll after a server restart = %d bytes, %v; want the %d saved", len(got), err, len(data))
	}
	if err := rb.Save(ctx, h, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Save after a server restart: %v", err)
	}
}

// TestLoadCancelledMidRead cancels a Load while its callback reads: the
// callback's error wraps context.Canceled and the backend keeps working.
func TestLoadCancelledMidRead(t *testing.T) {
	srv := sftptest.StartServer(t)
	be, _ := create(t, srv)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	h := backend.Handle{Type: backend.Pack, Name: strings.Repeat("01", 32)}
	if err := be.Save(context.Background(), h, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		if _, err := io.ReadFull(rd, make([]byte, 100<<10)); err != nil {
			return err
		}
		cancel()
		_, err := io.ReadAll(rd)
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Load cancelled mid-read = %v, want an error wrapping context.Canceled", err)
	}
	got, err := backend.LoadAll(context.Background(), be, h, nil)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("LoadAll after a cancelled Load = %d bytes, %v", len(got), err)
	}
}

// TestConnectionsBound checks that no more calls run at once than
// Config.Connections.
func TestConnectionsBound(t *testing.T) {
	srv := sftptest.StartServer(t)
	cfg := srv.Config(filepath.Join(t.TempDir(), "repo"))
	cfg.Connections = 2
	be, err := sftp.Create(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	h := backend.Handle{Type: backend.Snapshot, Name: "s"}
	if err := be.Save(context.Background(), h, strings.NewReader("snap"), 4); err != nil {
		t.Fatal(err)
	}
	var running, most atomic.Int32
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			err := be.Load(context.Background(), h, 0, 0, func(rd io.Reader) error {
				n := running.Add(1)
				defer running.Add(-1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				time.Sleep(50 * time.Millisecond)
				_, err := io.ReadAll(rd)
				return err
			})
			if err != nil {
				t.Errorf("Load: %v", err)
			}
		})
	}
	wg.Wait()
	if got := most.Load(); got != 2 {
		t.Errorf("at most %d Loads ran at once, want exactly Connections = 2", got)
	}
}

// TestAgent authenticates with a key that only ssh-agent (SSH_AUTH_SOCK)
// holds.
func TestAgent(t *testing.T) {
	srv := sftptest.StartServer(t)
	b, err := os.ReadFile(srv.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = agent.ServeAgent(keyring, c) // Ends when the client hangs up.
			}()
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)

	cfg := srv.Config(filepath.Join(t.TempDir(), "repo"))
	cfg.IdentityFiles = []string{filepath.Join(t.TempDir(), "no-such-key")}
	cfg.IdentitiesOnly = false
	be, err := sftp.Create(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Create with the key in ssh-agent: %v", err)
	}
	be.Close()

	// IdentitiesOnly keeps the agent out.
	cfg.IdentitiesOnly = true
	if _, err := sftp.Open(context.Background(), cfg); !errors.Is(err, sftp.ErrAuth) {
		t.Errorf("Open with IdentitiesOnly and no key file = %v, want ErrAuth", err)
	}
}

// TestPermissionDenied runs against a server that refuses every change.
func TestPermissionDenied(t *testing.T) {
	srv := sftptest.StartServer(t)
	be, dir := create(t, srv)
	ctx := context.Background()
	h := backend.Handle{Type: backend.Snapshot, Name: "s1"}
	if err := be.Save(ctx, h, strings.NewReader("snap"), 4); err != nil {
		t.Fatal(err)
	}
	srv.ReadOnly = true
	srv.Restart(t)

	err := be.Save(ctx, backend.Handle{Type: backend.Snapshot, Name: "s2"}, strings.NewReader("snap"), 4)
	if !errors.Is(err, os.ErrPermission) || backend.IsTransient(err) ||
		!strings.Contains(err.Error(), "permission denied") || strings.Contains(err.Error(), "\n") {
		t.Errorf("Save on a read-only server = %v, want a one-line, permanent permission denied error", err)
	}
	if err := be.Remove(ctx, h); !errors.Is(err, os.ErrPermission) {
		t.Errorf("Remove on a read-only server = %v, want permission denied", err)
	}
	if got, err := backend.LoadAll(ctx, be, h, nil); err != nil || string(got) != "snap" {
		t.Errorf("Load on a read-only server = %q, %v; want the saved file", got, err)
	}
	if got := filesUnder(t, dir); !slices.Equal(got, []string{"snapshots/s1"}) {
		t.Errorf("files after refused changes = %v, want only snapshots/s1", got)
	}
	cfg := srv.Config(filepath.Join(t.TempDir(), "new"))
	if _, err := sftp.Create(ctx, cfg); !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("Create on a read-only server = %v, want permission denied", err)
	}
}
