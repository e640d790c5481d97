package blockdev

import (
	"bytes"
	"context"
	"fmt"
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

// TestHashDigestBatches feeds Backup's digest stage whole leaves, pieces of
// leaves and holes in random order, with 1 to 4 leaves hashed at once: the
// digest is the image's, and every block is given back.
func TestHashDigestBatches(t *testing.T) {
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 9))
		var img []byte
		var items []item
		for range 30 {
			switch rng.IntN(4) {
			case 0, 1: // a whole leaf, data or zeros
				b := randomBytes(rng.Uint64(), DigestLeaf)
				if rng.IntN(3) == 0 {
					clear(b)
				}
				items = append(items, item{blk: &block{buf: b}, n: DigestLeaf})
				img = append(img, b...)
			case 2: // a piece of data
				b := randomBytes(rng.Uint64(), 1+rng.IntN(DigestLeaf))
				items = append(items, item{blk: &block{buf: b}, n: len(b)})
				img = append(img, b...)
			default: // a hole
				n := int64(1 + rng.IntN(3*DigestLeaf))
				items = append(items, item{zeros: n})
				img = append(img, make([]byte, n)...)
			}
		}
		for parallel := 1; parallel <= 4; parallel++ {
			free := make(chan *block, len(items))
			sums := make(chan item, len(items))
			blocks := 0
			for _, it := range items {
				if it.blk != nil {
					it.blk.refs.Store(1) // the digest's only
					blocks++
				}
				sums <- it
			}
			close(sums)
			d := NewImageDigest()
			if err := hashDigest(context.Background(), d, free, sums, parallel); err != nil {
				t.Fatal(err)
			}
			if got, want := d.Hex(), imageDigestHex(img); got != want {
				t.Fatalf("seed %d, %d at once: digest %s, want %s", seed, parallel, got, want)
			}
			if len(free) != blocks {
				t.Fatalf("seed %d, %d at once: %d of %d blocks given back", seed, parallel, len(free), blocks)
			}
		}
	}
}

// BenchmarkDigestStage measures Backup's digest stage alone on whole leaves
// of random data, with 1, 2 and 4 leaves hashed at once (go test -bench
// DigestStage ./blockdev).
func BenchmarkDigestStage(b *testing.B) {
	const leaves = 64
	data := randomBytes(1, leaves*DigestLeaf)
	for _, parallel := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("parallel-%d", parallel), func(b *testing.B) {
			b.SetBytes(leaves * DigestLeaf)
			blocks := make([]*block, leaves)
			for i := range blocks {
				blocks[i] = &block{buf: data[i*DigestLeaf : (i+1)*DigestLeaf]}
			}
			for b.Loop() {
				free := make(chan *block, leaves)
				sums := make(chan item, leaves)
				for _, blk := range blocks {
					blk.refs.Store(1)
					sums <- item{blk: blk, n: DigestLeaf}
				}
				close(sums)
				if err := hashDigest(context.Background(), NewImageDigest(), free, sums, parallel); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
