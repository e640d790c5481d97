package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// insideTool returns the path of a tool the inside tests make images
// with, failing the test when it is missing.
func insideTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/" + name); err == nil {
		return "/usr/sbin/" + name
	}
	t.Fatalf("%s is not installed: run scripts/install-test-deps.sh", name)
	return ""
}

func insideSh(t *testing.T, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(insideTool(t, name), args...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func insideRand(n int, seed uint64) []byte {
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	rng.Read(b)
	return b
}

func insideWrite(t *testing.T, name string, data []byte, mode fs.FileMode, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(name, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// insideDisk builds a sparse GPT disk image of size bytes: partition 1 an
// ext4 file system of extMiB holding extSrc, partition 2 (when fatSrc is
// given) a 40 MiB FAT32 file system holding fatSrc, copied with mtools.
func insideDisk(t *testing.T, size int64, extSrc string, extMiB int, fatSrc string) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	args := []string{"-n", fmt.Sprintf("1:2048:+%dM", extMiB), "-t", "1:8300", "-c", "1:root"}
	if fatSrc != "" {
		args = append(args, "-n", "2:0:+40M", "-t", "2:ef00", "-c", "2:esp")
	}
	insideSh(t, nil, "sgdisk", append(args, img)...)
	ext := filepath.Join(dir, "ext.img")
	insideSh(t, nil, "mke2fs", "-q", "-F", "-t", "ext4", "-d", extSrc, ext, fmt.Sprintf("%dM", extMiB))
	insideCopyAt(t, img, ext, 1<<20)
	if fatSrc != "" {
		fat := filepath.Join(dir, "fat.img")
		f, _ := os.Create(fat)
		f.Truncate(40 << 20)
		f.Close()
		insideSh(t, nil, "mkfs.vfat", "-F", "32", "-s", "1", "-n", "ESP", fat)
		ents, _ := os.ReadDir(fatSrc)
		for _, e := range ents {
			insideSh(t, []string{"MTOOLS_SKIP_CHECK=1"}, "mcopy", "-s", "-m", "-i", fat, filepath.Join(fatSrc, e.Name()), "::")
		}
		insideCopyAt(t, img, fat, int64(1+extMiB)<<20)
	}
	return img
}

// insideCopyAt writes src into dst at off, leaving zero blocks as holes.
func insideCopyAt(t *testing.T, dst, src string, off int64) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	for i := 0; i < len(data); i += 64 << 10 {
		b := data[i:min(i+64<<10, len(data))]
		if !bytes.Equal(b, make([]byte, len(b))) {
			if _, err := out.WriteAt(b, off+int64(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// sameFile checks that got has want's bytes, permission bits and mtime
// (to the given resolution).
func sameFile(t *testing.T, got, want string, res time.Duration) {
	t.Helper()
	gi, err := os.Lstat(got)
	if err != nil {
		t.Error(err)
		return
	}
	wi, _ := os.Lstat(want)
	if gi.Mode() != wi.Mode() {
		t.Errorf("%s: mode %v, want %v", got, gi.Mode(), wi.Mode())
	}
	if !gi.ModTime().Equal(wi.ModTime().Truncate(res)) {
		t.Errorf("%s: mtime %v, want %v", got, gi.ModTime(), wi.ModTime())
	}
	if wi.Mode()&fs.ModeSymlink != 0 {
		gl, _ := os.Readlink(got)
		wl, _ := os.Readlink(want)
		if gl != wl {
			t.Errorf("%s: link %q, want %q", got, gl, wl)
		}
		return
	}
	if wi.Mode().IsRegular() {
		gb, _ := os.ReadFile(got)
		wb, _ := os.ReadFile(want)
		if !bytes.Equal(gb, wb) {
			t.Errorf("%s: %d bytes differ from the original's %d", got, len(gb), len(wb))
		}
	}
}

func TestInsideGPTImage(t *testing.T) {
	insideTool(t, "mcopy")
	base := time.Date(2023, 5, 6, 7, 8, 10, 0, time.Local)
	ext := t.TempDir()
	home := filepath.Join(ext, "home", "u")
	insideWrite(t, filepath.Join(home, "notes.txt"), []byte("remember the milk\n"), 0o640, base)
	insideWrite(t, filepath.Join(home, "bin", "tool"), []byte("#!/bin/sh\necho hi\n"), fs.ModeSetuid|0o755, base.Add(time.Hour))
	insideWrite(t, filepath.Join(home, "data", "big.bin"), insideRand(300<<10+7, 1), 0o600, base.Add(2*time.Hour))
	sparse := filepath.Join(home, "data", "sparse.img")
	insideWrite(t, sparse, nil, 0o644, base)
	sf, _ := os.OpenFile(sparse, os.O_WRONLY, 0)
	sf.WriteAt([]byte("start"), 0)
	sf.WriteAt([]byte("end"), 3<<20)
	sf.Close()
	os.Chtimes(sparse, base, base)
	if err := os.Symlink("notes.txt", filepath.Join(home, "link")); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(home, "bin"), base, base)
	os.Chtimes(filepath.Join(home, "data"), base, base)
	os.Chtimes(home, base, base)
	fat := t.TempDir()
	insideWrite(t, filepath.Join(fat, "EFI", "BOOT", "bootx64.efi"), insideRand(100007, 2), 0o644, base)
	insideWrite(t, filepath.Join(fat, "Long Name.txt"), insideRand(513, 3), 0o644, base.Add(4*time.Second))

	img := insideDisk(t, 256<<20, ext, 64, fat)
	e := newEnv(t)
	snap := e.backupJSON("--image", img)["snapshot_id"].(string)

	t.Run("ls partitions", func(t *testing.T) {
		out := e.mustRun("ls", snap, "--inside").stdout
		for _, want := range []string{"GPT partition table", "ext4", "Linux filesystem", "root", "fat32", "EFI System", "[ESP]"} {
			if !strings.Contains(out, want) {
				t.Errorf("ls --inside lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("ls dir", func(t *testing.T) {
		out := e.mustRun("ls", snap, "--inside", "1:/home/u").stdout
		for _, re := range []string{
			`(?m)^-rw-r-----\s+0\s+0\s+18 2023-05-06 07:08:10 /home/u/notes.txt$`,
			`(?m)^Lrwxrwxrwx .* /home/u/link -> notes.txt$`,
			`(?m)^drwxr-xr-x .* /home/u/bin$`,
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("ls --inside 1:/home/u does not match %s:\n%s", re, out)
			}
		}
		var n nodeJSON
		line := e.mustRun("--json", "ls", snap, "--inside", "1:/home/u/bin/tool").stdout
		if err := json.Unmarshal([]byte(line), &n); err != nil {
			t.Fatal(err)
		}
		if n.Permission != "urwxr-xr-x" || n.MTime != base.Add(time.Hour).Format(time.RFC3339Nano) || n.Size != 18 || n.Type != "file" {
			t.Errorf("ls --json: %+v", n)
		}
	})
	t.Run("restore dir", func(t *testing.T) {
		target := t.TempDir()
		e.mustRun("restore", snap, "--inside", "1:/home/u", "--target", target)
		n := 0
		filepath.WalkDir(home, func(p string, d fs.DirEntry, err error) error {
			rel, _ := filepath.Rel(home, p)
			sameFile(t, filepath.Join(target, "u", rel), p, time.Second)
			n++
			return nil
		})
		if n != 8 {
			t.Errorf("compared %d entries", n)
		}
	})
	t.Run("restore file", func(t *testing.T) {
		target := t.TempDir()
		e.mustRun("restore", snap, "--inside", "1:/home/u/notes.txt", "--target", target)
		sameFile(t, filepath.Join(target, "notes.txt"), filepath.Join(home, "notes.txt"), time.Second)
		e.mustRun("restore", snap, "--inside", "2:/EFI/BOOT/bootx64.efi", "--target", target)
		sameFile(t, filepath.Join(target, "bootx64.efi"), filepath.Join(fat, "EFI", "BOOT", "bootx64.efi"), 2*time.Second)
	})
	t.Run("dump", func(t *testing.T) {
		for in, orig := range map[string]string{
			"1:/home/u/data/big.bin": filepath.Join(home, "data", "big.bin"),
			"1:/home/u/link":         filepath.Join(home, "notes.txt"),
			"2:/long name.txt":       filepath.Join(fat, "Long Name.txt"),
		} {
			got := e.mustRun("dump", snap, "--inside", in).stdout
			want, _ := os.ReadFile(orig)
			if got != string(want) {
				t.Errorf("dump --inside %s: %d bytes, want the original's %d", in, len(got), len(want))
			}
		}
	})
	t.Run("find", func(t *testing.T) {
		out := e.mustRun("find", "*.txt", "--inside").stdout
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || !strings.Contains(out, snap[:8]) ||
			!strings.HasSuffix(lines[0], " 1:/home/u/notes.txt") || !strings.HasSuffix(lines[1], " 2:/Long Name.txt") {
			t.Errorf("find --inside:\n%s", out)
		}
	})
}

// TestInsideFindAcrossNights asks which night's disk still had a file.
func TestInsideFindAcrossNights(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for night := 1; night <= 3; night++ {
		src := t.TempDir()
		insideWrite(t, filepath.Join(src, "etc", "hostname"), []byte("box\n"), 0o644, time.Unix(1.7e9, 0))
		if night < 3 {
			insideWrite(t, filepath.Join(src, "home", "report-2024.pdf"), []byte("pdf"), 0o644, time.Unix(1.7e9, 0))
		}
		img := insideDisk(t, 64<<20, src, 16, "")
		when := time.Date(2026, 1, night, 2, 0, 0, 0, time.UTC).Format(time.RFC3339)
		ids = append(ids, e.backupJSON("--image", img, "--time", when)["snapshot_id"].(string))
	}
	files := t.TempDir()
	insideWrite(t, filepath.Join(files, "report-2024.pdf"), []byte("x"), 0o644, time.Unix(1.7e9, 0))
	e.mustRun("backup", files)

	out := e.mustRun("find", "report-20??.pdf", "--inside").stdout
	if strings.Count(out, "\n") != 2 || !strings.Contains(out, ids[0][:8]) || !strings.Contains(out, ids[1][:8]) || strings.Contains(out, ids[2][:8]) {
		t.Errorf("find --inside: want nights 1 and 2 (%s, %s), not 3 (%s):\n%s", ids[0][:8], ids[1][:8], ids[2][:8], out)
	}
	// Without --inside the file snapshots' trees are searched.
	out = e.mustRun("find", "report-20??.pdf").stdout
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "report-2024.pdf") || strings.Contains(out, " 1:/") {
		t.Errorf("find: want the file snapshot's match only:\n%s", out)
	}
	out = e.mustRun("find", "nothing-matches", "--inside", ids[0]).stdout
	if out != "" {
		t.Errorf("find with no match printed %q", out)
	}
}

// TestInsideFetchesOnlyTheFile reads a 1 MiB file from a 4 GiB image
// snapshot whose repository holds over 40 MiB of other data: the bytes
// fetched from the repository must stay within a few MiB.
func TestInsideFetchesOnlyTheFile(t *testing.T) {
	src := t.TempDir()
	want := insideRand(1<<20, 10)
	insideWrite(t, filepath.Join(src, "home", "u", "target.bin"), want, 0o600, time.Unix(1.7e9, 0))
	for i := 0; i < 6; i++ {
		insideWrite(t, filepath.Join(src, "filler", strconv.Itoa(i)), insideRand(8<<20, uint64(20+i)), 0o644, time.Unix(1.7e9, 0))
	}
	img := insideDisk(t, 4<<30, src, 96, "")
	e := newEnv(t)
	snap := e.backupJSON("--image", img)["snapshot_id"].(string)
	if size := dirSize(t, e.repo); size < 40<<20 {
		t.Fatalf("repository holds %d bytes; the test needs far more than the file", size)
	}
	e.extraEnv = append(e.extraEnv, "IMAGO_DEBUG_STATS=1")
	r := e.mustRun("dump", snap, "--inside", "/home/u/target.bin")
	if r.stdout != string(want) {
		t.Fatalf("dump --inside: %d bytes differ from the original", len(r.stdout))
	}
	m := regexp.MustCompile(`repository bytes downloaded: (\d+)`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no byte count on stderr: %q", r.stderr)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	t.Logf("fetched %d bytes for a 1 MiB file", n)
	if n > 4<<20 {
		t.Errorf("fetched %d bytes from the repository for a 1 MiB file", n)
	}
}

// TestInsideBadInput: every mistake is one clear line and exit code 1.
func TestInsideBadInput(t *testing.T) {
	e := newEnv(t)
	files := t.TempDir()
	insideWrite(t, filepath.Join(files, "f"), []byte("x"), 0o644, time.Unix(1.7e9, 0))
	fileSnap := e.backupJSON(files)["snapshot_id"].(string)

	random := filepath.Join(t.TempDir(), "random.img")
	os.WriteFile(random, insideRand(4<<20, 30), 0o644)
	randomSnap := e.backupJSON("--image", random)["snapshot_id"].(string)

	src := t.TempDir()
	insideWrite(t, filepath.Join(src, "f"), []byte("x"), 0o644, time.Unix(1.7e9, 0))
	good := insideDisk(t, 64<<20, src, 16, "")
	goodSnap := e.backupJSON("--image", good)["snapshot_id"].(string)
	// Damage both GPT headers (primary at 512, backup in the last sector).
	for _, off := range []int64{512 + 40, 64<<20 - 512 + 40} {
		f, _ := os.OpenFile(good, os.O_WRONLY, 0)
		f.WriteAt([]byte{0xFF, 0xFF}, off)
		f.Close()
	}
	corruptSnap := e.backupJSON("--image", good)["snapshot_id"].(string)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ls", fileSnap, "--inside", "/"}, "is not an image snapshot"},
		{[]string{"restore", fileSnap, "--inside", "/f", "--target", t.TempDir()}, "is not an image snapshot"},
		{[]string{"ls", randomSnap, "--inside", "/"}, "unknown filesystem"},
		{[]string{"dump", randomSnap, "--inside", "/x"}, "unknown filesystem"},
		{[]string{"ls", goodSnap, "--inside", "1:/nope"}, "1:/nope: file does not exist"},
		{[]string{"dump", goodSnap, "--inside", "/nope/deeper"}, "file does not exist"},
		{[]string{"restore", goodSnap, "--inside", "/nope", "--target", t.TempDir()}, "file does not exist"},
		{[]string{"dump", goodSnap, "--inside", "/"}, "is a directory"},
		{[]string{"ls", goodSnap, "--inside", "3:/"}, "no such partition 3"},
		{[]string{"dump", goodSnap, "--inside"}, "needs a path"},
		{[]string{"ls", corruptSnap, "--inside"}, "corrupt partition table"},
		{[]string{"find", "*", "--inside", corruptSnap}, "corrupt partition table"},
	} {
		r := e.run(c.args...)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if r.code != 1 || !strings.Contains(r.stderr, c.want) || strings.Contains(r.stderr, "panic") {
			t.Errorf("imago %s: exit %d, stderr %q; want exit 1 and %q", strings.Join(c.args, " "), r.code, r.stderr, c.want)
		} else if len(lines) > 2 {
			t.Errorf("imago %s: %d lines on stderr:\n%s", strings.Join(c.args, " "), len(lines), r.stderr)
		}
	}
}

// TestInsideNTFSImage backs up a GPT disk whose partition 1 holds NTFS
// (made with mkntfs and filled through an ntfs-3g FUSE mount, since
// ntfs-3g's userspace tools cannot make directories), then restores and
// dumps files from inside the snapshot.
func TestInsideNTFSImage(t *testing.T) {
	insideTool(t, "mkntfs")
	insideTool(t, "ntfs-3g")
	base := time.Date(2024, 2, 3, 4, 5, 6, 789012300, time.UTC) // NTFS keeps 100 ns
	src := t.TempDir()
	docs := filepath.Join(src, "Users", "Ann", "Docs")
	insideWrite(t, filepath.Join(docs, "report.txt"), []byte("quarterly numbers\n"), 0o644, base)
	insideWrite(t, filepath.Join(docs, "big.bin"), insideRand(300<<10+7, 41), 0o644, base.Add(time.Hour))
	insideWrite(t, filepath.Join(docs, "Grüße ☃.txt"), []byte("unicode name"), 0o644, base.Add(2*time.Hour))
	insideWrite(t, filepath.Join(docs, "sub", "deep.txt"), []byte("deep\n"), 0o644, base)
	for _, d := range []string{filepath.Join(docs, "sub"), docs} {
		os.Chtimes(d, base, base)
	}

	dir := t.TempDir()
	vol := filepath.Join(dir, "ntfs.img")
	f, _ := os.Create(vol)
	f.Truncate(24 << 20)
	f.Close()
	insideSh(t, nil, "mkntfs", "-F", "-f", "-Q", "-L", "WINDATA", vol)
	mnt := t.TempDir()
	insideSh(t, nil, "ntfs-3g", vol, mnt)
	mounted := true
	unmount := func() {
		if mounted {
			insideSh(t, nil, "umount", mnt)
			mounted = false
		}
	}
	t.Cleanup(unmount)
	var dirs []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(mnt, rel)
		if d.IsDir() {
			dirs = append(dirs, rel)
			return os.MkdirAll(out, 0o755)
		}
		b, _ := os.ReadFile(p)
		if err := os.WriteFile(out, b, 0o644); err != nil {
			return err
		}
		fi, _ := os.Stat(p)
		return os.Chtimes(out, fi.ModTime(), fi.ModTime())
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		fi, _ := os.Stat(filepath.Join(src, dirs[i]))
		os.Chtimes(filepath.Join(mnt, dirs[i]), fi.ModTime(), fi.ModTime())
	}
	unmount()

	img := filepath.Join(dir, "disk.img")
	f, _ = os.Create(img)
	f.Truncate(64 << 20)
	f.Close()
	insideSh(t, nil, "sgdisk", "-n", "1:2048:+24M", "-t", "1:0700", "-c", "1:windata", img)
	insideCopyAt(t, img, vol, 1<<20)

	e := newEnv(t)
	snap := e.backupJSON("--image", img)["snapshot_id"].(string)

	if out := e.mustRun("ls", snap, "--inside").stdout; !strings.Contains(out, "ntfs") || !strings.Contains(out, "WINDATA") {
		t.Errorf("ls --inside lacks ntfs and its label:\n%s", out)
	}
	target := t.TempDir()
	e.mustRun("restore", snap, "--inside", "1:/Users/Ann/Docs", "--target", target)
	n := 0
	filepath.WalkDir(docs, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(docs, p)
		sameFile(t, filepath.Join(target, "Docs", rel), p, 100*time.Nanosecond)
		n++
		return nil
	})
	if n != 6 {
		t.Errorf("compared %d entries", n)
	}
	for in, orig := range map[string]string{
		"1:/Users/Ann/Docs/big.bin":      filepath.Join(docs, "big.bin"),
		"1:/Users/Ann/Docs/sub/deep.txt": filepath.Join(docs, "sub", "deep.txt"),
		"1:/users/ann/docs/REPORT.TXT":   filepath.Join(docs, "report.txt"), // case-insensitive, as on Windows
	} {
		got := e.mustRun("dump", snap, "--inside", in).stdout
		want, _ := os.ReadFile(orig)
		if got != string(want) {
			t.Errorf("dump --inside %s: %d bytes, want the original's %d", in, len(got), len(want))
		}
	}
}
