package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkSource writes a small source tree: a 3 MiB random file (data
// packs), a text file and a compressible file.
func checkSource(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(src, "random"), 3<<20, 11)
	if err := os.WriteFile(filepath.Join(src, "notes.txt"), []byte("first notes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "text"), []byte(strings.Repeat("some text ", 5000)), 0o644); err != nil {
		t.Fatal(err)
	}
	return src
}

// largestPack returns the path of the largest pack file: a data pack.
func largestPack(t *testing.T, repo string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(repo, "data", "*", "*"))
	var best string
	var size int64 = -1
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.Size() > size {
			best, size = f, fi.Size()
		}
	}
	if best == "" {
		t.Fatal("no pack in the repository")
	}
	return best
}

// checkJSON runs check --json with args and returns its exit code and
// report.
func checkJSON(t *testing.T, e *env, args ...string) (int, map[string]any) {
	t.Helper()
	r := e.run(append([]string{"check", "--json"}, args...)...)
	return r.code, lastJSONLine(t, r.stdout)
}

func TestCheckCleanRepository(t *testing.T) {
	e := newEnv(t)
	e.mustRun("backup", checkSource(t))
	r := e.mustRun("check")
	if !strings.Contains(r.stdout, "no errors were found") {
		t.Errorf("check output lacks the all-clear:\n%s", r.stdout)
	}
	e.mustRun("check", "--read-data")
	e.mustRun("check", "--read-data-subset", "1/3")
	code, rep := checkJSON(t, e, "--read-data-subset", "100%")
	if code != 0 || len(rep["errors"].([]any)) != 0 || num(t, rep, "packs_read") != num(t, rep, "packs") || num(t, rep, "snapshots") != 1 {
		t.Errorf("check --json --read-data-subset 100%%: exit %d, report %v", code, rep)
	}
	if r := e.run("check", "--read-data-subset", "0/3"); r.code != 1 || !strings.Contains(r.stderr, "0/3") {
		t.Errorf("an invalid subset gave exit %d, %q", r.code, r.stderr)
	}
}

func TestCheckFindsFlippedByteOnlyWithReadData(t *testing.T) {
	e := newEnv(t)
	e.mustRun("backup", checkSource(t))
	p := largestPack(t, e.repo)
	flipByte(t, p)
	// The structure is intact: the pack is there, with its size and its
	// header; the damage is inside a data blob.
	e.mustRun("check")
	r := e.run("check", "--read-data")
	if r.code != 1 {
		t.Fatalf("check --read-data on a damaged pack: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	name := filepath.Base(p)[:8]
	if !strings.Contains(r.stderr, "pack "+name) || !strings.Contains(r.stderr, "repository has") {
		t.Errorf("check --read-data does not name pack %s:\n%s", name, r.stderr)
	}
	if !strings.Contains(r.stdout, "snapshot") || !strings.Contains(r.stdout, "is damaged") {
		t.Errorf("check --read-data does not name the damaged snapshot:\n%s", r.stdout)
	}
	code, rep := checkJSON(t, e, "--read-data")
	if code != 1 || len(rep["damaged_packs"].([]any)) != 1 || len(rep["damaged_blobs"].([]any)) != 1 {
		t.Errorf("check --json --read-data: exit %d, report %v", code, rep)
	}
}

func TestCheckFindsDeletedPack(t *testing.T) {
	e := newEnv(t)
	e.mustRun("backup", checkSource(t))
	p := largestPack(t, e.repo)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	r := e.run("check")
	name := filepath.Base(p)[:8]
	if r.code != 1 || !strings.Contains(r.stderr, "pack "+name+": missing") {
		t.Errorf("check after deleting pack %s: exit %d\n%s", name, r.code, r.stderr)
	}
}

func TestRepairIndexRestoresRestore(t *testing.T) {
	e := newEnv(t)
	src := checkSource(t)
	e.mustRun("backup", src)
	e.mustRun("backup", src) // two snapshots, one set of packs
	files, _ := filepath.Glob(filepath.Join(e.repo, "index", "*"))
	for _, f := range files {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	if r := e.run("restore", "latest", "--target", t.TempDir()); r.code == 0 {
		t.Fatal("restore succeeded without index files")
	}
	if r := e.run("check"); r.code != 1 || !strings.Contains(r.stderr, "missing from index") {
		t.Errorf("check without index files: exit %d\n%s", r.code, r.stderr)
	}
	r := e.mustRun("repair", "index")
	if !strings.Contains(r.stdout, "new index files") {
		t.Errorf("repair index output:\n%s", r.stdout)
	}
	target := t.TempDir()
	e.mustRun("restore", "latest", "--target", target)
	assertSameFile(t, filepath.Join(src, "random"), filepath.Join(target, src, "random"))
	e.mustRun("check", "--read-data")
}

func TestStats(t *testing.T) {
	e := newEnv(t)
	src := checkSource(t)
	want := dirSize(t, src)
	e.mustRun("backup", src)
	e.mustRun("backup", src)

	r := e.mustRun("stats", "latest", "--json")
	snap := lastJSONLine(t, r.stdout)
	if num(t, snap, "bytes") != float64(want) || num(t, snap, "files") != 3 {
		t.Errorf("stats latest: %v, want %d bytes in 3 files", snap, want)
	}
	r = e.mustRun("stats", "--json")
	st := lastJSONLine(t, r.stdout)
	rs := st["restore_size"].(map[string]any)
	if num(t, st, "snapshots") != 2 || num(t, rs, "bytes") != float64(2*want) {
		t.Errorf("stats: %v, want 2 snapshots restoring %d bytes", st, 2*want)
	}
	data := st["data_blobs"].(map[string]any)
	if raw := num(t, data, "raw_bytes"); raw != float64(want) {
		t.Errorf("stats: %v raw data bytes, want %d (each file stored once)", raw, want)
	}
	// Two identical snapshots: everything is stored once.
	if d := num(t, st, "deduplication_ratio"); d < 1.99 || d > 2.01 {
		t.Errorf("deduplication ratio %v, want 2", d)
	}
	if c := num(t, st, "compression_ratio"); c <= 1 {
		t.Errorf("compression ratio %v: the text file compresses, so it should exceed 1", c)
	}
	r = e.mustRun("stats")
	for _, s := range []string{"snapshots:            2", "deduplication ratio:  2.00x"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stats output lacks %q:\n%s", s, r.stdout)
		}
	}
}

func TestDiffFiles(t *testing.T) {
	e := newEnv(t)
	src := checkSource(t)
	first := e.backupJSON(src)["snapshot_id"].(string)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(src, "added"), []byte("new\n"), 0o644))
	must(os.Remove(filepath.Join(src, "notes.txt")))
	must(os.WriteFile(filepath.Join(src, "text"), []byte("other text\n"), 0o644))
	must(os.Chmod(filepath.Join(src, "random"), 0o600))
	second := e.backupJSON(src)["snapshot_id"].(string)

	r := e.mustRun("diff", first, second)
	want := map[string]string{"added": "+", "notes.txt": "-", "text": "M", "random": "U"}
	for name, mod := range want {
		line := mod + "    " + src + "/" + name + "\n"
		if !strings.Contains(r.stdout, line) {
			t.Errorf("diff output lacks %q:\n%s", line, r.stdout)
		}
	}
	r = e.mustRun("diff", "--json", first, second)
	st := lastJSONLine(t, r.stdout)
	if num(t, st, "added") != 1 || num(t, st, "removed") != 1 || num(t, st, "changed") != 1 || num(t, st, "metadata_changed") < 1 {
		t.Errorf("diff --json statistics %v, want 1 added, 1 removed, 1 changed, metadata changes", st)
	}
	// A snapshot compared with itself has no changes.
	if r := e.mustRun("diff", "--json", first, first); !strings.Contains(r.stdout, `"added":0,"removed":0,"changed":0,"metadata_changed":0`) {
		t.Errorf("diff of a snapshot with itself:\n%s", r.stdout)
	}
}

func TestDiffImageRanges(t *testing.T) {
	e := newEnv(t)
	img := filepath.Join(t.TempDir(), "disk.raw")
	writeRandom(t, img, 24<<20, 21)
	at := func(day int) string { return time.Date(2026, 2, day, 2, 0, 0, 0, time.UTC).Format(time.RFC3339) }
	first := e.backupJSON("--image", img, "--time", at(1))["snapshot_id"].(string)
	const off, n = 10<<20 + 12345, 3000
	writeAt(t, img, off, n, 22)
	second := e.backupJSON("--image", img, "--time", at(2))["snapshot_id"].(string)

	r := e.mustRun("diff", "--json", first, second)
	var change struct {
		Modifier string      `json:"modifier"`
		Ranges   [][2]uint64 `json:"changed_ranges"`
		Changed  uint64      `json:"changed_bytes"`
	}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if strings.Contains(line, `"message_type":"change"`) {
			if err := json.Unmarshal([]byte(line), &change); err != nil {
				t.Fatal(err)
			}
		}
	}
	if change.Modifier != "M" || len(change.Ranges) != 1 {
		t.Fatalf("diff of two images: change %+v, want one changed range\n%s", change, r.stdout)
	}
	// The range covers the written bytes and is at most a few chunks
	// (image chunks are at most 1 MiB).
	rg := change.Ranges[0]
	if rg[0] > off || rg[1] < off+n || change.Changed > 3<<20 || change.Changed != rg[1]-rg[0] {
		t.Errorf("changed range %v (%d bytes) for a write of %d bytes at %d", rg, change.Changed, n, off)
	}
	st := lastJSONLine(t, r.stdout)
	if num(t, st, "changed_image_bytes") != float64(change.Changed) || num(t, st, "changed") != 1 {
		t.Errorf("diff statistics %v", st)
	}
	// A grown image: the new tail is changed.
	f, err := os.OpenFile(img, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 1<<20))
	f.Close()
	third := e.backupJSON("--image", img, "--time", at(3))["snapshot_id"].(string)
	// The new tail is changed, and the last chunk of the old image, which
	// now ends elsewhere (image chunks are at most 1 MiB).
	r = e.mustRun("diff", second, third)
	var lo, hi uint64
	for _, line := range strings.Split(r.stdout, "\n") {
		if _, err := fmt.Sscanf(strings.TrimSpace(line), "bytes [%d, %d)", &lo, &hi); err == nil {
			break
		}
	}
	if hi != 25<<20 || lo > 24<<20 || lo < 23<<20 {
		t.Errorf("diff of a grown image: range [%d, %d), want the new tail [%d, %d) and at most one chunk before it:\n%s", lo, hi, 24<<20, 25<<20, r.stdout)
	}
	// The same image without a parent: the same extents in full pages,
	// where third has delta pages of its parent's. No change.
	fourth := e.backupJSON("--image", img, "--force", "--time", at(4))["snapshot_id"].(string)
	if r := e.mustRun("diff", "--json", third, fourth); !strings.Contains(r.stdout, `"added":0,"removed":0,"changed":0,"metadata_changed":0`) {
		t.Errorf("diff of one image stored with and without delta pages reports changes:\n%s", r.stdout)
	}
}
