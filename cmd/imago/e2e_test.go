package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// writeRandom writes n pseudo-random bytes (seeded) to path.
func writeRandom(t *testing.T, path string, n int, seed uint64) []byte {
	t.Helper()
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// makeTree builds a source tree with every node type imago records.
func makeTree(t *testing.T, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "dir/sub/deeper"), 0o755))
	writeRandom(t, filepath.Join(root, "dir/random-3M"), 3<<20+17, 1)
	must(os.WriteFile(filepath.Join(root, "dir/compressible"), bytes.Repeat([]byte("imago backs up disks. "), 200000), 0o640))
	must(os.WriteFile(filepath.Join(root, "empty"), nil, 0o600))
	must(os.WriteFile(filepath.Join(root, "dir/sub/small.txt"), []byte("hello, world\n"), 0o644))
	writeRandom(t, filepath.Join(root, "dir/sub/deeper/12M"), 12<<20, 2)
	// More than one pack (16 MiB) of data, so that packs fill and upload
	// while the backup pipeline runs.
	writeRandom(t, filepath.Join(root, "dir/big-20M"), 20<<20, 4)
	// Hard links: three names for one inode.
	must(os.WriteFile(filepath.Join(root, "dir/hard-a"), []byte("linked content\n"), 0o644))
	must(os.Link(filepath.Join(root, "dir/hard-a"), filepath.Join(root, "dir/hard-b")))
	must(os.Link(filepath.Join(root, "dir/hard-a"), filepath.Join(root, "dir/sub/hard-c")))
	// Symlinks: relative, absolute, dangling.
	must(os.Symlink("sub/small.txt", filepath.Join(root, "dir/link-rel")))
	must(os.Symlink("/etc/hostname", filepath.Join(root, "dir/link-abs")))
	must(os.Symlink("does/not/exist", filepath.Join(root, "dangling")))
	// Special files.
	must(unix.Mkfifo(filepath.Join(root, "fifo"), 0o640))
	if os.Geteuid() == 0 {
		must(unix.Mknod(filepath.Join(root, "null-dev"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(unix.Mknod(filepath.Join(root, "loop-dev"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 200))))
	}
	// Names: long, non-UTF-8, spaces.
	long := strings.Repeat("L", 255)
	must(os.WriteFile(filepath.Join(root, long), []byte("long name\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "bad-\xff\xfe-utf8"), []byte("bytes\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "with space & 'quotes'"), []byte("x"), 0o644))
	// Sparse file: 64 MiB with two data islands.
	sp, err := os.Create(filepath.Join(root, "sparse.img"))
	must(err)
	must(sp.Truncate(64 << 20))
	_, err = sp.WriteAt(bytes.Repeat([]byte{0xAB}, 1<<20), 8<<20)
	must(err)
	_, err = sp.WriteAt([]byte("tail"), 64<<20-4)
	must(err)
	must(sp.Close())
	// Special permission bits, ownership, xattrs.
	must(os.WriteFile(filepath.Join(root, "setuid"), []byte("#!/bin/sh\n"), 0o755))
	must(unix.Chmod(filepath.Join(root, "setuid"), 0o4755))
	must(unix.Chmod(filepath.Join(root, "dir/sub"), 0o1777))
	if os.Geteuid() == 0 {
		must(os.Lchown(filepath.Join(root, "dir/sub/small.txt"), 1234, 5678))
		must(os.Lchown(filepath.Join(root, "dir/link-rel"), 4321, 8765))
	}
	must(unix.Setxattr(filepath.Join(root, "dir/sub/small.txt"), "user.imago.test", []byte("value\x00with nul"), 0))
	must(unix.Setxattr(filepath.Join(root, "dir"), "user.dir-attr", []byte("d"), 0))
	// Times with nanoseconds, set last (children first, so dir times stick).
	ts := []unix.Timespec{{Sec: 1600000000, Nsec: 123456789}, {Sec: 1500000000, Nsec: 987654321}}
	err = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
	must(err)
	var dirs []string
	_ = filepath.Walk(root, func(p string, fi os.FileInfo, _ error) error {
		if fi != nil && fi.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		must(unix.UtimesNanoAt(unix.AT_FDCWD, d, ts, 0))
	}
}

// entry is what a user would compare between an original and a restored node.
type entry struct {
	mode    uint32
	uid     uint32
	gid     uint32
	mtime   int64
	size    int64
	rdev    uint64
	digest  string
	target  string
	xattrs  string
	inodeID string // hard-link group: the first path seen with this inode
}

func describe(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	inodes := map[uint64]string{}
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := entry{mode: st.Mode, uid: st.Uid, gid: st.Gid, mtime: st.Mtim.Nano(), rdev: st.Rdev}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			e.digest, e.size = hex.EncodeToString(sum[:]), st.Size
			if st.Nlink > 1 {
				if first, ok := inodes[st.Ino]; ok {
					e.inodeID = first
				} else {
					inodes[st.Ino] = rel
					e.inodeID = rel
				}
			}
		case unix.S_IFLNK:
			e.target, _ = os.Readlink(p)
		case unix.S_IFDIR:
			// Directory times are compared too: restore sets them after the children.
		}
		e.xattrs = listXattrs(p)
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func listXattrs(p string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	var parts []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		v := make([]byte, 4096)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			continue
		}
		parts = append(parts, name+"="+string(v[:m]))
	}
	sort.Strings(parts)
	return strings.Join(parts, ";")
}

func compareTrees(t *testing.T, want, got map[string]entry) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("%q missing after restore", p)
			continue
		}
		if p == "." {
			continue // the target directory itself
		}
		if w != g {
			t.Errorf("%q differs:\n want %+v\n got  %+v", p, w, g)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%q restored but not in the source", p)
		}
	}
}

func TestBackupRestoreEveryNodeType(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src)
	sum := e.backupJSON(src)
	if num(t, sum, "files_new") < 10 {
		t.Fatalf("expected the new files to be counted: %v", sum)
	}
	target := t.TempDir()
	e.mustRun("restore", "latest", "--target", target, "--verify")
	compareTrees(t, describe(t, src), describe(t, filepath.Join(target, src)))

	// The sparse file keeps its holes: 64 MiB long, about 1 MiB allocated.
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(target, src, "sparse.img"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 64<<20 || st.Blocks*512 > 4<<20 {
		t.Errorf("sparse.img restored with size %d and %d bytes allocated; want 64 MiB with holes", st.Size, st.Blocks*512)
	}
}

func TestRestoreIncludeAndDumpOneFile(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src)
	e.mustRun("backup", src)

	target := t.TempDir()
	e.mustRun("restore", "latest", "--target", target, "--include", filepath.Join(src, "dir/sub/deeper/12M"))
	var files []string
	_ = filepath.Walk(target, func(p string, fi os.FileInfo, _ error) error {
		if fi != nil && !fi.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	want := filepath.Join(target, src, "dir/sub/deeper/12M")
	if len(files) != 1 || files[0] != want {
		t.Fatalf("restore --include restored %v, want exactly %s", files, want)
	}
	assertSameFile(t, filepath.Join(src, "dir/sub/deeper/12M"), want)

	r := e.mustRun("dump", "latest", filepath.Join(src, "dir/random-3M"))
	orig, _ := os.ReadFile(filepath.Join(src, "dir/random-3M"))
	if !bytes.Equal([]byte(r.stdout), orig) {
		t.Fatalf("dump gave %d bytes, want the %d bytes of the file", len(r.stdout), len(orig))
	}
}

func assertSameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ", a, b)
	}
}

func TestIncrementalBackupReadsNothingAndDedups(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src)
	first := e.backupJSON(src)
	if num(t, first, "bytes_read") == 0 {
		t.Fatalf("first backup read nothing: %v", first)
	}
	before := dirSize(t, e.repo)
	second := e.backupJSON(src)
	if got := num(t, second, "bytes_read"); got != 0 {
		t.Errorf("second backup of an unchanged tree read %v bytes of file contents, want 0", got)
	}
	if num(t, second, "files_unchanged") < 10 {
		t.Errorf("unchanged files not recognised: %v", second)
	}
	if grew := dirSize(t, e.repo) - before; grew >= 1<<20 {
		t.Errorf("second backup grew the repository by %d bytes, want < 1 MiB", grew)
	}

	// Two copies of the same 12 MiB in a new tree are stored once.
	dup := filepath.Join(t.TempDir(), "dup")
	if err := os.MkdirAll(dup, 0o755); err != nil {
		t.Fatal(err)
	}
	data := writeRandom(t, filepath.Join(dup, "one"), 12<<20, 99)
	if err := os.WriteFile(filepath.Join(dup, "two"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	before = dirSize(t, e.repo)
	e.mustRun("backup", dup)
	if grew := dirSize(t, e.repo) - before; grew > 13<<20 || grew < 12<<20 {
		t.Errorf("two copies of 12 MiB of random data grew the repository by %d bytes, want about 12 MiB", grew)
	}
}

func TestErrorsAndExitCodes(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(src, "f"), 1000, 3)
	e.mustRun("backup", src)

	t.Run("wrong password", func(t *testing.T) {
		w := *e
		w.t, w.password = t, "wrong"
		r := w.run("snapshots")
		if r.code != exitWrongPass {
			t.Fatalf("exit %d, want %d; stderr %q", r.code, exitWrongPass, r.stderr)
		}
		assertOneLine(t, r.stderr)
	})
	t.Run("no repository", func(t *testing.T) {
		w := *e
		w.t, w.repo = t, filepath.Join(t.TempDir(), "nothing-here")
		r := w.run("snapshots")
		if r.code != exitNoRepo {
			t.Fatalf("exit %d, want %d; stderr %q", r.code, exitNoRepo, r.stderr)
		}
		assertOneLine(t, r.stderr)
		// An empty directory is no repository either.
		w.repo = t.TempDir()
		if r := w.run("snapshots"); r.code != exitNoRepo {
			t.Fatalf("empty dir: exit %d, want %d; stderr %q", r.code, exitNoRepo, r.stderr)
		}
	})
	t.Run("init over existing refuses", func(t *testing.T) {
		w := *e
		w.t = t
		r := w.run("init")
		if r.code == 0 || !strings.Contains(r.stderr, "already") {
			t.Fatalf("init over an existing repository: exit %d, stderr %q", r.code, r.stderr)
		}
		w.mustRun("snapshots") // still intact
	})
	t.Run("missing source", func(t *testing.T) {
		w := *e
		w.t = t
		r := w.run("backup", filepath.Join(src, "no-such-file"))
		if r.code != exitError {
			t.Fatalf("exit %d, want %d", r.code, exitError)
		}
		assertOneLine(t, r.stderr)
	})
}

func assertOneLine(t *testing.T, s string) {
	t.Helper()
	s = strings.TrimSpace(s)
	if s == "" || strings.Contains(s, "\n") {
		t.Fatalf("want a one-line error, got %q", s)
	}
	if !strings.HasPrefix(s, "imago: ") {
		t.Fatalf("error line %q does not start with \"imago: \"", s)
	}
}

// openUp makes dir and its parents below the temporary directory
// reachable by every user; the temporary directory itself (/tmp, mode 1777)
// is left as it is.
func openUp(dir string) {
	tmp := filepath.Clean(os.TempDir())
	for d := dir; d != tmp && d != "/" && d != "."; d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o777)
	}
}

func TestUnreadableFileExitsThree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the backup as the unprivileged user nobody")
	}
	e := newEnv(t)
	base := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// nobody needs to reach the repository and the source.
	openUp(e.repo)
	must(filepath.Walk(e.repo, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, 65534, 65534)
	}))
	src := filepath.Join(base, "src")
	must(os.MkdirAll(src, 0o755))
	must(os.WriteFile(filepath.Join(src, "readable"), []byte("ok"), 0o644))
	must(os.WriteFile(filepath.Join(src, "secret"), []byte("no"), 0o600))
	openUp(base)
	asNobody := func(c *exec.Cmd) {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		c.Env = append(c.Env, "HOME=/tmp")
	}
	r := e.runWith(asNobody, "backup", src)
	if r.code != exitPartial {
		t.Fatalf("exit %d, want %d\nstderr: %s", r.code, exitPartial, r.stderr)
	}
	if !strings.Contains(r.stderr, "secret") {
		t.Errorf("the unreadable file is not named: %q", r.stderr)
	}
	ls := e.mustRun("ls", "latest")
	if !strings.Contains(ls.stdout, "readable") || strings.Contains(ls.stdout, "/secret") {
		t.Errorf("snapshot should hold the readable file only:\n%s", ls.stdout)
	}
}

// flipByte flips one bit of the byte at the middle of path.
func flipByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestFlippedByteIsRefused(t *testing.T) {
	// One repository per object type, each damaged in one byte.
	kinds := []struct {
		name string
		glob string
		cmds [][]string
	}{
		{"config", "config", [][]string{{"snapshots"}, {"restore", "latest", "--target", "T"}}},
		{"key", "keys/*", [][]string{{"snapshots"}}},
		{"snapshot", "snapshots/*", [][]string{{"snapshots"}, {"restore", "latest", "--target", "T"}, {"ls", "latest"}}},
		{"index", "index/*", [][]string{{"restore", "latest", "--target", "T"}, {"ls", "latest"}}},
		{"data pack", "data/*/*", [][]string{{"restore", "latest", "--target", "T"}, {"dump", "latest", "FILE"}}},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			e := newEnv(t)
			src := filepath.Join(t.TempDir(), "src")
			if err := os.MkdirAll(src, 0o755); err != nil {
				t.Fatal(err)
			}
			writeRandom(t, filepath.Join(src, "file"), 200000, 5)
			e.mustRun("backup", src)
			files, _ := filepath.Glob(filepath.Join(e.repo, k.glob))
			if len(files) == 0 {
				t.Fatalf("no %s file in the repository", k.name)
			}
			for _, f := range files {
				flipByte(t, f)
			}
			for _, c := range k.cmds {
				target := t.TempDir()
				args := make([]string, len(c))
				for i, a := range c {
					switch a {
					case "T":
						a = target
					case "FILE":
						a = filepath.Join(src, "file")
					}
					args[i] = a
				}
				r := e.run(args...)
				if r.code == 0 {
					t.Errorf("%v succeeded on a repository with a damaged %s", c, k.name)
				}
				assertOneLine(t, r.stderr)
				if k.name != "key" && !mentionsObject(r.stderr, files) {
					t.Errorf("%v: error %q does not name the damaged object", c, strings.TrimSpace(r.stderr))
				}
				// Never wrong data: nothing restored with content other than the original.
				restored := filepath.Join(target, src, "file")
				if b, err := os.ReadFile(restored); err == nil {
					orig, _ := os.ReadFile(filepath.Join(src, "file"))
					if !bytes.Equal(b, orig) {
						t.Errorf("%v restored wrong data", c)
					}
				} else if !errors.Is(err, os.ErrNotExist) {
					t.Fatal(err)
				}
			}
		})
	}
}

// mentionsObject reports whether msg names one of the damaged files: by
// folder and (a prefix of) its name, or "config".
func mentionsObject(msg string, files []string) bool {
	for _, f := range files {
		name := filepath.Base(f)
		if name == "config" && strings.Contains(msg, "config") {
			return true
		}
		if len(name) >= 8 && strings.Contains(msg, name[:8]) {
			return true
		}
	}
	return false
}
