package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/zeebo/blake3"
	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
)

// Check concurrency. Header checks are small ranged reads bound by latency;
// full pack reads hold a whole pack in memory each, so at most
// checkReaders × (MaxPackSize + header) bytes: 32 MiB with default packs,
// 256 MiB with the largest allowed.
const (
	// checkWorkers is how many packs are checked at once.
	checkWorkers = 4
	// checkReaders is how many of them may be downloaded whole at once:
	// two keep both of our two cores busy hashing and decrypting.
	checkReaders = 2
)

// CheckOptions configure Check. The zero value checks the structure only.
type CheckOptions struct {
	// ReadData downloads every pack selected by Subset, checks that its
	// bytes hash to its name, and opens and verifies every blob in it.
	ReadData bool
	// Subset selects the packs ReadData reads; the zero value selects all.
	Subset Subset
	// Used, when not nil, walks every snapshot and reports the blobs they
	// reference to u (see UsedSet). Its error ends the check; damage it
	// finds goes to u.Damaged instead. It is called after the packs were
	// checked, so that u can tell which snapshots use damaged packs.
	Used func(ctx context.Context, u *UsedSet) error
	// Progress, when not nil, is updated as packs are checked.
	Progress *CheckProgress
}

// CheckProgress counts the work of a running Check; a caller polls it.
type CheckProgress struct {
	PacksDone  atomic.Int64
	PacksTotal atomic.Int64
	BytesRead  atomic.Int64 // bytes of packs downloaded whole
}

// CheckReport is the outcome of Check. Each error and warning is one line
// that starts with the object it is about ("pack 1a2b3c4d: ...",
// "snapshot 9f8e7d6c: ...", "index file 0a1b2c3d: ..."). Errors are damage;
// warnings are harmless leftovers (an interrupted backup's unindexed packs).
type CheckReport struct {
	Errors   []string `json:"errors"`
	Warnings []string `json:"warnings"`

	IndexFiles int   `json:"index_files"` // index files that loaded
	Packs      int   `json:"packs"`       // packs listed by the index files
	Blobs      int   `json:"blobs"`       // distinct blobs in the index
	UsedBlobs  int   `json:"used_blobs"`  // distinct blobs the snapshots reference
	Snapshots  int   `json:"snapshots"`   // snapshots the Used walker reported
	PacksRead  int   `json:"packs_read"`  // packs downloaded whole (ReadData)
	BytesRead  int64 `json:"bytes_read"`  // their bytes

	// The damaged objects, by ID and sorted: packs that are missing, of the
	// wrong size, with a bad header or content; blobs that failed to open or
	// verify; blobs a snapshot uses that no index lists; snapshots that use
	// missing or damaged blobs or could not be walked to the end.
	DamagedPacks     []pack.ID      `json:"damaged_packs"`
	DamagedBlobs     []chunk.Handle `json:"damaged_blobs"`
	MissingBlobs     []chunk.Handle `json:"missing_blobs"`
	DamagedSnapshots []string       `json:"damaged_snapshots"`
	// UnindexedPacks are packs no index file lists (warnings).
	UnindexedPacks []pack.ID `json:"unindexed_packs"`
}

// OK reports whether the check found no damage.
func (c *CheckReport) OK() bool { return len(c.Errors) == 0 }

// Subset selects the packs a data check reads. With N and T set (1 ≤ N ≤ T)
// it is group N of T: the packs whose ID, read as a big-endian number from
// its first 8 bytes, is N-1 modulo T, so that groups 1/T … T/T together read
// every pack once, whatever packs are added between runs. With Percent set
// it is that share of the packs (rounded up), picked at random each run.
// The zero value selects every pack.
type Subset struct {
	N, T    uint64
	Percent float64
}

// ParseSubset parses "n/t" (1 ≤ n ≤ t) or "p%" (0 < p ≤ 100).
func ParseSubset(s string) (Subset, error) {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || !(f > 0 && f <= 100) {
			return Subset{}, fmt.Errorf("repo: subset %q: want a percentage in (0, 100]", s)
		}
		return Subset{Percent: f}, nil
	}
	ns, ts, ok := strings.Cut(s, "/")
	n, err1 := strconv.ParseUint(ns, 10, 64)
	t, err2 := strconv.ParseUint(ts, 10, 64)
	if !ok || err1 != nil || err2 != nil || n < 1 || n > t {
		return Subset{}, fmt.Errorf("repo: subset %q: want n/t with 1 <= n <= t, or p%%", s)
	}
	return Subset{N: n, T: t}, nil
}

// String returns the form ParseSubset reads, or "all".
func (s Subset) String() string {
	switch {
	case s.T > 0:
		return fmt.Sprintf("%d/%d", s.N, s.T)
	case s.Percent > 0:
		return strconv.FormatFloat(s.Percent, 'f', -1, 64) + "%"
	}
	return "all"
}

// choose returns the packs of ids the subset selects.
func (s Subset) choose(ids []pack.ID) map[pack.ID]bool {
	sel := make(map[pack.ID]bool)
	switch {
	case s.T > 0:
		for _, id := range ids {
			if binary.BigEndian.Uint64(id[:8])%s.T == s.N-1 {
				sel[id] = true
			}
		}
	case s.Percent > 0 && s.Percent < 100:
		n := int(float64(len(ids))*s.Percent/100 + 0.999999)
		for _, i := range rand.Perm(len(ids))[:min(n, len(ids))] {
			sel[ids[i]] = true
		}
	default:
		for _, id := range ids {
			sel[id] = true
		}
	}
	return sel
}

// indexedPack is what the index files say about one pack. Only a digest of
// its entries is kept, so that Check holds about 100 bytes per pack rather
// than 50 per blob.
type indexedPack struct {
	file   string   // the first index file that lists the pack
	blobs  int      // number of blobs
	size   int64    // the size the entries predict (pack.PackSize)
	digest [32]byte // of the entries in offset order, see entriesDigest
}

// packDamage says which of a damaged pack's blobs are unusable.
type packDamage struct {
	whole bool                      // the pack is missing or unreadable
	blobs map[chunk.Handle]struct{} // the blobs that failed, when !whole
}

// checker is the state of one Check.
type checker struct {
	r    *Repository
	opts CheckOptions

	// mu guards the fields below.
	mu      sync.Mutex
	rep     CheckReport
	damaged map[pack.ID]*packDamage
	// damagedSnaps collects DamagedSnapshots.
	damagedSnaps map[string]struct{}
}

// Check verifies the repository r and returns a report of what is damaged.
// It loads every index file itself (each damaged one is reported and
// skipped) and adds what it finds to r's index, so r may be opened with
// OpenOptions.NoIndex. It checks that every indexed pack exists with the
// size its entries predict and a header that agrees with the index, warns
// about packs no index lists, and, with opts.ReadData, downloads the
// selected packs and verifies every byte. Then opts.Used reports the blobs
// the snapshots reference, each of which must be in the index and not in a
// damaged pack. Check changes nothing in the repository. Damage is reported
// in the CheckReport; the error is only for a check that could not run
// (listing failed, ctx cancelled).
func Check(ctx context.Context, r *Repository, opts CheckOptions) (*CheckReport, error) {
	c := &checker{r: r, opts: opts, damaged: make(map[pack.ID]*packDamage), damagedSnaps: make(map[string]struct{})}
	packs, err := c.loadIndexFiles(ctx)
	if err != nil {
		return nil, err
	}
	stored := make(map[pack.ID]int64)
	err = r.be.List(ctx, backend.Pack, func(fi backend.FileInfo) error {
		id, err := pack.ParseID(fi.Name)
		if err != nil {
			c.warnf("pack file %q: not a pack name", fi.Name)
			return nil
		}
		stored[id] = fi.Size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repo: check: list packs: %w", err)
	}
	if err := c.checkPacks(ctx, packs, stored); err != nil {
		return nil, err
	}
	c.rep.Blobs = r.idx.Len()
	if opts.Used != nil {
		u := &UsedSet{c: c, seen: make(map[uint64]bool), snaps: make(map[string]struct{}), inDamaged: make(map[snapPack]int)}
		if err := opts.Used(ctx, u); err != nil {
			return nil, fmt.Errorf("repo: check: walk snapshots: %w", err)
		}
		u.finish()
	}
	rep := &c.rep
	for id := range c.damaged {
		rep.DamagedPacks = append(rep.DamagedPacks, id)
	}
	for s := range c.damagedSnaps {
		rep.DamagedSnapshots = append(rep.DamagedSnapshots, s)
	}
	slices.SortFunc(rep.DamagedPacks, func(a, b pack.ID) int { return bytes.Compare(a[:], b[:]) })
	slices.SortFunc(rep.UnindexedPacks, func(a, b pack.ID) int { return bytes.Compare(a[:], b[:]) })
	slices.SortFunc(rep.DamagedBlobs, compareHandles)
	slices.SortFunc(rep.MissingBlobs, compareHandles)
	slices.Sort(rep.DamagedSnapshots)
	slices.Sort(rep.Errors)
	slices.Sort(rep.Warnings)
	rep.nonNil()
	return rep, nil
}

// nonNil makes every list non-nil, so that JSON shows empty lists as [].
func (c *CheckReport) nonNil() {
	c.Errors = orEmpty(c.Errors)
	c.Warnings = orEmpty(c.Warnings)
	c.DamagedPacks = orEmpty(c.DamagedPacks)
	c.DamagedBlobs = orEmpty(c.DamagedBlobs)
	c.MissingBlobs = orEmpty(c.MissingBlobs)
	c.DamagedSnapshots = orEmpty(c.DamagedSnapshots)
	c.UnindexedPacks = orEmpty(c.UnindexedPacks)
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func compareHandles(a, b chunk.Handle) int {
	if c := bytes.Compare(a.ID[:], b.ID[:]); c != 0 {
		return c
	}
	return int(a.Kind) - int(b.Kind)
}

func (c *checker) errorf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rep.Errors = append(c.rep.Errors, fmt.Sprintf(format, args...))
}

func (c *checker) warnf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rep.Warnings = append(c.rep.Warnings, fmt.Sprintf(format, args...))
}

// damagePack records pack id as damaged: whole, or only the blobs given.
func (c *checker) damagePack(id pack.ID, whole bool, blobs ...chunk.Handle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.damaged[id]
	if d == nil {
		d = &packDamage{blobs: make(map[chunk.Handle]struct{})}
		c.damaged[id] = d
	}
	d.whole = d.whole || whole
	for _, h := range blobs {
		if _, ok := d.blobs[h]; !ok {
			d.blobs[h] = struct{}{}
			c.rep.DamagedBlobs = append(c.rep.DamagedBlobs, h)
		}
	}
}

// loadIndexFiles loads and decodes every index file, indexLoaders at a
// time, adds their packs to r's index and returns what they say about each
// pack. A file that fails to load or decode is an error in the report.
func (c *checker) loadIndexFiles(ctx context.Context) (map[pack.ID]*indexedPack, error) {
	var names []string
	err := c.r.be.List(ctx, backend.Index, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repo: check: list index files: %w", err)
	}
	slices.Sort(names)
	packs := make(map[pack.ID]*indexedPack)
	var mu sync.Mutex // guards packs and c.rep.IndexFiles
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(indexLoaders)
	for _, name := range names {
		g.Go(func() error {
			plain, err := c.r.LoadFile(gctx, backend.Index, name)
			if err == nil {
				var f *index.File
				if f, err = index.DecodeFile(plain); err == nil {
					c.addIndexFile(name, f, packs, &mu)
					return nil
				}
			}
			if gctx.Err() != nil {
				return gctx.Err()
			}
			c.errorf("index file %s: %v", shortHex(name), err)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return packs, nil
}

// addIndexFile records the packs of index file name in packs (guarded by
// mu) and in r's index.
func (c *checker) addIndexFile(name string, f *index.File, packs map[pack.ID]*indexedPack, mu *sync.Mutex) {
	overhead := c.r.key.Overhead()
	for _, p := range f.Packs {
		c.r.idx.Add(p.ID, p.Blobs)
		ip := &indexedPack{file: name, blobs: len(p.Blobs), size: pack.PackSize(p.Blobs, overhead), digest: entriesDigest(p.Blobs)}
		mu.Lock()
		old, dup := packs[p.ID]
		if !dup || name < old.file {
			packs[p.ID] = ip
		}
		mu.Unlock()
		if dup && old.digest != ip.digest {
			a, b := min(name, old.file), max(name, old.file)
			c.errorf("pack %s: index files %s and %s list it differently", p.ID.Short(), shortHex(a), shortHex(b))
		}
	}
	mu.Lock()
	c.rep.IndexFiles++
	mu.Unlock()
}

// entriesDigest returns a hash of entries in offset order.
func entriesDigest(entries []pack.Entry) [32]byte {
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b pack.Entry) int { return int(int64(a.Offset) - int64(b.Offset)) })
	h := blake3.New()
	var b [1 + 1 + chunk.IDSize + 12]byte
	for _, e := range sorted {
		b[0], b[1] = byte(e.Handle.Kind), byte(e.Codec)
		copy(b[2:], e.Handle.ID[:])
		binary.LittleEndian.PutUint32(b[34:], e.Offset)
		binary.LittleEndian.PutUint32(b[38:], e.Length)
		binary.LittleEndian.PutUint32(b[42:], e.RawLength)
		h.Write(b[:])
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// checkPacks compares the indexed packs with the stored ones and checks the
// header (or, when selected for ReadData, every byte) of each that exists
// with the right size.
func (c *checker) checkPacks(ctx context.Context, packs map[pack.ID]*indexedPack, stored map[pack.ID]int64) error {
	c.rep.Packs = len(packs)
	for id := range stored {
		if _, ok := packs[id]; !ok {
			c.rep.UnindexedPacks = append(c.rep.UnindexedPacks, id)
			c.warnf("pack %s: in no index file (left by an interrupted backup? repair index adds it, prune removes it)", id.Short())
		}
	}
	var todo []pack.ID
	for id, ip := range packs {
		size, ok := stored[id]
		switch {
		case !ok:
			c.errorf("pack %s: missing (listed in index file %s)", id.Short(), shortHex(ip.file))
			c.damagePack(id, true)
		case size != ip.size:
			c.errorf("pack %s: size %d != %d (from index file %s)", id.Short(), size, ip.size, shortHex(ip.file))
			c.damagePack(id, true)
		default:
			todo = append(todo, id)
		}
	}
	slices.SortFunc(todo, func(a, b pack.ID) int { return bytes.Compare(a[:], b[:]) })
	var read map[pack.ID]bool
	if c.opts.ReadData {
		read = c.opts.Subset.choose(todo)
	}
	if p := c.opts.Progress; p != nil {
		p.PacksTotal.Store(int64(len(todo)))
	}

	// bufs holds the pack buffers of full reads; taking one is the right
	// to download a pack (see checkReaders).
	bufs := make(chan []byte, checkReaders)
	for range checkReaders {
		bufs <- nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(checkWorkers)
	for _, id := range todo {
		g.Go(func() error {
			var err error
			if read[id] {
				var buf []byte
				select {
				case buf = <-bufs:
				case <-gctx.Done():
					return gctx.Err()
				}
				buf, err = c.readPack(gctx, id, packs[id], stored[id], buf)
				bufs <- buf
			} else {
				err = c.checkHeader(gctx, id, packs[id], stored[id])
			}
			if p := c.opts.Progress; p != nil {
				p.PacksDone.Add(1)
			}
			return err
		})
	}
	return g.Wait()
}

// checkHeader reads the header of pack id and compares it with the index.
// Only a cancelled ctx is returned as an error.
func (c *checker) checkHeader(ctx context.Context, id pack.ID, ip *indexedPack, size int64) error {
	h := backend.Handle{Type: backend.Pack, Name: id.String()}
	entries, err := pack.ReadHeader(&backendReaderAt{ctx: ctx, be: c.r.be, h: h}, size, c.r.key, id)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.errorf("pack %s: header: %v", id.Short(), trimPackPrefix(err, id))
		c.damagePack(id, true)
		return nil
	}
	c.compareHeader(id, ip, entries)
	return nil
}

// compareHeader reports a header whose entries differ from the index's.
func (c *checker) compareHeader(id pack.ID, ip *indexedPack, entries []pack.Entry) {
	if entriesDigest(entries) == ip.digest {
		return
	}
	detail := fmt.Sprintf("header lists %d blobs, index file %s lists %d", len(entries), shortHex(ip.file), ip.blobs)
	if len(entries) == ip.blobs {
		detail = fmt.Sprintf("header and index file %s disagree on the codec or raw length of a blob", shortHex(ip.file))
	}
	for _, e := range entries {
		loc, ok := c.r.idx.Lookup(e.Handle)
		if !ok {
			detail = fmt.Sprintf("header lists %v blob %v, which no index file lists", e.Handle.Kind, e.Handle.ID.Short())
			break
		}
		if loc.Pack == id && (loc.Offset != e.Offset || loc.Length != e.Length) {
			detail = fmt.Sprintf("%v blob %v is at %d (%d bytes) in the header, at %d (%d bytes) in the index",
				e.Handle.Kind, e.Handle.ID.Short(), e.Offset, e.Length, loc.Offset, loc.Length)
			break
		}
	}
	c.errorf("pack %s: %s", id.Short(), detail)
	c.damagePack(id, true)
}

// readPack downloads pack id into buf (reused and returned), checks its
// name and header, and opens and verifies every blob. Only a cancelled ctx
// is returned as an error.
func (c *checker) readPack(ctx context.Context, id pack.ID, ip *indexedPack, size int64, buf []byte) ([]byte, error) {
	h := backend.Handle{Type: backend.Pack, Name: id.String()}
	buf, err := backend.LoadAll(ctx, c.r.be, h, buf)
	if err != nil {
		if ctx.Err() != nil {
			return buf, ctx.Err()
		}
		c.errorf("pack %s: load: %v", id.Short(), err)
		c.damagePack(id, true)
		return buf, nil
	}
	c.mu.Lock()
	c.rep.PacksRead++
	c.rep.BytesRead += int64(len(buf))
	c.mu.Unlock()
	if p := c.opts.Progress; p != nil {
		p.BytesRead.Add(int64(len(buf)))
	}
	if int64(len(buf)) != size {
		c.errorf("pack %s: read %d bytes, listed with %d", id.Short(), len(buf), size)
		c.damagePack(id, true)
		return buf, nil
	}
	if sum := pack.ID(blake3.Sum256(buf)); sum != id {
		// Which blobs are lost is found below; the pack is damaged even
		// if none is (the damage may be in the header's padding).
		c.errorf("pack %s: content hashes to %s (damaged)", id.Short(), sum.Short())
		c.damagePack(id, false)
	}
	entries, err := pack.ReadHeader(bytes.NewReader(buf), int64(len(buf)), c.r.key, id)
	if err != nil {
		c.errorf("pack %s: header: %v", id.Short(), trimPackPrefix(err, id))
		c.damagePack(id, true)
		// The index still says where the blobs are; check them to name
		// the ones that are lost.
		entries = c.indexEntries(id)
	} else {
		c.compareHeader(id, ip, entries)
	}
	var plain []byte
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return buf, err
		}
		end := int64(e.Offset) + int64(e.Length)
		if end > int64(len(buf)) {
			c.errorf("pack %s: %v blob %v: ends at %d, past the end of the pack", id.Short(), e.Handle.Kind, e.Handle.ID.Short(), end)
			c.damagePack(id, false, e.Handle)
			continue
		}
		plain, err = pack.DecodeBlob(plain[:0], c.r.key, e.Handle, buf[e.Offset:end])
		if err == nil && c.r.hasher.Sum(plain) != e.Handle.ID {
			err = fmt.Errorf("content hashes to %v", c.r.hasher.Sum(plain).Short())
		}
		if err == nil && e.RawLength != 0 && int(e.RawLength) != len(plain) {
			err = fmt.Errorf("%d bytes, recorded as %d", len(plain), e.RawLength)
		}
		if err != nil {
			c.errorf("pack %s: %v blob %v: %v", id.Short(), e.Handle.Kind, e.Handle.ID.Short(), err)
			c.damagePack(id, false, e.Handle)
		}
	}
	return buf, nil
}

// indexEntries returns the blobs r's index places in pack id, without raw
// lengths and codecs. It scans the whole index: only for damaged packs.
func (c *checker) indexEntries(id pack.ID) []pack.Entry {
	var out []pack.Entry
	c.r.idx.Each(func(h chunk.Handle, loc index.Location) bool {
		if loc.Pack == id {
			out = append(out, pack.Entry{Handle: h, Offset: loc.Offset, Length: loc.Length})
		}
		return true
	})
	slices.SortFunc(out, func(a, b pack.Entry) int { return int(int64(a.Offset) - int64(b.Offset)) })
	return out
}

// trimPackPrefix drops the "pack <id>: " that pack.FormatError puts first,
// since the report line already names the pack.
func trimPackPrefix(err error, id pack.ID) string {
	s := err.Error()
	var fe *pack.FormatError
	if errors.As(err, &fe) {
		s = strings.TrimPrefix(s, "pack "+id.String()+": ")
	}
	return s
}

// shortHex returns the first 8 characters of a hex name.
func shortHex(name string) string {
	if len(name) > 8 {
		return name[:8]
	}
	return name
}

// snapPack is a snapshot and a damaged pack it uses.
type snapPack struct {
	snap string
	pack pack.ID
}

// UsedSet receives the blobs the snapshots reference during a Check (see
// CheckOptions.Used). Its methods are safe for concurrent use, so the
// walker may walk several snapshots at once.
//
// It remembers each blob by a 64-bit prefix of its ID (about 10 bytes per
// blob in memory rather than 50). Two blobs sharing a prefix, which the
// keyed hash makes about as likely as 1 in 10^8 for a 10^6-blob
// repository, make the second one skipped: it is then not checked against
// the index, though a data check still reads it.
type UsedSet struct {
	c *checker

	// mu guards the fields below.
	mu sync.Mutex
	// seen maps each marked blob to whether it is missing or damaged.
	seen map[uint64]bool
	// snaps holds every snapshot reported to Mark or Damaged.
	snaps map[string]struct{}
	// inDamaged counts, per snapshot and damaged pack, the blobs the
	// snapshot uses there.
	inDamaged map[snapPack]int
	used      int
}

// usedKey is the key of h in UsedSet.seen.
func usedKey(h chunk.Handle) uint64 {
	return binary.LittleEndian.Uint64(h.ID[:8]) ^ uint64(h.Kind)
}

// Mark records that snapshot snap (its ID) references blob h and reports
// whether the walker should skip h and what it references: when h was
// marked before, by any snapshot, or when h is in no index (which is then
// reported as damage of snap). A missing or damaged blob is reported for
// every snapshot that marks it; but a snapshot that reaches damage only
// through a tree another snapshot marked first is not named, since the
// walker skips that tree.
func (u *UsedSet) Mark(snap string, h chunk.Handle) (skip bool) {
	k := usedKey(h)
	u.mu.Lock()
	u.snaps[snap] = struct{}{}
	bad, seen := u.seen[k]
	if !seen {
		u.seen[k] = false
		u.used++
	}
	u.mu.Unlock()
	if seen && !bad {
		return true
	}

	loc, ok := u.c.r.idx.Lookup(h)
	if !ok {
		u.c.errorf("snapshot %s: %v %v missing from index", shortHex(snap), h.Kind, h.ID.Short())
		u.c.mu.Lock()
		if !seen {
			u.c.rep.MissingBlobs = append(u.c.rep.MissingBlobs, h)
		}
		u.c.damagedSnaps[snap] = struct{}{}
		u.c.mu.Unlock()
		u.setBad(k)
		return true
	}
	u.c.mu.Lock()
	d := u.c.damaged[loc.Pack]
	bad = d != nil && d.whole
	if d != nil && !bad {
		_, bad = d.blobs[h]
	}
	if bad {
		u.c.damagedSnaps[snap] = struct{}{}
	}
	u.c.mu.Unlock()
	if bad {
		u.setBad(k)
		u.mu.Lock()
		u.inDamaged[snapPack{snap, loc.Pack}]++
		u.mu.Unlock()
	}
	return seen
}

// setBad records that the blob with key k is missing or damaged.
func (u *UsedSet) setBad(k uint64) {
	u.mu.Lock()
	u.seen[k] = true
	u.mu.Unlock()
}

// Damaged records that snapshot snap cannot be walked to the end (its
// record does not load, or a tree fails to load or decode); err should name
// the object.
func (u *UsedSet) Damaged(snap string, err error) {
	u.mu.Lock()
	u.snaps[snap] = struct{}{}
	u.mu.Unlock()
	u.c.errorf("snapshot %s: %v", shortHex(snap), err)
	u.c.mu.Lock()
	u.c.damagedSnaps[snap] = struct{}{}
	u.c.mu.Unlock()
}

// finish adds the walk's counts and its per-snapshot damage to the report.
func (u *UsedSet) finish() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for sp, n := range u.inDamaged {
		blobs := "blobs"
		if n == 1 {
			blobs = "blob"
		}
		u.c.errorf("snapshot %s: uses %d %s of damaged pack %s", shortHex(sp.snap), n, blobs, sp.pack.Short())
	}
	u.c.rep.UsedBlobs = u.used
	u.c.rep.Snapshots = len(u.snaps)
}
