package snapshot

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/imagobackup/imago/chunk"
)

// fixture is a small snapshot saved in a MemStore:
//
//	etc/            dir
//	etc/hosts       file, one data chunk
//	etc/ssl/        dir
//	etc/ssl/cert    file, paged content (200 extents)
//	home/           dir (empty)
//	\xff            symlink
type fixture struct {
	m     *MemStore
	root  chunk.ID
	data  []chunk.ID // data blob IDs in the snapshot
	pages []chunk.ID // content pages
}

func newFixture(t testing.TB, m *MemStore, salt string) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{m: m}
	saveData := func(s string) Extent {
		id, _, err := m.SaveChunk(ctx, chunk.KindData, []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		f.data = append(f.data, id)
		return Extent{Length: uint64(len(s)), ID: id}
	}
	saveTree := func(nodes ...Node) []chunk.ID {
		ids, _, err := SaveTree(ctx, m, &Tree{Nodes: nodes})
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	hosts := saveData("127.0.0.1 localhost\n")
	b := NewContentBuilder(m)
	for i := range 200 {
		if err := b.Add(ctx, saveData(salt+"cert part "+string(rune('A'+i%26))+string(rune('a'+i/26)))); err != nil {
			t.Fatal(err)
		}
	}
	cert, size, _, err := b.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Level == 0 {
		t.Fatal("fixture wants paged content")
	}
	r := NewContentReader(m, cert)
	var walkPages func(p *page)
	walkPages = func(p *page) {
		for _, ref := range p.refs {
			f.pages = append(f.pages, ref.ID)
			child, err := r.load(ctx, ref, p.level-1)
			if err != nil {
				t.Fatal(err)
			}
			walkPages(child)
		}
	}
	walkPages(r.root)
	ssl := saveTree(Node{Name: "cert", Type: TypeFile, Size: size, Content: cert})
	etc := saveTree(
		Node{Name: "hosts", Type: TypeFile, Size: hosts.Length, Content: Content{Extents: []Extent{hosts}}},
		Node{Name: "ssl", Type: TypeDir, Subtrees: ssl},
	)
	home := saveTree()
	root := saveTree(
		Node{Name: "etc", Type: TypeDir, Subtrees: etc},
		Node{Name: "home", Type: TypeDir, Subtrees: home},
		Node{Name: "\xff", Type: TypeSymlink, LinkTarget: "etc"},
	)
	f.root = root[0]
	return f
}

func TestWalk(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, NewMemStore(), "")
	tests := []struct {
		name string
		skip string // path to return ErrSkipDir for
		want []string
	}{
		{"everything", "", []string{"etc", "etc/hosts", "etc/ssl", "etc/ssl/cert", "home", "\xff"}},
		{"skip a directory", "etc/ssl", []string{"etc", "etc/hosts", "etc/ssl", "home", "\xff"}},
		{"skip the top", "etc", []string{"etc", "home", "\xff"}},
		{"skip on a file is ignored", "etc/hosts", []string{"etc", "etc/hosts", "etc/ssl", "etc/ssl/cert", "home", "\xff"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			err := Walk(ctx, f.m, f.root, func(path string, n *Node) error {
				got = append(got, path)
				if path == tt.skip {
					return ErrSkipDir
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("visited %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("callback error stops the walk", func(t *testing.T) {
		stop := errors.New("stop")
		calls := 0
		err := Walk(ctx, f.m, f.root, func(string, *Node) error { calls++; return stop })
		if err != stop || calls != 1 {
			t.Fatalf("got %v after %d calls", err, calls)
		}
	})
	t.Run("corrupt subtree", func(t *testing.T) {
		m := NewMemStore()
		f := newFixture(t, m, "")
		n, err := FindNode(ctx, m, f.root, "etc/ssl")
		if err != nil {
			t.Fatal(err)
		}
		m.Corrupt(n.Subtrees[0])
		if err := Walk(ctx, m, f.root, func(string, *Node) error { return nil }); err == nil {
			t.Fatal("walk through a corrupt tree succeeded")
		}
	})
}

func TestFindNode(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, NewMemStore(), "")
	tests := []struct {
		path     string
		wantType NodeType // 0: want ErrNotFound
	}{
		{"etc", TypeDir},
		{"/etc/ssl/cert", TypeFile},
		{"etc//hosts/", TypeFile},
		{"\xff", TypeSymlink},
		{"home", TypeDir},
		{"home/x", 0},
		{"etc/passwd", 0},
		{"etc/hosts/x", 0},
		{"\xff/hosts", 0},
		{"", 0},
		{"/", 0},
	}
	for _, tt := range tests {
		n, err := FindNode(ctx, f.m, f.root, tt.path)
		if tt.wantType == 0 {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("FindNode(%q) = %v, %v; want ErrNotFound", tt.path, n, err)
			}
			continue
		}
		if err != nil || n.Type != tt.wantType {
			t.Errorf("FindNode(%q) = %+v, %v", tt.path, n, err)
		}
	}
}

func TestBlobs(t *testing.T) {
	ctx := context.Background()
	m := NewMemStore()
	f1 := newFixture(t, m, "")
	// Every blob in the store belongs to the snapshot.
	visited := map[chunk.Handle]int{}
	err := Blobs(ctx, m, f1.root, nil, func(h chunk.Handle) error { visited[h]++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range f1.data {
		if visited[chunk.Handle{ID: id, Kind: chunk.KindData}] == 0 {
			t.Fatalf("data blob %v not visited", id.Short())
		}
	}
	for _, id := range f1.pages {
		if visited[chunk.Handle{ID: id, Kind: chunk.KindTree}] == 0 {
			t.Fatalf("page %v not visited", id.Short())
		}
	}
	if len(visited) != m.Len() {
		t.Fatalf("visited %d distinct blobs, the store holds %d", len(visited), m.Len())
	}

	// A second snapshot that changed only the cert: with a shared seen set,
	// only the blobs it does not share with the first are visited.
	f2 := newFixture(t, m, "v2 ")
	seenSet := map[chunk.Handle]bool{}
	seen := func(h chunk.Handle) bool {
		if seenSet[h] {
			return true
		}
		seenSet[h] = true
		return false
	}
	fn := func(chunk.Handle) error { return nil }
	if err := Blobs(ctx, m, f1.root, seen, fn); err != nil {
		t.Fatal(err)
	}
	var second []chunk.Handle
	if err := Blobs(ctx, m, f2.root, seen, func(h chunk.Handle) error { second = append(second, h); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seenSet) != m.Len() {
		t.Fatalf("two snapshots visited %d blobs, the store holds %d", len(seenSet), m.Len())
	}
	for _, h := range second {
		if visited[h] > 0 {
			t.Fatalf("blob %v of the first snapshot visited again", h)
		}
	}
	// hosts, home and the root's symlink are shared: fewer blobs are new.
	if len(second) >= len(visited) {
		t.Fatalf("second snapshot visited %d blobs, first %d", len(second), len(visited))
	}

	t.Run("callback error", func(t *testing.T) {
		stop := errors.New("stop")
		if err := Blobs(ctx, m, f1.root, nil, func(chunk.Handle) error { return stop }); err != stop {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("missing page", func(t *testing.T) {
		m := NewMemStore()
		f := newFixture(t, m, "")
		m.Remove(chunk.Handle{ID: f.pages[len(f.pages)-1], Kind: chunk.KindTree})
		if err := Blobs(ctx, m, f.root, nil, func(chunk.Handle) error { return nil }); err == nil {
			t.Fatal("Blobs succeeded with a page missing")
		}
	})
}
