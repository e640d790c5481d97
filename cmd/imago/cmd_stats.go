package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/snapshot"
)

// statsLoaders is how many index files or snapshot trees stats loads at
// once: reads bound by latency, each holding one file or tree blob.
const statsLoaders = 4

// maxStatsDepth bounds directory nesting in the restore-size walk, as
// snapshot's walkers do, so a hostile tree cannot exhaust the stack.
const maxStatsDepth = 4096

func init() { moreCommands = append(moreCommands, newStatsCommand) }

// restoreSize is what restoring a tree produces.
type restoreSize struct {
	Files uint64 `json:"files"` // nodes that are not directories
	Dirs  uint64 `json:"dirs"`
	Bytes uint64 `json:"bytes"` // content of files and images, holes included
}

func (s *restoreSize) add(o restoreSize) {
	s.Files += o.Files
	s.Dirs += o.Dirs
	s.Bytes += o.Bytes
}

// blobTotals counts the distinct blobs of one kind.
type blobTotals struct {
	Count  int64 `json:"count"`
	Raw    int64 `json:"raw_bytes"`
	Stored int64 `json:"stored_bytes"`
}

// repoStats is the repository-wide result of stats.
type repoStats struct {
	MessageType      string      `json:"message_type"`
	Snapshots        int         `json:"snapshots"`
	Packs            int         `json:"packs"`
	PackBytes        int64       `json:"pack_bytes"`
	DataBlobs        blobTotals  `json:"data_blobs"`
	TreeBlobs        blobTotals  `json:"tree_blobs"`
	UniqueRawBytes   int64       `json:"unique_raw_bytes"`
	StoredBytes      int64       `json:"stored_bytes"`
	CompressionRatio float64     `json:"compression_ratio"`
	RestoreSize      restoreSize `json:"restore_size"` // of all snapshots together
	DedupRatio       float64     `json:"deduplication_ratio"`
}

func newStatsCommand(g *globalOptions) *cobra.Command {
	var f snapshotFilter
	cmd := &cobra.Command{
		Use:   "stats [SNAPSHOT...]",
		Short: "Show repository or snapshot statistics",
		Long: `Without arguments, show repository totals: snapshots, packs, distinct blobs
(raw and stored bytes), the compression ratio, the size of restoring every
snapshot, and the deduplication ratio (that size over the distinct raw data
bytes). With snapshots, show what restoring each would produce: files,
directories and bytes.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, release, err := g.openShared(ctx)
			if err != nil {
				return err
			}
			defer release()
			if len(args) > 0 {
				return snapshotStats(ctx, g, r, &f, args)
			}
			st, err := repositoryStats(ctx, r, &f)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(st)
			}
			printRepoStats(g, st)
			return nil
		},
	}
	f.addFlags(cmd.Flags())
	return cmd
}

// snapshotStats prints the restore size of each snapshot in args.
func snapshotStats(ctx context.Context, g *globalOptions, r *repo.Repository, f *snapshotFilter, args []string) error {
	sizer := newTreeSizer(r)
	var total restoreSize
	type snapStats struct {
		MessageType string `json:"message_type"`
		SnapshotID  string `json:"snapshot_id"`
		restoreSize
	}
	for _, arg := range args {
		s, err := findSnapshot(ctx, r, f, arg)
		if err != nil {
			return err
		}
		size, err := sizer.size(ctx, s.Tree, 0)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", shortID(s.ID), err)
		}
		total.add(size)
		if g.json {
			if err := g.printJSON(snapStats{"snapshot", s.ID, size}); err != nil {
				return err
			}
			continue
		}
		g.printf("snapshot %s: %d files, %d dirs, %s to restore\n", shortID(s.ID), size.Files, size.Dirs, formatBytes(int64(size.Bytes)))
	}
	if len(args) > 1 {
		if g.json {
			return g.printJSON(snapStats{"total", "", total})
		}
		g.printf("total: %d files, %d dirs, %s to restore\n", total.Files, total.Dirs, formatBytes(int64(total.Bytes)))
	}
	return nil
}

// repositoryStats gathers the repository totals. Blob sizes come from the
// index files (the in-memory index keeps no raw lengths): an entry counts
// when it is the location the in-memory index chose for its blob, so a blob
// stored twice counts once.
func repositoryStats(ctx context.Context, r *repo.Repository, f *snapshotFilter) (*repoStats, error) {
	st := &repoStats{MessageType: "summary"}
	err := r.ListFiles(ctx, backend.Pack, func(_ string, size int64) error {
		st.Packs++
		st.PackBytes += size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	var names []string
	if err := r.ListFiles(ctx, backend.Index, func(name string, _ int64) error {
		names = append(names, name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list index files: %w", err)
	}
	idx := r.Index()
	var mu sync.Mutex // guards st's blob totals
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(statsLoaders)
	for _, name := range names {
		g.Go(func() error {
			plain, err := r.LoadFile(gctx, backend.Index, name)
			if err != nil {
				return err
			}
			file, err := index.DecodeFile(plain)
			if err != nil {
				return fmt.Errorf("index file %s: %w", shortID(name), err)
			}
			var data, tree blobTotals
			for _, p := range file.Packs {
				for _, e := range p.Blobs {
					if loc, ok := idx.Lookup(e.Handle); !ok || loc != (index.Location{Pack: p.ID, Offset: e.Offset, Length: e.Length}) {
						continue
					}
					t := &data
					if e.Handle.Kind == chunk.KindTree {
						t = &tree
					}
					t.Count++
					t.Raw += int64(e.RawLength)
					t.Stored += int64(e.Length)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			addTotals(&st.DataBlobs, data)
			addTotals(&st.TreeBlobs, tree)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	st.UniqueRawBytes = st.DataBlobs.Raw + st.TreeBlobs.Raw
	st.StoredBytes = st.DataBlobs.Stored + st.TreeBlobs.Stored
	st.CompressionRatio = ratio(st.UniqueRawBytes, st.StoredBytes)

	snaps, err := loadSnapshots(ctx, r, f)
	if err != nil {
		return nil, err
	}
	st.Snapshots = len(snaps)
	sizer := newTreeSizer(r)
	sizes := make([]restoreSize, len(snaps))
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(statsLoaders)
	for i, s := range snaps {
		g.Go(func() error {
			size, err := sizer.size(gctx, s.Tree, 0)
			if err != nil {
				return fmt.Errorf("snapshot %s: %w", shortID(s.ID), err)
			}
			sizes[i] = size
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, s := range sizes {
		st.RestoreSize.add(s)
	}
	st.DedupRatio = ratio(int64(st.RestoreSize.Bytes), st.DataBlobs.Raw)
	return st, nil
}

func addTotals(dst *blobTotals, t blobTotals) {
	dst.Count += t.Count
	dst.Raw += t.Raw
	dst.Stored += t.Stored
}

// ratio returns a/b, or 0 when b is 0.
func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func printRepoStats(g *globalOptions, st *repoStats) {
	g.printf("snapshots:            %d\n", st.Snapshots)
	g.printf("packs:                %d (%s)\n", st.Packs, formatBytes(st.PackBytes))
	for _, k := range []struct {
		name string
		t    blobTotals
	}{{"data blobs:", st.DataBlobs}, {"tree blobs:", st.TreeBlobs}} {
		g.printf("%-21s %d (%s raw, %s stored)\n", k.name, k.t.Count, formatBytes(k.t.Raw), formatBytes(k.t.Stored))
	}
	g.printf("unique raw bytes:     %s\n", formatBytes(st.UniqueRawBytes))
	g.printf("stored bytes:         %s\n", formatBytes(st.StoredBytes))
	g.printf("compression ratio:    %.2fx\n", st.CompressionRatio)
	g.printf("restore size:         %s in %d files (all snapshots)\n", formatBytes(int64(st.RestoreSize.Bytes)), st.RestoreSize.Files)
	g.printf("deduplication ratio:  %.2fx\n", st.DedupRatio)
}

// treeSizer computes restore sizes, remembering the size below each tree
// blob so that what snapshots share is loaded once. It is safe for
// concurrent use; two walkers reaching the same new tree at once may both
// load it.
type treeSizer struct {
	l snapshot.ChunkLoader

	// mu guards memo: about 80 bytes per distinct tree blob.
	mu   sync.Mutex
	memo map[chunk.ID]restoreSize
}

func newTreeSizer(l snapshot.ChunkLoader) *treeSizer {
	return &treeSizer{l: l, memo: make(map[chunk.ID]restoreSize)}
}

// size returns the restore size of the nodes in tree blob id and below.
func (s *treeSizer) size(ctx context.Context, id chunk.ID, depth int) (restoreSize, error) {
	s.mu.Lock()
	got, ok := s.memo[id]
	s.mu.Unlock()
	if ok {
		return got, nil
	}
	if depth >= maxStatsDepth {
		return restoreSize{}, fmt.Errorf("tree %s: directories nested deeper than %d", id.Short(), maxStatsDepth)
	}
	if err := ctx.Err(); err != nil {
		return restoreSize{}, err
	}
	t, err := snapshot.LoadTree(ctx, s.l, []chunk.ID{id})
	if err != nil {
		return restoreSize{}, err
	}
	var sum restoreSize
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if n.Type != snapshot.TypeDir {
			sum.Files++
			if n.Type == snapshot.TypeFile || n.Type == snapshot.TypeImage {
				sum.Bytes += n.Size
			}
			continue
		}
		sum.Dirs++
		for _, sub := range n.Subtrees {
			below, err := s.size(ctx, sub, depth+1)
			if err != nil {
				return restoreSize{}, err
			}
			sum.add(below)
		}
	}
	s.mu.Lock()
	s.memo[id] = sum
	s.mu.Unlock()
	return sum, nil
}
