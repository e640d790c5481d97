package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/snapshot"
)

func init() { moreCommands = append(moreCommands, newPruneCommand) }

// pruneOptions are the prune flags, shared with `forget --prune`.
type pruneOptions struct {
	maxUnused     string
	maxRepackSize string
	dryRun        bool
}

// addPruneFlags registers the flags that tune a prune on fs. --dry-run is
// registered by each command, as forget has its own.
func addPruneFlags(fs *pflag.FlagSet, o *pruneOptions) {
	fs.StringVar(&o.maxUnused, "max-unused", "5%", "leave at most this `percentage` of the repository unused after the prune, as restic does (\"unlimited\": repack nothing)")
	fs.StringVar(&o.maxRepackSize, "max-repack-size", "unlimited", "repack at most this `size` of packs (e.g. 500M, 2G)")
}

func newPruneCommand(g *globalOptions) *cobra.Command {
	var o pruneOptions
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove data that no snapshot uses",
		Long: `Remove the data that no snapshot uses any more.

prune marks every blob the snapshots use, deletes the packs holding none of
them, and repacks the packs that are only partly used once their unused
share is over --max-unused. Backups keep running while prune plans and
repacks; they wait only for its short final step, which replaces index files
under an exclusive lock. prune can be interrupted at any moment: the next
prune finishes the job.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := g.openRepository(cmd.Context())
			if err != nil {
				return err
			}
			defer r.Close()
			return runPrune(cmd.Context(), g, r, &o)
		},
	}
	addPruneFlags(cmd.Flags(), &o)
	cmd.Flags().BoolVarP(&o.dryRun, "dry-run", "n", false, "only show what would be deleted, repacked and kept")
	return cmd
}

// pruneExclusiveWait is how long prune's final step waits, unless
// --retry-lock says otherwise, for the backups running beside it to end.
// Backups usually take minutes to hours; giving up earlier would waste the
// repacking already done.
const pruneExclusiveWait = time.Hour

// pruneTestPause names the environment variable that makes prune stop at a
// step, for the crash tests only: "STEP" or "STEP:N" (the N-th event of
// STEP, default 1), with STEP one of repo's PruneStep values or "planned".
// prune then prints "imago-test-pause STEP" on stderr and sleeps until it
// is killed, or, when pruneTestResume names a file, until that file exists.
// Neither variable is documented for users.
const (
	pruneTestPause  = "IMAGO_TEST_PRUNE_PAUSE"
	pruneTestResume = "IMAGO_TEST_PRUNE_RESUME"
)

// runPrune plans and executes a prune of r, which is open and holds no
// lock. It takes a shared lock for planning and repacking, so backups run
// meanwhile, and an exclusive one for the final step.
func runPrune(ctx context.Context, g *globalOptions, r *repo.Repository, o *pruneOptions) error {
	if g.noLock {
		return errors.New("prune cannot run with --no-lock")
	}
	opts, err := o.repoOptions()
	if err != nil {
		return err
	}
	shared, err := r.Lock(ctx, false, repo.LockOptions{Retry: g.retryLock})
	if err != nil {
		return err
	}
	defer unlockQuietly(g, shared)

	start := time.Now()
	w := &liveWalker{r: r, walked: make(map[string]bool), bases: snapshot.NewBaseSet()}
	g.printf("marking the blobs that snapshots use\n")
	pr := g.startProgress(func() progressState {
		return progressState{FilesDone: w.snapshots.Load(), Extra: fmt.Sprintf("%d blobs used", w.blobs.Load())}
	})
	plan, err := repo.PlanPrune(ctx, r, w.live, opts)
	pr.Stop()
	if err != nil {
		return err
	}
	sum := plan.Summary()
	if !g.json {
		printPrunePlan(g, w.snapshots.Load(), sum)
	}
	if o.dryRun {
		if g.json {
			return g.printJSON(pruneJSON{MessageType: "summary", DryRun: true, Snapshots: w.snapshots.Load(), Plan: sum,
				BytesReadMetadata: r.Stats().BytesDownloaded})
		}
		g.printf("read:         %s of metadata\n", formatBytes(r.Stats().BytesDownloaded))
		g.printf("dry run: nothing changed\n")
		return nil
	}
	pause := newTestPause(g)
	pause.at("planned", 1)

	wait := g.retryLock
	if wait == 0 {
		wait = pruneExclusiveWait
	}
	opts.Exclusive = func(ctx context.Context) (func(), error) {
		unlockQuietly(g, shared)
		g.printf("waiting for running backups to finish (up to %v), then removing\n", wait)
		l, err := r.Lock(ctx, true, repo.LockOptions{Retry: wait})
		if err != nil {
			return nil, err
		}
		return func() { unlockQuietly(g, l) }, nil
	}
	opts.Report = func(ev repo.PruneEvent) {
		switch {
		case ev.Step == repo.PruneStepRepack && ev.Done == 1:
			g.printf("repacking %d packs\n", ev.Total)
		case ev.Step == repo.PruneStepRemovePack && ev.Done == 1:
			g.printf("removing %d packs\n", ev.Total)
		}
		g.verbosef(1, "%s %d/%d\n", ev.Step, ev.Done, ev.Total)
		pause.at(string(ev.Step), ev.Done)
	}
	res, err := plan.Execute(ctx, r, w.live, opts)
	if err != nil {
		return err
	}
	// Every byte the repository loaded that repacking did not is metadata:
	// index files, snapshots, trees and content lists, locks.
	metadata := r.Stats().BytesDownloaded - res.BytesReadRepack
	if g.json {
		return g.printJSON(pruneJSON{MessageType: "summary", Snapshots: w.snapshots.Load(), Plan: sum, Result: &res,
			BytesReadMetadata: metadata, DurationSeconds: time.Since(start).Seconds()})
	}
	g.printf("read:         %s of metadata, %s of %d packs to repack (%d ranged reads)\n",
		formatBytes(metadata), formatBytes(res.BytesReadRepack), sum.PacksRepack, res.RepackLoads)
	g.printf("prune done: removed %d packs (%s) and %d index files, wrote %d packs, kept %d packs needed by new snapshots, in %s\n",
		res.PacksRemoved, formatBytes(res.BytesRemoved), res.IndexFilesRemoved, res.PacksWritten, res.PacksRescued,
		formatDuration(time.Since(start).Seconds()))
	return nil
}

// pruneJSON is the --json summary of prune.
type pruneJSON struct {
	MessageType string            `json:"message_type"`
	DryRun      bool              `json:"dry_run"`
	Snapshots   int64             `json:"snapshots"`
	Plan        repo.PruneSummary `json:"plan"`
	Result      *repo.PruneResult `json:"result,omitempty"`
	// BytesReadMetadata counts the bytes loaded from the repository since
	// it was opened, other than those of the packs repacked
	// (Result.BytesReadRepack): index files, snapshots, trees, locks.
	BytesReadMetadata int64   `json:"bytes_read_metadata"`
	DurationSeconds   float64 `json:"duration_seconds,omitempty"`
}

func printPrunePlan(g *globalOptions, snapshots int64, s repo.PruneSummary) {
	g.printf("snapshots:    %d\n", snapshots)
	g.printf("used:         %d blobs, %s\n", s.BlobsUsed, formatBytes(s.BytesUsed))
	g.printf("unused:       %d blobs, %s\n", s.BlobsUnused, formatBytes(s.BytesUnused))
	g.printf("to delete:    %d packs, %s\n", s.PacksDelete, formatBytes(s.BytesDelete))
	g.printf("to repack:    %d packs, %s (reading %s in %d ranges, copying %s)\n", s.PacksRepack, formatBytes(s.BytesRepack),
		formatBytes(s.BytesRepackRead), s.RepackLoads, formatBytes(s.BytesRepackCopy))
	g.printf("to keep:      %d packs, %s\n", s.PacksKeep, formatBytes(s.BytesKeep))
	g.printf("unindexed:    %d packs, %s (deleted unless indexed by the final step)\n", s.PacksUnindexed, formatBytes(s.BytesUnindexed))
	g.printf("index files:  %d to replace\n", s.IndexFilesReplace)
	g.printf("repository:   %s now, %s after the prune\n", formatBytes(s.BytesBefore), formatBytes(s.BytesAfter))
}

func unlockQuietly(g *globalOptions, l *repo.Lock) {
	// Unlock with a fresh context: the command's may be cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Unlock(ctx); err != nil {
		g.warnf("warning: remove lock: %v\n", err)
	}
}

// repoOptions parses the flags.
func (o *pruneOptions) repoOptions() (repo.PruneOptions, error) {
	var opts repo.PruneOptions
	switch s := strings.TrimSpace(o.maxUnused); s {
	case "unlimited":
		opts.MaxUnused = math.Inf(1)
	default:
		v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if err != nil || v < 0 || math.IsNaN(v) {
			return opts, fmt.Errorf("invalid --max-unused %q: want a percentage such as 5%% or \"unlimited\"", o.maxUnused)
		}
		opts.MaxUnused = v
	}
	if s := strings.TrimSpace(o.maxRepackSize); s != "" && s != "unlimited" {
		n, err := parseSize(s)
		if err != nil || n <= 0 {
			return opts, fmt.Errorf("invalid --max-repack-size %q: want a size such as 500M or 2G, or \"unlimited\"", o.maxRepackSize)
		}
		opts.MaxRepackSize = n
	}
	return opts, nil
}

// liveWalkers is how many snapshots the live set walks at once. Each
// holds one tree per level of nesting it is in (a few MiB at most) and
// waits for one blob load at a time; 4 keep a remote backend busy.
const liveWalkers = 4

// liveWalker is the repo.LiveSet of a repository: it walks every snapshot
// with snapshot.BlobsWithBases. It remembers the snapshots it walked, so that the
// second call (under prune's exclusive lock) walks only the new ones.
type liveWalker struct {
	r *repo.Repository
	// bases are the delta pages' bases marked without their data, shared
	// by every walk (both calls) as mark is (snapshot.BlobsWithBases).
	bases     *snapshot.BaseSet
	snapshots atomic.Int64 // snapshots walked
	blobs     atomic.Int64 // blobs marked

	// mu guards walked, the names of the snapshots walked.
	mu     sync.Mutex
	walked map[string]bool
}

// live marks the blobs of every snapshot not walked before. It lists the
// snapshots before refreshing the index, as repo.LiveSet asks: a backup
// stores its index files before its snapshot.
func (w *liveWalker) live(ctx context.Context, mark func(chunk.Handle) bool) error {
	var names []string
	err := w.r.ListFiles(ctx, backend.Snapshot, func(name string, _ int64) error {
		names = append(names, name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	if _, err := w.r.RefreshIndex(ctx); err != nil {
		return err
	}
	seen := func(h chunk.Handle) bool {
		if mark(h) {
			w.blobs.Add(1)
			return false
		}
		return true
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(liveWalkers)
	for _, name := range names {
		w.mu.Lock()
		done := w.walked[name]
		w.mu.Unlock()
		if done {
			continue
		}
		g.Go(func() error {
			b, err := w.r.LoadFile(gctx, backend.Snapshot, name)
			if errors.Is(err, backend.ErrNotExist) {
				return nil // forgotten since the listing
			}
			if err != nil {
				return err
			}
			s, err := snapshot.Decode(b)
			if err != nil {
				return fmt.Errorf("snapshot %s: %w", shortID(name), err)
			}
			err = snapshot.BlobsWithBases(gctx, w.r, s.Tree, seen, w.bases, func(chunk.Handle) error { return nil })
			if err != nil {
				return fmt.Errorf("snapshot %s: %w", shortID(name), err)
			}
			w.mu.Lock()
			w.walked[name] = true
			w.mu.Unlock()
			w.snapshots.Add(1)
			return nil
		})
	}
	return g.Wait()
}

// testPause implements pruneTestPause and pruneTestResume.
type testPause struct {
	g      *globalOptions
	step   string
	n      int
	resume string
}

func newTestPause(g *globalOptions) *testPause {
	v := os.Getenv(pruneTestPause)
	if v == "" {
		return &testPause{}
	}
	step, num, _ := strings.Cut(v, ":")
	n, err := strconv.Atoi(num)
	if err != nil {
		n = 1
	}
	return &testPause{g: g, step: step, n: n, resume: os.Getenv(pruneTestResume)}
}

// at stops the process for good if it is the step to pause at.
func (p *testPause) at(step string, done int) {
	if p.step == "" || p.step != step || p.n != done {
		return
	}
	fmt.Fprintf(p.g.stderr, "imago-test-pause %s\n", step)
	for {
		if p.resume != "" {
			if _, err := os.Stat(p.resume); err == nil {
				return
			}
		}
		// Poll every 20 ms: the tests wait on it.
		time.Sleep(20 * time.Millisecond)
	}
}
