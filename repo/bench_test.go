package repo

import (
	"context"
	"encoding/binary"
	"io"
	"sync/atomic"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/mem"
)

// discardPacks is an in-memory backend that drops packs, so that a
// benchmark measures the write path and not the benchmark's memory.
type discardPacks struct{ *mem.Backend }

func (d discardPacks) Save(ctx context.Context, h backend.Handle, rd io.ReaderAt, size int64) error {
	if h.Type == backend.Pack {
		return ctx.Err()
	}
	return d.Backend.Save(ctx, h, rd, size)
}

func BenchmarkSaveChunk(b *testing.B) {
	const size = 1 << 20
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"random", randomBytes(1, size)},
		{"compressible", compressibleBytes(size)},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			r := TestRepositoryWithBackend(b, discardPacks{mem.New()})
			var seq atomic.Uint64
			b.ReportAllocs()
			b.SetBytes(size)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				buf := append([]byte(nil), c.data...)
				for pb.Next() {
					// A unique prefix makes every chunk a new blob.
					binary.LittleEndian.PutUint64(buf, seq.Add(1))
					if _, _, err := r.SaveChunk(ctx, chunk.KindData, buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
			if err := r.Flush(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

func BenchmarkLoadChunk(b *testing.B) {
	const size, count = 1 << 20, 16
	ctx := context.Background()
	r := TestRepository(b)
	handles := make([]chunk.Handle, count)
	for i := range handles {
		id, _, err := r.SaveChunk(ctx, chunk.KindData, randomBytes(uint64(i), size))
		if err != nil {
			b.Fatal(err)
		}
		handles[i] = chunk.Handle{ID: id, Kind: chunk.KindData}
	}
	mustFlush(b, r)
	var next atomic.Uint64
	b.ReportAllocs()
	b.SetBytes(size)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var buf []byte
		for pb.Next() {
			var err error
			buf, err = r.LoadChunk(ctx, handles[next.Add(1)%count], buf)
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}
