package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/backendtest"
	"github.com/imagobackup/imago/repo/backend/retry"
	"github.com/imagobackup/imago/repo/backend/s3/s3test"
)

// clearAWSEnv removes the AWS variables a developer may have set, so that
// the tests see only what they set themselves.
func clearAWSEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY", "AWS_SECRET_KEY",
		"AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
	} {
		t.Setenv(k, "")
	}
	t.Setenv("HOME", t.TempDir())
}

// serverConfig returns the Config of srv's bucket with its root keys.
func serverConfig(t *testing.T, srv *s3test.Server, bucket, prefix string) Config {
	t.Helper()
	loc := "s3:" + srv.URL + "/" + bucket
	if prefix != "" {
		loc += "/" + prefix
	}
	cfg, err := ParseLocation(loc)
	if err != nil {
		t.Fatalf("ParseLocation(%q): %v", loc, err)
	}
	cfg.AccessKey, cfg.SecretKey = srv.AccessKey, srv.SecretKey
	cfg.Region = "us-east-1"
	cfg.BucketLookup = LookupPath
	return cfg
}

func openBackend(t *testing.T, cfg Config) *Backend {
	t.Helper()
	be, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open(%s): %v", cfg.Location(), err)
	}
	return be
}

// TestConformance runs the backend contract against versitygw: at the root
// of a bucket, under a prefix, and behind the retry wrapper. Every subtest
// gets a bucket of its own on one server.
func TestConformance(t *testing.T) {
	srv := s3test.StartServer(t)
	clearAWSEnv(t)
	for _, tc := range []struct {
		name   string
		prefix string
		retry  bool
	}{
		{"root", "", false},
		{"prefix", "backups/host1", false},
		{"retry", "repo", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backendtest.Run(t, func(t *testing.T) backend.Backend {
				be := openBackend(t, serverConfig(t, srv, srv.NewBucket(t), tc.prefix))
				if tc.retry {
					return retry.New(be, retry.Options{})
				}
				return be
			})
		})
	}
}

// TestKeys checks where files land in the bucket, since another tool (or a
// later version) must find them there: prefix/config, prefix/<type>/name,
// packs sharded by their first two characters.
func TestKeys(t *testing.T) {
	srv := s3test.StartServer(t)
	clearAWSEnv(t)
	ctx := context.Background()
	be := openBackend(t, serverConfig(t, srv, srv.Bucket, "a/b"))
	defer be.Close()
	files := map[backend.Handle]string{
		{Type: backend.Config}:                    "a/b/config",
		{Type: backend.Pack, Name: "abcdef"}:      "a/b/data/ab/abcdef",
		{Type: backend.Snapshot, Name: "0123abc"}: "a/b/snapshots/0123abc",
		{Type: backend.Key, Name: "k1"}:           "a/b/keys/k1",
	}
	for h, key := range files {
		data := []byte("content of " + h.String())
		if err := be.Save(ctx, h, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatalf("Save(%v): %v", h, err)
		}
		// versitygw's posix backend keeps object a/b/c in the file
		// DIR/bucket/a/b/c.
		got, err := os.ReadFile(filepath.Join(srv.Dir, srv.Bucket, filepath.FromSlash(key)))
		if err != nil {
			t.Errorf("%v is not stored under key %q: %v", h, key, err)
		} else if !bytes.Equal(got, data) {
			t.Errorf("object %q = %q, want %q", key, got, data)
		}
	}
	// Objects that are no files of the repository are not listed: a
	// pack outside its shard, a name starting with '.', and anything
	// beside the prefix.
	stray := []string{"a/b/data/cd/abcdef", "a/b/data/abcdef", "a/b/snapshots/.tmp", "a/bc/snapshots/1234", "a/b/snapshots/sub/x"}
	for _, key := range stray {
		path := filepath.Join(srv.Dir, srv.Bucket, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("stray"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, ft := range []backend.FileType{backend.Pack, backend.Snapshot} {
		var names []string
		err := be.List(ctx, ft, func(fi backend.FileInfo) error {
			names = append(names, fi.Name)
			return nil
		})
		if err != nil {
			t.Fatalf("List(%s): %v", ft, err)
		}
		want := map[backend.FileType]string{backend.Pack: "abcdef", backend.Snapshot: "0123abc"}[ft]
		if len(names) != 1 || names[0] != want {
			t.Errorf("List(%s) = %q, want only %q", ft, names, want)
		}
	}
	if got, want := be.Location(), "s3:"+srv.URL+"/"+srv.Bucket+"/a/b"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
}

// failingReaderAt returns its data, except that on pass failPass (1 for
// the first read from offset 0, 2 for the second, …) it fails once a read
// passes failAt. Save reads its source twice, once for the Content-MD5 and
// once to send it, so failPass 2 breaks the upload after the server
// received failAt bytes.
type failingReaderAt struct {
	data     []byte
	failAt   int64
	failPass int

	mu   sync.Mutex
	pass int
}

var errSourceBroke = errors.New("source broke")

func (r *failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	if off == 0 {
		r.pass++
	}
	pass := r.pass
	r.mu.Unlock()
	if pass == r.failPass && off+int64(len(p)) > r.failAt {
		n := 0
		if off < r.failAt {
			n = copy(p, r.data[off:r.failAt])
		}
		return n, errSourceBroke
	}
	n := copy(p, r.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestSaveSourceFailsMidway checks that an upload whose source fails,
// before or after megabytes were sent, leaves no object behind, keeps an
// earlier version, and reports the source's error without marking it
// transient (a retry would read the same broken source).
func TestSaveSourceFailsMidway(t *testing.T) {
	srv := s3test.StartServer(t)
	clearAWSEnv(t)
	ctx := context.Background()
	be := openBackend(t, serverConfig(t, srv, srv.Bucket, "repo"))
	defer be.Close()

	const size = 8 << 20
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	old := backend.Handle{Type: backend.Pack, Name: "aa00"}
	if err := be.Save(ctx, old, bytes.NewReader([]byte("old content")), 11); err != nil {
		t.Fatalf("Save: %v", err)
	}
	for i, tc := range []struct {
		name string
		pass int
	}{
		{"while hashing", 1},
		{"while sending", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fresh := backend.Handle{Type: backend.Pack, Name: fmt.Sprintf("aa%02d", i+1)}
			for _, h := range []backend.Handle{fresh, old} {
				src := &failingReaderAt{data: data, failAt: 5 << 20, failPass: tc.pass}
				err := be.Save(ctx, h, src, size)
				if !errors.Is(err, errSourceBroke) {
					t.Fatalf("Save(%v) from a source failing at 5 MiB = %v, want the source's error", h, err)
				}
				if backend.IsTransient(err) {
					t.Errorf("Save(%v) = %v, marked transient, but the source will fail again", h, err)
				}
				if src.pass != tc.pass {
					t.Errorf("Save read its source %d times, want %d (the test would not break the upload where it says)", src.pass, tc.pass)
				}
			}
			if _, err := be.Stat(ctx, fresh); !errors.Is(err, backend.ErrNotExist) {
				t.Errorf("Stat(%v) after the failed Save = %v, want ErrNotExist", fresh, err)
			}
			got, err := backend.LoadAll(ctx, be, old, nil)
			if err != nil || string(got) != "old content" {
				t.Errorf("Load(%v) after a failed overwrite = %q, %v; want the old content", old, got, err)
			}
		})
	}
	// Nothing half-written either in the server's folder.
	err := filepath.WalkDir(filepath.Join(srv.Dir, srv.Bucket), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if filepath.Base(path) != old.Name {
			t.Errorf("stray file %s in the server's folder after failed saves", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSaveCancelled checks that cancelling a Save while it sends leaves no
// object.
func TestSaveCancelled(t *testing.T) {
	srv := s3test.StartServer(t)
	clearAWSEnv(t)
	be := openBackend(t, serverConfig(t, srv, srv.Bucket, ""))
	defer be.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const size = 8 << 20
	h := backend.Handle{Type: backend.Pack, Name: "bb01"}
	src := &cancellingReaderAt{size: size, cancelAt: 3 << 20, cancel: cancel}
	err := be.Save(ctx, h, src, size)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Save cancelled midway = %v, want context.Canceled", err)
	}
	if src.pass != 2 {
		t.Errorf("Save read its source %d times, want 2 (cancelled while sending)", src.pass)
	}
	if _, err := be.Stat(context.Background(), h); !errors.Is(err, backend.ErrNotExist) {
		t.Errorf("Stat after a cancelled Save = %v, want ErrNotExist", err)
	}
}

// cancellingReaderAt returns zeros and calls cancel once a read of its
// second pass (the one that sends) passes cancelAt.
type cancellingReaderAt struct {
	size, cancelAt int64
	cancel         func()

	mu   sync.Mutex
	pass int
}

func (r *cancellingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	if off == 0 {
		r.pass++
	}
	pass := r.pass
	r.mu.Unlock()
	if pass == 2 && off+int64(len(p)) > r.cancelAt {
		r.cancel()
	}
	n := int64(len(p))
	if off+n > r.size {
		n = r.size - off
	}
	clear(p[:n])
	if off+n == r.size {
		return int(n), io.EOF
	}
	return int(n), nil
}

// TestOpenErrors checks what a user sees for each way Open can fail: an
// error of one line naming the cause, wrapping the sentinel the CLI maps
// to an exit code, soon.
func TestOpenErrors(t *testing.T) {
	srv := s3test.StartServer(t)
	clearAWSEnv(t)
	closedPort := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return addr
	}()
	tests := []struct {
		name     string
		change   func(*Config)
		want     error
		mentions string
	}{
		{"missing bucket", func(c *Config) { c.Bucket = "no-such-bucket" }, backend.ErrNotExist, `"no-such-bucket"`},
		{"wrong secret key", func(c *Config) { c.SecretKey = "wrong" }, ErrAuth, "SignatureDoesNotMatch"},
		{"unknown access key", func(c *Config) { c.AccessKey = "nobody" }, ErrAuth, "InvalidAccessKeyId"},
		{"no permission", func(c *Config) { c.AccessKey, c.SecretKey = srv.UserAccessKey, srv.UserSecretKey }, ErrPermission, "AccessDenied"},
		{"closed port", func(c *Config) { c.Endpoint = closedPort }, ErrUnreachable, "refused"},
		{"https to an http server", func(c *Config) { c.Secure = true }, ErrUnreachable, "HTTP response to HTTPS client"},
		{"half a key pair", func(c *Config) { c.SecretKey = "" }, ErrAuth, "secret key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := serverConfig(t, srv, srv.Bucket, "repo")
			tt.change(&cfg)
			start := time.Now()
			be, err := Open(context.Background(), cfg)
			if err == nil {
				be.Close()
				t.Fatalf("Open succeeded, want an error wrapping %v", tt.want)
			}
			t.Logf("Open: %v", err)
			if !errors.Is(err, tt.want) {
				t.Errorf("Open = %v, want an error wrapping %v", err, tt.want)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, tt.mentions) {
				t.Errorf("Open = %q, want one line mentioning %s", msg, tt.mentions)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Open took %v to fail, want a quick answer", d)
			}
		})
	}
}

// TestOpenServerSilent checks that a server that accepts connections but
// never answers is reported within the response timeout, as transient.
func TestOpenServerSilent(t *testing.T) {
	clearAWSEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // Held open, silent, until the test ends.
		}
	}()
	cfg, err := ParseLocation("s3:http://" + l.Addr().String() + "/bucket")
	if err != nil {
		t.Fatal(err)
	}
	cfg.AccessKey, cfg.SecretKey, cfg.Region = "a", "b", "us-east-1"
	cfg.headerTimeout = 500 * time.Millisecond
	start := time.Now()
	be, err := Open(context.Background(), cfg)
	if err == nil {
		be.Close()
		t.Fatal("Open of a silent server succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Open took %v to give up on a silent server with a 0.5 s timeout", d)
	}
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "did not answer") {
		t.Errorf("Open = %v, want ErrUnreachable saying the server did not answer (exit 13)", err)
	}
	// The retry wrapper must not take the transport's timeout for the
	// end of the caller's context.
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open = %v, wraps context.DeadlineExceeded: the retry wrapper would not retry it", err)
	}
}

// TestCreate checks that Create makes a missing bucket and that a second
// Create of the same bucket keeps what is in it.
func TestCreate(t *testing.T) {
	srv := s3test.StartServer(t)
	clearAWSEnv(t)
	ctx := context.Background()
	cfg := serverConfig(t, srv, "fresh-bucket", "repo")
	if _, err := Open(ctx, cfg); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("Open of a missing bucket = %v, want ErrNotExist", err)
	}
	be, err := Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	h := backend.Handle{Type: backend.Config}
	if err := be.Save(ctx, h, strings.NewReader("cfg"), 3); err != nil {
		t.Fatalf("Save: %v", err)
	}
	be.Close()
	be, err = Create(ctx, cfg)
	if err != nil {
		t.Fatalf("second Create: %v", err)
	}
	defer be.Close()
	if got, err := backend.LoadAll(ctx, be, h, nil); err != nil || string(got) != "cfg" {
		t.Errorf("config after a second Create = %q, %v; want %q", got, err, "cfg")
	}
}

// TestCredentials checks where credentials come from: the environment
// first, then the ~/.aws files with AWS_PROFILE or the s3.profile option.
func TestCredentials(t *testing.T) {
	srv := s3test.StartServer(t)
	clearAWSEnv(t)
	ctx := context.Background()
	writeAWSFile := func(t *testing.T, name, content string) {
		t.Helper()
		dir := filepath.Join(os.Getenv("HOME"), ".aws")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	profiles := fmt.Sprintf("[default]\naws_access_key_id = nobody\naws_secret_access_key = wrong\n\n"+
		"[backup]\naws_access_key_id = %s\naws_secret_access_key = %s\n", srv.AccessKey, srv.SecretKey)
	tests := []struct {
		name    string
		setup   func(t *testing.T, cfg *Config)
		wantErr error // nil: Open succeeds
	}{
		{"environment", func(t *testing.T, cfg *Config) {
			t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
			t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
		}, nil},
		{"environment with wrong secret", func(t *testing.T, cfg *Config) {
			t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
			t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
		}, ErrAuth},
		{"environment before profile", func(t *testing.T, cfg *Config) {
			writeAWSFile(t, "credentials", profiles)
			t.Setenv("AWS_PROFILE", "default")
			t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
			t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
		}, nil},
		{"credentials file with AWS_PROFILE", func(t *testing.T, cfg *Config) {
			writeAWSFile(t, "credentials", profiles)
			t.Setenv("AWS_PROFILE", "backup")
		}, nil},
		{"credentials file default profile", func(t *testing.T, cfg *Config) {
			writeAWSFile(t, "credentials", profiles)
		}, ErrAuth},
		{"credentials file with s3.profile option", func(t *testing.T, cfg *Config) {
			writeAWSFile(t, "credentials", profiles)
			t.Setenv("AWS_PROFILE", "default")
			if err := cfg.ApplyOptions(map[string]string{"s3.profile": "backup"}); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"config file profile", func(t *testing.T, cfg *Config) {
			writeAWSFile(t, "config", fmt.Sprintf("[profile cfgonly]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
				srv.AccessKey, srv.SecretKey))
			t.Setenv("AWS_PROFILE", "cfgonly")
		}, nil},
		{"missing profile", func(t *testing.T, cfg *Config) {
			writeAWSFile(t, "credentials", profiles)
			t.Setenv("AWS_PROFILE", "nosuchprofile")
		}, ErrAuth},
		{"half a key pair in the environment", func(t *testing.T, cfg *Config) {
			t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
		}, ErrAuth},
		{"no credentials at all", func(t *testing.T, cfg *Config) {}, ErrAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearAWSEnv(t)
			cfg := serverConfig(t, srv, srv.Bucket, "")
			cfg.AccessKey, cfg.SecretKey = "", ""
			tt.setup(t, &cfg)
			be, err := Open(ctx, cfg)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer be.Close()
				if err := be.Save(ctx, backend.Handle{Type: backend.Lock, Name: "l1"}, strings.NewReader("x"), 1); err != nil {
					t.Errorf("Save with these credentials: %v", err)
				}
				return
			}
			if err == nil {
				be.Close()
				t.Fatalf("Open succeeded, want an error wrapping %v", tt.wantErr)
			}
			t.Logf("Open: %v", err)
			if !errors.Is(err, tt.wantErr) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Open = %q, want one line wrapping %v", err, tt.wantErr)
			}
		})
	}
}

// TestConnectionsBound checks that no more than Connections requests run at
// once, however many goroutines call.
func TestConnectionsBound(t *testing.T) {
	srv := s3test.StartServer(t)
	clearAWSEnv(t)
	cfg := serverConfig(t, srv, srv.Bucket, "")
	cfg.Connections = 2
	be := openBackend(t, cfg)
	defer be.Close()
	ctx := context.Background()
	h := backend.Handle{Type: backend.Index, Name: "i1"}
	if err := be.Save(ctx, h, strings.NewReader("index"), 5); err != nil {
		t.Fatal(err)
	}
	// Each Load holds its slot while its callback waits; a third Load
	// must wait for one of the first two to finish.
	inside := make(chan struct{}, 3)
	release := make(chan struct{})
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			errs <- be.Load(ctx, h, 0, 0, func(io.Reader) error {
				inside <- struct{}{}
				<-release
				return nil
			})
		}()
	}
	for range 2 {
		select {
		case <-inside:
		case <-time.After(10 * time.Second):
			t.Fatal("two Loads did not start within 10 s")
		}
	}
	select {
	case <-inside:
		t.Error("a third Load ran while two held the 2 connections")
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	for range 3 {
		if err := <-errs; err != nil {
			t.Errorf("Load: %v", err)
		}
	}
}

// TestListCallbackMayCallBackend checks that List holds no connection
// while its callback runs: with one connection, a callback that loads each
// listed file must not wait forever.
func TestListCallbackMayCallBackend(t *testing.T) {
	srv := s3test.StartServer(t)
	clearAWSEnv(t)
	cfg := serverConfig(t, srv, srv.Bucket, "")
	cfg.Connections = 1
	be := openBackend(t, cfg)
	defer be.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 3 {
		h := backend.Handle{Type: backend.Snapshot, Name: fmt.Sprintf("s%d", i)}
		if err := be.Save(ctx, h, strings.NewReader(h.Name), int64(len(h.Name))); err != nil {
			t.Fatal(err)
		}
	}
	loaded := 0
	err := be.List(ctx, backend.Snapshot, func(fi backend.FileInfo) error {
		got, err := backend.LoadAll(ctx, be, backend.Handle{Type: backend.Snapshot, Name: fi.Name}, nil)
		if err != nil {
			return err
		}
		if string(got) != fi.Name {
			t.Errorf("Load(%s) inside List = %q", fi.Name, got)
		}
		loaded++
		return nil
	})
	if err != nil || loaded != 3 {
		t.Errorf("List with loads in its callback = %v after %d loads, want 3 loads and no error", err, loaded)
	}
}
