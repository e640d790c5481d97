package index

import (
	mrand "math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
)

// benchBlobs is the size of the index BenchmarkIndexLookup measures.
const benchBlobs = 10_000_000

// blobsPerPack is realistic for image backups: 16 MiB packs of 64 KiB
// chunks. With 1 MiB chunks (16 per pack) the per-pack cost, about 100
// bytes, adds about 6 bytes per blob.
const blobsPerPack = 256

// benchIndex is built once per process: it takes seconds.
var benchIndex = sync.OnceValue(func() (r struct {
	x           *Index
	sample      []chunk.Handle
	bytesPerBlb float64
	build       time.Duration
}) {
	rnd := mrand.NewChaCha8([32]byte{1})
	entries := make([]pack.Entry, blobsPerPack)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	x := New()
	for n := 0; n < benchBlobs; n += blobsPerPack {
		var id pack.ID
		_, _ = rnd.Read(id[:])
		var off uint32
		for i := range entries {
			e := &entries[i]
			_, _ = rnd.Read(e.Handle.ID[:])
			e.Handle.Kind = chunk.KindData
			if i%16 == 0 {
				e.Handle.Kind = chunk.KindTree
			}
			e.Offset, e.Length = off, 65536+41
			off += e.Length
			if n%(benchBlobs/65536) == 0 && i == 0 {
				r.sample = append(r.sample, e.Handle)
			}
		}
		x.Add(id, entries)
	}
	r.build = time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	r.x = x
	r.bytesPerBlb = float64(after.HeapAlloc-before.HeapAlloc-uint64(cap(r.sample))*33) / float64(x.Len())
	return r
})

// BenchmarkIndexLookup looks up known blobs in an index of 10 million blobs
// and reports its memory in bytes per blob.
func BenchmarkIndexLookup(b *testing.B) {
	bi := benchIndex()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := bi.x.Lookup(bi.sample[i%len(bi.sample)]); !ok {
			b.Fatal("known blob not found")
		}
		i++
	}
	// Loop resets user metrics when it starts, so report them after it.
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "lookups/s")
	b.ReportMetric(bi.bytesPerBlb, "bytes/blob")
	b.ReportMetric(bi.build.Seconds(), "build-s")
}

// BenchmarkIndexAdd adds packs of 256 blobs to an index, including the
// amortised cost of the merges.
func BenchmarkIndexAdd(b *testing.B) {
	rnd := mrand.NewChaCha8([32]byte{2})
	entries := make([]pack.Entry, blobsPerPack)
	x := New()
	b.ReportAllocs()
	b.SetBytes(blobsPerPack)
	for b.Loop() {
		var id pack.ID
		_, _ = rnd.Read(id[:])
		var off uint32
		for i := range entries {
			e := &entries[i]
			_, _ = rnd.Read(e.Handle.ID[:])
			e.Handle.Kind = chunk.KindData
			e.Offset, e.Length = off, 1000
			off += e.Length
		}
		x.Add(id, entries)
	}
	b.ReportMetric(float64(x.Len())/b.Elapsed().Seconds(), "blobs/s")
}
