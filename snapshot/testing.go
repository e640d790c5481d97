package snapshot

import (
	"context"
	"fmt"
	"io/fs"
	"sync"

	"github.com/imagobackup/imago/chunk"
)

// MemStoreKey is the fixed ID key of MemStore, so that tests get the same
// blob IDs on every run.
var MemStoreKey = [32]byte{'i', 'm', 'a', 'g', 'o', ' ', 'm', 'e', 'm', 's', 't', 'o', 'r', 'e'}

// MemStore is an in-memory ChunkSaver and ChunkLoader for tests of the
// backup and restore pipelines: blob IDs are keyed BLAKE3 with MemStoreKey,
// loads verify the ID, and Stats counts the traffic. It is safe for
// concurrent use.
type MemStore struct {
	hasher *chunk.Hasher

	mu sync.Mutex // guards the fields below
	// blobs holds each stored blob's plaintext (a private copy).
	blobs map[chunk.Handle][]byte
	stats MemStats
}

// MemStats counts the calls a MemStore served.
type MemStats struct {
	Saves       int   // SaveChunk calls that succeeded
	NewBlobs    int   // saves that stored a blob not seen before
	Loads       int   // LoadChunk calls that succeeded
	BytesLoaded int64 // plaintext bytes returned by those loads
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{hasher: chunk.NewHasher(MemStoreKey), blobs: make(map[chunk.Handle][]byte)}
}

// Sum returns the ID the store gives data.
func (m *MemStore) Sum(data []byte) chunk.ID { return m.hasher.Sum(data) }

// SaveChunk stores a copy of data as a blob of kind k unless it is already
// stored, and returns its ID. added is len(data) for a new blob, 0 otherwise.
func (m *MemStore) SaveChunk(ctx context.Context, k chunk.Kind, data []byte) (chunk.ID, int, error) {
	if err := ctx.Err(); err != nil {
		return chunk.ID{}, 0, err
	}
	if !k.Valid() {
		return chunk.ID{}, 0, fmt.Errorf("memstore: save: invalid kind %v", k)
	}
	id := m.hasher.Sum(data)
	h := chunk.Handle{ID: id, Kind: k}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats.Saves++
	if _, ok := m.blobs[h]; ok {
		return id, 0, nil
	}
	m.blobs[h] = append([]byte(nil), data...)
	m.stats.NewBlobs++
	return id, len(data), nil
}

// LoadChunk returns the plaintext of blob h in buf (grown when too small).
// A missing blob gives an error wrapping fs.ErrNotExist; a blob whose bytes
// no longer match its ID (see Corrupt) gives an error.
func (m *MemStore) LoadChunk(ctx context.Context, h chunk.Handle, buf []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	data, ok := m.blobs[h]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("memstore: load %v: %w", h, fs.ErrNotExist)
	}
	buf = append(buf[:0], data...) // stored slices are never modified in place
	if m.hasher.Sum(buf) != h.ID {
		return nil, fmt.Errorf("memstore: load %v: content does not match ID", h)
	}
	m.mu.Lock()
	m.stats.Loads++
	m.stats.BytesLoaded += int64(len(buf))
	m.mu.Unlock()
	return buf, nil
}

// Stats returns the counters so far.
func (m *MemStore) Stats() MemStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

// Len returns the number of stored blobs.
func (m *MemStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.blobs)
}

// Has reports whether blob h is stored.
func (m *MemStore) Has(h chunk.Handle) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.blobs[h]
	return ok
}

// Remove deletes blob h, so that later loads of it fail as missing.
func (m *MemStore) Remove(h chunk.Handle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.blobs, h)
}

// Corrupt flips a bit in every stored blob with ID id (of any kind), so
// that loading it fails verification. It reports whether a blob was found.
func (m *MemStore) Corrupt(id chunk.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	found := false
	for _, k := range []chunk.Kind{chunk.KindData, chunk.KindTree} {
		h := chunk.Handle{ID: id, Kind: k}
		data, ok := m.blobs[h]
		if !ok {
			continue
		}
		found = true
		c := append([]byte(nil), data...) // copy: loads may be reading data
		if len(c) == 0 {
			c = []byte{0}
		} else {
			c[len(c)/2] ^= 0x01
		}
		m.blobs[h] = c
	}
	return found
}
