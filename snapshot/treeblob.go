package snapshot

import (
	"context"
	"fmt"

	"github.com/imagobackup/imago/chunk"
)

const (
	// TreeSplitSize is the size above which SaveTree splits a directory
	// into several tree blobs. 4 MiB keeps a blob quick to load and to
	// cache while a directory of ~40 000 typical entries still fits one
	// blob.
	TreeSplitSize = 4 << 20

	// maxTreeBlobSize is the largest tree blob SaveTree writes: a single
	// node larger than TreeSplitSize (huge xattrs or inline content) gets a
	// blob of its own up to this size. It equals pack.MaxBlobSize (12 MiB of
	// plaintext; not imported, snapshot depends on chunk only) so that
	// every tree blob can be stored.
	maxTreeBlobSize = 12 << 20

	// treeHeaderMax is the most bytes a tree blob spends before its first
	// node: the format byte and a node count of at most 10 varint bytes.
	treeHeaderMax = 1 + 10
)

// SaveTree encodes t and saves it through s as one or more KindTree blobs.
// A directory whose encoding would exceed TreeSplitSize is split at node
// boundaries into several blobs, each a valid tree of consecutive nodes; ids
// lists them in order (store them in Node.Subtrees). An empty tree is saved
// as one blob, so ids is never empty on success. added is the sum of the
// bytes s reports as added.
func SaveTree(ctx context.Context, s ChunkSaver, t *Tree) (ids []chunk.ID, added int, err error) {
	parts, err := splitTree(t)
	if err != nil {
		return nil, 0, err
	}
	for _, p := range parts {
		id, n, err := s.SaveChunk(ctx, chunk.KindTree, p)
		if err != nil {
			return nil, added, fmt.Errorf("save tree: %w", err)
		}
		ids = append(ids, id)
		added += n
	}
	return ids, added, nil
}

// splitTree returns the encodings of the tree blobs for t. Each node is
// encoded once into a reused buffer; a part is closed before the node that
// would take it past TreeSplitSize.
func splitTree(t *Tree) ([][]byte, error) {
	var (
		parts [][]byte
		body  []byte // encoded nodes of the open part
		count int    // nodes in the open part
		node  encoder
	)
	flush := func() {
		e := &encoder{buf: make([]byte, 0, treeHeaderMax+len(body))}
		e.byte(formatTreeV1)
		e.uvarint(uint64(count))
		parts = append(parts, append(e.buf, body...))
		body, count = body[:0], 0
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if i > 0 && t.Nodes[i-1].Name >= n.Name {
			return nil, fmt.Errorf("snapshot: encode tree: nodes not sorted by name at %q", n.Name)
		}
		node.buf = node.buf[:0]
		if err := appendNode(&node, n); err != nil {
			return nil, fmt.Errorf("snapshot: encode tree: node %q: %w", n.Name, err)
		}
		if treeHeaderMax+len(node.buf) > maxTreeBlobSize {
			return nil, fmt.Errorf("snapshot: encode tree: node %q needs %d bytes, more than a tree blob may hold",
				n.Name, len(node.buf))
		}
		if count > 0 && treeHeaderMax+len(body)+len(node.buf) > TreeSplitSize {
			flush()
		}
		body = append(body, node.buf...)
		count++
	}
	if count > 0 || len(parts) == 0 {
		flush()
	}
	return parts, nil
}

// LoadTree loads the tree blobs ids (as returned by SaveTree) and returns
// their nodes as one tree. Every blob must decode, and names must be sorted
// across blobs, or the error is a *FormatError naming the blob. No ids give
// an empty tree.
func LoadTree(ctx context.Context, l ChunkLoader, ids []chunk.ID) (*Tree, error) {
	t := &Tree{}
	var buf []byte
	for _, id := range ids {
		part, b, err := loadTreePart(ctx, l, id, buf)
		if err != nil {
			return nil, err
		}
		buf = b
		if len(t.Nodes) > 0 && len(part.Nodes) > 0 && t.Nodes[len(t.Nodes)-1].Name >= part.Nodes[0].Name {
			return nil, &FormatError{What: "tree", ID: id, Offset: -1, Reason: "names not sorted across tree blobs"}
		}
		if t.Nodes == nil {
			t.Nodes = part.Nodes
		} else {
			t.Nodes = append(t.Nodes, part.Nodes...)
		}
	}
	return t, nil
}

// loadTreePart loads and decodes one tree blob, reusing buf.
func loadTreePart(ctx context.Context, l ChunkLoader, id chunk.ID, buf []byte) (*Tree, []byte, error) {
	b, err := l.LoadChunk(ctx, chunk.Handle{ID: id, Kind: chunk.KindTree}, buf)
	if err != nil {
		return nil, buf, fmt.Errorf("load tree %v: %w", id.Short(), err)
	}
	t, err := DecodeTree(b)
	if err != nil {
		return nil, b, withID(err, id)
	}
	return t, b, nil
}
