package restore

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// testChunkSize cuts test file content into several extents without making
// the test data large.
const testChunkSize = 64 << 10

// baseTime is a recorded time with a non-zero nanosecond part, so that tests
// notice times truncated to seconds or microseconds.
var baseTime = time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC).UnixNano()

// entry describes one node of a test snapshot.
type entry struct {
	path     string // absolute snapshot path
	typ      snapshot.NodeType
	mode     uint32
	uid, gid uint32
	mtime    int64 // baseTime when zero
	atime    int64 // baseTime - 1 s when zero
	data     []byte
	parts    []part // content with holes; used instead of data when set
	target   string
	rdev     uint64
	inode    uint64
	links    uint64
	xattrs   []snapshot.Xattr
	chunk    int // chunk size; testChunkSize when zero
}

// part is one piece of file content: a hole of the given length, or data.
type part struct {
	hole uint64
	data []byte
}

func (e *entry) times() (atime, mtime int64) {
	atime, mtime = e.atime, e.mtime
	if mtime == 0 {
		mtime = baseTime
	}
	if atime == 0 {
		atime = baseTime - int64(time.Second)
	}
	return atime, mtime
}

// content returns the bytes the entry's file holds.
func (e *entry) content() []byte {
	if e.parts == nil {
		return e.data
	}
	var b []byte
	for _, p := range e.parts {
		if p.hole > 0 {
			b = append(b, make([]byte, p.hole)...)
		}
		b = append(b, p.data...)
	}
	return b
}

// buildSnapshot stores the entries as a snapshot tree in s and returns the
// root tree's ID. Directories not described get mode 0755 and baseTime.
func buildSnapshot(t testing.TB, s *snapshot.MemStore, entries []entry) chunk.ID {
	t.Helper()
	ctx := context.Background()
	dirs := map[string]*snapshot.Node{"/": {Type: snapshot.TypeDir}}
	children := map[string][]*snapshot.Node{}
	var ensureDir func(p string)
	ensureDir = func(p string) {
		if _, ok := dirs[p]; ok {
			return
		}
		parent := path.Dir(p)
		ensureDir(parent)
		n := &snapshot.Node{Name: path.Base(p), Type: snapshot.TypeDir, Mode: 0o755, MTime: baseTime, ATime: baseTime}
		dirs[p] = n
		children[parent] = append(children[parent], n)
	}
	for i := range entries {
		e := &entries[i]
		n := &snapshot.Node{
			Name: path.Base(e.path), Type: e.typ, Mode: e.mode, UID: e.uid, GID: e.gid,
			LinkTarget: e.target, Rdev: e.rdev, Inode: e.inode, Links: e.links, Xattrs: e.xattrs,
		}
		n.ATime, n.MTime = e.times()
		if n.Links == 0 {
			n.Links = 1
		}
		switch e.typ {
		case snapshot.TypeFile:
			n.Content, n.Size = buildContent(t, s, e)
		case snapshot.TypeDir:
			if _, ok := dirs[e.path]; ok {
				t.Fatalf("directory %s described after its entries", e.path)
			}
			dirs[e.path] = n
		}
		parent := path.Dir(e.path)
		ensureDir(parent)
		children[parent] = append(children[parent], n)
	}
	var save func(p string) []chunk.ID
	save = func(p string) []chunk.ID {
		var tr snapshot.Tree
		for _, n := range children[p] {
			if n.Type == snapshot.TypeDir {
				n.Subtrees = save(path.Join(p, n.Name))
			}
			tr.Nodes = append(tr.Nodes, *n)
		}
		slices.SortFunc(tr.Nodes, func(a, b snapshot.Node) int { return strings.Compare(a.Name, b.Name) })
		ids, _, err := snapshot.SaveTree(ctx, s, &tr)
		if err != nil {
			t.Fatalf("save tree %s: %v", p, err)
		}
		return ids
	}
	ids := save("/")
	if len(ids) != 1 {
		t.Fatalf("root tree split into %d blobs", len(ids))
	}
	return ids[0]
}

// buildContent stores the entry's content in chunks of testChunkSize.
func buildContent(t testing.TB, s *snapshot.MemStore, e *entry) (snapshot.Content, uint64) {
	t.Helper()
	ctx := context.Background()
	b := snapshot.NewContentBuilder(s)
	cs := e.chunk
	if cs == 0 {
		cs = testChunkSize
	}
	parts := e.parts
	if parts == nil {
		parts = []part{{data: e.data}}
	}
	for _, p := range parts {
		if p.hole > 0 {
			if err := b.Add(ctx, snapshot.Extent{Length: p.hole}); err != nil {
				t.Fatal(err)
			}
		}
		for d := p.data; len(d) > 0; {
			n := min(len(d), cs)
			id, _, err := s.SaveChunk(ctx, chunk.KindData, d[:n])
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Add(ctx, snapshot.Extent{Length: uint64(n), ID: id}); err != nil {
				t.Fatal(err)
			}
			d = d[n:]
		}
	}
	c, size, _, err := b.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, size
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b) // never fails
	return b
}

// chunkIDs returns the data chunk IDs buildContent gives data.
func chunkIDs(s *snapshot.MemStore, data []byte) []chunk.ID {
	var ids []chunk.ID
	for d := data; len(d) > 0; {
		n := min(len(d), testChunkSize)
		ids = append(ids, s.Sum(d[:n]))
		d = d[n:]
	}
	return ids
}
