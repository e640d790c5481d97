package snapshot

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"sync"
	"testing"

	"github.com/imagobackup/imago/chunk"
)

func TestMemStore(t *testing.T) {
	ctx := context.Background()
	m := NewMemStore()
	data := []byte("hello")
	id, added, err := m.SaveChunk(ctx, chunk.KindData, data)
	if err != nil || added != len(data) || id != m.Sum(data) {
		t.Fatalf("first save: %v, %d, %v", id, added, err)
	}
	data[0] = 'j' // the store keeps its own copy
	if _, added, _ = m.SaveChunk(ctx, chunk.KindData, []byte("hello")); added != 0 {
		t.Fatalf("a known blob added %d bytes", added)
	}
	got, err := m.LoadChunk(ctx, chunk.Handle{ID: id, Kind: chunk.KindData}, make([]byte, 0, 2))
	if err != nil || string(got) != "hello" {
		t.Fatalf("load: %q, %v", got, err)
	}
	if _, err := m.LoadChunk(ctx, chunk.Handle{ID: id, Kind: chunk.KindTree}, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("loading with the wrong kind: %v, want fs.ErrNotExist", err)
	}
	if _, _, err := m.SaveChunk(ctx, chunk.Kind(9), data); err == nil {
		t.Fatal("saved a blob of an unknown kind")
	}
	if s := m.Stats(); s != (MemStats{Saves: 2, NewBlobs: 1, Loads: 1, BytesLoaded: 5}) {
		t.Fatalf("stats %+v", s)
	}
	if !m.Corrupt(id) {
		t.Fatal("Corrupt did not find the blob")
	}
	if _, err := m.LoadChunk(ctx, chunk.Handle{ID: id, Kind: chunk.KindData}, nil); err == nil {
		t.Fatal("a corrupt blob loaded")
	}
	if m.Corrupt(fakeID(1)) {
		t.Fatal("Corrupt found a blob that was never saved")
	}
}

func TestMemStoreConcurrent(t *testing.T) {
	ctx := context.Background()
	m := NewMemStore()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				data := bytes.Repeat([]byte{byte(i)}, i+g%2)
				id, _, err := m.SaveChunk(ctx, chunk.KindData, data)
				if err != nil {
					t.Error(err)
					return
				}
				if got, err := m.LoadChunk(ctx, chunk.Handle{ID: id, Kind: chunk.KindData}, nil); err != nil || !bytes.Equal(got, data) {
					t.Errorf("load: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if s := m.Stats(); s.Saves != 800 || s.NewBlobs != 400 || m.Len() != 400 {
		t.Fatalf("stats %+v, %d blobs", s, m.Len())
	}
}
