package diskfs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fatTree fills dir with files a FAT reader gets wrong easily: sizes that
// are not multiples of the sector or cluster size (a reader that pads to
// the sector returns extra bytes), long and Unicode names, 8.3 names in
// lower and mixed case, a directory spanning several clusters, deep paths.
// Times are even seconds (FAT's resolution).
func fatTree(t testing.TB, dir string) {
	t.Helper()
	base := time.Date(2022, 7, 8, 9, 10, 12, 0, time.Local)
	for i, n := range []int{0, 1, 511, 512, 513, 2047, 4097, 100007, 1<<20 + 3} {
		writeFile(t, filepath.Join(dir, "sizes", fmt.Sprintf("f%07d.bin", n)), randBytes(n, uint64(i)), 0o644, base.Add(time.Duration(i)*time.Hour))
	}
	names := []string{"A long file name with spaces.txt", "grüße ☃.txt", "readme.txt", "UPPER.TXT", "MiXeD.Txt", "x"}
	for i, n := range names {
		writeFile(t, filepath.Join(dir, "names", n), []byte(n), 0o644, base.Add(time.Duration(i)*2*time.Second))
	}
	for i := 0; i < 300; i++ {
		writeFile(t, filepath.Join(dir, "big", fmt.Sprintf("a rather long name number %03d.txt", i)), []byte{byte(i)}, 0o644, base)
	}
	writeFile(t, filepath.Join(dir, "a", "b", "c", "deep.txt"), []byte("deep\n"), 0o644, base)
}

// mkfsFAT makes a FAT image of the given bits (12, 16, 32) and copies src
// into it with mtools, keeping mtimes.
func mkfsFAT(t testing.TB, bits, sizeMiB int, src string) string {
	t.Helper()
	need(t, "mkfs.vfat", "mcopy", "mattrib")
	img := filepath.Join(t.TempDir(), fmt.Sprintf("fat%d.img", bits))
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(int64(sizeMiB) << 20)
	f.Close()
	args := []string{"-F", fmt.Sprint(bits), "-n", "TESTVOL"}
	if bits == 32 {
		args = append(args, "-s", "1") // 512-byte clusters: many clusters in a small image
	}
	sh(t, nil, "mkfs.vfat", append(args, img)...)
	entries, _ := os.ReadDir(src)
	for _, e := range entries {
		sh(t, []string{"MTOOLS_SKIP_CHECK=1"}, "mcopy", "-s", "-m", "-i", img, filepath.Join(src, e.Name()), "::")
	}
	return img
}

func TestFATMatchesSource(t *testing.T) {
	src := t.TempDir()
	fatTree(t, src)
	for _, c := range []struct{ bits, mib int }{{12, 3}, {16, 24}, {32, 40}} {
		t.Run(fmt.Sprintf("fat%d", c.bits), func(t *testing.T) {
			img := mkfsFAT(t, c.bits, c.mib, src)
			sh(t, []string{"MTOOLS_SKIP_CHECK=1"}, "mattrib", "-i", img, "+r", "::/names/x")
			f, size := openFile(t, img)
			fsys, err := OpenFS(f, Partition{Size: size})
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("fat%d", c.bits); fsys.Type() != want || fsys.Label() != "TESTVOL" {
				t.Errorf("Type %q Label %q, want %s TESTVOL", fsys.Type(), fsys.Label(), want)
			}
			if n := compareTree(t, fsys, src, compareOpts{fat: true, mtimeUnit: 2 * time.Second, skipDirMTime: true}); n < 300 {
				t.Errorf("compared %d files", n)
			}
			for p, want := range map[string]string{"/names/x": "-r--r--r--", "/names/readme.txt": "-rw-r--r--", "/a/b": "drwxr-xr-x"} {
				if e, err := fsys.Stat(p); err != nil || e.Mode.String() != want {
					t.Errorf("Stat %s: mode %v (%v), want %s", p, e.Mode, err, want)
				}
			}
			// Names are case-insensitive on FAT.
			if _, err := fsys.Open("/NAMES/README.TXT"); err != nil {
				t.Errorf("case-insensitive lookup: %v", err)
			}
		})
	}
}

// TestFATReadsOnlyTheFile reads a file whose size is not a multiple of the
// sector size at every offset around its end: no byte of the padding may
// come back.
func TestFATReadsOnlyTheFile(t *testing.T) {
	src := t.TempDir()
	data := randBytes(1000, 5)
	writeFile(t, filepath.Join(src, "odd.bin"), data, 0o644, time.Unix(1.5e9, 0))
	img := mkfsFAT(t, 32, 40, src)
	f, size := openFile(t, img)
	fsys, err := OpenFS(f, Partition{Size: size})
	if err != nil {
		t.Fatal(err)
	}
	file, err := fsys.Open("/odd.bin")
	if err != nil {
		t.Fatal(err)
	}
	if file.Size() != 1000 {
		t.Fatalf("size %d", file.Size())
	}
	for _, off := range []int64{0, 511, 512, 999, 1000, 1001} {
		buf := make([]byte, 600)
		n, err := file.ReadAt(buf, off)
		want := max(0, min(600, 1000-int(off)))
		if n != want || (n < 600 && err != io.EOF) {
			t.Errorf("ReadAt(600, %d) = %d, %v; want %d, EOF", off, n, err, want)
		}
		if n > 0 && string(buf[:n]) != string(data[off:off+int64(n)]) {
			t.Errorf("ReadAt at %d: wrong bytes", off)
		}
	}
	all, _ := io.ReadAll(io.NewSectionReader(file, 0, 1<<20))
	if len(all) != 1000 || strings.Compare(string(all), string(data)) != 0 {
		t.Errorf("ReadAll: %d bytes", len(all))
	}
}
