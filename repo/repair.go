package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
)

// repairReaders is how many pack headers RepairIndex reads at once: small
// ranged reads bound by latency. Each holds one header (a few KiB to a few
// MiB) until its index batch is written.
const repairReaders = 4

// RepairReport is the outcome of RepairIndex.
type RepairReport struct {
	Packs             int `json:"packs"`               // packs whose header read correctly, now indexed
	Blobs             int `json:"blobs"`               // their blobs
	IndexFilesWritten int `json:"index_files_written"` // new index files
	IndexFilesRemoved int `json:"index_files_removed"` // old index files removed
	// Damaged names each pack whose header could not be read, one line each
	// ("pack 1a2b3c4d: ..."); DamagedPacks lists their IDs, sorted. They are
	// left in place, in no index file.
	Damaged      []string  `json:"damaged"`
	DamagedPacks []pack.ID `json:"damaged_packs"`
}

// RepairIndex rebuilds the index from the pack headers. It lists the index
// files, then every pack; reads each pack's header (repairReaders at a
// time); writes new index files listing exactly the packs whose header
// opens and checks (in batches of at most indexMaxBlobs blobs); and only
// then removes the old index files, so a crash at any point leaves every
// indexed pack indexed.
//
// A pack whose header is damaged is reported and left out of the index. A
// backend error other than a missing pack ends the repair before anything
// is removed, so a flaky connection cannot drop healthy packs from the
// index. Callers hold an exclusive lock: a backup running beside the
// repair could have its new index files removed. r's in-memory index is
// rebuilt as headers are read; after an error it may be incomplete.
func RepairIndex(ctx context.Context, r *Repository) (*RepairReport, error) {
	old := make(map[string]struct{})
	err := r.be.List(ctx, backend.Index, func(fi backend.FileInfo) error {
		old[fi.Name] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repo: repair index: list index files: %w", err)
	}
	type storedPack struct {
		id   pack.ID
		size int64
	}
	var packs []storedPack
	err = r.be.List(ctx, backend.Pack, func(fi backend.FileInfo) error {
		if id, err := pack.ParseID(fi.Name); err == nil {
			packs = append(packs, storedPack{id, fi.Size})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repo: repair index: list packs: %w", err)
	}
	slices.SortFunc(packs, func(a, b storedPack) int { return bytes.Compare(a.id[:], b.id[:]) })

	// Forget what the old index files said: a damaged one may place a
	// blob wrongly, and Add keeps a blob's first location.
	forget := make(map[pack.ID]struct{})
	for _, id := range r.idx.Packs() {
		forget[id] = struct{}{}
	}
	r.idx.RemovePacks(forget)

	rep := &RepairReport{}
	written := make(map[string]struct{})
	var (
		mu         sync.Mutex // guards rep, written, batch and batchBlobs
		batch      []index.PackBlobs
		batchBlobs int
	)
	// flush writes batch as an index file if it is full (or if force).
	flush := func(ctx context.Context, force bool) error {
		mu.Lock()
		if batchBlobs == 0 || (!force && batchBlobs < indexMaxBlobs) {
			mu.Unlock()
			return nil
		}
		b := batch
		batch, batchBlobs = nil, 0
		mu.Unlock()
		name, err := r.saveIndexFile(ctx, b)
		if err != nil {
			return fmt.Errorf("repo: repair index: %w", err)
		}
		mu.Lock()
		written[name] = struct{}{}
		rep.IndexFilesWritten++
		mu.Unlock()
		return nil
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(repairReaders)
	for _, p := range packs {
		g.Go(func() error {
			h := backend.Handle{Type: backend.Pack, Name: p.id.String()}
			entries, err := pack.ReadHeader(&backendReaderAt{ctx: gctx, be: r.be, h: h}, p.size, r.key, p.id)
			var fe *pack.FormatError
			switch {
			case errors.As(err, &fe):
				mu.Lock()
				rep.Damaged = append(rep.Damaged, fmt.Sprintf("pack %s: %s", p.id.Short(), trimPackPrefix(err, p.id)))
				rep.DamagedPacks = append(rep.DamagedPacks, p.id)
				mu.Unlock()
				return nil
			case errors.Is(err, backend.ErrNotExist):
				return nil // removed since the listing: nothing to index
			case err != nil:
				return fmt.Errorf("repo: repair index: read header of pack %s: %w", p.id.Short(), err)
			}
			r.idx.Add(p.id, entries)
			mu.Lock()
			batch = append(batch, index.PackBlobs{ID: p.id, Blobs: entries})
			batchBlobs += len(entries)
			rep.Packs++
			rep.Blobs += len(entries)
			mu.Unlock()
			return flush(gctx, false)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := flush(ctx, true); err != nil {
		return nil, err
	}

	// The new index files are in place: remove the old ones, except any
	// the repair wrote again (index files are named by their content).
	for name := range old {
		if _, ok := written[name]; ok {
			continue
		}
		if err := r.RemoveFile(ctx, backend.Index, name); err != nil && !errors.Is(err, backend.ErrNotExist) {
			return rep, fmt.Errorf("repo: repair index: %w", err)
		}
		rep.IndexFilesRemoved++
	}
	slices.SortFunc(rep.DamagedPacks, func(a, b pack.ID) int { return bytes.Compare(a[:], b[:]) })
	slices.Sort(rep.Damaged)
	rep.Damaged, rep.DamagedPacks = orEmpty(rep.Damaged), orEmpty(rep.DamagedPacks)
	return rep, nil
}
