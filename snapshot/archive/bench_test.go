package archive_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/archive"
	"github.com/klauspost/compress/zstd"
)

// benchTree writes a tree of about 256 MiB of random data: many small
// files, some of a few MiB, and a few large ones, and returns its size.
func benchTree(b *testing.B, dir string) int64 {
	var total int64
	add := func(name string, seed uint64, size int) {
		writeFile(b, filepath.Join(dir, name), randomBytes(seed, size))
		total += int64(size)
	}
	for i := range 1000 { // ~34 MiB in 4..64 KiB files
		add(fmt.Sprintf("small/%02d/f%d", i%32, i), uint64(i), 4<<10+(i*61<<10)/1000)
	}
	for i := range 40 { // ~100 MiB in 1..4 MiB files
		add(fmt.Sprintf("medium/f%d", i), uint64(2000+i), 1<<20+(i*3<<20)/40)
	}
	for i := range 4 { // 120 MiB in 30 MiB files
		add(fmt.Sprintf("large/f%d", i), uint64(3000+i), 30<<20)
	}
	return total
}

// zstdSaver compresses every blob before storing it, as the repository
// does, so that the benchmark shows whether the save workers keep all
// cores busy.
type zstdSaver struct {
	s   *snapshot.MemStore
	enc *zstd.Encoder
}

func (z *zstdSaver) SaveChunk(ctx context.Context, k chunk.Kind, data []byte) (chunk.ID, int, error) {
	_ = z.enc.EncodeAll(data, make([]byte, 0, len(data)))
	return z.s.SaveChunk(ctx, k, data)
}

func BenchmarkArchive(b *testing.B) {
	dir := b.TempDir()
	total := benchTree(b, dir)
	params := chunk.FileParams
	params.Polynomial = testPolynomial
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"memstore", "zstd"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(total)
			for b.Loop() {
				store := snapshot.NewMemStore()
				var s snapshot.ChunkSaver = store
				if name == "zstd" {
					s = &zstdSaver{s: store, enc: enc}
				}
				res, err := archive.Run(context.Background(), s, store, []string{dir}, archive.Options{Params: params})
				if err != nil {
					b.Fatal(err)
				}
				if res.Summary.BytesRead != uint64(total) {
					b.Fatalf("read %d bytes, want %d", res.Summary.BytesRead, total)
				}
			}
		})
	}
}
