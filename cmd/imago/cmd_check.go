package main

import (
	"context"
	"fmt"
	"slices"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/snapshot"
)

// snapshotWalkers is how many snapshots check walks at once. A walk loads
// one tree blob at a time (at most pack.MaxBlobSize each), so four keep a
// remote backend busy at a cost of a few MiB.
const snapshotWalkers = 4

func init() { moreCommands = append(moreCommands, newCheckCommand) }

func newCheckCommand(g *globalOptions) *cobra.Command {
	var readData bool
	var subset string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the repository for damage",
		Long: `Check the repository: every index file loads, every indexed pack exists with
the right size and a header that agrees with the index, and every blob that a
snapshot uses is indexed and in an undamaged pack. With --read-data, every
pack is downloaded and every blob opened and verified; --read-data-subset
reads only a part of the packs: "n/t" (group n of t, so that 1/t … t/t over
t runs read everything) or "p%" (a random share).

Packs that no index lists are warnings (an interrupted backup leaves them;
"repair index" adds them, prune removes them). The exit code is 1 when
anything is damaged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			opts := repo.CheckOptions{ReadData: readData, Progress: &repo.CheckProgress{}}
			if subset != "" {
				s, err := repo.ParseSubset(subset)
				if err != nil {
					return err
				}
				opts.ReadData, opts.Subset = true, s
			}
			r, err := g.openRepositoryWith(ctx, true)
			if err != nil {
				return err
			}
			defer r.Close()
			unlock, err := g.lockRepository(ctx, r, false)
			if err != nil {
				return err
			}
			defer unlock()
			opts.Used = func(ctx context.Context, u *repo.UsedSet) error { return walkUsed(ctx, r, u) }

			switch {
			case opts.ReadData && opts.Subset != (repo.Subset{}):
				g.printf("checking the structure and reading data subset %s\n", opts.Subset)
			case opts.ReadData:
				g.printf("checking the structure and reading all data\n")
			default:
				g.printf("checking the structure (use --read-data to verify every byte)\n")
			}
			pr := g.startProgress(func() progressState {
				p := opts.Progress
				return progressState{FilesDone: p.PacksDone.Load(), FilesTotal: p.PacksTotal.Load(), BytesDone: p.BytesRead.Load()}
			})
			rep, err := repo.Check(ctx, r, opts)
			pr.Stop()
			if err != nil {
				return err
			}
			if g.json {
				if err := g.printJSON(struct {
					MessageType string `json:"message_type"`
					*repo.CheckReport
				}{"summary", rep}); err != nil {
					return err
				}
			} else {
				printCheckReport(g, rep)
			}
			if !rep.OK() {
				return fmt.Errorf("repository has %d errors", len(rep.Errors))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&readData, "read-data", false, "download every pack and verify every blob")
	cmd.Flags().StringVar(&subset, "read-data-subset", "", "read only a `subset` of the packs: n/t or p%")
	return cmd
}

// printCheckReport prints the report for humans: warnings and errors go to
// stderr (errors also with --quiet), the counts to stdout.
func printCheckReport(g *globalOptions, rep *repo.CheckReport) {
	if !g.quiet {
		for _, w := range rep.Warnings {
			g.warnf("warning: %s\n", w)
		}
	}
	for _, e := range rep.Errors {
		g.warnf("error: %s\n", e)
	}
	g.printf("%d index files, %d packs, %d blobs; %d snapshots use %d blobs\n",
		rep.IndexFiles, rep.Packs, rep.Blobs, rep.Snapshots, rep.UsedBlobs)
	if rep.PacksRead > 0 {
		g.printf("read %d packs, %s\n", rep.PacksRead, formatBytes(rep.BytesRead))
	}
	if len(rep.UnindexedPacks) > 0 {
		g.printf("%d packs are in no index (not damage)\n", len(rep.UnindexedPacks))
	}
	if rep.OK() {
		g.printf("no errors were found\n")
		return
	}
	g.printf("damaged: %d packs, %d blobs, %d blobs missing from the index, %d snapshots:\n",
		len(rep.DamagedPacks), len(rep.DamagedBlobs), len(rep.MissingBlobs), len(rep.DamagedSnapshots))
	for _, s := range rep.DamagedSnapshots {
		g.printf("  snapshot %s is damaged\n", shortID(s))
	}
	if len(rep.DamagedSnapshots) > 0 {
		g.printf("(a snapshot that reaches the damage only through a directory it shares with a listed one is not listed)\n")
	}
}

// walkUsed reports to u every blob each snapshot references, walking
// snapshotWalkers snapshots at once with u as the shared seen-set, so what
// snapshots share is walked once. A snapshot record or a tree that fails to
// load is reported to u as damage of that snapshot, and the walk goes on
// with the others; only a cancelled ctx or a failed listing stops it.
func walkUsed(ctx context.Context, r *repo.Repository, u *repo.UsedSet) error {
	var names []string
	err := r.ListFiles(ctx, backend.Snapshot, func(name string, _ int64) error {
		names = append(names, name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	slices.Sort(names)
	bases := snapshot.NewBaseSet() // shared as u is (snapshot.BlobsWithBases)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(snapshotWalkers)
	for _, name := range names {
		g.Go(func() error {
			err := walkSnapshot(gctx, r, name, u, bases)
			if err != nil && gctx.Err() != nil {
				return gctx.Err()
			}
			if err != nil {
				u.Damaged(name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// walkSnapshot loads snapshot name and marks every blob it references.
func walkSnapshot(ctx context.Context, r *repo.Repository, name string, u *repo.UsedSet, bases *snapshot.BaseSet) error {
	b, err := r.LoadFile(ctx, backend.Snapshot, name)
	if err != nil {
		return err
	}
	s, err := snapshot.Decode(b)
	if err != nil {
		return err
	}
	return snapshot.BlobsWithBases(ctx, r, s.Tree,
		func(h chunk.Handle) bool { return u.Mark(name, h) }, bases,
		func(chunk.Handle) error { return nil })
}
