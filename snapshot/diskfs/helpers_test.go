package diskfs

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// need fails the test when a tool that makes its images is missing.
func need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err == nil {
				continue
			}
			t.Fatalf("%s is not installed: run scripts/install-test-deps.sh", tool)
		}
	}
}

// sh runs a command and fails the test if it fails.
func sh(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		name = p
	} else if _, err := os.Stat("/usr/sbin/" + name); err == nil {
		name = "/usr/sbin/" + name
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func randBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// writeFile writes data with a mode and a whole-second mtime.
func writeFile(t testing.TB, name string, data []byte, mode fs.FileMode, mtime time.Time) {
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

// unixTree fills dir with what an ext file system must reproduce: modes
// with setuid/setgid/sticky, owners, sizes around block boundaries, a
// sparse file, fast and slow symlinks, a deep path, a big directory and
// names with non-ASCII bytes. Directory mtimes are set last.
func unixTree(t testing.TB, dir string) {
	t.Helper()
	base := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	sizes := []int{0, 1, 60, 61, 1023, 1024, 1025, 4095, 4096, 4097, 300 << 10, 1<<20 + 3}
	for i, n := range sizes {
		writeFile(t, filepath.Join(dir, "sizes", fmt.Sprintf("f%07d", n)), randBytes(n, uint64(i)), 0o644, base.Add(time.Duration(i)*time.Hour))
	}
	writeFile(t, filepath.Join(dir, "bin", "suid"), []byte("#!/bin/sh\n"), fs.ModeSetuid|0o755, base)
	writeFile(t, filepath.Join(dir, "bin", "sgid"), []byte("x"), fs.ModeSetgid|0o711, base)
	writeFile(t, filepath.Join(dir, "old"), []byte("from 1965"), 0o600, time.Date(1965, 1, 2, 3, 4, 5, 0, time.UTC))
	owned := filepath.Join(dir, "owned")
	writeFile(t, owned, []byte("owned by 1234:5678"), 0o640, base)
	if err := os.Lchown(owned, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	// A sparse file: data, a 2 MiB hole, data. (mke2fs -d with inline_data
	// drops a hole at the end, so there is none here.)
	sparse := filepath.Join(dir, "sparse")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(randBytes(5000, 99), 0)
	f.WriteAt(randBytes(7000, 98), 2<<20+123)
	f.Close()
	os.Chtimes(sparse, base, base)
	if err := os.Symlink("sizes/f0000001", filepath.Join(dir, "fastlink")); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("long-target/", 10) + "end"
	if err := os.Symlink(long, filepath.Join(dir, "slowlink")); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"fastlink", "slowlink"} {
		ts := []unix.Timespec{unix.NsecToTimespec(base.UnixNano()), unix.NsecToTimespec(base.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, l), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "a", "b", "c", "d", "deep.txt"), []byte("deep\n"), 0o444, base)
	writeFile(t, filepath.Join(dir, "names", "grüße ☃.txt"), []byte("utf-8"), 0o644, base)
	writeFile(t, filepath.Join(dir, "names", "sp ace & 'quote'"), []byte("q"), 0o644, base)
	for i := 0; i < 400; i++ {
		writeFile(t, filepath.Join(dir, "big", fmt.Sprintf("entry-with-a-longish-name-%04d", i)), nil, 0o644, base)
	}
	os.Chmod(filepath.Join(dir, "a"), fs.ModeSticky|0o777)
	setDirTimes(t, dir, base.Add(-time.Hour))
}

// setDirTimes gives every directory below (and including) dir an mtime.
func setDirTimes(t testing.TB, dir string, mtime time.Time) {
	t.Helper()
	var dirs []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return err
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Chtimes(dirs[i], mtime, mtime)
	}
}

// mkfsExt makes an ext file system image of sizeMiB holding src.
func mkfsExt(t testing.TB, kind, src string, sizeMiB int, extra ...string) string {
	t.Helper()
	need(t, "mkfs."+kind)
	img := filepath.Join(t.TempDir(), kind+".img")
	args := append([]string{"-q", "-F", "-t", kind, "-d", src}, extra...)
	args = append(args, img, fmt.Sprintf("%dM", sizeMiB))
	sh(t, []string{"E2FSPROGS_FAKE_TIME=1600000000"}, "mke2fs", args...)
	return img
}

// placeAt copies the file system image src into dst at off, keeping dst
// sparse where src reads zeros.
func placeAt(t testing.TB, dst, src string, off int64) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	buf := make([]byte, 64<<10)
	for pos := int64(0); ; pos += int64(len(buf)) {
		n, err := io.ReadFull(in, buf)
		if n > 0 && !allZero(buf[:n]) {
			if _, werr := out.WriteAt(buf[:n], off+pos); werr != nil {
				t.Fatal(werr)
			}
		}
		if err != nil {
			break
		}
	}
}

// sparseFile creates an empty sparse file of size bytes.
func sparseFile(t testing.TB, size int64) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return name
}

func openFile(t testing.TB, name string) (*os.File, int64) {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return f, fi.Size()
}

// compareTree checks that fsys holds exactly what src holds: names,
// types, permission bits, sizes, mtimes, owners (unless fat), symlink
// targets and contents. skip lists names at the root to ignore.
type compareOpts struct {
	fat          bool          // no owners, fixed modes checked by the caller
	mtimeUnit    time.Duration // the file system's time resolution
	skipDirMTime bool
}

func compareTree(t *testing.T, fsys FS, src string, o compareOpts) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		ip := path.Clean("/" + filepath.ToSlash(rel))
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e, err := fsys.Stat(ip)
		if err != nil {
			t.Errorf("Stat %s: %v", ip, err)
			return nil
		}
		n++
		if e.Path != ip || (ip != "/" && e.Name != path.Base(ip)) {
			t.Errorf("%s: Path %q Name %q", ip, e.Path, e.Name)
		}
		if !o.fat {
			if e.Mode != fi.Mode() {
				t.Errorf("%s: mode %v, want %v", ip, e.Mode, fi.Mode())
			}
			st := fi.Sys().(*syscall.Stat_t)
			if e.UID != st.Uid || e.GID != st.Gid {
				t.Errorf("%s: owner %d:%d, want %d:%d", ip, e.UID, e.GID, st.Uid, st.Gid)
			}
		} else if e.Mode.Type() != fi.Mode().Type() {
			t.Errorf("%s: type %v, want %v", ip, e.Mode.Type(), fi.Mode().Type())
		}
		want := fi.ModTime().Truncate(o.mtimeUnit)
		if ip != "/" && !(d.IsDir() && o.skipDirMTime) && !e.MTime.Equal(want) {
			t.Errorf("%s: mtime %v, want %v", ip, e.MTime, want)
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			if e.LinkTarget != target {
				t.Errorf("%s: link target %q, want %q", ip, e.LinkTarget, target)
			}
		case fi.Mode().IsRegular():
			if e.Size != fi.Size() {
				t.Errorf("%s: size %d, want %d", ip, e.Size, fi.Size())
			}
			want, _ := os.ReadFile(p)
			f, err := fsys.Open(ip)
			if err != nil {
				t.Errorf("Open %s: %v", ip, err)
				return nil
			}
			got, err := io.ReadAll(io.NewSectionReader(f, 0, f.Size()))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: content differs (%d bytes read, want %d; err %v)", ip, len(got), len(want), err)
			}
		case fi.IsDir():
			ents, err := fsys.ReadDir(ip)
			if err != nil {
				t.Errorf("ReadDir %s: %v", ip, err)
				return nil
			}
			srcEnts, _ := os.ReadDir(p)
			var got, wantNames []string
			for _, e := range ents {
				if !(ip == "/" && e.Name == "lost+found") {
					got = append(got, e.Name)
				}
			}
			for _, e := range srcEnts {
				wantNames = append(wantNames, e.Name())
			}
			if strings.Join(got, "\n") != strings.Join(wantNames, "\n") {
				t.Errorf("ReadDir %s: %d names %q..., want %d", ip, len(got), head(got), len(wantNames))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func head(s []string) []string { return s[:min(len(s), 5)] }

// countingReader counts the bytes read through it.
type countingReader struct {
	r     io.ReaderAt
	bytes atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.bytes.Add(int64(n))
	return n, err
}
