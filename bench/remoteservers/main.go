// Command remoteservers runs the test servers of the remote backends for
// benchmarks: a real OpenSSH sshd (package sftptest) and a real S3 server,
// versitygw (package s3test), both on 127.0.0.1, configured exactly as in
// the tests. It writes their addresses and credentials as shell variable
// assignments to the file named by -env, then serves until it is
// interrupted (SIGINT, SIGTERM) or its standard input ends, and stops both
// servers and removes their folders.
//
//	go run ./bench/remoteservers -env /tmp/servers.env </dev/null &   # stdin never ends: use a signal
//
// The variables: SFTP_HOST, SFTP_PORT, SFTP_USER, SFTP_KEY (a private key
// the server accepts), SFTP_KNOWN_HOSTS (a known_hosts file with the
// server's key); S3_ENDPOINT (host:port), S3_URL (http://host:port),
// S3_BUCKET (a fresh, empty bucket), AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY (the account owning the bucket).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/imagobackup/imago/repo/backend/s3/s3test"
	"github.com/imagobackup/imago/repo/backend/sftp/sftptest"
)

func main() {
	envFile := flag.String("env", "", "write the servers' variables to `file` (required)")
	flag.Parse()
	if *envFile == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: remoteservers -env FILE")
		os.Exit(2)
	}
	h := &harness{}
	defer h.cleanup()

	ssh := sftptest.StartServer(h)
	s3 := s3test.StartServer(h)
	vars := [][2]string{
		{"SFTP_HOST", ssh.Host},
		{"SFTP_PORT", strconv.Itoa(ssh.Port)},
		{"SFTP_USER", ssh.User},
		{"SFTP_KEY", ssh.KeyFile},
		{"SFTP_KNOWN_HOSTS", ssh.KnownHostsFile},
		{"S3_ENDPOINT", s3.Endpoint},
		{"S3_URL", s3.URL},
		{"S3_BUCKET", s3.Bucket},
		{"AWS_ACCESS_KEY_ID", s3.AccessKey},
		{"AWS_SECRET_ACCESS_KEY", s3.SecretKey},
	}
	var b strings.Builder
	for _, v := range vars {
		fmt.Fprintf(&b, "%s=%s\n", v[0], shellQuote(v[1]))
	}
	// Written to a temporary name and renamed, so that a script waiting
	// for the file never reads half of it.
	tmp := *envFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		h.Fatalf("remoteservers: %v", err)
	}
	if err := os.Rename(tmp, *envFile); err != nil {
		h.Fatalf("remoteservers: %v", err)
	}
	fmt.Fprintf(os.Stderr, "remoteservers: sshd on %s, versitygw on %s\n", ssh.Addr(), s3.Endpoint)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // Ends when stdin does.
		close(stdinClosed)
	}()
	select {
	case <-sig:
	case <-stdinClosed:
	}
}

// harness is the testing.TB that sftptest and s3test need, for a program:
// temporary folders and cleanups run at exit, failures end the program.
// It embeds a nil testing.TB to satisfy the interface's unexported
// method; a call of a method not defined here would panic, and the two
// packages call none.
type harness struct {
	testing.TB
	cleanups []func()
	dirs     []string
	failed   bool
}

func (h *harness) Helper() {}

func (h *harness) Name() string { return "remoteservers" }

func (h *harness) Cleanup(f func()) { h.cleanups = append(h.cleanups, f) }

func (h *harness) TempDir() string {
	d, err := os.MkdirTemp("", "imago-remoteservers-")
	if err != nil {
		h.Fatalf("remoteservers: %v", err)
	}
	h.dirs = append(h.dirs, d)
	return d
}

func (h *harness) Failed() bool { return h.failed }

func (h *harness) Log(args ...any) { fmt.Fprintln(os.Stderr, args...) }

func (h *harness) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func (h *harness) Fatal(args ...any) { h.Log(args...); h.FailNow() }

func (h *harness) Fatalf(format string, args ...any) { h.Logf(format, args...); h.FailNow() }

func (h *harness) FailNow() {
	h.failed = true
	h.cleanup()
	os.Exit(1)
}

func (h *harness) Skip(args ...any) { h.Fatal(append([]any{"remoteservers: skipped:"}, args...)...) }

// cleanup runs the cleanups, last registered first, then removes the
// temporary folders.
func (h *harness) cleanup() {
	for i := len(h.cleanups) - 1; i >= 0; i-- {
		h.cleanups[i]()
	}
	h.cleanups = nil
	for _, d := range h.dirs {
		_ = os.RemoveAll(d) // Best effort: a leftover temp folder is harmless.
	}
	h.dirs = nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
