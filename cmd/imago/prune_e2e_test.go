package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pruneDay is one backup of the churn fixture: its snapshot and the
// content of its files.
type pruneDay struct {
	id    string
	files map[string][32]byte // path relative to the source → SHA-256
}

// hashDir returns the SHA-256 of every regular file below dir.
func hashDir(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	m := map[string][32]byte{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		m[rel] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// assertRestores restores snapshot d and compares every file with the
// backed-up content.
func (e *env) assertRestores(src string, d pruneDay, what string) {
	e.t.Helper()
	target := e.t.TempDir()
	e.mustRun("restore", d.id, "--target", target)
	got := hashDir(e.t, filepath.Join(target, src))
	if len(got) != len(d.files) {
		e.t.Fatalf("%s: snapshot %s restored %d files, want %d", what, shortID(d.id), len(got), len(d.files))
	}
	for p, h := range d.files {
		if got[p] != h {
			e.t.Fatalf("%s: snapshot %s: %s differs after restore", what, shortID(d.id), p)
		}
	}
}

// newPruneEnv makes a repository with 4 MiB packs (so that a few MiB of
// data make many packs, some of them mixed) and backs up src on four days
// with churn: files come and go and one is rewritten daily. It returns the
// days, oldest first.
func newPruneEnv(t *testing.T) (*env, string, []pruneDay) {
	t.Helper()
	e := &env{t: t, repo: filepath.Join(t.TempDir(), "repo"), password: "prune test"}
	e.mustRun("init", "--pack-size", "4")
	src := t.TempDir()
	writeRandom(t, filepath.Join(src, "stable"), 3<<20, 100)
	var days []pruneDay
	for d := range 4 {
		writeRandom(t, filepath.Join(src, fmt.Sprintf("new-%d", d)), 2<<20+d*4096, uint64(200+d))
		writeRandom(t, filepath.Join(src, "churn"), 1<<20, uint64(300+d))
		if d >= 2 {
			if err := os.Remove(filepath.Join(src, fmt.Sprintf("new-%d", d-2))); err != nil {
				t.Fatal(err)
			}
		}
		m := e.backupJSON("--time", fmt.Sprintf("2024-03-%02d 12:00:00", d+1), src)
		days = append(days, pruneDay{id: m["snapshot_id"].(string), files: hashDir(t, src)})
	}
	return e, src, days
}

// forgetDays removes the snapshot files of days (forget's job, done here
// directly so that these tests depend on prune alone).
func (e *env) forgetDays(days ...pruneDay) {
	e.t.Helper()
	for _, d := range days {
		if err := os.Remove(filepath.Join(e.repo, "snapshots", d.id)); err != nil {
			e.t.Fatal(err)
		}
	}
}

// pruneJSONOut runs prune with extra args and --json and decodes it.
func (e *env) pruneJSONOut(args ...string) pruneJSON {
	e.t.Helper()
	r := e.mustRun(append([]string{"prune", "--json"}, args...)...)
	var out pruneJSON
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &out); err != nil {
		e.t.Fatalf("prune --json: %v\n%s", err, r.stdout)
	}
	return out
}

// assertIntact checks that `check` passes and every kept snapshot
// restores.
func (e *env) assertIntact(src string, kept []pruneDay, what string) {
	e.t.Helper()
	e.mustRun("check")
	for _, d := range kept {
		e.assertRestores(src, d, what)
	}
}

// assertPruned checks the repository after a prune: it is intact and a
// further prune finds nothing to do.
func (e *env) assertPruned(src string, kept []pruneDay, what string) {
	e.t.Helper()
	e.assertIntact(src, kept, what)
	p := e.pruneJSONOut("--dry-run", "--max-unused", "0")
	if s := p.Plan; s.PacksDelete+s.PacksRepack+s.PacksUnindexed+s.PacksMissing != 0 || s.BytesUnused != 0 {
		e.t.Fatalf("%s: a further prune still plans %+v", what, s)
	}
}

func TestPruneE2EShrinksAndRestores(t *testing.T) {
	e, src, days := newPruneEnv(t)
	e.forgetDays(days[0], days[1])
	before := dirSize(t, filepath.Join(e.repo, "data"))

	dry := e.pruneJSONOut("--dry-run")
	if dry.Plan.PacksDelete == 0 || dry.Plan.PacksRepack == 0 || dry.Snapshots != 2 {
		t.Fatalf("dry run plans %+v for %d snapshots: want packs to delete and to repack, 2 snapshots", dry.Plan, dry.Snapshots)
	}
	if got := dirSize(t, filepath.Join(e.repo, "data")); got != before {
		t.Fatalf("--dry-run changed the packs: %d bytes, was %d", got, before)
	}

	r := e.mustRun("prune", "--max-unused", "0")
	if !strings.Contains(r.stdout, "prune done: removed") {
		t.Errorf("prune printed no summary line:\n%s", r.stdout)
	}
	after := dirSize(t, filepath.Join(e.repo, "data"))
	// The plan's estimate can be off by a pack header per new pack.
	if diff := after - dry.Plan.BytesAfter; after >= before || diff < -4096 || diff > 4096 {
		t.Errorf("packs: %d bytes before, %d after; the plan expected %d", before, after, dry.Plan.BytesAfter)
	}
	// Only days 0 and 1 held new-0 (2 MiB) and two versions of churn
	// (1 MiB each).
	if before-after < 4<<20-1<<18 {
		t.Errorf("prune freed %d bytes, want about 4 MiB", before-after)
	}
	e.assertPruned(src, days[2:], "after prune")
}

// pruneUntilPause starts `imago prune` paused at step (see pruneTestPause)
// and returns the running process once it reports the pause. With resume,
// the process waits for that file to exist instead of sleeping forever.
func (e *env) pruneUntilPause(step, resume string, args ...string) *exec.Cmd {
	e.t.Helper()
	cmd := exec.Command(binary, append([]string{"-r", e.repo, "prune"}, args...)...)
	cmd.Env = append(os.Environ(), "IMAGO_PASSWORD="+e.password, "IMAGO_INSECURE_TEST_KDF=1", pruneTestPause+"="+step)
	if resume != "" {
		cmd.Env = append(cmd.Env, pruneTestResume+"="+resume)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	paused := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		found := false
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "imago-test-pause ") && !found {
				found = true
				paused <- true
			}
		}
		if !found {
			paused <- false
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case ok := <-paused:
		if !ok {
			_ = cmd.Wait()
			e.t.Fatalf("prune ended without reaching step %s", step)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		e.t.Fatalf("prune did not reach step %s in 30 s", step)
	}
	return cmd
}

// TestPruneE2ESIGKILL kills `imago prune` at every step, and at a few
// delays, each time on a copy of the same repository: afterwards `unlock`
// clears its lock, `check` passes, the kept snapshots restore, and the next
// prune completes.
func TestPruneE2ESIGKILL(t *testing.T) {
	base, src, days := newPruneEnv(t)
	base.forgetDays(days[0], days[1])
	dry := base.pruneJSONOut("--dry-run", "--max-unused", "0")
	if dry.Plan.PacksRepack == 0 || dry.Plan.IndexFilesReplace == 0 {
		t.Fatalf("the fixture needs repacking and index replacement: plan %+v", dry.Plan)
	}
	kills := []struct {
		step  string
		delay time.Duration
	}{
		{step: "planned"}, {step: "repack:1"}, {step: "flush"},
		{step: "exclusive"}, {step: "remove-index:1"}, {step: "remove-pack:1"}, {step: "remove-pack:3"},
		{delay: 30 * time.Millisecond}, {delay: 80 * time.Millisecond}, {delay: 200 * time.Millisecond},
	}
	for _, k := range kills {
		name := k.step
		if name == "" {
			name = "after " + k.delay.String()
		}
		t.Run(name, func(t *testing.T) {
			e := &env{t: t, repo: filepath.Join(t.TempDir(), "repo"), password: base.password}
			if out, err := exec.Command("cp", "-a", base.repo, e.repo).CombinedOutput(); err != nil {
				t.Fatalf("copy repository: %v\n%s", err, out)
			}
			var cmd *exec.Cmd
			if k.step != "" {
				cmd = e.pruneUntilPause(k.step, "", "--max-unused", "0")
			} else {
				cmd = exec.Command(binary, "-r", e.repo, "prune", "--max-unused", "0")
				cmd.Env = append(os.Environ(), "IMAGO_PASSWORD="+e.password, "IMAGO_INSECURE_TEST_KDF=1")
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(k.delay)
			}
			_ = cmd.Process.Kill() // SIGKILL
			_ = cmd.Wait()

			e.mustRun("unlock")
			e.mustRun("check")
			for _, d := range days[2:] {
				e.assertRestores(src, d, "after the kill")
			}
			e.mustRun("prune", "--max-unused", "0")
			e.assertPruned(src, days[2:], "after the kill and a prune")
		})
	}
}

// TestPruneE2EConcurrentBackup runs backups beside a prune: one while the
// prune holds its shared lock (between plan and repack), which restores
// data the prune planned to delete; one started while the prune holds its
// exclusive lock, which waits and then stores that data again. Both
// snapshots restore byte-identical afterwards.
func TestPruneE2EConcurrentBackup(t *testing.T) {
	e, src, days := newPruneEnv(t)
	e.forgetDays(days[0], days[1])
	resume := filepath.Join(t.TempDir(), "resume")

	// The prune has planned, holding its shared lock. A backup runs and
	// brings back the content of day 0 that the plan found unused.
	prune := e.pruneUntilPause("planned", resume, "--max-unused", "0")
	writeRandom(t, filepath.Join(src, "new-0"), 2<<20, 200)
	m := e.backupJSON("--time", "2024-03-05 12:00:00", src)
	during := pruneDay{id: m["snapshot_id"].(string), files: hashDir(t, src)}
	if err := os.WriteFile(resume, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := prune.Wait(); err != nil {
		t.Fatalf("prune beside a backup: %v", err)
	}
	// The packs the backup needed were kept whole, with their unused
	// blobs: the next prune repacks them.
	kept := append(days[2:], during)
	e.assertIntact(src, kept, "backup during the shared step")
	e.mustRun("prune", "--max-unused", "0")
	e.assertPruned(src, kept, "backup during the shared step, then a prune")

	// Now a prune stops in its exclusive step, about to remove day 2's
	// unique data; a backup that brings that data back starts meanwhile
	// (loading the old index) and must wait for the lock.
	e.forgetDays(days[2])
	if err := os.Remove(resume); err != nil {
		t.Fatal(err)
	}
	prune = e.pruneUntilPause("exclusive", resume, "--max-unused", "0")
	writeRandom(t, filepath.Join(src, "new-2"), 2<<20+2*4096, 202)
	writeRandom(t, filepath.Join(src, "churn"), 1<<20, 302)
	backup := exec.Command(binary, "-r", e.repo, "backup", "--json", "--time", "2024-03-06 12:00:00", src)
	backup.Env = append(os.Environ(), "IMAGO_PASSWORD="+e.password, "IMAGO_INSECURE_TEST_KDF=1")
	var out strings.Builder
	backup.Stdout = &out
	if err := backup.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the backup opens the repository and waits for the lock
	if err := os.WriteFile(resume, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := prune.Wait(); err != nil {
		t.Fatalf("prune: %v", err)
	}
	if err := backup.Wait(); err != nil {
		t.Fatalf("backup waiting for prune's exclusive step: %v\n%s", err, out.String())
	}
	var sum map[string]any
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
		t.Fatalf("backup output: %v\n%s", err, out.String())
	}
	after := pruneDay{id: sum["snapshot_id"].(string), files: hashDir(t, src)}
	e.assertIntact(src, []pruneDay{days[3], during, after}, "backup waiting for the exclusive step")
}

func TestPruneE2EFlagsAndLock(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{{"--max-unused", "five"}, {"--max-repack-size", "lots"}} {
		if r := e.run(append([]string{"prune"}, args...)...); r.code != exitError {
			t.Errorf("prune %v: exit %d, want %d", args, r.code, exitError)
		}
	}
	// A prune stopped in its exclusive step holds the exclusive lock:
	// another prune (no --retry-lock) exits 12 at once.
	e.mustRun("backup", t.TempDir())
	cmd := e.pruneUntilPause("exclusive", "")
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if r := e.run("prune"); r.code != exitLocked {
		t.Errorf("prune beside a prune's exclusive step: exit %d, want %d\n%s", r.code, exitLocked, r.stderr)
	}
}
