package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"

	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/snapshot"
)

// maxDiffDepth bounds directory nesting in diff, as snapshot's walkers do.
const maxDiffDepth = 4096

func init() { moreCommands = append(moreCommands, newDiffCommand) }

// diffStats counts the changes diff found.
type diffStats struct {
	MessageType    string `json:"message_type"`
	Added          int    `json:"added"`
	Removed        int    `json:"removed"`
	Changed        int    `json:"changed"`          // content differs
	Metadata       int    `json:"metadata_changed"` // only metadata differs
	ImageBytes     uint64 `json:"changed_image_bytes"`
	ImageRanges    int    `json:"changed_image_ranges"`
	ImagesCompared int    `json:"images_compared"`
}

// diffChange is the --json form of one change.
type diffChange struct {
	MessageType  string      `json:"message_type"`
	Path         string      `json:"path"`
	Modifier     string      `json:"modifier"`
	Ranges       [][2]uint64 `json:"changed_ranges,omitempty"` // images: [start, end) byte ranges
	ChangedBytes uint64      `json:"changed_bytes,omitempty"`
}

func newDiffCommand(g *globalOptions) *cobra.Command {
	var f snapshotFilter
	cmd := &cobra.Command{
		Use:   "diff SNAPSHOT1 SNAPSHOT2",
		Short: "Show what changed between two snapshots",
		Long: `Show what changed from SNAPSHOT1 to SNAPSHOT2, one line per path:
"+" added, "-" removed, "M" content changed, "U" only metadata changed
(mode, owner, times, extended attributes). Directories end in "/". For disk
images, the changed byte ranges follow as [start, end). Subtrees that did not
change are not read, so the cost follows the size of the change.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, release, err := g.openShared(ctx)
			if err != nil {
				return err
			}
			defer release()
			var snaps [2]storedSnapshot
			for i, arg := range args {
				if snaps[i], err = findSnapshot(ctx, r, &f, arg); err != nil {
					return err
				}
			}
			g.printf("comparing snapshot %s to %s\n", shortID(snaps[0].ID), shortID(snaps[1].ID))
			d := &differ{g: g, r: r, stats: diffStats{MessageType: "statistics"}}
			if err := d.trees(ctx, "", []chunk.ID{snaps[0].Tree}, []chunk.ID{snaps[1].Tree}, 0); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(d.stats)
			}
			st := d.stats
			g.printf("\nadded: %d, removed: %d, changed: %d, metadata only: %d\n", st.Added, st.Removed, st.Changed, st.Metadata)
			if st.ImagesCompared > 0 {
				g.printf("changed image bytes: %s in %d %s\n", formatBytes(int64(st.ImageBytes)), st.ImageRanges, plural(st.ImageRanges, "range", "ranges"))
			}
			return nil
		},
	}
	f.addFlags(cmd.Flags())
	return cmd
}

// differ compares two snapshots' trees.
type differ struct {
	g     *globalOptions
	r     *repo.Repository
	stats diffStats
}

// report prints one change.
func (d *differ) report(mod, path string, n *snapshot.Node, ranges [][2]uint64, changed uint64) error {
	switch mod {
	case "+":
		d.stats.Added++
	case "-":
		d.stats.Removed++
	case "M":
		d.stats.Changed++
	case "U":
		d.stats.Metadata++
	}
	full := "/" + path
	if n.Type == snapshot.TypeDir {
		full += "/"
	}
	if d.g.json {
		return d.g.printJSON(diffChange{MessageType: "change", Path: full, Modifier: mod, Ranges: ranges, ChangedBytes: changed})
	}
	if d.g.quiet {
		return nil
	}
	fmt.Fprintf(d.g.stdout, "%s    %s\n", mod, full)
	for _, rg := range ranges {
		fmt.Fprintf(d.g.stdout, "      bytes [%d, %d) %s\n", rg[0], rg[1], formatBytes(int64(rg[1]-rg[0])))
	}
	return nil
}

// trees compares the directory listings in tree blobs a and b, whose
// entries are at prefix. Identical blob lists are equal without being
// loaded.
func (d *differ) trees(ctx context.Context, prefix string, a, b []chunk.ID, depth int) error {
	if slices.Equal(a, b) {
		return nil
	}
	if depth >= maxDiffDepth {
		return fmt.Errorf("%s: directories nested deeper than %d", prefix, maxDiffDepth)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ta, err := snapshot.LoadTree(ctx, d.r, a)
	if err != nil {
		return err
	}
	tb, err := snapshot.LoadTree(ctx, d.r, b)
	if err != nil {
		return err
	}
	i, j := 0, 0
	for i < len(ta.Nodes) || j < len(tb.Nodes) {
		var na, nb *snapshot.Node
		switch {
		case j == len(tb.Nodes) || (i < len(ta.Nodes) && ta.Nodes[i].Name < tb.Nodes[j].Name):
			na = &ta.Nodes[i]
			i++
		case i == len(ta.Nodes) || tb.Nodes[j].Name < ta.Nodes[i].Name:
			nb = &tb.Nodes[j]
			j++
		default:
			na, nb = &ta.Nodes[i], &tb.Nodes[j]
			i++
			j++
		}
		name := nodeName(na, nb)
		path := name
		if prefix != "" {
			path = prefix + "/" + name
		}
		if err := d.nodes(ctx, path, na, nb, depth); err != nil {
			return err
		}
	}
	return nil
}

// plural returns one or many after n.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func nodeName(a, b *snapshot.Node) string {
	if a != nil {
		return a.Name
	}
	return b.Name
}

// nodes compares the node at path in both snapshots; a nil node is absent.
func (d *differ) nodes(ctx context.Context, path string, a, b *snapshot.Node, depth int) error {
	switch {
	case b == nil:
		return d.all(ctx, "-", path, a, depth)
	case a == nil:
		return d.all(ctx, "+", path, b, depth)
	case a.Type != b.Type:
		if err := d.all(ctx, "-", path, a, depth); err != nil {
			return err
		}
		return d.all(ctx, "+", path, b, depth)
	case a.Type == snapshot.TypeDir:
		if !sameMetadata(a, b) {
			if err := d.report("U", path, b, nil, 0); err != nil {
				return err
			}
		}
		return d.trees(ctx, path, a.Subtrees, b.Subtrees, depth+1)
	case !sameContent(a, b):
		if a.Type != snapshot.TypeImage {
			return d.report("M", path, b, nil, 0)
		}
		ranges, changed, err := changedRanges(ctx, d.r, a.Content, b.Content)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		d.stats.ImagesCompared++
		if len(ranges) == 0 {
			// The same extents in other pages: level-0 pages stored as
			// delta pages of different parents have different IDs.
			if !sameMetadata(a, b) {
				return d.report("U", path, b, nil, 0)
			}
			return nil
		}
		d.stats.ImageBytes += changed
		d.stats.ImageRanges += len(ranges)
		return d.report("M", path, b, ranges, changed)
	case !sameMetadata(a, b):
		return d.report("U", path, b, nil, 0)
	}
	if a.Type == snapshot.TypeImage {
		d.stats.ImagesCompared++
	}
	return nil
}

// all reports n and, for a directory, everything below it with mod.
func (d *differ) all(ctx context.Context, mod, path string, n *snapshot.Node, depth int) error {
	if err := d.report(mod, path, n, nil, 0); err != nil {
		return err
	}
	if n.Type != snapshot.TypeDir || len(n.Subtrees) == 0 {
		return nil
	}
	if depth >= maxDiffDepth {
		return fmt.Errorf("%s: directories nested deeper than %d", path, maxDiffDepth)
	}
	t, err := snapshot.LoadTree(ctx, d.r, n.Subtrees)
	if err != nil {
		return err
	}
	for i := range t.Nodes {
		if err := d.all(ctx, mod, path+"/"+t.Nodes[i].Name, &t.Nodes[i], depth+1); err != nil {
			return err
		}
	}
	return nil
}

// sameContent reports whether two nodes of one type hold the same content:
// content list, link target and device number. It compares content roots,
// so two images may hold the same extents and still differ here (their
// pages stored as delta pages of different parents): changedRanges decides.
func sameContent(a, b *snapshot.Node) bool {
	ca, cb := &a.Content, &b.Content
	return ca.Level == cb.Level && slices.Equal(ca.Extents, cb.Extents) && slices.Equal(ca.Pages, cb.Pages) &&
		a.Size == b.Size && a.LinkTarget == b.LinkTarget && a.Rdev == b.Rdev
}

// sameMetadata reports whether two nodes have the same metadata a restore
// sets. Access and change times, inode and device numbers are left out:
// they change without the file changing.
func sameMetadata(a, b *snapshot.Node) bool {
	return a.Mode == b.Mode && a.UID == b.UID && a.GID == b.GID && a.User == b.User && a.Group == b.Group &&
		a.MTime == b.MTime && slices.EqualFunc(a.Xattrs, b.Xattrs, func(x, y snapshot.Xattr) bool {
		return x.Name == y.Name && bytes.Equal(x.Value, y.Value)
	})
}

// changedRanges returns the byte ranges [start, end) where content lists a
// and b differ, coalesced and in order, and their total length. Two extents
// are the same where they are the same blob at the same offset, or both
// holes; bytes past the end of the shorter content are changed. Root pages
// that are the same in both at the same offset are skipped unread, so the
// cost follows the size of the change, not of the image.
func changedRanges(ctx context.Context, l snapshot.ChunkLoader, a, b snapshot.Content) ([][2]uint64, uint64, error) {
	ra, rb := snapshot.NewContentReader(l, a), snapshot.NewContentReader(l, b)
	sizeA, sizeB := ra.Size(), rb.Size()
	common := min(sizeA, sizeB)
	var ranges [][2]uint64
	add := func(start, end uint64) {
		if n := len(ranges); n > 0 && ranges[n-1][1] == start {
			ranges[n-1][1] = end
			return
		}
		ranges = append(ranges, [2]uint64{start, end})
	}
	for _, rg := range unsharedRanges(a, b, common) {
		if err := compareExtents(ctx, ra, rb, rg[0], rg[1], add); err != nil {
			return nil, 0, err
		}
	}
	if sizeA != sizeB {
		add(common, max(sizeA, sizeB))
	}
	var total uint64
	for _, rg := range ranges {
		total += rg[1] - rg[0]
	}
	return ranges, total, nil
}

// unsharedRanges returns the parts of [0, end) not covered by a root page
// that a and b share at the same offset.
func unsharedRanges(a, b snapshot.Content, end uint64) [][2]uint64 {
	var out [][2]uint64
	pos := uint64(0)
	if a.Level == b.Level && a.Level > 0 {
		i, j := 0, 0
		var sa, sb uint64
		for i < len(a.Pages) && j < len(b.Pages) {
			switch {
			case sa < sb:
				sa += a.Pages[i].Length
				i++
			case sb < sa:
				sb += b.Pages[j].Length
				j++
			default:
				pa, pb := a.Pages[i], b.Pages[j]
				if pa == pb && sa+pa.Length <= end {
					if sa > pos {
						out = append(out, [2]uint64{pos, sa})
					}
					pos = sa + pa.Length
				}
				sa += pa.Length
				sb += pb.Length
				i++
				j++
			}
		}
	}
	if pos < end {
		out = append(out, [2]uint64{pos, end})
	}
	return out
}

// span is an extent and the offset where it starts.
type span struct {
	start uint64
	e     snapshot.Extent
}

// errStopExtents ends an extent iteration early.
var errStopExtents = errors.New("stop")

// extentsFrom iterates over r's extents from the one holding offset from.
func extentsFrom(ctx context.Context, r *snapshot.ContentReader, from uint64) iter.Seq2[span, error] {
	return func(yield func(span, error) bool) {
		err := r.Extents(ctx, from, func(start uint64, e snapshot.Extent) error {
			if !yield(span{start, e}, nil) {
				return errStopExtents
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStopExtents) {
			yield(span{}, err)
		}
	}
}

// compareExtents calls add for each part of [from, to) where ra and rb
// hold different extents.
func compareExtents(ctx context.Context, ra, rb *snapshot.ContentReader, from, to uint64, add func(start, end uint64)) error {
	nextA, stopA := iter.Pull2(extentsFrom(ctx, ra, from))
	defer stopA()
	nextB, stopB := iter.Pull2(extentsFrom(ctx, rb, from))
	defer stopB()
	next := func(n func() (span, error, bool)) (span, error) {
		s, err, ok := n()
		if err == nil && (!ok || s.e.Length == 0) {
			err = fmt.Errorf("content list ends before byte %d", to)
		}
		return s, err
	}
	var xa, xb span
	var endA, endB uint64
	for pos := from; pos < to; {
		var err error
		for pos >= endA {
			if xa, err = next(nextA); err != nil {
				return err
			}
			endA = xa.start + xa.e.Length
		}
		for pos >= endB {
			if xb, err = next(nextB); err != nil {
				return err
			}
			endB = xb.start + xb.e.Length
		}
		end := min(endA, endB, to)
		same := (xa.e.Hole() && xb.e.Hole()) || (xa.e.ID == xb.e.ID && xa.start == xb.start)
		if !same {
			add(pos, end)
		}
		pos = end
	}
	return nil
}
