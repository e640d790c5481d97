package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/zeebo/blake3"
)

// key names a 4 KiB block's content: BLAKE3 truncated to 128 bits, far
// beyond collision reach for the few million blocks of a run.
type key [16]byte

// measureSegment is how much of the image one worker hashes at a time.
const measureSegment = 16 << 20

// runMeasure compares tonight's image with every earlier night's, block by
// block, and prints (as shell assignments):
//
//	blocks       4 KiB blocks in the image
//	changed      blocks whose content differs from last night's at the same offset
//	new_blocks   distinct block contents never seen in any earlier night
//	new_bytes    new_blocks × 4096
//	ideal_bytes  the new blocks, each compressed alone with zstd (default
//	             level; stored raw when that does not shrink it): what an
//	             ideal deduplicating backup would have to add tonight
//
// and with -sim one "sim" line per simulated chunker (see simulate).
func runMeasure(args []string) error {
	fl := flag.NewFlagSet("measure", flag.ExitOnError)
	image := fl.String("image", "", "tonight's image")
	stateDir := fl.String("state", "", "state directory (block hashes of earlier nights)")
	simFlag := fl.String("sim", "", "simulated chunkers to run too, e.g. \"fixed-16k aligned-16k\" (see sim.go)")
	fl.Parse(args)
	if *image == "" || *stateDir == "" {
		return errors.New("need -image and -state")
	}
	sims, err := parseSims(*simFlag)
	if err != nil {
		return err
	}
	f, err := os.Open(*image)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size()%blockSize != 0 {
		return fmt.Errorf("%s: size %d is not a multiple of %d", *image, fi.Size(), blockSize)
	}
	n := fi.Size() / blockSize
	cur, err := hashBlocks(f, n)
	if err != nil {
		return err
	}

	prevFile := filepath.Join(*stateDir, "blocks.bin")
	seenFile := filepath.Join(*stateDir, "seen.bin")
	prev, err := readKeys(prevFile)
	if err != nil {
		return err
	}
	seenList, err := readKeys(seenFile)
	if err != nil {
		return err
	}
	seen := make(map[key]struct{}, len(seenList)+len(cur)/8)
	for _, k := range seenList {
		seen[k] = struct{}{}
	}
	var changed int64
	var fresh []span // the first occurrence of each new content
	var freshKeys []key
	for i, k := range cur {
		if i >= len(prev) || prev[i] != k {
			changed++
		}
		if _, ok := seen[k]; !ok {
			seen[k] = struct{}{}
			fresh = append(fresh, span{int64(i), int64(i) + 1})
			freshKeys = append(freshKeys, k)
		}
	}
	ideal, err := compressSpans(f, fresh)
	if err != nil {
		return err
	}
	if err := writeKeys(prevFile, cur, false); err != nil {
		return err
	}
	if err := writeKeys(seenFile, freshKeys, true); err != nil {
		return err
	}
	fmt.Printf("blocks=%d changed=%d new_blocks=%d new_bytes=%d ideal_bytes=%d\n",
		n, changed, len(fresh), int64(len(fresh))*blockSize, ideal)
	return simulate(f, cur, *stateDir, sims)
}

// hashBlocks returns the key of each of the n blocks of f, hashing
// segments on all cores.
func hashBlocks(f *os.File, n int64) ([]key, error) {
	keys := make([]key, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, runtime.NumCPU())
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, measureSegment)
			for {
				off := next.Add(measureSegment) - measureSegment
				if off >= n*blockSize {
					return
				}
				m, err := f.ReadAt(buf, off)
				if err != nil && err != io.EOF {
					errs[w] = err
					return
				}
				for i := 0; i+blockSize <= m; i += blockSize {
					h := blake3.Sum256(buf[i : i+blockSize])
					copy(keys[(off+int64(i))/blockSize][:], h[:16])
				}
			}
		}()
	}
	wg.Wait()
	return keys, errors.Join(errs...)
}

func readKeys(name string) ([]key, error) {
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(b)%len(key{}) != 0 {
		return nil, fmt.Errorf("%s: truncated", name)
	}
	keys := make([]key, len(b)/len(key{}))
	for i := range keys {
		copy(keys[i][:], b[i*len(key{}):])
	}
	return keys, nil
}

func writeKeys(name string, keys []key, appendTo bool) error {
	flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if appendTo {
		flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	out, err := os.OpenFile(name, flags, 0o644)
	if err != nil {
		return err
	}
	b := make([]byte, 0, len(keys)*len(key{}))
	for _, k := range keys {
		b = append(b, k[:]...)
	}
	if _, err := out.Write(b); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
