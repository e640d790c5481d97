package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/snapshot"
)

// snapshotJSON is the --json form of a snapshot, shared by several commands.
type snapshotJSON struct {
	ID      string            `json:"id"`
	ShortID string            `json:"short_id"`
	Time    string            `json:"time"`
	Host    string            `json:"host"`
	User    string            `json:"username,omitempty"`
	Tags    []string          `json:"tags"`
	Paths   []string          `json:"paths"`
	Kind    snapshot.Kind     `json:"kind"`
	Parent  string            `json:"parent,omitempty"`
	Tree    string            `json:"tree"`
	Image   any               `json:"image,omitempty"`
	Summary *snapshot.Summary `json:"summary,omitempty"`
	Program string            `json:"program_version,omitempty"`
}

func toSnapshotJSON(s storedSnapshot) snapshotJSON {
	j := snapshotJSON{
		ID: s.ID, ShortID: shortID(s.ID), Time: s.Time.Format(time.RFC3339Nano), Host: s.Host,
		User: s.Username, Tags: s.Tags, Paths: s.Paths, Kind: s.Kind, Tree: s.Tree.String(),
		Summary: s.Summary, Program: s.ProgramVersion,
	}
	if j.Tags == nil {
		j.Tags = []string{}
	}
	if j.Paths == nil {
		j.Paths = []string{}
	}
	if s.Parent != nil {
		j.Parent = s.Parent.String()
	}
	if s.Image != nil {
		j.Image = s.Image
	}
	return j
}

func newSnapshotsCommand(g *globalOptions) *cobra.Command {
	var f snapshotFilter
	var latest int
	cmd := &cobra.Command{
		Use:   "snapshots",
		Short: "List snapshots",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, release, err := g.openShared(ctx)
			if err != nil {
				return err
			}
			defer release()
			snaps, err := loadSnapshots(ctx, r, &f)
			if err != nil {
				return err
			}
			if latest > 0 && len(snaps) > latest {
				snaps = snaps[len(snaps)-latest:]
			}
			if g.json {
				out := make([]snapshotJSON, 0, len(snaps))
				for _, s := range snaps {
					out = append(out, toSnapshotJSON(s))
				}
				return g.printJSON(out)
			}
			if g.quiet {
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTime\tHost\tKind\tTags\tSize\tPaths")
			for _, s := range snaps {
				size := ""
				if s.Summary != nil {
					size = formatBytes(int64(s.Summary.TotalBytesProcessed))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortID(s.ID), s.Time.Local().Format("2006-01-02 15:04:05"),
					s.Host, s.Kind, strings.Join(s.Tags, ","), size, strings.Join(s.Paths, ","))
			}
			fmt.Fprintf(tw, "%d snapshots\n", len(snaps))
			return tw.Flush()
		},
	}
	f.addFlags(cmd.Flags())
	cmd.Flags().IntVar(&latest, "latest", 0, "show only the last `n` snapshots")
	return cmd
}
