package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mountTmpfs mounts a tmpfs of size (mount's size= syntax) at a new
// directory and returns it; the test unmounts it at its end.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// wantDiskFull checks that r failed with exit 1 and one line of error
// that names the cause.
func wantDiskFull(t *testing.T, what string, r result) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if r.code != exitError || len(lines) != 1 || !strings.Contains(lines[0], "no space left on device") {
		t.Fatalf("%s on a full disk: exit %d, want %d and one line naming the cause; stderr:\n%s", what, r.code, exitError, r.stderr)
	}
}

// TestFullDisk fills a real file system (a small tmpfs) under a backup and
// under a restore: each fails with exit 1 and a one-line error naming the
// cause, no snapshot is recorded, the repository still passes check
// --read-data, and once there is room the next backup works and restores
// byte-identically.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small file system")
	}
	src := t.TempDir()
	img := filepath.Join(src, "disk.img")
	writeRandom(t, img, 24<<20, 5) // random: compression cannot make it fit
	tree := filepath.Join(src, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(tree, "a"), 3<<20, 6)
	writeRandom(t, filepath.Join(tree, "b"), 3<<20, 7)

	mnt := mountTmpfs(t, "12m")
	e := &env{t: t, repo: filepath.Join(mnt, "repo"), password: "correct horse battery staple"}
	e.mustRun("init")
	e.mustRun("backup", "-q", tree) // fits: 6 MiB
	wantDiskFull(t, "image backup", e.run("backup", "-q", "--image", img))
	wantDiskFull(t, "image backup, again", e.run("backup", "-q", "--image", img))

	var snaps []map[string]any
	if err := jsonUnmarshal(e.mustRun("snapshots", "--json").stdout, &snaps); err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 {
		t.Fatalf("%d snapshots after the failed backups, want the tree's only", len(snaps))
	}
	e.mustRun("check", "--read-data")

	// Room again: the same backup works and restores.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	e.mustRun("backup", "-q", "--image", img)
	e.mustRun("check", "--read-data")
	out := filepath.Join(t.TempDir(), "restored.img")
	e.mustRun("restore", "-q", "latest", "--target", out)
	if sha256File(t, out) != sha256File(t, img) {
		t.Fatal("restored image differs from the source")
	}

	// A restore onto a file system without room for the image.
	small := mountTmpfs(t, "8m")
	wantDiskFull(t, "image restore", e.run("restore", "-q", "latest", "--target", filepath.Join(small, "restored.img")))
	e.mustRun("check")
}
