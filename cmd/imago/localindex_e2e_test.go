package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestLocalIndex: the index kept in the cache folder is written, used,
// replaced when damaged, rebuilt after a prune, and never needed: with it
// or without it, every snapshot restores byte-identical.
func TestLocalIndex(t *testing.T) {
	e := newEnv(t)
	cache := t.TempDir()
	e.extraEnv = append(e.extraEnv, "XDG_CACHE_HOME="+cache)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := writeRandom(t, img, 4<<20, 1)
	orig := bytes.Clone(data)
	e.mustRun("backup", "--image", img)
	// Night two: one changed block.
	copy(data[1<<20:], bytes.Repeat([]byte{0xaa}, 4096))
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	e.mustRun("backup", "--image", img)

	copies, _ := filepath.Glob(filepath.Join(cache, "imago", "*", "blobindex", "index-v1"))
	if len(copies) != 1 {
		t.Fatalf("local index copies: %v, want one", copies)
	}
	local := copies[0]
	isIndex := func() bool {
		b, err := os.ReadFile(local)
		return err == nil && bytes.HasPrefix(b, []byte("imagoidx"))
	}
	if !isIndex() {
		t.Fatal("the local index is not an index file")
	}
	restored := filepath.Join(dir, "restored.img")
	restore := func() {
		t.Helper()
		os.Remove(restored)
		e.mustRun("restore", "latest", "--target", restored)
		got, err := os.ReadFile(restored)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("restored image differs (err %v)", err)
		}
	}
	restore()

	// A damaged copy is replaced by the next command that loads the index.
	if err := os.WriteFile(local, bytes.Repeat([]byte{0x5a}, 16<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	copy(data[3<<20:], bytes.Repeat([]byte{0xbb}, 8192))
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	e.mustRun("backup", "--image", img)
	if !isIndex() {
		t.Error("the damaged local index was not rewritten")
	}
	restore()

	// A prune replaces index files: the copy is stale and rebuilt. The
	// night-one chunk at 1 MiB goes with its snapshot (its pack is
	// repacked); a backup that deduplicated those bytes against the stale
	// copy's location would make the restore fail. (Backups are guarded
	// twice: LoadIndex refuses the stale copy, and RefreshIndex under the
	// lock rebuilds an index that names a deleted index file; the repo
	// tests check the first alone.)
	e.mustRun("forget", "--keep-last", "1", "--prune", "--max-unused", "0%")
	restore()
	e.mustRun("check", "--read-data")
	copy(data[1<<20:], orig[1<<20:1<<20+8192])
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	e.mustRun("backup", "--image", img)
	restore()

	// --no-cache leaves the cache folder alone and works the same.
	other := t.TempDir()
	e.extraEnv = append(e.extraEnv, "XDG_CACHE_HOME="+other)
	e.mustRun("--no-cache", "restore", "latest", "--target", filepath.Join(dir, "nocache.img"))
	got, err := os.ReadFile(filepath.Join(dir, "nocache.img"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("restore with --no-cache differs (err %v)", err)
	}
	if entries, _ := os.ReadDir(other); len(entries) != 0 {
		t.Errorf("--no-cache wrote %d entries to the cache folder", len(entries))
	}
}
