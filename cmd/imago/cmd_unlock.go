package main

import (
	"github.com/spf13/cobra"
)

func newUnlockCommand(g *globalOptions) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "unlock",
		Short: "Remove stale locks (or all locks with --remove-all)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := g.openRepository(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			var n int
			if all {
				n, err = r.RemoveAllLocks(ctx)
			} else {
				n, err = r.RemoveStaleLocks(ctx)
			}
			if err != nil {
				return err
			}
			g.printf("removed %d locks\n", n)
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "remove-all", false, "remove all locks, even those of running processes")
	return cmd
}
