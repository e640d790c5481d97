package snapshot

import (
	"encoding/binary"
	"fmt"
)

// Content-list paging parameters. Page boundaries are content-defined: a page
// ends after an entry whose boundary key (see boundaryKey) has its low
// pageBoundaryBits bits zero, provided the page then holds at least
// minPageEntries entries; a page is always cut at maxPageEntries. The cut
// depends only on the entries of the page itself, so:
//
//   - an unchanged extent sequence gives identical pages and page IDs (the
//     result is a deterministic function of the sequence alone, independent
//     of how the builder was fed, of worker counts or of any earlier
//     snapshot);
//   - an inserted, removed or changed extent changes the page holding it and
//     at most the next page or two, until a boundary entry that the change
//     did not move resynchronises the cuts; per level, that is O(1) pages,
//     and each changed page changes one ref in the level above.
//
// The numbers: with a 1/256 boundary chance after the 32-entry minimum a page
// holds ~290 entries on average, ~11 KiB for data extents (34-38 bytes
// each): small enough that a nightly change rewrites little metadata, large
// enough that a 100M-extent (8 TiB) image needs ~350 000 level-0 pages and
// three levels above them. The minimum keeps runs of boundary entries (for
// example a repeated chunk whose ID happens to be a boundary) from producing
// tiny pages; the maximum bounds a page at ~80 KiB and the builder's memory at
// 2048 entries per level, while a forced cut happens only with probability
// (255/256)^2016 ≈ 0.04 % per page.
const (
	// InlineExtents is the most entries a Content root holds inline; longer
	// lists are paged until the root has at most this many page refs.
	InlineExtents    = 64
	minPageEntries   = 32
	maxPageEntries   = 2048
	pageBoundaryBits = 8
	pageBoundaryMask = 1<<pageBoundaryBits - 1
)

// boundaryKey returns the 64-bit value whose low bits decide whether an
// extent ends a page. For a data extent it is bytes 24..31 of its ID read
// little-endian (IDs are keyed BLAKE3, uniformly distributed). A hole has no
// ID, so its key is a fixed mix (SplitMix64's finalizer) of its length: it
// depends on nothing but the hole itself, never on its position.
func boundaryKey(e Extent) uint64 {
	if e.Hole() {
		return mix64(e.Length)
	}
	return binary.LittleEndian.Uint64(e.ID[24:32])
}

// mix64 is the SplitMix64 finalizer applied to v plus the golden-ratio
// increment. It is part of the paging rule: changing it changes page
// boundaries (not correctness, but deduplication against older snapshots).
func mix64(v uint64) uint64 {
	z := v + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// isBoundary reports whether an entry with key k ends a page of n entries
// (n counting the entry itself).
func isBoundary(k uint64, n int) bool {
	return n >= maxPageEntries || (n >= minPageEntries && k&pageBoundaryMask == 0)
}

// page is a decoded content-list page, or the root of a content list seen as
// a page. A page of level 0 holds extents, a page of level k > 0 holds refs
// to pages of level k-1.
type page struct {
	level   uint8
	extents []Extent
	refs    []PageRef
	// ends[i] is the end offset of entry i relative to the page start.
	ends []uint64
	// count is the number of extents at level 0 below the page.
	count uint64
	// delta is set when the page was stored as a delta page: its base and
	// runs, kept so that a writer can state the same page again.
	delta *deltaPage
}

// length returns the number of content bytes the page covers.
func (p *page) length() uint64 {
	if len(p.ends) == 0 {
		return 0
	}
	return p.ends[len(p.ends)-1]
}

// start returns the offset of entry i relative to the page start.
func (p *page) start(i int) uint64 {
	if i == 0 {
		return 0
	}
	return p.ends[i-1]
}

// index returns the entry holding offset off (relative to the page start);
// off must be below p.length().
func (p *page) index(off uint64) int {
	lo, hi := 0, len(p.ends)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if p.ends[m] > off {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// newPage builds a page from validated entries, computing ends and count.
func newPage(level uint8, xs []Extent, ps []PageRef) *page {
	p := &page{level: level, extents: xs, refs: ps}
	var end uint64
	if level == 0 {
		p.ends = make([]uint64, len(xs))
		for i, x := range xs {
			end += x.Length
			p.ends[i] = end
		}
		p.count = uint64(len(xs))
		return p
	}
	p.ends = make([]uint64, len(ps))
	for i, r := range ps {
		end += r.Length
		p.ends[i] = end
		p.count += r.Count
	}
	return p
}

// appendPage appends the encoding of a page: format byte, level, then a
// count and the extents (level 0) or page refs (level > 0). The entries are
// validated as in a tree blob; a page is never empty.
func appendPage(dst []byte, level uint8, xs []Extent, ps []PageRef) ([]byte, error) {
	if level >= MaxLevel {
		return dst, fmt.Errorf("snapshot: encode page: level %d exceeds %d", level, MaxLevel-1)
	}
	e := &encoder{buf: dst}
	e.byte(formatPageV1)
	e.byte(level)
	var err error
	if level == 0 {
		if len(xs) == 0 || len(ps) != 0 {
			return dst, fmt.Errorf("snapshot: encode page: level 0 needs extents only")
		}
		err = appendExtents(e, xs)
	} else {
		if len(ps) == 0 || len(xs) != 0 {
			return dst, fmt.Errorf("snapshot: encode page: level %d needs page refs only", level)
		}
		err = appendPageRefs(e, ps)
	}
	if err != nil {
		return dst, fmt.Errorf("snapshot: encode page: %w", err)
	}
	return e.buf, nil
}

// decodePage decodes a content-list page strictly (see DecodeTree); every
// error is a *FormatError.
func decodePage(b []byte) (*page, error) {
	d := &decoder{what: "page", b: b}
	if f := d.byte(); d.err == nil && f != formatPageV1 {
		d.off--
		d.fail(fmt.Sprintf("unknown format byte 0x%02x", f))
	}
	level := d.byte()
	if d.err == nil && level >= MaxLevel {
		d.off--
		d.fail(fmt.Sprintf("page level %d exceeds %d", level, MaxLevel-1))
	}
	var (
		xs []Extent
		ps []PageRef
	)
	if level == 0 {
		xs = decodeExtents(d)
	} else {
		ps = decodePageRefs(d)
	}
	if d.err == nil && len(xs) == 0 && len(ps) == 0 {
		d.fail("empty page")
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return newPage(level, xs, ps), nil
}
