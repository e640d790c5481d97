package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDigestCommand checks a sparse image and its restore against the
// snapshot without the repository: `imago digest` prints the digest the
// snapshot records, for the file, for stdin and for the restored image,
// and another one once a byte changed.
func TestDigestCommand(t *testing.T) {
	e := newEnv(t)
	img := sparseImage(t, "disk.img", 40<<20)
	writeAt(t, img, 3<<20+100, 5<<20, 1)
	writeAt(t, img, 30<<20, 1<<20, 2)
	e.mustRun("backup", "-q", "--image", img)

	var snaps []struct {
		Image struct {
			TreeDigest string `json:"tree_digest"`
			Digest     string `json:"digest"`
		}
	}
	if err := jsonUnmarshal(e.mustRun("snapshots", "--json").stdout, &snaps); err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots: %v, %d", err, len(snaps))
	}
	want := snaps[0].Image.TreeDigest
	if len(want) != 64 || snaps[0].Image.Digest != "" {
		t.Fatalf("the snapshot records tree digest %q, plain digest %q", want, snaps[0].Image.Digest)
	}
	digest := func(args ...string) string {
		t.Helper()
		r := e.mustRun(append([]string{"digest"}, args...)...)
		return strings.Fields(r.stdout)[0]
	}
	if got := digest(img); got != want {
		t.Fatalf("imago digest of the image: %s, the snapshot records %s", got, want)
	}
	out := filepath.Join(t.TempDir(), "restored.img")
	e.mustRun("restore", "-q", "latest", "--target", out)
	if got := digest(out); got != want {
		t.Fatalf("imago digest of the restored image: %s, want %s", got, want)
	}
	cmd := exec.Command(binary, "digest", "-")
	in, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd.Stdin = in
	stdout, err := cmd.Output()
	if err != nil || !strings.HasPrefix(string(stdout), want+" ") {
		t.Fatalf("imago digest - < image: %q, %v; want %s", stdout, err, want)
	}
	writeAt(t, out, 20<<20, 1, 3) // in a hole
	if got := digest(out); got == want {
		t.Fatal("a changed byte leaves the digest unchanged")
	}
	if r := e.run("digest", filepath.Join(t.TempDir(), "missing.img")); r.code != exitError || !strings.Contains(r.stderr, "no such file") {
		t.Fatalf("a missing file: exit %d, stderr %q", r.code, r.stderr)
	}
}
