//go:build !unix || zos

package index

import (
	"fmt"
	"io"
	"os"
)

// mapFile reads the first size bytes of f into the heap: this system has no
// mapping that this package uses, so an index kept "on disk" costs as much
// memory as one from New, but works the same.
func mapFile(f *os.File, size int64) ([]byte, error) {
	if size <= 0 || size != int64(int(size)) {
		return nil, fmt.Errorf("read %s: size %d out of range", f.Name(), size)
	}
	b := make([]byte, size)
	if n, err := f.ReadAt(b, 0); n < len(b) {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return b, nil
}

func unmap([]byte) error { return nil }

func dontNeed([]byte)     {}
func willNeed([]byte)     {}
func randomAccess([]byte) {}

// syncDir does nothing: not every system can sync a directory.
func syncDir(string) error { return nil }
