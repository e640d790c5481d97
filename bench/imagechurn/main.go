// Command imagechurn is the helper of bench/image-nightly.sh: it builds the
// source tree of a realistic ext4 image, applies deterministic nightly churn
// to the image through debugfs and direct page writes, and measures what
// changed.
//
//	imagechurn src     -out DIR -state DIR -bytes N -db N [-seed S] ROOT...
//	imagechurn churn   -image IMG -state DIR -night N -frac F [-seed S]
//	imagechurn measure -image IMG -state DIR -night N
//	imagechurn meta    imago|restic  < index JSON   (prints tree bytes)
//	imagechurn field   NAME          < JSON lines    (prints a summary field)
//
// State (the manifest of files in the image, the pool of real files not yet
// in it, and the block hashes of every night) lives in the -state directory,
// so the script can call the subcommands one night at a time.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// blockSize is the unit everything is measured in: ext4's block size, and
// the page size of the simulated database.
const blockSize = 4096

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "src":
		err = runSrc(os.Args[2:])
	case "churn":
		err = runChurn(os.Args[2:])
	case "measure":
		err = runMeasure(os.Args[2:])
	case "meta":
		err = runMeta(os.Args[2:])
	case "field":
		err = runField(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagechurn %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: imagechurn src|churn|measure|meta|field [flags] (see the package comment)")
	os.Exit(2)
}

// parseSize parses a byte count with an optional KiB/MiB/GiB suffix (also
// K/M/G, powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if strings.HasSuffix(t, u.suf) {
			t, mult = strings.TrimSuffix(t, u.suf), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return n * mult, nil
}
