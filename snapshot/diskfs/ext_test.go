package diskfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestExtMatchesSource makes ext2, ext3 and ext4 images (with the ext4
// variants a real disk may carry) from one source tree and checks that
// every file reads back with its name, mode, owner, size, mtime, link
// target and bytes.
func TestExtMatchesSource(t *testing.T) {
	need(t, "mke2fs")
	src := t.TempDir()
	unixTree(t, src)
	cases := []struct {
		name  string
		kind  string
		extra []string
	}{
		{"ext4", "ext4", nil},
		{"ext4 1k blocks", "ext4", []string{"-b", "1024"}},
		{"ext4 inline_data", "ext4", []string{"-O", "inline_data"}},
		{"ext4 meta_bg 64bit", "ext4", []string{"-O", "meta_bg,^resize_inode,64bit", "-b", "1024", "-g", "1024"}},
		{"ext4 128-byte inodes", "ext4", []string{"-I", "128"}},
		{"ext4 hashed directories", "ext4", nil}, // e2fsck -D below
		{"ext3 block map", "ext3", []string{"-b", "1024"}},
		{"ext2 block map", "ext2", []string{"-b", "4096"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := mkfsExt(t, c.kind, src, 48, c.extra...)
			if c.name == "ext4 hashed directories" {
				need(t, "e2fsck", "debugfs")
				// e2fsck -D turns directories into hash trees, as the kernel
				// does once a directory outgrows a block; exit 1 means
				// "changed".
				sh(t, nil, "sh", "-c", "e2fsck -fyD \"$0\" >/dev/null; [ $? -le 1 ]", img)
				if out := sh(t, nil, "debugfs", "-R", "htree /big", img); !strings.Contains(out, "Root node dump") {
					t.Fatalf("/big is no hash tree:\n%s", out)
				}
			}
			f, size := openFile(t, img)
			fsys, err := OpenFS(f, Partition{Size: size})
			if err != nil {
				t.Fatal(err)
			}
			if fsys.Type() != c.kind {
				t.Errorf("Type %q, want %q", fsys.Type(), c.kind)
			}
			unit := time.Nanosecond
			if c.name == "ext4 128-byte inodes" || c.kind != "ext4" && c.kind != "ext3" {
				unit = time.Second
			}
			if n := compareTree(t, fsys, src, compareOpts{mtimeUnit: unit}); n < 400 {
				t.Errorf("compared %d files", n)
			}
		})
	}
}

// TestExtNanosecondsAndUnwritten sets an mtime after 2038 with nanoseconds and an
// unwritten (fallocated) extent over blocks that still hold a deleted
// file's bytes: the mtime must keep its nanoseconds and the extent must
// read as zeros, as the kernel reads it.
func TestExtNanosecondsAndUnwritten(t *testing.T) {
	need(t, "mke2fs", "debugfs")
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "garbage"), bytes.Repeat([]byte{0xA5}, 256<<10), 0o644, time.Unix(1e9, 0))
	writeFile(t, filepath.Join(src, "stamp"), []byte("x"), 0o644, time.Unix(1.6e9, 0))
	img := mkfsExt(t, "ext4", src, 8)
	cmds := strings.Join([]string{
		"sif /stamp mtime 21000102030405",
		"sif /stamp mtime_extra " + strconv.Itoa(123456789<<2|1), // epoch bit 1: after 2038
		"rm /garbage",
		"write /dev/null /prealloc",
		"fallocate /prealloc 0 63",
		"sif /prealloc size 1048576", // a hole after the extent
	}, "\n")
	sh(t, nil, "sh", "-c", "printf '%s\\n' \"$0\" | debugfs -w -f - "+img, cmds)
	stat := sh(t, nil, "debugfs", "-R", "stat /prealloc", img)
	if !strings.Contains(stat, "[u]") {
		t.Fatalf("debugfs made no unwritten extent:\n%s", stat)
	}
	f, size := openFile(t, img)
	fsys, err := OpenFS(f, Partition{Size: size})
	if err != nil {
		t.Fatal(err)
	}
	e, err := fsys.Stat("/stamp")
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2100, 1, 2, 3, 4, 5, 123456789, time.UTC); !e.MTime.Equal(want) {
		t.Errorf("mtime %v, want %v", e.MTime, want)
	}
	pf, err := fsys.Open("/prealloc")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(io.NewSectionReader(pf, 0, pf.Size()))
	if err != nil || len(got) != 1<<20 || !allZero(got) {
		t.Errorf("unwritten extent: %d bytes, all zero %v, err %v", len(got), allZero(got), err)
	}
}

// TestExtPaths checks path resolution: symlinked directories in the
// middle of a path, "..", missing files, and the errors of Open and
// ReadDir on the wrong kind of file.
func TestExtPaths(t *testing.T) {
	need(t, "mke2fs")
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "usr", "lib", "libx.so"), []byte("elf"), 0o755, time.Unix(1e9, 0))
	mustSymlink(t, "usr/lib", filepath.Join(src, "lib"))
	mustSymlink(t, "/usr/lib/libx.so", filepath.Join(src, "usr", "abs"))
	mustSymlink(t, "loop", filepath.Join(src, "loop"))
	img := mkfsExt(t, "ext4", src, 8)
	f, size := openFile(t, img)
	fsys, err := OpenFS(f, Partition{Size: size})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/lib/libx.so", "lib/libx.so", "/usr/abs", "/usr/../lib/./libx.so", "/lib/../lib/libx.so"} {
		file, err := fsys.Open(p)
		if err != nil {
			t.Errorf("Open %s: %v", p, err)
			continue
		}
		if file.Size() != 3 {
			t.Errorf("Open %s: size %d", p, file.Size())
		}
	}
	if e, err := fsys.Stat("/lib"); err != nil || e.Mode&fs.ModeSymlink == 0 || e.LinkTarget != "usr/lib" {
		t.Errorf("Stat /lib = %+v, %v; want the symlink itself", e, err)
	}
	if ents, err := fsys.ReadDir("/lib"); err != nil || len(ents) != 1 || ents[0].Path != "/usr/lib/libx.so" {
		t.Errorf("ReadDir /lib = %+v, %v", ents, err)
	}
	for p, want := range map[string]error{
		"/nope":                fs.ErrNotExist,
		"/usr/lib/libx.so/sub": ErrNotDir,
		"/usr":                 ErrIsDir,
		"/loop":                nil, // too many links: any error
	} {
		_, err := fsys.Open(p)
		if err == nil || want != nil && !errors.Is(err, want) {
			t.Errorf("Open %s: %v, want %v", p, err, want)
		}
	}
	if _, err := fsys.ReadDir("/usr/lib/libx.so"); !errors.Is(err, ErrNotDir) {
		t.Errorf("ReadDir of a file: %v", err)
	}
}

// TestExtUncleanWarning marks the journal as needing recovery, as an image
// of a mounted disk has it: the reader must say so.
func TestExtUncleanWarning(t *testing.T) {
	need(t, "mke2fs", "debugfs")
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), []byte("x"), 0o644, time.Unix(1e9, 0))
	img := mkfsExt(t, "ext4", src, 8)
	f, size := openFile(t, img)
	fsys, err := OpenFS(f, Partition{Size: size})
	if err != nil || fsys.Warning() != "" {
		t.Fatalf("clean: %v, warning %q", err, fsys.Warning())
	}
	sh(t, nil, "debugfs", "-w", "-R", "feature needs_recovery", img)
	fsys, err = OpenFS(f, Partition{Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fsys.Warning(), "journal is not replayed") {
		t.Errorf("warning %q", fsys.Warning())
	}
}

func mustSymlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}
