package blockdev

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/imagobackup/imago/snapshot"
)

// openDirectSource opens path, which must be on a file system that
// accepts O_DIRECT (ext4 and, since Linux 6.6, tmpfs do).
func openDirectSource(t *testing.T, path string) *Source {
	t.Helper()
	src, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	if src.direct == nil {
		t.Fatalf("no O_DIRECT for %s: the direct reads would go untested", path)
	}
	// Write the file out and evict it, as a cold backup finds it.
	if err := src.f.Sync(); err != nil {
		t.Fatal(err)
	}
	dropCache(src.f, 0, 0)
	if mostlyCached(src.f, 0, src.size) {
		t.Fatalf("%s stays in the page cache after FADV_DONTNEED (tmpfs?): the direct reads would go untested", path)
	}
	return src
}

// TestReadAtDirect reads unaligned pieces, into buffers at every kind of
// address, and checks them against the file, with and without the direct
// reads (the file's size is not a multiple of directAlign either).
func TestReadAtDirect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "odd.img")
	img := randomBytes(7, 3*miB+777)
	writeAt(t, path, 0, img)
	for _, refuse := range []bool{false, true} {
		src := openDirectSource(t, path)
		src.testDirectEINVAL = refuse
		buf := alignedBuf(2*miB + 2*directAlign)
		for _, c := range []struct{ off, n int64 }{
			{0, 1 * miB}, {0, 100}, {4096, 8192}, {100, 1 * miB}, {4095, 4097},
			{1*miB + 10, 1*miB - 10}, {3*miB - 4096, 4096 + 777}, {3 * miB, 777},
			{3*miB + 100, 677}, {5, 3*miB + 772},
		} {
			// The data at buf[at:], at off's distance from an aligned
			// offset as Backup's reader places it, and one byte further,
			// where it cannot be read directly.
			for _, at := range []int64{c.off % directAlign, c.off%directAlign + 1} {
				if at+c.n > int64(len(buf)) {
					continue
				}
				p := buf[at : at+c.n]
				clear(p)
				// Cold again: the buffered reads of the cases before
				// leave the kernel's readahead behind them in the cache.
				dropCache(src.f, 0, 0)
				if err := src.readAt(context.Background(), p, c.off); err != nil {
					t.Fatalf("refuse %v: read %d at %d: %v", refuse, c.n, c.off, err)
				}
				if !bytes.Equal(p, img[c.off:c.off+c.n]) {
					t.Fatalf("refuse %v: read %d at %d (buffer at %d): wrong bytes", refuse, c.n, c.off, at)
				}
			}
		}
		if refuse {
			if src.directBytes.Load() != 0 || !src.noDirect.Load() {
				t.Errorf("refused direct reads: %d bytes read directly, fallback %v", src.directBytes.Load(), src.noDirect.Load())
			}
		} else if src.directBytes.Load() < 2*miB || src.noDirect.Load() {
			t.Errorf("only %d bytes read directly, fallback %v", src.directBytes.Load(), src.noDirect.Load())
		}
	}
}

// TestDirectBackup backs up images with the direct reads, and with the
// direct reads refused (the fallback): a dense one whose size is not a
// multiple of directAlign and a sparse one with data at unaligned offsets.
// Each gives the result of reading the same bytes as a stream (which never
// reads directly) and restores byte-identically.
func TestDirectBackup(t *testing.T) {
	dir := t.TempDir()
	dense := filepath.Join(dir, "dense.img")
	writeAt(t, dense, 0, append(randomBytes(1, 5*miB+1000), append(make([]byte, 300*kiB), randomBytes(2, 33*kiB+17)...)...))
	sparse := filepath.Join(dir, "sparse.img")
	truncate(t, sparse, 9*miB+123)
	writeAt(t, sparse, 1000, randomBytes(3, 700*kiB+5))
	writeAt(t, sparse, 2*miB+4*kiB+512, randomBytes(4, 1*miB))
	writeAt(t, sparse, 5*miB-100, randomBytes(5, 200))
	writeAt(t, sparse, 9*miB-1000, randomBytes(6, 1000))

	for _, path := range []string{dense, sparse} {
		img := readFile(t, path)
		for _, refuse := range []bool{false, true} {
			name := filepath.Base(path)
			if refuse {
				name += "/fallback"
			}
			t.Run(name, func(t *testing.T) {
				m := snapshot.NewMemStore()
				opts := BackupOptions{Params: imageParams, SegmentSize: 2 * miB}
				src := openDirectSource(t, path)
				src.testDirectEINVAL = refuse
				res, err := Backup(context.Background(), src, m, storeHasher{m}, opts)
				if err != nil {
					t.Fatal(err)
				}
				switch d := src.directBytes.Load(); {
				case refuse && (d != 0 || !src.noDirect.Load()):
					t.Errorf("refused direct reads: %d bytes read directly, fallback %v", d, src.noDirect.Load())
				case !refuse && (d < 1*miB || src.noDirect.Load()):
					t.Errorf("only %d bytes read directly, fallback %v", d, src.noDirect.Load())
				}
				stream, err := Backup(context.Background(), OpenReader(bytes.NewReader(img), "-"), m, storeHasher{m}, opts)
				if err != nil {
					t.Fatal(err)
				}
				if res.Digest != stream.Digest || res.Size != stream.Size || res.Digest != imageDigestHex(img) {
					t.Fatalf("digest %s size %d, stream %s %d", res.Digest, res.Size, stream.Digest, stream.Size)
				}
				if !bytes.Equal(dump(t, m, res.Content), img) {
					t.Fatal("content list does not give the image")
				}
				out := filepath.Join(t.TempDir(), "restored.img")
				if err := restoreTo(t, m, res, out, RestoreOptions{Workers: 2, Digest: res.Digest}); err != nil {
					t.Fatal(err)
				}
				if sha256.Sum256(readFile(t, out)) != sha256.Sum256(img) {
					t.Fatal("restored image differs from the source")
				}
			})
		}
	}
}

// TestWarmImageReadFromCache backs up an image the page cache holds (a VM
// disk just written): it is copied from the cache, not read from the disk
// again, and stays cached, as the backup did not bring it in. Cold, the
// same image is read directly and is not cached afterwards.
func TestWarmImageReadFromCache(t *testing.T) {
	if !cachestatWorks(t) {
		t.Skip("no cachestat(2) on this kernel (Linux < 6.5): every image is read as if cold")
	}
	path := filepath.Join(t.TempDir(), "warm.img")
	img := append(randomBytes(8, 3*miB+5000), make([]byte, 1*miB)...)
	writeAt(t, path, 0, img)
	m := snapshot.NewMemStore()
	opts := BackupOptions{Params: imageParams, SegmentSize: 2 * miB}
	for _, warm := range []bool{true, false} {
		src, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if src.direct == nil {
			t.Fatalf("no O_DIRECT for %s", path)
		}
		if err := src.f.Sync(); err != nil {
			t.Fatal(err)
		}
		if warm {
			readFile(t, path) // it is cached now, whatever happened to it before
		} else {
			dropCache(src.f, 0, 0)
		}
		res, err := Backup(context.Background(), src, m, storeHasher{m}, opts)
		if err != nil {
			t.Fatal(err)
		}
		if res.Digest != imageDigestHex(img) || !bytes.Equal(dump(t, m, res.Content), img) {
			t.Fatalf("warm %v: the snapshot does not give the image", warm)
		}
		direct, cached := src.directBytes.Load(), src.cachedBytes.Load()
		if warm && (direct != 0 || cached != int64(len(img))) {
			t.Errorf("warm image: %d bytes read directly, %d from the cache; want 0 and %d", direct, cached, len(img))
		}
		if !warm && (direct < 3*miB || cached != 0) {
			t.Errorf("cold image: %d bytes read directly, %d from the cache; want all but the unaligned tail directly", direct, cached)
		}
		if got := mostlyCached(src.f, 0, src.size); got != warm {
			t.Errorf("warm %v: the image is cached after the backup: %v", warm, got)
		}
		src.Close()
	}
}

// cachestatWorks reports whether this kernel has cachestat(2), which
// mostlyCached asks.
func cachestatWorks(t *testing.T) bool {
	f, err := os.Open(os.Args[0]) // the test binary: cached, it is running
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mostlyCached(f, 0, 4096)
	return !noCachestat.Load()
}
