// Package sftptest runs a real OpenSSH sshd on 127.0.0.1 for tests of the
// SFTP backend and of commands that use it.
//
// StartServer needs /usr/sbin/sshd (Debian's openssh-server, installed by
// scripts/install-test-deps.sh). When it is missing or does not start, the
// test fails with the reason, unless the environment sets IMAGO_TEST_SFTP=0,
// which skips it.
package sftptest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/imagobackup/imago/repo/backend/sftp"
)

// SSHD is the OpenSSH server binary.
const SSHD = "/usr/sbin/sshd"

// startTimeout bounds the wait for sshd to accept connections; it starts in
// ~50 ms here.
const startTimeout = 10 * time.Second

// Server is a running sshd that accepts the current user with a throwaway
// key.
type Server struct {
	Host string // "127.0.0.1"
	Port int
	User string // the current user
	// KeyFile is the private key (OpenSSH format, no passphrase) that the
	// server accepts for User.
	KeyFile string
	// KnownHosts is a known_hosts line for the server's host key, and
	// KnownHostsFile a file holding it.
	KnownHosts     string
	KnownHostsFile string
	// HostKey is the server's public host key.
	HostKey ssh.PublicKey
	// ReadOnly, set before Restart, makes the SFTP server refuse every
	// change with "permission denied" (internal-sftp -R).
	ReadOnly bool

	dir  string
	conf string

	// mu guards cmd and log.
	mu  sync.Mutex
	cmd *exec.Cmd
	log *syncBuffer
}

// StartServer starts sshd on a free port of 127.0.0.1 in the foreground
// (-D -e), with a fresh ed25519 host key and user key under t.TempDir(),
// public-key authentication only, and the in-process SFTP server. It stops
// sshd and every session process at t's cleanup; sshd's log is printed if
// t failed.
func StartServer(t testing.TB) *Server {
	t.Helper()
	if os.Getenv("IMAGO_TEST_SFTP") == "0" {
		t.Skip("IMAGO_TEST_SFTP=0: SFTP tests against sshd are switched off")
	}
	if _, err := os.Stat(SSHD); err != nil {
		t.Fatalf("sftptest: %s is missing (%v): run scripts/install-test-deps.sh, or set IMAGO_TEST_SFTP=0 to skip", SSHD, err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("sftptest: current user: %v", err)
	}
	if u.Uid == "0" {
		// sshd running as root insists on its privilege separation folder.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("sftptest: mkdir /run/sshd: %v", err)
		}
	}
	dir := t.TempDir()
	s := &Server{Host: "127.0.0.1", User: u.Username, dir: dir, conf: filepath.Join(dir, "sshd_config")}

	hostKey := WriteKey(t, filepath.Join(dir, "host_ed25519"))
	s.HostKey = hostKey
	userKey := WriteKey(t, filepath.Join(dir, "user_ed25519"))
	s.KeyFile = filepath.Join(dir, "user_ed25519")
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(userKey), 0o600); err != nil {
		t.Fatal(err)
	}

	// A port picked free may be taken before sshd binds it: try a few.
	var lastErr error
	for range 3 {
		s.Port = freePort(t)
		if lastErr = s.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("sftptest: %v", lastErr)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.Log())
		}
	})

	s.KnownHosts = knownhosts.Line([]string{s.Addr()}, hostKey)
	s.KnownHostsFile = filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(s.KnownHostsFile, []byte(s.KnownHosts+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// WriteKey writes a new ed25519 private key in OpenSSH format to name and
// returns its public key; tests use it for keys no server knows.
func WriteKey(t testing.TB, name string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "imago-test")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sshPub
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sftptest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr returns "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Config returns a backend config for the folder dir on the server that
// uses only the server's key and known_hosts file, nothing of the user's
// ~/.ssh or ssh-agent, and a 5-second connection timeout.
func (s *Server) Config(dir string) sftp.Config {
	return sftp.Config{
		User:           s.User,
		Host:           s.Host,
		Port:           s.Port,
		Path:           dir,
		IdentityFiles:  []string{s.KeyFile},
		IdentitiesOnly: true,
		KnownHostsFile: s.KnownHostsFile,
		ConnectTimeout: 5 * time.Second,
	}
}

// Log returns what sshd has logged so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// config returns the sshd_config text.
func (s *Server) config() string {
	sftpServer := "internal-sftp"
	if s.ReadOnly {
		sftpServer += " -R"
	}
	lines := []string{
		"ListenAddress 127.0.0.1",
		"Port " + strconv.Itoa(s.Port),
		"HostKey " + filepath.Join(s.dir, "host_ed25519"),
		"PidFile " + filepath.Join(s.dir, "sshd.pid"),
		"AuthorizedKeysFile " + filepath.Join(s.dir, "authorized_keys"),
		"UsePAM no",
		"StrictModes no",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PubkeyAuthentication yes",
		"PermitRootLogin prohibit-password",
		"AllowUsers " + s.User,
		"Subsystem sftp " + sftpServer,
		// Tests open many connections at once; the default 10
		// unauthenticated ones would refuse some at random.
		"MaxStartups 100",
		"LogLevel VERBOSE",
	}
	return strings.Join(lines, "\n") + "\n"
}

// start runs sshd and waits until it greets a client.
func (s *Server) start() error {
	if err := os.WriteFile(s.conf, []byte(s.config()), 0o600); err != nil {
		return err
	}
	log := &syncBuffer{}
	cmd := exec.Command(SSHD, "-D", "-e", "-f", s.conf)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, so that a signal to it reaches no test
	// process; killed with the test binary, so that a test that times out
	// leaves no sshd listening (its sessions end with their clients).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", SSHD, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		if greets(s.Addr()) {
			break
		}
		select {
		case err := <-exited:
			return fmt.Errorf("sshd exited (%v): %s", err, strings.TrimSpace(log.String()))
		case <-ctx.Done():
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			return fmt.Errorf("sshd did not accept connections within %v: %s", startTimeout, strings.TrimSpace(log.String()))
		case <-time.After(10 * time.Millisecond):
		}
	}
	s.mu.Lock()
	s.cmd, s.log = cmd, log
	s.mu.Unlock()
	go func() {
		<-exited // Reaped here; stop waits for the port to close instead.
	}()
	return nil
}

// greets reports whether an SSH server answers at addr.
func greets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 4)
	_, err = c.Read(buf)
	return err == nil && string(buf) == "SSH-"
}

// stop kills sshd and its session processes.
func (s *Server) stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	pids := descendants(cmd.Process.Pid)
	// Already gone is fine.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Wait until the port is free again, so that Restart can bind it.
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", s.Addr(), 100*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
}

// Restart stops sshd, dropping every connection, and starts it again on
// the same port with the same keys.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.stop()
	if err := s.start(); err != nil {
		t.Fatalf("sftptest: restart: %v", err)
	}
}

// Stop stops sshd, dropping every connection; later connections are
// refused.
func (s *Server) Stop() { s.stop() }

// syncBuffer is a buffer safe for the concurrent writes of sshd's output
// copier and reads of Log. The bytes.Buffer is a named field, not embedded:
// embedded, its ReadFrom would be promoted, and exec's output copier would
// call it around the mutex.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// descendants returns the processes below pid, read from /proc. sshd's
// session processes call setsid(), so they leave its process group and
// only their parent links lead to them.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc") // Without /proc, only sshd itself is stopped.
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The fields after the command name, which is in parentheses
		// and may contain spaces: state, ppid, ...
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(fields[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}
