package blockdev

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/imagobackup/imago/snapshot"
)

// benchImageSize is the image the pipeline benchmarks read: large enough
// for four default segments per worker, small enough for the page cache.
const benchImageSize = 256 * miB

// benchImage writes a dense image of random bytes (the chunker's and
// hasher's worst case: no holes, nothing to skip).
func benchImage(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "bench.img")
	writeAt(b, path, 0, randomBytes(42, benchImageSize))
	return path
}

// benchBackup runs Backup over path b.N times; fresh returns the store for
// each run. With dropCache the source reads as in production (O_DIRECT,
// or dropping the page cache behind it), so the figures include reading
// the disk.
func benchBackup(b *testing.B, path string, dropCache bool, opts BackupOptions, fresh func() *snapshot.MemStore) {
	b.ReportAllocs()
	b.SetBytes(benchImageSize)
	for b.Loop() {
		m := fresh()
		src, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if !dropCache {
			// Read from the page cache: no fadvise, and no O_DIRECT, which
			// would go to the disk.
			src.keepCache = true
			if src.direct != nil {
				_ = src.direct.Close()
				src.direct = nil
			}
		}
		if _, err := Backup(context.Background(), src, m, storeHasher{m}, opts); err != nil {
			b.Fatal(err)
		}
		src.Close()
	}
}

var benchCache = []struct {
	name string
	drop bool
}{{"page-cache", false}, {"drop-cache", true}}

// BenchmarkImageBackupFirst measures a first backup: every chunk is cut by
// the chunker and new to the store.
func BenchmarkImageBackupFirst(b *testing.B) {
	path := benchImage(b)
	for _, c := range benchCache {
		b.Run(c.name, func(b *testing.B) {
			benchBackup(b, path, c.drop, BackupOptions{Params: imageParams}, snapshot.NewMemStore)
		})
	}
}

// BenchmarkImageBackupUnchanged measures a nightly backup of an unchanged
// image with its parent: read and hash only.
func BenchmarkImageBackupUnchanged(b *testing.B) {
	path := benchImage(b)
	m := snapshot.NewMemStore()
	opts := BackupOptions{Params: imageParams}
	parent := backupPath(b, path, m, opts)
	opts.Parent, opts.ParentLoader = &parent.Content, m
	for _, c := range benchCache {
		b.Run(c.name, func(b *testing.B) {
			benchBackup(b, path, c.drop, opts, func() *snapshot.MemStore { return m })
		})
	}
}

// BenchmarkImageBackupUnguided measures the same nightly backup without
// its parent (Force): the chunker runs over everything, the store knows
// every chunk. The gap to BenchmarkImageBackupUnchanged is what
// parent-guided re-chunking saves.
func BenchmarkImageBackupUnguided(b *testing.B) {
	path := benchImage(b)
	m := snapshot.NewMemStore()
	opts := BackupOptions{Params: imageParams}
	backupPath(b, path, m, opts)
	benchBackup(b, path, false, opts, func() *snapshot.MemStore { return m })
}

// BenchmarkImageRestore measures restoring the image to a file.
func BenchmarkImageRestore(b *testing.B) {
	path := benchImage(b)
	m := snapshot.NewMemStore()
	res := backupPath(b, path, m, BackupOptions{Params: imageParams})
	out := filepath.Join(b.TempDir(), "restored.img")
	b.ReportAllocs()
	b.SetBytes(benchImageSize)
	for b.Loop() {
		if err := restoreTo(b, m, res, out, RestoreOptions{Digest: res.Digest}); err != nil {
			b.Fatal(err)
		}
	}
}
