package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/mem"
)

// lockNow is the fixed time of the lock tests' clock.
var lockNow = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func lockTestRepository(t *testing.T) *Repository {
	return TestRepository(t, TestClock(func() time.Time { return lockNow }))
}

// writeLock stores a lock file as another process would.
func writeLock(t *testing.T, r *Repository, lf lockFile) string {
	t.Helper()
	b, err := json.Marshal(lf)
	if err != nil {
		t.Fatal(err)
	}
	name, err := r.SaveFile(context.Background(), backend.Lock, b)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

func countLocks(t *testing.T, r *Repository) int {
	t.Helper()
	n := 0
	if err := r.ListFiles(context.Background(), backend.Lock, func(string, int64) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestLockConflicts(t *testing.T) {
	ctx := context.Background()
	host, _ := os.Hostname()
	for _, c := range []struct {
		name          string
		held          lockFile
		exclusive     bool
		wantErrLocked bool
	}{
		{"shared beside shared", lockFile{Time: lockNow, Hostname: "b", PID: 1}, false, false},
		{"exclusive beside shared", lockFile{Time: lockNow, Hostname: "b", PID: 1}, true, true},
		{"shared beside exclusive", lockFile{Time: lockNow, Exclusive: true, Hostname: "b", PID: 1}, false, true},
		{"exclusive beside exclusive", lockFile{Time: lockNow, Exclusive: true, Hostname: "b", PID: 1}, true, true},
		{"beside a lock 29 minutes old", lockFile{Time: lockNow.Add(-29 * time.Minute), Exclusive: true, Hostname: "b", PID: 1}, true, true},
		{"beside a stale lock 31 minutes old", lockFile{Time: lockNow.Add(-31 * time.Minute), Exclusive: true, Hostname: "b", PID: 1}, true, false},
		{"beside a lock of a live process on this host", lockFile{Time: lockNow, Exclusive: true, Hostname: host, PID: os.Getpid()}, true, true},
		// Linux pids stay below 2^22, so this process cannot exist.
		{"beside a lock of a dead process on this host", lockFile{Time: lockNow, Exclusive: true, Hostname: host, PID: 1 << 30}, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := lockTestRepository(t)
			writeLock(t, r, c.held)
			l, err := r.Lock(ctx, c.exclusive, LockOptions{})
			if c.wantErrLocked {
				if !errors.Is(err, ErrLocked) {
					t.Fatalf("Lock = %v, want ErrLocked", err)
				}
				wantErrContaining(t, err, fmt.Sprintf("pid %d", c.held.PID), fmt.Sprintf("host %q", c.held.Hostname))
				if n := countLocks(t, r); n != 1 {
					t.Errorf("%d lock files after a refused lock, want only the holder's", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("Lock: %v", err)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			if n := countLocks(t, r); n != 1 {
				t.Errorf("%d lock files after Unlock, want only the other one", n)
			}
		})
	}
}

func TestLockBetweenSessions(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	a := TestRepositoryWithBackend(t, be)
	b, err := Open(ctx, be, TestPassword, OpenOptions{NoIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	la, err := a.Lock(ctx, false, LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.Lock(ctx, false, LockOptions{})
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	_, err = b.Lock(ctx, true, LockOptions{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("exclusive lock beside two shared ones = %v", err)
	}
	wantErrContaining(t, err, "shared lock", fmt.Sprintf("pid %d", os.Getpid()))
	for _, l := range []*Lock{la, lb} {
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	lx, err := b.Lock(ctx, true, LockOptions{})
	if err != nil {
		t.Fatalf("exclusive lock after both unlocked: %v", err)
	}
	if err := lx.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lx.Unlock(ctx); err != nil {
		t.Errorf("second Unlock = %v, want nil", err)
	}
	if n := countLocks(t, a); n != 0 {
		t.Errorf("%d lock files left", n)
	}
}

func TestLockRetry(t *testing.T) {
	ctx := context.Background()
	r := TestRepository(t)
	held, err := r.Lock(ctx, true, LockOptions{})
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	_, err = r.Lock(ctx, false, LockOptions{Retry: 300 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Lock with a short retry = %v, want ErrLocked", err)
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Errorf("gave up after %v, want about the 300ms retry", waited)
	}

	const release = 200 * time.Millisecond
	go func() {
		time.Sleep(release)
		_ = held.Unlock(ctx)
	}()
	start = time.Now()
	l, err := r.Lock(ctx, false, LockOptions{Retry: 10 * time.Second})
	if err != nil {
		t.Fatalf("Lock with retry while the holder unlocks: %v", err)
	}
	if waited := time.Since(start); waited < release {
		t.Errorf("got the lock after %v, before the holder released it", waited)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLockRefresh(t *testing.T) {
	ctx := context.Background()
	clock := make(chan time.Time, 1)
	clock <- lockNow
	now := func() time.Time { t := <-clock; clock <- t; return t }
	r := TestRepository(t, TestClock(now))
	l, err := r.Lock(ctx, true, LockOptions{refreshEvery: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	first := l.Name()
	<-clock
	clock <- lockNow.Add(time.Minute)
	deadline := time.Now().Add(5 * time.Second)
	for l.Name() == first && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if l.Name() == first {
		t.Fatal("lock file was not refreshed")
	}
	if err := l.Err(); err != nil {
		t.Errorf("refresh error: %v", err)
	}
	// Time passes beyond the stale limit of the first lock file only; the
	// refreshed one keeps others out.
	<-clock
	clock <- lockNow.Add(time.Minute + LockStale - time.Second)
	if _, err := r.Lock(ctx, false, LockOptions{}); !errors.Is(err, ErrLocked) {
		t.Errorf("shared lock beside a refreshed exclusive lock = %v, want ErrLocked", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countLocks(t, r); n != 0 {
		t.Errorf("%d lock files after Unlock, want 0", n)
	}
}

func TestDamagedLockFile(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := TestRepositoryWithBackend(t, be)
	junk := []byte("not a lock")
	name := hashName(junk)
	be.SetRaw(backend.Handle{Type: backend.Lock, Name: name}, junk)

	_, err := r.Lock(ctx, false, LockOptions{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Lock beside a damaged lock file = %v, want ErrLocked", err)
	}
	wantErrContaining(t, err, shortName(backend.Lock, name), "imago unlock")

	n, err := r.RemoveStaleLocks(ctx)
	if err != nil || n != 1 {
		t.Fatalf("RemoveStaleLocks = %d, %v; want the damaged file removed", n, err)
	}
	l, err := r.Lock(ctx, false, LockOptions{})
	if err != nil {
		t.Fatalf("Lock after removing the damaged file: %v", err)
	}
	_ = l.Unlock(ctx)
}

func TestRemoveLocks(t *testing.T) {
	ctx := context.Background()
	r := lockTestRepository(t)
	writeLock(t, r, lockFile{Time: lockNow.Add(-time.Hour), Exclusive: true, Hostname: "gone", PID: 7})
	writeLock(t, r, lockFile{Time: lockNow.Add(-time.Minute), Hostname: "alive", PID: 8})
	held, err := r.Lock(ctx, false, LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock(ctx)

	n, err := r.RemoveStaleLocks(ctx)
	if err != nil || n != 1 {
		t.Fatalf("RemoveStaleLocks = %d, %v; want the one stale lock removed", n, err)
	}
	if got := countLocks(t, r); got != 2 {
		t.Errorf("%d lock files after RemoveStaleLocks, want 2", got)
	}
	n, err = r.RemoveAllLocks(ctx)
	if err != nil || n != 2 {
		t.Fatalf("RemoveAllLocks = %d, %v; want 2", n, err)
	}
	if got := countLocks(t, r); got != 0 {
		t.Errorf("%d lock files after RemoveAllLocks", got)
	}
}
