package blockdev

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// testPol is a fixed irreducible polynomial of degree 53, so that cuts are
// the same on every run.
const testPol = 0x3DA3358B4DC173

// testParams cut about every 12 KiB, and testSegment holds about 20 chunks,
// so that images of a few MiB have many segments, chunks and edges.
var testParams = chunk.Params{Polynomial: testPol, Min: 4 * kiB, Max: 32 * kiB, AverageBits: 13}

const testSegment = 256 * kiB

// imageParams are DefaultParams with the test polynomial.
var imageParams = func() chunk.Params { p := DefaultParams; p.Polynomial = testPol; return p }()

// storeHasher hashes chunks as its MemStore does.
type storeHasher struct{ *snapshot.MemStore }

func (h storeHasher) HashChunk(b []byte) chunk.ID { return h.Sum(b) }

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'b', 'd'})
	_, _ = r.Read(b)
	return b
}

// writeAt writes data into the file at path at off, creating it.
func writeAt(t testing.TB, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// truncate sets the length of the file at path, creating it.
func truncate(t testing.TB, path string, size int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// copyFile copies src to a new file in dir, keeping its holes.
func copyFile(t testing.TB, src, dir string) string {
	t.Helper()
	dst := filepath.Join(dir, "copy-"+filepath.Base(src))
	s, err := Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	truncate(t, dst, s.Size())
	err = s.Ranges(context.Background(), func(r Range) error {
		if r.Hole {
			return nil
		}
		b := make([]byte, r.Length)
		if err := s.readAt(context.Background(), b, r.Offset); err != nil {
			return err
		}
		writeAt(t, dst, r.Offset, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// backupPath backs up the file at path.
func backupPath(t testing.TB, path string, m *snapshot.MemStore, opts BackupOptions) *BackupResult {
	t.Helper()
	src, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	res, err := Backup(context.Background(), src, m, storeHasher{m}, opts)
	if err != nil {
		t.Fatalf("backup %s: %v", path, err)
	}
	return res
}

// extentAt is an extent of a content list and its offset.
type extentAt struct {
	start uint64
	snapshot.Extent
}

// listExtents returns all extents of c.
func listExtents(t testing.TB, m *snapshot.MemStore, c snapshot.Content) []extentAt {
	t.Helper()
	var out []extentAt
	err := snapshot.NewContentReader(m, c).Extents(context.Background(), 0, func(start uint64, e snapshot.Extent) error {
		out = append(out, extentAt{start, e})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dump returns the image bytes of c.
func dump(t testing.TB, m *snapshot.MemStore, c snapshot.Content) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := snapshot.Dump(context.Background(), m, c, &buf, 4); err != nil {
		t.Fatalf("dump: %v", err)
	}
	return buf.Bytes()
}

// readFile returns the bytes of the file at path.
func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// blake3Hex returns the lowercase hex BLAKE3-256 of b.
func blake3Hex(b []byte) string {
	s := blake3.Sum256(b)
	return hex.EncodeToString(s[:])
}

// imageDigestHex is the image digest of img (docs/FORMAT.md §7) computed
// the plain way, as the format states it: every leaf hashed, zero or not.
func imageDigestHex(img []byte) string {
	root := blake3.NewDeriveKey(digestContext)
	for off := 0; off < len(img); off += DigestLeaf {
		sum := blake3.Sum256(img[off:min(off+DigestLeaf, len(img))])
		_, _ = root.Write(sum[:])
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(img)))
	_, _ = root.Write(n[:])
	return hex.EncodeToString(root.Sum(nil))
}

// checkReadsBack checks that the image res reads back as want from m and
// that its digest is want's.
func checkReadsBack(t testing.TB, m *snapshot.MemStore, res *BackupResult, want []byte) {
	t.Helper()
	if got := dump(t, m, res.Content); !bytes.Equal(got, want) {
		t.Fatalf("guided image reads back differently (%d bytes, want %d)", len(got), len(want))
	}
	if res.Digest != imageDigestHex(want) {
		t.Errorf("digest %s, want %s", res.Digest, imageDigestHex(want))
	}
}
