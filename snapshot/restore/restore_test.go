package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/filter"
)

var isRoot = os.Geteuid() == 0

// allTypes is a snapshot with every node type and the metadata restore
// must bring back.
func allTypes() []entry {
	long := strings.Repeat("x", 255) // NAME_MAX
	return []entry{
		{path: "/home/u/docs", typ: snapshot.TypeDir, mode: 0o2750, uid: 1001, gid: 1002, mtime: baseTime + 5},
		{path: "/home/u/docs/a.txt", typ: snapshot.TypeFile, mode: 0o644, uid: 1001, gid: 1002,
			data: randomBytes(1, 200<<10), xattrs: []snapshot.Xattr{{Name: "user.bin", Value: []byte{0, 0xff}}, {Name: "user.comment", Value: []byte("hello")}}},
		{path: "/home/u/docs/empty", typ: snapshot.TypeFile, mode: 0o600},
		{path: "/home/u/docs/setuid", typ: snapshot.TypeFile, mode: 0o4755, uid: 0, gid: 1002, data: []byte("#!/bin/sh\n")},
		{path: "/home/u/docs/link", typ: snapshot.TypeSymlink, mode: 0o777, uid: 1001, target: "a.txt", mtime: baseTime + 7},
		{path: "/home/u/docs/dangling", typ: snapshot.TypeSymlink, mode: 0o777, target: "/nonexistent/\xff\xfe"},
		{path: "/home/u/docs/fifo", typ: snapshot.TypeFIFO, mode: 0o640, uid: 1001},
		{path: "/home/u/docs/null", typ: snapshot.TypeCharDev, mode: 0o666, rdev: unix.Mkdev(1, 3)},
		{path: "/home/u/docs/loop9", typ: snapshot.TypeBlockDev, mode: 0o660, gid: 6, rdev: unix.Mkdev(7, 9)},
		{path: "/home/u/docs/sock", typ: snapshot.TypeSocket, mode: 0o755},
		{path: "/home/u/docs/" + long, typ: snapshot.TypeFile, mode: 0o644, data: []byte("long name")},
		{path: "/home/u/docs/caf\xe9", typ: snapshot.TypeFile, mode: 0o644, data: []byte("latin-1 name")},
		{path: "/ro", typ: snapshot.TypeDir, mode: 0o555},
		{path: "/ro/file", typ: snapshot.TypeFile, mode: 0o444, data: randomBytes(2, 3*testChunkSize+1)},
		{path: "/tmp", typ: snapshot.TypeDir, mode: 0o1777},
	}
}

func TestRunAllTypes(t *testing.T) {
	for _, verify := range []bool{false, true} {
		t.Run(fmt.Sprintf("verify=%v", verify), func(t *testing.T) {
			s := snapshot.NewMemStore()
			entries := allTypes()
			root := buildSnapshot(t, s, entries)
			target := t.TempDir()
			res, err := Run(context.Background(), s, root, target, Options{Verify: verify, Workers: 3, OnError: failOnError(t)})
			if err != nil {
				t.Fatal(err)
			}
			checkEntries(t, target, entries)
			checkNoTemp(t, target)
			want := Result{Files: 11, Dirs: 5, Bytes: 200<<10 + 10 + 9 + 12 + 3*testChunkSize + 1}
			if verify {
				want.VerifiedFiles = 6
			}
			if *res != want {
				t.Errorf("result %+v, want %+v", *res, want)
			}
			if _, err := os.Lstat(filepath.Join(target, "home/u/docs/sock")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("socket restored: %v", err)
			}
		})
	}
}

func TestRunHardLinks(t *testing.T) {
	data := randomBytes(3, 100<<10)
	entries := []entry{
		{path: "/a/f1", typ: snapshot.TypeFile, mode: 0o640, data: data, inode: 77, links: 3},
		{path: "/a/f2", typ: snapshot.TypeFile, mode: 0o640, data: data, inode: 77, links: 3},
		{path: "/b/f3", typ: snapshot.TypeFile, mode: 0o640, data: data, inode: 77, links: 3},
		{path: "/b/other", typ: snapshot.TypeFile, mode: 0o640, data: data, inode: 78, links: 1},
	}
	s := snapshot.NewMemStore()
	root := buildSnapshot(t, s, entries)

	t.Run("all", func(t *testing.T) {
		target := t.TempDir()
		res, err := Run(context.Background(), s, root, target, Options{OnError: failOnError(t)})
		if err != nil {
			t.Fatal(err)
		}
		checkEntries(t, target, entries)
		first := inode(t, filepath.Join(target, "a/f1"))
		for _, p := range []string{"a/f2", "b/f3"} {
			if got := inode(t, filepath.Join(target, p)); got != first {
				t.Errorf("%s: inode %d, want the inode of a/f1 (%d)", p, got, first)
			}
		}
		if got := inode(t, filepath.Join(target, "b/other")); got == first {
			t.Error("b/other shares the inode of the hard links")
		}
		if res.Files != 4 || res.Bytes != 2*int64(len(data)) {
			t.Errorf("result %+v, want 4 files and %d bytes", *res, 2*len(data))
		}
	})
	t.Run("only a later link selected", func(t *testing.T) {
		target := t.TempDir()
		m := compile(t, "/b/f3")
		if _, err := Run(context.Background(), s, root, target, Options{Include: m, OnError: failOnError(t)}); err != nil {
			t.Fatal(err)
		}
		checkEntries(t, target, entries[2:3])
		checkTree(t, target, []string{"b", "b/f3"})
	})
}

func TestRunInclude(t *testing.T) {
	entries := []entry{
		{path: "/home/u/docs", typ: snapshot.TypeDir, mode: 0o750, mtime: baseTime + 9},
		{path: "/home/u/docs/a.txt", typ: snapshot.TypeFile, mode: 0o644, data: []byte("a")},
		{path: "/home/u/docs/b.txt", typ: snapshot.TypeFile, mode: 0o644, data: []byte("b")},
		{path: "/home/u/docs/sub/c.txt", typ: snapshot.TypeFile, mode: 0o644, data: []byte("c")},
		{path: "/home/u/other/d.txt", typ: snapshot.TypeFile, mode: 0o644, data: []byte("d")},
		{path: "/etc/passwd", typ: snapshot.TypeFile, mode: 0o644, data: []byte("root:x:0:0")},
	}
	s := snapshot.NewMemStore()
	root := buildSnapshot(t, s, entries)
	tests := []struct {
		name     string
		patterns []string
		want     []string
	}{
		{"one file", []string{"/home/u/docs/a.txt"},
			[]string{"home", "home/u", "home/u/docs", "home/u/docs/a.txt"}},
		{"a directory", []string{"/home/u/docs"},
			[]string{"home", "home/u", "home/u/docs", "home/u/docs/a.txt", "home/u/docs/b.txt", "home/u/docs/sub", "home/u/docs/sub/c.txt"}},
		{"glob", []string{"/home/*/*/d.txt", "/etc/passwd"},
			[]string{"etc", "etc/passwd", "home", "home/u", "home/u/other", "home/u/other/d.txt"}},
		{"no match", []string{"/nothing"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := t.TempDir()
			pr := new(Progress)
			res, err := Run(context.Background(), s, root, target, Options{Include: compile(t, tt.patterns...), Progress: pr, OnError: failOnError(t)})
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(tt.want, "home/u/docs") {
				// A parent of a match gets its own metadata too.
				checkEntries(t, target, entries[:1])
			}
			checkTree(t, target, tt.want)
			if got := pr.TotalFiles.Load(); got != res.Files || pr.Files.Load() != res.Files {
				t.Errorf("progress counted %d of %d files, result %d", pr.Files.Load(), got, res.Files)
			}
		})
	}
}

func TestRunSparse(t *testing.T) {
	const mib = 1 << 20
	head, tail := randomBytes(4, 5*mib), randomBytes(5, 5*mib)
	entries := []entry{{path: "/disk.img", typ: snapshot.TypeFile, mode: 0o600,
		parts: []part{{data: head}, {hole: 90 * mib, data: tail}}, chunk: mib}}
	s := snapshot.NewMemStore()
	root := buildSnapshot(t, s, entries)
	target := t.TempDir()
	pr := new(Progress)
	res, err := Run(context.Background(), s, root, target, Options{Verify: true, Progress: pr, OnError: failOnError(t)})
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(target, "disk.img")
	var st unix.Stat_t
	if err := unix.Stat(name, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 100*mib {
		t.Fatalf("size %d, want %d", st.Size, 100*mib)
	}
	// st_blocks counts 512-byte units; allow 2 MiB of file system slack
	// beside the 10 MiB of data.
	if used := st.Blocks * 512; used > 12*mib {
		t.Errorf("restored file uses %d bytes on disk; the 90 MiB hole was written", used)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, r := range []struct {
		off  int64
		want []byte
	}{{0, head}, {5 * mib, make([]byte, 90*mib)}, {95 * mib, tail}} {
		got := make([]byte, len(r.want))
		if _, err := f.ReadAt(got, r.off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, r.want) {
			t.Errorf("content at %d differs", r.off)
		}
	}
	if res.VerifiedFiles != 1 || pr.Bytes.Load() != 100*mib || pr.TotalBytes.Load() != 100*mib {
		t.Errorf("verified %d, progress %d of %d bytes", res.VerifiedFiles, pr.Bytes.Load(), pr.TotalBytes.Load())
	}
}

func TestRunVerifyDetectsChanges(t *testing.T) {
	data := randomBytes(6, 4*testChunkSize)
	entries := []entry{
		{path: "/d/f", typ: snapshot.TypeFile, mode: 0o644, parts: []part{{data: data[:testChunkSize]}, {hole: 3 * testChunkSize, data: data[testChunkSize:]}}},
	}
	s := snapshot.NewMemStore()
	root := buildSnapshot(t, s, entries)
	tests := []struct {
		name   string
		modify func(f *os.File) error
	}{
		{"data byte flipped", func(f *os.File) error {
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, 5*testChunkSize+17); err != nil {
				return err
			}
			b[0] ^= 0x80
			_, err := f.WriteAt(b, 5*testChunkSize+17)
			return err
		}},
		{"hole written", func(f *os.File) error {
			_, err := f.WriteAt([]byte{1}, 2*testChunkSize)
			return err
		}},
		{"truncated", func(f *os.File) error { return f.Truncate(6 * testChunkSize) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := t.TempDir()
			dst := filepath.Join(target, "d/f")
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			setVerifyHook(t, func(tmp string) {
				f, err := os.OpenFile(tmp, os.O_RDWR, 0)
				if err == nil {
					err = tt.modify(f)
					f.Close()
				}
				if err != nil {
					t.Error(err)
				}
			})
			res, err := Run(context.Background(), s, root, target, Options{Verify: true})
			if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "/d/f") {
				t.Fatalf("Run: %v; want an error naming /d/f and wrapping ErrVerify", err)
			}
			if res.VerifiedFiles != 0 {
				t.Errorf("%d files verified", res.VerifiedFiles)
			}
			checkFileContent(t, dst, []byte("old"))
			checkNoTemp(t, target)
		})
	}
}

func TestRunRepositoryError(t *testing.T) {
	big := randomBytes(7, 20*testChunkSize)
	entries := []entry{
		{path: "/d/a", typ: snapshot.TypeFile, mode: 0o644, data: []byte("small a")},
		{path: "/d/big", typ: snapshot.TypeFile, mode: 0o644, data: big},
		{path: "/d/z", typ: snapshot.TypeFile, mode: 0o644, data: []byte("small z")},
	}
	for _, tt := range []struct {
		name    string
		corrupt int // index of the chunk of big to corrupt
	}{{"first chunk", 0}, {"middle chunk", 10}, {"last chunk", 19}} {
		t.Run(tt.name, func(t *testing.T) {
			s := snapshot.NewMemStore()
			root := buildSnapshot(t, s, entries)
			if !s.Corrupt(chunkIDs(s, big)[tt.corrupt]) {
				t.Fatal("chunk to corrupt not found")
			}
			target := t.TempDir()
			dst := filepath.Join(target, "d/big")
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, []byte("previous version"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Run(context.Background(), s, root, target, Options{Workers: 4})
			if err == nil || !strings.Contains(err.Error(), "/d/big") {
				t.Fatalf("Run: %v; want an error naming /d/big", err)
			}
			checkFileContent(t, dst, []byte("previous version"))
			checkNoTemp(t, target)
		})
	}
	t.Run("tree", func(t *testing.T) {
		s := snapshot.NewMemStore()
		root := buildSnapshot(t, s, entries)
		d, err := snapshot.FindNode(context.Background(), s, root, "/d")
		if err != nil {
			t.Fatal(err)
		}
		s.Corrupt(d.Subtrees[0])
		_, err = Run(context.Background(), s, root, t.TempDir(), Options{})
		if err == nil || !strings.Contains(err.Error(), "/d") {
			t.Fatalf("Run: %v; want an error naming /d", err)
		}
	})
}

func TestRunReplacesExisting(t *testing.T) {
	entries := []entry{
		{path: "/d/file", typ: snapshot.TypeFile, mode: 0o644, data: []byte("new content")},
		{path: "/d/link", typ: snapshot.TypeSymlink, mode: 0o777, target: "file"},
		{path: "/d/sub", typ: snapshot.TypeDir, mode: 0o755},
		{path: "/d/sub/x", typ: snapshot.TypeFile, mode: 0o600, data: []byte("x")},
		{path: "/d/wasdir", typ: snapshot.TypeFile, mode: 0o644, data: []byte("file now")},
	}
	s := snapshot.NewMemStore()
	root := buildSnapshot(t, s, entries)
	target := t.TempDir()
	outside := t.TempDir()
	mustWrite(t, filepath.Join(outside, "keep"), "outside")
	// d/file is a hard link to a file outside the target: the restore must
	// replace the name, not write through it.
	mustWrite(t, filepath.Join(target, "d/file"), "old")
	if err := os.Remove(filepath.Join(target, "d/file")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(outside, "keep"), filepath.Join(target, "d/file")); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(target, "d/link/inside"), "a directory where a symlink belongs")
	// d/sub is a symlink to a directory outside: it must not be followed.
	if err := os.Symlink(outside, filepath.Join(target, "d/sub")); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(target, "d/wasdir/deep/f"), "a directory where a file belongs")

	if _, err := Run(context.Background(), s, root, target, Options{OnError: failOnError(t)}); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, target, entries)
	checkFileContent(t, filepath.Join(outside, "keep"), []byte("outside"))
	if _, err := os.Lstat(filepath.Join(outside, "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("restore followed a symlink out of the target: %v", err)
	}
	checkTree(t, target, []string{"d", "d/file", "d/link", "d/sub", "d/sub/x", "d/wasdir"})
}

func TestRunManyFilesInParallel(t *testing.T) {
	var entries []entry
	for i := range 300 {
		size := (i * 7919) % (3 * testChunkSize) // 0 up to three chunks
		entries = append(entries, entry{path: fmt.Sprintf("/data/dir%02d/file%03d", i%10, i), typ: snapshot.TypeFile,
			mode: 0o644, data: randomBytes(uint64(100+i), size)})
	}
	s := snapshot.NewMemStore()
	root := buildSnapshot(t, s, entries)
	target := t.TempDir()
	pr := new(Progress)
	res, err := Run(context.Background(), s, root, target, Options{Workers: 8, Verify: true, Progress: pr, OnError: failOnError(t)})
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, target, entries)
	var total int64
	for _, e := range entries {
		total += int64(len(e.data))
	}
	if res.Files != 300 || res.VerifiedFiles != 300 || res.Bytes != total || res.Dirs != 11 {
		t.Errorf("result %+v, want 300 files, 11 dirs, %d bytes", *res, total)
	}
	if pr.Files.Load() != 300 || pr.TotalFiles.Load() != 300 || pr.Bytes.Load() != total || pr.TotalBytes.Load() != total {
		t.Errorf("progress %d/%d files, %d/%d bytes; want 300 files, %d bytes",
			pr.Files.Load(), pr.TotalFiles.Load(), pr.Bytes.Load(), pr.TotalBytes.Load(), total)
	}
}

func TestRunReportsNonFatalErrors(t *testing.T) {
	entries := []entry{
		{path: "/f", typ: snapshot.TypeFile, mode: 0o640, data: []byte("content"),
			xattrs: []snapshot.Xattr{{Name: "bogus.namespace", Value: []byte("v")}, {Name: "user.ok", Value: []byte("v")}}},
		{path: "/g", typ: snapshot.TypeFile, mode: 0o600, data: []byte("more")},
	}
	s := snapshot.NewMemStore()
	root := buildSnapshot(t, s, entries)
	target := t.TempDir()
	var mu sync.Mutex
	var paths []string
	res, err := Run(context.Background(), s, root, target, Options{Workers: 4, OnError: func(p string, err error) {
		mu.Lock()
		defer mu.Unlock()
		paths = append(paths, p)
		if !strings.Contains(err.Error(), "bogus.namespace") {
			t.Errorf("error %v does not name the attribute", err)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 1 || !slices.Equal(paths, []string{"/f"}) || res.Files != 2 {
		t.Errorf("result %+v, errors reported for %q; want one error for /f and 2 files", *res, paths)
	}
	entries[0].xattrs = entries[0].xattrs[1:] // the supported one is set
	checkEntries(t, target, entries)
}

func TestRunCanceled(t *testing.T) {
	s := snapshot.NewMemStore()
	root := buildSnapshot(t, s, allTypes())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	target := t.TempDir()
	if _, err := Run(ctx, s, root, target, Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v, want context.Canceled", err)
	}
	checkNoTemp(t, target)
}

// checkEntries compares the restored entries with their descriptions:
// type, mode, owner (as root), times, device numbers, xattrs, link
// targets, and content. Metadata is checked before content, as reading a
// file may update its access time.
func checkEntries(t *testing.T, target string, entries []entry) {
	t.Helper()
	for i := range entries {
		e := &entries[i]
		if e.typ == snapshot.TypeSocket {
			continue
		}
		name := filepath.Join(target, filepath.FromSlash(e.path))
		var st unix.Stat_t
		if err := unix.Lstat(name, &st); err != nil {
			t.Errorf("%s: %v", e.path, err)
			continue
		}
		wantFmt := map[snapshot.NodeType]uint32{snapshot.TypeFile: unix.S_IFREG, snapshot.TypeDir: unix.S_IFDIR,
			snapshot.TypeSymlink: unix.S_IFLNK, snapshot.TypeFIFO: unix.S_IFIFO, snapshot.TypeCharDev: unix.S_IFCHR,
			snapshot.TypeBlockDev: unix.S_IFBLK}[e.typ]
		if st.Mode&unix.S_IFMT != wantFmt {
			t.Errorf("%s: file type %#o, want %#o", e.path, st.Mode&unix.S_IFMT, wantFmt)
			continue
		}
		if e.typ != snapshot.TypeSymlink && st.Mode&0o7777 != e.mode {
			t.Errorf("%s: mode %#o, want %#o", e.path, st.Mode&0o7777, e.mode)
		}
		if isRoot && (st.Uid != e.uid || st.Gid != e.gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", e.path, st.Uid, st.Gid, e.uid, e.gid)
		}
		atime, mtime := e.times()
		if got := st.Mtim.Nano(); got != mtime {
			t.Errorf("%s: mtime %d, want %d", e.path, got, mtime)
		}
		if got := st.Atim.Nano(); got != atime {
			t.Errorf("%s: atime %d, want %d", e.path, got, atime)
		}
		if (e.typ == snapshot.TypeCharDev || e.typ == snapshot.TypeBlockDev) && st.Rdev != e.rdev {
			t.Errorf("%s: rdev %#x, want %#x", e.path, st.Rdev, e.rdev)
		}
		for _, x := range e.xattrs {
			buf := make([]byte, 256)
			n, err := unix.Lgetxattr(name, x.Name, buf)
			if err != nil || !bytes.Equal(buf[:n], x.Value) {
				t.Errorf("%s: xattr %s = %q, %v; want %q", e.path, x.Name, buf[:max(n, 0)], err, x.Value)
			}
		}
		if e.typ == snapshot.TypeSymlink {
			if got, err := os.Readlink(name); err != nil || got != e.target {
				t.Errorf("%s: link target %q, %v; want %q", e.path, got, err, e.target)
			}
		}
	}
	for i := range entries {
		if e := &entries[i]; e.typ == snapshot.TypeFile {
			checkFileContent(t, filepath.Join(target, filepath.FromSlash(e.path)), e.content())
		}
	}
}

func checkFileContent(t *testing.T, name string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(name)
	if err != nil {
		t.Error(err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: content differs: %d bytes, want %d", name, len(got), len(want))
	}
}

// checkTree checks that the target holds exactly the paths want.
func checkTree(t *testing.T, target string, want []string) {
	t.Helper()
	var got []string
	err := filepath.WalkDir(target, func(p string, _ fs.DirEntry, err error) error {
		if err != nil || p == target {
			return err
		}
		rel, _ := filepath.Rel(target, p)
		got = append(got, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("restored paths %q, want %q", got, want)
	}
}

// checkNoTemp fails if a temporary restore file is left below dir.
func checkNoTemp(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tempPrefix) {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

func failOnError(t *testing.T) func(string, error) {
	return func(p string, err error) { t.Errorf("non-fatal error at %s: %v", p, err) }
}

func compile(t *testing.T, patterns ...string) *filter.Matcher {
	t.Helper()
	m, err := filter.Compile(patterns)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func inode(t *testing.T, name string) uint64 {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func mustWrite(t *testing.T, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// setVerifyHook installs testHookBeforeVerify for the rest of the test.
func setVerifyHook(t *testing.T, fn func(tmp string)) {
	testHookBeforeVerify = fn
	t.Cleanup(func() { testHookBeforeVerify = nil })
}
