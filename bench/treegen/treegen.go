// Package treegen writes deterministic, realistic-ish file trees for
// benchmarks: many small files and a few large ones, half of the bytes
// compressible text-like data and half random, in nested directories.
package treegen

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// words feed the compressible half: text compresses about 3:1 with zstd.
var words = strings.Fields(`backup restore snapshot image disk block chunk pack index tree
node file directory repository encrypted deduplicated compressed nightly retention prune
forget check the a of and to in is for on with that this it as by from at be are`)

// Generate writes about total bytes of files below root; the same seed
// gives the same tree.
func Generate(root string, total int64, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	var written int64
	for i := 0; written < total; i++ {
		// Size distribution: 70% small (1-64 KiB), 25% medium (64 KiB-4 MiB),
		// 5% large (4-64 MiB): roughly what a home directory looks like.
		var n int64
		switch p := r.IntN(100); {
		case p < 70:
			n = 1<<10 + r.Int64N(63<<10)
		case p < 95:
			n = 64<<10 + r.Int64N(4<<20)
		default:
			n = 4<<20 + r.Int64N(60<<20)
		}
		if n > total-written {
			n = total - written
		}
		dir := filepath.Join(root, fmt.Sprintf("d%02d", i%37), fmt.Sprintf("s%02d", (i/37)%11))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, fmt.Sprintf("f%06d", i)), n, r, i%2 == 0); err != nil {
			return err
		}
		written += n
	}
	return nil
}

func writeFile(path string, n int64, r *rand.Rand, text bool) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var buf [8]byte
	for left := n; left > 0; {
		if text {
			word := words[r.IntN(len(words))] + " "
			if int64(len(word)) > left {
				word = word[:left]
			}
			w.WriteString(word)
			left -= int64(len(word))
			continue
		}
		v := r.Uint64()
		for i := range buf {
			buf[i] = byte(v >> (8 * i))
		}
		k := int64(len(buf))
		if k > left {
			k = left
		}
		w.Write(buf[:k])
		left -= k
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
