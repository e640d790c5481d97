package main

import (
	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/repo"
)

func init() { moreCommands = append(moreCommands, newRepairCommand) }

func newRepairCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Repair parts of the repository",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "index",
		Short: "Rebuild the index from the pack headers",
		Long: `Rebuild the index: read the header of every pack, write new index files
listing every pack whose header is intact, then remove the old index files.
Packs with a damaged header are reported and left out of the index. This
takes an exclusive lock.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := g.openRepositoryWith(ctx, true)
			if err != nil {
				return err
			}
			defer r.Close()
			unlock, err := g.lockRepository(ctx, r, true)
			if err != nil {
				return err
			}
			defer unlock()
			g.printf("reading pack headers\n")
			rep, err := repo.RepairIndex(ctx, r)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(struct {
					MessageType string `json:"message_type"`
					*repo.RepairReport
				}{"summary", rep})
			}
			for _, d := range rep.Damaged {
				g.warnf("warning: %s (left out of the index)\n", d)
			}
			g.printf("indexed %d packs with %d blobs in %d new index files; removed %d old index files\n",
				rep.Packs, rep.Blobs, rep.IndexFilesWritten, rep.IndexFilesRemoved)
			if len(rep.DamagedPacks) > 0 {
				g.printf("%d packs have a damaged header; run check --read-data to see what is affected\n", len(rep.DamagedPacks))
			}
			return nil
		},
	})
	return cmd
}
