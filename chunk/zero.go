package chunk

import "bytes"

// zeroBlock is compared against to detect zeros with bytes.Equal, which uses
// vector instructions. 16 KiB stays in the L1 data cache next to the input.
// Measured on the 2-core EPYC build machine (input in cache): 4, 16, 64 and
// 256 KiB blocks all ran at 50-80 GB/s, within noise of each other, and an
// unrolled loop over 8-byte words at 50 GB/s; 16 KiB was as fast as any.
var zeroBlock [16 * kiB]byte

// IsZero reports whether every byte of b is zero; an empty b is zero. It stops
// at the first block holding a non-zero byte, and checks the first 64 bytes
// on their own because non-zero data usually differs there.
func IsZero(b []byte) bool {
	head := min(len(b), 64)
	if !bytes.Equal(b[:head], zeroBlock[:head]) {
		return false
	}
	b = b[head:]
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
