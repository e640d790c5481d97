package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/filter"
	"github.com/imagobackup/imago/snapshot/restore"
)

func newRestoreCommand(g *globalOptions) *cobra.Command {
	var f snapshotFilter
	var target string
	var includes []string
	var verify, sparse bool
	var inside string
	cmd := &cobra.Command{
		Use:   "restore SNAPSHOT --target DIR|FILE|DEVICE",
		Short: "Restore a snapshot",
		Long: `Restore a snapshot, or the files matching --include, below the target
directory. Paths keep their absolute layout: /home/u/a restores to DIR/home/u/a.

An image snapshot is restored to a file (sparse: holes stay unallocated) or a
block device (refused when mounted or too small); into an existing directory
it is written under its recorded name. The whole-image digest is verified.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if inside != "" {
				return runRestoreInside(ctx, g, &f, args[0], inside, target)
			}
			if target == "" {
				return fmt.Errorf("restore needs --target")
			}
			var incl *filter.Matcher
			if len(includes) > 0 {
				m, err := filter.Compile(includes)
				if err != nil {
					return err
				}
				incl = m
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
			if s.Kind == snapshot.KindImage {
				if len(includes) > 0 {
					return fmt.Errorf("--include does not apply to image snapshots")
				}
				return restoreImage(ctx, g, r, s, target, sparse)
			}
			g.verbosef(1, "restoring snapshot %s of %v to %s\n", shortID(s.ID), s.Paths, target)
			prog := &restore.Progress{}
			pr := g.startProgress(func() progressState {
				return progressState{FilesDone: prog.Files.Load(), FilesTotal: prog.TotalFiles.Load(),
					BytesDone: prog.Bytes.Load(), BytesTotal: prog.TotalBytes.Load()}
			})
			res, err := restore.Run(ctx, r, s.Tree, target, restore.Options{
				Include: incl, Verify: verify, Progress: prog,
				OnError: func(path string, err error) { g.warnf("warning: %s: %v\n", path, err) },
			})
			pr.Stop()
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{
					"message_type": "summary", "snapshot_id": s.ID, "files_restored": res.Files,
					"dirs_restored": res.Dirs, "bytes_restored": res.Bytes, "errors": res.Errors,
					"files_verified": res.VerifiedFiles,
				})
			}
			g.printf("restored %d files, %d dirs, %s to %s\n", res.Files, res.Dirs, formatBytes(res.Bytes), target)
			if verify {
				g.printf("verified %d files\n", res.VerifiedFiles)
			}
			if res.Errors > 0 {
				return fmt.Errorf("%d errors while restoring", res.Errors)
			}
			return nil
		},
	}
	f.addFlags(cmd.Flags())
	cmd.Flags().StringVarP(&target, "target", "t", "", "restore into `directory`")
	cmd.Flags().StringArrayVarP(&includes, "include", "i", nil, "restore only paths matching `pattern` (repeatable)")
	cmd.Flags().BoolVar(&verify, "verify", false, "read restored files back and compare them with the snapshot")
	cmd.Flags().StringVar(&inside, "inside", "", "image snapshots: restore the file or directory `[PARTITION:]PATH` inside the image into the target")
	cmd.Flags().BoolVar(&sparse, "sparse", false, "image to a device: skip holes (only if the device reads zeros where nothing was written)")
	return cmd
}
