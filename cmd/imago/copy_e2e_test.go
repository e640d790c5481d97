package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagobackup/imago/repo/backend/s3/s3test"
)

// newEnvNoInit returns an env for a repository that does not exist yet.
func newEnvNoInit(t *testing.T, password string) *env {
	return &env{t: t, repo: filepath.Join(t.TempDir(), "repo"), password: password}
}

// passwordFile writes e's password to a file and returns its path.
func passwordFile(t *testing.T, e *env) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(p, []byte(e.password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// snapshotIDs returns the IDs of e's snapshots, oldest first.
func snapshotIDs(t *testing.T, e *env) []string {
	t.Helper()
	r := e.mustRun("snapshots", "--json")
	var snaps []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &snaps); err != nil {
		t.Fatalf("snapshots --json: %v\n%s", err, r.stdout)
	}
	ids := make([]string, len(snaps))
	for i, s := range snaps {
		ids[i] = s.ID
	}
	return ids
}

func TestCopyBetweenRepositoriesWithDifferentPasswords(t *testing.T) {
	src := newEnv(t)
	data := filepath.Join(t.TempDir(), "src")
	makeTree(t, data)
	src.mustRun("backup", data, "--time", "2026-01-01T02:00:00Z")
	want1 := describe(t, data)
	writeRandom(t, filepath.Join(data, "dir/sub/new-1M"), 1<<20, 9)
	if err := os.Remove(filepath.Join(data, "dir/sub/small.txt")); err != nil {
		t.Fatal(err)
	}
	src.mustRun("backup", data, "--time", "2026-01-02T02:00:00Z")
	want2 := describe(t, data)

	dst := newEnvNoInit(t, "another password entirely")
	from := []string{"--from-repo", src.repo, "--from-password-file", passwordFile(t, src)}
	dst.mustRun(append([]string{"init", "--copy-chunker-params"}, from...)...)

	sum := lastJSONLine(t, dst.mustRun(append([]string{"copy", "--json"}, from...)...).stdout)
	if num(t, sum, "snapshots_copied") != 2 || num(t, sum, "blobs_new") == 0 {
		t.Fatalf("first copy: %v", sum)
	}
	// The second snapshot shares most data with the first: the copy adds
	// about the repository's size, not twice it.
	if added, size := num(t, sum, "bytes_added"), float64(dirSize(t, src.repo)); added > 1.1*size {
		t.Errorf("copy added %.0f bytes for a source of %.0f: shared data was stored twice", added, size)
	}

	ids := snapshotIDs(t, dst)
	if len(ids) != 2 {
		t.Fatalf("destination has %d snapshots, want 2", len(ids))
	}
	for i, want := range []map[string]entry{want1, want2} {
		target := t.TempDir()
		dst.mustRun("restore", ids[i], "--target", target, "--verify")
		compareTrees(t, want, describe(t, filepath.Join(target, data)))
	}
	dst.mustRun("check")

	// A second copy finds everything there and transfers nothing.
	before := dirSize(t, dst.repo)
	sum = lastJSONLine(t, dst.mustRun(append([]string{"copy", "--json"}, from...)...).stdout)
	if num(t, sum, "snapshots_copied") != 0 || num(t, sum, "snapshots_skipped") != 2 ||
		num(t, sum, "blobs_new") != 0 || num(t, sum, "blob_bytes_downloaded") != 0 {
		t.Errorf("second copy: %v, want nothing copied or downloaded", sum)
	}
	if after := dirSize(t, dst.repo); after != before {
		t.Errorf("second copy changed the destination from %d to %d bytes", before, after)
	}
	// Snapshots keep their time and paths; the later one names the
	// earlier copy as its parent.
	r := dst.mustRun("snapshots", "--json")
	if !strings.Contains(r.stdout, `"time":"2026-01-01T02:00:00Z"`) || !strings.Contains(r.stdout, `"parent":"`+ids[0]+`"`) {
		t.Errorf("copied snapshot records lost their time or parent:\n%s", r.stdout)
	}
}

func TestCopyRefusesDifferentChunkerParams(t *testing.T) {
	src := newEnv(t)
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "f"), []byte("some data"), 0o644); err != nil {
		t.Fatal(err)
	}
	src.mustRun("backup", data)
	dst := newEnv(t) // a random polynomial of its own
	r := dst.run("copy", "--from-repo", src.repo, "--from-password-file", passwordFile(t, src))
	if r.code == 0 || !strings.Contains(r.stderr, "init --copy-chunker-params") {
		t.Fatalf("copy between different chunkers: exit %d, stderr %q; want a refusal naming init --copy-chunker-params", r.code, r.stderr)
	}
	if ids := snapshotIDs(t, dst); len(ids) != 0 {
		t.Errorf("refused copy left %d snapshots", len(ids))
	}
	// A wrong source password is reported as such (exit 11).
	dst2 := newEnvNoInit(t, "x")
	wrong := &env{t: t, password: "wrong"}
	r = dst2.run("init", "--copy-chunker-params", "--from-repo", src.repo, "--from-password-file", passwordFile(t, wrong))
	if r.code != 11 {
		t.Errorf("init with a wrong source password: exit %d (%s), want 11", r.code, r.stderr)
	}
}

func TestCopyImageSnapshot(t *testing.T) {
	src := newEnv(t)
	img := sparseImage(t, "vm.raw", 40<<20)
	writeAt(t, img, 1<<20, 6<<20, 1)
	writeAt(t, img, 30<<20, 2<<20, 2) // data after a hole
	first := src.backupJSON("--image", img, "--time", time.Date(2026, 2, 1, 2, 0, 0, 0, time.UTC).Format(time.RFC3339))
	sum1 := sha256File(t, img)
	writeAt(t, img, 2<<20, 4096, 3)
	second := src.backupJSON("--image", img, "--time", time.Date(2026, 2, 2, 2, 0, 0, 0, time.UTC).Format(time.RFC3339))
	sum2 := sha256File(t, img)

	dst := newEnvNoInit(t, "destination")
	from := []string{"--from-repo", src.repo, "--from-password-file", passwordFile(t, src)}
	dst.mustRun(append([]string{"init", "--copy-chunker-params"}, from...)...)

	// Copy the nights one at a time, by ID: the second copies only what
	// changed.
	c1 := lastJSONLine(t, dst.mustRun(append([]string{"copy", "--json", first["snapshot_id"].(string)}, from...)...).stdout)
	c2 := lastJSONLine(t, dst.mustRun(append([]string{"copy", "--json", second["snapshot_id"].(string)}, from...)...).stdout)
	if num(t, c1, "snapshots_copied") != 1 || num(t, c2, "snapshots_copied") != 1 {
		t.Fatalf("copies: %v, %v", c1, c2)
	}
	if added := num(t, c2, "bytes_added"); added > 2<<20 || added >= num(t, c1, "bytes_added")/2 {
		t.Errorf("copy of the second night added %.0f bytes (first: %v); want only the changed chunk and metadata", added, c1["bytes_added"])
	}
	ids := snapshotIDs(t, dst)
	if len(ids) != 2 {
		t.Fatalf("destination has %d snapshots, want 2", len(ids))
	}
	// The second night's parent is the copy of the first, also when the
	// nights were copied one by one.
	if out := dst.mustRun("snapshots", "--json").stdout; !strings.Contains(out, `"parent":"`+ids[0]+`"`) {
		t.Errorf("second night's copy does not name the first's copy as parent:\n%s", out)
	}
	for i, want := range []string{sum1, sum2} {
		target := filepath.Join(t.TempDir(), "restored.raw")
		dst.mustRun("restore", ids[i], "--target", target)
		if got := sha256File(t, target); got != want {
			t.Errorf("night %d restored from the copy with sha256 %s, want %s", i, got, want)
		}
	}
	// A later backup into the destination deduplicates against the copy.
	third := dst.backupJSON("--image", img)
	if num(t, third, "data_added") > 1<<20 {
		t.Errorf("backup into the destination after the copy added %v bytes; the copied data was not reused", third["data_added"])
	}
}

// TestCopyToS3ThroughTheCache copies a local repository into an S3 one
// (given with -o options), then reads it back through the cache.
func TestCopyToS3ThroughTheCache(t *testing.T) {
	srv := s3test.StartServer(t)
	src := newEnv(t)
	data := t.TempDir()
	if err := os.Mkdir(filepath.Join(data, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(data, "dir/random"), 2<<20, 5)
	if err := os.WriteFile(filepath.Join(data, "note"), []byte("remote copy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src.mustRun("backup", data)

	cacheDir := t.TempDir()
	dst := newEnvNoInit(t, "s3 password")
	dst.repo = "s3:" + srv.URL + "/" + srv.Bucket + "/repo"
	dst.extraEnv = []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey}
	opts := []string{"-o", "s3.bucket-lookup=path", "-o", "s3.region=us-east-1", "-o", "s3.connections=2", "--cache-dir", cacheDir}
	with := func(args ...string) []string { return append(args, opts...) }
	from := []string{"--from-repo", src.repo, "--from-password-file", passwordFile(t, src)}

	r := dst.run(with("snapshots")...)
	if r.code != 10 {
		t.Fatalf("snapshots of an empty prefix: exit %d (%s), want 10", r.code, r.stderr)
	}
	init := lastJSONLine(t, dst.mustRun(with(append([]string{"init", "--json", "--copy-chunker-params"}, from...)...)...).stdout)
	id, _ := init["id"].(string)
	sum := lastJSONLine(t, dst.mustRun(with(append([]string{"copy", "--json"}, from...)...)...).stdout)
	if num(t, sum, "snapshots_copied") != 1 {
		t.Fatalf("copy to S3: %v", sum)
	}

	dst.mustRun(with("snapshots")...)
	if out := dst.mustRun(with("ls", "latest")...).stdout; !strings.Contains(out, "note") {
		t.Errorf("ls through the cache does not list the file:\n%s", out)
	}
	for _, dir := range []string{"snapshots", "index", "data"} {
		if n := countFiles(t, filepath.Join(cacheDir, id, dir)); n == 0 {
			t.Errorf("cache %s/%s holds no files", id, dir)
		}
	}
	// Only tree packs are cached: far less than the data.
	if c, d := dirSize(t, filepath.Join(cacheDir, id, "data")), int64(2<<20); c >= d/4 {
		t.Errorf("cache holds %d bytes of packs for %d bytes of random data: data packs were cached", c, d)
	}
	target := t.TempDir()
	dst.mustRun(with("restore", "latest", "--target", target)...)
	got, err := os.ReadFile(filepath.Join(target, data, "note"))
	if err != nil || string(got) != "remote copy\n" {
		t.Errorf("restored note = %q, %v", got, err)
	}

	// --no-cache leaves a cache folder alone.
	other := t.TempDir()
	dst.mustRun("snapshots", "-o", "s3.bucket-lookup=path", "-o", "s3.region=us-east-1", "--cache-dir", other, "--no-cache")
	if n := countFiles(t, other); n != 0 {
		t.Errorf("--no-cache wrote %d files", n)
	}
	// Errors a user may make.
	r = dst.run("snapshots", "-o", "s3.regoin=x")
	if r.code == 0 || !strings.Contains(r.stderr, "s3.regoin") {
		t.Errorf("misspelt option: exit %d, stderr %q", r.code, r.stderr)
	}
	missing := *dst
	missing.repo = "s3:" + srv.URL + "/imago-no-such-bucket/repo"
	if r := missing.run(with("snapshots")...); r.code != 10 {
		t.Errorf("missing bucket: exit %d (%s), want 10", r.code, r.stderr)
	}
	bad := *dst
	bad.repo = "sfpt:host:/srv/repo"
	if r := bad.run("snapshots"); r.code == 0 || !strings.Contains(r.stderr, "unknown location scheme") {
		t.Errorf("misspelt scheme: exit %d, stderr %q", r.code, r.stderr)
	}
}

// countFiles counts the regular files below dir (0 if it does not exist).
func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}
