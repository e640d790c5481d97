package diskfs

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrNoPartition is wrapped when an inside path names a partition the
// image does not have, or names none where the choice is ambiguous.
var ErrNoPartition = errors.New("no such partition")

// Image is a disk image with its partitions, for opening the file systems
// inside it by "[PARTITION:]PATH".
type Image struct {
	r     io.ReaderAt
	size  int64
	Parts []Partition
}

// OpenImage reads the partition table of the image r of size bytes.
func OpenImage(r io.ReaderAt, size int64) (*Image, error) {
	parts, err := Partitions(r, size)
	if err != nil {
		return nil, err
	}
	return &Image{r: r, size: size, Parts: parts}, nil
}

// Probe returns what Detect finds in partition p ("" for nothing known).
func (im *Image) Probe(p Partition) (string, error) {
	return Detect(io.NewSectionReader(im.r, p.Start, p.Size), p.Size)
}

// Readable reports whether kind (from Detect) is a file system OpenFS reads.
func Readable(kind string) bool {
	switch kind {
	case "ext2", "ext3", "ext4", "fat12", "fat16", "fat32", "ntfs":
		return true
	}
	return false
}

// Select returns partition number n, or with n < 0 the only partition
// holding a readable file system.
func (im *Image) Select(n int) (Partition, error) {
	if n >= 0 {
		for _, p := range im.Parts {
			if p.Number == n {
				return p, nil
			}
		}
		return Partition{}, fmt.Errorf("%w %d: the image has %s", ErrNoPartition, n, im.describe())
	}
	if len(im.Parts) == 1 {
		return im.Parts[0], nil
	}
	var found []Partition
	var kinds []string
	for _, p := range im.Parts {
		k, err := im.Probe(p)
		if err != nil {
			return Partition{}, err
		}
		if Readable(k) {
			found = append(found, p)
		}
		if k == "" {
			k = "unknown"
		}
		kinds = append(kinds, fmt.Sprintf("%d (%s)", p.Number, k))
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		if len(im.Parts) == 0 {
			return Partition{}, fmt.Errorf("%w: the partition table is empty", ErrNoPartition)
		}
		return Partition{}, fmt.Errorf("%w: no readable filesystem in partitions %s", ErrUnknownFilesystem, strings.Join(kinds, ", "))
	}
	return Partition{}, fmt.Errorf("the image has partitions %s: name one as PARTITION:PATH", strings.Join(kinds, ", "))
}

func (im *Image) describe() string {
	if len(im.Parts) == 1 && im.Parts[0].Number == 0 {
		return "no partition table (use 0 or no number)"
	}
	var nums []string
	for _, p := range im.Parts {
		nums = append(nums, fmt.Sprint(p.Number))
	}
	if len(nums) == 0 {
		return "no partitions"
	}
	return "partitions " + strings.Join(nums, ", ")
}

// OpenPartition opens the file system of partition p (one of Parts).
func (im *Image) OpenPartition(p Partition) (FS, error) { return OpenFS(im.r, p) }

// Open opens the file system of partition n (n < 0: the only one).
func (im *Image) Open(n int) (FS, Partition, error) {
	p, err := im.Select(n)
	if err != nil {
		return nil, Partition{}, err
	}
	fsys, err := OpenFS(im.r, p)
	return fsys, p, err
}
