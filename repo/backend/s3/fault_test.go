package s3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/retry"
	"github.com/imagobackup/imago/repo/backend/s3/s3test"
)

// faultyTransport breaks the first matching requests: it answers them with
// a server error, or cuts their response body short.
type faultyTransport struct {
	next http.RoundTripper

	mu sync.Mutex
	// method is the HTTP method of the requests to break; failures is
	// how many of them are still to be broken.
	method   string
	failures int
	// status, if not zero, is the status of the made-up answer; else
	// the real response's body ends after cutAfter bytes with a
	// connection reset.
	status   int
	code     string
	cutAfter int
}

func (f *faultyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	hit := req.Method == f.method && req.URL.Query().Get("list-type") == "" && f.failures > 0
	if hit {
		f.failures--
	}
	f.mu.Unlock()
	if hit && f.status != 0 {
		if req.Body != nil {
			_, _ = io.Copy(io.Discard, req.Body)
			req.Body.Close()
		}
		body := "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>" + f.code +
			"</Code><Message>Please reduce your request\nrate.</Message></Error>"
		return &http.Response{
			StatusCode:    f.status,
			Status:        http.StatusText(f.status),
			Proto:         "HTTP/1.1",
			ProtoMajor:    1,
			ProtoMinor:    1,
			Header:        http.Header{"Content-Type": {"application/xml"}},
			Body:          io.NopCloser(strings.NewReader(body)),
			ContentLength: int64(len(body)),
			Request:       req,
		}, nil
	}
	resp, err := f.next.RoundTrip(req)
	if hit && err == nil {
		resp.Body = &cutBody{rc: resp.Body, left: f.cutAfter}
	}
	return resp, err
}

// cutBody ends its body after left bytes with a connection reset.
type cutBody struct {
	rc   io.ReadCloser
	left int
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, syscall.ECONNRESET
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.rc.Read(p)
	c.left -= n
	return n, err
}

func (c *cutBody) Close() error { return c.rc.Close() }

// setFailures sets how many matching requests are still to be broken.
func (f *faultyTransport) setFailures(n int) {
	f.mu.Lock()
	f.failures = n
	f.mu.Unlock()
}

// left returns how many matching requests are still to be broken.
func (f *faultyTransport) left() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failures
}

// noSleep makes the retry wrapper retry at once.
func noSleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

// TestTransientFaults checks that a throttled request and a download cut
// short are reported as transient, so the retry wrapper makes the call
// again and succeeds, while a backend without it reports one clear error.
func TestTransientFaults(t *testing.T) {
	srv := s3test.StartServer(t)
	clearAWSEnv(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("imago "), 50000)
	h := backend.Handle{Type: backend.Pack, Name: "cc01"}

	tests := []struct {
		name     string
		method   string
		status   int
		code     string
		cutAfter int
		call     func(be backend.Backend) error
	}{
		{"throttled save", http.MethodPut, http.StatusServiceUnavailable, "SlowDown", 0,
			func(be backend.Backend) error { return be.Save(ctx, h, bytes.NewReader(data), int64(len(data))) }},
		{"internal error on stat", http.MethodHead, http.StatusInternalServerError, "InternalError", 0,
			func(be backend.Backend) error { _, err := be.Stat(ctx, h); return err }},
		{"download cut short", http.MethodGet, 0, "", 1000,
			func(be backend.Backend) error {
				got, err := backend.LoadAll(ctx, be, h, nil)
				if err == nil && !bytes.Equal(got, data) {
					return errors.New("loaded bytes differ from the saved ones")
				}
				return err
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fault := &faultyTransport{method: tt.method, status: tt.status, code: tt.code, cutAfter: tt.cutAfter}
			cfg := serverConfig(t, srv, srv.NewBucket(t), "")
			cfg.wrapTransport = func(rt http.RoundTripper) http.RoundTripper {
				fault.next = rt
				return fault
			}
			be := openBackend(t, cfg)
			defer be.Close()
			if tt.method != http.MethodPut {
				// The file to read is stored without faults.
				if err := be.Save(ctx, h, bytes.NewReader(data), int64(len(data))); err != nil {
					t.Fatal(err)
				}
			}

			fault.setFailures(1)
			err := tt.call(be)
			t.Logf("without retries: %v", err)
			if !backend.IsTransient(err) || strings.Contains(err.Error(), "\n") {
				t.Errorf("call with a fault = %q, want a one-line transient error", err)
			}
			if tt.method == http.MethodGet && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("load cut short = %v, want it to say the connection was reset or the data ended early", err)
			}

			if left := fault.left(); left != 0 {
				t.Errorf("the fault was not hit (%d left): the test checks nothing", left)
			}
			fault.setFailures(1)
			if err := tt.call(retry.New(be, retry.Options{Sleep: noSleep})); err != nil {
				t.Errorf("call with a fault behind the retry wrapper: %v", err)
			}
			if left := fault.left(); left != 0 {
				t.Errorf("the fault was not hit behind the retry wrapper (%d left)", left)
			}
		})
	}
}
