package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/imagobackup/imago/bench/treegen"
	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/backend/local"
	"github.com/imagobackup/imago/repo/crypto"
	"github.com/imagobackup/imago/snapshot/archive"
	"github.com/imagobackup/imago/snapshot/restore"
)

// benchTreeSize is the size of the generated tree the whole-pipeline
// benchmarks back up: IMAGO_BENCH_TREE_MIB (default 256; docs/PERFORMANCE.md
// uses 1024).
func benchTreeSize() int64 {
	if v, err := strconv.Atoi(os.Getenv("IMAGO_BENCH_TREE_MIB")); err == nil && v > 0 {
		return int64(v) << 20
	}
	return 256 << 20
}

var (
	benchTreeOnce sync.Once
	benchTreeDir  string
	benchTreeErr  error
)

// benchTree generates the benchmark tree once per process.
func benchTree(b *testing.B) string {
	benchTreeOnce.Do(func() {
		benchTreeDir, benchTreeErr = os.MkdirTemp("", "imago-bench-tree-")
		if benchTreeErr == nil {
			benchTreeErr = treegen.Generate(filepath.Join(benchTreeDir, "src"), benchTreeSize(), 1)
		}
	})
	if benchTreeErr != nil {
		b.Fatal(benchTreeErr)
	}
	return filepath.Join(benchTreeDir, "src")
}

func benchRepository(b *testing.B) *repo.Repository {
	b.Helper()
	be, err := local.Create(filepath.Join(b.TempDir(), "repo"))
	if err != nil {
		b.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, "bench", repo.InitOptions{KDF: crypto.TestKDF})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

func backupTree(b *testing.B, r *repo.Repository, src string, opts archive.Options) *archive.Result {
	b.Helper()
	ctx := context.Background()
	opts.Params = r.Config().FileParams()
	res, err := archive.Run(ctx, r, r, []string{src}, opts)
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	return res
}

// BenchmarkBackupTree measures a first backup of the generated tree into a
// new local repository (MB/s of source).
func BenchmarkBackupTree(b *testing.B) {
	src := benchTree(b)
	b.SetBytes(benchTreeSize())
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		r := benchRepository(b)
		b.StartTimer()
		backupTree(b, r, src, archive.Options{})
	}
}

// BenchmarkBackupTreeUnchanged measures a second backup of the unchanged
// tree with the first as parent: metadata only.
func BenchmarkBackupTreeUnchanged(b *testing.B) {
	src := benchTree(b)
	r := benchRepository(b)
	first := backupTree(b, r, src, archive.Options{})
	b.SetBytes(benchTreeSize())
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res := backupTree(b, r, src, archive.Options{Parent: first.Tree})
		if res.Summary.BytesRead != 0 {
			b.Fatalf("unchanged backup read %d bytes", res.Summary.BytesRead)
		}
	}
}

// BenchmarkRestoreTree measures restoring the generated tree from a local
// repository.
func BenchmarkRestoreTree(b *testing.B) {
	src := benchTree(b)
	r := benchRepository(b)
	first := backupTree(b, r, src, archive.Options{})
	b.SetBytes(benchTreeSize())
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		target := b.TempDir()
		b.StartTimer()
		if _, err := restore.Run(context.Background(), r, first.Tree, target, restore.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
