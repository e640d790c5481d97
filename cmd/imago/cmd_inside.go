package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/snapshot/diskfs"
	"github.com/imagobackup/imago/snapshot/imageio"
)

// This file holds the --inside forms of ls, restore and dump (and the
// image half of find): files inside the file systems of an image snapshot,
// read in user space straight from the snapshot's chunks. ls, restore and
// dump hook in with one flag and one early branch each.

// insideCacheBytes bounds the decoded chunks the inside commands keep: a
// file system's metadata (inode tables, directories) is re-read often and
// stays hot; file data passes through once.
const insideCacheBytes = 32 << 20

// maxInsidePath bounds the paths built while walking a file system: no real
// path is longer (PATH_MAX), and a directory loop in a damaged image ends
// here instead of recursing without end.
const maxInsidePath = 4096

// insideImage is an image snapshot opened for reads inside it.
type insideImage struct {
	s   storedSnapshot
	ra  *imageio.ReaderAt
	img *diskfs.Image
}

func (im *insideImage) Close() error { return im.ra.Close() }

// ctxReaderAt passes the command's context to every read, so that an
// interrupt stops a read waiting for the repository.
type ctxReaderAt struct {
	ctx context.Context
	ra  *imageio.ReaderAt
}

func (c ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	return c.ra.ReadAtContext(c.ctx, p, off)
}

// openInside opens the partition table of an image snapshot.
func openInside(ctx context.Context, r *repo.Repository, s storedSnapshot, cache *imageio.Cache) (*insideImage, error) {
	n, err := imageNode(ctx, r, s)
	if err != nil {
		return nil, err
	}
	ra := imageio.NewReaderAt(r, n.Content, int64(n.Size), imageio.Options{Cache: cache})
	img, err := diskfs.OpenImage(ctxReaderAt{ctx, ra}, int64(n.Size))
	if err != nil {
		ra.Close()
		return nil, fmt.Errorf("snapshot %s: %w", shortID(s.ID), err)
	}
	return &insideImage{s: s, ra: ra, img: img}, nil
}

// openInsideFS opens the file system an inside path names and returns it
// with the path within it.
func (g *globalOptions) openInsideFS(im *insideImage, spec string) (diskfs.FS, diskfs.Partition, string, error) {
	num, p := diskfs.ParsePath(spec)
	fsys, part, err := im.img.Open(num)
	if err != nil {
		return nil, part, "", fmt.Errorf("snapshot %s: %w", shortID(im.s.ID), err)
	}
	if w := fsys.Warning(); w != "" {
		g.warnf("warning: %s: %s\n", insideName(part, ""), w)
	}
	return fsys, part, p, nil
}

// insideName formats a partition and path as the user writes them.
func insideName(p diskfs.Partition, pth string) string {
	if p.Number == 0 {
		if pth == "" {
			return "image"
		}
		return pth
	}
	return fmt.Sprintf("%d:%s", p.Number, pth)
}

// insideErr prefixes err with the inside path, once: a lookup error from
// the file system already names the path.
func insideErr(part diskfs.Partition, p string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", insideName(part, pe.Path), pe.Err)
	}
	return fmt.Errorf("%s: %w", insideName(part, p), err)
}

// withInsideSnapshot opens the repository, takes a shared lock, finds the
// snapshot and runs fn. With IMAGO_DEBUG_STATS=1 it reports the bytes
// fetched from the repository to stderr at the end (tests count them).
func (g *globalOptions) withInsideSnapshot(ctx context.Context, f *snapshotFilter, arg string, fn func(*repo.Repository, storedSnapshot) error) error {
	r, release, err := g.openShared(ctx)
	if err != nil {
		return err
	}
	defer release()
	if os.Getenv("IMAGO_DEBUG_STATS") == "1" {
		defer func() { g.warnf("debug: repository bytes downloaded: %d\n", r.Stats().BytesDownloaded) }()
	}
	s, err := findSnapshot(ctx, r, f, arg)
	if err != nil {
		return err
	}
	return fn(r, s)
}

// runLsInside lists the partitions of an image snapshot (args holds only
// the snapshot) or, like ls -l, the entry or directory an inside path names.
func runLsInside(ctx context.Context, g *globalOptions, f *snapshotFilter, args []string) error {
	return g.withInsideSnapshot(ctx, f, args[0], func(r *repo.Repository, s storedSnapshot) error {
		im, err := openInside(ctx, r, s, imageio.NewCache(insideCacheBytes))
		if err != nil {
			return err
		}
		defer im.Close()
		if len(args) < 2 {
			return g.listPartitions(im)
		}
		fsys, part, p, err := g.openInsideFS(im, args[1])
		if err != nil {
			return err
		}
		e, err := fsys.Stat(p)
		if err != nil {
			return insideErr(part, p, err)
		}
		ents := []diskfs.Entry{e}
		if e.Mode.IsDir() {
			if ents, err = fsys.ReadDir(p); err != nil {
				return err
			}
		}
		for _, e := range ents {
			if err := g.printInsideEntry(e); err != nil {
				return err
			}
		}
		return nil
	})
}

func (g *globalOptions) printInsideEntry(e diskfs.Entry) error {
	if g.json {
		return g.printJSON(nodeJSON{
			StructType: "node", Name: e.Name, Type: insideType(e.Mode), Path: e.Path, UID: e.UID, GID: e.GID,
			Size: uint64(e.Size), Mode: uint32(e.Mode), Permission: e.Mode.String(),
			MTime: e.MTime.Format(time.RFC3339Nano), LinkTarget: e.LinkTarget,
		})
	}
	line := fmt.Sprintf("%s %8d %8d %12d %s %s", e.Mode, e.UID, e.GID, e.Size, e.MTime.Local().Format("2006-01-02 15:04:05"), e.Path)
	if e.Mode&fs.ModeSymlink != 0 {
		line += " -> " + e.LinkTarget
	}
	_, err := fmt.Fprintln(g.stdout, line)
	return err
}

func insideType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "dir"
	case m.IsRegular():
		return "file"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeCharDevice != 0:
		return "chardev"
	case m&fs.ModeDevice != 0:
		return "blockdev"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	}
	return "socket"
}

// listPartitions prints the partition table with the file system found in
// each partition.
func (g *globalOptions) listPartitions(im *insideImage) error {
	type partJSON struct {
		Number     int    `json:"number"`
		Start      int64  `json:"start"`
		Size       int64  `json:"size"`
		Table      string `json:"table,omitempty"`
		Type       string `json:"type,omitempty"`
		Name       string `json:"name,omitempty"`
		Filesystem string `json:"filesystem,omitempty"`
		Label      string `json:"label,omitempty"`
		Readable   bool   `json:"readable"`
	}
	var out []partJSON
	for _, p := range im.img.Parts {
		kind, err := im.img.Probe(p)
		if err != nil {
			return err
		}
		j := partJSON{Number: p.Number, Start: p.Start, Size: p.Size, Table: p.Table, Type: p.Type, Name: p.Name, Filesystem: kind}
		if diskfs.Readable(kind) {
			if fsys, err := im.img.OpenPartition(p); err == nil {
				j.Label, j.Readable = fsys.Label(), true
			} else {
				g.warnf("warning: %v\n", err)
			}
		}
		out = append(out, j)
	}
	if g.json {
		return g.printJSON(out)
	}
	table := "no partition table"
	if len(out) > 0 && out[0].Table != "" {
		table = strings.ToUpper(out[0].Table) + " partition table"
	}
	fmt.Fprintf(g.stdout, "%s, %s image\n", table, formatBytes(im.ra.Size()))
	fmt.Fprintf(g.stdout, "%-4s %12s %12s  %-20s %-24s %s\n", "#", "start", "size", "filesystem", "type", "name [label]")
	for _, p := range out {
		fsName := p.Filesystem
		if fsName == "" {
			fsName = "unknown"
		}
		if !p.Readable && fsName != "unknown" {
			fsName += " (not readable)"
		}
		label := p.Name
		if p.Label != "" {
			label = strings.TrimSpace(label + " [" + p.Label + "]")
		}
		fmt.Fprintf(g.stdout, "%-4d %12d %12s  %-20s %-24s %s\n", p.Number, p.Start, formatBytes(p.Size), fsName, p.Type, label)
	}
	return nil
}

// runDumpInside writes one file from inside an image snapshot to stdout.
func runDumpInside(ctx context.Context, g *globalOptions, f *snapshotFilter, args []string) error {
	if len(args) < 2 {
		return errors.New("dump --inside needs a path: dump SNAPSHOT --inside [PARTITION:]PATH")
	}
	return g.withInsideSnapshot(ctx, f, args[0], func(r *repo.Repository, s storedSnapshot) error {
		im, err := openInside(ctx, r, s, imageio.NewCache(insideCacheBytes))
		if err != nil {
			return err
		}
		defer im.Close()
		fsys, part, p, err := g.openInsideFS(im, args[1])
		if err != nil {
			return err
		}
		file, err := fsys.Open(p)
		if err != nil {
			if errors.Is(err, diskfs.ErrIsDir) {
				return fmt.Errorf("%s is a directory: use restore --inside to copy a directory", insideName(part, p))
			}
			return insideErr(part, p, err)
		}
		w := bufio.NewWriterSize(g.stdout, 1<<20)
		if _, err := io.Copy(w, io.NewSectionReader(file, 0, file.Size())); err != nil {
			return insideErr(part, p, err)
		}
		return w.Flush()
	})
}

// insideRestore copies files from a file system inside an image to disk.
type insideRestore struct {
	g      *globalOptions
	ctx    context.Context
	fsys   diskfs.FS
	root   bool // running as root: restore owners
	files  int64
	dirs   int64
	links  int64
	bytes  int64
	errors int64
}

// runRestoreInside restores a file or directory tree from inside an image
// snapshot below target: the named entry becomes target/NAME (the file
// system root's contents go into target itself), with modes, mtimes and,
// when run as root, owners.
func runRestoreInside(ctx context.Context, g *globalOptions, f *snapshotFilter, snap, spec, target string) error {
	if target == "" {
		return errors.New("restore needs --target")
	}
	return g.withInsideSnapshot(ctx, f, snap, func(r *repo.Repository, s storedSnapshot) error {
		im, err := openInside(ctx, r, s, imageio.NewCache(insideCacheBytes))
		if err != nil {
			return err
		}
		defer im.Close()
		fsys, part, p, err := g.openInsideFS(im, spec)
		if err != nil {
			return err
		}
		e, err := fsys.Stat(p)
		if err != nil {
			return insideErr(part, p, err)
		}
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		dest := filepath.Join(target, e.Name)
		if e.Path == "/" {
			dest = target
		}
		x := &insideRestore{g: g, ctx: ctx, fsys: fsys, root: os.Geteuid() == 0}
		start := time.Now()
		if err := x.restore(e, dest); err != nil {
			return err
		}
		el := time.Since(start).Seconds()
		if g.json {
			if err := g.printJSON(map[string]any{
				"message_type": "summary", "snapshot_id": s.ID, "source": insideName(part, p), "target": dest,
				"files_restored": x.files, "dirs_restored": x.dirs, "symlinks_restored": x.links,
				"bytes_restored": x.bytes, "errors": x.errors, "duration_seconds": el,
			}); err != nil {
				return err
			}
		} else {
			g.printf("restored %d files, %d dirs, %d symlinks, %s from %s to %s in %s\n",
				x.files, x.dirs, x.links, formatBytes(x.bytes), insideName(part, p), dest, formatDuration(el))
		}
		if x.errors > 0 {
			return fmt.Errorf("%d errors while restoring", x.errors)
		}
		return nil
	})
}

// fail reports a per-file error and counts it; the restore goes on.
func (x *insideRestore) fail(p string, err error) {
	x.errors++
	x.g.warnf("warning: %s: %v\n", p, err)
}

// restore writes e to dest. Only a context error stops it; other errors
// are reported per file.
func (x *insideRestore) restore(e diskfs.Entry, dest string) error {
	if err := x.ctx.Err(); err != nil {
		return err
	}
	switch {
	case e.Mode.IsDir():
		return x.restoreDir(e, dest)
	case e.Mode.IsRegular():
		if err := x.restoreFile(e, dest); err != nil {
			if x.ctx.Err() != nil {
				return x.ctx.Err()
			}
			x.fail(e.Path, err)
			return nil
		}
		x.files++
		x.bytes += e.Size
	case e.Mode&fs.ModeSymlink != 0:
		os.Remove(dest)
		if err := os.Symlink(e.LinkTarget, dest); err != nil {
			x.fail(e.Path, err)
			return nil
		}
		x.setMeta(e, dest)
		x.links++
	default:
		x.g.warnf("warning: %s: skipped (%s)\n", e.Path, insideType(e.Mode))
	}
	return nil
}

func (x *insideRestore) restoreDir(e diskfs.Entry, dest string) error {
	if len(e.Path) > maxInsidePath {
		x.fail(e.Path, errors.New("path too long (a directory loop in a damaged file system?)"))
		return nil
	}
	if err := os.Mkdir(dest, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		x.fail(e.Path, err)
		return nil
	}
	ents, err := x.fsys.ReadDir(e.Path)
	if err != nil {
		if x.ctx.Err() != nil {
			return x.ctx.Err()
		}
		x.fail(e.Path, err)
	}
	for _, c := range ents {
		if !safeName(c.Name) {
			x.fail(c.Path, fmt.Errorf("unsafe file name %q not restored", c.Name))
			continue
		}
		if err := x.restore(c, filepath.Join(dest, c.Name)); err != nil {
			return err
		}
	}
	x.setMeta(e, dest)
	x.dirs++
	return nil
}

// safeName reports whether a name read from an image can be used as one
// path element below the target (a damaged or hostile image could hold
// "..", "a/b" or a NUL).
func safeName(n string) bool {
	return n != "" && n != "." && n != ".." && !strings.ContainsAny(n, "/\x00")
}

// restoreFile copies a file, leaving all-zero blocks as holes.
func (x *insideRestore) restoreFile(e diskfs.Entry, dest string) error {
	src, err := x.fsys.Open(e.Path)
	if err != nil {
		return err
	}
	os.Remove(dest) // replace a symlink rather than write through it
	out, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	var off int64
	for off < src.Size() {
		n, err := src.ReadAt(buf[:min(int64(len(buf)), src.Size()-off)], off)
		if n > 0 && !allZeroBytes(buf[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				out.Close()
				return werr
			}
		}
		off += int64(n)
		if err != nil && !(err == io.EOF && off == src.Size()) {
			out.Close()
			return err
		}
	}
	if err := out.Truncate(src.Size()); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	x.setMeta(e, dest)
	return nil
}

func allZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// setMeta sets owner (as root), mode and mtime, in that order: chown
// clears setuid bits.
func (x *insideRestore) setMeta(e diskfs.Entry, dest string) {
	if x.root {
		if err := os.Lchown(dest, int(e.UID), int(e.GID)); err != nil {
			x.fail(e.Path, err)
		}
	}
	if e.Mode&fs.ModeSymlink == 0 {
		if err := os.Chmod(dest, e.Mode.Perm()|e.Mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			x.fail(e.Path, err)
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(e.MTime.UnixNano()), unix.NsecToTimespec(e.MTime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dest, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		x.fail(e.Path, err)
	}
}

// walkInside calls fn for every entry below dir (not dir itself), a
// directory before its children. Unreadable directories are reported to
// onErr and skipped.
func walkInside(ctx context.Context, fsys diskfs.FS, dir string, fn func(diskfs.Entry) error, onErr func(string, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(dir) > maxInsidePath {
		onErr(dir, errors.New("path too long (a directory loop in a damaged file system?)"))
		return nil
	}
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		onErr(dir, err)
		return nil
	}
	for _, e := range ents {
		if err := fn(e); err != nil {
			return err
		}
		if e.Mode.IsDir() {
			if err := walkInside(ctx, fsys, e.Path, fn, onErr); err != nil {
				return err
			}
		}
	}
	return nil
}

// insidePattern matches a find pattern: against the base name, or the
// whole path when the pattern holds a slash.
func insidePattern(pattern, p string) bool {
	if strings.Contains(pattern, "/") {
		ok, _ := path.Match(pattern, p)
		return ok
	}
	ok, _ := path.Match(pattern, path.Base(p))
	return ok
}
