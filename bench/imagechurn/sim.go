package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
)

// simSegment mirrors imago's image segments: a cut at every 16 MiB edge.
const simSegment = 16 << 20 / blockSize

// simChunker is a chunker simulated on the 4 KiB block hashes, to compare
// chunking schemes without a repository:
//
//	fixed-<size>    cut every size bytes from the start of the image
//	aligned-<avg>   content-defined, but cutting only at 4 KiB boundaries:
//	                avg/2, then after each further block a cut with
//	                probability 4KiB/(avg/2) decided by that block's hash
//	                (mean avg), at most 4×avg; so a changed block costs one
//	                chunk and data that moves by whole blocks still
//	                deduplicates
//
// Both treat all-zero blocks as holes (a chunk ends before them).
type simChunker struct {
	name   string
	fixed  bool
	blocks int // size (fixed) or average (aligned), in blocks
}

func parseSims(s string) ([]simChunker, error) {
	var out []simChunker
	for _, name := range strings.Fields(strings.ReplaceAll(s, ",", " ")) {
		kind, size, ok := strings.Cut(name, "-")
		n, err := parseSize(strings.ToUpper(size))
		if !ok || err != nil || n < blockSize || n%blockSize != 0 || (kind != "fixed" && kind != "aligned") {
			return nil, fmt.Errorf("bad simulated chunker %q (want fixed-<size> or aligned-<size>, e.g. aligned-16k)", name)
		}
		b := int(n / blockSize)
		if kind == "aligned" && (b < 2 || b&(b-1) != 0) {
			return nil, fmt.Errorf("%s: the average must be a power of two of at least 8k", name)
		}
		out = append(out, simChunker{name, kind == "fixed", b})
	}
	return out, nil
}

// span is a chunk: blocks [start, end).
type span struct{ start, end int64 }

// cut splits the image's blocks into chunks.
func (c simChunker) cut(keys []key, zero key) []span {
	var out []span
	n := int64(len(keys))
	if c.fixed {
		b := int64(c.blocks)
		for s := int64(0); s < n; s += b {
			e := min(s+b, n)
			allZero := true
			for i := s; i < e && allZero; i++ {
				allZero = keys[i] == zero
			}
			if !allZero {
				out = append(out, span{s, e})
			}
		}
		return out
	}
	minB, maxB := int64(c.blocks/2), int64(4*c.blocks)
	mask := uint64(c.blocks/2 - 1)
	s := int64(-1) // start of the open chunk, or -1
	for i := int64(0); i < n; i++ {
		if keys[i] == zero {
			if s >= 0 {
				out = append(out, span{s, i})
				s = -1
			}
			continue
		}
		if s < 0 {
			s = i
		}
		l := i + 1 - s
		if l >= maxB || (i+1)%simSegment == 0 || (l > minB && binary.LittleEndian.Uint64(keys[i][8:])&mask == 0) {
			out = append(out, span{s, i + 1})
			s = -1
		}
	}
	if s >= 0 {
		out = append(out, span{s, n})
	}
	return out
}

// simulate runs every simulated chunker on tonight's blocks and prints, per
// chunker, the chunks and the compressed bytes of the chunks no earlier
// night had (what its repository would add in data, before encryption).
func simulate(f *os.File, keys []key, stateDir string, sims []simChunker) error {
	zero := key{}
	h := blake3.Sum256(make([]byte, blockSize))
	copy(zero[:], h[:16])
	for _, c := range sims {
		name := filepath.Join(stateDir, "sim-"+c.name+".bin")
		seenList, err := readKeys(name)
		if err != nil {
			return err
		}
		seen := make(map[key]struct{}, len(seenList))
		for _, k := range seenList {
			seen[k] = struct{}{}
		}
		spans := c.cut(keys, zero)
		var fresh []span
		var freshKeys []key
		buf := make([]byte, 0, 4*c.blocks*len(key{}))
		for _, sp := range spans {
			buf = buf[:0]
			for i := sp.start; i < sp.end; i++ {
				buf = append(buf, keys[i][:]...)
			}
			h := blake3.Sum256(buf)
			var k key
			copy(k[:], h[:16])
			if _, ok := seen[k]; !ok {
				seen[k] = struct{}{}
				fresh = append(fresh, sp)
				freshKeys = append(freshKeys, k)
			}
		}
		stored, err := compressSpans(f, fresh)
		if err != nil {
			return err
		}
		if err := writeKeys(name, freshKeys, true); err != nil {
			return err
		}
		fmt.Printf("sim name=%s chunks=%d new_chunks=%d stored=%d\n", c.name, len(spans), len(fresh), stored)
	}
	return nil
}

// compressSpans sums the zstd-compressed sizes (default level, raw when that
// is not smaller) of the given chunks of f, each compressed on its own.
func compressSpans(f *os.File, spans []span) (int64, error) {
	var next, total atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, runtime.NumCPU())
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
			if err != nil {
				errs[w] = err
				return
			}
			defer enc.Close()
			var in, out []byte
			var sum int64
			for {
				i := next.Add(1) - 1
				if i >= int64(len(spans)) {
					break
				}
				sp := spans[i]
				in = append(in[:0], make([]byte, (sp.end-sp.start)*blockSize)...)
				if _, err := f.ReadAt(in, sp.start*blockSize); err != nil {
					errs[w] = err
					return
				}
				out = enc.EncodeAll(in, out[:0])
				sum += int64(min(len(out), len(in)))
			}
			total.Add(sum)
		}()
	}
	wg.Wait()
	return total.Load(), errors.Join(errs...)
}
