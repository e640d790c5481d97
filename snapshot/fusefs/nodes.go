package fusefs

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/imageio"
)

// snapRoot is the directory of one snapshot: its root tree's nodes.
type snapRoot struct {
	fs.Inode
	fsys *filesystem
	snap Snapshot
	salt uint64
}

var (
	_ fs.NodeGetattrer = (*snapRoot)(nil)
	_ fs.NodeLookuper  = (*snapRoot)(nil)
	_ fs.NodeReaddirer = (*snapRoot)(nil)
)

// Getattr gives the snapshot directory the snapshot's time.
func (d *snapRoot) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
	t := d.snap.Time
	out.SetTimes(&t, &t, &t)
	return 0
}

func (d *snapRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return lookup(ctx, d.fsys, &d.Inode, []chunk.ID{d.snap.Tree}, d.salt, "", name, out)
}

func (d *snapRoot) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return readdir(ctx, d.fsys, []chunk.ID{d.snap.Tree}, d.salt, "")
}

// node is any entry inside a snapshot: directory, file, image, symlink,
// device, FIFO or socket. Its node is a copy owned by it.
type node struct {
	fs.Inode
	fsys *filesystem
	n    snapshot.Node
	salt uint64
	path string // from the snapshot root, for child inode numbers
}

var (
	_ fs.NodeGetattrer   = (*node)(nil)
	_ fs.NodeLookuper    = (*node)(nil)
	_ fs.NodeReaddirer   = (*node)(nil)
	_ fs.NodeReadlinker  = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeGetxattrer  = (*node)(nil)
	_ fs.NodeListxattrer = (*node)(nil)
)

// typeBits returns the S_IFMT bits of a node type.
func typeBits(t snapshot.NodeType) uint32 {
	switch t {
	case snapshot.TypeDir:
		return syscall.S_IFDIR
	case snapshot.TypeSymlink:
		return syscall.S_IFLNK
	case snapshot.TypeBlockDev:
		return syscall.S_IFBLK
	case snapshot.TypeCharDev:
		return syscall.S_IFCHR
	case snapshot.TypeFIFO:
		return syscall.S_IFIFO
	case snapshot.TypeSocket:
		return syscall.S_IFSOCK
	}
	return syscall.S_IFREG // files and images
}

// fillAttr sets out from the recorded metadata of n.
func fillAttr(n *snapshot.Node, out *fuse.Attr) {
	perm := n.Mode & 0o7777
	if n.Type == snapshot.TypeImage {
		perm &^= 0o222 // an image is served read-only
	}
	out.Mode = typeBits(n.Type) | perm
	out.Size = n.Size
	if n.Type == snapshot.TypeSymlink {
		out.Size = uint64(len(n.LinkTarget))
	}
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 4096
	out.Nlink = uint32(max(n.Links, 1))
	if n.Type == snapshot.TypeDir {
		out.Nlink = uint32(max(n.Links, 2))
	}
	out.Uid, out.Gid = n.UID, n.GID
	out.Rdev = uint32(n.Rdev)
	at, mt, ct := time.Unix(0, n.ATime), time.Unix(0, n.MTime), time.Unix(0, n.CTime)
	out.SetTimes(&at, &mt, &ct)
}

func (e *node) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(&e.n, &out.Attr)
	return 0
}

func (e *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e.n.Type != snapshot.TypeDir {
		return nil, syscall.ENOTDIR
	}
	return lookup(ctx, e.fsys, &e.Inode, e.n.Subtrees, e.salt, e.path, name, out)
}

func (e *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if e.n.Type != snapshot.TypeDir {
		return nil, syscall.ENOTDIR
	}
	return readdir(ctx, e.fsys, e.n.Subtrees, e.salt, e.path)
}

func (e *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if e.n.Type != snapshot.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(e.n.LinkTarget), 0
}

func (e *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	for _, x := range e.n.Xattrs {
		if x.Name == attr {
			if len(dest) < len(x.Value) {
				return uint32(len(x.Value)), syscall.ERANGE
			}
			return uint32(copy(dest, x.Value)), 0
		}
	}
	return 0, syscall.ENODATA
}

func (e *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	for _, x := range e.n.Xattrs {
		b = append(append(b, x.Name...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

// Open gives files and images a handle reading through imageio. Opening
// for writing fails with EROFS.
func (e *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if e.n.Type != snapshot.TypeFile && e.n.Type != snapshot.TypeImage {
		return nil, 0, syscall.EINVAL
	}
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	r := imageio.NewReaderAt(e.fsys.l, e.n.Content, int64(e.n.Size), imageio.Options{
		Cache: e.fsys.cache, ReadAhead: e.fsys.opts.ReadAhead,
	})
	// The content never changes: the kernel may keep cached pages across
	// opens.
	return &handle{fsys: e.fsys, r: r, name: e.n.Name}, fuse.FOPEN_KEEP_CACHE, 0
}

// handle is an open file or image.
type handle struct {
	fsys *filesystem
	r    *imageio.ReaderAt
	name string
}

var (
	_ fs.FileReader   = (*handle)(nil)
	_ fs.FileReleaser = (*handle)(nil)
)

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.r.ReadAtContext(ctx, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		if ctx.Err() != nil {
			return nil, syscall.EINTR
		}
		h.fsys.logf("read %s at %d: %v", h.name, off, err)
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.r.Close()
	return 0
}

// lookup finds name in the directory listed by ids and makes its inode.
func lookup(ctx context.Context, f *filesystem, parent *fs.Inode, ids []chunk.ID, salt uint64, dir, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, err := f.trees.load(ctx, f.l, ids)
	if err != nil {
		f.logf("load directory %q: %v", dir, err)
		return nil, syscall.EIO
	}
	i, ok := slices.BinarySearchFunc(t.Nodes, name, func(n snapshot.Node, name string) int { return strings.Compare(n.Name, name) })
	if !ok {
		return nil, syscall.ENOENT
	}
	n := t.Nodes[i] // a copy: the cached tree is shared
	path := joinPath(dir, name)
	child := &node{fsys: f, n: n, salt: salt, path: path}
	fillAttr(&n, &out.Attr)
	return parent.NewInode(ctx, child, fs.StableAttr{Mode: typeBits(n.Type), Ino: ino(salt, path, &n)}), 0
}

// readdir lists the directory listed by ids.
func readdir(ctx context.Context, f *filesystem, ids []chunk.ID, salt uint64, dir string) (fs.DirStream, syscall.Errno) {
	t, err := f.trees.load(ctx, f.l, ids)
	if err != nil {
		f.logf("load directory %q: %v", dir, err)
		return nil, syscall.EIO
	}
	list := make([]fuse.DirEntry, len(t.Nodes))
	for i := range t.Nodes {
		n := &t.Nodes[i]
		list[i] = fuse.DirEntry{Name: n.Name, Mode: typeBits(n.Type), Ino: ino(salt, joinPath(dir, n.Name), n)}
	}
	return fs.NewListDirStream(list), 0
}

// ino returns the inode number of n at path: shared by the names of a
// hard-linked file, else derived from the path.
func ino(salt uint64, path string, n *snapshot.Node) uint64 {
	if n.Type != snapshot.TypeDir && n.Links > 1 && n.Inode != 0 {
		return inoForLink(salt, n)
	}
	return inoFor(salt, path)
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}
