package diskfs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

const mib = 1 << 20

func TestPartitionsGPT(t *testing.T) {
	need(t, "sgdisk")
	img := sparseFile(t, 64*mib)
	sh(t, nil, "sgdisk", "-n", "1:2048:+8M", "-t", "1:8300", "-c", "1:root",
		"-n", "2:0:+4M", "-t", "2:ef00", "-c", "2:EFI stuff",
		"-n", "4:0:+4M", "-t", "4:0700", img)
	want := []Partition{
		{Number: 1, Start: 1 * mib, Size: 8 * mib, Table: "gpt", Type: "Linux filesystem", Name: "root"},
		{Number: 2, Start: 9 * mib, Size: 4 * mib, Table: "gpt", Type: "EFI System", Name: "EFI stuff"},
		{Number: 4, Start: 13 * mib, Size: 4 * mib, Table: "gpt", Type: "Microsoft basic data"},
	}
	check := func(what string) {
		t.Helper()
		f, size := openFile(t, img)
		got, err := Partitions(f, size)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: Partitions = %+v, %v\nwant %+v", what, got, err, want)
		}
	}
	check("intact")
	// A damaged primary header or entry array: the backup is used.
	patch(t, img, 512+40, []byte{0xFF})
	check("primary header damaged")
	patch(t, img, 1024+3, []byte{0x42})
	check("primary header and entries damaged")
	// Both copies damaged: an error, not a wrong table or a whole-disk guess.
	patch(t, img, 64*mib-512+40, []byte{0xFF})
	f, size := openFile(t, img)
	if _, err := Partitions(f, size); !errors.Is(err, ErrCorruptTable) || !strings.Contains(err.Error(), "CRC") {
		t.Errorf("both headers damaged: %v, want ErrCorruptTable naming the CRC", err)
	}
}

func TestPartitionsMBR(t *testing.T) {
	need(t, "sfdisk")
	img := sparseFile(t, 64*mib)
	script := "label: dos\n" +
		"start=2048, size=16384, type=83\n" +
		"start=18432, size=40960, type=5\n" +
		"start=20480, size=8192, type=c\n" +
		"start=30720, size=8192, type=83\n"
	cmd := "sfdisk -q " + img + " <<'EOF'\n" + script + "EOF\n"
	sh(t, nil, "sh", "-c", cmd)
	f, size := openFile(t, img)
	got, err := Partitions(f, size)
	want := []Partition{
		{Number: 1, Start: 2048 * 512, Size: 8 * mib, Table: "mbr", Type: "0x83 Linux"},
		{Number: 5, Start: 20480 * 512, Size: 4 * mib, Table: "mbr", Type: "0x0c W95 FAT32 (LBA)"},
		{Number: 6, Start: 30720 * 512, Size: 4 * mib, Table: "mbr", Type: "0x83 Linux"},
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Partitions = %+v, %v\nwant %+v", got, err, want)
	}
	// An entry reaching past the end of the image.
	patch(t, img, 446+12, []byte{0, 0, 0, 1}) // partition 1: 2^24 sectors (8 GiB)
	f, size = openFile(t, img)
	if _, err := Partitions(f, size); !errors.Is(err, ErrCorruptTable) || !strings.Contains(err.Error(), "outside the image") {
		t.Errorf("partition past the end: %v", err)
	}
}

// TestPartitionsNone checks that a bare file system is one partition 0,
// also a FAT "superfloppy" whose boot sector ends in 55 AA like an MBR.
func TestPartitionsNone(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), []byte("x"), 0o644, time.Unix(1e9, 0))
	for _, img := range []string{mkfsExt(t, "ext4", src, 8), mkfsFAT(t, 16, 16, src)} {
		f, size := openFile(t, img)
		got, err := Partitions(f, size)
		if err != nil || len(got) != 1 || got[0] != (Partition{Size: size}) {
			t.Errorf("%s: Partitions = %+v, %v", filepath.Base(img), got, err)
		}
	}
}

// gptDisk makes a sparse GPT disk of size bytes with an ext4 partition 1
// (at 1 MiB, holding src) and a FAT32 partition 2 (holding fatSrc, when
// given), and returns its path.
func gptDisk(t testing.TB, size int64, src string, extMiB int, fatSrc string) string {
	t.Helper()
	need(t, "sgdisk")
	img := sparseFile(t, size)
	args := []string{"-n", "1:2048:+" + strconv.Itoa(extMiB) + "M", "-t", "1:8300", "-c", "1:root"}
	if fatSrc != "" {
		args = append(args, "-n", "2:0:+40M", "-t", "2:ef00")
	}
	sh(t, nil, "sgdisk", append(args, img)...)
	placeAt(t, img, mkfsExt(t, "ext4", src, extMiB), 1*mib)
	if fatSrc != "" {
		placeAt(t, img, mkfsFAT(t, 32, 40, fatSrc), int64(1+extMiB)*mib)
	}
	return img
}

func TestImageSelect(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "etc", "hostname"), []byte("box\n"), 0o644, time.Unix(1e9, 0))
	fatSrc := t.TempDir()
	writeFile(t, filepath.Join(fatSrc, "EFI", "boot.txt"), []byte("efi\n"), 0o644, time.Unix(1e9, 0))
	img := gptDisk(t, 128*mib, src, 32, fatSrc)
	f, size := openFile(t, img)
	im, err := OpenImage(f, size)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := im.Open(-1); err == nil || !strings.Contains(err.Error(), "1 (ext4), 2 (fat32)") {
		t.Errorf("no partition named with two file systems: %v", err)
	}
	if _, _, err := im.Open(3); !errors.Is(err, ErrNoPartition) {
		t.Errorf("partition 3: %v", err)
	}
	for n, p := range map[int]string{1: "/etc/hostname", 2: "/EFI/boot.txt"} {
		fsys, part, err := im.Open(n)
		if err != nil || part.Number != n {
			t.Fatalf("Open(%d): %v", n, err)
		}
		if _, err := fsys.Stat(p); err != nil {
			t.Errorf("partition %d: %v", n, err)
		}
	}
	for in, want := range map[string]struct {
		n int
		p string
	}{"1:/etc": {1, "/etc"}, "/etc/": {-1, "/etc"}, "12:": {12, "/"}, "": {-1, "/"}, "a:b": {-1, "/a:b"}, "/x:1": {-1, "/x:1"}} {
		n, p := ParsePath(in)
		if n != want.n || p != want.p {
			t.Errorf("ParsePath(%q) = %d, %q; want %d, %q", in, n, p, want.n, want.p)
		}
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	random := filepath.Join(dir, "random")
	os.WriteFile(random, randBytes(1*mib, 3), 0o644)
	zeros := sparseFile(t, 1*mib)
	// An exFAT boot sector: recognised, not read. (NTFS is read now.)
	exfat := sparseFile(t, 1*mib)
	if f, err := os.OpenFile(exfat, os.O_WRONLY, 0); err == nil {
		f.WriteAt([]byte("\xEB\x76\x90EXFAT   "), 0)
		f.WriteAt([]byte{0x55, 0xAA}, 510)
		f.Close()
	}
	for _, c := range []struct {
		img  string
		want error
		text string
	}{
		{random, ErrUnknownFilesystem, "first bytes"},
		{zeros, ErrUnknownFilesystem, "zeros"},
		{exfat, ErrUnsupportedFilesystem, "exfat"},
	} {
		f, size := openFile(t, c.img)
		im, err := OpenImage(f, size)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = im.Open(-1)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: %v, want %v mentioning %q", filepath.Base(c.img), err, c.want, c.text)
		}
	}
}

// TestReadsOnlyWhatTheFileNeeds reads a 1 MiB file from an ext4 partition
// of a 4 GiB image beside 16 MiB of other files: the bytes read from the
// image must be the file plus a little metadata.
func TestReadsOnlyWhatTheFileNeeds(t *testing.T) {
	src := t.TempDir()
	want := randBytes(1*mib, 1)
	writeFile(t, filepath.Join(src, "home", "u", "target.bin"), want, 0o600, time.Unix(1e9, 0))
	for i := 0; i < 4; i++ {
		writeFile(t, filepath.Join(src, "filler", strconv.Itoa(i)), randBytes(4*mib, uint64(10+i)), 0o644, time.Unix(1e9, 0))
	}
	img := gptDisk(t, 4<<30, src, 64, "")
	f, size := openFile(t, img)
	cr := &countingReader{r: f}
	im, err := OpenImage(cr, size)
	if err != nil {
		t.Fatal(err)
	}
	fsys, _, err := im.Open(-1)
	if err != nil {
		t.Fatal(err)
	}
	file, err := fsys.Open("/home/u/target.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(io.NewSectionReader(file, 0, file.Size()))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("content differs: %v", err)
	}
	if n := cr.bytes.Load(); n > mib+256<<10 {
		t.Errorf("read %d bytes of the image for a 1 MiB file", n)
	}
}

func patch(t testing.TB, name string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
