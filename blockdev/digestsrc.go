package blockdev

import (
	"context"
	"fmt"
)

// DigestSource reads src to its end and returns its image digest
// (ImageDigest), the one an image backup of it records; the holes of a
// sparse file are not read. It is what `imago digest` prints, to check a
// disk or a restored image against a snapshot without the repository.
func DigestSource(ctx context.Context, src *Source) (string, error) {
	d := NewImageDigest()
	buf := alignedBuf(readBlock)
	if src.f == nil {
		for {
			if err := ctx.Err(); err != nil {
				return "", err
			}
			n, err := src.readStream(buf)
			d.Write(buf[:n])
			if err != nil {
				return "", err
			}
			if n < len(buf) {
				return d.Hex(), nil
			}
		}
	}
	var ranges []Range
	for off := int64(0); off < src.size; off += 1 << 30 {
		var err error
		if ranges, err = src.ranges(off, min(off+1<<30, src.size), ranges[:0]); err != nil {
			return "", err
		}
		for _, r := range ranges {
			if r.Hole {
				d.Zeros(r.Length)
				continue
			}
			for pos, end := r.Offset, r.Offset+r.Length; pos < end; {
				// As Backup's reader does: blocks end on multiples of
				// readBlock and start at pos's distance from an aligned
				// offset into the buffer, so that they can be read
				// directly.
				n := min(end-pos, readBlock-pos%readBlock)
				at := pos % directAlign
				p := buf[at : at+n]
				if err := src.readAt(ctx, p, pos); err != nil {
					return "", err
				}
				d.Write(p)
				pos += n
			}
		}
	}
	if err := src.checkSize(); err != nil {
		return "", fmt.Errorf("digest %s: %w", src.name, err)
	}
	return d.Hex(), nil
}
