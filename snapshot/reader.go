package snapshot

import (
	"container/list"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/imagobackup/imago/chunk"
)

// pageCacheSize is the number of decoded pages a ContentReader keeps. A
// decoded page costs up to 2048 × 48 bytes (entry plus end offset) ≈ 96 KiB,
// ~14 KiB on average, so the cache holds at most ~6 MiB; 64 pages keep the
// path of every level hot for a few independent readers of one image.
const pageCacheSize = 64

// ContentReader finds extents in a content list, loading pages through a
// ChunkLoader. Find costs at most one page load per level and recently used
// pages are cached. It is safe for concurrent use.
type ContentReader struct {
	l    ChunkLoader
	root *page
	err  error // the root is invalid

	mu sync.Mutex // guards the cache fields below
	// lru orders cached pages, most recently used first; values are
	// *cachedPage. byID indexes its elements.
	lru  *list.List
	byID map[chunk.ID]*list.Element
}

type cachedPage struct {
	id chunk.ID
	p  *page
}

// NewContentReader returns a reader for c. An invalid root is reported by
// the first Find or Extents call.
func NewContentReader(l ChunkLoader, c Content) *ContentReader {
	r := &ContentReader{l: l, lru: list.New(), byID: make(map[chunk.ID]*list.Element)}
	e := &encoder{}
	if err := appendContent(e, &c); err != nil {
		r.err = &FormatError{What: "content", Offset: -1, Reason: err.Error()}
		return r
	}
	r.root = newPage(c.Level, c.Extents, c.Pages)
	return r
}

// Size returns the content length in bytes (0 for an invalid root).
func (r *ContentReader) Size() uint64 {
	if r.root == nil {
		return 0
	}
	return r.root.length()
}

// Find returns the extent holding byte offset and the offset where that
// extent starts. It returns io.EOF when offset is at or beyond the end of
// the content, and a *FormatError when a page does not match its ref.
func (r *ContentReader) Find(ctx context.Context, offset uint64) (start uint64, e Extent, err error) {
	if r.err != nil {
		return 0, Extent{}, r.err
	}
	p, base := r.root, uint64(0)
	if offset >= p.length() {
		return 0, Extent{}, io.EOF
	}
	for {
		i := p.index(offset - base)
		start := base + p.start(i)
		if p.level == 0 {
			return start, p.extents[i], nil
		}
		child, err := r.load(ctx, p.refs[i], p.level-1)
		if err != nil {
			return 0, Extent{}, err
		}
		p, base = child, start
	}
}

// Extents calls fn for every extent in order, starting with the extent that
// holds offset from, with the offset where each extent starts. It holds one
// page per level in memory. An error from fn stops the iteration and is
// returned unchanged; from at or beyond the end calls fn never.
func (r *ContentReader) Extents(ctx context.Context, from uint64, fn func(start uint64, e Extent) error) error {
	if r.err != nil {
		return r.err
	}
	if from >= r.root.length() {
		return nil
	}
	return r.extents(ctx, r.root, 0, from, fn)
}

func (r *ContentReader) extents(ctx context.Context, p *page, base, from uint64, fn func(uint64, Extent) error) error {
	i := 0
	if from > base {
		i = p.index(from - base)
	}
	for ; i < len(p.ends); i++ {
		start := base + p.start(i)
		if p.level == 0 {
			if err := fn(start, p.extents[i]); err != nil {
				return err
			}
			continue
		}
		child, err := r.load(ctx, p.refs[i], p.level-1)
		if err != nil {
			return err
		}
		if err := r.extents(ctx, child, start, from, fn); err != nil {
			return err
		}
	}
	return nil
}

// load returns the decoded page ref points to, which must be of the given
// level and cover exactly ref.Length bytes and ref.Count extents.
func (r *ContentReader) load(ctx context.Context, ref PageRef, level uint8) (*page, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := r.cached(ref.ID)
	if p == nil {
		b, err := r.l.LoadChunk(ctx, chunk.Handle{ID: ref.ID, Kind: chunk.KindTree}, nil)
		if err != nil {
			return nil, fmt.Errorf("load content page %v: %w", ref.ID.Short(), err)
		}
		p, err = decodePage(b)
		if err != nil {
			return nil, withID(err, ref.ID)
		}
		r.store(ref.ID, p)
	}
	if p.level != level || p.length() != ref.Length || p.count != ref.Count {
		return nil, &FormatError{What: "page", ID: ref.ID, Offset: -1, Reason: fmt.Sprintf(
			"page (level %d, %d bytes, %d extents) does not match its ref (level %d, %d bytes, %d extents)",
			p.level, p.length(), p.count, level, ref.Length, ref.Count)}
	}
	return p, nil
}

func (r *ContentReader) cached(id chunk.ID) *page {
	r.mu.Lock()
	defer r.mu.Unlock()
	el, ok := r.byID[id]
	if !ok {
		return nil
	}
	r.lru.MoveToFront(el)
	return el.Value.(*cachedPage).p
}

func (r *ContentReader) store(id chunk.ID, p *page) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if el, ok := r.byID[id]; ok {
		r.lru.MoveToFront(el)
		return
	}
	r.byID[id] = r.lru.PushFront(&cachedPage{id: id, p: p})
	for r.lru.Len() > pageCacheSize {
		old := r.lru.Remove(r.lru.Back()).(*cachedPage)
		delete(r.byID, old.id)
	}
}
