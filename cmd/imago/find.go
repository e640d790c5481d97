package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/snapshot"
)

// storedSnapshot is a snapshot record together with its ID (file name).
type storedSnapshot struct {
	ID string
	*snapshot.Snapshot
}

// snapshotFilter selects snapshots by host, tags and paths, as restic does:
// --tag a,b selects snapshots having both a and b; several --tag flags select
// snapshots matching any of them.
type snapshotFilter struct {
	hosts []string
	tags  []string
	paths []string
}

func (f *snapshotFilter) addFlags(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.hosts, "host", nil, "only snapshots of this `host` (repeatable)")
	fs.StringArrayVar(&f.tags, "tag", nil, "only snapshots with these `tags` (comma-separated: all of them; repeatable: any)")
	fs.StringArrayVar(&f.paths, "path", nil, "only snapshots of this `path` (repeatable: all of them)")
}

func (f *snapshotFilter) match(s *snapshot.Snapshot) bool {
	if len(f.hosts) > 0 {
		ok := false
		for _, h := range f.hosts {
			ok = ok || h == s.Host
		}
		if !ok {
			return false
		}
	}
	if len(f.tags) > 0 {
		ok := false
		for _, group := range f.tags {
			ok = ok || s.HasTags(splitList(group))
		}
		if !ok {
			return false
		}
	}
	if len(f.paths) > 0 {
		abs := make([]string, 0, len(f.paths))
		for _, p := range f.paths {
			if a, err := filepath.Abs(p); err == nil {
				p = a
			}
			abs = append(abs, filepath.Clean(p))
		}
		if !s.HasPaths(abs) {
			return false
		}
	}
	return true
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// loadSnapshots reads every snapshot record (in parallel) and returns those
// matching f, oldest first.
func loadSnapshots(ctx context.Context, r *repo.Repository, f *snapshotFilter) ([]storedSnapshot, error) {
	var names []string
	err := r.ListFiles(ctx, backend.Snapshot, func(name string, _ int64) error {
		names = append(names, name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	out := make([]storedSnapshot, len(names))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8) // 8 small reads in flight hide backend latency; each holds one snapshot record
	for i, name := range names {
		g.Go(func() error {
			b, err := r.LoadFile(gctx, backend.Snapshot, name)
			if err != nil {
				return err
			}
			s, err := snapshot.Decode(b)
			if err != nil {
				return fmt.Errorf("snapshot %s: %w", shortID(name), err)
			}
			out[i] = storedSnapshot{ID: name, Snapshot: s}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	sel := out[:0]
	for _, s := range out {
		if f == nil || f.match(s.Snapshot) {
			sel = append(sel, s)
		}
	}
	sort.SliceStable(sel, func(i, j int) bool {
		if !sel[i].Time.Equal(sel[j].Time) {
			return sel[i].Time.Before(sel[j].Time)
		}
		return sel[i].ID < sel[j].ID
	})
	return sel, nil
}

// findSnapshot resolves "latest", a full ID or a unique ID prefix, among the
// snapshots matching f.
func findSnapshot(ctx context.Context, r *repo.Repository, f *snapshotFilter, arg string) (storedSnapshot, error) {
	if arg == "latest" {
		snaps, err := loadSnapshots(ctx, r, f)
		if err != nil {
			return storedSnapshot{}, err
		}
		if len(snaps) == 0 {
			return storedSnapshot{}, fmt.Errorf("no snapshot matches the filter")
		}
		return snaps[len(snaps)-1], nil
	}
	name, err := r.FindFile(ctx, backend.Snapshot, arg)
	if err != nil {
		return storedSnapshot{}, fmt.Errorf("snapshot %s: %w", arg, err)
	}
	b, err := r.LoadFile(ctx, backend.Snapshot, name)
	if err != nil {
		return storedSnapshot{}, err
	}
	s, err := snapshot.Decode(b)
	if err != nil {
		return storedSnapshot{}, fmt.Errorf("snapshot %s: %w", shortID(name), err)
	}
	return storedSnapshot{ID: name, Snapshot: s}, nil
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
