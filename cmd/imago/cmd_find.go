package main

import (
	"context"
	"fmt"
	"path"
	"time"

	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/diskfs"
	"github.com/imagobackup/imago/snapshot/imageio"
)

func init() { moreCommands = append(moreCommands, newFindCommand) }

// findMatch is one match, also the --json form.
type findMatch struct {
	StructType string `json:"struct_type"`
	SnapshotID string `json:"snapshot_id"`
	Time       string `json:"time"`
	Partition  *int   `json:"partition,omitempty"`
	Path       string `json:"path"`
	Type       string `json:"type"`
	Size       int64  `json:"size"`
	MTime      string `json:"mtime"`
}

func newFindCommand(g *globalOptions) *cobra.Command {
	var f snapshotFilter
	var inside bool
	cmd := &cobra.Command{
		Use:   "find PATTERN [SNAPSHOT...]",
		Short: "Find files by name in snapshots (with --inside: inside image snapshots)",
		Long: `Find files whose name matches the glob PATTERN ("*.conf", "report-202?.pdf";
a pattern holding a slash is matched against the whole path) in the given
snapshots, or in every snapshot matching the filters, oldest first.

With --inside, the file systems inside image snapshots (ext2/3/4, FAT and NTFS on
any MBR or GPT partition) are searched instead, read straight from the
snapshot without restoring it: which night's disk still had the file? Paths
are printed as PARTITION:PATH.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			pattern := args[0]
			if _, err := path.Match(pattern, ""); err != nil {
				return fmt.Errorf("pattern %q: %w", pattern, err)
			}
			r, release, err := g.openShared(ctx)
			if err != nil {
				return err
			}
			defer release()
			var snaps []storedSnapshot
			if len(args) > 1 {
				for _, a := range args[1:] {
					s, err := findSnapshot(ctx, r, &f, a)
					if err != nil {
						return err
					}
					snaps = append(snaps, s)
				}
			} else if snaps, err = loadSnapshots(ctx, r, &f); err != nil {
				return err
			}
			x := &finder{g: g, r: r, pattern: pattern, cache: imageio.NewCache(insideCacheBytes)}
			for _, s := range snaps {
				isImage := s.Kind == snapshot.KindImage
				switch {
				case inside && isImage:
					err = x.inImage(ctx, s)
				case !inside && !isImage:
					err = x.inTree(ctx, s)
				default:
					g.verbosef(1, "snapshot %s skipped (%s)\n", shortID(s.ID), map[bool]string{true: "an image: use --inside", false: "not an image"}[isImage])
					continue
				}
				if err != nil {
					return err
				}
			}
			if !g.json {
				g.verbosef(1, "%d matches\n", x.matches)
			}
			if x.errors > 0 {
				return fmt.Errorf("%d errors while searching", x.errors)
			}
			return nil
		},
	}
	f.addFlags(cmd.Flags())
	cmd.Flags().BoolVar(&inside, "inside", false, "search the file systems inside image snapshots")
	return cmd
}

type finder struct {
	g       *globalOptions
	r       *repo.Repository
	pattern string
	cache   *imageio.Cache // shared by all images: their unchanged metadata chunks dedup
	matches int
	errors  int
}

func (x *finder) print(s storedSnapshot, part *int, p, typ string, size int64, mtime time.Time) error {
	x.matches++
	if x.g.json {
		return x.g.printJSON(findMatch{StructType: "match", SnapshotID: s.ID, Time: s.Time.Format(time.RFC3339Nano),
			Partition: part, Path: p, Type: typ, Size: size, MTime: mtime.Format(time.RFC3339Nano)})
	}
	if part != nil && *part != 0 {
		p = fmt.Sprintf("%d:%s", *part, p)
	}
	_, err := fmt.Fprintf(x.g.stdout, "%s  %s  %s  %12d  %s\n", s.Time.Local().Format("2006-01-02 15:04:05"), shortID(s.ID),
		mtime.Local().Format("2006-01-02 15:04:05"), size, p)
	return err
}

// inTree searches a file snapshot's tree.
func (x *finder) inTree(ctx context.Context, s storedSnapshot) error {
	return snapshot.Walk(ctx, x.r, s.Tree, func(p string, n *snapshot.Node) error {
		full := "/" + p
		if insidePattern(x.pattern, full) {
			return x.print(s, nil, full, nodeTypeNames[n.Type], int64(n.Size), time.Unix(0, n.MTime))
		}
		return nil
	})
}

// inImage searches every readable file system of an image snapshot.
// Partitions without one are skipped; damage is reported and counted, and
// the search goes on with the next snapshot.
func (x *finder) inImage(ctx context.Context, s storedSnapshot) error {
	im, err := openInside(ctx, x.r, s, x.cache)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		x.errors++
		x.g.warnf("warning: %v\n", err)
		return nil
	}
	defer im.Close()
	for _, p := range im.img.Parts {
		kind, err := im.img.Probe(p)
		if err != nil {
			return err
		}
		if !diskfs.Readable(kind) {
			x.g.verbosef(1, "snapshot %s: %s skipped (%s)\n", shortID(s.ID), insideName(p, ""), map[bool]string{true: "unknown", false: kind}[kind == ""])
			continue
		}
		fsys, err := im.img.OpenPartition(p)
		if err != nil {
			x.errors++
			x.g.warnf("warning: snapshot %s: %v\n", shortID(s.ID), err)
			continue
		}
		num := p.Number
		onErr := func(path string, err error) {
			x.errors++
			x.g.warnf("warning: snapshot %s: %s: %v\n", shortID(s.ID), insideName(p, path), err)
		}
		err = walkInside(ctx, fsys, "/", func(e diskfs.Entry) error {
			if insidePattern(x.pattern, e.Path) {
				return x.print(s, &num, e.Path, insideType(e.Mode), e.Size, e.MTime)
			}
			return nil
		}, onErr)
		if err != nil {
			return err
		}
	}
	return nil
}
