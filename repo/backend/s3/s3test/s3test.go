package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Binary is the name of the server executable.
const Binary = "versitygw"

// startTimeout bounds how long the server may take to answer its first
// request; versitygw answers within about 100 ms here.
const startTimeout = 15 * time.Second

// Server is a running versitygw. Its root account owns every bucket; a
// second account with the plain "user" role (UserAccessKey, UserSecretKey)
// owns none, so its requests to them are refused with AccessDenied.
type Server struct {
	Endpoint      string // "127.0.0.1:port"
	URL           string // "http://127.0.0.1:port"
	AccessKey     string // the root account
	SecretKey     string
	UserAccessKey string // an account without access to the buckets
	UserSecretKey string
	Bucket        string // a fresh, empty bucket made by StartServer
	Dir           string // the folder served: one sub-folder per bucket

	client  *minio.Client
	buckets atomic.Int64
}

// StartServer starts a server on a free port of 127.0.0.1 serving a
// temporary folder, waits until it answers, creates a fresh bucket
// (Server.Bucket) and stops the server when t's test ends. It fails t if
// the server cannot be started, and skips t only if IMAGO_TEST_S3=0.
func StartServer(t testing.TB) *Server {
	t.Helper()
	if os.Getenv("IMAGO_TEST_S3") == "0" {
		t.Skip("IMAGO_TEST_S3=0: tests against an S3 server are disabled")
	}
	bin, err := findBinary()
	if err != nil {
		t.Fatalf("s3test: %v: run scripts/install-test-deps.sh", err)
	}
	s := &Server{
		AccessKey:     "imago-root-" + randomHex(4),
		SecretKey:     randomHex(20),
		UserAccessKey: "imago-user-" + randomHex(4),
		UserSecretKey: randomHex(20),
		Dir:           t.TempDir(),
	}
	iamDir := t.TempDir()
	if err := writeUsers(iamDir, s.UserAccessKey, s.UserSecretKey); err != nil {
		t.Fatalf("s3test: %v", err)
	}
	// A free port can be taken by someone else between finding and
	// using it; a second port then almost surely works.
	var lastErr error
	for range 3 {
		lastErr = s.start(t, bin, iamDir)
		if lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("s3test: %v", lastErr)
	}
	s.client, err = minio.New(s.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		BucketLookup: minio.BucketLookupPath,
		Region:       "us-east-1",
	})
	if err != nil {
		t.Fatalf("s3test: client: %v", err)
	}
	s.Bucket = s.NewBucket(t)
	return s
}

// NewBucket creates and returns a new, empty bucket.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("imago-test-%d", s.buckets.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.client.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("s3test: make bucket %s: %v", name, err)
	}
	return name
}

// findBinary looks for versitygw in PATH, then in GOBIN and GOPATH/bin
// (by default ~/go/bin), where `go install` puts it. The default GOPATH is
// the one go/build computed when the test binary started, before any test
// changed HOME.
func findBinary() (string, error) {
	if p, err := exec.LookPath(Binary); err == nil {
		return p, nil
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range filepath.SplitList(build.Default.GOPATH) {
		dirs = append(dirs, filepath.Join(d, "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, Binary)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH nor in %v", Binary, dirs)
}

// writeUsers writes the internal IAM file of versitygw with one account of
// the "user" role.
func writeUsers(dir, access, secret string) error {
	type account struct {
		Access string `json:"access"`
		Secret string `json:"secret"`
		Role   string `json:"role"`
	}
	b, err := json.Marshal(map[string]map[string]account{
		"accessAccounts": {access: {Access: access, Secret: secret, Role: "user"}},
	})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "users.json"), b, 0o600)
}

// start runs the server on a free port and waits until it answers. On
// success, t's cleanup stops it.
func (s *Server) start(t testing.TB, bin, iamDir string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	s.Endpoint = fmt.Sprintf("127.0.0.1:%d", port)
	s.URL = "http://" + s.Endpoint
	cmd := exec.Command(bin,
		"--access", s.AccessKey, "--secret", s.SecretKey,
		"--port", s.Endpoint, "--iam-dir", iamDir, "--quiet",
		"posix", s.Dir)
	// The keys are passed as flags, not through the environment, so
	// that a developer's own AWS variables do not leak into the server.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.Dir}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get(s.URL + "/")
		if err == nil {
			resp.Body.Close()
			t.Cleanup(stop)
			return nil
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("%s exited before answering (%v): %s", bin, werr, bytes.TrimSpace(out.Bytes()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("%s did not answer on %s within %v: %s", bin, s.Endpoint, startTimeout, bytes.TrimSpace(out.Bytes()))
		}
	}
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %v", err)
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("find a free port: not a TCP address")
	}
	return addr.Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails.
	return hex.EncodeToString(b)
}

// syncBuffer collects the server's output from its two pipes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
