package repo

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/repo/backend"
)

// indexLoaders is how many index files Open loads and decodes at once. Each
// holds its stored, opened and decoded forms in memory (a few MiB for an
// index file this package writes), so the bound is about 4 × 3 × 3 MiB.
const indexLoaders = 4

// Index-file thresholds of a write session. An index file is written when
// this many packs or blobs were uploaded since the last one, so that an
// interrupted backup loses at most that much work: the next run finds the
// indexed packs and reuses their blobs.
const (
	// indexEveryPacks is 32 packs: 512 MiB of default-sized packs.
	indexEveryPacks = 32
	// indexMaxBlobs keeps an index file near 3 MiB (about 48 bytes per
	// blob), even for packs of tiny tree blobs.
	indexMaxBlobs = 1 << 16
)

// LoadIndex loads every index file into the in-memory index, indexLoaders
// at a time. A damaged index file gives an error naming it. Loading the same
// file twice is harmless.
func (r *Repository) LoadIndex(ctx context.Context) error {
	var names []string
	err := r.be.List(ctx, backend.Index, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("repo: list index files: %w", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(indexLoaders)
	for _, name := range names {
		g.Go(func() error {
			plain, err := r.LoadFile(ctx, backend.Index, name)
			if err != nil {
				return err
			}
			f, err := index.DecodeFile(plain)
			if err != nil {
				return fmt.Errorf("repo: index file %s: %w", shortName(backend.Index, name), err)
			}
			for _, p := range f.Packs {
				r.idx.Add(p.ID, p.Blobs)
			}
			return nil
		})
	}
	return g.Wait()
}

// saveIndexFile writes an index file listing packs and returns its name.
func (r *Repository) saveIndexFile(ctx context.Context, packs []index.PackBlobs) (string, error) {
	name, err := r.SaveFile(ctx, backend.Index, index.EncodeFile(&index.File{Packs: packs}))
	if err != nil {
		return "", err
	}
	r.stats.indexFiles.Add(1)
	return name, nil
}
