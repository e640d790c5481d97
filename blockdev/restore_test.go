package blockdev

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// sparseImage writes a 6 MiB image with 1.5 MiB of data, unallocated holes
// and 512 KiB of allocated zeros, and returns its path and its data bytes.
func sparseImage(t testing.TB, dir string) (string, int64) {
	t.Helper()
	path := filepath.Join(dir, "disk.img")
	truncate(t, path, 6*miB)
	writeAt(t, path, 0, randomBytes(1, 512*kiB))
	writeAt(t, path, 1*miB, make([]byte, 512*kiB)) // zeros, allocated
	writeAt(t, path, 2*miB+4*kiB, randomBytes(2, 512*kiB))
	writeAt(t, path, 6*miB-512*kiB, randomBytes(3, 512*kiB))
	return path, 1536 * kiB
}

func restoreTo(t testing.TB, m *snapshot.MemStore, res *BackupResult, path string, opts RestoreOptions) error {
	t.Helper()
	tgt, err := OpenTarget(path, int64(res.Size), TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	return Restore(context.Background(), m, res.Content, int64(res.Size), tgt, opts)
}

// TestRoundTrip backs up a sparse image, alone and with a parent after
// changes, and restores it: the restored file is byte-identical, its
// digest checks, and its holes stay unallocated.
func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	supportsHoles(t, dir)
	path, dataBytes := sparseImage(t, dir)
	m := snapshot.NewMemStore()
	opts := BackupOptions{Params: imageParams, SegmentSize: 2 * miB}
	first := backupPath(t, path, m, opts)
	wantFirst := sha256.Sum256(readFile(t, path))
	if first.BytesHoles < 4*miB || first.BytesZero < 512*kiB {
		t.Errorf("holes %d, zeros %d: the holes were read or stored", first.BytesHoles, first.BytesZero)
	}

	writeAt(t, path, 100*kiB, randomBytes(4, 1000))
	writeAt(t, path, 3*miB, randomBytes(5, 64*kiB)) // into a hole
	dataBytes += 64 * kiB
	opts.Parent, opts.ParentLoader = &first.Content, m
	second := backupPath(t, path, m, opts)
	if second.BytesReused == 0 {
		t.Error("second backup reused nothing")
	}

	wantSecond := sha256.Sum256(readFile(t, path))
	for _, tc := range []struct {
		name string
		res  *BackupResult
		want [32]byte
	}{{"first", first, wantFirst}, {"with parent", second, wantSecond}} {
		res := tc.res
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "restored.img")
			p := new(RestoreProgress)
			if err := restoreTo(t, m, res, out, RestoreOptions{Workers: 3, Digest: res.Digest, Progress: p}); err != nil {
				t.Fatal(err)
			}
			if got := sha256.Sum256(readFile(t, out)); got != tc.want {
				t.Fatal("restored image differs from the source")
			}
			if got, max := allocated(t, out), dataBytes+256*kiB; got > max {
				t.Errorf("restored file occupies %d bytes, holes were written (data: %d)", got, dataBytes)
			}
			if p.BytesDone.Load() != res.Size || p.BytesSkipped.Load() == 0 {
				t.Errorf("progress: done %d of %d, skipped %d", p.BytesDone.Load(), res.Size, p.BytesSkipped.Load())
			}
		})
	}
}

func TestRestoreDetectsDamage(t *testing.T) {
	dir := t.TempDir()
	path, _ := sparseImage(t, dir)
	m := snapshot.NewMemStore()
	res := backupPath(t, path, m, BackupOptions{Params: imageParams, SegmentSize: 2 * miB})
	out := filepath.Join(dir, "restored.img")

	t.Run("wrong digest", func(t *testing.T) {
		wrong := strings.Repeat("0", 64)
		if err := restoreTo(t, m, res, out, RestoreOptions{Digest: wrong}); !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("got %v, want ErrDigestMismatch", err)
		}
	})
	// Snapshots from before the image digest record a plain BLAKE3 of the
	// whole image, which is checked the same way.
	t.Run("plain digest", func(t *testing.T) {
		img := readFile(t, path)
		if err := restoreTo(t, m, res, out, RestoreOptions{PlainDigest: blake3Hex(img)}); err != nil {
			t.Fatal(err)
		}
		img[len(img)/2] ^= 1
		if err := restoreTo(t, m, res, out, RestoreOptions{PlainDigest: blake3Hex(img)}); !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("plain BLAKE3 of other bytes: got %v, want ErrDigestMismatch", err)
		}
		if err := restoreTo(t, m, res, out, RestoreOptions{Digest: res.Digest, PlainDigest: strings.Repeat("0", 64)}); !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("a right digest and a wrong plain one: got %v, want ErrDigestMismatch", err)
		}
	})
	t.Run("content list of another size", func(t *testing.T) {
		tgt, err := OpenTarget(out, int64(res.Size)+1, TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer tgt.Close()
		if err := Restore(context.Background(), m, res.Content, int64(res.Size)+1, tgt, RestoreOptions{}); err == nil {
			t.Fatal("restore of a content list shorter than the image succeeded")
		}
	})
	t.Run("corrupt chunk", func(t *testing.T) {
		var victim chunk.ID
		for _, e := range listExtents(t, m, res.Content) {
			if !e.Hole() {
				victim = e.ID
			}
		}
		if !m.Corrupt(victim) {
			t.Fatal("no blob to corrupt")
		}
		err := restoreTo(t, m, res, out, RestoreOptions{Digest: res.Digest})
		if err == nil || !strings.Contains(err.Error(), victim.Short()) {
			t.Fatalf("got %v, want an error naming blob %s", err, victim.Short())
		}
	})
}

func TestTargetPath(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ path, name, want string }{
		{dir, "/dev/sda", filepath.Join(dir, "sda")},
		{dir, "vm/disk.img", filepath.Join(dir, "disk.img")},
		{dir, "/", filepath.Join(dir, "image")},
		{dir + "/out.img", "/dev/sda", dir + "/out.img"},
	} {
		if got := TargetPath(tc.path, tc.name); got != tc.want {
			t.Errorf("TargetPath(%q, %q) = %q, want %q", tc.path, tc.name, got, tc.want)
		}
	}
	if _, err := OpenTarget(dir, 10, TargetOptions{}); err == nil {
		t.Error("OpenTarget on a directory succeeded")
	}
	if _, err := OpenTarget("/dev/null", 10, TargetOptions{}); err == nil {
		t.Error("OpenTarget on a character device succeeded")
	}
}

// TestRestoreOverExistingFile checks that an existing, longer target file
// is replaced: no old bytes survive in the image's holes or past its end.
func TestRestoreOverExistingFile(t *testing.T) {
	dir := t.TempDir()
	path, _ := sparseImage(t, dir)
	m := snapshot.NewMemStore()
	res := backupPath(t, path, m, BackupOptions{Params: imageParams, SegmentSize: 2 * miB})
	out := filepath.Join(dir, "old.img")
	writeAt(t, out, 0, bytes.Repeat([]byte{0xff}, 7*miB))
	if err := restoreTo(t, m, res, out, RestoreOptions{Digest: res.Digest}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, out), readFile(t, path)) {
		t.Fatal("restored file differs from the image")
	}
}

func TestMountedIn(t *testing.T) {
	mi := []byte(`22 27 0:21 / /proc rw,relatime - proc proc rw
42 27 7:1 / /mnt/with\040space rw,relatime - ext4 /dev/loop1 rw
43 27 0:55 / /btrfs rw,relatime - btrfs /dev/sdb2 rw,space_cache
`)
	resolve := func(p string) (devNum, bool) {
		m := map[string]devNum{"/dev/loop1": "7:1", "/dev/sdb2": "8:18"}
		d, ok := m[p]
		return d, ok
	}
	for _, tc := range []struct {
		devs map[devNum]string
		want string
	}{
		{map[devNum]string{"7:1": "/dev/loop1"}, "/mnt/with space"},
		{map[devNum]string{"8:16": "/dev/sdb", "8:18": "/dev/sdb2"}, "/btrfs"},
		{map[devNum]string{"8:0": "/dev/sda", "8:1": "/dev/sda1"}, ""},
	} {
		_, mp, ok := mountedIn(mi, tc.devs, resolve)
		if ok != (tc.want != "") || mp != tc.want {
			t.Errorf("devices %v: mounted on %q (%v), want %q", tc.devs, mp, ok, tc.want)
		}
	}
	swaps := []byte("Filename\tType\tSize\tUsed\tPriority\n/dev/sdb2 partition 1000 0 -2\n")
	if name, ok := swapIn(swaps, map[devNum]string{"8:18": "/dev/sdb2"}, resolve); !ok || name != "/dev/sdb2" {
		t.Errorf("swap not found: %q %v", name, ok)
	}
	if _, ok := swapIn(swaps, map[devNum]string{"7:1": "/dev/loop1"}, resolve); ok {
		t.Error("a device not used as swap was reported as swap")
	}
}

// reverseBatch is a BatchLoader over a MemStore that loads each batch in
// reverse order, so Restore may not rely on the order chunks arrive in; it
// counts its calls.
type reverseBatch struct {
	*snapshot.MemStore
	calls, chunks atomic.Int64 // windows load at once
}

func (b *reverseBatch) LoadChunks(ctx context.Context, hs []chunk.Handle, fn func(i int, plain []byte) error) error {
	b.calls.Add(1)
	b.chunks.Add(int64(len(hs)))
	for i := len(hs) - 1; i >= 0; i-- {
		plain, err := b.LoadChunk(ctx, hs[i], nil)
		if err != nil {
			return err
		}
		if err := fn(i, plain); err != nil {
			return err
		}
	}
	return nil
}

// TestRestoreWindows restores an image spanning many restore windows, with
// the same chunk at many offsets and a hole longer than one window's zero
// writes, onto a target that does not skip holes (as a device without
// --sparse): every byte is the image's, the hole is zeros over what the
// target held, and chunks are loaded in batches.
func TestRestoreWindows(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.img")
	size := int64(zeroTask + 40*miB)
	truncate(t, path, size)
	writeAt(t, path, 0, randomBytes(7, 12*miB))
	same := randomBytes(8, 64*kiB)
	for off := int64(12 * miB); off < 20*miB; off += 64 * kiB {
		writeAt(t, path, off, same) // one chunk's bytes, many times
	}
	writeAt(t, path, size-8*miB, randomBytes(9, 8*miB)) // after a hole of zeroTask+12 MiB
	m := snapshot.NewMemStore()
	res := backupPath(t, path, m, BackupOptions{Params: imageParams})

	out := filepath.Join(dir, "restored.img")
	writeAt(t, out, 0, bytes.Repeat([]byte{0xee}, int(size)))
	tgt, err := OpenTarget(out, size, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tgt.skipHoles = false
	l := &reverseBatch{MemStore: m}
	p := new(RestoreProgress)
	err = Restore(context.Background(), l, res.Content, size, tgt, RestoreOptions{Digest: res.Digest, Progress: p})
	tgt.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, out), readFile(t, path)) {
		t.Fatal("restored image differs from the source")
	}
	if p.BytesDone.Load() != uint64(size) || p.BytesWritten.Load() != uint64(size) || p.BytesSkipped.Load() != 0 {
		t.Errorf("progress: done %d, written %d, skipped %d of %d", p.BytesDone.Load(), p.BytesWritten.Load(), p.BytesSkipped.Load(), size)
	}
	// 28 MiB of chunks in windows of windowData: a few batches, not one
	// load per chunk.
	calls, chunks := l.calls.Load(), l.chunks.Load()
	if maxCalls := int64(28*miB/windowData) + 3; calls > maxCalls || chunks < 2*calls {
		t.Errorf("%d batches for %d chunks, want at most %d", calls, chunks, maxCalls)
	}
}

// TestRestoreDirectWrites restores images of fixed and content-defined
// chunks, of a size that is no multiple of 4 KiB and with data after a
// hole at an odd offset, onto a file: the aligned runs go around the page
// cache with O_DIRECT, the rest through it, and the result is the image.
// When the kernel refuses direct writes (forced here), all of it goes
// through the page cache, just as correct.
func TestRestoreDirectWrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.img")
	size := int64(9*miB + 1234)
	truncate(t, path, size)
	writeAt(t, path, 0, randomBytes(11, 5*miB))
	writeAt(t, path, 6*miB+777, randomBytes(12, int(size-6*miB-777)))
	want := readFile(t, path)
	fixed := chunk.Params{Polynomial: testPol, Min: 16 * kiB, Max: 16 * kiB, AverageBits: 14}
	for _, tc := range []struct {
		name   string
		params chunk.Params
		einval bool
	}{{"fixed", fixed, false}, {"content-defined", imageParams, false}, {"refused", fixed, true}} {
		t.Run(tc.name, func(t *testing.T) {
			m := snapshot.NewMemStore()
			res := backupPath(t, path, m, BackupOptions{Params: tc.params})
			out := filepath.Join(t.TempDir(), "restored.img")
			tgt, err := OpenTarget(out, size, TargetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer tgt.Close()
			if tgt.direct == nil {
				t.Fatal("O_DIRECT refused on the test's file system (ext4 and tmpfs accept it)")
			}
			tgt.testDirectEINVAL = tc.einval
			if err := Restore(context.Background(), m, res.Content, size, tgt, RestoreOptions{Digest: res.Digest}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readFile(t, out), want) {
				t.Fatal("restored image differs from the source")
			}
			direct := tgt.directBytes.Load()
			switch {
			case tc.einval && direct != 0:
				t.Errorf("%d bytes written directly after the kernel refused", direct)
			case tc.name == "fixed" && direct < 8*miB:
				t.Errorf("%d of ~9 MiB of aligned chunks written directly", direct)
			}
		})
	}
}
