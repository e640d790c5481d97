package repo

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/pack"
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
	// indexMaxBlobs keeps an index file near 1.5 MiB (about 48 bytes per
	// blob), even for packs of tiny tree blobs. The session holds the
	// entries of the next index file (52 bytes each) and its encoding
	// while it writes it: at 64 Ki blobs that was 8 of the 40 MiB of heap
	// in use at the peak of a first image backup at 8 KiB chunks.
	indexMaxBlobs = 1 << 15
)

// indexFiles records which index files the in-memory index was built from
// and the packs each lists: 32 bytes per pack (about 2 bytes per MiB of
// packs) plus about 100 bytes per file. RefreshIndex uses it to notice a
// prune, and prune to know which index files mention a pack.
type indexFiles struct {
	// mu guards files. No I/O happens while it is held.
	mu    sync.Mutex
	files map[string][]pack.ID
}

// record notes that index file name, listing packs, is part of the index.
func (f *indexFiles) record(name string, packs []index.PackBlobs) {
	ids := make([]pack.ID, len(packs))
	for i, p := range packs {
		ids[i] = p.ID
	}
	f.recordIDs(name, ids)
}

// recordIDs notes that index file name, listing the packs ids, is part of
// the index; ids must not be modified afterwards.
func (f *indexFiles) recordIDs(name string, ids []pack.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.files == nil {
		f.files = make(map[string][]pack.ID)
	}
	f.files[name] = ids
}

// has reports whether index file name is part of the index.
func (f *indexFiles) has(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.files[name]
	return ok
}

// snapshot returns a copy of the recorded files; the pack slices are
// shared and never modified.
func (f *indexFiles) snapshot() map[string][]pack.ID {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string][]pack.ID, len(f.files))
	for name, ids := range f.files {
		m[name] = ids
	}
	return m
}

// reset forgets every recorded file.
func (f *indexFiles) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files = nil
}

// LoadIndex loads every index file into the index, indexLoaders at a time.
// A damaged index file gives an error naming it. Loading the same file twice
// is harmless, and so is a pack listed by several files (as a prune that was
// interrupted leaves): a blob keeps its first location. With
// OpenOptions.IndexDir the index lives in local files (see indexFileName);
// LoadIndex must then run before anything uses the index, and at most once.
func (r *Repository) LoadIndex(ctx context.Context) error {
	r.indexLoaded.Store(true)
	names, err := r.listIndexFiles(ctx)
	if err != nil {
		return err
	}
	if r.indexDir != "" && r.idx.Len() == 0 {
		return r.loadIndexLocal(ctx, r.indexDir, names)
	}
	return r.loadIndexFiles(ctx, names)
}

// listIndexFiles returns the names of every index file.
func (r *Repository) listIndexFiles(ctx context.Context) ([]string, error) {
	var names []string
	err := r.be.List(ctx, backend.Index, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repo: list index files: %w", err)
	}
	return names, nil
}

// loadIndexFiles adds the index files names to the in-memory index,
// indexLoaders at a time, and records them.
func (r *Repository) loadIndexFiles(ctx context.Context, names []string) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(indexLoaders)
	for _, name := range names {
		g.Go(func() error {
			f, err := r.loadIndexFile(ctx, name)
			if err != nil {
				return err
			}
			for _, p := range f.Packs {
				r.idx.Add(p.ID, p.Blobs)
			}
			r.idxFiles.record(name, f.Packs)
			return nil
		})
	}
	return g.Wait()
}

// loadIndexFile loads and decodes one index file.
func (r *Repository) loadIndexFile(ctx context.Context, name string) (*index.File, error) {
	plain, err := r.LoadFile(ctx, backend.Index, name)
	if err != nil {
		return nil, err
	}
	f, err := index.DecodeFile(plain)
	if err != nil {
		return nil, fmt.Errorf("repo: index file %s: %w", shortName(backend.Index, name), err)
	}
	return f, nil
}

// RefreshIndex brings the in-memory index up to date with the index files
// in the repository and reports whether it had to rebuild it. It loads the
// files written since the index was loaded; if a file it had loaded is gone
// (a prune superseded it and may have deleted packs it listed), it rebuilds
// the index from the current files, so that no blob is looked up in, or
// deduplicated against, a pack that may no longer exist.
//
// Call it after taking a lock and before saving or loading blobs: a prune
// that finished between Open and the lock is then noticed, and none can
// start its final step while the lock is held. It must not run
// concurrently with other methods that use the index (SaveChunk,
// LoadChunk, Flush), and the write session must be flushed.
func (r *Repository) RefreshIndex(ctx context.Context) (rebuilt bool, err error) {
	names, err := r.listIndexFiles(ctx)
	if err != nil {
		return false, err
	}
	loaded := r.idxFiles.snapshot()
	current := make(map[string]struct{}, len(names))
	var fresh []string
	for _, name := range names {
		current[name] = struct{}{}
		if _, ok := loaded[name]; !ok {
			fresh = append(fresh, name)
		}
	}
	for name := range loaded {
		if _, ok := current[name]; !ok {
			rebuilt = true
			break
		}
	}
	if !rebuilt {
		return false, r.loadIndexFiles(ctx, fresh)
	}
	all := make(map[pack.ID]struct{})
	for _, id := range r.idx.Packs() {
		all[id] = struct{}{}
	}
	r.idx.RemovePacks(all)
	r.idxFiles.reset()
	return true, r.loadIndexFiles(ctx, names)
}

// IndexLoaded reports whether the index files were loaded (Open without
// OpenOptions.NoIndex, or LoadIndex); RefreshIndex only makes sense then.
func (r *Repository) IndexLoaded() bool { return r.indexLoaded.Load() }

// saveIndexFile writes an index file listing packs and returns its name.
func (r *Repository) saveIndexFile(ctx context.Context, packs []index.PackBlobs) (string, error) {
	name, err := r.SaveFile(ctx, backend.Index, index.EncodeFile(&index.File{Packs: packs}))
	if err != nil {
		return "", err
	}
	r.idxFiles.record(name, packs)
	r.stats.indexFiles.Add(1)
	return name, nil
}
