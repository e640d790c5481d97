package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// forgetGroupOut is the --json output of forget, as a script reads it.
type forgetGroupOut struct {
	Group  map[string]any  `json:"group"`
	Keep   []forgetSnapOut `json:"keep"`
	Remove []forgetSnapOut `json:"remove"`
}

type forgetSnapOut struct {
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Host    string    `json:"host"`
	Paths   []string  `json:"paths"`
	Reasons []string  `json:"reasons"`
}

// snapshotDays lists the local dates of the repository's snapshots, oldest
// first, and maps each date to its snapshot ID.
func snapshotDays(t *testing.T, e *env, loc *time.Location) ([]string, map[string]string) {
	t.Helper()
	r := e.mustRun("snapshots", "--json")
	var snaps []forgetSnapOut
	if err := json.Unmarshal([]byte(r.stdout), &snaps); err != nil {
		t.Fatalf("snapshots --json: %v\n%s", err, r.stdout)
	}
	var days []string
	ids := map[string]string{}
	for _, s := range snaps {
		d := s.Time.In(loc).Format("2006-01-02")
		days = append(days, d)
		ids[d] = s.ID
	}
	slices.Sort(days)
	return days, ids
}

func TestForgetE2E(t *testing.T) {
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	// The policy's calendar is the local time zone of the forget process.
	e.extraEnv = append(e.extraEnv, "TZ=Europe/Berlin")
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "file"), []byte("forget me not\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// One backup at noon on each of 40 days: Thursday 1 January to Monday
	// 9 February 2026.
	first := time.Date(2026, 1, 1, 12, 0, 0, 0, loc)
	for i := range 40 {
		e.backupJSON("--host", "h", "--time", first.AddDate(0, 0, i).Format("2006-01-02 15:04:05"), src)
	}
	all, ids := snapshotDays(t, e, loc)
	if len(all) != 40 {
		t.Fatalf("%d snapshots after 40 backups", len(all))
	}

	// Hand-computed: the 7 newest days are 3–9 February; the 4 newest ISO
	// weeks are 2026-W07 (9 February), W06 (2–8 February: the 8th), W05
	// (26 January–1 February: the 1st) and W04 (19–25 January: the 25th).
	wantDays := []string{"2026-01-25", "2026-02-01", "2026-02-03", "2026-02-04", "2026-02-05",
		"2026-02-06", "2026-02-07", "2026-02-08", "2026-02-09"}
	policy := []string{"forget", "--keep-daily", "7", "--keep-weekly", "4"}
	// sub returns the env for a subtest: its helpers must fail the subtest,
	// not the parent.
	sub := func(t *testing.T) *env {
		c := *e
		c.t = t
		return &c
	}

	t.Run("dry run removes nothing", func(t *testing.T) {
		e := sub(t)
		r := e.mustRun(append(policy, "--dry-run")...)
		if !strings.Contains(r.stdout, "would remove 31 snapshots") || !strings.Contains(r.stdout, "keep 9 snapshots") {
			t.Errorf("dry-run output:\n%s", r.stdout)
		}
		if !strings.Contains(r.stdout, "daily snapshot, weekly snapshot") {
			t.Errorf("dry-run output lacks the reasons:\n%s", r.stdout)
		}
		if days, _ := snapshotDays(t, e, loc); len(days) != 40 {
			t.Errorf("%d snapshots after a dry run, want 40", len(days))
		}
	})

	t.Run("json lists kept and removed snapshots with reasons", func(t *testing.T) {
		e := sub(t)
		r := e.mustRun(append(policy, "--dry-run", "--json")...)
		var groups []forgetGroupOut
		if err := json.Unmarshal([]byte(r.stdout), &groups); err != nil {
			t.Fatalf("forget --json: %v\n%s", err, r.stdout)
		}
		if len(groups) != 1 {
			t.Fatalf("%d groups, want 1", len(groups))
		}
		grp := groups[0]
		if grp.Group["host"] != "h" || grp.Group["paths"] == nil {
			t.Errorf("group key %v", grp.Group)
		}
		if len(grp.Keep) != 9 || len(grp.Remove) != 31 {
			t.Fatalf("kept %d, removed %d; want 9 and 31", len(grp.Keep), len(grp.Remove))
		}
		reasons := map[string][]string{}
		for _, s := range grp.Keep {
			reasons[s.Time.In(loc).Format("2006-01-02")] = s.Reasons
		}
		for day, want := range map[string][]string{
			"2026-02-09": {"daily snapshot", "weekly snapshot"},
			"2026-02-08": {"daily snapshot", "weekly snapshot"},
			"2026-02-07": {"daily snapshot"},
			"2026-02-01": {"weekly snapshot"},
			"2026-01-25": {"weekly snapshot"},
		} {
			if !slices.Equal(reasons[day], want) {
				t.Errorf("reasons for %s: %q, want %q", day, reasons[day], want)
			}
		}
		for _, s := range grp.Remove {
			if len(s.Reasons) != 0 || s.ID == "" {
				t.Errorf("removed snapshot %+v", s)
			}
		}
	})

	t.Run("policy keeps exactly the expected snapshots", func(t *testing.T) {
		e := sub(t)
		r := e.mustRun(policy...)
		if !strings.Contains(r.stdout, "removed 31 snapshots") {
			t.Errorf("output:\n%s", r.stdout)
		}
		days, _ := snapshotDays(t, e, loc)
		if !slices.Equal(days, wantDays) {
			t.Errorf("kept %v, want %v", days, wantDays)
		}
		// Applying the same policy again removes nothing.
		r = e.mustRun(policy...)
		if !strings.Contains(r.stdout, "removed 0 snapshots") {
			t.Errorf("second run:\n%s", r.stdout)
		}
	})

	t.Run("empty policy is refused", func(t *testing.T) {
		e := sub(t)
		r := e.run("forget")
		if r.code == 0 || !strings.Contains(r.stderr, "no policy given") {
			t.Errorf("forget without a policy: exit %d, stderr %q", r.code, r.stderr)
		}
		r = e.run("forget", "--keep-daily", "1", ids["2026-02-09"])
		if r.code == 0 {
			t.Error("forget accepted a policy together with snapshot IDs")
		}
		if days, _ := snapshotDays(t, e, loc); len(days) != 9 {
			t.Errorf("%d snapshots after refused forgets, want 9", len(days))
		}
	})

	t.Run("explicit IDs and prefixes", func(t *testing.T) {
		e := sub(t)
		r := e.run("forget", ids["2026-01-25"][:10], "0000000000000000")
		if r.code == 0 {
			t.Fatal("forget of an unknown ID succeeded")
		}
		if days, _ := snapshotDays(t, e, loc); len(days) != 9 {
			t.Fatalf("an unknown ID still removed snapshots: %d left", len(days))
		}
		e.mustRun("forget", ids["2026-01-25"][:10], ids["2026-02-01"])
		days, _ := snapshotDays(t, e, loc)
		if want := wantDays[2:]; !slices.Equal(days, want) {
			t.Errorf("after forgetting two by ID: %v, want %v", days, want)
		}
	})

	t.Run("unsafe-allow-remove-all removes the selected snapshots", func(t *testing.T) {
		e := sub(t)
		e.mustRun("forget", "--unsafe-allow-remove-all", "--host", "other")
		if days, _ := snapshotDays(t, e, loc); len(days) != 7 {
			t.Fatalf("removing another host's snapshots left %d of 7", len(days))
		}
		e.mustRun("forget", "--unsafe-allow-remove-all", "--host", "h")
		if days, _ := snapshotDays(t, e, loc); len(days) != 0 {
			t.Errorf("%d snapshots left", len(days))
		}
	})
}

func TestForgetPruneE2E(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	data := filepath.Join(e.repo, "data")
	// Two snapshots with 4 MiB of random data each that the other lacks.
	writeRandom(t, filepath.Join(src, "payload"), 4<<20, 11)
	e.backupJSON("--time", "2026-01-01 12:00:00", src)
	writeRandom(t, filepath.Join(src, "payload"), 4<<20, 12)
	e.backupJSON("--time", "2026-01-02 12:00:00", src)
	before := dirSize(t, data)

	// A dry run neither removes the snapshot nor prunes.
	e.mustRun("forget", "--keep-last", "1", "--prune", "--dry-run")
	if days, _ := snapshotDays(t, e, time.UTC); len(days) != 2 {
		t.Fatalf("%d snapshots after a dry run", len(days))
	}
	if got := dirSize(t, data); got != before {
		t.Fatalf("a dry run changed the packs: %d -> %d bytes", before, got)
	}

	r := e.mustRun("forget", "--keep-last", "1", "--prune", "--json")
	// stdout holds forget's array, then prune's summary line.
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var groups []forgetGroupOut
	if err := json.Unmarshal([]byte(lines[0]), &groups); err != nil || len(groups) != 1 || len(groups[0].Remove) != 1 {
		t.Fatalf("forget --json: %v\n%s", err, r.stdout)
	}
	if sum := lastJSONLine(t, r.stdout); sum["message_type"] != "summary" {
		t.Errorf("no prune summary after forget's output:\n%s", r.stdout)
	}
	days, _ := snapshotDays(t, e, time.UTC)
	if !slices.Equal(days, []string{"2026-01-02"}) {
		t.Errorf("snapshots left: %v", days)
	}
	// The forgotten snapshot's 4 MiB are gone (it had no data in common
	// with the kept one), and the repository is consistent.
	if after := dirSize(t, data); after > before-(3<<20) {
		t.Errorf("packs shrank from %d to %d bytes, want at least 3 MiB less", before, after)
	}
	e.mustRun("check")
}
