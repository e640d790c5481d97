package snapshot

import (
	"fmt"

	"github.com/imagobackup/imago/chunk"
)

// A delta page is a level-0 content-list page whose entries are stated as
// edits of a base: a full (0x02) level-0 page already in the repository,
// usually the page at the same offset of the parent snapshot's content list.
//
//	delta = 0x03  level:u8 (0)  base:id  count:uvarint  runs:uvarint  run × runs
//	run   = 0x00  from:uvarint  n:uvarint        base entries [from, from+n)
//	      | 0x01  n:uvarint  extent × n          literal extents
//
// The page's entries are the runs' entries in order. A base is never itself
// a delta page, so a read costs at most two page loads. Where pages are cut
// does not change (it depends only on the extent sequence); only the bytes
// of a cut level-0 page do, so the same entries may be stored as a full page
// and as deltas of different bases, with different IDs.
//
// Uniformly scattered churn changes a few entries of nearly every level-0
// page each night: as full pages, a night rewrote almost the whole content
// list; as deltas, it writes ~40 bytes per changed entry plus ~40 per page.

// Run tags of a delta page. Stored on disk: never renumber.
const (
	runCopy    byte = 0x00 // from, n: base entries [from, from+n)
	runLiteral byte = 0x01 // n, then n extents as in a full page
)

const (
	// maxDeltaEntries bounds the entries of a delta page. A delta names
	// base entries by range, so a few bytes can stand for many entries;
	// the bound keeps a hostile page from making a reader allocate more
	// than 64 Ki × 48 bytes = 3 MiB. Writers that follow the paging rule
	// never cut a page of more than maxPageEntries (2048).
	maxDeltaEntries = 1 << 16
	// minRunLen is the shortest encoded run: tag, from and n (a copy).
	minRunLen = 3
	// alignLookahead is how many entries the writer's alignment looks
	// ahead for a match after a mismatch. Scattered replacements need no
	// look-ahead; a merged or split hole skips one to three base entries.
	alignLookahead = 8
	// deltaMaxShare: a writer saves a delta page only when it takes at most
	// 1/deltaMaxShare of the full page's bytes. Deltas accumulate against a
	// fixed base until the page is saved in full again: with c bytes of
	// delta per night and a full page of F bytes, this cap alone rewrites
	// the page every F/(deltaMaxShare·c) nights and costs about
	// F/(2·deltaMaxShare) + deltaMaxShare·c per night, the price of reads
	// that never chain; a quarter of the list a night, however little
	// changes. ContentBuilder.delta therefore also rewrites a page once its
	// base's deltas have cost more than the page (about √(2cF) a night);
	// the cap still bounds what a read loads. Simulated (40 nights, 1% of 100k 8 KiB extents
	// replaced per night): nights 1-10 wrote 3-13% of the full list each;
	// nights 20-39 23.5% with 2, 16.8% with 4, 15.9% with 8. On the real
	// churn of bench/image-nightly.sh (512 MiB, 12 nights) 4 wrote as
	// much as 2 (213 vs 207 KiB a night), so 2 stays.
	deltaMaxShare = 2
)

// deltaRun is one run of a delta page: literal extents (lits not empty) or
// n base entries starting at from.
type deltaRun struct {
	from, n uint64
	lits    []Extent
}

// deltaPage is a decoded delta page, before its base is applied.
type deltaPage struct {
	base  chunk.ID
	count uint64
	runs  []deltaRun
}

// appendDeltaPage appends the encoding of d, which must be well formed: a
// non-null base, runs of at least one entry, count their total.
func appendDeltaPage(dst []byte, d *deltaPage) ([]byte, error) {
	if d.base.IsNull() {
		return dst, fmt.Errorf("snapshot: encode delta page: null base")
	}
	e := &encoder{buf: dst}
	e.byte(formatPageDeltaV1)
	e.byte(0)
	e.id(d.base)
	e.uvarint(d.count)
	e.uvarint(uint64(len(d.runs)))
	var sum uint64
	for _, r := range d.runs {
		if len(r.lits) > 0 {
			e.byte(runLiteral)
			if err := appendExtents(e, r.lits); err != nil {
				return dst, fmt.Errorf("snapshot: encode delta page: %w", err)
			}
			sum += uint64(len(r.lits))
			continue
		}
		if r.n == 0 {
			return dst, fmt.Errorf("snapshot: encode delta page: empty run")
		}
		e.byte(runCopy)
		e.uvarint(r.from)
		e.uvarint(r.n)
		sum += r.n
	}
	if sum != d.count || sum == 0 || sum > maxDeltaEntries {
		return dst, fmt.Errorf("snapshot: encode delta page: count %d, runs hold %d entries", d.count, sum)
	}
	return e.buf, nil
}

// decodeDeltaPage decodes a delta page strictly, without its base; every
// error is a *FormatError. Whether the copy runs fit the base is checked by
// resolve.
func decodeDeltaPage(b []byte) (*deltaPage, error) {
	d := &decoder{what: "page", b: b}
	if f := d.byte(); d.err == nil && f != formatPageDeltaV1 {
		d.off--
		d.fail(fmt.Sprintf("unknown format byte 0x%02x", f))
	}
	if level := d.byte(); d.err == nil && level != 0 {
		d.off--
		d.fail(fmt.Sprintf("delta page of level %d (must be 0)", level))
	}
	dp := &deltaPage{base: d.id()}
	if d.err == nil && dp.base.IsNull() {
		d.off -= chunk.IDSize
		d.fail("delta page with null base")
	}
	at := d.off
	dp.count = d.uvarint()
	if d.err == nil && (dp.count == 0 || dp.count > maxDeltaEntries) {
		d.off = at
		d.fail(fmt.Sprintf("delta page count %d outside [1, %d]", dp.count, maxDeltaEntries))
	}
	n := d.count(minRunLen)
	if d.err == nil {
		dp.runs = make([]deltaRun, 0, capHint(n))
	}
	var sum uint64
	for i := 0; i < n && d.err == nil; i++ {
		at := d.off
		var r deltaRun
		switch tag := d.byte(); {
		case d.err != nil:
		case tag == runCopy:
			r.from, r.n = d.uvarint(), d.uvarint()
			if d.err == nil && (r.n == 0 || r.from+r.n < r.from) {
				d.off = at
				d.fail(fmt.Sprintf("invalid copy run [%d, +%d)", r.from, r.n))
			}
		case tag == runLiteral:
			r.lits = decodeExtents(d)
			if d.err == nil && len(r.lits) == 0 {
				d.off = at
				d.fail("empty literal run")
			}
			r.n = uint64(len(r.lits))
		default:
			d.off = at
			d.fail(fmt.Sprintf("unknown run tag %d", tag))
		}
		if d.err != nil {
			break
		}
		if r.n > dp.count-sum {
			d.off = at
			d.fail(fmt.Sprintf("runs hold more than the count of %d entries", dp.count))
			break
		}
		sum += r.n
		if len(r.lits) > 0 {
			r.n = 0
		}
		dp.runs = append(dp.runs, r)
	}
	if d.err == nil && sum != dp.count {
		d.fail(fmt.Sprintf("count %d but runs hold %d entries", dp.count, sum))
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return dp, nil
}

// resolve applies d to its base, which must be a full level-0 page, and
// returns the resulting page with the checks of a full page.
func (d *deltaPage) resolve(base *page) (*page, error) {
	fail := func(reason string) (*page, error) {
		return nil, &FormatError{What: "page", Offset: -1, Reason: reason}
	}
	if base.level != 0 || base.delta != nil {
		return fail(fmt.Sprintf("base page %v is not a full level-0 page", d.base.Short()))
	}
	nb := uint64(len(base.extents))
	xs := make([]Extent, 0, d.count)
	var total uint64
	for _, r := range d.runs {
		part := r.lits
		if len(part) == 0 {
			if r.from >= nb || r.n > nb-r.from {
				return fail(fmt.Sprintf("copy run [%d, %d) outside the %d entries of base page %v",
					r.from, r.from+r.n, nb, d.base.Short()))
			}
			part = base.extents[r.from : r.from+r.n]
		}
		for _, x := range part {
			if total+x.Length < total {
				return fail("content length overflows 64 bits")
			}
			total += x.Length
		}
		xs = append(xs, part...)
	}
	if uint64(len(xs)) != d.count {
		return fail(fmt.Sprintf("count %d but runs hold %d entries", d.count, len(xs)))
	}
	p := newPage(0, xs, nil)
	p.delta = d
	return p, nil
}

// alignDelta states xs as runs over base: a greedy alignment starting at
// base entry j. It copies while base[j] equals the next extent; on a
// mismatch it looks a few base entries ahead for the extent, else emits it
// as a literal and, when base[j] has the same length and does not come
// again soon in xs (then xs inserted the extent), skips base[j] as the entry
// it replaced. Adjacent runs are coalesced. The result is correct for any
// base; the alignment only decides how small it is.
func alignDelta(base, xs []Extent, j int) []deltaRun {
	var runs []deltaRun
	copyAt := func(j int) {
		if k := len(runs) - 1; k >= 0 && len(runs[k].lits) == 0 && runs[k].from+runs[k].n == uint64(j) {
			runs[k].n++
			return
		}
		runs = append(runs, deltaRun{from: uint64(j), n: 1})
	}
	for i, e := range xs {
		if j < len(base) && base[j] == e {
			copyAt(j)
			j++
			continue
		}
		found := false
		for k := j + 1; k < len(base) && k <= j+alignLookahead; k++ {
			if base[k] == e {
				j, found = k, true
				break
			}
		}
		if found {
			copyAt(j)
			j++
			continue
		}
		if k := len(runs) - 1; k >= 0 && len(runs[k].lits) > 0 {
			runs[k].lits = append(runs[k].lits, e)
		} else {
			runs = append(runs, deltaRun{lits: []Extent{e}})
		}
		if j < len(base) && base[j].Length == e.Length && !containsExtent(xs[i+1:min(len(xs), i+1+alignLookahead)], base[j]) {
			j++
		}
	}
	return runs
}

func containsExtent(xs []Extent, e Extent) bool {
	for _, x := range xs {
		if x == e {
			return true
		}
	}
	return false
}
