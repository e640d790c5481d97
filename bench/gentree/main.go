// Command gentree writes a deterministic, realistic-ish file tree for
// benchmarks: many small files and a few large ones, half of the bytes
// compressible text-like data and half random, in nested directories.
//
//	go run ./bench/gentree -size 1GiB -seed 1 DIR
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/imagobackup/imago/bench/treegen"
)

func main() {
	size := flag.String("size", "1GiB", "total bytes to write (suffixes KiB, MiB, GiB)")
	seed := flag.Uint64("seed", 1, "random seed; the same seed gives the same tree")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: gentree [-size N] [-seed S] DIR")
		os.Exit(2)
	}
	total, err := parseSize(*size)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := treegen.Generate(flag.Arg(0), total, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "gentree:", err)
		os.Exit(1)
	}
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for suf, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suf) {
			s, mult = strings.TrimSuffix(s, suf), m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return n * mult, nil
}
