package main

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/snapshot/imageio"
	"github.com/imagobackup/imago/snapshot/nbd"
)

func init() { moreCommands = append(moreCommands, newServeCommand) }

// serveCacheBytes is the chunk cache of `serve nbd` and `mount`: 256 MiB
// hold ~2000 image chunks, the working set of a booting VM or of several
// clients reading different parts of an image.
const serveCacheBytes = 256 << 20

func newServeCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve snapshots to other programs",
	}
	cmd.AddCommand(newServeNBDCommand(g))
	return cmd
}

type serveNBDOptions struct {
	listen  string
	name    string
	overlay string
	filter  snapshotFilter
}

func newServeNBDCommand(g *globalOptions) *cobra.Command {
	var o serveNBDOptions
	cmd := &cobra.Command{
		Use:   "nbd SNAPSHOT",
		Short: "Export an image snapshot as a network block device",
		Long: `Export an image snapshot over the NBD protocol until interrupted (Ctrl-C or
SIGTERM), for qemu, nbdcopy, nbdfuse or the kernel's nbd-client. The export is
read-only; with --writable-overlay FILE, writes go to FILE (a sparse file of the
image's size) and FILE.map (which blocks were written), so a VM can boot from a
backup without touching the repository. Reusing the same FILE later continues
where the last run stopped; it is refused for another snapshot.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServeNBD(cmd.Context(), g, &o, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:10809", "listen on `address` (host:port)")
	f.StringVar(&o.name, "name", "", "export `name` (default: the image's name; clients asking for no name get it too)")
	f.StringVar(&o.overlay, "writable-overlay", "", "make the export writable, keeping writes in `file` (and file.map)")
	o.filter.addFlags(f)
	return cmd
}

func runServeNBD(ctx context.Context, g *globalOptions, o *serveNBDOptions, arg string) error {
	r, release, err := g.openShared(ctx)
	if err != nil {
		return err
	}
	defer release()
	s, err := findSnapshot(ctx, r, &o.filter, arg)
	if err != nil {
		return err
	}
	n, err := imageNode(ctx, r, s)
	if err != nil {
		return err
	}
	size := int64(n.Size)
	reader := imageio.NewReaderAt(r, n.Content, size, imageio.Options{Cache: imageio.NewCache(serveCacheBytes)})
	defer reader.Close()
	name := o.name
	if name == "" {
		name = n.Name
	}
	exp := nbd.Export{
		Data: reader, Size: size,
		Description: fmt.Sprintf("imago snapshot %s of %s, %s", shortID(s.ID), n.Name, s.Time.Format("2006-01-02 15:04:05")),
	}
	mode := "read-only"
	if o.overlay != "" {
		ov, err := nbd.OpenOverlay(o.overlay, reader, size, "imago snapshot "+s.ID)
		if err != nil {
			return err
		}
		defer func() {
			if err := ov.Close(); err != nil {
				g.warnf("warning: close overlay: %v\n", err)
			}
		}()
		exp.Overlay = ov
		mode = fmt.Sprintf("writable, writes kept in %s", o.overlay)
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("serve nbd: %w", err)
	}
	addr := ln.Addr().String()
	g.printf("serving snapshot %s (image %s, %s) %s\n", shortID(s.ID), n.Name, formatBytes(size), mode)
	g.printf("listening on %s: nbd://%s/%s\n", addr, addr, name)
	if g.json {
		if err := g.printJSON(map[string]any{"message_type": "listening", "address": addr, "export": name,
			"snapshot_id": s.ID, "size": size, "read_only": o.overlay == ""}); err != nil {
			return err
		}
	}
	err = nbd.Serve(ctx, ln, map[string]nbd.Export{name: exp}, nbd.Options{
		DefaultExport: name,
		Logf:          func(format string, args ...any) { g.warnf(format+"\n", args...) },
		Tracef:        func(format string, args ...any) { g.verbosef(1, format+"\n", args...) },
	})
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		g.printf("stopped serving\n")
		return nil // Ctrl-C or SIGTERM: the normal way to stop
	}
	return err
}
