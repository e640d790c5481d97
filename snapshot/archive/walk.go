package archive

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"golang.org/x/sys/unix"
)

// dirState collects the nodes of one directory while its entries are
// processed. The walker appends nodes; a file reader fills in its file's
// node through the pointer it got. Whoever drops pending to zero saves the
// tree and completes the parent.
type dirState struct {
	parent *dirState
	slot   *snapshot.Node // this directory's node in parent.nodes; nil for the root
	// prev is the parent snapshot's node for this directory, prevTree its
	// listing; nil when the parent snapshot has none.
	prev     *snapshot.Node
	prevTree *snapshot.Tree
	// nodes has its capacity fixed at creation (the listing's length), so
	// that pointers into it stay valid while the walker appends. A node
	// whose Type is 0 was left out.
	nodes []snapshot.Node
	// dropIfEmpty marks an excluded directory entered only because a
	// negated pattern may re-include something below it.
	dropIfEmpty bool
	// pending counts the children not yet complete, plus one for the
	// walker until it has listed the whole directory.
	pending atomic.Int64
}

func newDirState(parent *dirState, slot, prev *snapshot.Node, prevTree *snapshot.Tree, n int) *dirState {
	d := &dirState{parent: parent, slot: slot, prev: prev, prevTree: prevTree, nodes: make([]snapshot.Node, 0, n)}
	d.pending.Store(1)
	return d
}

// add appends a complete node. Only the walker calls it.
func (d *dirState) add(n snapshot.Node) *snapshot.Node {
	if len(d.nodes) == cap(d.nodes) {
		panic("archive: more entries than the directory listing held")
	}
	d.nodes = append(d.nodes, n)
	return &d.nodes[len(d.nodes)-1]
}

// addPending appends a node that another goroutine (or a subdirectory)
// completes, after which it calls done.
func (d *dirState) addPending(n snapshot.Node) *snapshot.Node {
	d.pending.Add(1)
	return d.add(n)
}

// prevNode returns the parent snapshot's node named name in this
// directory, or nil.
func (d *dirState) prevNode(name string) *snapshot.Node {
	if d.prevTree == nil {
		return nil
	}
	nodes := d.prevTree.Nodes
	i, ok := slices.BinarySearchFunc(nodes, name, func(n snapshot.Node, name string) int {
		return strings.Compare(n.Name, name)
	})
	if !ok {
		return nil
	}
	return &nodes[i]
}

// done completes one child (or the walker's listing) of d. The call that
// completes the last one saves d's tree and continues with d's parent.
func (a *archiver) done(ctx context.Context, d *dirState) error {
	for d != nil {
		if d.pending.Add(-1) != 0 {
			return nil
		}
		var err error
		d, err = a.finishDir(ctx, d)
		if err != nil {
			return err
		}
	}
	return nil
}

// finishDir saves the tree of a complete directory into its node and
// returns the parent to complete.
func (a *archiver) finishDir(ctx context.Context, d *dirState) (*dirState, error) {
	kept := d.nodes[:0]
	for _, n := range d.nodes {
		if n.Type != 0 {
			kept = append(kept, n)
		}
	}
	d.nodes = nil
	if d.dropIfEmpty && len(kept) == 0 {
		d.slot.Type = 0
		return d.parent, nil
	}
	ids, _, err := snapshot.SaveTree(ctx, a.count, &snapshot.Tree{Nodes: kept})
	if err != nil {
		return nil, err
	}
	if d.slot == nil {
		a.root = ids
		return nil, nil
	}
	a.countDir(d.prev, ids)
	d.slot.Subtrees = ids
	return d.parent, nil
}

// countDir counts a directory as new, changed or unchanged against the
// parent snapshot.
func (a *archiver) countDir(prev *snapshot.Node, ids []chunk.ID) {
	switch {
	case prev == nil || prev.Type != snapshot.TypeDir:
		a.stats.dirsNew.Add(1)
	case slices.Equal(prev.Subtrees, ids):
		a.stats.dirsUnchanged.Add(1)
	default:
		a.stats.dirsChanged.Add(1)
	}
}

// loadPrev returns the listing of the parent snapshot's directory node, or
// nil when there is none.
func (a *archiver) loadPrev(ctx context.Context, prev *snapshot.Node) (*snapshot.Tree, error) {
	if prev == nil || prev.Type != snapshot.TypeDir || len(prev.Subtrees) == 0 {
		return nil, nil
	}
	t, err := snapshot.LoadTree(ctx, a.loader, prev.Subtrees)
	if err != nil {
		return nil, fmt.Errorf("archive: load parent tree: %w", err)
	}
	return t, nil
}

// walkRoot walks the tree of targets into the root tree.
func (a *archiver) walkRoot(ctx context.Context, root *target, prevRoot *snapshot.Tree) error {
	if root.selected {
		// The whole file system: the root tree is the listing of "/".
		return a.walkDir(ctx, nil, "/", snapshot.Node{}, nil, prevRoot, uint64(root.st.Dev), false)
	}
	d := newDirState(nil, nil, nil, prevRoot, len(root.children))
	return a.walkTargets(ctx, d, root)
}

// walkTargets records the children of an intermediate directory t into d:
// the given paths in full, and the directories on the way to them with only
// the entries that lead to a given path.
func (a *archiver) walkTargets(ctx context.Context, d *dirState, t *target) error {
	for _, c := range t.children {
		if err := ctx.Err(); err != nil {
			return err
		}
		if c.selected {
			if err := a.entry(ctx, d, c.path, c.name, &c.st, uint64(c.st.Dev)); err != nil {
				return err
			}
			continue
		}
		// A directory above a given path is recorded with its own
		// metadata. When it is a symlink (/var/run → /run), the directory
		// it leads to is recorded in its place, since that is where the
		// given path lies.
		var st unix.Stat_t
		err := a.lstat(c.path, &st)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			err = unix.Stat(c.path, &st)
		}
		if err != nil {
			return fmt.Errorf("archive: stat %s: %w", c.path, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("archive: %s is not a directory", c.path)
		}
		n := a.nodeFromStat(c.name, &st)
		a.addXattrs(c.path, &n)
		prev := d.prevNode(c.name)
		prevTree, err := a.loadPrev(ctx, prev)
		if err != nil {
			return err
		}
		child := newDirState(d, d.addPending(n), prev, prevTree, len(c.children))
		if err := a.walkTargets(ctx, child, c); err != nil {
			return err
		}
	}
	return a.done(ctx, d)
}

// entry records the entry at path (named name, lstat result st) into d.
// fsDev is the device of the given path it lies under, for OneFileSystem.
func (a *archiver) entry(ctx context.Context, d *dirState, path, name string, st *unix.Stat_t, fsDev uint64) error {
	typ := nodeType(st.Mode)
	if typ == 0 {
		a.unreadable(path, fmt.Errorf("unknown file type %#o", st.Mode&unix.S_IFMT))
		return nil
	}
	reinclude := false
	if a.opts.Exclude.Match(path, typ == snapshot.TypeDir) {
		if typ != snapshot.TypeDir || !a.opts.Exclude.ChildMayReinclude(path) {
			return nil
		}
		reinclude = true
	}
	n := a.nodeFromStat(name, st)
	if typ == snapshot.TypeSymlink {
		target, err := readLink(path)
		if err != nil {
			a.unreadable(path, err)
			return nil
		}
		n.LinkTarget = target
	}
	a.addXattrs(path, &n)
	prev := d.prevNode(name)

	switch typ {
	case snapshot.TypeDir:
		cross, dev := a.crossesDevice(path, st, fsDev)
		if cross {
			// A mount point: record the directory, not what is mounted.
			ids, _, err := snapshot.SaveTree(ctx, a.count, &snapshot.Tree{})
			if err != nil {
				return err
			}
			n.Subtrees = ids
			a.countDir(prev, ids)
			d.add(n)
			return nil
		}
		return a.walkDir(ctx, d, path, n, prev, nil, dev, reinclude)
	case snapshot.TypeFile:
		if unchanged(prev, &n) {
			n.Content = prev.Content
			a.stats.filesUnchanged.Add(1)
			a.stats.bytesReused.Add(int64(n.Size))
			a.opts.Progress.addBytes(int64(n.Size), 0)
			a.fileDone(&n)
			d.add(n)
			return nil
		}
		slot := d.addPending(n)
		fst := *st
		a.files.Go(func() error {
			if err := a.saveFile(ctx, path, slot, &fst, prev); err != nil {
				return err
			}
			return a.done(ctx, d)
		})
		return nil
	default:
		d.add(n)
		return nil
	}
}

// unchanged reports whether the file n may reuse the content of the parent
// snapshot's node prev without being read.
func unchanged(prev, n *snapshot.Node) bool {
	return prev != nil && prev.Type == snapshot.TypeFile &&
		prev.MTime == n.MTime && prev.CTime == n.CTime &&
		prev.Size == n.Size && prev.Inode == n.Inode
}

// addXattrs reads the extended attributes of path into n. A failure is
// reported; the node is kept without them.
func (a *archiver) addXattrs(path string, n *snapshot.Node) {
	xs, err := readXattrs(path)
	if err != nil {
		a.report(path, err, false)
		return
	}
	n.Xattrs = xs
}

// walkDir lists the directory at path and records it, with node n, into
// parent (nil for the root, whose parent-snapshot listing is prevRoot).
func (a *archiver) walkDir(ctx context.Context, parent *dirState, path string, n snapshot.Node, prev *snapshot.Node, prevRoot *snapshot.Tree, fsDev uint64, dropIfEmpty bool) error {
	names, err := a.readDirNames(path)
	switch {
	case err != nil && parent == nil:
		return fmt.Errorf("archive: list %s: %w", path, err)
	case err != nil:
		a.unreadable(path, err)
		return nil
	case a.excludedByPresence(names):
		if parent != nil {
			return nil
		}
		names = nil // "/" itself is excluded: an empty root tree
	}
	slices.Sort(names)
	prevTree := prevRoot
	if parent != nil {
		if prevTree, err = a.loadPrev(ctx, prev); err != nil {
			return err
		}
	}
	var d *dirState
	if parent == nil {
		d = newDirState(nil, nil, nil, prevTree, len(names))
	} else {
		d = newDirState(parent, parent.addPending(n), prev, prevTree, len(names))
	}
	d.dropIfEmpty = dropIfEmpty
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := joinPath(path, name)
		var st unix.Stat_t
		if err := a.lstat(p, &st); err != nil {
			if !errors.Is(err, unix.ENOENT) { // removed since the listing
				a.unreadable(p, &pathError{op: "lstat", path: p, err: err})
			}
			continue
		}
		if err := a.entry(ctx, d, p, name, &st, fsDev); err != nil {
			return err
		}
	}
	return a.done(ctx, d)
}
