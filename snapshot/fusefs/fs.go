package fusefs

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/imageio"
)

// TimeLayout names snapshot directories under snapshots/, hosts/ and tags/
// (in the local time zone, as ls shows them). Two snapshots of the same
// second get "-1", "-2"... appended in ID order.
const TimeLayout = "2006-01-02T15:04:05Z07:00"

// cacheTimeout is how long the kernel may cache names and attributes: the
// file system never changes while mounted.
const cacheTimeout = time.Hour

// Snapshot is one snapshot to show: its record and its ID (hex).
type Snapshot struct {
	ID string
	*snapshot.Snapshot
}

// Options configure the file system.
type Options struct {
	// Cache holds decoded chunks for all open files; nil makes one of
	// imageio.DefaultCacheBytes.
	Cache *imageio.Cache
	// ReadAhead is passed to every imageio.ReaderAt (0: the default).
	ReadAhead int
	// TreeCacheNodes bounds the directory entries kept decoded (0:
	// DefaultTreeCacheNodes).
	TreeCacheNodes int
	// Logf, when set, receives errors that reach the kernel only as EIO.
	Logf func(format string, args ...any)
}

// filesystem is what every node of one mount shares.
type filesystem struct {
	l     snapshot.ChunkLoader
	cache *imageio.Cache
	trees *treeCache
	opts  Options
}

func (f *filesystem) logf(format string, args ...any) {
	if f.opts.Logf != nil {
		f.opts.Logf(format, args...)
	}
}

// NewRoot returns the root node of a file system showing snaps, loading
// blobs through l. Mount it with fs.Mount (or use Mount).
func NewRoot(l snapshot.ChunkLoader, snaps []Snapshot, opts Options) fs.InodeEmbedder {
	f := &filesystem{l: l, cache: opts.Cache, trees: newTreeCache(opts.TreeCacheNodes), opts: opts}
	if f.cache == nil {
		f.cache = imageio.NewCache(imageio.DefaultCacheBytes)
	}
	sorted := append([]Snapshot(nil), snaps...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if !sorted[i].Time.Equal(sorted[j].Time) {
			return sorted[i].Time.Before(sorted[j].Time)
		}
		return sorted[i].ID < sorted[j].ID
	})
	return &rootNode{fsys: f, snaps: sorted}
}

// Mount mounts the file system read-only on dir and starts serving it. The
// caller unmounts with the server's Unmount and waits with Wait.
func Mount(dir string, l snapshot.ChunkLoader, snaps []Snapshot, opts Options) (*fuse.Server, error) {
	timeout := cacheTimeout
	return fs.Mount(dir, NewRoot(l, snaps, opts), &fs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		MountOptions: fuse.MountOptions{
			FsName:  "imago",
			Name:    "imago",
			Options: []string{"ro", "default_permissions"},
			// Kernel read-ahead of 1 MiB (default 128 KiB): a
			// sequential reader asks for whole image chunks at once.
			MaxReadAhead: 1 << 20,
		},
	})
}

// rootNode builds the fixed part of the tree when it is mounted.
type rootNode struct {
	fs.Inode
	fsys  *filesystem
	snaps []Snapshot
}

var _ fs.NodeOnAdder = (*rootNode)(nil)

// OnAdd creates ids/, snapshots/, hosts/ and tags/ as persistent nodes.
func (r *rootNode) OnAdd(ctx context.Context) {
	ids := r.mkdir(ctx, &r.Inode, "ids")
	byTime := r.mkdir(ctx, &r.Inode, "snapshots")
	hosts := r.mkdir(ctx, &r.Inode, "hosts")
	tags := r.mkdir(ctx, &r.Inode, "tags")

	shortLen := uniquePrefixLen(r.snaps)
	for _, s := range r.snaps {
		r.addSnapshot(ctx, ids, s.ID[:min(shortLen, len(s.ID))], s)
	}
	r.addTimeline(ctx, byTime, r.snaps)
	groups := func(key func(Snapshot) []string) map[string][]Snapshot {
		m := make(map[string][]Snapshot)
		for _, s := range r.snaps {
			for _, k := range key(s) {
				m[safeName(k)] = append(m[safeName(k)], s)
			}
		}
		return m
	}
	for host, ss := range groups(func(s Snapshot) []string { return []string{s.Host} }) {
		r.addTimeline(ctx, r.mkdir(ctx, hosts, host), ss)
	}
	for tag, ss := range groups(func(s Snapshot) []string { return s.Tags }) {
		r.addTimeline(ctx, r.mkdir(ctx, tags, tag), ss)
	}
}

func (r *rootNode) mkdir(ctx context.Context, parent *fs.Inode, name string) *fs.Inode {
	ch := parent.NewPersistentInode(ctx, &fs.Inode{}, fs.StableAttr{Mode: syscall.S_IFDIR})
	parent.AddChild(name, ch, false)
	return ch
}

// addTimeline adds one directory per snapshot (oldest first) named by time,
// and a "latest" symlink to the newest.
func (r *rootNode) addTimeline(ctx context.Context, dir *fs.Inode, snaps []Snapshot) {
	last := ""
	seen := make(map[string]int)
	for _, s := range snaps {
		name := s.Time.Local().Format(TimeLayout)
		if n := seen[name]; n > 0 {
			seen[name]++
			name = fmt.Sprintf("%s-%d", name, n)
		} else {
			seen[name] = 1
		}
		r.addSnapshot(ctx, dir, name, s)
		last = name
	}
	if last != "" {
		link := dir.NewPersistentInode(ctx, &fs.MemSymlink{Data: []byte(last)}, fs.StableAttr{Mode: syscall.S_IFLNK})
		dir.AddChild("latest", link, false)
	}
}

// addSnapshot adds the root directory of snapshot s as dir/name. Inode
// numbers below it are salted with the directory's path, so that the same
// snapshot shown in several places never gives one directory two parents.
func (r *rootNode) addSnapshot(ctx context.Context, dir *fs.Inode, name string, s Snapshot) {
	salt := hash64([]byte(dir.Path(nil)), []byte(name))
	n := &snapRoot{fsys: r.fsys, snap: s, salt: salt}
	ch := dir.NewPersistentInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: inoFor(salt, "")})
	dir.AddChild(name, ch, false)
}

// uniquePrefixLen returns the shortest ID prefix length (at least 8) that
// tells all snapshots apart.
func uniquePrefixLen(snaps []Snapshot) int {
	for n := 8; n < 64; n += 4 {
		seen := make(map[string]bool, len(snaps))
		ok := true
		for _, s := range snaps {
			p := s.ID[:min(n, len(s.ID))]
			if seen[p] {
				ok = false
				break
			}
			seen[p] = true
		}
		if ok {
			return n
		}
	}
	return 64
}

// safeName turns a host or tag into a directory name.
func safeName(s string) string {
	s = strings.ReplaceAll(s, "/", "_")
	s = strings.ReplaceAll(s, "\x00", "_")
	if s == "" || s == "." || s == ".." {
		return "_" + s
	}
	return s
}

// hash64 hashes parts into an inode-number-sized value.
func hash64(parts ...[]byte) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	return h.Sum64()
}

// inoFor returns the inode number of the entry at path (names joined by
// '/') below a snapshot root with the given salt. Numbers stay below 2^63,
// where go-fuse hands out its own, and avoid the reserved 0 and 1.
func inoFor(salt uint64, path string) uint64 {
	return fixIno(hash64(binary.LittleEndian.AppendUint64(nil, salt), []byte(path)))
}

// inoForLink returns the inode number shared by the names of one
// hard-linked file (same device and inode when backed up).
func inoForLink(salt uint64, n *snapshot.Node) uint64 {
	b := binary.LittleEndian.AppendUint64(nil, salt)
	b = binary.LittleEndian.AppendUint64(b, n.Dev)
	b = binary.LittleEndian.AppendUint64(b, n.Inode)
	return fixIno(hash64([]byte("hardlink"), b))
}

func fixIno(v uint64) uint64 {
	v &= 1<<63 - 1
	if v < 2 {
		v += 2
	}
	return v
}
