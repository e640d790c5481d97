package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestImageNightsDeltaPages backs up an image on several nights of
// scattered changes (~1% of its 4 KiB blocks), each on the previous night
// as parent: a night adds a small fraction of the content list as metadata
// (delta pages). Then every snapshot but the last is forgotten and pruned
// with nothing left unused: the last one's delta pages keep their bases
// (pages of the forgotten snapshots), so check --read-data passes, the
// image restores byte-identical, and a copy to another repository (which
// stores the list in full pages) restores too.
func TestImageNightsDeltaPages(t *testing.T) {
	e := newEnv(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	const size = 192 << 20
	const blocks = size / 4096
	{
		f, err := os.Create(img)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4<<20)
		r := rand.New(rand.NewPCG(1, 1))
		for off := 0; off < size; off += len(b) {
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			if _, err := f.Write(b); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
	}
	churn := func(night int) {
		f, err := os.OpenFile(img, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r := rand.New(rand.NewPCG(uint64(night), 2))
		b := make([]byte, 4096)
		for range blocks / 100 {
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			if _, err := f.WriteAt(b, int64(r.IntN(blocks))*4096); err != nil {
				t.Fatal(err)
			}
		}
	}
	backup := func(night int) map[string]any {
		return e.backupJSON("--image", img, "--time", time.Date(2026, 1, 1+night, 2, 0, 0, 0, time.UTC).Format(time.RFC3339))
	}
	first := backup(0)
	list := num(t, first, "metadata_added") // the whole content list, in full pages
	var last map[string]any
	for night := 1; night <= 4; night++ {
		churn(night)
		last = backup(night)
		meta := num(t, last, "metadata_added")
		t.Logf("night %d: metadata added %.0f bytes, the full content list %.0f", night, meta, list)
		if num(t, last, "bytes_reused") == 0 {
			t.Fatalf("night %d did not use its parent: %v", night, last)
		}
		if meta > list/4 {
			t.Errorf("night %d added %.0f bytes of metadata for a %.0f-byte content list", night, meta, list)
		}
	}
	want := sha256File(t, img)

	e.mustRun("forget", "--keep-last", "1", "--prune", "--max-unused", "0%")
	e.mustRun("check", "--read-data")
	target := filepath.Join(t.TempDir(), "restored.img")
	e.mustRun("restore", last["snapshot_id"].(string), "--target", target)
	if got := sha256File(t, target); got != want {
		t.Fatalf("restored image has sha256 %s, want %s", got, want)
	}

	dst := newEnvNoInit(t, "another password")
	from := []string{"--from-repo", e.repo, "--from-password-file", passwordFile(t, e)}
	dst.mustRun(append([]string{"init", "--copy-chunker-params"}, from...)...)
	dst.mustRun(append([]string{"copy"}, from...)...)
	dst.mustRun("check", "--read-data")
	ids := snapshotIDs(t, dst)
	if len(ids) != 1 {
		t.Fatalf("copy made %d snapshots, want 1", len(ids))
	}
	target = filepath.Join(t.TempDir(), "copied.img")
	dst.mustRun("restore", ids[0], "--target", target)
	if got := sha256File(t, target); got != want {
		t.Fatalf("image restored from the copy has sha256 %s, want %s", got, want)
	}
}
