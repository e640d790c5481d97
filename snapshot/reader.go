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
// ~14 KiB on average, so the cache holds at most ~12 MiB, ~2 MiB typically.
// 128 pages keep the path of every level hot for a few independent readers
// of one image, with the base page of each delta page beside it (an image
// backup's chunkers and its content builder read the parent's pages through
// one reader, a few segments apart).
const pageCacheSize = 128

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
// level and cover exactly ref.Length bytes and ref.Count extents. A delta
// page is resolved against its base; the cache holds the resolved page.
func (r *ContentReader) load(ctx context.Context, ref PageRef, level uint8) (*page, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := r.cached(ref.ID)
	if p == nil {
		var err error
		if p, err = r.loadPage(ctx, ref.ID); err != nil {
			return nil, err
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

// loadPage loads and decodes page id, full or delta.
func (r *ContentReader) loadPage(ctx context.Context, id chunk.ID) (*page, error) {
	b, err := r.l.LoadChunk(ctx, chunk.Handle{ID: id, Kind: chunk.KindTree}, nil)
	if err != nil {
		return nil, fmt.Errorf("load content page %v: %w", id.Short(), err)
	}
	if len(b) == 0 || b[0] != formatPageDeltaV1 {
		p, err := decodePage(b)
		if err != nil {
			return nil, withID(err, id)
		}
		return p, nil
	}
	d, err := decodeDeltaPage(b)
	if err != nil {
		return nil, withID(err, id)
	}
	base, err := r.loadBase(ctx, d.base, id)
	if err != nil {
		return nil, err
	}
	p, err := d.resolve(base)
	if err != nil {
		return nil, withID(err, id)
	}
	return p, nil
}

// loadBase returns the base page of delta page of: a full page of level 0.
func (r *ContentReader) loadBase(ctx context.Context, id, of chunk.ID) (*page, error) {
	p := r.cached(id)
	if p == nil {
		b, err := r.l.LoadChunk(ctx, chunk.Handle{ID: id, Kind: chunk.KindTree}, nil)
		if err != nil {
			return nil, fmt.Errorf("load base page %v of delta page %v: %w", id.Short(), of.Short(), err)
		}
		if len(b) > 0 && b[0] == formatPageDeltaV1 {
			return nil, &FormatError{What: "page", ID: of, Offset: -1, Reason: fmt.Sprintf("base page %v is a delta page", id.Short())}
		}
		if p, err = decodePage(b); err != nil {
			return nil, fmt.Errorf("base page of delta page %v: %w", of.Short(), withID(err, id))
		}
		if p.level == 0 {
			r.store(id, p)
		}
	}
	if p.level != 0 || p.delta != nil {
		return nil, &FormatError{What: "page", ID: of, Offset: -1, Reason: fmt.Sprintf("base page %v is not a full level-0 page", id.Short())}
	}
	return p, nil
}

// levelZeroPage is the level-0 page of a content list that covers an
// offset, as a ContentBuilder with a parent uses it.
type levelZeroPage struct {
	id    chunk.ID
	start uint64 // content offset of the page's first entry
	p     *page  // its entries (resolved when it is a delta page)
	// base is, when p is a delta page, its base page (a full page), else p.
	base *page
}

// levelZeroAt returns the level-0 page covering offset off. ok is false
// when there is none: the content list is inline (no pages) or shorter.
func (r *ContentReader) levelZeroAt(ctx context.Context, off uint64) (z levelZeroPage, ok bool, err error) {
	if r.err != nil {
		return z, false, r.err
	}
	p, base := r.root, uint64(0)
	if p.level == 0 || off >= p.length() {
		return z, false, nil
	}
	for {
		i := p.index(off - base)
		start := base + p.start(i)
		ref := p.refs[i]
		child, err := r.load(ctx, ref, p.level-1)
		if err != nil {
			return z, false, err
		}
		if child.level > 0 {
			p, base = child, start
			continue
		}
		z = levelZeroPage{id: ref.ID, start: start, p: child, base: child}
		if child.delta != nil {
			if z.base, err = r.loadBase(ctx, child.delta.base, ref.ID); err != nil {
				return z, false, err
			}
		}
		return z, true, nil
	}
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
