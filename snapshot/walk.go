package snapshot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/imagobackup/imago/chunk"
)

// ErrSkipDir, returned by a WalkFunc for a directory, makes Walk skip the
// directory's children. Returned for any other node it is ignored.
var ErrSkipDir = errors.New("snapshot: skip this directory")

// maxDepth bounds directory nesting during walks. Paths are limited to 4096
// bytes on Linux, so no real tree is deeper than 2048 levels; the limit stops
// a hostile repository from exhausting the stack.
const maxDepth = 4096

// WalkFunc is called by Walk for every node with its path ('/'-joined names
// from the root tree, no leading slash). node is valid only during the
// call. Returning ErrSkipDir skips a directory's children; any other error
// stops the walk and Walk returns it unchanged.
type WalkFunc func(path string, node *Node) error

// Walk visits every node reachable from the root tree blob, depth-first, in
// name order, a directory before its children. It holds one directory
// listing per level of nesting in memory.
func Walk(ctx context.Context, l ChunkLoader, root chunk.ID, fn WalkFunc) error {
	t, err := LoadTree(ctx, l, []chunk.ID{root})
	if err != nil {
		return err
	}
	return walkTree(ctx, l, t, "", 0, fn)
}

func walkTree(ctx context.Context, l ChunkLoader, t *Tree, prefix string, depth int, fn WalkFunc) error {
	if depth >= maxDepth {
		return &FormatError{What: "tree", Offset: -1, Reason: fmt.Sprintf("directories nested deeper than %d at %q", maxDepth, prefix)}
	}
	for i := range t.Nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := &t.Nodes[i]
		path := n.Name
		if prefix != "" {
			path = prefix + "/" + n.Name
		}
		err := fn(path, n)
		if errors.Is(err, ErrSkipDir) {
			continue
		}
		if err != nil {
			return err
		}
		if n.Type != TypeDir || len(n.Subtrees) == 0 {
			continue
		}
		sub, err := LoadTree(ctx, l, n.Subtrees)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := walkTree(ctx, l, sub, path, depth+1, fn); err != nil {
			return err
		}
	}
	return nil
}

// FindNode returns the node at path ('/'-separated names from the root tree;
// leading, trailing and repeated slashes are ignored). A missing name, or a
// name below a non-directory, gives an error wrapping ErrNotFound.
func FindNode(ctx context.Context, l ChunkLoader, root chunk.ID, path string) (*Node, error) {
	var names []string
	for _, s := range strings.Split(path, "/") {
		if s != "" {
			names = append(names, s)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("snapshot: find %q: empty path: %w", path, ErrNotFound)
	}
	ids := []chunk.ID{root}
	for i, name := range names {
		t, err := LoadTree(ctx, l, ids)
		if err != nil {
			return nil, fmt.Errorf("snapshot: find %q: %w", path, err)
		}
		j, ok := slices.BinarySearchFunc(t.Nodes, name, func(n Node, name string) int { return strings.Compare(n.Name, name) })
		if !ok {
			return nil, fmt.Errorf("snapshot: find %q: %w", path, ErrNotFound)
		}
		n := &t.Nodes[j]
		if i == len(names)-1 {
			return n, nil
		}
		if n.Type != TypeDir {
			return nil, fmt.Errorf("snapshot: find %q: %s is not a directory: %w", path, strings.Join(names[:i+1], "/"), ErrNotFound)
		}
		ids = n.Subtrees
	}
	return nil, fmt.Errorf("snapshot: find %q: %w", path, ErrNotFound) // not reached: the loop returns
}

// Blobs calls fn for every blob reference in the snapshot with root tree
// root: tree blobs, content-list pages (both chunk.KindTree; with the base
// page of every delta page, and the base's data) and data blobs
// (chunk.KindData), each parent before what it references. Before visiting a
// blob it calls seen (when not nil); if seen returns true the blob and
// everything below it are skipped. With seen nil a blob referenced twice is
// visited twice; a caller that records every handle in seen visits each
// distinct blob of many snapshots once, so prune and check pay for what the
// snapshots share only once.
// seen and fn are called from the calling goroutine; an error from fn stops
// the walk and is returned unchanged.
//
// A delta page's base page is visited with the data of all its entries:
// the base may be a plain page of another snapshot, met there after seen
// marked it, whose data must then have been visited. So with Blobs the data
// of the entries a delta replaced counts as used; BlobsWithBases avoids
// that for walks sharing one seen set.
func Blobs(ctx context.Context, l ChunkLoader, root chunk.ID, seen func(chunk.Handle) bool, fn func(chunk.Handle) error) error {
	return BlobsWithBases(ctx, l, root, seen, nil, fn)
}

// BlobsWithBases is Blobs for walks of several snapshots that share seen
// and bases (not nil): it visits a delta page's base page without the
// data of its entries, and records it in bases, so that a walk that meets
// the base as a plain page after seen skipped it still visits its data.
// Then the data only a base names (entries later snapshots replaced) is
// not visited. bases must be shared by every walk that shares seen.
func BlobsWithBases(ctx context.Context, l ChunkLoader, root chunk.ID, seen func(chunk.Handle) bool, bases *BaseSet, fn func(chunk.Handle) error) error {
	v := &blobVisitor{l: l, seen: seen, bases: bases, fn: fn}
	return v.tree(ctx, root, 0)
}

// BaseSet holds the base pages of delta pages that walks sharing a seen
// set marked without visiting their data (see BlobsWithBases). It is safe
// for concurrent use. It holds each such base until a walk meets it as a
// plain page, ~100 bytes per base: at most one per level-0 page of the
// repository's image snapshots (~450 000 for a 1 TiB image, 45 MiB).
type BaseSet struct {
	mu sync.Mutex // guards ids
	// ids are the bases met as bases and not since as plain pages.
	ids map[chunk.ID]struct{}
}

// NewBaseSet returns an empty BaseSet.
func NewBaseSet() *BaseSet { return &BaseSet{ids: make(map[chunk.ID]struct{})} }

func (s *BaseSet) add(id chunk.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids[id] = struct{}{}
}

// take removes id and reports whether it was there.
func (s *BaseSet) take(id chunk.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	delete(s.ids, id)
	return ok
}

type blobVisitor struct {
	l     ChunkLoader
	seen  func(chunk.Handle) bool
	bases *BaseSet // nil: visit bases with their data
	fn    func(chunk.Handle) error
	buf   []byte
}

// visit reports whether h should be descended into, after calling fn.
func (v *blobVisitor) visit(h chunk.Handle) (bool, error) {
	if v.seen != nil && v.seen(h) {
		return false, nil
	}
	if err := v.fn(h); err != nil {
		return false, err
	}
	return true, nil
}

func (v *blobVisitor) tree(ctx context.Context, id chunk.ID, depth int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if depth >= maxDepth {
		return &FormatError{What: "tree", ID: id, Offset: -1, Reason: fmt.Sprintf("directories nested deeper than %d", maxDepth)}
	}
	ok, err := v.visit(chunk.Handle{ID: id, Kind: chunk.KindTree})
	if !ok || err != nil {
		return err
	}
	t, buf, err := loadTreePart(ctx, v.l, id, v.buf)
	v.buf = buf
	if err != nil {
		return err
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if err := v.content(ctx, &n.Content); err != nil {
			return err
		}
		for _, sub := range n.Subtrees {
			if err := v.tree(ctx, sub, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func (v *blobVisitor) content(ctx context.Context, c *Content) error {
	if err := v.extents(c.Extents); err != nil {
		return err
	}
	if len(c.Pages) == 0 {
		return nil
	}
	r := NewContentReader(v.l, *c)
	if r.err != nil {
		return r.err
	}
	return v.pages(ctx, r, r.root)
}

func (v *blobVisitor) extents(xs []Extent) error {
	for _, x := range xs {
		if x.Hole() {
			continue
		}
		if _, err := v.visit(chunk.Handle{ID: x.ID, Kind: chunk.KindData}); err != nil {
			return err
		}
	}
	return nil
}

// pages visits the pages p refers to, and what they reference.
func (v *blobVisitor) pages(ctx context.Context, r *ContentReader, p *page) error {
	for _, ref := range p.refs {
		ok, err := v.visit(chunk.Handle{ID: ref.ID, Kind: chunk.KindTree})
		if err != nil {
			return err
		}
		// A level-0 page marked before only as a delta's base: its data
		// was not visited then.
		if !ok && (p.level != 1 || v.bases == nil || !v.bases.take(ref.ID)) {
			continue
		}
		child, err := r.load(ctx, ref, p.level-1)
		if err != nil {
			return err
		}
		if child.level == 0 {
			err = v.base(ctx, r, ref.ID, child)
			if err == nil {
				err = v.extents(child.extents)
			}
		} else {
			err = v.pages(ctx, r, child)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// base visits the base page of delta page p (blob id), a KindTree blob the
// snapshot needs to read p (often saved by an older snapshot that may be
// forgotten). Without a BaseSet it visits the data of all the base's
// entries too (see Blobs). With one it records the base first, so that a
// walk that meets it as a plain page after seen marked it here visits its
// data then, whichever of the two walks calls seen first.
func (v *blobVisitor) base(ctx context.Context, r *ContentReader, id chunk.ID, p *page) error {
	if p.delta == nil {
		return nil
	}
	h := chunk.Handle{ID: p.delta.base, Kind: chunk.KindTree}
	if v.bases != nil {
		v.bases.add(h.ID)
		_, err := v.visit(h)
		return err
	}
	ok, err := v.visit(h)
	if !ok || err != nil {
		return err
	}
	b, err := r.loadBase(ctx, p.delta.base, id)
	if err != nil {
		return err
	}
	return v.extents(b.extents)
}
