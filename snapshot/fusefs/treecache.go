package fusefs

import (
	"container/list"
	"context"
	"sync"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// DefaultTreeCacheNodes bounds the directory entries a mount keeps decoded.
// A decoded node costs ~200–300 bytes plus its name and inline content, so
// 200 000 entries hold ~60 MiB at most; that is a few large directories or
// thousands of small ones, enough for ls -R and find to revisit nothing.
const DefaultTreeCacheNodes = 200_000

// treeCache keeps decoded directories, least recently used evicted first,
// up to a number of nodes. Directories are keyed by their tree blob IDs, so
// an unchanged directory is decoded once for every snapshot holding it. It
// is safe for concurrent use; two concurrent misses of one directory both
// load it (harmless, and rare).
type treeCache struct {
	max int

	mu sync.Mutex // guards the fields below
	// lru orders cached trees, most recently used first; values are
	// *cachedTree. byKey indexes its elements.
	lru   *list.List
	byKey map[string]*list.Element
	nodes int // sum of len(Nodes) over lru
}

type cachedTree struct {
	key string
	t   *snapshot.Tree
}

func newTreeCache(maxNodes int) *treeCache {
	if maxNodes <= 0 {
		maxNodes = DefaultTreeCacheNodes
	}
	return &treeCache{max: maxNodes, lru: list.New(), byKey: make(map[string]*list.Element)}
}

// load returns the directory listed by the tree blobs ids. The tree is
// shared: callers must not modify it.
func (c *treeCache) load(ctx context.Context, l snapshot.ChunkLoader, ids []chunk.ID) (*snapshot.Tree, error) {
	key := make([]byte, 0, len(ids)*len(chunk.ID{}))
	for _, id := range ids {
		key = append(key, id[:]...)
	}
	c.mu.Lock()
	if el, ok := c.byKey[string(key)]; ok {
		c.lru.MoveToFront(el)
		t := el.Value.(*cachedTree).t
		c.mu.Unlock()
		return t, nil
	}
	c.mu.Unlock()
	t, err := snapshot.LoadTree(ctx, l, ids)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byKey[string(key)]; !ok && len(t.Nodes) <= c.max {
		c.byKey[string(key)] = c.lru.PushFront(&cachedTree{key: string(key), t: t})
		c.nodes += len(t.Nodes)
		for c.nodes > c.max {
			old := c.lru.Remove(c.lru.Back()).(*cachedTree)
			delete(c.byKey, old.key)
			c.nodes -= len(old.t.Nodes)
		}
	}
	return t, nil
}
