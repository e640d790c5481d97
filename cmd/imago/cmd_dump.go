package main

import (
	"bufio"
	"errors"
	"path"
	"strings"

	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/restore"
)

func newDumpCommand(g *globalOptions) *cobra.Command {
	var f snapshotFilter
	var inside bool
	cmd := &cobra.Command{
		Use:   "dump SNAPSHOT [PATH]",
		Short: "Write a file (a directory as tar, an image snapshot as the raw image) to stdout",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if inside {
				return runDumpInside(ctx, g, &f, args)
			}
			r, release, err := g.openShared(ctx)
			if err != nil {
				return err
			}
			defer release()
			s, err := findSnapshot(ctx, r, &f, args[0])
			if err != nil {
				return err
			}
			w := bufio.NewWriterSize(g.stdout, 1<<20)
			if s.Kind == snapshot.KindImage {
				if err := dumpImage(ctx, r, s, w); err != nil {
					return err
				}
				return w.Flush()
			}
			if len(args) < 2 {
				return errors.New("dump of a file snapshot needs a PATH")
			}
			p := strings.Trim(path.Clean("/"+args[1]), "/")
			err = restore.DumpFile(ctx, r, s.Tree, p, w)
			if errors.Is(err, restore.ErrIsDir) {
				err = restore.WriteTar(ctx, r, s.Tree, p, w)
			}
			if err != nil {
				return err
			}
			return w.Flush()
		},
	}
	f.addFlags(cmd.Flags())
	cmd.Flags().BoolVar(&inside, "inside", false, "image snapshots: PATH is a file [PARTITION:]PATH inside the image's file systems")
	return cmd
}
