package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/blockdev"
)

func init() { moreCommands = append(moreCommands, newDigestCommand) }

func newDigestCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "digest FILE|DEVICE|-",
		Short: "Print the image digest of a disk or image file, as image snapshots record it",
		Long: `Print the image digest of a disk, an image file or stdin ("-"): the value
an image backup of it records ("tree_digest" in snapshots --json), so that a
disk or a restored image can be checked against a snapshot without the
repository. It is BLAKE3 over 1 MiB leaves (docs/FORMAT.md, "Image
digest"), not the plain BLAKE3 that b3sum prints; holes are not read.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				src *blockdev.Source
				err error
			)
			if args[0] == "-" {
				src = blockdev.OpenReader(g.stdin, "stdin")
			} else if src, err = blockdev.Open(args[0]); err != nil {
				return err
			}
			defer src.Close()
			digest, err := blockdev.DigestSource(cmd.Context(), src)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]string{"path": args[0], "digest": digest})
			}
			fmt.Fprintf(g.stdout, "%s  %s\n", digest, args[0])
			return nil
		},
	}
}
