package restore

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// dumpWorkers is the number of chunk fetches snapshot.Dump keeps in flight
// for WriteTar and DumpFile: enough to hide a remote backend's latency
// behind the output stream, at 4 × 8 MiB of buffers.
const dumpWorkers = 4

// ErrIsDir is wrapped by DumpFile's error when the path names a directory;
// WriteTar dumps directories.
var ErrIsDir = errors.New("is a directory")

// ErrNotRegular is wrapped by DumpFile's error when the path names a
// symlink, device, FIFO or socket, which have no content to dump.
var ErrNotRegular = errors.New("not a regular file")

// DumpFile writes the content of the regular file at snapshot path p (an
// absolute, slash-separated path such as "/home/u/a.txt") to w. The error
// wraps ErrIsDir when p is a directory (including "/"), and
// snapshot.ErrNotFound when p does not exist.
func DumpFile(ctx context.Context, l snapshot.ChunkLoader, root chunk.ID, p string, w io.Writer) error {
	p = cleanPath(p)
	if p == "/" {
		return fmt.Errorf("dump %s: %w", p, ErrIsDir)
	}
	n, err := snapshot.FindNode(ctx, l, root, p)
	if err != nil {
		return fmt.Errorf("dump %s: %w", p, err)
	}
	switch n.Type {
	case snapshot.TypeDir:
		return fmt.Errorf("dump %s: %w", p, ErrIsDir)
	case snapshot.TypeFile, snapshot.TypeImage:
		if err := snapshot.Dump(ctx, l, n.Content, w, dumpWorkers); err != nil {
			return fmt.Errorf("dump %s: %w", p, err)
		}
		return nil
	}
	return fmt.Errorf("dump %s: %w", p, ErrNotRegular)
}

// WriteTar writes the subtree at snapshot path p ("/" for the whole
// snapshot) to w as a tar archive in PAX format: entry names are snapshot
// paths without the leading slash, with modes (including setuid, setgid and
// sticky bits), owners, nanosecond times, extended attributes (as
// SCHILY.xattr records), symlinks, FIFOs and device nodes; later links of a
// hard-linked file become tar hard links to the first. Sockets are left out.
// Holes are written as zeros.
func WriteTar(ctx context.Context, l snapshot.ChunkLoader, root chunk.ID, p string, w io.Writer) error {
	p = cleanPath(p)
	t := &tarWriter{l: l, tw: tar.NewWriter(w), links: make(map[linkKey]string)}
	wk := &walker{l: l, enter: t.add}
	if p == "/" {
		if err := wk.walkTree(ctx, []chunk.ID{root}, "/", true); err != nil {
			return err
		}
		return t.tw.Close()
	}
	n, err := snapshot.FindNode(ctx, l, root, p)
	if err != nil {
		return fmt.Errorf("dump %s: %w", p, err)
	}
	if err := t.add(ctx, p, n); err != nil {
		return err
	}
	if n.Type == snapshot.TypeDir {
		if err := wk.walkTree(ctx, n.Subtrees, p, true); err != nil {
			return err
		}
	}
	return t.tw.Close()
}

// cleanPath returns p as a clean absolute snapshot path.
func cleanPath(p string) string {
	return path.Clean("/" + p)
}

type tarWriter struct {
	l     snapshot.ChunkLoader
	tw    *tar.Writer
	links map[linkKey]string // first link of a hard-linked file → its tar name
}

// add writes the tar entry for node n at snapshot path p.
func (t *tarWriter) add(ctx context.Context, p string, n *snapshot.Node) error {
	h := &tar.Header{
		Name:       strings.TrimPrefix(p, "/"),
		Mode:       int64(n.Mode & 0o7777),
		Uid:        int(n.UID),
		Gid:        int(n.GID),
		Uname:      n.User,
		Gname:      n.Group,
		ModTime:    time.Unix(0, n.MTime),
		AccessTime: time.Unix(0, n.ATime),
		ChangeTime: time.Unix(0, n.CTime),
		Format:     tar.FormatPAX, // the only format with nanosecond times
	}
	content := false
	switch n.Type {
	case snapshot.TypeDir:
		h.Typeflag = tar.TypeDir
		h.Name += "/"
	case snapshot.TypeFile, snapshot.TypeImage:
		h.Typeflag = tar.TypeReg
		if key, ok := hardLinkKey(n); ok {
			if first, seen := t.links[key]; seen {
				h.Typeflag = tar.TypeLink
				h.Linkname = first
				break
			}
			t.links[key] = h.Name
		}
		h.Size = int64(n.Size)
		content = true
	case snapshot.TypeSymlink:
		h.Typeflag = tar.TypeSymlink
		h.Linkname = n.LinkTarget
	case snapshot.TypeFIFO:
		h.Typeflag = tar.TypeFifo
	case snapshot.TypeBlockDev, snapshot.TypeCharDev:
		h.Typeflag = tar.TypeChar
		if n.Type == snapshot.TypeBlockDev {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor = int64(unix.Major(n.Rdev))
		h.Devminor = int64(unix.Minor(n.Rdev))
	default:
		return nil // sockets (and unknown types) have no tar form
	}
	if len(n.Xattrs) > 0 {
		h.PAXRecords = make(map[string]string, len(n.Xattrs))
		for _, x := range n.Xattrs {
			h.PAXRecords["SCHILY.xattr."+x.Name] = string(x.Value)
		}
	}
	if err := t.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("dump %s: %w", p, err)
	}
	if content {
		if err := snapshot.Dump(ctx, t.l, n.Content, t.tw, dumpWorkers); err != nil {
			return fmt.Errorf("dump %s: %w", p, err)
		}
	}
	return nil
}
