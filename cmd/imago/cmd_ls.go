package main

import (
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/imagobackup/imago/snapshot"
)

// nodeJSON is the --json form of a tree node in ls.
type nodeJSON struct {
	StructType string `json:"struct_type"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	Path       string `json:"path"`
	UID        uint32 `json:"uid"`
	GID        uint32 `json:"gid"`
	User       string `json:"user,omitempty"`
	Group      string `json:"group,omitempty"`
	Size       uint64 `json:"size,omitempty"`
	Mode       uint32 `json:"mode"`
	Permission string `json:"permissions"`
	MTime      string `json:"mtime"`
	Inode      uint64 `json:"inode,omitempty"`
	Links      uint64 `json:"links,omitempty"`
	LinkTarget string `json:"link_target,omitempty"`
}

var nodeTypeNames = map[snapshot.NodeType]string{
	snapshot.TypeFile: "file", snapshot.TypeDir: "dir", snapshot.TypeSymlink: "symlink",
	snapshot.TypeBlockDev: "blockdev", snapshot.TypeCharDev: "chardev", snapshot.TypeFIFO: "fifo",
	snapshot.TypeSocket: "socket", snapshot.TypeImage: "image",
}

// fileMode turns a node's type and permission bits into an fs.FileMode.
func fileMode(n *snapshot.Node) fs.FileMode {
	m := fs.FileMode(n.Mode & 0777)
	if n.Mode&04000 != 0 {
		m |= fs.ModeSetuid
	}
	if n.Mode&02000 != 0 {
		m |= fs.ModeSetgid
	}
	if n.Mode&01000 != 0 {
		m |= fs.ModeSticky
	}
	switch n.Type {
	case snapshot.TypeDir:
		m |= fs.ModeDir
	case snapshot.TypeSymlink:
		m |= fs.ModeSymlink
	case snapshot.TypeBlockDev:
		m |= fs.ModeDevice
	case snapshot.TypeCharDev:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case snapshot.TypeFIFO:
		m |= fs.ModeNamedPipe
	case snapshot.TypeSocket:
		m |= fs.ModeSocket
	}
	return m
}

func newLsCommand(g *globalOptions) *cobra.Command {
	var f snapshotFilter
	var long, inside bool
	cmd := &cobra.Command{
		Use:   "ls SNAPSHOT [PATH]",
		Short: "List files in a snapshot",
		Long:  "List the files in a snapshot, recursively, below PATH (default: everything).",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if inside {
				return runLsInside(ctx, g, &f, args)
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
			prefix := ""
			if len(args) == 2 {
				prefix = strings.Trim(path.Clean("/"+args[1]), "/")
				if _, err := snapshot.FindNode(ctx, r, s.Tree, prefix); prefix != "" && err != nil {
					return fmt.Errorf("%s: %w", args[1], err)
				}
			}
			if g.json {
				if err := g.printJSON(toSnapshotJSON(s)); err != nil {
					return err
				}
			}
			return snapshot.Walk(ctx, r, s.Tree, func(p string, n *snapshot.Node) error {
				if prefix != "" && p != prefix && !strings.HasPrefix(p, prefix+"/") {
					if strings.HasPrefix(prefix, p+"/") {
						return nil // an ancestor of the prefix: descend
					}
					if n.Type == snapshot.TypeDir {
						return snapshot.ErrSkipDir
					}
					return nil
				}
				full := "/" + p
				if g.json {
					return g.printJSON(nodeJSON{
						StructType: "node", Name: n.Name, Type: nodeTypeNames[n.Type], Path: full,
						UID: n.UID, GID: n.GID, User: n.User, Group: n.Group, Size: n.Size, Mode: uint32(fileMode(n)),
						Permission: fileMode(n).String(), MTime: time.Unix(0, n.MTime).Format(time.RFC3339Nano),
						Inode: n.Inode, Links: n.Links, LinkTarget: n.LinkTarget,
					})
				}
				if long {
					owner := n.User
					if owner == "" {
						owner = fmt.Sprint(n.UID)
					}
					group := n.Group
					if group == "" {
						group = fmt.Sprint(n.GID)
					}
					line := fmt.Sprintf("%s %8s %8s %12d %s %s", fileMode(n), owner, group, n.Size,
						time.Unix(0, n.MTime).Local().Format("2006-01-02 15:04:05"), full)
					if n.Type == snapshot.TypeSymlink {
						line += " -> " + n.LinkTarget
					}
					fmt.Fprintln(g.stdout, line)
					return nil
				}
				fmt.Fprintln(g.stdout, full)
				return nil
			})
		},
	}
	f.addFlags(cmd.Flags())
	cmd.Flags().BoolVarP(&long, "long", "l", false, "long listing: mode, owner, size, time")
	cmd.Flags().BoolVar(&inside, "inside", false, "image snapshots: list PATH as [PARTITION:]PATH inside the image's file systems (no PATH: the partitions)")
	return cmd
}
