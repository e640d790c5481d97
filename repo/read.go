package repo

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
)

// loadPool holds buffers for sealed blobs read from packs; one per
// concurrent LoadChunk, each at most maxEncodeBuf (larger ones are dropped).
var loadPool sync.Pool

// LoadChunk returns the plaintext of blob h in buf (grown when too small).
// It looks the blob up in the index, reads exactly its bytes from its pack,
// opens and decompresses them, and checks that the plaintext hashes to h.ID.
// Any failure (unknown blob, missing pack, damaged bytes, wrong content) is
// an error naming the blob and the pack; unverified data is never returned.
// It is safe for concurrent use.
func (r *Repository) LoadChunk(ctx context.Context, h chunk.Handle, buf []byte) ([]byte, error) {
	loc, ok := r.idx.Lookup(h)
	if !ok {
		return buf[:0], fmt.Errorf("repo: load %v blob %v: not in the index", h.Kind, h.ID.Short())
	}
	plain, err := r.loadBlob(ctx, h, loc, buf)
	if err != nil {
		return buf[:0], fmt.Errorf("repo: load %v blob %v from pack %v: %w", h.Kind, h.ID.Short(), loc.Pack.Short(), err)
	}
	return plain, nil
}

// loadBlob reads, opens and verifies blob h at loc.
func (r *Repository) loadBlob(ctx context.Context, h chunk.Handle, loc index.Location, buf []byte) ([]byte, error) {
	n := int(loc.Length)
	if n == 0 || n > pack.MaxBlobSize+1+r.key.Overhead() {
		return nil, fmt.Errorf("index gives an impossible length %d", n)
	}
	var stored []byte
	if p, ok := loadPool.Get().(*[]byte); ok && cap(*p) >= n {
		stored = (*p)[:n]
	} else {
		stored = make([]byte, n)
	}
	defer func() {
		if cap(stored) <= maxEncodeBuf {
			loadPool.Put(&stored)
		}
	}()
	ph := backend.Handle{Type: backend.Pack, Name: loc.Pack.String()}
	err := r.be.Load(ctx, ph, n, int64(loc.Offset), func(rd io.Reader) error {
		_, err := io.ReadFull(rd, stored)
		return err
	})
	if err != nil {
		return nil, err
	}
	r.stats.bytesDownloaded.Add(int64(n))
	plain, err := pack.DecodeBlob(buf, r.key, h, stored)
	if err != nil {
		return nil, err
	}
	if got := r.hasher.Sum(plain); got != h.ID {
		return nil, fmt.Errorf("content hashes to %v (damaged)", got.Short())
	}
	return plain, nil
}

// HasChunk reports whether blob h is stored (in the index) or being stored
// by this session.
func (r *Repository) HasChunk(h chunk.Handle) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.pending[h]
	return ok || r.idx.Has(h)
}

// Lookup returns where blob h is stored, if the index knows it.
func (r *Repository) Lookup(h chunk.Handle) (index.Location, bool) { return r.idx.Lookup(h) }

// LoadPackHeader reads and authenticates the header of pack id, returning
// its entries. It reads only the pack's tail.
func (r *Repository) LoadPackHeader(ctx context.Context, id pack.ID) ([]pack.Entry, error) {
	h := backend.Handle{Type: backend.Pack, Name: id.String()}
	fi, err := r.be.Stat(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", id.Short(), err)
	}
	entries, err := pack.ReadHeader(&backendReaderAt{ctx: ctx, be: r.be, h: h, count: &r.stats.bytesDownloaded}, fi.Size, r.key, id)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", id.Short(), err)
	}
	return entries, nil
}

// backendReaderAt adapts ranged backend loads to io.ReaderAt.
type backendReaderAt struct {
	ctx context.Context // the ReaderAt interface has no context parameter
	be  backend.Backend
	h   backend.Handle
	// count, when not nil, is increased by the bytes read.
	count *atomic.Int64
}

func (b *backendReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	err := b.be.Load(b.ctx, b.h, len(p), off, func(rd io.Reader) error {
		var err error
		n, err = io.ReadFull(rd, p)
		return err
	})
	if b.count != nil {
		b.count.Add(int64(n))
	}
	return n, err
}
