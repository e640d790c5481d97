package repo

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/faulty"
	"github.com/imagobackup/imago/repo/backend/mem"
)

// loadManyFixture saves n random 16 KiB data chunks and returns the
// repository, its counting backend, the handles and the chunks' bytes.
func loadManyFixture(t *testing.T, n int) (*Repository, *faulty.Backend, []chunk.Handle, map[chunk.ID][]byte) {
	t.Helper()
	be := faulty.New(mem.New())
	r := TestRepositoryWithBackend(t, be, TestPackSize(2*miB))
	hs := make([]chunk.Handle, n)
	data := make(map[chunk.ID][]byte, n)
	for i := range n {
		b := randomBytes(uint64(1000+i), 16*kiB)
		id, _, err := r.SaveChunk(context.Background(), chunk.KindData, b)
		if err != nil {
			t.Fatal(err)
		}
		hs[i] = chunk.Handle{ID: id, Kind: chunk.KindData}
		data[id] = b
	}
	mustFlush(t, r)
	return r, be, hs, data
}

// TestLoadChunksDeliversEveryIndexWithFewReads loads 400 chunks spread over
// several packs, in shuffled order and with repeats: every index gets its
// chunk's bytes exactly once, and the packs are read with a few large
// ranged reads, not one read per chunk.
func TestLoadChunksDeliversEveryIndexWithFewReads(t *testing.T) {
	r, be, saved, data := loadManyFixture(t, 400)
	want := append([]chunk.Handle(nil), saved...)
	want = append(want, saved[:50]...) // each of these is wanted twice
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(want), func(i, j int) { want[i], want[j] = want[j], want[i] })

	be.ResetCounts()
	var mu sync.Mutex
	calls := make([]int, len(want))
	err := r.LoadChunks(context.Background(), want, func(i int, plain []byte) error {
		if !bytes.Equal(plain, data[want[i].ID]) {
			t.Errorf("index %d: got %d bytes that are not blob %v", i, len(plain), want[i].ID.Short())
		}
		mu.Lock()
		calls[i]++
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range calls {
		if c != 1 {
			t.Errorf("index %d delivered %d times, want once", i, c)
		}
	}
	// 400 chunks of ~16 KiB are ~6.3 MiB in packs of 2 MiB: at most 1 MiB
	// a read, plus one range per pack boundary.
	loads := be.Counts().LoadsByType[backend.Pack]
	if loads > 12 {
		t.Errorf("%d ranged reads for 400 chunks: the reads are not grouped by pack", loads)
	}
	if got := be.Counts().BytesLoaded; got > 7*miB {
		t.Errorf("read %d bytes for 6.3 MiB of chunks", got)
	}
}

// TestLoadChunksRefusesDamage flips one byte of one stored chunk: LoadChunks
// fails naming that chunk and never hands its bytes on.
func TestLoadChunksRefusesDamage(t *testing.T) {
	ctx := context.Background()
	r, be, hs, _ := loadManyFixture(t, 40)
	victim := hs[17]
	loc, ok := r.Lookup(victim)
	if !ok {
		t.Fatal("victim not in the index")
	}
	ph := backend.Handle{Type: backend.Pack, Name: loc.Pack.String()}
	var packBytes []byte
	err := be.Load(ctx, ph, 0, 0, func(rd io.Reader) error {
		var err error
		packBytes, err = io.ReadAll(rd)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	packBytes[loc.Offset+loc.Length/2] ^= 0x10
	if err := be.Save(ctx, ph, bytes.NewReader(packBytes), int64(len(packBytes))); err != nil {
		t.Fatal(err)
	}

	err = r.LoadChunks(ctx, hs, func(i int, plain []byte) error {
		if hs[i] == victim {
			t.Errorf("the damaged chunk was handed on")
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), victim.ID.Short()) {
		t.Fatalf("got %v, want an error naming blob %s", err, victim.ID.Short())
	}
}

func TestLoadChunksUnknownBlob(t *testing.T) {
	r, _, hs, _ := loadManyFixture(t, 3)
	unknown := chunk.Handle{ID: r.HashChunk([]byte("never saved")), Kind: chunk.KindData}
	err := r.LoadChunks(context.Background(), append(hs, unknown), func(int, []byte) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "not in the index") || !strings.Contains(err.Error(), unknown.ID.Short()) {
		t.Fatalf("got %v, want an error naming the unknown blob", err)
	}
}
