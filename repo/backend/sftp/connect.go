package sftp

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Sentinels for the causes of a failed connection that a user must fix
// (the CLI maps them to exit codes). None of them is transient.
var (
	// ErrUnreachable: no SSH server answered at the address in time
	// (refused, no route, unknown host name, timeout). Within a backend's
	// calls it comes wrapped in a backend.TransientError.
	ErrUnreachable = errors.New("host unreachable")
	// ErrAuth: the server accepted none of the keys offered.
	ErrAuth = errors.New("permission denied (publickey)")
	// ErrUnknownHost: the server's host key is not in known_hosts.
	ErrUnknownHost = errors.New("unknown host key")
	// ErrHostKeyMismatch: known_hosts holds another key for the server,
	// which may mean a man-in-the-middle attack.
	ErrHostKeyMismatch = errors.New("host key mismatch")
)

// conn is one SSH connection with its SFTP session.
type conn struct {
	ssh  *ssh.Client
	sftp *sftp.Client
	// dead is closed when the SFTP session has ended (the connection
	// dropped or was closed).
	dead chan struct{}
	// posixRename and fsync report the server's OpenSSH extensions.
	posixRename, fsync bool
}

// close ends the connection; it is safe to call more than once and from
// any goroutine. The SSH connection goes first: closing the SFTP session
// waits for its reader, which a silent server would never end.
func (c *conn) close() {
	_ = c.ssh.Close()  // Nothing is pending that an error could report.
	_ = c.sftp.Close() // Already ended by the line above.
}

// keepalive probes the server every interval until the connection ends. A
// server that does not answer within timeout is taken for gone and the
// connection closed, so a call on a silently dead connection fails within
// about interval + timeout instead of TCP's ~15 minutes.
func (c *conn) keepalive(interval, timeout time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-c.dead:
			return
		case <-tick.C:
		}
		replied := make(chan struct{})
		go func() {
			// OpenSSH answers the unknown request with a failure,
			// which is an answer all the same.
			_, _, _ = c.ssh.SendRequest("keepalive@openssh.com", true, nil)
			close(replied)
		}()
		timer := time.NewTimer(timeout)
		select {
		case <-replied:
			timer.Stop()
		case <-c.dead:
			timer.Stop()
			return
		case <-timer.C:
			_ = c.ssh.Close() // Fails the calls waiting on the server.
			return
		}
	}
}

// isDead reports whether the session has ended.
func (c *conn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// dial opens a connection as cfg (with defaults applied) says, within
// cfg.ConnectTimeout. Its errors are one line and wrap one of the
// sentinels above where the cause is known.
func dial(parent context.Context, cfg Config) (*conn, error) {
	ctx, cancel := context.WithTimeout(parent, cfg.ConnectTimeout)
	defer cancel()
	addr := cfg.addr()
	where := cfg.User + "@" + addr

	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		switch {
		case parent.Err() != nil:
			return nil, fmt.Errorf("sftp: connect %s: %w", addr, parent.Err())
		case ctx.Err() != nil || isTimeout(err):
			return nil, fmt.Errorf("sftp: connect %s: %w: no answer within %v", addr, ErrUnreachable, cfg.ConnectTimeout)
		}
		return nil, fmt.Errorf("sftp: connect %s: %w: %v", addr, ErrUnreachable, netCause(err))
	}
	// The handshake and SFTP start take no context: a deadline on the
	// socket bounds them, and cancelling ctx closes the socket.
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline) // A TCP socket always takes a deadline.
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })

	c, err := handshake(nc, addr, cfg)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = nc.SetDeadline(time.Time{})
	}
	if err != nil {
		if c != nil {
			c.close()
		}
		_ = nc.Close()
		switch {
		case parent.Err() != nil:
			return nil, fmt.Errorf("sftp: connect %s: %w", where, parent.Err())
		case ctx.Err() != nil || isTimeout(err):
			return nil, fmt.Errorf("sftp: connect %s: %w: no SSH session within %v", where, ErrUnreachable, cfg.ConnectTimeout)
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
			// The server closed the connection during the handshake (sshd
			// restarting, MaxStartups): unreachable for now, so a retry
			// wrapper tries again.
			return nil, fmt.Errorf("sftp: connect %s: %w: connection closed during the SSH handshake", where, ErrUnreachable)
		}
		return nil, fmt.Errorf("sftp: connect %s: %w", where, err)
	}
	return c, nil
}

// handshake runs SSH and SFTP over nc.
func handshake(nc net.Conn, addr string, cfg Config) (*conn, error) {
	hk, err := newHostKeyChecker(cfg, addr)
	if err != nil {
		return nil, err
	}
	auth, err := newAuth(cfg)
	if err != nil {
		return nil, err
	}
	defer auth.close()
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{
		User:              cfg.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeysCallback(auth.signers)},
		HostKeyCallback:   hk.check,
		HostKeyAlgorithms: hk.algorithms,
	})
	if err != nil {
		if hk.err != nil {
			return nil, hk.err
		}
		if hk.algorithms != nil && strings.Contains(err.Error(), "no common algorithm for host key") {
			return nil, fmt.Errorf("%w for %s: the server offers none of the key types known for it (%s)",
				ErrHostKeyMismatch, knownhosts.Normalize(addr), strings.Join(hk.algorithms, ", "))
		}
		if isAuthFailure(err) {
			return nil, fmt.Errorf("%w: %s", ErrAuth, auth.describe())
		}
		return nil, fmt.Errorf("ssh: %w", unwrapHandshake(err))
	}
	client := ssh.NewClient(sc, chans, reqs)
	sc2, err := sftp.NewClient(client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("start sftp session: %w", err)
	}
	c := &conn{ssh: client, sftp: sc2, dead: make(chan struct{})}
	_, c.posixRename = sc2.HasExtension("posix-rename@openssh.com")
	_, c.fsync = sc2.HasExtension("fsync@openssh.com")
	go func() {
		_ = sc2.Wait() // Why it ended is seen by the call that was running.
		close(c.dead)
	}()
	go c.keepalive(cfg.keepalive, cfg.ConnectTimeout)
	return c, nil
}

// isAuthFailure reports whether a handshake error means the keys were
// refused. x/crypto/ssh has no typed error for it.
func isAuthFailure(err error) bool {
	s := err.Error()
	return strings.Contains(s, "unable to authenticate") ||
		strings.Contains(s, "Too many authentication failures")
}

// unwrapHandshake drops the "ssh: handshake failed: " prefix.
func unwrapHandshake(err error) error {
	if u := errors.Unwrap(err); u != nil && strings.HasPrefix(err.Error(), "ssh: handshake failed") {
		return u
	}
	return err
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// netCause returns the innermost useful part of a dial error, e.g.
// "connection refused".
func netCause(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr
	}
	return err
}

// authKeys collects the signers offered to the server.
type authKeys struct {
	fileSigners []ssh.Signer
	files       []string // the key files loaded
	encrypted   []string // key files skipped: protected by a passphrase
	agent       agent.ExtendedAgent
	agentConn   net.Conn
}

// newAuth loads the key files of cfg and connects to ssh-agent if allowed.
// Key files that do not exist are skipped; one that exists but cannot be
// read or parsed is an error naming it.
func newAuth(cfg Config) (*authKeys, error) {
	a := &authKeys{}
	for _, name := range cfg.IdentityFiles {
		b, err := os.ReadFile(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read key file: %w", err)
		}
		s, err := ssh.ParsePrivateKey(b)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			a.encrypted = append(a.encrypted, name)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key file %s: %w", name, err)
		}
		a.fileSigners = append(a.fileSigners, s)
		a.files = append(a.files, name)
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" && !cfg.IdentitiesOnly {
		// An agent that cannot be reached is ignored, as ssh does.
		if ac, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			a.agentConn, a.agent = ac, agent.NewClient(ac)
		}
	}
	return a, nil
}

// signers returns the key files' signers, then the agent's.
func (a *authKeys) signers() ([]ssh.Signer, error) {
	signers := a.fileSigners
	if a.agent != nil {
		if s, err := a.agent.Signers(); err == nil {
			signers = append(signers[:len(signers):len(signers)], s...)
		}
	}
	return signers, nil
}

// describe names the keys tried, for an authentication error.
func (a *authKeys) describe() string {
	var parts []string
	if len(a.files) > 0 {
		parts = append(parts, "the key files "+strings.Join(a.files, ", "))
	}
	if a.agent != nil {
		parts = append(parts, "the keys of ssh-agent")
	}
	s := "the server accepted none of " + strings.Join(parts, " and ")
	if len(parts) == 0 {
		s = "no key to offer (no key file found, no ssh-agent)"
	}
	if len(a.encrypted) > 0 {
		s += "; skipped passphrase-protected " + strings.Join(a.encrypted, ", ") + " (add it to ssh-agent)"
	}
	return s
}

func (a *authKeys) close() {
	if a.agentConn != nil {
		_ = a.agentConn.Close() // Read-only use: nothing to lose.
	}
}

// hostKeyChecker verifies the server's key against known_hosts and keeps
// the reason of a refusal, which the SSH handshake error would bury.
type hostKeyChecker struct {
	cfg        Config
	callback   ssh.HostKeyCallback
	files      []string // the known_hosts files read, for messages
	writeFile  string   // where AcceptNewHostKey appends
	algorithms []string // host key algorithms of the known keys, if any
	err        error
}

func newHostKeyChecker(cfg Config, addr string) (*hostKeyChecker, error) {
	read, write := cfg.knownHostsFiles()
	var files []string
	for _, f := range read {
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		}
	}
	cb, err := knownhosts.New(files...)
	if err != nil {
		return nil, fmt.Errorf("read known_hosts: %w", err)
	}
	hk := &hostKeyChecker{cfg: cfg, callback: cb, files: read, writeFile: write}
	hk.algorithms = knownAlgorithms(cb, addr)
	return hk, nil
}

// knownAlgorithms returns the host key algorithms of the keys known for
// addr, so that the server is asked for a key that can be checked (a
// server with ed25519 and ecdsa keys, known by its ed25519 key, would
// otherwise send ecdsa and look changed). Nil: none known, any will do.
func knownAlgorithms(cb ssh.HostKeyCallback, addr string) []string {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil
	}
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil
	}
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}
	var ke *knownhosts.KeyError
	if !errors.As(cb(addr, remote, probe), &ke) {
		return nil
	}
	var algos []string
	for _, k := range ke.Want {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			algos = append(algos, t)
		}
	}
	return algos
}

// check is the ssh.HostKeyCallback.
func (hk *hostKeyChecker) check(hostname string, remote net.Addr, key ssh.PublicKey) error {
	err := hk.callback(hostname, remote, key)
	if err == nil {
		return nil
	}
	fp := key.Type() + " " + ssh.FingerprintSHA256(key)
	host, port := hostname, strconv.Itoa(defaultPort)
	if h, p, splitErr := net.SplitHostPort(hostname); splitErr == nil {
		host, port = h, p
	}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &ke) && len(ke.Want) > 0:
		w := ke.Want[0]
		hk.err = fmt.Errorf("%w for %s: the server sent %s, but %s:%d holds another key for it"+
			" (someone may be intercepting the connection; if the server's key was changed,"+
			" remove the old entry with ssh-keygen -R %s)",
			ErrHostKeyMismatch, knownhosts.Normalize(hostname), fp, w.Filename, w.Line, knownhosts.Normalize(hostname))
	case errors.As(err, &ke):
		if hk.cfg.AcceptNewHostKey {
			if err := hk.remember(hostname, key); err != nil {
				hk.err = fmt.Errorf("%w for %s (%s): cannot add it: %v", ErrUnknownHost, knownhosts.Normalize(hostname), fp, err)
				return hk.err
			}
			return nil
		}
		hk.err = fmt.Errorf("%w for %s (%s): not in %s; after checking the fingerprint,"+
			" add it with `ssh-keyscan -p %s %s >> %s` or by connecting once with ssh",
			ErrUnknownHost, knownhosts.Normalize(hostname), fp, strings.Join(hk.files, " or "),
			port, host, hk.writeFile)
	case errors.As(err, &re):
		hk.err = fmt.Errorf("%w for %s: the server's key %s is revoked in %s:%d",
			ErrHostKeyMismatch, knownhosts.Normalize(hostname), fp, re.Revoked.Filename, re.Revoked.Line)
	default:
		hk.err = fmt.Errorf("check host key of %s: %w", hostname, err)
	}
	return hk.err
}

// remember appends the key of hostname to the known_hosts file.
func (hk *hostKeyChecker) remember(hostname string, key ssh.PublicKey) error {
	if hk.writeFile == "" {
		return errors.New("no known_hosts file (no home folder)")
	}
	if err := os.MkdirAll(filepath.Dir(hk.writeFile), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(hk.writeFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(f, knownhosts.Line([]string{hostname}, key))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
