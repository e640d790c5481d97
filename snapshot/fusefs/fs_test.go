package fusefs

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/imageio"
)

// requireFUSE fails the test when the machine cannot mount FUSE file
// systems: the tests need real mounts.
func requireFUSE(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Fatal("fusermount3 not found: run scripts/install-test-deps.sh")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("/dev/fuse: %v (FUSE tests need it)", err)
	}
}

type fixture struct {
	store    *snapshot.MemStore
	snaps    []Snapshot
	image    []byte
	fileData map[string][]byte
	mtime    time.Time
}

func saveTree(t *testing.T, s *snapshot.MemStore, nodes ...snapshot.Node) []chunk.ID {
	t.Helper()
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	ids, _, err := snapshot.SaveTree(context.Background(), s, &snapshot.Tree{Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func fileNode(t *testing.T, s *snapshot.MemStore, name string, data []byte, mtime time.Time) snapshot.Node {
	t.Helper()
	c, _, err := imageio.SaveTestContent(context.Background(), s, data, 8<<10, 40<<10, uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	return snapshot.Node{Name: name, Type: snapshot.TypeFile, Mode: 0o640, UID: 1000, GID: 100,
		MTime: mtime.UnixNano(), ATime: mtime.UnixNano(), CTime: mtime.UnixNano(), Size: uint64(len(data)), Links: 1, Content: c}
}

// newFixture stores a file snapshot and two image snapshots.
func newFixture(t *testing.T) *fixture {
	s := snapshot.NewMemStore()
	f := &fixture{store: s, fileData: make(map[string][]byte), mtime: time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)}
	rng := rand.New(rand.NewPCG(1, 1))
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	f.fileData["data/big.bin"] = rnd(700 << 10)
	f.fileData["data/small.txt"] = []byte("hello\n")
	f.fileData["data/empty"] = nil
	big := fileNode(t, s, "big.bin", f.fileData["data/big.bin"], f.mtime)
	big.Xattrs = []snapshot.Xattr{{Name: "user.comment", Value: []byte("kept")}}
	link1 := fileNode(t, s, "link1", []byte("linked"), f.mtime)
	link1.Links, link1.Inode, link1.Dev = 2, 77, 5
	link2 := link1
	link2.Name = "link2"
	sub := saveTree(t, s,
		big,
		fileNode(t, s, "small.txt", f.fileData["data/small.txt"], f.mtime),
		fileNode(t, s, "empty", nil, f.mtime),
		link1, link2,
		snapshot.Node{Name: "sym", Type: snapshot.TypeSymlink, Mode: 0o777, LinkTarget: "small.txt", MTime: f.mtime.UnixNano()},
		snapshot.Node{Name: "fifo", Type: snapshot.TypeFIFO, Mode: 0o600},
	)
	root := saveTree(t, s, snapshot.Node{Name: "data", Type: snapshot.TypeDir, Mode: 0o750, UID: 1000, MTime: f.mtime.UnixNano(), Subtrees: sub, Links: 2})
	t0 := time.Date(2024, 6, 1, 2, 0, 0, 0, time.UTC)
	f.snaps = append(f.snaps, Snapshot{ID: "aaaa1111" + string(bytes.Repeat([]byte("0"), 56)), Snapshot: &snapshot.Snapshot{
		Time: t0, Host: "laptop", Tags: []string{"home"}, Kind: snapshot.KindFiles, Tree: root[0]}})

	for i, seed := range []uint64{3, 4} {
		img := imageio.TestImage(3<<20+512, seed)
		c, _, err := imageio.SaveTestContent(context.Background(), s, img, 32<<10, 128<<10, seed)
		if err != nil {
			t.Fatal(err)
		}
		n := snapshot.Node{Name: "disk.img", Type: snapshot.TypeImage, Mode: 0o644, Size: uint64(len(img)), Content: c}
		tree := saveTree(t, s, n)
		f.snaps = append(f.snaps, Snapshot{ID: "bbbb000" + string(rune('1'+i)) + string(bytes.Repeat([]byte("0"), 56)), Snapshot: &snapshot.Snapshot{
			Time: t0.Add(time.Duration(i+1) * 24 * time.Hour), Host: "server", Tags: []string{"nightly"}, Kind: snapshot.KindImage, Tree: tree[0]}})
		f.image = img // the newest
	}
	return f
}

func mount(t *testing.T, f *fixture, opts Options) string {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	srv, err := Mount(dir, f.store, f.snaps, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		srv.Wait()
	})
	return dir
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestLayoutByIDTimeHostAndTag(t *testing.T) {
	f := newFixture(t)
	dir := mount(t, f, Options{})
	eq := func(what string, got []string, want ...string) {
		t.Helper()
		if len(got) != len(want) || (len(want) > 0 && !slicesEqual(got, want)) {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	eq("root", names(t, dir), "hosts", "ids", "snapshots", "tags")
	eq("ids", names(t, filepath.Join(dir, "ids")), "aaaa1111", "bbbb0001", "bbbb0002")
	times := []string{}
	for _, s := range f.snaps {
		times = append(times, s.Time.Local().Format(TimeLayout))
	}
	eq("snapshots", names(t, filepath.Join(dir, "snapshots")), append(append([]string{}, times...), "latest")...)
	eq("hosts", names(t, filepath.Join(dir, "hosts")), "laptop", "server")
	eq("hosts/server", names(t, filepath.Join(dir, "hosts", "server")), times[1], times[2], "latest")
	eq("tags/home", names(t, filepath.Join(dir, "tags", "home")), times[0], "latest")
	if target, err := os.Readlink(filepath.Join(dir, "snapshots", "latest")); err != nil || target != times[2] {
		t.Errorf("snapshots/latest -> %q, %v; want %q", target, err, times[2])
	}
	// The same image is reachable everywhere.
	for _, p := range []string{"ids/bbbb0002/disk.img", "snapshots/latest/disk.img", "hosts/server/latest/disk.img", "tags/nightly/" + times[2] + "/disk.img"} {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || !bytes.Equal(b, f.image) {
			t.Errorf("%s: %v, equal to the image: %v", p, err, bytes.Equal(b, f.image))
		}
	}
	// Snapshot directories carry the snapshot time.
	fi, err := os.Stat(filepath.Join(dir, "ids", "aaaa1111"))
	if err != nil || !fi.ModTime().Equal(f.snaps[0].Time) {
		t.Errorf("snapshot dir time %v, %v", fi.ModTime(), err)
	}
}

func slicesEqual(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

func TestFileSnapshotMetadataAndContent(t *testing.T) {
	f := newFixture(t)
	root := filepath.Join(mount(t, f, Options{}), "ids", "aaaa1111")
	for p, want := range f.fileData {
		got, err := os.ReadFile(filepath.Join(root, p))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v, content equal %v", p, err, bytes.Equal(got, want))
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(root, "data/big.bin"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != syscall.S_IFREG|0o640 || st.Uid != 1000 || st.Gid != 100 || st.Size != 700<<10 ||
		st.Mtim.Nano() != f.mtime.UnixNano() || st.Nlink != 1 {
		t.Errorf("big.bin: mode %o uid %d gid %d size %d mtime %d nlink %d", st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Nano(), st.Nlink)
	}
	if err := syscall.Stat(filepath.Join(root, "data"), &st); err != nil || st.Mode != syscall.S_IFDIR|0o750 {
		t.Errorf("data: mode %o, %v", st.Mode, err)
	}
	if target, err := os.Readlink(filepath.Join(root, "data/sym")); err != nil || target != "small.txt" {
		t.Errorf("symlink: %q, %v", target, err)
	}
	if fi, err := os.Lstat(filepath.Join(root, "data/fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("fifo: %v, %v", fi.Mode(), err)
	}
	var a, b syscall.Stat_t
	if err := syscall.Stat(filepath.Join(root, "data/link1"), &a); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Join(root, "data/link2"), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard links: inodes %d and %d, nlink %d; want one inode, nlink 2", a.Ino, b.Ino, a.Nlink)
	}
	buf := make([]byte, 64)
	n, err := syscall.Getxattr(filepath.Join(root, "data/big.bin"), "user.comment", buf)
	if err != nil || string(buf[:n]) != "kept" {
		t.Errorf("xattr: %q, %v", buf[:n], err)
	}
	// Nothing can be written.
	if _, err := os.OpenFile(filepath.Join(root, "data/small.txt"), os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) {
		t.Errorf("open for writing: %v, want EROFS", err)
	}
	if err := os.WriteFile(filepath.Join(root, "data/new"), nil, 0o600); err == nil {
		t.Error("created a file in a snapshot")
	}
}

func TestImageRandomReadsAndSharedCache(t *testing.T) {
	f := newFixture(t)
	cache := imageio.NewCache(2 << 20)
	dir := mount(t, f, Options{Cache: cache})
	p := filepath.Join(dir, "snapshots", "latest", "disk.img")
	fi, err := os.Stat(p)
	if err != nil || fi.Size() != int64(len(f.image)) || fi.Mode().Perm()&0o222 != 0 {
		t.Fatalf("image: %v, %v", fi, err)
	}
	file, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	rng := rand.New(rand.NewPCG(2, 2))
	buf := make([]byte, 4096)
	for range 500 {
		off := rng.Int64N(int64(len(f.image)) - 4096)
		if _, err := file.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, f.image[off:off+4096]) {
			t.Fatalf("read at %d differs from the image", off)
		}
	}
	if st := cache.Stats(); st.Bytes > 2<<20 || st.Misses == 0 {
		t.Errorf("cache %+v: over its limit or unused", st)
	}
}
