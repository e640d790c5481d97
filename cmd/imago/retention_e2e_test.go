package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// churnImage applies night n's deterministic churn to a 32 MiB image:
// scattered 4 KiB writes (about 1% of the blocks) and one rewritten
// 256 KiB "file".
func churnImage(t *testing.T, path string, n int) {
	t.Helper()
	const size = 32 << 20
	for i := range 80 {
		off := int64((n*7919+i*104729)%(size/4096)) * 4096
		writeAt(t, path, off, 4096, uint64(n*1000+i))
	}
	writeAt(t, path, int64(n%100)*256<<10, 256<<10, uint64(n)+1e6)
}

func copyFile(t *testing.T, dst, src string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSixtyNightsForgetPrune makes 60 nightly image backups with churn,
// applies `forget --keep-daily 7 --keep-weekly 4 --prune`, and checks that
// exactly the expected snapshots remain, that the repository is at most 1.1
// times a fresh repository holding only them, that `check --read-data`
// passes, and that every kept night restores byte-identical.
func TestSixtyNightsForgetPrune(t *testing.T) {
	e := newEnv(t)
	e.extraEnv = append(e.extraEnv, "TZ=UTC")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	writeRandom(t, img, 32<<20, 77)

	// The expected survivors, by the documented rules (docs/RETENTION.md):
	// the newest snapshot of each of the 7 newest days, and of each of the
	// 4 newest ISO weeks. Nights are 02:00 UTC from Monday 2 March 2026.
	first := time.Date(2026, 3, 2, 2, 0, 0, 0, time.UTC)
	const nights = 60
	keep := map[int]bool{}
	for n := nights - 7; n < nights; n++ {
		keep[n] = true
	}
	weeks := map[string]bool{}
	for n := nights - 1; n >= 0 && len(weeks) < 4; n-- {
		y, w := first.AddDate(0, 0, n).ISOWeek()
		k := fmt.Sprint(y, w)
		if !weeks[k] {
			weeks[k] = true
			keep[n] = true
		}
	}

	sums := map[string]string{} // snapshot ID -> sha256 of that night's image
	kept := map[string]int{}    // snapshot ID -> night, for the expected survivors
	for n := range nights {
		if n > 0 {
			churnImage(t, img, n)
		}
		s := e.backupJSON("--image", img, "--time", first.AddDate(0, 0, n).Format(time.RFC3339))
		id := s["snapshot_id"].(string)
		sums[id] = sha256File(t, img)
		if keep[n] {
			kept[id] = n
			copyFile(t, filepath.Join(dir, fmt.Sprintf("night-%02d.img", n)), img)
		}
	}
	before := dirSize(t, e.repo)
	e.mustRun("forget", "--keep-daily", "7", "--keep-weekly", "4", "--prune")
	after := dirSize(t, e.repo)

	got := loadSnapshotList(t, e)
	var want []string
	for id := range kept {
		want = append(want, id)
	}
	sort.Strings(got)
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("forget kept %d snapshots %v, want %d %v", len(got), got, len(want), want)
	}

	// A fresh repository with only the kept nights, backed up in order.
	fresh := &env{t: t, repo: filepath.Join(t.TempDir(), "fresh"), password: "x"}
	fresh.mustRun("init")
	var nightsKept []int
	for _, n := range kept {
		nightsKept = append(nightsKept, n)
	}
	sort.Ints(nightsKept)
	for _, n := range nightsKept {
		fresh.mustRun("backup", "--image", filepath.Join(dir, fmt.Sprintf("night-%02d.img", n)))
	}
	freshSize := dirSize(t, fresh.repo)
	t.Logf("repository: %d bytes before forget, %d after prune; fresh repository with the %d kept nights: %d (ratio %.3f)",
		before, after, len(nightsKept), freshSize, float64(after)/float64(freshSize))
	if float64(after) > 1.1*float64(freshSize) {
		t.Errorf("after prune the repository holds %d bytes, more than 1.1 × the %d of a fresh repository with the kept snapshots", after, freshSize)
	}

	e.mustRun("check", "--read-data")
	for id := range kept {
		target := filepath.Join(t.TempDir(), "r.img")
		e.mustRun("restore", id, "--target", target)
		if s := sha256File(t, target); s != sums[id] {
			t.Fatalf("snapshot %s (night %d) restored with a different sha256", id[:8], kept[id])
		}
	}
}

// loadSnapshotList returns the IDs of the repository's snapshots.
func loadSnapshotList(t *testing.T, e *env) []string {
	t.Helper()
	var snaps []struct {
		ID string `json:"id"`
	}
	r := e.mustRun("snapshots", "--json")
	if err := jsonUnmarshal(r.stdout, &snaps); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range snaps {
		ids = append(ids, s.ID)
	}
	return ids
}
