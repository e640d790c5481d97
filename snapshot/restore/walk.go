package restore

import (
	"context"
	"errors"
	"fmt"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/filter"
)

// errBadName is wrapped by the error for a node name that would escape its
// directory or cannot be a file name; a snapshot never holds one unless it
// was made by hand or damaged.
var errBadName = errors.New("invalid file name in snapshot")

// walker visits the nodes of a snapshot tree that are in the restore set.
// A node is in the set when include is nil, when include matches it, or when
// include matches one of its parent directories. A directory that is not in
// the set itself but holds a node that is ("parent of a match") is visited
// too, just before its first such descendant.
type walker struct {
	l       snapshot.ChunkLoader
	include *filter.Matcher

	// enter is called in pre-order for each node visited.
	enter func(ctx context.Context, p string, n *snapshot.Node) error
	// leave, if not nil, is called for each directory enter was called for,
	// after all its descendants.
	leave func(p string, n *snapshot.Node)

	// stack holds the directories between the walk's start and the current
	// tree, with whether enter was called for them yet.
	stack []stackDir
}

type stackDir struct {
	path    string
	node    *snapshot.Node
	entered bool
}

// walkTree visits the entries of the directory p, listed by the tree blobs
// ids. inSet reports whether p itself is in the restore set, which puts all
// its descendants in the set.
func (w *walker) walkTree(ctx context.Context, ids []chunk.ID, p string, inSet bool) error {
	t, err := snapshot.LoadTree(ctx, w.l, ids)
	if err != nil {
		return fmt.Errorf("load tree of %s: %w", p, err)
	}
	for i := range t.Nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := &t.Nodes[i]
		if err := checkName(n.Name); err != nil {
			return fmt.Errorf("tree of %s: %w", p, err)
		}
		np := joinPath(p, n.Name)
		isDir := n.Type == snapshot.TypeDir
		sel := inSet || w.include == nil || w.include.Match(np, isDir)
		if sel {
			if err := w.enterParents(ctx); err != nil {
				return err
			}
			if err := w.enter(ctx, np, n); err != nil {
				return err
			}
		}
		if !isDir || !(sel || w.include.ChildMayMatch(np)) {
			continue
		}
		w.stack = append(w.stack, stackDir{path: np, node: n, entered: sel})
		if err := w.walkTree(ctx, n.Subtrees, np, sel); err != nil {
			return err
		}
		top := w.stack[len(w.stack)-1]
		w.stack = w.stack[:len(w.stack)-1]
		if top.entered && w.leave != nil {
			w.leave(top.path, top.node)
		}
	}
	return nil
}

// enterParents calls enter for the directories on the stack that were not
// entered yet, outermost first.
func (w *walker) enterParents(ctx context.Context) error {
	for i := range w.stack {
		d := &w.stack[i]
		if d.entered {
			continue
		}
		if err := w.enter(ctx, d.path, d.node); err != nil {
			return err
		}
		d.entered = true
	}
	return nil
}

// checkName rejects names that are not a single path element. The tree
// decoder rejects them too; checking again here keeps a restore from ever
// writing outside its target, whatever tree it is given.
func checkName(name string) error {
	if !snapshot.ValidName(name) {
		return fmt.Errorf("%w: %q", errBadName, name)
	}
	return nil
}

// joinPath returns the snapshot path of the entry name in directory dir.
func joinPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// linkKey identifies a file in the source file system: nodes with the same
// key and more than one link are hard links of one file.
type linkKey struct {
	dev, inode uint64
}

// hardLinkKey returns n's key and whether n may have other hard links in the
// snapshot.
func hardLinkKey(n *snapshot.Node) (linkKey, bool) {
	isFile := n.Type == snapshot.TypeFile || n.Type == snapshot.TypeImage
	if !isFile || n.Links < 2 || n.Inode == 0 {
		return linkKey{}, false
	}
	return linkKey{dev: n.Dev, inode: n.Inode}, true
}
