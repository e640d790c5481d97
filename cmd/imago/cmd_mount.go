package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/snapshot/fusefs"
	"github.com/imagobackup/imago/snapshot/imageio"
)

func init() { moreCommands = append(moreCommands, newMountCommand) }

// unmountTries and unmountPause bound how long an interrupted mount waits
// for files under it to be closed before it detaches lazily.
const (
	unmountTries = 10
	unmountPause = 300 * time.Millisecond
)

func newMountCommand(g *globalOptions) *cobra.Command {
	var f snapshotFilter
	cmd := &cobra.Command{
		Use:   "mount DIR",
		Short: "Browse snapshots as a read-only file system",
		Long: `Mount the repository's snapshots read-only on DIR (FUSE) until interrupted
(Ctrl-C or SIGTERM), which unmounts:

  DIR/ids/<id>/                  every snapshot by ID
  DIR/snapshots/<time>/          by time; latest -> the newest
  DIR/hosts/<host>/<time>/       by host
  DIR/tags/<tag>/<time>/         by tag

File snapshots show their files with the recorded metadata; an image snapshot
shows one read-only file, the image, which can be copied, read at any offset or
attached to a loop device (losetup -r).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runMount(cmd.Context(), g, &f, args[0])
		},
	}
	f.addFlags(cmd.Flags())
	return cmd
}

func runMount(ctx context.Context, g *globalOptions, f *snapshotFilter, dir string) error {
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("mount: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("mount: %s is not a directory", dir)
	}
	r, release, err := g.openShared(ctx)
	if err != nil {
		return err
	}
	defer release()
	stored, err := loadSnapshots(ctx, r, f)
	if err != nil {
		return err
	}
	snaps := make([]fusefs.Snapshot, len(stored))
	for i, s := range stored {
		snaps[i] = fusefs.Snapshot{ID: s.ID, Snapshot: s.Snapshot}
	}
	srv, err := fusefs.Mount(dir, r, snaps, fusefs.Options{
		Cache: imageio.NewCache(serveCacheBytes),
		Logf:  func(format string, args ...any) { g.warnf("mount: "+format+"\n", args...) },
	})
	if err != nil {
		return fmt.Errorf("mount %s: %w", dir, err)
	}
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()
	g.printf("mounted %d snapshots on %s; Ctrl-C or SIGTERM unmounts\n", len(snaps), dir)
	select {
	case <-done:
		g.printf("%s was unmounted\n", dir)
		return nil
	case <-ctx.Done():
	}
	if err := unmount(g, srv, dir); err != nil {
		return err
	}
	<-done
	g.printf("unmounted %s\n", dir)
	return nil
}

// unmount unmounts dir, retrying while files under it are open, then
// detaching it lazily (the kernel finishes the unmount when the last file
// is closed, and the server serves those files until then).
func unmount(g *globalOptions, srv *fuse.Server, dir string) error {
	var err error
	for range unmountTries {
		if err = srv.Unmount(); err == nil {
			return nil
		}
		time.Sleep(unmountPause)
	}
	g.warnf("unmount %s: %v; detaching it lazily\n", dir, err)
	out, lerr := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput()
	if lerr != nil {
		return fmt.Errorf("unmount %s: %v; lazy unmount: %v: %s", dir, err, lerr, out)
	}
	return nil
}
