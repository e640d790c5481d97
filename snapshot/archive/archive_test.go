package archive_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/archive"
	"golang.org/x/sys/unix"
)

func TestNodeTypes(t *testing.T) {
	dir := t.TempDir()
	store := snapshot.NewMemStore()
	data := randomBytes(1, 300<<10)
	longName := strings.Repeat("L", 255)
	isRoot := os.Geteuid() == 0

	// Each case creates its entry before the single backup run, then
	// checks the node it produced.
	tests := []struct {
		name  string
		path  string
		setup func(t *testing.T, p string)
		check func(t *testing.T, n *snapshot.Node)
	}{
		{
			name: "file", path: "file",
			setup: func(t *testing.T, p string) { writeFile(t, p, data) },
			check: func(t *testing.T, n *snapshot.Node) {
				if n.Type != snapshot.TypeFile || n.Size != uint64(len(data)) {
					t.Errorf("type %d size %d, want file of %d bytes", n.Type, n.Size, len(data))
				}
				if !bytes.Equal(content(t, store, n), data) {
					t.Error("content differs from the file")
				}
				if n.Mode != 0o644 {
					t.Errorf("mode %#o, want 0644", n.Mode)
				}
			},
		},
		{
			name: "empty file", path: "empty",
			setup: func(t *testing.T, p string) { writeFile(t, p, nil) },
			check: func(t *testing.T, n *snapshot.Node) {
				if n.Type != snapshot.TypeFile || n.Size != 0 || len(content(t, store, n)) != 0 {
					t.Errorf("got type %d size %d, want an empty file", n.Type, n.Size)
				}
			},
		},
		{
			name: "directory with special bits", path: "dir",
			setup: func(t *testing.T, p string) {
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, 0o755|os.ModeSticky|os.ModeSetgid); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, n *snapshot.Node) {
				if n.Type != snapshot.TypeDir || n.Mode != 0o3755 {
					t.Errorf("type %d mode %#o, want dir 03755", n.Type, n.Mode)
				}
			},
		},
		{
			name: "setuid file", path: "suid",
			setup: func(t *testing.T, p string) {
				writeFile(t, p, []byte("x"))
				if err := os.Chmod(p, 0o755|os.ModeSetuid); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, n *snapshot.Node) {
				if n.Mode != 0o4755 {
					t.Errorf("mode %#o, want 04755", n.Mode)
				}
			},
		},
		{
			name: "symlink", path: "link",
			setup: func(t *testing.T, p string) {
				if err := os.Symlink("../target\xff/x", p); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, n *snapshot.Node) {
				if n.Type != snapshot.TypeSymlink || n.LinkTarget != "../target\xff/x" {
					t.Errorf("type %d target %q, want symlink to ../target\\xff/x", n.Type, n.LinkTarget)
				}
			},
		},
		{
			name: "fifo", path: "fifo",
			setup: func(t *testing.T, p string) {
				if err := unix.Mkfifo(p, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, n *snapshot.Node) {
				if n.Type != snapshot.TypeFIFO || n.Mode != 0o600 {
					t.Errorf("type %d mode %#o, want fifo 0600", n.Type, n.Mode)
				}
			},
		},
		{
			name: "socket", path: "sock",
			setup: func(t *testing.T, p string) {
				l, err := net.Listen("unix", p)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
			},
			check: func(t *testing.T, n *snapshot.Node) {
				if n.Type != snapshot.TypeSocket {
					t.Errorf("type %d, want socket", n.Type)
				}
			},
		},
		{
			name: "character device", path: "null",
			setup: func(t *testing.T, p string) {
				if !isRoot {
					t.Log("not root: no device node is created, so only its absence is checked")
					return
				}
				if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, n *snapshot.Node) {
				if n.Type != snapshot.TypeCharDev || n.Rdev != unix.Mkdev(1, 3) {
					t.Errorf("type %d rdev %#x, want char device 1:3", n.Type, n.Rdev)
				}
			},
		},
		{
			name: "non-UTF-8 name", path: "caf\xe9",
			setup: func(t *testing.T, p string) { writeFile(t, p, []byte("latin-1")) },
			check: func(t *testing.T, n *snapshot.Node) {
				if n.Name != "caf\xe9" || string(content(t, store, n)) != "latin-1" {
					t.Errorf("name %q, want caf\\xe9 with its content", n.Name)
				}
			},
		},
		{
			name: "255-byte name", path: longName,
			setup: func(t *testing.T, p string) { writeFile(t, p, []byte("long")) },
			check: func(t *testing.T, n *snapshot.Node) {
				if n.Name != longName {
					t.Errorf("name of %d bytes, want 255", len(n.Name))
				}
			},
		},
	}
	for _, tt := range tests {
		tt.setup(t, filepath.Join(dir, tt.path))
	}
	var want unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "file"), &want); err != nil {
		t.Fatal(err)
	}

	opts, rep := options()
	res := run(t, store, []string{dir}, opts)
	if res.Errors != 0 || res.Warnings != 0 {
		t.Fatalf("errors %d warnings %d (%v), want none", res.Errors, res.Warnings, rep.errs)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := find(t, store, res.Tree, filepath.Join(dir, tt.path))
			if tt.name == "character device" && !isRoot {
				if n != nil {
					t.Error("a node for a device that was not created")
				}
				return
			}
			if n == nil {
				t.Fatal("missing from the snapshot")
			}
			tt.check(t, n)
		})
	}

	t.Run("metadata from lstat", func(t *testing.T) {
		n := mustFind(t, store, res.Tree, filepath.Join(dir, "file"))
		got := [...]int64{n.MTime, n.CTime, int64(n.Inode), int64(n.Dev), int64(n.Links), int64(n.UID), int64(n.GID)}
		exp := [...]int64{want.Mtim.Nano(), want.Ctim.Nano(), int64(want.Ino), int64(want.Dev), int64(want.Nlink), int64(want.Uid), int64(want.Gid)}
		if got != exp {
			t.Errorf("mtime, ctime, inode, dev, links, uid, gid = %v, want %v", got, exp)
		}
		if u, err := user.LookupId("0"); err == nil && n.UID == 0 && n.User != u.Username {
			t.Errorf("user %q, want %q", n.User, u.Username)
		}
	})
}

func TestHardLinks(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(2, 200<<10)
	writeFile(t, filepath.Join(dir, "a"), data)
	if err := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	store := snapshot.NewMemStore()
	opts, _ := options()
	res := run(t, store, []string{dir}, opts)
	a := mustFind(t, store, res.Tree, filepath.Join(dir, "a"))
	b := mustFind(t, store, res.Tree, filepath.Join(dir, "b"))
	if a.Links != 2 || b.Links != 2 || a.Inode != b.Inode {
		t.Errorf("links %d/%d inodes %d/%d, want 2 links to one inode", a.Links, b.Links, a.Inode, b.Inode)
	}
	if !bytes.Equal(content(t, store, b), data) || !slices.Equal(extents(t, store, a), extents(t, store, b)) {
		t.Error("the two names of one file have different content")
	}
	if got := res.Summary.BytesRead; got != uint64(len(data)) {
		t.Errorf("BytesRead %d, want %d: a hard-linked file is read once", got, len(data))
	}
	if res.Summary.TotalFilesProcessed != 2 {
		t.Errorf("TotalFilesProcessed %d, want 2", res.Summary.TotalFilesProcessed)
	}
}

func TestXattrs(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	writeFile(t, p, []byte("x"))
	value := []byte("value\x00with\xffbytes")
	if err := unix.Setxattr(p, "user.imago.b", value, 0); err != nil {
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			t.Skipf("the file system of %s refuses user xattrs (%v): xattrs not tested", dir, err)
		}
		t.Fatal(err)
	}
	if err := unix.Setxattr(p, "user.imago.a", nil, 0); err != nil {
		t.Fatal(err)
	}
	store := snapshot.NewMemStore()
	opts, _ := options()
	res := run(t, store, []string{dir}, opts)
	n := mustFind(t, store, res.Tree, p)
	want := []snapshot.Xattr{{Name: "user.imago.a", Value: []byte{}}, {Name: "user.imago.b", Value: value}}
	if len(n.Xattrs) != len(want) {
		t.Fatalf("xattrs %q, want %q", n.Xattrs, want)
	}
	for i := range want {
		if n.Xattrs[i].Name != want[i].Name || !bytes.Equal(n.Xattrs[i].Value, want[i].Value) {
			t.Errorf("xattr %d = %q, want %q", i, n.Xattrs[i], want[i])
		}
	}
}

func TestLayout(t *testing.T) {
	base := t.TempDir()
	for _, p := range []string{"a/b/c/f1", "a/b/c/d/f2", "a/b/other/f3", "a/x/f4", "a-b/f5", "top/f6"} {
		writeFile(t, filepath.Join(base, p), []byte(p))
	}
	if err := os.Chmod(filepath.Join(base, "a"), 0o701); err != nil {
		t.Fatal(err)
	}
	j := func(p string) string { return filepath.Join(base, p) }

	tests := []struct {
		name    string
		paths   []string
		present []string
		absent  []string
	}{
		{"one deep path", []string{j("a/b/c")}, []string{"a/b/c/f1", "a/b/c/d/f2"}, []string{"a/b/other", "a/x", "top"}},
		{"overlapping paths", []string{j("a/b/c/d"), j("a/b"), j("a/b/c")}, []string{"a/b/c/d/f2", "a/b/other/f3"}, []string{"a/x", "a-b"}},
		{"duplicates", []string{j("a/x"), j("a/x/"), j("a/./x")}, []string{"a/x/f4"}, []string{"a/b"}},
		{"siblings merged", []string{j("a/x/f4"), j("a-b"), j("top")}, []string{"a/x/f4", "a-b/f5", "top/f6"}, []string{"a/b"}},
		{"prefix that is not a parent", []string{j("a"), j("a-b")}, []string{"a/b/c/f1", "a-b/f5"}, []string{"top"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := snapshot.NewMemStore()
			opts, _ := options()
			res := run(t, store, tt.paths, opts)
			for _, p := range tt.present {
				n := mustFind(t, store, res.Tree, j(p))
				if n.Type == snapshot.TypeFile && string(content(t, store, n)) != p {
					t.Errorf("%s: wrong content", p)
				}
			}
			for _, p := range tt.absent {
				if find(t, store, res.Tree, j(p)) != nil {
					t.Errorf("%s is in the snapshot but was not asked for", p)
				}
			}
			// Directories above the paths carry their own metadata.
			a := mustFind(t, store, res.Tree, j("a"))
			if a.Type != snapshot.TypeDir || a.Mode != 0o701 {
				t.Errorf("intermediate directory a: type %d mode %#o, want dir 0701", a.Type, a.Mode)
			}
			if len(tt.paths) == 1 {
				// A single path: the root tree holds only its first
				// component, so the snapshot mirrors the absolute path.
				root, err := snapshot.LoadTree(context.Background(), store, []chunk.ID{res.Tree})
				if err != nil {
					t.Fatal(err)
				}
				first := strings.Split(strings.TrimPrefix(base, "/"), "/")[0]
				if len(root.Nodes) != 1 || root.Nodes[0].Name != first {
					t.Errorf("root tree holds %d nodes (first %q), want only %q", len(root.Nodes), root.Nodes[0].Name, first)
				}
			}
		})
	}
}

func TestMissingPath(t *testing.T) {
	dir := t.TempDir()
	store := snapshot.NewMemStore()
	opts, _ := options()
	_, err := archive.Run(context.Background(), store, store, []string{dir, filepath.Join(dir, "missing")}, opts)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Run with a missing path: error %v, want one naming it and wrapping ErrNotExist", err)
	}
	if store.Len() != 0 {
		t.Errorf("%d blobs saved before the error, want none", store.Len())
	}
}

func TestSymlinkAbovePath(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "real", "sub", "f"), []byte("through a link"))
	if err := os.Symlink("real", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	store := snapshot.NewMemStore()
	opts, _ := options()
	res := run(t, store, []string{filepath.Join(dir, "link", "sub")}, opts)
	link := mustFind(t, store, res.Tree, filepath.Join(dir, "link"))
	if link.Type != snapshot.TypeDir {
		t.Errorf("a symlink above a given path is recorded as type %d, want the directory it leads to", link.Type)
	}
	f := mustFind(t, store, res.Tree, filepath.Join(dir, "link", "sub", "f"))
	if string(content(t, store, f)) != "through a link" {
		t.Error("wrong content below the symlink")
	}
	if find(t, store, res.Tree, filepath.Join(dir, "real")) != nil {
		t.Error("the symlink's target directory was backed up under its own name")
	}

	// A given path that is a symlink is stored as the symlink.
	res = run(t, store, []string{filepath.Join(dir, "link")}, opts)
	if n := mustFind(t, store, res.Tree, filepath.Join(dir, "link")); n.Type != snapshot.TypeSymlink {
		t.Errorf("given symlink stored as type %d, want symlink", n.Type)
	}
}
