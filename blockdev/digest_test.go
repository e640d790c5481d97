package blockdev

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/imagobackup/imago/snapshot"
)

// TestImageDigestPieces feeds images of data and zero runs to ImageDigest
// in random pieces, zero pieces as holes or as data, and compares the
// digest, also of every prefix it is asked for on the way, with the plain
// computation of the format.
func TestImageDigestPieces(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 5))
		var img []byte
		for len(img) < 5*DigestLeaf && rng.IntN(12) != 0 {
			n := rng.IntN(3 * DigestLeaf / 2)
			if rng.IntN(4) == 0 {
				n = DigestLeaf * (1 + rng.IntN(3))
			}
			if rng.IntN(2) == 0 {
				img = append(img, make([]byte, n)...)
			} else {
				img = append(img, randomBytes(rng.Uint64(), n)...)
			}
		}
		d := NewImageDigest()
		for off := 0; off < len(img); {
			n := min(len(img)-off, 1+rng.IntN(DigestLeaf*3/2))
			if rng.IntN(3) == 0 {
				n = min(len(img)-off, DigestLeaf)
			}
			// Zeros as a hole half the time, else as data.
			if p := img[off : off+n]; rng.IntN(2) == 0 && bytes.Equal(p, make([]byte, n)) {
				d.Zeros(int64(n))
			} else {
				d.Write(p)
			}
			off += n
			if rng.IntN(4) == 0 {
				if got, want := d.Hex(), imageDigestHex(img[:off]); got != want {
					t.Fatalf("seed %d: digest of the first %d bytes %s, want %s", seed, off, got, want)
				}
			}
		}
		if got, want := d.Hex(), imageDigestHex(img); got != want {
			t.Fatalf("seed %d: digest of %d bytes %s, want %s", seed, len(img), got, want)
		}
	}
}

// TestImageDigestVectors pins the definition: a change to it makes every
// recorded digest a mismatch, so it needs a new field, not a new value.
func TestImageDigestVectors(t *testing.T) {
	hole := NewImageDigest()
	hole.Zeros(DigestLeaf + 1)
	abc := NewImageDigest()
	abc.Write([]byte("abc"))
	for _, c := range []struct {
		name string
		got  string
		want string
	}{
		{"empty", NewImageDigest().Hex(), "b342373ed0fd4435aeabd86c7af38418f14927c6ac4fdf9b2a11938c10825112"},
		{"1 MiB + 1 of zeros", hole.Hex(), "1481897c7c9c92ece395ee0500b852e5598ef2e2ba33d923b7d1976183151bc2"},
		{"abc", abc.Hex(), "7e4cdc16fd8a5127aea1075b1354c075b728c335ad6e486259167a956a77aee7"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %s, want %s", c.name, c.got, c.want)
		}
	}
	if imageDigestHex(nil) == blake3Hex(nil) {
		t.Error("the digest of an empty image is the plain BLAKE3 of nothing")
	}
}

// TestDigestSource computes the digest of a sparse file, of a dense one and
// of a stream: each is the digest of its bytes, and the one a backup of it
// records.
func TestDigestSource(t *testing.T) {
	dir := t.TempDir()
	sparse, _ := sparseImage(t, dir)
	dense := filepath.Join(dir, "dense.img")
	writeAt(t, dense, 0, append(randomBytes(3, 3*miB+77), make([]byte, 2*miB)...))
	for _, path := range []string{sparse, dense} {
		want := imageDigestHex(readFile(t, path))
		src, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DigestSource(context.Background(), src)
		src.Close()
		if err != nil || got != want {
			t.Fatalf("%s: digest %s, %v; want %s", filepath.Base(path), got, err, want)
		}
		stream, err := DigestSource(context.Background(), OpenReader(bytes.NewReader(readFile(t, path)), "-"))
		if err != nil || stream != want {
			t.Fatalf("%s as a stream: digest %s, %v; want %s", filepath.Base(path), stream, err, want)
		}
	}
	m := snapshot.NewMemStore()
	res := backupPath(t, sparse, m, BackupOptions{Params: imageParams, SegmentSize: 2 * miB})
	if want := imageDigestHex(readFile(t, sparse)); res.Digest != want {
		t.Fatalf("backup records %s, want %s", res.Digest, want)
	}
}
