package snapshot

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/imagobackup/imago/chunk"
)

// Size returns the number of content bytes c covers.
func (c Content) Size() uint64 {
	var n uint64
	for _, x := range c.Extents {
		n += x.Length
	}
	for _, p := range c.Pages {
		n += p.Length
	}
	return n
}

// Count returns the number of extents in the content list c.
func (c Content) Count() uint64 {
	n := uint64(len(c.Extents))
	for _, p := range c.Pages {
		n += p.Count
	}
	return n
}

// ContentBuilder turns a stream of extents into a Content root, saving
// content-defined pages (KindTree blobs) through a ChunkSaver as it goes.
// Its memory is bounded by one open page per level (at most 2048 entries
// each), whatever the number of extents. The result is a deterministic
// function of the extent sequence (after dropping empty extents and merging
// adjacent holes). A ContentBuilder is not safe for concurrent use.
type ContentBuilder struct {
	s      ChunkSaver
	levels []*buildLevel
	last   Extent // held back so that a following hole can merge into it
	have   bool   // last is set
	size   uint64
	added  int
	buf    []byte // page encoding buffer, reused
	err    error  // sticky: the first error, or errFinished

	// parent, when set, is the content list level-0 pages are stated as
	// delta pages against (see NewContentBuilderWithParent).
	parent *ContentReader
	off    uint64 // content offset of the open level-0 page
	dbuf   []byte // delta encoding buffer, reused
	pbuf   []byte // the parent's delta page, re-encoded to measure it
	deltas int    // delta pages saved
}

// buildLevel is the open page of one level.
type buildLevel struct {
	level   uint8
	extents []Extent  // level 0: entries of the open page
	refs    []PageRef // level > 0: entries of the open page
	total   uint64    // entries ever added to this level
	// paging is set once the level has more than InlineExtents entries:
	// from then on its entries go to pages; before, they may still end up
	// inline in the root.
	paging bool
}

func (l *buildLevel) len() int { return len(l.extents) + len(l.refs) }

func (l *buildLevel) key(i int) uint64 {
	if l.level == 0 {
		return boundaryKey(l.extents[i])
	}
	return refKey(l.refs[i].ID)
}

// refKey is the boundary key of a page ref: like a data extent's, bytes
// 24..31 of the page's ID.
func refKey(id chunk.ID) uint64 { return boundaryKey(Extent{Length: 1, ID: id}) }

var errFinished = errors.New("snapshot: content builder already finished")

// NewContentBuilder returns a builder saving pages through s, every page
// in full.
func NewContentBuilder(s ChunkSaver) *ContentBuilder {
	return &ContentBuilder{s: s}
}

// NewContentBuilderWithParent returns a builder saving pages through s that
// states a level-0 page as a delta page of the parent's page at the same
// content offset (or of that page's base, when it is itself a delta) when
// the delta takes at most half the bytes of the full page and its base's
// deltas have not yet cost more than the full page. Where pages are
// cut does not change, nor the extents the list reads back; only page IDs
// may differ from a list built without the parent (or with another one).
// The parent's pages must be in the repository s saves to, and stay there
// while the new list references them: a garbage collector that walks the
// list with Blobs keeps them. parent may be nil (full pages only) and is
// read from the builder's goroutine only; a ContentReader is safe to share.
func NewContentBuilderWithParent(s ChunkSaver, parent *ContentReader) *ContentBuilder {
	return &ContentBuilder{s: s, parent: parent}
}

// Add appends the next extent. Extents must come in content order.
// Zero-length extents are dropped and adjacent holes are merged. Content
// longer than 2^64-1 bytes is an error. After an error the builder is
// unusable and every later call returns that error.
func (b *ContentBuilder) Add(ctx context.Context, e Extent) error {
	if b.err != nil {
		return b.err
	}
	if e.Length == 0 {
		return nil
	}
	if b.size+e.Length < b.size {
		b.err = fmt.Errorf("snapshot: content length overflows 64 bits")
		return b.err
	}
	b.size += e.Length
	if b.have && b.last.Hole() && e.Hole() {
		b.last.Length += e.Length
		return nil
	}
	if b.have {
		if err := b.pushExtent(ctx, b.last); err != nil {
			b.err = err
			return err
		}
	}
	b.last, b.have = e, true
	return nil
}

// Finish closes the open pages and returns the content root, the content
// size in bytes and the bytes the saved pages added to the repository. An
// empty stream gives a zero Content. Further calls to Add or Finish fail.
func (b *ContentBuilder) Finish(ctx context.Context) (c Content, size uint64, added int, err error) {
	if b.err != nil {
		return Content{}, 0, b.added, b.err
	}
	if b.have {
		if err := b.pushExtent(ctx, b.last); err != nil {
			b.err = err
			return Content{}, 0, b.added, err
		}
		b.have = false
	}
	c, err = b.root(ctx)
	if err != nil {
		b.err = err
		return Content{}, 0, b.added, err
	}
	b.err = errFinished
	return c, b.size, b.added, nil
}

// root flushes every paging level bottom-up and returns the first level that
// never started paging as the root.
func (b *ContentBuilder) root(ctx context.Context) (Content, error) {
	for k := 0; k < len(b.levels); k++ {
		lv := b.levels[k]
		if !lv.paging {
			if k == 0 {
				return Content{Extents: lv.extents}, nil
			}
			return Content{Level: lv.level, Pages: lv.refs}, nil
		}
		if lv.len() > 0 {
			if err := b.cut(ctx, lv, lv.len()); err != nil {
				return Content{}, err
			}
		}
	}
	return Content{}, nil // no extents at all
}

func (b *ContentBuilder) level(k int) (*buildLevel, error) {
	if k >= MaxLevel {
		return nil, fmt.Errorf("snapshot: content list deeper than %d levels", MaxLevel)
	}
	for len(b.levels) <= k {
		b.levels = append(b.levels, &buildLevel{level: uint8(len(b.levels))})
	}
	return b.levels[k], nil
}

func (b *ContentBuilder) pushExtent(ctx context.Context, e Extent) error {
	lv, err := b.level(0)
	if err != nil {
		return err
	}
	lv.extents = append(lv.extents, e)
	return b.afterAppend(ctx, lv)
}

func (b *ContentBuilder) pushRef(ctx context.Context, k int, r PageRef) error {
	lv, err := b.level(k)
	if err != nil {
		return err
	}
	lv.refs = append(lv.refs, r)
	return b.afterAppend(ctx, lv)
}

// afterAppend applies the paging rule after an entry was appended to lv.
// When the level first exceeds InlineExtents entries, the held entries are
// replayed through the rule, which gives the same pages as paging from the
// start would have.
func (b *ContentBuilder) afterAppend(ctx context.Context, lv *buildLevel) error {
	lv.total++
	if lv.paging {
		n := lv.len()
		if isBoundary(lv.key(n-1), n) {
			return b.cut(ctx, lv, n)
		}
		return nil
	}
	if lv.total <= InlineExtents {
		return nil
	}
	lv.paging = true
	for i := 0; i < lv.len(); {
		if isBoundary(lv.key(i), i+1) {
			if err := b.cut(ctx, lv, i+1); err != nil {
				return err
			}
			i = 0
			continue
		}
		i++
	}
	return nil
}

// cut saves the first n entries of lv as a page, removes them and adds a ref
// to the page to the level above.
func (b *ContentBuilder) cut(ctx context.Context, lv *buildLevel, n int) error {
	var (
		ref PageRef
		err error
	)
	enc := b.buf
	if lv.level == 0 {
		b.buf, err = appendPage(b.buf[:0], 0, lv.extents[:n], nil)
		enc = b.buf
		if err == nil && b.parent != nil {
			var d []byte
			if d, err = b.delta(ctx, lv.extents[:n], len(b.buf)); d != nil {
				enc = d
			}
		}
		for _, x := range lv.extents[:n] {
			ref.Length += x.Length
		}
		ref.Count = uint64(n)
		b.off += ref.Length
		lv.extents = lv.extents[:copy(lv.extents, lv.extents[n:])]
	} else {
		b.buf, err = appendPage(b.buf[:0], lv.level, nil, lv.refs[:n])
		enc = b.buf
		for _, r := range lv.refs[:n] {
			ref.Length += r.Length
			ref.Count += r.Count
		}
		lv.refs = lv.refs[:copy(lv.refs, lv.refs[n:])]
	}
	if err != nil {
		return err
	}
	id, added, err := b.s.SaveChunk(ctx, chunk.KindTree, enc)
	if err != nil {
		return fmt.Errorf("save content page: %w", err)
	}
	b.added += added
	ref.ID = id
	return b.pushRef(ctx, int(lv.level)+1, ref)
}

// delta returns the encoding of the level-0 page of entries xs as a delta
// page of the parent's page at the builder's offset, or nil when the full
// encoding (full bytes long) is to be saved: the parent has no page there,
// the page is its base's twin (the full page then has the base's ID), the
// delta would take more than half the full page's bytes, or the deltas of
// its base have cost more than the full page (below). Once enough change
// has accumulated against a base, the page is thus saved in full and
// becomes the base of the next nights' deltas; a base is never a delta.
func (b *ContentBuilder) delta(ctx context.Context, xs []Extent, full int) ([]byte, error) {
	z, ok, err := b.parent.levelZeroAt(ctx, b.off)
	if err != nil {
		return nil, fmt.Errorf("parent content page: %w", err)
	}
	if !ok {
		return nil, nil
	}
	var d *deltaPage
	switch {
	case z.p.delta != nil && slices.Equal(z.p.extents, xs):
		d = z.p.delta // the parent's page again: same bytes, same ID
	case slices.Equal(z.base.extents, xs):
		return nil, nil
	default:
		baseID := z.id
		if z.p.delta != nil {
			baseID = z.p.delta.base
		}
		// The base is taken to start where the parent's page does: true
		// when it is the parent's page, and when the parent's page is a
		// delta of the page at the same offset before it.
		j := 0
		if rel := b.off - z.start; rel > 0 && rel < z.base.length() {
			j = z.base.index(rel)
		}
		d = &deltaPage{base: baseID, count: uint64(len(xs)), runs: alignDelta(z.base.extents, xs, j)}
	}
	b.dbuf, err = appendDeltaPage(b.dbuf[:0], d)
	if err != nil {
		return nil, err
	}
	if deltaMaxShare*len(b.dbuf) > full {
		return nil, nil
	}
	if d != z.p.delta {
		// Rent or buy: a delta is paid again every night it is carried,
		// the full page once. With a delta that grows by g bytes a night
		// and is n bytes now, the deltas of this base so far cost about
		// n²/(2g); once that passes the full page, writing it in full (the
		// base of the nights after) costs less. The steady state is then
		// about √(2gF) a night per page of F bytes, against F/4 + 2g with
		// the half-page cap alone (see deltaMaxShare). g is what the delta
		// gained over the parent's page when that is a delta of the same
		// base, else all of it.
		n := len(b.dbuf)
		growth := n
		if z.p.delta != nil && z.p.delta.base == d.base {
			b.pbuf, err = appendDeltaPage(b.pbuf[:0], z.p.delta)
			if err != nil {
				return nil, err
			}
			if g := n - len(b.pbuf); g > 0 {
				growth = g
			}
		}
		if n*n > 2*growth*full {
			return nil, nil
		}
	}
	b.deltas++
	return b.dbuf, nil
}
