package repo

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
)

// Batched loads.
const (
	// loadWorkers is how many ranged loads one LoadChunks call runs at
	// once. Each holds a range buffer of at most loadMaxRange bytes (or one
	// blob, when a blob is larger) and a plaintext buffer; four keep a
	// 2-core machine busy decoding while reads wait on a disk or a remote
	// server.
	loadWorkers = 3
	// loadMaxRange bounds a coalesced range. It is smaller than prune's
	// repackMaxRange because a restore usually runs several LoadChunks
	// calls at once, and 1 MiB per read is already past the size where a
	// disk or an object store serves bytes at full speed.
	loadMaxRange = 1 * miB
)

// loadBufPool holds the buffers of LoadChunks workers between calls; a
// restore calls LoadChunks for every few MiB of its image.
var loadBufPool sync.Pool

// LoadChunks loads the blobs hs and calls fn(i, plain) once for every
// index i of hs (see snapshot.BatchLoader). The blobs are grouped by pack
// and sorted by offset, and neighbours in a pack whose gap is below
// repackMaxGap are read with one ranged Load of at most loadMaxRange bytes
// (more only for a single larger blob), so restoring a chunk stream costs
// a few large reads rather than one small read per chunk. Every blob is
// opened and its plaintext hashed before fn sees it; unverified data is
// never passed on. fn runs on up to loadWorkers goroutines at once.
func (r *Repository) LoadChunks(ctx context.Context, hs []chunk.Handle, fn func(i int, plain []byte) error) error {
	rep := chunk.GroupRepeats(hs)
	byPack := make(map[pack.ID][]repackBlob)
	for _, i := range rep.Order {
		h := hs[i]
		loc, ok := r.idx.Lookup(h)
		if !ok {
			return fmt.Errorf("repo: load %v blob %v: not in the index", h.Kind, h.ID.Short())
		}
		byPack[loc.Pack] = append(byPack[loc.Pack], repackBlob{h: h, off: loc.Offset, length: loc.Length})
	}
	type job struct {
		pack pack.ID
		rg   []repackBlob
	}
	var jobs []job
	for id, bs := range byPack {
		// The pack's size is not known without a Stat; a range past its
		// end fails the Load instead.
		ranges, err := repackRanges(bs, math.MaxInt64, loadMaxRange)
		if err != nil {
			return fmt.Errorf("repo: load from pack %v: %w; run check", id.Short(), err)
		}
		for _, rg := range ranges {
			jobs = append(jobs, job{id, rg})
		}
	}
	// Ranges in pack and offset order: packs written in one run are read
	// in about the order they were written.
	slices.SortFunc(jobs, func(a, b job) int {
		if c := comparePackIDs(a.pack, b.pack); c != 0 {
			return c
		}
		return cmp.Compare(a.rg[0].off, b.rg[0].off)
	})

	g, gctx := errgroup.WithContext(ctx)
	var taken atomic.Int64
	for range min(loadWorkers, len(jobs)) {
		g.Go(func() error {
			b, _ := loadBufPool.Get().(*repackBuffers)
			if b == nil {
				b = new(repackBuffers)
			}
			defer func() {
				if cap(b.rg) <= loadMaxRange && cap(b.plain) <= maxEncodeBuf {
					loadBufPool.Put(b)
				}
			}()
			for {
				k := int(taken.Add(1) - 1)
				if k >= len(jobs) {
					return nil
				}
				j := jobs[k]
				err := r.loadRange(gctx, j.pack, j.rg, b, func(bl repackBlob, _, plain []byte) error {
					return rep.Each(rep.First[bl.h], func(i int) error { return fn(i, plain) })
				})
				if err != nil {
					return err
				}
			}
		})
	}
	return g.Wait()
}

// loadRange reads the blobs rg of pack id, and the gaps between them, with
// one ranged Load into b.rg, then opens and verifies each blob in turn and
// passes its sealed bytes and its plaintext to fn. LoadChunks and prune's
// repacking read packs through it.
func (r *Repository) loadRange(ctx context.Context, id pack.ID, rg []repackBlob, b *repackBuffers, fn func(bl repackBlob, stored, plain []byte) error) error {
	start := int64(rg[0].off)
	n := int(rg[len(rg)-1].end() - start)
	b.rg = slices.Grow(b.rg[:0], n)[:n]
	h := backend.Handle{Type: backend.Pack, Name: id.String()}
	// The callback starts over at b.rg[0] when a retrying backend calls it
	// again.
	err := r.be.Load(ctx, h, n, start, func(rd io.Reader) error {
		_, err := io.ReadFull(rd, b.rg)
		return err
	})
	if err != nil {
		return fmt.Errorf("repo: load %d bytes at %d of pack %v: %w", n, start, id.Short(), err)
	}
	r.stats.bytesDownloaded.Add(int64(n))
	for _, bl := range rg {
		stored := b.rg[int64(bl.off)-start : bl.end()-start]
		b.plain, err = pack.DecodeBlob(b.plain[:0], r.key, bl.h, stored)
		if err == nil && r.hasher.Sum(b.plain) != bl.h.ID {
			err = fmt.Errorf("content hashes to %v (damaged)", r.hasher.Sum(b.plain).Short())
		}
		if err != nil {
			return fmt.Errorf("repo: load %v blob %v from pack %v: %w", bl.h.Kind, bl.h.ID.Short(), id.Short(), err)
		}
		if err := fn(bl, stored, b.plain); err != nil {
			return err
		}
	}
	return nil
}
