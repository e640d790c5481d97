package snapshot

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imagobackup/imago/chunk"
)

func TestTreeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		tree *Tree
	}{
		{"empty", &Tree{}},
		{"every node kind and field", sampleTree()},
		{"single byte names", &Tree{Nodes: []Node{{Name: "\x01", Type: TypeFile}, {Name: "\xff", Type: TypeFile}}}},
		{"extreme values", &Tree{Nodes: []Node{{Name: "x", Type: TypeFile, Mode: ^uint32(0), UID: ^uint32(0),
			MTime: -1 << 63, ATime: 1<<63 - 1, Size: ^uint64(0), Inode: ^uint64(0),
			Content: Content{Extents: []Extent{{Length: ^uint64(0)}}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := EncodeTree(tt.tree)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeTree(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(tt.tree.Nodes) == 0 {
				tt.tree.Nodes = nil
			}
			if !reflect.DeepEqual(got, tt.tree) {
				t.Fatalf("round trip changed the tree:\n got %+v\nwant %+v", got, tt.tree)
			}
			b2, err := EncodeTree(got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, b2) {
				t.Fatal("re-encoding a decoded tree gave different bytes")
			}
		})
	}
}

func TestEncodeTreeDeterministic(t *testing.T) {
	a, b := sampleTree(), sampleTree()
	// Xattrs in another order are the same node: the encoding sorts them.
	x := b.Nodes[len(b.Nodes)-1].Xattrs
	x[0], x[1] = x[1], x[0]
	ea, err := EncodeTree(a)
	if err != nil {
		t.Fatal(err)
	}
	eb, err := EncodeTree(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ea, eb) {
		t.Fatal("equal trees encoded differently")
	}
	if x[0].Name != "user.empty" {
		t.Fatal("EncodeTree reordered the caller's xattrs")
	}
	b.Nodes[len(b.Nodes)-1].MTime++
	if eb, _ = EncodeTree(b); bytes.Equal(ea, eb) {
		t.Fatal("a changed mtime did not change the encoding")
	}
}

func TestEncodeTreeRejects(t *testing.T) {
	file := func(name string) Node { return Node{Name: name, Type: TypeFile} }
	tests := []struct {
		name  string
		nodes []Node
	}{
		{"unsorted", []Node{file("b"), file("a")}},
		{"duplicate", []Node{file("a"), file("a")}},
		{"empty name", []Node{file("")}},
		{"dot", []Node{file(".")}},
		{"dot dot", []Node{file("..")}},
		{"slash", []Node{file("a/b")}},
		{"NUL", []Node{file("a\x00b")}},
		{"unknown type", []Node{{Name: "a", Type: 9}}},
		{"type zero", []Node{{Name: "a"}}},
		{"duplicate xattr", []Node{{Name: "a", Type: TypeFile, Xattrs: []Xattr{{Name: "user.a"}, {Name: "user.a"}}}}},
		{"empty xattr name", []Node{{Name: "a", Type: TypeFile, Xattrs: []Xattr{{Name: ""}}}}},
		{"zero-length extent", []Node{{Name: "a", Type: TypeFile, Content: Content{Extents: []Extent{{Length: 0, ID: fakeID(1)}}}}}},
		{"content overflow", []Node{{Name: "a", Type: TypeFile, Content: Content{Extents: []Extent{{Length: 1 << 63}, {Length: 1 << 63, ID: fakeID(1)}}}}}},
		{"pages at level 0", []Node{{Name: "a", Type: TypeFile, Content: Content{Pages: []PageRef{{ID: fakeID(1), Length: 1, Count: 1}}}}}},
		{"extents at level 1", []Node{{Name: "a", Type: TypeFile, Content: Content{Level: 1, Extents: []Extent{{Length: 1}}}}}},
		{"level 1 without pages", []Node{{Name: "a", Type: TypeFile, Content: Content{Level: 1}}}},
		{"level too high", []Node{{Name: "a", Type: TypeFile, Content: Content{Level: MaxLevel + 1, Pages: []PageRef{{ID: fakeID(1), Length: 1, Count: 1}}}}}},
		{"empty page ref", []Node{{Name: "a", Type: TypeFile, Content: Content{Level: 1, Pages: []PageRef{{ID: fakeID(1)}}}}}},
		{"null subtree", []Node{{Name: "a", Type: TypeDir, Subtrees: make([]chunk.ID, 1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := EncodeTree(&Tree{Nodes: tt.nodes}); err == nil {
				t.Fatalf("EncodeTree accepted it: %x", b)
			}
			if _, err := splitTree(&Tree{Nodes: tt.nodes}); err == nil {
				t.Fatal("SaveTree would accept it")
			}
		})
	}
}

// validTreeBytes returns the encoding of a small tree with two nodes.
func validTreeBytes(t testing.TB) []byte {
	b, err := EncodeTree(&Tree{Nodes: []Node{
		{Name: "a", Type: TypeFile, Xattrs: []Xattr{{Name: "user.x", Value: []byte("1")}},
			Content: Content{Extents: []Extent{{Length: 10, ID: fakeID(1)}, {Length: 5}}}},
		{Name: "b", Type: TypeDir, Subtrees: []chunk.ID{fakeID(2)}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeTreeRejects(t *testing.T) {
	valid := validTreeBytes(t)
	// node encodes a minimal file node with the given name bytes.
	node := func(name string) []byte {
		e := &encoder{}
		if err := appendNode(e, &Node{Name: "n", Type: TypeFile}); err != nil {
			t.Fatal(err)
		}
		return append(append([]byte{byte(len(name))}, name...), e.buf[2:]...)
	}
	tree := func(nodes ...[]byte) []byte {
		b := []byte{formatTreeV1, byte(len(nodes))}
		for _, n := range nodes {
			b = append(b, n...)
		}
		return b
	}
	withType := func(typ byte) []byte {
		n := node("a")
		n[2] = typ
		return tree(n)
	}
	tests := []struct {
		name string
		b    []byte
		want string // part of the reason
	}{
		{"empty input", nil, "end of data"},
		{"unknown format byte", []byte{0x7f, 0}, "format byte"},
		{"page instead of tree", []byte{formatPageV1, 0, 0}, "format byte"},
		{"trailing bytes", append(bytes.Clone(valid), 0), "trailing"},
		{"huge node count", binary.AppendUvarint([]byte{formatTreeV1}, 1<<40), "count exceeds"},
		{"non-minimal count", []byte{formatTreeV1, 0x80, 0x00}, "non-minimal"},
		{"unsorted names", tree(node("b"), node("a")), "not sorted"},
		{"duplicate names", tree(node("a"), node("a")), "not sorted"},
		{"empty name", tree(append(node(""), 0)), "name"},
		{"dot dot", tree(node("..")), "name"},
		{"slash in name", tree(node("a/b")), "name"},
		{"NUL in name", tree(node("a\x00")), "name"},
		{"node type 0", withType(0), "type"},
		{"node type 9", withType(9), "type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := DecodeTree(tt.b)
			if err == nil {
				t.Fatalf("DecodeTree accepted it: %+v", tr)
			}
			fe := wantFormatError(t, err)
			if !strings.Contains(fe.Reason, tt.want) {
				t.Fatalf("reason %q does not mention %q", fe.Reason, tt.want)
			}
		})
	}
}

func TestDecodeTreeRejectsEveryTruncation(t *testing.T) {
	for _, b := range [][]byte{validTreeBytes(t), mustEncodeTree(t, sampleTree())} {
		for n := 0; n < len(b); n++ {
			if _, err := DecodeTree(b[:n]); err == nil {
				t.Fatalf("DecodeTree accepted the first %d of %d bytes", n, len(b))
			} else {
				wantFormatError(t, err)
			}
		}
	}
}

func TestDecodeTreeRejectsBitFlips(t *testing.T) {
	// A flipped bit must never panic; it usually gives a *FormatError, and
	// when the result still decodes it must re-encode to the damaged bytes.
	b := mustEncodeTree(t, sampleTree())
	for i := range len(b) * 8 {
		c := bytes.Clone(b)
		c[i/8] ^= 1 << (i % 8)
		tr, err := DecodeTree(c)
		if err != nil {
			wantFormatError(t, err)
			continue
		}
		if e, err := EncodeTree(tr); err != nil || !bytes.Equal(e, c) {
			t.Fatalf("bit %d: decoded tree re-encodes differently (err %v)", i, err)
		}
	}
}

func mustEncodeTree(t testing.TB, tr *Tree) []byte {
	t.Helper()
	b, err := EncodeTree(tr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzDecodeTree(f *testing.F) {
	f.Add(validTreeBytes(f))
	f.Add(mustEncodeTree(f, sampleTree()))
	f.Add(mustEncodeTree(f, &Tree{}))
	f.Add([]byte{formatTreeV1, 0x80, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := DecodeTree(b)
		if err != nil {
			wantFormatError(t, err)
			return
		}
		enc, err := EncodeTree(tr)
		if err != nil {
			t.Fatalf("decoded tree does not encode: %v", err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, enc)
		}
		tr2, err := DecodeTree(enc)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(tr, tr2) {
			t.Fatal("decode(encode(decode(b))) differs from decode(b)")
		}
	})
}

func BenchmarkEncodeTree(b *testing.B) {
	tr := benchTree(1000)
	enc := mustEncodeTree(b, tr)
	b.ReportAllocs()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := EncodeTree(tr); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeTree(b *testing.B) {
	enc := mustEncodeTree(b, benchTree(1000))
	b.ReportAllocs()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := DecodeTree(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// benchTree returns a directory of n typical files of one or two chunks.
func benchTree(n int) *Tree {
	tr := &Tree{Nodes: make([]Node, n)}
	for i := range tr.Nodes {
		tr.Nodes[i] = Node{Name: "file-" + strings.Repeat("x", i%20) + string(rune('a'+i%26)) + strconv.Itoa(i), Type: TypeFile,
			Mode: 0o644, UID: 1000, GID: 1000, User: "ann", Group: "ann", MTime: 1700000000000000000 + int64(i),
			CTime: 1700000000000000000, ATime: 1700000000000000000, Size: 1500000, Inode: uint64(i) + 1000, Dev: 2049, Links: 1,
			Content: Content{Extents: []Extent{{Length: 1000000, ID: fakeID(uint64(2 * i))}, {Length: 500000, ID: fakeID(uint64(2*i + 1))}}}}
	}
	slices.SortFunc(tr.Nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return tr
}
