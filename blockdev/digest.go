package blockdev

import (
	"encoding/binary"
	"encoding/hex"
	"runtime"
	"sync"

	"github.com/zeebo/blake3"

	"github.com/imagobackup/imago/chunk"
)

// DigestLeaf is the length of the leaves of an image digest.
const DigestLeaf = 1 * miB

// digestContext is the BLAKE3 key-derivation context of an image digest's
// root: it keeps the root apart from a plain BLAKE3 of any data.
const digestContext = "imago 2026-11-23 image digest: BLAKE3 over 1 MiB leaves"

// zeroLeaf returns the BLAKE3-256 of DigestLeaf zero bytes.
var zeroLeaf = sync.OnceValue(func() [32]byte { return blake3.Sum256(make([]byte, DigestLeaf)) })

// ImageDigest computes the digest of an image (docs/FORMAT.md §7, "Image
// digest"): the image is cut into leaves of DigestLeaf bytes (the last may
// be shorter), each leaf is hashed with BLAKE3-256, and the root is the
// BLAKE3 key derivation (context digestContext) over the leaf hashes in
// order followed by the image length (8 bytes, little-endian).
//
// A leaf of zeros has a constant hash, so that holes and zeroed ranges,
// most of a thin VM disk, cost nothing to hash: a plain BLAKE3 of the
// whole image (the digest before this one) hashed every zero at ~3.5
// GB/s on one core, 9.3 of the 10 s an unchanged 32 GiB sparse image
// with 1 GiB of data took. `imago digest` computes it for any file or
// device.
//
// Feed the image in order with Write (data), Zeros (holes) and AddLeaf
// (whole leaves hashed elsewhere with LeafHash); an ImageDigest is not
// safe for concurrent use.
type ImageDigest struct {
	root *blake3.Hasher
	leaf *blake3.Hasher // the open leaf's bytes, once data came into it
	open int            // bytes of the open leaf
	// hashed: the open leaf's bytes went to leaf; until then they are all
	// zeros and only counted.
	hashed bool
	size   uint64
}

// NewImageDigest returns the digest of an empty image, to be fed.
func NewImageDigest() *ImageDigest {
	return &ImageDigest{root: blake3.NewDeriveKey(digestContext), leaf: blake3.New()}
}

// LeafHash returns the hash of a whole leaf (DigestLeaf bytes), for
// AddLeaf: leaves can be hashed in parallel and added in order.
func LeafHash(leaf []byte) [32]byte {
	if chunk.IsZero(leaf) {
		return zeroLeaf()
	}
	return blake3.Sum256(leaf)
}

// AtLeaf reports whether the image so far ends on a leaf boundary, where
// AddLeaf may add a whole leaf.
func (d *ImageDigest) AtLeaf() bool { return d.open == 0 }

// AddLeaf adds the next DigestLeaf bytes of the image by their LeafHash;
// the image so far must end on a leaf boundary (AtLeaf).
func (d *ImageDigest) AddLeaf(sum [32]byte) {
	if d.open != 0 {
		panic("blockdev: ImageDigest.AddLeaf inside a leaf")
	}
	d.size += DigestLeaf
	d.addLeaf(sum)
}

// Write adds the next bytes of the image.
func (d *ImageDigest) Write(p []byte) {
	d.size += uint64(len(p))
	for len(p) > 0 {
		if d.open == 0 && len(p) >= DigestLeaf {
			// A whole leaf at once: the common case of aligned reads.
			d.addLeaf(LeafHash(p[:DigestLeaf]))
			p = p[DigestLeaf:]
			continue
		}
		if !d.hashed {
			hashZeros(d.leaf, int64(d.open))
			d.hashed = true
		}
		k := min(len(p), DigestLeaf-d.open)
		_, _ = d.leaf.Write(p[:k])
		d.open += k
		p = p[k:]
		if d.open == DigestLeaf {
			d.closeLeaf()
		}
	}
}

// Zeros adds n zero bytes (a hole) to the image.
func (d *ImageDigest) Zeros(n int64) {
	d.size += uint64(n)
	for n > 0 {
		if d.open == 0 && n >= DigestLeaf {
			d.addLeaf(zeroLeaf())
			n -= DigestLeaf
			continue
		}
		k := min(n, int64(DigestLeaf-d.open))
		if d.hashed {
			hashZeros(d.leaf, k)
		}
		d.open += int(k)
		n -= k
		if d.open == DigestLeaf {
			d.closeLeaf()
		}
	}
}

// Hex returns the digest of the image so far, in lowercase hex. It does
// not change d.
func (d *ImageDigest) Hex() string {
	root := d.root.Clone()
	if d.open > 0 {
		leaf := d.leaf.Clone()
		if !d.hashed {
			hashZeros(leaf, int64(d.open))
		}
		var sum [32]byte
		leaf.Sum(sum[:0])
		_, _ = root.Write(sum[:])
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], d.size)
	_, _ = root.Write(n[:])
	return hex.EncodeToString(root.Sum(nil))
}

func (d *ImageDigest) closeLeaf() {
	if !d.hashed {
		d.addLeaf(zeroLeaf())
		return
	}
	var sum [32]byte
	d.leaf.Sum(sum[:0])
	d.leaf.Reset()
	d.hashed = false
	d.addLeaf(sum)
}

func (d *ImageDigest) addLeaf(sum [32]byte) {
	_, _ = d.root.Write(sum[:])
	d.open = 0
}

// digestParallel is how many whole leaves Backup's digest hashes at once.
// On 2 cores, one: the backup is bound by the hashing on both cores
// already, and hashing leaves in parallel made the cold nightly of an 8
// GiB image slower (4.34–4.50 s one at a time, 4.67–4.73 s two,
// 4.74–4.91 s four). With more cores, up to 4 (half the read blocks,
// which the digest holds until their leaves are hashed): the digest stage
// alone hashed 2.8–3.0 GB/s one leaf at a time and 5.3–5.7 GB/s four at a
// time even on 2 cores (BenchmarkDigestStage), where one core would cap a
// fast disk. The gain on a machine with 4 or more cores is not measured
// yet.
func digestParallel() int {
	if n := runtime.NumCPU(); n > 2 {
		return min(n/2, readBlocks/2)
	}
	return 1
}
