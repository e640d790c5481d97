package nbd

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestOverlayWritesReadBackAndNeverReachTheStore(t *testing.T) {
	const size = 3<<20 + 1234 // the last block is partial
	img := newTestImage(t, size, nil)
	blobs := img.store.Len()
	path := filepath.Join(t.TempDir(), "overlay")
	ov, err := OpenOverlay(path, img.r, size, "snap-1")
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, map[string]Export{"": {Data: img.r, Size: size, Overlay: ov}}, Options{})
	c := dial(t, addr, "")
	if c.Flags()&FlagReadOnly != 0 || c.Flags()&FlagSendFlush == 0 {
		t.Errorf("writable export flags %#x", c.Flags())
	}

	// Writes of every shape: aligned blocks, unaligned spans across block
	// edges, single bytes, the partial last block; the model is the image
	// with the writes applied.
	model := bytes.Clone(img.data)
	rng := rand.New(rand.NewPCG(8, 9))
	write := func(off int64, n int) {
		t.Helper()
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if _, err := c.WriteAt(p, off); err != nil {
			t.Fatalf("write %d at %d: %v", n, off, err)
		}
		copy(model[off:], p)
	}
	write(0, 4096)
	write(4096*10+100, 9000)
	write(1<<20+7, 1)
	write(size-1234, 1234)
	write(size-5000, 5000)
	for range 100 {
		n := 1 + rng.IntN(64<<10)
		write(rng.Int64N(size-int64(n)), n)
	}
	_, err = c.WriteAt(make([]byte, 10), size-5)
	wantErrno(t, "write past the end", err, errNoSpc)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	check := func(what string, read func(p []byte, off int64) (int, error)) {
		t.Helper()
		for _, r := range [][2]int64{{0, size}, {4096*10 + 50, 10000}, {size - 6000, 6000}} {
			buf := make([]byte, r[1])
			if _, err := read(buf, r[0]); err != nil {
				t.Fatalf("%s: read %d at %d: %v", what, r[1], r[0], err)
			}
			if !bytes.Equal(buf, model[r[0]:r[0]+r[1]]) {
				t.Fatalf("%s: read %d at %d does not show the writes", what, r[1], r[0])
			}
		}
	}
	check("over NBD", func(p []byte, off int64) (int, error) {
		// The whole image in requests of at most 1 MiB.
		for n := 0; n < len(p); n += 1 << 20 {
			if _, err := c.ReadAt(p[n:min(n+1<<20, len(p))], off+int64(n)); err != nil {
				return n, err
			}
		}
		return len(p), nil
	})

	// The store and the image are untouched.
	if img.store.Len() != blobs {
		t.Errorf("the store holds %d blobs, %d before the writes", img.store.Len(), blobs)
	}
	base := make([]byte, size)
	if _, err := img.r.ReadAt(base, 0); err != nil || !bytes.Equal(base, img.data) {
		t.Errorf("the snapshot's image changed: %v", err)
	}
	// The data file is sparse: it holds little more than the writes.
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > ov.Written()+1<<20 {
		t.Errorf("overlay data file uses %d bytes for %d written", used, ov.Written())
	}
	if err := ov.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened, the overlay still holds the writes.
	ov2, err := OpenOverlay(path, img.r, size, "snap-1")
	if err != nil {
		t.Fatal(err)
	}
	check("reopened", ov2.ReadAt)
	ov2.Close()

	// Another snapshot's overlay, a different size, or half an overlay are
	// refused.
	if _, err := OpenOverlay(path, img.r, size, "snap-2"); !errors.Is(err, ErrOverlayMismatch) {
		t.Errorf("overlay of another snapshot: %v", err)
	}
	if _, err := OpenOverlay(path, img.r, size+4096, "snap-1"); !errors.Is(err, ErrOverlayMismatch) {
		t.Errorf("overlay of another size: %v", err)
	}
	if err := os.Remove(path + ".map"); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenOverlay(path, img.r, size, "snap-1"); err == nil {
		t.Error("data file without its map accepted")
	}
}

func TestOverlayWriteZeroes(t *testing.T) {
	const size = 1 << 20
	img := newTestImage(t, size, nil)
	ov, err := OpenOverlay(filepath.Join(t.TempDir(), "ov"), img.r, size, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer ov.Close()
	if err := ov.WriteZeroes(1000, 70000); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if _, err := ov.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(img.data)
	clear(want[1000:71000])
	if !bytes.Equal(got, want) {
		t.Error("zeroed range does not read back as zeros around unchanged data")
	}
}
