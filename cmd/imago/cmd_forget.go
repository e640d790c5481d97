package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/snapshot/retention"
)

func init() { moreCommands = append(moreCommands, newForgetCommand) }

// forgetOptions holds the flags of the forget command.
type forgetOptions struct {
	policy               retention.Policy
	keepTags             []string
	groupBy              string
	filter               snapshotFilter
	dryRun               bool
	unsafeAllowRemoveAll bool
	prune                bool
	pruneOpts            pruneOptions
}

func newForgetCommand(g *globalOptions) *cobra.Command {
	o := forgetOptions{}
	cmd := &cobra.Command{
		Use:   "forget [flags] [SNAPSHOT...]",
		Short: "Remove snapshots by a retention policy or by ID",
		Long: `Remove snapshots that a retention policy does not keep, or the snapshots
named on the command line (IDs, unique ID prefixes, or "latest").

Snapshots are grouped (by default by host and paths) and the policy is applied
to each group separately. Counts keep the newest snapshot of each of the N
newest hours, days, ISO weeks, months or years that have a snapshot, in the
local time zone (set TZ to choose another); -1 means unlimited. Durations are
calendar durations such as 7d, 6m, 1y6m or 2d12h, counted back from the
newest snapshot of the group. The rules are specified in docs/RETENTION.md.

Only the snapshot files are removed; use --prune (or run prune later) to
free the space their data used.`,
		Example: `  imago forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run
  imago forget --keep-within 30d --keep-tag release --prune
  imago forget 3f2a1b9c`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runForget(cmd.Context(), g, &o, args)
		},
	}
	f := cmd.Flags()
	p := &o.policy
	f.IntVarP(&p.Last, "keep-last", "l", 0, "keep the `n` newest snapshots (-1: all)")
	f.IntVarP(&p.Hourly, "keep-hourly", "H", 0, "keep the newest snapshot of each of the `n` newest hours (-1: all)")
	f.IntVarP(&p.Daily, "keep-daily", "d", 0, "keep the newest snapshot of each of the `n` newest days (-1: all)")
	f.IntVarP(&p.Weekly, "keep-weekly", "w", 0, "keep the newest snapshot of each of the `n` newest ISO weeks (-1: all)")
	f.IntVarP(&p.Monthly, "keep-monthly", "m", 0, "keep the newest snapshot of each of the `n` newest months (-1: all)")
	f.IntVarP(&p.Yearly, "keep-yearly", "y", 0, "keep the newest snapshot of each of the `n` newest years (-1: all)")
	f.Var(durationFlag{&p.Within}, "keep-within", "keep every snapshot newer than the newest minus `duration` (e.g. 30d, 1y6m)")
	f.Var(durationFlag{&p.WithinHourly}, "keep-within-hourly", "keep the newest snapshot of each hour within `duration`")
	f.Var(durationFlag{&p.WithinDaily}, "keep-within-daily", "keep the newest snapshot of each day within `duration`")
	f.Var(durationFlag{&p.WithinWeekly}, "keep-within-weekly", "keep the newest snapshot of each ISO week within `duration`")
	f.Var(durationFlag{&p.WithinMonthly}, "keep-within-monthly", "keep the newest snapshot of each month within `duration`")
	f.Var(durationFlag{&p.WithinYearly}, "keep-within-yearly", "keep the newest snapshot of each year within `duration`")
	f.StringArrayVar(&o.keepTags, "keep-tag", nil, "keep snapshots with these `tags` (comma-separated: all of them; repeatable: any)")
	f.StringVarP(&o.groupBy, "group-by", "g", retention.DefaultGrouping.String(), "apply the policy per group of `fields` (host, paths, tags, kind; \"\" for one group)")
	f.BoolVarP(&o.dryRun, "dry-run", "n", false, "print what would be removed, remove nothing")
	f.BoolVar(&o.unsafeAllowRemoveAll, "unsafe-allow-remove-all", false, "with no policy, remove every selected snapshot")
	f.BoolVar(&o.prune, "prune", false, "run prune after removing snapshots")
	o.filter.addFlags(f)
	addPruneFlags(f, &o.pruneOpts)
	return cmd
}

// durationFlag adapts a retention.Duration to pflag.Value; the zero
// duration prints as "" so that help texts show no default.
type durationFlag struct{ d *retention.Duration }

func (f durationFlag) String() string {
	if f.d == nil || f.d.IsZero() {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error { return f.d.Set(s) }

func (f durationFlag) Type() string { return "duration" }

// forgetGroup is the decision for one group of snapshots.
type forgetGroup struct {
	key    retention.Key
	named  bool // the snapshots were named on the command line
	keep   []forgetEntry
	remove []forgetEntry
}

// forgetEntry is one snapshot and the reasons it is kept (none if removed).
type forgetEntry struct {
	snap    storedSnapshot
	reasons []string
}

func runForget(ctx context.Context, g *globalOptions, o *forgetOptions, args []string) error {
	for _, t := range o.keepTags {
		tags := splitList(t)
		if len(tags) == 0 {
			return fmt.Errorf("--keep-tag %q names no tag", t)
		}
		o.policy.Tags = append(o.policy.Tags, tags)
	}
	if err := o.policy.Validate(); err != nil {
		return err
	}
	by, err := retention.ParseGrouping(o.groupBy)
	if err != nil {
		return fmt.Errorf("--group-by: %w", err)
	}
	filtered := len(o.filter.hosts)+len(o.filter.tags)+len(o.filter.paths) > 0
	switch {
	case len(args) > 0 && !o.policy.Empty():
		return errors.New("snapshot IDs cannot be combined with a policy (--keep-*)")
	case len(args) > 0 && filtered:
		return errors.New("snapshot IDs cannot be combined with --host, --tag or --path")
	case len(args) == 0 && o.policy.Empty() && !o.unsafeAllowRemoveAll:
		return errors.New("no policy given: use --keep-* options, name snapshots to remove, or --unsafe-allow-remove-all to remove every selected snapshot")
	}

	r, err := g.openRepository(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	// Removing snapshots needs the exclusive lock; a dry run only reads.
	// The lock is released before --prune, which takes its own locks.
	release, err := g.lockRepository(ctx, r, !o.dryRun)
	if err != nil {
		return err
	}
	locked := true
	unlock := func() {
		if locked {
			locked = false
			release()
		}
	}
	defer unlock()

	var groups []forgetGroup
	if len(args) > 0 {
		grp, err := namedSnapshots(ctx, r, args)
		if err != nil {
			return err
		}
		groups = []forgetGroup{grp}
	} else {
		snaps, err := loadSnapshots(ctx, r, &o.filter)
		if err != nil {
			return err
		}
		g.printf("Applying policy: %s\n", o.policy)
		groups = applyPolicy(snaps, o.policy, by, o.policy.Empty(), time.Now(), time.Local)
	}

	if g.json {
		if err := g.printJSON(forgetJSON(groups)); err != nil {
			return err
		}
	} else if !g.quiet {
		printForget(g.stdout, groups)
	}

	var doomed []string
	for _, grp := range groups {
		for _, e := range grp.remove {
			doomed = append(doomed, e.snap.ID)
		}
	}
	if o.dryRun {
		g.printf("would remove %d snapshots (dry run)\n", len(doomed))
		if o.prune && len(doomed) > 0 {
			g.printf("prune skipped in a dry run: its plan depends on the snapshots removed first\n")
		}
		return nil
	}
	if err := removeSnapshots(ctx, g, r, doomed); err != nil {
		return err
	}
	g.printf("removed %d snapshots\n", len(doomed))
	if o.prune && len(doomed) > 0 {
		unlock()
		return runPrune(ctx, g, r, &o.pruneOpts)
	}
	return nil
}

// namedSnapshots resolves the IDs, prefixes or "latest" on the command line
// into one group of snapshots to remove; every name must resolve before
// anything is removed.
func namedSnapshots(ctx context.Context, r *repo.Repository, args []string) (forgetGroup, error) {
	grp := forgetGroup{named: true}
	seen := map[string]bool{}
	for _, a := range args {
		s, err := findSnapshot(ctx, r, &snapshotFilter{}, a)
		if err != nil {
			return forgetGroup{}, err
		}
		if !seen[s.ID] {
			seen[s.ID] = true
			grp.remove = append(grp.remove, forgetEntry{snap: s})
		}
	}
	return grp, nil
}

// applyPolicy groups snaps and decides each group; removeAll removes every
// snapshot instead (the empty policy with --unsafe-allow-remove-all).
func applyPolicy(snaps []storedSnapshot, p retention.Policy, by retention.Grouping, removeAll bool, now time.Time, loc *time.Location) []forgetGroup {
	byID := make(map[string]storedSnapshot, len(snaps))
	items := make([]retention.Item, 0, len(snaps))
	for _, s := range snaps {
		byID[s.ID] = s
		items = append(items, retention.Item{ID: s.ID, Time: s.Time, Host: s.Host, Paths: s.Paths, Tags: s.Tags, Kind: string(s.Kind)})
	}
	var out []forgetGroup
	for _, grp := range retention.GroupBy(items, by) {
		fg := forgetGroup{key: grp.Key}
		keep, remove := retention.Apply(grp.Items, p, now, loc)
		if removeAll {
			keep, remove = nil, append(keep, remove...)
		}
		for _, d := range keep {
			fg.keep = append(fg.keep, forgetEntry{snap: byID[d.ID], reasons: d.Reasons})
		}
		for _, d := range remove {
			fg.remove = append(fg.remove, forgetEntry{snap: byID[d.ID]})
		}
		out = append(out, fg)
	}
	return out
}

// removeSnapshots removes the snapshot files named ids.
func removeSnapshots(ctx context.Context, g *globalOptions, r *repo.Repository, ids []string) error {
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(8) // small deletes: 8 in flight hide backend latency
	for _, id := range ids {
		eg.Go(func() error {
			if err := r.RemoveFile(ectx, backend.Snapshot, id); err != nil {
				return fmt.Errorf("remove snapshot %s: %w", shortID(id), err)
			}
			g.verbosef(1, "removed snapshot %s\n", shortID(id))
			return nil
		})
	}
	return eg.Wait()
}

// forgetGroupJSON is the --json form of one group.
type forgetGroupJSON struct {
	Group  map[string]any       `json:"group"`
	Keep   []forgetSnapshotJSON `json:"keep"`
	Remove []forgetSnapshotJSON `json:"remove"`
}

// forgetSnapshotJSON is a snapshot with the reasons it is kept.
type forgetSnapshotJSON struct {
	snapshotJSON
	Reasons []string `json:"reasons,omitempty"`
}

func forgetJSON(groups []forgetGroup) []forgetGroupJSON {
	out := make([]forgetGroupJSON, 0, len(groups))
	for _, grp := range groups {
		j := forgetGroupJSON{Group: groupKeyJSON(grp.key), Keep: []forgetSnapshotJSON{}, Remove: []forgetSnapshotJSON{}}
		for _, e := range grp.keep {
			j.Keep = append(j.Keep, forgetSnapshotJSON{snapshotJSON: toSnapshotJSON(e.snap), Reasons: e.reasons})
		}
		for _, e := range grp.remove {
			j.Remove = append(j.Remove, forgetSnapshotJSON{snapshotJSON: toSnapshotJSON(e.snap)})
		}
		out = append(out, j)
	}
	return out
}

// groupKeyJSON holds only the fields grouped by.
func groupKeyJSON(k retention.Key) map[string]any {
	m := map[string]any{}
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	if k.By.Host {
		m["host"] = k.Host
	}
	if k.By.Paths {
		m["paths"] = nonNil(k.Paths)
	}
	if k.By.Tags {
		m["tags"] = nonNil(k.Tags)
	}
	if k.By.Kind {
		m["kind"] = k.Kind
	}
	return m
}

// printForget writes the human form: per group, the kept snapshots with
// their reasons and the removed ones, newest first.
func printForget(w io.Writer, groups []forgetGroup) {
	for i, grp := range groups {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if grp.named {
			fmt.Fprintf(w, "remove %d named snapshots:\n", len(grp.remove))
			printForgetTable(w, grp.remove, false)
			continue
		}
		fmt.Fprintf(w, "snapshots of %s:\n", grp.key)
		if len(grp.keep) > 0 {
			fmt.Fprintf(w, "keep %d snapshots:\n", len(grp.keep))
			printForgetTable(w, grp.keep, true)
		}
		if len(grp.remove) > 0 {
			fmt.Fprintf(w, "remove %d snapshots:\n", len(grp.remove))
			printForgetTable(w, grp.remove, false)
		}
	}
}

func printForgetTable(w io.Writer, entries []forgetEntry, reasons bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if reasons {
		fmt.Fprintln(tw, "ID\tTime\tHost\tTags\tReasons\tPaths")
	} else {
		fmt.Fprintln(tw, "ID\tTime\tHost\tTags\tPaths")
	}
	for _, e := range entries {
		s := e.snap
		cols := []string{shortID(s.ID), s.Time.Local().Format("2006-01-02 15:04:05"), s.Host, strings.Join(s.Tags, ",")}
		if reasons {
			cols = append(cols, strings.Join(e.reasons, ", "))
		}
		cols = append(cols, strings.Join(s.Paths, ","))
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	tw.Flush()
}
