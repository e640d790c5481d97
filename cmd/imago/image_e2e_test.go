package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// sparseImage creates an image file of size bytes, all hole, in a new
// temporary folder.
func sparseImage(t *testing.T, name string, size int64) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), name)
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return img
}

// writeAt writes n pseudo-random bytes at off in the image file.
func writeAt(t *testing.T, path string, off int64, n int, seed uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestImageNightsRestoreIdentical backs up a sparse image on several
// "nights" with changes at segment and chunk edges, inside holes, growing
// and shrinking, and restores every night's snapshot byte-identical with
// its holes still holes.
func TestImageNightsRestoreIdentical(t *testing.T) {
	e := newEnv(t)
	img := sparseImage(t, "vm.raw", 96<<20)
	writeAt(t, img, 1<<20, 6<<20, 1)  // data
	writeAt(t, img, 40<<20, 3<<20, 2) // data after a hole
	const seg = 16 << 20              // the default image segment
	nights := []func(){
		func() {},
		func() { writeAt(t, img, 2<<20+4096*7, 4096, 3) }, // one 4 KiB block
		func() { writeAt(t, img, seg-2048, 4096, 4) },     // across a segment edge
		func() { writeAt(t, img, 70<<20, 1<<20, 5) },      // inside a hole
		func() { os.Truncate(img, 100<<20) },              // grow (hole at the end)
		func() { writeAt(t, img, 99<<20, 1<<20, 6) },      // data at the new end
		func() { os.Truncate(img, 50<<20) },               // shrink
		func() { writeAt(t, img, 3<<20, 8192, 7); writeAt(t, img, 41<<20, 100, 8) },
	}
	type night struct{ id, sum string }
	var got []night
	for i, change := range nights {
		change()
		sum := e.backupJSON("--image", img, "--time", time.Date(2026, 1, 1+i, 2, 0, 0, 0, time.UTC).Format(time.RFC3339))
		if i > 0 && num(t, sum, "bytes_reused") == 0 {
			t.Errorf("night %d reused nothing from its parent: %v", i, sum)
		}
		got = append(got, night{sum["snapshot_id"].(string), sha256File(t, img)})
	}
	for i, n := range got {
		target := filepath.Join(t.TempDir(), "restored.raw")
		e.mustRun("restore", n.id, "--target", target)
		if s := sha256File(t, target); s != n.sum {
			t.Fatalf("night %d restored with sha256 %s, want %s", i, s, n.sum)
		}
		fi, _ := os.Stat(target)
		if alloc := allocated(t, target); alloc > 32<<20 {
			t.Errorf("night %d: restored %d-byte image allocates %d bytes: holes were written", i, fi.Size(), alloc)
		}
	}
	// dump streams the image.
	r := e.mustRun("dump", got[len(got)-1].id)
	want, _ := os.ReadFile(img)
	if !bytes.Equal([]byte(r.stdout), want) {
		t.Fatal("dump of the last image differs from the image")
	}
}

// TestImageUnchangedCostsAlmostNothing backs up an 8 GiB image twice: the
// second snapshot adds under 64 KiB to the repository and reads the image
// without re-chunking it.
func TestImageUnchangedCostsAlmostNothing(t *testing.T) {
	e := newEnv(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	// 8 GiB of distinct, cheap-to-compress blocks: each 4 KiB block starts
	// with its number. No holes, so the content list has ~100k extents.
	const size = 8 << 30
	buf := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		for b := 0; b < len(buf); b += 4096 {
			clear(buf[b : b+4096])
			copy(buf[b:], []byte(time.Duration(off+int64(b)).String()))
		}
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	first := e.backupJSON("--image", img)
	if num(t, first, "total_bytes_processed") != size {
		t.Fatalf("first backup: %v", first)
	}
	before := dirSize(t, e.repo)
	second := e.backupJSON("--image", img)
	grew := dirSize(t, e.repo) - before
	if grew >= 64<<10 {
		t.Errorf("snapshot of an unchanged 8 GiB image added %d bytes, want < 64 KiB", grew)
	}
	if num(t, second, "bytes_reused") < size*0.99 {
		t.Errorf("unchanged image not reused from its parent: %v", second)
	}
	t.Logf("unchanged 8 GiB image: %d bytes added, metadata %v, %.1f s", grew, second["metadata_added"], num(t, second, "duration_seconds"))
}

func TestImageBadInput(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	t.Run("missing source", func(t *testing.T) {
		w := *e
		w.t = t
		r := w.run("backup", "--image", filepath.Join(dir, "nope.img"))
		if r.code != exitError {
			t.Fatalf("exit %d, want %d: %s", r.code, exitError, r.stderr)
		}
		assertOneLine(t, r.stderr)
	})
	img := filepath.Join(dir, "small.img")
	writeRandom(t, img, 3<<20, 11)
	e.mustRun("backup", "--image", img)
	t.Run("restore onto a directory path that cannot be made", func(t *testing.T) {
		w := *e
		w.t = t
		r := w.run("restore", "latest", "--target", filepath.Join(dir, "no/such/dir/x.img"))
		if r.code == 0 {
			t.Fatal("restore into a missing directory succeeded")
		}
		assertOneLine(t, r.stderr)
	})
	t.Run("restore into an existing directory uses the image name", func(t *testing.T) {
		w := *e
		w.t = t
		target := t.TempDir()
		w.mustRun("restore", "latest", "--target", target)
		assertSameFile(t, img, filepath.Join(target, "small.img"))
	})
	t.Run("stdin", func(t *testing.T) {
		w := *e
		w.t = t
		r := w.runWith(func(c *exec.Cmd) { c.Stdin, _ = os.Open(img) }, "backup", "--image", "--stdin", "--stdin-name", "piped.img", "--json")
		if r.code != 0 {
			t.Fatalf("stdin backup: exit %d: %s", r.code, r.stderr)
		}
		id := lastJSONLine(t, r.stdout)["snapshot_id"].(string)
		out := w.mustRun("dump", id)
		want, _ := os.ReadFile(img)
		if !bytes.Equal([]byte(out.stdout), want) {
			t.Fatal("image backed up from stdin differs")
		}
	})
}

// TestImageBackupKilled kills an image backup with SIGKILL; no snapshot is
// recorded for the incomplete image and the next backup completes.
func TestImageBackupKilled(t *testing.T) {
	e := newEnv(t)
	img := filepath.Join(t.TempDir(), "big.img")
	writeRandom(t, img, 200<<20, 21)
	for _, delay := range []time.Duration{50 * time.Millisecond, 300 * time.Millisecond, 800 * time.Millisecond} {
		cmd := exec.Command(binary, "-r", e.repo, "backup", "--image", img)
		cmd.Env = append(os.Environ(), "IMAGO_PASSWORD="+e.password, "IMAGO_INSECURE_TEST_KDF=1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		e.mustRun("unlock", "--remove-all")
	}
	var snaps []map[string]any
	out := e.mustRun("snapshots", "--json")
	if err := json.Unmarshal([]byte(out.stdout), &snaps); err != nil {
		t.Fatal(err)
	}
	for _, s := range snaps {
		if s["kind"] == "image" {
			// A backup that finished before its kill is fine only if complete.
			target := filepath.Join(t.TempDir(), "r.img")
			e.mustRun("restore", s["id"].(string), "--target", target)
			assertSameFile(t, img, target)
		}
	}
	e.mustRun("backup", "--image", img)
	target := filepath.Join(t.TempDir(), "r.img")
	e.mustRun("restore", "latest", "--target", target)
	assertSameFile(t, img, target)
	e.mustRun("check")
}
