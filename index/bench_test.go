package index

import (
	"encoding/binary"
	mrand "math/rand/v2"
	"path/filepath"
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

// fillBench adds benchBlobs blobs to x, in packs of blobsPerPack, and
// returns a sample of them.
func fillBench(x *Index) (sample []chunk.Handle) {
	rnd := mrand.NewChaCha8([32]byte{1})
	entries := make([]pack.Entry, blobsPerPack)
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
				sample = append(sample, e.Handle)
			}
		}
		x.Add(id, entries)
	}
	return sample
}

// heapInuse returns the bytes of the heap in use after a collection.
func heapInuse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// benchIndex is built once per process: it takes seconds.
var benchIndex = sync.OnceValue(func() (r struct {
	x           *Index
	sample      []chunk.Handle
	bytesPerBlb float64
	inusePerBlb float64
	build       time.Duration
}) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	x := New()
	r.sample = fillBench(x)
	r.build = time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	r.x = x
	r.bytesPerBlb = float64(after.HeapAlloc-before.HeapAlloc-uint64(cap(r.sample))*33) / float64(x.Len())
	r.inusePerBlb = float64(after.HeapInuse-before.HeapInuse) / float64(x.Len())
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
	b.ReportMetric(bi.inusePerBlb, "heap-inuse/blob")
	b.ReportMetric(bi.build.Seconds(), "build-s")
}

// BenchmarkIndexLookupAbsent looks up blobs that are not in the index of
// BenchmarkIndexLookup, as a backup of new data does.
func BenchmarkIndexLookupAbsent(b *testing.B) {
	bi := benchIndex()
	rnd := mrand.New(mrand.NewPCG(3, 4))
	b.ReportAllocs()
	for b.Loop() {
		if bi.x.Has(randomHandle(rnd)) {
			b.Fatal("random blob found")
		}
	}
}

// randomHandle returns a data handle of which only the first 16 ID bytes
// are random; they decide where a lookup searches.
func randomHandle(r *mrand.Rand) chunk.Handle {
	h := chunk.Handle{Kind: chunk.KindData}
	binary.LittleEndian.PutUint64(h.ID[:], r.Uint64())
	binary.LittleEndian.PutUint64(h.ID[8:], r.Uint64())
	return h
}

// BenchmarkLookupDisk builds the index of BenchmarkIndexLookup with
// NewInDir, persists it and looks blobs up in the mapped file. It reports
// the heap in use per blob after the build (spilled runs) and after
// Persist, and, where the system tells, the bytes of the mapping that
// lookups have made resident.
func BenchmarkLookupDisk(b *testing.B) {
	dir := b.TempDir()
	before := heapInuse()
	start := time.Now()
	x := NewInDir(dir)
	defer x.Close()
	sample := fillBench(x)
	build := time.Since(start)
	n := float64(x.Len())
	built := float64(heapInuse()-before) / n
	// Before Persist, the blobs are in several disk runs and the heap.
	b.Run("spilled-absent", func(b *testing.B) {
		rnd := mrand.New(mrand.NewPCG(3, 4))
		for b.Loop() {
			if x.Has(randomHandle(rnd)) {
				b.Fatal("random blob found")
			}
		}
		runs := diskRuns(x)
		b.ReportMetric(float64(runs[0]), "data-runs")
	})
	if err := x.Persist(filepath.Join(dir, "index"), nil); err != nil {
		b.Fatal(err)
	}
	persisted := float64(heapInuse()-before) / n
	data := x.disk[0][0].m.data
	report := func(b *testing.B) {
		b.ReportMetric(built, "heap-built/blob")
		b.ReportMetric(persisted, "heap-persisted/blob")
		b.ReportMetric(build.Seconds(), "build-s")
		if rss, ok := residentBytes(data); ok {
			b.ReportMetric(float64(rss)/n, "resident/blob")
		}
	}
	b.Run("present", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok := x.Lookup(sample[i%len(sample)]); !ok {
				b.Fatal("known blob not found")
			}
			i++
		}
		report(b)
	})
	b.Run("absent", func(b *testing.B) {
		// Start from nothing resident, so that what is resident at the
		// end is what the lookups touched.
		dontNeed(data)
		rnd := mrand.New(mrand.NewPCG(3, 4))
		b.ReportAllocs()
		for b.Loop() {
			if x.Has(randomHandle(rnd)) {
				b.Fatal("random blob found")
			}
		}
		report(b)
	})
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
