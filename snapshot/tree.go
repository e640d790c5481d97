package snapshot

import (
	"fmt"
	"slices"
	"strings"

	"github.com/imagobackup/imago/chunk"
)

// MaxLevel is the highest content-list level a reader accepts. With at least
// minPageEntries (32) entries in every page but the last, 13 levels cover
// 2^64 extents; 16 leaves room and still bounds recursion on hostile data.
const MaxLevel = 16

// EncodeTree returns the binary encoding of t (format in
// docs/FORMAT.md, "Tree blobs"). The encoding is deterministic: equal trees
// give equal bytes, so an unchanged directory deduplicates. Nodes must be
// sorted by Name bytewise without duplicates, and every name must be valid
// (see ValidName). Xattrs are written sorted by name (the caller's slice is
// not modified); duplicate xattr names are an error. EncodeTree does not
// split large directories: SaveTree does.
func EncodeTree(t *Tree) ([]byte, error) {
	e := &encoder{buf: make([]byte, 0, 64+len(t.Nodes)*96)}
	e.byte(formatTreeV1)
	e.uvarint(uint64(len(t.Nodes)))
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if i > 0 && t.Nodes[i-1].Name >= n.Name {
			return nil, fmt.Errorf("snapshot: encode tree: nodes not sorted by name at %q", n.Name)
		}
		if err := appendNode(e, n); err != nil {
			return nil, fmt.Errorf("snapshot: encode tree: node %q: %w", n.Name, err)
		}
	}
	return e.buf, nil
}

// ValidName reports whether name may name a node: not empty, not "." or
// "..", and without '/' or NUL. Any other bytes (including invalid UTF-8)
// are allowed.
func ValidName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// validType reports whether t is a known node type.
func validType(t NodeType) bool { return t >= TypeFile && t <= TypeImage }

// appendNode appends the encoding of one node after validating it.
func appendNode(e *encoder, n *Node) error {
	if !ValidName(n.Name) {
		return fmt.Errorf("invalid name")
	}
	if !validType(n.Type) {
		return fmt.Errorf("invalid type %d", n.Type)
	}
	e.bytes(n.Name)
	e.byte(byte(n.Type))
	e.uvarint(uint64(n.Mode))
	e.uvarint(uint64(n.UID))
	e.uvarint(uint64(n.GID))
	e.bytes(n.User)
	e.bytes(n.Group)
	e.varint(n.MTime)
	e.varint(n.ATime)
	e.varint(n.CTime)
	e.uvarint(n.Size)
	e.uvarint(n.Inode)
	e.uvarint(n.Dev)
	e.uvarint(n.Links)
	e.uvarint(n.Rdev)
	e.bytes(n.LinkTarget)

	xs := n.Xattrs
	if !slices.IsSortedFunc(xs, cmpXattr) {
		xs = slices.Clone(xs)
		slices.SortFunc(xs, cmpXattr)
	}
	e.uvarint(uint64(len(xs)))
	for i, x := range xs {
		if x.Name == "" || strings.IndexByte(x.Name, 0) >= 0 {
			return fmt.Errorf("invalid xattr name %q", x.Name)
		}
		if i > 0 && xs[i-1].Name == x.Name {
			return fmt.Errorf("duplicate xattr %q", x.Name)
		}
		e.bytes(x.Name)
		e.rawBytes(x.Value)
	}

	if err := appendContent(e, &n.Content); err != nil {
		return err
	}
	e.uvarint(uint64(len(n.Subtrees)))
	for _, id := range n.Subtrees {
		if id.IsNull() {
			return fmt.Errorf("null subtree ID")
		}
		e.id(id)
	}
	return nil
}

func cmpXattr(a, b Xattr) int { return strings.Compare(a.Name, b.Name) }

// appendContent appends a content root: its level, then extents (level 0)
// or page refs (level > 0).
func appendContent(e *encoder, c *Content) error {
	if c.Level > MaxLevel {
		return fmt.Errorf("content level %d exceeds %d", c.Level, MaxLevel)
	}
	e.byte(c.Level)
	if c.Level == 0 {
		if len(c.Pages) != 0 {
			return fmt.Errorf("content at level 0 has page refs")
		}
		return appendExtents(e, c.Extents)
	}
	if len(c.Extents) != 0 {
		return fmt.Errorf("content at level %d has inline extents", c.Level)
	}
	if len(c.Pages) == 0 {
		return fmt.Errorf("content at level %d has no pages", c.Level)
	}
	return appendPageRefs(e, c.Pages)
}

// appendExtents appends a count and the extents. Lengths must be positive
// and sum to at most 2^64-1.
func appendExtents(e *encoder, xs []Extent) error {
	e.uvarint(uint64(len(xs)))
	var total uint64
	for _, x := range xs {
		if x.Length == 0 {
			return fmt.Errorf("zero-length extent")
		}
		if total+x.Length < total {
			return fmt.Errorf("content length overflows 64 bits")
		}
		total += x.Length
		if x.Hole() {
			e.byte(tagHole)
			e.uvarint(x.Length)
			continue
		}
		e.byte(tagData)
		e.uvarint(x.Length)
		e.id(x.ID)
	}
	return nil
}

// appendPageRefs appends a count and the page refs. IDs must not be null,
// lengths and counts must be positive and their sums must fit 64 bits.
func appendPageRefs(e *encoder, ps []PageRef) error {
	e.uvarint(uint64(len(ps)))
	var total, count uint64
	for _, p := range ps {
		if p.ID.IsNull() || p.Length == 0 || p.Count == 0 {
			return fmt.Errorf("invalid page ref %v (length %d, count %d)", p.ID.Short(), p.Length, p.Count)
		}
		if total+p.Length < total || count+p.Count < count {
			return fmt.Errorf("content length overflows 64 bits")
		}
		total += p.Length
		count += p.Count
		e.id(p.ID)
		e.uvarint(p.Length)
		e.uvarint(p.Count)
	}
	return nil
}

// DecodeTree decodes a tree blob. It is strict: unknown format bytes or
// node types, out-of-range values, invalid or unsorted names, non-minimal
// varints, counts larger than the data could hold and trailing bytes give a
// *FormatError; no input makes it panic. Empty slices decode as nil.
func DecodeTree(b []byte) (*Tree, error) {
	d := &decoder{what: "tree", b: b}
	if f := d.byte(); d.err == nil && f != formatTreeV1 {
		d.off--
		d.fail(fmt.Sprintf("unknown format byte 0x%02x", f))
	}
	n := d.count(minNodeLen)
	t := &Tree{}
	if n > 0 {
		t.Nodes = make([]Node, 0, capHint(n))
	}
	for i := 0; i < n && d.err == nil; i++ {
		start := d.off
		var node Node
		decodeNode(d, &node)
		if d.err == nil && i > 0 && t.Nodes[i-1].Name >= node.Name {
			d.off = start
			d.fail("nodes not sorted by name")
		}
		t.Nodes = append(t.Nodes, node)
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return t, nil
}

// decodeNode decodes one node into n; errors are left in d.
func decodeNode(d *decoder, n *Node) {
	start := d.off
	n.Name = d.bytes()
	if d.err == nil && !ValidName(n.Name) {
		d.off = start
		d.fail("invalid node name")
		return
	}
	at := d.off
	n.Type = NodeType(d.byte())
	if d.err == nil && !validType(n.Type) {
		d.off = at
		d.fail(fmt.Sprintf("unknown node type %d", n.Type))
		return
	}
	n.Mode = d.uint32()
	n.UID = d.uint32()
	n.GID = d.uint32()
	n.User = d.bytes()
	n.Group = d.bytes()
	n.MTime = d.varint()
	n.ATime = d.varint()
	n.CTime = d.varint()
	n.Size = d.uvarint()
	n.Inode = d.uvarint()
	n.Dev = d.uvarint()
	n.Links = d.uvarint()
	n.Rdev = d.uvarint()
	n.LinkTarget = d.bytes()

	nx := d.count(minXattrLen)
	if nx > 0 {
		n.Xattrs = make([]Xattr, 0, capHint(nx))
	}
	for i := 0; i < nx && d.err == nil; i++ {
		at := d.off
		x := Xattr{Name: d.bytes(), Value: d.rawBytes()}
		if d.err != nil {
			return
		}
		if x.Name == "" || strings.IndexByte(x.Name, 0) >= 0 {
			d.off = at
			d.fail("invalid xattr name")
			return
		}
		if i > 0 && n.Xattrs[i-1].Name >= x.Name {
			d.off = at
			d.fail("xattrs not sorted by name")
			return
		}
		n.Xattrs = append(n.Xattrs, x)
	}

	decodeContent(d, &n.Content)

	ns := d.count(chunk.IDSize)
	if ns > 0 {
		n.Subtrees = make([]chunk.ID, 0, capHint(ns))
	}
	for i := 0; i < ns && d.err == nil; i++ {
		at := d.off
		id := d.id()
		if d.err == nil && id.IsNull() {
			d.off = at
			d.fail("null subtree ID")
			return
		}
		n.Subtrees = append(n.Subtrees, id)
	}
}

// decodeContent decodes a content root into c; errors are left in d.
func decodeContent(d *decoder, c *Content) {
	at := d.off
	c.Level = d.byte()
	if d.err != nil {
		return
	}
	if c.Level > MaxLevel {
		d.off = at
		d.fail(fmt.Sprintf("content level %d exceeds %d", c.Level, MaxLevel))
		return
	}
	if c.Level == 0 {
		c.Extents = decodeExtents(d)
		return
	}
	c.Pages = decodePageRefs(d)
	if d.err == nil && len(c.Pages) == 0 {
		d.off = at
		d.fail("content above level 0 has no pages")
	}
}

// decodeExtents decodes a count and that many extents, with the checks of
// appendExtents.
func decodeExtents(d *decoder) []Extent {
	n := d.count(minExtentLen)
	if n == 0 {
		return nil
	}
	xs := make([]Extent, 0, capHint(n))
	var total uint64
	for i := 0; i < n && d.err == nil; i++ {
		at := d.off
		var x Extent
		tag := d.byte()
		x.Length = d.uvarint()
		switch {
		case d.err != nil:
			return nil
		case tag == tagData:
			x.ID = d.id()
			if d.err == nil && x.ID.IsNull() {
				d.off = at
				d.fail("data extent with null ID")
			}
		case tag != tagHole:
			d.off = at
			d.fail(fmt.Sprintf("unknown extent tag %d", tag))
		}
		if d.err == nil && x.Length == 0 {
			d.off = at
			d.fail("zero-length extent")
		}
		if d.err == nil && total+x.Length < total {
			d.off = at
			d.fail("content length overflows 64 bits")
		}
		total += x.Length
		xs = append(xs, x)
	}
	return xs
}

// decodePageRefs decodes a count and that many page refs, with the checks of
// appendPageRefs.
func decodePageRefs(d *decoder) []PageRef {
	n := d.count(minPageRefLen)
	if n == 0 {
		return nil
	}
	ps := make([]PageRef, 0, capHint(n))
	var total, count uint64
	for i := 0; i < n && d.err == nil; i++ {
		at := d.off
		p := PageRef{ID: d.id(), Length: d.uvarint(), Count: d.uvarint()}
		if d.err != nil {
			return nil
		}
		if p.ID.IsNull() || p.Length == 0 || p.Count == 0 {
			d.off = at
			d.fail("invalid page ref")
			return nil
		}
		if total+p.Length < total || count+p.Count < count {
			d.off = at
			d.fail("content length overflows 64 bits")
			return nil
		}
		total += p.Length
		count += p.Count
		ps = append(ps, p)
	}
	return ps
}
