package diskfs

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestDamagedImagesDoNotPanic flips bytes in the metadata of small ext4,
// ext2 and FAT images and reads everything that still opens: every damage
// must give an error or some data, never a panic, a hang or a huge
// allocation.
func TestDamagedImagesDoNotPanic(t *testing.T) {
	src := t.TempDir()
	for i := 0; i < 40; i++ {
		writeFile(t, filepath.Join(src, "d", "sub", string(rune('a'+i%26))+itoa(i)), randBytes(i*700, uint64(i)), 0o644, time.Unix(1e9, 0))
	}
	os.Symlink("d/sub", filepath.Join(src, "link"))
	images := map[string]string{
		"ext4": mkfsExt(t, "ext4", src, 4),
		"ext2": mkfsExt(t, "ext2", src, 4, "-b", "1024"),
		"fat":  mkfsFAT(t, 12, 3, src),
	}
	for name, img := range images {
		orig, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		// The metadata a reader walks sits in the first 300 KiB here.
		meta := min(len(orig), 300<<10)
		rng := rand.New(rand.NewPCG(1, uint64(len(name))))
		opened := 0
		b := bytes.Clone(orig)
		for iter := 0; iter < 200; iter++ {
			var changed []int
			for k := 0; k < 1+rng.IntN(30); k++ {
				i := rng.IntN(meta)
				b[i] = byte(rng.Uint32())
				changed = append(changed, i)
			}
			if fsys, err := OpenFS(bytes.NewReader(b), Partition{Size: int64(len(b))}); err == nil {
				opened++
				walkAll(fsys, "/", 0)
			}
			for _, i := range changed {
				b[i] = orig[i]
			}
		}
		if opened == 0 {
			t.Errorf("%s: no damaged image opened; the test exercised nothing past OpenFS", name)
		}
	}
}

func walkAll(fsys FS, dir string, depth int) {
	if depth > 8 {
		return // directory loops made by the damage
	}
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		switch {
		case e.Mode.IsDir():
			walkAll(fsys, e.Path, depth+1)
		case e.Mode.IsRegular():
			if f, err := fsys.Open(e.Path); err == nil {
				io.Copy(io.Discard, io.NewSectionReader(f, 0, min(f.Size(), 1<<20)))
			}
		}
	}
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}
