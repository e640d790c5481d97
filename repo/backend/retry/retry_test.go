package retry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/backendtest"
	"github.com/imagobackup/imago/repo/backend/faulty"
	"github.com/imagobackup/imago/repo/backend/mem"
	"github.com/imagobackup/imago/repo/backend/retry"
)

// noSleep lets tests retry without waiting, still honouring cancellation.
func noSleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

func TestConformanceOverTransientFaults(t *testing.T) {
	seed := int64(0)
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		f := faulty.New(mem.New())
		seed++
		f.Transient(0.2, seed)
		return retry.New(f, retry.Options{Sleep: noSleep})
	})
}

// scripted passes calls on to a mem backend after returning the errors
// queued for each operation, one per call.
type scripted struct {
	*mem.Backend

	// mu guards errs and calls.
	mu    sync.Mutex
	errs  map[string][]error
	calls map[string]int
	// afterFn makes Load and List fail only after running their callback
	// on the real data.
	afterFn bool
}

func newScripted(errs map[string][]error) *scripted {
	return &scripted{Backend: mem.New(), errs: errs, calls: map[string]int{}}
}

func (s *scripted) next(op string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[op]++
	q := s.errs[op]
	if len(q) == 0 {
		return nil
	}
	s.errs[op] = q[1:]
	return q[0]
}

func (s *scripted) count(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

func (s *scripted) Save(ctx context.Context, h backend.Handle, rd io.ReaderAt, size int64) error {
	if err := s.next("save"); err != nil {
		// Consume part of the source first, as a connection dropped
		// mid-upload would.
		_, _ = rd.ReadAt(make([]byte, size/2), size/2)
		return err
	}
	return s.Backend.Save(ctx, h, rd, size)
}

func (s *scripted) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(io.Reader) error) error {
	err := s.next("load")
	if err != nil && !s.afterFn {
		return err
	}
	if lerr := s.Backend.Load(ctx, h, length, offset, fn); lerr != nil {
		return lerr
	}
	return err
}

func (s *scripted) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := s.next("stat"); err != nil {
		return backend.FileInfo{}, err
	}
	return s.Backend.Stat(ctx, h)
}

func (s *scripted) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	err := s.next("list")
	if err != nil && !s.afterFn {
		return err
	}
	if lerr := s.Backend.List(ctx, t, fn); lerr != nil {
		return lerr
	}
	return err
}

func (s *scripted) Remove(ctx context.Context, h backend.Handle) error {
	if err := s.next("remove"); err != nil {
		return err
	}
	return s.Backend.Remove(ctx, h)
}

var (
	errTimeout = errors.New("connection timed out")
	errDenied  = errors.New("permission denied")
	transient  = &backend.TransientError{Err: errTimeout}
	h          = backend.Handle{Type: backend.Pack, Name: "abcdef"}
	content    = []byte("pack contents, eleven and more bytes")
)

func TestRetryDecisions(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		op        string
		errs      []error
		afterFn   bool
		wantCalls int
		wantErr   error // nil: success
	}{
		{"save transient then ok", "save", []error{transient, transient}, false, 3, nil},
		{"save permanent", "save", []error{errDenied}, false, 1, errDenied},
		{"save transient not exist", "save", []error{&backend.TransientError{Err: backend.ErrNotExist}}, false, 1, backend.ErrNotExist},
		{"save transient cancelled", "save", []error{&backend.TransientError{Err: context.Canceled}}, false, 1, context.Canceled},
		{"save deadline", "save", []error{fmt.Errorf("put: %w", &backend.TransientError{Err: context.DeadlineExceeded})}, false, 1, context.DeadlineExceeded},
		{"save gives up", "save", []error{transient, transient, transient, transient, transient}, false, 4, errTimeout},
		{"load before fn", "load", []error{transient, transient, transient}, false, 4, nil},
		{"load after fn", "load", []error{transient}, true, 1, errTimeout},
		{"stat transient", "stat", []error{transient}, false, 2, nil},
		{"stat not exist", "stat", []error{backend.ErrNotExist}, false, 1, backend.ErrNotExist},
		{"list before fn", "list", []error{transient}, false, 2, nil},
		{"list after fn", "list", []error{transient}, true, 1, errTimeout},
		{"remove transient", "remove", []error{transient}, false, 2, nil},
		{"remove permanent", "remove", []error{errDenied}, false, 1, errDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScripted(map[string][]error{tt.op: tt.errs})
			s.afterFn = tt.afterFn
			s.SetRaw(h, content)
			be := retry.New(s, retry.Options{MaxAttempts: 4, Sleep: noSleep})
			var err error
			switch tt.op {
			case "save":
				err = be.Save(ctx, h, bytes.NewReader(content), int64(len(content)))
			case "load":
				_, err = backend.LoadAll(ctx, be, h, nil)
			case "stat":
				_, err = be.Stat(ctx, h)
			case "list":
				err = be.List(ctx, backend.Pack, func(backend.FileInfo) error { return nil })
			case "remove":
				err = be.Remove(ctx, h)
			}
			if got := s.count(tt.op); got != tt.wantCalls {
				t.Errorf("%s was called %d times, want %d", tt.op, got, tt.wantCalls)
			}
			if tt.wantErr == nil && err != nil {
				t.Errorf("err = %v, want success", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want an error wrapping %v", err, tt.wantErr)
			}
		})
	}
}

func TestSaveRereadsSource(t *testing.T) {
	s := newScripted(map[string][]error{"save": {transient, transient}})
	be := retry.New(s, retry.Options{Sleep: noSleep})
	if err := be.Save(context.Background(), h, bytes.NewReader(content), int64(len(content))); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Raw(h); !bytes.Equal(got, content) {
		t.Errorf("stored %q after retried saves, want %q", got, content)
	}
}

func TestLoadCallbackErrors(t *testing.T) {
	ctx := context.Background()
	errCorrupt := errors.New("checksum mismatch")
	tests := []struct {
		name      string
		fnErrs    []error // what fn returns on each call
		wantCalls int
		wantErr   error
	}{
		{"transient callback error is retried", []error{transient, transient, nil}, 3, nil},
		{"permanent callback error returned unchanged", []error{errCorrupt}, 1, errCorrupt},
		{"not-exist from callback not retried", []error{&backend.TransientError{Err: backend.ErrNotExist}}, 1, backend.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScripted(nil)
			s.SetRaw(h, content)
			be := retry.New(s, retry.Options{Sleep: noSleep})
			calls := 0
			var got []byte
			err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
				calls++
				b, err := io.ReadAll(rd)
				if err != nil {
					return err
				}
				got = b
				return tt.fnErrs[calls-1]
			})
			if calls != tt.wantCalls {
				t.Errorf("fn called %d times, want %d", calls, tt.wantCalls)
			}
			if tt.wantErr == nil && (err != nil || !bytes.Equal(got, content)) {
				t.Errorf("Load = %v with %q, want success with %q", err, got, content)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Load = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == errCorrupt && err != errCorrupt {
				t.Errorf("Load = %v, want fn's error unchanged", err)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name  string
		opts  retry.Options
		pause []time.Duration // the upper bound of each pause; the lower is half
	}{
		{
			name:  "defaults",
			opts:  retry.Options{},
			pause: []time.Duration{100e6, 200e6, 400e6, 800e6, 1600e6, 3200e6, 6400e6, 10e9, 10e9},
		},
		{
			name:  "capped",
			opts:  retry.Options{MaxAttempts: 6, BaseDelay: time.Second, MaxDelay: 3 * time.Second},
			pause: []time.Duration{1e9, 2e9, 3e9, 3e9, 3e9},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pauses []time.Duration
			tt.opts.Sleep = func(_ context.Context, d time.Duration) error {
				pauses = append(pauses, d)
				return nil
			}
			var notified []int
			tt.opts.Notify = func(op string, _ backend.Handle, attempt int, err error) {
				if op != "stat" || !errors.Is(err, errTimeout) {
					t.Errorf("Notify(%q, %v)", op, err)
				}
				notified = append(notified, attempt)
			}
			always := make([]error, 100)
			for i := range always {
				always[i] = transient
			}
			s := newScripted(map[string][]error{"stat": always})
			_, err := retry.New(s, tt.opts).Stat(context.Background(), h)
			if !errors.Is(err, errTimeout) {
				t.Errorf("Stat = %v, want the last transient error", err)
			}
			if s.count("stat") != len(tt.pause)+1 {
				t.Errorf("%d attempts, want %d", s.count("stat"), len(tt.pause)+1)
			}
			if len(pauses) != len(tt.pause) || len(notified) != len(tt.pause) {
				t.Fatalf("%d pauses and %d notifications, want %d", len(pauses), len(notified), len(tt.pause))
			}
			for i, d := range pauses {
				if d < tt.pause[i]/2 || d > tt.pause[i] {
					t.Errorf("pause %d = %v, want within [%v, %v]", i+1, d, tt.pause[i]/2, tt.pause[i])
				}
				if notified[i] != i+1 {
					t.Errorf("notification %d for attempt %d", i+1, notified[i])
				}
			}
		})
	}
}

func TestCancelDuringPause(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newScripted(map[string][]error{"remove": {transient, transient}})
	s.SetRaw(h, content)
	// The first attempt fails, Notify cancels, and the real timer would
	// then pause for an hour: the call must end on the cancellation.
	be := retry.New(s, retry.Options{
		BaseDelay: time.Hour,
		MaxDelay:  time.Hour,
		Notify:    func(string, backend.Handle, int, error) { cancel() },
	})
	done := make(chan error, 1)
	go func() { done <- be.Remove(ctx, h) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Remove = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Remove did not return after its context was cancelled")
	}
	if n := s.count("remove"); n != 1 {
		t.Errorf("%d attempts, want 1 (none after the cancellation)", n)
	}
}
