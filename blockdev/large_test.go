package blockdev

import (
	"runtime"
	"testing"
	"time"

	"github.com/imagobackup/imago/snapshot"
)

// TestLargeSparseImage backs up a 32 GiB sparse image file holding 3 MiB
// of data (2 GiB with -short or -race): the holes are neither read nor buffered, so
// the backup allocates a few MiB. Its time is that of hashing the holes as
// zeros for the image digest (~4 GB/s on one core, so ~9 s).
func TestLargeSparseImage(t *testing.T) {
	dir := t.TempDir()
	supportsHoles(t, dir)
	size := int64(32 << 30)
	if testing.Short() || raceEnabled {
		// The race detector slows the digest of the holes tenfold.
		size = 2 << 30
	}
	path := dir + "/huge.img"
	truncate(t, path, size)
	writeAt(t, path, 0, randomBytes(1, 1*miB))
	writeAt(t, path, size/2+12345, randomBytes(2, 1*miB))
	writeAt(t, path, size-1*miB, randomBytes(3, 1*miB))

	m := snapshot.NewMemStore()
	opts := BackupOptions{Params: imageParams, Workers: 2}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	res := backupPath(t, path, m, opts)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)

	// The 3 MiB of data are copied into segment buffers, the MemStore and
	// the splitter; 64 MiB is what one segment buffer alone would cost.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 48*miB {
		t.Errorf("backup of a sparse image allocated %d MiB", alloc/miB)
	}
	if res.Size != uint64(size) || res.BytesRead > 4*miB+12345 || res.BytesHoles < uint64(size)-4*miB {
		t.Errorf("size %d, read %d, holes %d", res.Size, res.BytesRead, res.BytesHoles)
	}
	if res.Extents > 100 {
		t.Errorf("%d extents for 3 data ranges", res.Extents)
	}
	t.Logf("%d GiB sparse image in %v (%.0f MB/s), %d extents, %d KiB allocated",
		size>>30, elapsed, float64(size)/elapsed.Seconds()/1e6, res.Extents, (after.TotalAlloc-before.TotalAlloc)/kiB)

}
