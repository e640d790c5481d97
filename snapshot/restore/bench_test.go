package restore

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/imagobackup/imago/snapshot"
)

// BenchmarkRestore restores a 256 MiB tree (64 files of 4 MiB in 1 MiB
// chunks, the average chunk size) from a MemStore to a temporary directory.
// The chunks are drawn from 16 distinct ones so the store stays small; every
// file is still written in full.
func BenchmarkRestore(b *testing.B) {
	const (
		mib      = 1 << 20
		files    = 64
		perFile  = 4
		distinct = 16
	)
	pool := make([][]byte, distinct)
	for i := range pool {
		pool[i] = randomBytes(uint64(1000+i), mib)
	}
	var entries []entry
	for i := range files {
		var parts []part
		for j := range perFile {
			parts = append(parts, part{data: pool[(i*perFile+j)%distinct]})
		}
		entries = append(entries, entry{path: fmt.Sprintf("/data/d%d/f%02d", i%4, i), typ: snapshot.TypeFile,
			mode: 0o644, parts: parts, chunk: mib})
	}
	s := snapshot.NewMemStore()
	root := buildSnapshot(b, s, entries)

	for _, verify := range []bool{false, true} {
		b.Run(fmt.Sprintf("verify=%v", verify), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(files * perFile * mib)
			dir := b.TempDir()
			for i := 0; b.Loop(); i++ {
				target := fmt.Sprintf("%s/%d", dir, i)
				if _, err := Run(context.Background(), s, root, target, Options{Verify: verify}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := os.RemoveAll(target); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
