package imageio

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// DefaultCacheBytes is the size of the cache a ReaderAt makes when Options
// holds none. 64 MiB hold 64 to 1024 image chunks (1 MiB maximum, 128 KiB
// on average with the default image chunker) or 8 to 64 file chunks.
const DefaultCacheBytes = 64 << 20

// defaultPrefetchers bounds the background chunk loads of all readers
// sharing a Cache. Each holds one chunk buffer (1 MiB for image chunks,
// 8 MiB at most for file chunks), so 4 cost at most 32 MiB beyond the
// cache; 4 loads in flight keep two cores busy decrypting and
// decompressing ahead of a sequential reader.
const defaultPrefetchers = 4

// Cache holds decoded data chunks, least recently used evicted first, up to
// a byte limit. It is safe for concurrent use and may be shared by any
// number of ReaderAts (of the same repository: entries are keyed by chunk
// ID). A chunk larger than the whole limit is returned but not kept.
type Cache struct {
	maxBytes int64
	// prefetch holds one token per background load allowed to run.
	prefetch chan struct{}

	mu sync.Mutex // guards the fields below
	// lru orders cached chunks, most recently used first; values are
	// *cacheEntry. byID indexes its elements.
	lru   *list.List
	byID  map[chunk.ID]*list.Element
	bytes int64 // sum of len(data) over lru
	// loading holds the loads in flight, so that concurrent readers of one
	// chunk wait for the same load.
	loading map[chunk.ID]*load
	stats   CacheStats
}

type cacheEntry struct {
	id   chunk.ID
	data []byte
}

// load is one chunk load in flight. data and err are set before done is
// closed and never change afterwards.
type load struct {
	done chan struct{}
	data []byte
	err  error
}

// CacheStats counts what a Cache did.
type CacheStats struct {
	Hits       int64 // chunk requests served from memory (or by a load already in flight)
	Misses     int64 // chunk requests that started a load
	Prefetches int64 // background loads started by read-ahead
	Evictions  int64 // chunks dropped to stay under the limit
	Bytes      int64 // bytes held now
	Chunks     int   // chunks held now
}

// NewCache returns a cache holding at most maxBytes of chunk data (values
// below 1 MiB mean 1 MiB).
func NewCache(maxBytes int64) *Cache {
	c := &Cache{
		maxBytes: max(maxBytes, 1<<20),
		prefetch: make(chan struct{}, defaultPrefetchers),
		lru:      list.New(),
		byID:     make(map[chunk.ID]*list.Element),
		loading:  make(map[chunk.ID]*load),
	}
	for range defaultPrefetchers {
		c.prefetch <- struct{}{}
	}
	return c
}

// Stats returns the counters so far.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Bytes, s.Chunks = c.bytes, c.lru.Len()
	return s
}

// get returns the data of the chunk of extent e, from memory or loaded
// through l. The returned slice is shared and must not be modified. A load
// that another caller started and that failed only because that caller's
// context ended is retried with ctx.
func (c *Cache) get(ctx context.Context, l snapshot.ChunkLoader, e snapshot.Extent) ([]byte, error) {
	for {
		c.mu.Lock()
		if el, ok := c.byID[e.ID]; ok {
			c.lru.MoveToFront(el)
			c.stats.Hits++
			data := el.Value.(*cacheEntry).data
			c.mu.Unlock()
			return data, nil
		}
		if ld, ok := c.loading[e.ID]; ok {
			c.stats.Hits++
			c.mu.Unlock()
			select {
			case <-ld.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if ld.err != nil && isContextErr(ld.err) && ctx.Err() == nil {
				continue // the loader gave up, not the store: load again
			}
			return ld.data, ld.err
		}
		ld := &load{done: make(chan struct{})}
		c.loading[e.ID] = ld
		c.stats.Misses++
		c.mu.Unlock()
		c.run(ctx, l, e, ld)
		return ld.data, ld.err
	}
}

// startPrefetch starts a background load of e's chunk unless it is cached,
// already loading, or all prefetch tokens are taken (read-ahead is best
// effort: a busy cache skips it rather than queueing). ctx bounds the load.
// It reports whether a load was started.
func (c *Cache) startPrefetch(ctx context.Context, l snapshot.ChunkLoader, e snapshot.Extent, wg *sync.WaitGroup) bool {
	select {
	case <-c.prefetch:
	default:
		return false
	}
	c.mu.Lock()
	_, cached := c.byID[e.ID]
	_, busy := c.loading[e.ID]
	if cached || busy {
		c.mu.Unlock()
		c.prefetch <- struct{}{}
		return false
	}
	ld := &load{done: make(chan struct{})}
	c.loading[e.ID] = ld
	c.stats.Prefetches++
	c.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() { c.prefetch <- struct{}{} }()
		c.run(ctx, l, e, ld)
	}()
	return true
}

// run loads e's chunk into ld, caches it on success and wakes the waiters.
func (c *Cache) run(ctx context.Context, l snapshot.ChunkLoader, e snapshot.Extent, ld *load) {
	data, err := l.LoadChunk(ctx, chunk.Handle{ID: e.ID, Kind: chunk.KindData}, nil)
	switch {
	case err != nil:
		err = fmt.Errorf("load data blob %v: %w", e.ID.Short(), err)
	case uint64(len(data)) != e.Length:
		err = fmt.Errorf("data blob %v has %d bytes, its extent %d", e.ID.Short(), len(data), e.Length)
	}
	if err != nil {
		data = nil
	}
	ld.data, ld.err = data, err
	c.mu.Lock()
	delete(c.loading, e.ID)
	if err == nil {
		c.storeLocked(e.ID, data)
	}
	c.mu.Unlock()
	close(ld.done)
}

// storeLocked adds a chunk and evicts the least recently used ones beyond
// the limit.
func (c *Cache) storeLocked(id chunk.ID, data []byte) {
	if int64(len(data)) > c.maxBytes {
		return
	}
	if _, ok := c.byID[id]; ok {
		return
	}
	c.byID[id] = c.lru.PushFront(&cacheEntry{id: id, data: data})
	c.bytes += int64(len(data))
	for c.bytes > c.maxBytes {
		old := c.lru.Remove(c.lru.Back()).(*cacheEntry)
		delete(c.byID, old.id)
		c.bytes -= int64(len(old.data))
		c.stats.Evictions++
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// has reports whether the chunk id is cached or loading.
func (c *Cache) has(id chunk.ID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, cached := c.byID[id]
	_, busy := c.loading[id]
	return cached || busy
}
