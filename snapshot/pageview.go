package snapshot

import "github.com/imagobackup/imago/chunk"

// PageView is a content-list page blob decoded for display (`imago cat
// tree` on a page): a full page (format byte 0x02) with its extents or page
// references, or a delta page (0x03) with its base and runs, as stored.
type PageView struct {
	Format  string         `json:"format"` // "page" or "delta"
	Level   uint8          `json:"level"`
	Extents []Extent       `json:"extents,omitempty"`
	Pages   []PageRef      `json:"pages,omitempty"`
	Base    *chunk.ID      `json:"base,omitempty"`  // delta: the full page it edits
	Count   uint64         `json:"count,omitempty"` // delta: the page's extents
	Runs    []DeltaRunView `json:"runs,omitempty"`
}

// DeltaRunView is one run of a delta page: Keep entries of the base from
// entry From on, or the new extents Extents.
type DeltaRunView struct {
	From    uint64   `json:"from,omitempty"`
	Keep    uint64   `json:"keep,omitempty"`
	Extents []Extent `json:"extents,omitempty"`
}

// IsPage reports whether b, a tree blob, is a content-list page rather
// than a directory tree.
func IsPage(b []byte) bool {
	return len(b) > 0 && (b[0] == formatPageV1 || b[0] == formatPageDeltaV1)
}

// DecodePageView decodes a content-list page blob strictly, as a reader
// does, for display.
func DecodePageView(b []byte) (*PageView, error) {
	if len(b) > 0 && b[0] == formatPageDeltaV1 {
		dp, err := decodeDeltaPage(b)
		if err != nil {
			return nil, err
		}
		v := &PageView{Format: "delta", Base: &dp.base, Count: dp.count}
		for _, r := range dp.runs {
			if len(r.lits) > 0 {
				v.Runs = append(v.Runs, DeltaRunView{Extents: r.lits})
			} else {
				v.Runs = append(v.Runs, DeltaRunView{From: r.from, Keep: r.n})
			}
		}
		return v, nil
	}
	p, err := decodePage(b)
	if err != nil {
		return nil, err
	}
	return &PageView{Format: "page", Level: p.level, Extents: p.extents, Pages: p.refs}, nil
}
