package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/user"
	"sync"
	"time"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/crypto"
)

// Lock timing. A holder writes a fresh lock file every LockRefresh; a lock
// file older than LockStale has missed six refreshes, so its holder is gone
// (or cut off from the repository and about to fail anyway).
const (
	LockRefresh = 5 * time.Minute
	LockStale   = 30 * time.Minute
)

// Retry backoff: the first wait is short so that a lock released at once is
// taken at once; the cap keeps a long wait from polling the backend more
// than every few seconds. Each wait gets up to 50% random jitter, so two
// processes that back off from each other do not retry in step.
const (
	lockRetryFirst = 100 * time.Millisecond
	lockRetryMax   = 5 * time.Second
)

// maxLockFileSize bounds a lock file's plaintext; a real one is ~150 bytes.
const maxLockFileSize = 64 * kiB

// lockFile is the JSON stored, sealed, in a lock file.
type lockFile struct {
	Time      time.Time `json:"time"`
	Exclusive bool      `json:"exclusive"`
	Hostname  string    `json:"hostname"`
	PID       int       `json:"pid"`
	Username  string    `json:"username"`
}

// LockOptions configure Repository.Lock.
type LockOptions struct {
	// Retry is how long to keep trying while another process holds a
	// conflicting lock; zero means one attempt.
	Retry time.Duration

	// refreshEvery overrides LockRefresh in tests.
	refreshEvery time.Duration
}

// Lock is a lock held on a repository. It is refreshed in the background
// until Unlock.
type Lock struct {
	r         *Repository
	exclusive bool
	cancel    context.CancelFunc
	done      chan struct{} // closed when the refresh goroutine ends

	// mu guards the fields below.
	mu       sync.Mutex
	name     string // the current lock file
	err      error  // the last refresh error, nil after a success
	unlocked bool
}

// Lock takes a shared (exclusive false) or exclusive lock. It writes its lock
// file and then reads the others: an exclusive lock conflicts with any other
// lock, a shared one with an exclusive one. On a conflict with a lock that
// is not stale it removes its own file and, once opts.Retry has elapsed,
// fails with an error wrapping ErrLocked that names the holder (host, pid,
// user, age).
//
// A lock file is stale when it is older than LockStale, or when it was
// written on this host by a process that no longer exists. A lock file that
// exists but cannot be authenticated or decoded is treated as a conflicting
// exclusive lock: it can only come from damage or tampering, and ignoring
// it could let a prune run beside a backup. The error names the file;
// RemoveStaleLocks (imago unlock) removes such files.
func (r *Repository) Lock(ctx context.Context, exclusive bool, opts LockOptions) (*Lock, error) {
	deadline := time.Now().Add(opts.Retry)
	wait := lockRetryFirst
	for {
		name, err := r.saveLock(ctx, exclusive)
		if err != nil {
			return nil, fmt.Errorf("repo: lock: %w", err)
		}
		conflict, err := r.findConflict(ctx, name, exclusive)
		if err == nil && conflict == nil {
			return r.startLock(ctx, name, exclusive, opts), nil
		}
		// Leave no lock behind; ctx may be cancelled already.
		rmErr := r.RemoveFile(context.WithoutCancel(ctx), backend.Lock, name)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("repo: lock: %w", err), rmErr)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, errors.Join(fmt.Errorf("repo: lock: %w", conflict), rmErr)
		}
		// The last wait ends at the deadline, for one more attempt there.
		t := time.NewTimer(min(wait+rand.N(wait/2), left))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		wait = min(2*wait, lockRetryMax)
	}
}

// lockIdentity returns the host, pid and user that lock files record.
func lockIdentity() (host string, pid int, username string) {
	host, _ = os.Hostname() // "" when unknown: never matched as "this host"
	if u, err := user.Current(); err == nil {
		username = u.Username
	} else {
		username = os.Getenv("USER")
	}
	return host, os.Getpid(), username
}

// saveLock writes a lock file for this process, stamped now.
func (r *Repository) saveLock(ctx context.Context, exclusive bool) (string, error) {
	host, pid, username := lockIdentity()
	lf := lockFile{Time: r.now().UTC(), Exclusive: exclusive, Hostname: host, PID: pid, Username: username}
	b, err := json.Marshal(lf)
	if err != nil {
		return "", err
	}
	return r.SaveFile(ctx, backend.Lock, b)
}

// loadLock loads and decodes a lock file. damaged reports an error that
// comes from the file's content (not from the backend).
func (r *Repository) loadLock(ctx context.Context, name string) (lf lockFile, damaged bool, err error) {
	b, err := r.LoadFile(ctx, backend.Lock, name)
	if err != nil {
		damaged = errors.Is(err, errNameMismatch) || errors.Is(err, crypto.ErrUnauthenticated)
		return lf, damaged, err
	}
	if len(b) > maxLockFileSize {
		return lf, true, fmt.Errorf("lock file %s: %d bytes, more than %d", shortName(backend.Lock, name), len(b), maxLockFileSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&lf); err != nil {
		return lf, true, fmt.Errorf("lock file %s: %w", shortName(backend.Lock, name), err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return lf, true, fmt.Errorf("lock file %s: data after the JSON object", shortName(backend.Lock, name))
	}
	return lf, false, nil
}

// stale reports whether lf's holder is gone.
func (r *Repository) stale(lf lockFile) bool {
	if r.now().Sub(lf.Time) > LockStale {
		return true
	}
	host, _, _ := lockIdentity()
	return host != "" && lf.Hostname == host && !processExists(lf.PID)
}

// findConflict reads every lock file but ours and returns an error wrapping
// ErrLocked for the first one that conflicts, nil if none does, or a
// backend error.
func (r *Repository) findConflict(ctx context.Context, ours string, exclusive bool) (conflict, err error) {
	var names []string
	err = r.ListFiles(ctx, backend.Lock, func(name string, _ int64) error {
		if name != ours {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		lf, damaged, err := r.loadLock(ctx, name)
		switch {
		case errors.Is(err, backend.ErrNotExist):
			continue // released since the listing
		case damaged:
			return fmt.Errorf("%w: lock file %s cannot be read, treated as an exclusive lock (remove it with `imago unlock`): %w",
				ErrLocked, shortName(backend.Lock, name), err), nil
		case err != nil:
			return nil, err
		case r.stale(lf):
			continue
		case exclusive || lf.Exclusive:
			return fmt.Errorf("%w: %s", ErrLocked, describeLock(lf, name, r.now())), nil
		}
	}
	return nil, nil
}

// describeLock says who holds lf, e.g. "exclusive lock by pid 42 on host
// a (user b), created 3m0s ago (locks/1a2b3c4d)".
func describeLock(lf lockFile, name string, now time.Time) string {
	kind := "shared"
	if lf.Exclusive {
		kind = "exclusive"
	}
	return fmt.Sprintf("%s lock by pid %d on host %q (user %q), created %v ago (%s)",
		kind, lf.PID, lf.Hostname, lf.Username, now.Sub(lf.Time).Round(time.Second), shortName(backend.Lock, name))
}

// startLock returns the Lock for lock file name and starts its refresh.
func (r *Repository) startLock(ctx context.Context, name string, exclusive bool, opts LockOptions) *Lock {
	every := opts.refreshEvery
	if every == 0 {
		every = LockRefresh
	}
	// The refresh outlives the ctx of the Lock call; Unlock ends it.
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l := &Lock{r: r, exclusive: exclusive, cancel: cancel, done: make(chan struct{}), name: name}
	go l.refreshLoop(rctx, every)
	return l
}

// refreshLoop writes a new lock file every interval, until ctx ends.
func (l *Lock) refreshLoop(ctx context.Context, every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.refresh(ctx)
		}
	}
}

// refresh writes a new lock file, then removes the old one, so that the
// lock is never absent from the repository.
func (l *Lock) refresh(ctx context.Context) {
	name, err := l.r.saveLock(ctx, l.exclusive)
	if err != nil {
		l.mu.Lock()
		l.err = fmt.Errorf("repo: refresh lock: %w", err)
		l.mu.Unlock()
		return
	}
	l.mu.Lock()
	old := l.name
	l.name = name
	l.err = nil
	l.mu.Unlock()
	if err := l.r.RemoveFile(ctx, backend.Lock, old); err != nil && !errors.Is(err, backend.ErrNotExist) {
		l.mu.Lock()
		l.err = fmt.Errorf("repo: refresh lock: %w", err)
		l.mu.Unlock()
	}
}

// Name returns the name of the lock's current lock file.
func (l *Lock) Name() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.name
}

// Err returns the error of the last refresh, or nil if it succeeded. A
// holder whose refreshes keep failing for LockStale may be considered gone
// by others and should stop.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Unlock stops the refresh and removes the lock file. Calling it again does
// nothing.
func (l *Lock) Unlock(ctx context.Context) error {
	l.mu.Lock()
	if l.unlocked {
		l.mu.Unlock()
		return nil
	}
	l.unlocked = true
	l.mu.Unlock()
	l.cancel()
	<-l.done
	if err := l.r.RemoveFile(ctx, backend.Lock, l.Name()); err != nil {
		return fmt.Errorf("repo: unlock: %w", err)
	}
	return nil
}

// RemoveStaleLocks removes the lock files that are stale (see Lock) or
// cannot be read, and returns how many it removed.
func (r *Repository) RemoveStaleLocks(ctx context.Context) (int, error) {
	return r.removeLocks(ctx, func(name string) (bool, error) {
		lf, damaged, err := r.loadLock(ctx, name)
		switch {
		case damaged:
			return true, nil
		case err != nil:
			return false, err
		}
		return r.stale(lf), nil
	})
}

// RemoveAllLocks removes every lock file, whoever holds it, and returns how
// many it removed. Use it only when no other process uses the repository.
func (r *Repository) RemoveAllLocks(ctx context.Context) (int, error) {
	return r.removeLocks(ctx, func(string) (bool, error) { return true, nil })
}

// removeLocks removes the lock files for which doomed reports true. Files
// that vanish meanwhile are not counted and are no error.
func (r *Repository) removeLocks(ctx context.Context, doomed func(name string) (bool, error)) (int, error) {
	var names []string
	err := r.ListFiles(ctx, backend.Lock, func(name string, _ int64) error {
		names = append(names, name)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("repo: list locks: %w", err)
	}
	n := 0
	for _, name := range names {
		rm, err := doomed(name)
		if errors.Is(err, backend.ErrNotExist) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("repo: remove locks: %w", err)
		}
		if !rm {
			continue
		}
		err = r.RemoveFile(ctx, backend.Lock, name)
		if errors.Is(err, backend.ErrNotExist) {
			continue
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
