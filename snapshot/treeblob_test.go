package snapshot

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/imagobackup/imago/chunk"
)

// bigTree returns n file nodes carrying an xattr of valueLen bytes each.
func bigTree(n, valueLen int) *Tree {
	tr := &Tree{Nodes: make([]Node, n)}
	for i := range tr.Nodes {
		v := make([]byte, valueLen)
		v[0] = byte(i)
		tr.Nodes[i] = Node{Name: fmt.Sprintf("f%06d", i), Type: TypeFile, Xattrs: []Xattr{{Name: "user.big", Value: v}}}
	}
	return tr
}

func TestSaveLoadTree(t *testing.T) {
	tests := []struct {
		name      string
		tree      *Tree
		wantParts int
	}{
		{"empty directory", &Tree{}, 1},
		{"small directory", sampleTree(), 1},
		{"just below the split size", bigTree(3, TreeSplitSize/3-100), 1},
		{"three times the split size", bigTree(30, TreeSplitSize/10), 4},
		{"one node above the split size", bigTree(2, TreeSplitSize+1), 2},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMemStore()
			ids, added, err := SaveTree(ctx, m, tt.tree)
			if err != nil {
				t.Fatal(err)
			}
			if len(ids) != tt.wantParts {
				t.Fatalf("saved %d tree blobs, want %d", len(ids), tt.wantParts)
			}
			total := 0
			for _, id := range ids {
				b, err := m.LoadChunk(ctx, chunk.Handle{ID: id, Kind: chunk.KindTree}, nil)
				if err != nil {
					t.Fatal(err)
				}
				part, err := DecodeTree(b)
				if err != nil {
					t.Fatal(err)
				}
				if len(b) > TreeSplitSize && len(part.Nodes) > 1 {
					t.Fatalf("tree blob of %d bytes holds %d nodes", len(b), len(part.Nodes))
				}
				total += len(b)
			}
			if added != total {
				t.Fatalf("added = %d, want %d", added, total)
			}
			got, err := LoadTree(ctx, m, ids)
			if err != nil {
				t.Fatal(err)
			}
			if len(tt.tree.Nodes) == 0 {
				tt.tree.Nodes = nil
			}
			if !reflect.DeepEqual(got, tt.tree) {
				t.Fatal("LoadTree(SaveTree(t)) differs from t")
			}
			// Saving again adds nothing: unchanged directories dedup.
			ids2, added2, err := SaveTree(ctx, m, tt.tree)
			if err != nil || added2 != 0 || !reflect.DeepEqual(ids, ids2) {
				t.Fatalf("second save: ids equal %v, added %d, err %v", reflect.DeepEqual(ids, ids2), added2, err)
			}
		})
	}
}

func TestSaveTreeRejectsHugeNode(t *testing.T) {
	_, _, err := SaveTree(context.Background(), NewMemStore(), bigTree(1, maxTreeBlobSize))
	if err == nil {
		t.Fatal("SaveTree stored a node larger than a blob may be")
	}
}

func TestLoadTreeErrors(t *testing.T) {
	ctx := context.Background()
	m := NewMemStore()
	a, _, err := SaveTree(ctx, m, &Tree{Nodes: []Node{{Name: "a", Type: TypeFile}}})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := SaveTree(ctx, m, &Tree{Nodes: []Node{{Name: "b", Type: TypeFile}}})
	if err != nil {
		t.Fatal(err)
	}
	notTree, _, err := m.SaveChunk(ctx, chunk.KindTree, []byte("not a tree"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("parts out of order", func(t *testing.T) {
		fe := wantFormatError(t, func() error { _, err := LoadTree(ctx, m, []chunk.ID{b[0], a[0]}); return err }())
		if fe.ID != a[0] {
			t.Fatalf("error names blob %v, want %v", fe.ID.Short(), a[0].Short())
		}
	})
	t.Run("same part twice", func(t *testing.T) {
		_, err := LoadTree(ctx, m, []chunk.ID{a[0], a[0]})
		wantFormatError(t, err)
	})
	t.Run("garbage blob", func(t *testing.T) {
		_, err := LoadTree(ctx, m, []chunk.ID{notTree})
		if fe := wantFormatError(t, err); fe.ID != notTree {
			t.Fatal("error does not name the blob")
		}
	})
	t.Run("missing blob", func(t *testing.T) {
		if _, err := LoadTree(ctx, m, []chunk.ID{fakeID(99)}); err == nil {
			t.Fatal("no error for a missing blob")
		}
	})
	t.Run("no ids", func(t *testing.T) {
		tr, err := LoadTree(ctx, m, nil)
		if err != nil || len(tr.Nodes) != 0 {
			t.Fatalf("got %v, %v; want an empty tree", tr, err)
		}
	})
}
