package main

import (
	"bufio"
	"errors"
	"path"
	"strings"

	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/snapshot/restore"
)

func newDumpCommand(g *globalOptions) *cobra.Command {
	var f snapshotFilter
	cmd := &cobra.Command{
		Use:   "dump SNAPSHOT PATH",
		Short: "Write a file (or a directory as tar) from a snapshot to stdout",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := g.openRepository(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			unlock, err := g.lockRepository(ctx, r, false)
			if err != nil {
				return err
			}
			defer unlock()
			s, err := findSnapshot(ctx, r, &f, args[0])
			if err != nil {
				return err
			}
			p := strings.Trim(path.Clean("/"+args[1]), "/")
			w := bufio.NewWriterSize(g.stdout, 1<<20)
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
	return cmd
}
