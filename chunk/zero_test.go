package chunk

import (
	"fmt"
	"testing"
)

func TestIsZero(t *testing.T) {
	sizes := []int{0, 1, 7, 63, 64, 65, 4095, len(zeroBlock), len(zeroBlock) + 1, 3*len(zeroBlock) + 100}
	for _, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			b := make([]byte, n)
			if !IsZero(b) {
				t.Fatalf("IsZero(%d zero bytes) = false", n)
			}
			// A single set bit anywhere makes the buffer non-zero.
			for _, pos := range []int{0, n / 2, n - 1, 63, 64, len(zeroBlock), len(zeroBlock) - 1} {
				if pos < 0 || pos >= n {
					continue
				}
				b[pos] = 0x80
				if IsZero(b) {
					t.Fatalf("IsZero = true with byte %d of %d set", pos, n)
				}
				b[pos] = 0
			}
		})
	}
	if !IsZero(nil) {
		t.Fatal("IsZero(nil) = false")
	}
}

func BenchmarkIsZero(b *testing.B) {
	for _, tc := range []struct {
		name string
		size int
		hit  int // index of a non-zero byte, or -1
	}{
		{"zero/4KiB", 4 * kiB, -1},
		{"zero/64KiB", 64 * kiB, -1},
		{"zero/1MiB", miB, -1},
		{"zero/8MiB", 8 * miB, -1},
		{"nonzero-last/1MiB", miB, miB - 1},
		{"nonzero-first/1MiB", miB, 0},
	} {
		buf := make([]byte, tc.size)
		if tc.hit >= 0 {
			buf[tc.hit] = 1
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				IsZero(buf)
			}
		})
	}
}
