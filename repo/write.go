package repo

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
)

// Write-session limits. A pack lives in memory from its first blob until its
// upload ends, and at most maxOpenPacks packs are alive: one open pack per
// kind (data, tree), uploadWorkers uploading, and one finished and waiting
// for an upload worker. A pack can exceed PackSize by one blob, so the
// session holds at most maxOpenPacks × (PackSize + pack.MaxBlobSize) bytes
// of pack buffers: 5 × 28 MiB = 140 MiB with the defaults. Callers that find
// no room wait (in SaveChunk) until an upload ends.
const (
	// uploadWorkers is 2 concurrent pack uploads: enough to hide one
	// request's latency behind another on the 2-core machines we target.
	uploadWorkers = 2
	// maxOpenPacks is 2 open + uploadWorkers uploading + 1 queued.
	maxOpenPacks = 2 + uploadWorkers + 1
)

// session is the write state of a Repository: the blobs in flight, the open
// packs, the uploads and the packs not yet listed in an index file.
type session struct {
	// packSlots holds one token per live pack (see maxOpenPacks).
	packSlots chan struct{}
	// uploading holds one token per running upload (see uploadWorkers).
	uploading chan struct{}
	// uploadCtx is the context uploads run under. It is not the context of
	// the SaveChunk call that filled the pack: that call (often a pipeline
	// worker whose group context ends when the pipeline does) may return
	// long before the upload it started finishes. Close cancels it.
	uploadCtx    context.Context
	cancelUpload context.CancelFunc

	// mu guards the fields below. No I/O happens while it is held.
	mu sync.Mutex
	// pending holds the blobs added to a pack that is not yet uploaded and
	// indexed; the first SaveChunk of a blob adds it, later ones see it
	// here and store nothing.
	pending map[chunk.Handle]struct{}
	// open is the open pack of each kind, or nil.
	open map[chunk.Kind]*packer
	// unindexed lists the uploaded packs no index file lists yet, and
	// unindexedBlobs counts their blobs.
	unindexed      []index.PackBlobs
	unindexedBlobs int
	// err is the first upload or index error of the session; SaveChunk
	// returns it until Flush reports and clears it.
	err error
	// free holds pack buffers for reuse; at most maxOpenPacks of them.
	free [][]byte
}

func (s *session) init() {
	s.packSlots = make(chan struct{}, maxOpenPacks)
	s.uploading = make(chan struct{}, uploadWorkers)
	s.pending = make(map[chunk.Handle]struct{})
	s.open = make(map[chunk.Kind]*packer)
	s.uploadCtx, s.cancelUpload = context.WithCancel(context.Background())
}

// packer is a pack being filled in memory.
type packer struct {
	buf   *packBuffer
	w     *pack.Writer
	blobs []chunk.Handle // the pending blobs in this pack
}

// packBuffer is the io.Writer a pack.Writer fills.
type packBuffer struct{ b []byte }

// Write appends p.
func (pb *packBuffer) Write(p []byte) (int, error) {
	pb.b = append(pb.b, p...)
	return len(p), nil
}

// Stats counts a Repository's work since it was opened.
type Stats struct {
	BlobsNew          int64 // blobs stored by SaveChunk
	BlobsKnown        int64 // SaveChunk calls that found the blob already stored or in flight
	BytesNew          int64 // stored (compressed, sealed) bytes of the new blobs
	PacksWritten      int64 // packs uploaded
	IndexFilesWritten int64 // index files saved
	BytesUploaded     int64 // bytes saved to the backend, all files
	BytesDownloaded   int64 // bytes loaded from the backend by LoadChunk and LoadFile
}

// counters are the atomic counterparts of Stats.
type counters struct {
	blobsNew, blobsKnown, bytesNew atomic.Int64
	packs, indexFiles              atomic.Int64
	bytesUploaded, bytesDownloaded atomic.Int64
}

// Stats returns the counts of work done since the repository was opened.
func (r *Repository) Stats() Stats {
	c := &r.stats
	return Stats{
		BlobsNew:          c.blobsNew.Load(),
		BlobsKnown:        c.blobsKnown.Load(),
		BytesNew:          c.bytesNew.Load(),
		PacksWritten:      c.packs.Load(),
		IndexFilesWritten: c.indexFiles.Load(),
		BytesUploaded:     c.bytesUploaded.Load(),
		BytesDownloaded:   c.bytesDownloaded.Load(),
	}
}

// encodePool holds buffers for sealed blobs between EncodeBlob and the copy
// into a pack; one per concurrent SaveChunk, each at most maxEncodeBuf.
var encodePool sync.Pool

// maxEncodeBuf is the largest sealed blob plus slack; larger buffers are
// not pooled.
const maxEncodeBuf = pack.MaxBlobSize + 64*kiB

// SaveChunk stores data as a blob of kind k unless a blob with the same ID
// is stored or in flight, and returns the ID and the stored bytes the call
// added (0 for a known blob). The blob is compressed and sealed in the
// caller's goroutine, so parallelism comes from concurrent callers; then it
// is appended to the open pack of its kind. A full pack is verified and
// handed to an upload worker; the call waits while the session already
// holds maxOpenPacks packs. An error of an earlier upload is returned here
// until Flush reports it. data is not retained.
func (r *Repository) SaveChunk(ctx context.Context, k chunk.Kind, data []byte) (chunk.ID, int, error) {
	if !k.Valid() {
		return chunk.ID{}, 0, fmt.Errorf("repo: save chunk: invalid kind %v", k)
	}
	if err := ctx.Err(); err != nil {
		return chunk.ID{}, 0, err
	}
	h := chunk.Handle{ID: r.hasher.Sum(data), Kind: k}

	r.mu.Lock()
	if err := r.err; err != nil {
		r.mu.Unlock()
		return h.ID, 0, err
	}
	// pending is checked before the index, under mu: an upload adds its
	// blobs to the index before it removes them from pending, so a blob
	// is always in at least one of the two once it was first saved.
	_, inFlight := r.pending[h]
	if inFlight || r.idx.Has(h) {
		r.mu.Unlock()
		r.stats.blobsKnown.Add(1)
		return h.ID, 0, nil
	}
	r.pending[h] = struct{}{}
	r.mu.Unlock()

	var buf []byte
	if p, ok := encodePool.Get().(*[]byte); ok {
		buf = (*p)[:0]
	}
	stored, codec, err := pack.EncodeBlob(buf, r.key, r.cfg.Compression, h, data)
	if err == nil {
		err = r.addBlob(ctx, h, stored, len(data), codec)
	}
	n := len(stored)
	if cap(stored) <= maxEncodeBuf {
		stored = stored[:0]
		encodePool.Put(&stored)
	}
	if err != nil {
		// The blob is in no pack that will be uploaded.
		r.mu.Lock()
		delete(r.pending, h)
		r.mu.Unlock()
		return h.ID, 0, fmt.Errorf("repo: save %v blob %v: %w", k, h.ID.Short(), err)
	}
	r.stats.blobsNew.Add(1)
	r.stats.bytesNew.Add(int64(n))
	return h.ID, n, nil
}

// addBlob appends a sealed blob to the open pack of its kind, opening one if
// needed, and sends the pack on when it is full.
func (r *Repository) addBlob(ctx context.Context, h chunk.Handle, stored []byte, rawLen int, codec pack.Codec) error {
	// A new pack needs a slot and then a buffer, both obtained without
	// holding mu. Buffers are taken only with a slot, so at most
	// maxOpenPacks of them ever exist.
	var slot bool
	var buf []byte
	defer func() {
		if slot {
			r.releaseSlot(buf)
		}
	}()
	for {
		r.mu.Lock()
		if err := r.err; err != nil {
			r.mu.Unlock()
			return err
		}
		p := r.open[h.Kind]
		if p == nil && !slot {
			r.mu.Unlock()
			select {
			case r.packSlots <- struct{}{}:
				slot = true
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		if p == nil && buf == nil {
			r.free, buf = popBuffer(r.free)
			if buf == nil {
				r.mu.Unlock()
				// Room for a full pack and its header, so that append
				// rarely grows it.
				buf = make([]byte, 0, r.cfg.PackSize+r.cfg.PackSize/16)
				continue
			}
		}
		if p == nil {
			pb := &packBuffer{b: buf[:0]}
			p = &packer{buf: pb, w: pack.NewWriter(pb, r.key)}
			r.open[h.Kind] = p
			slot, buf = false, nil
		}
		if err := p.w.Add(h, stored, rawLen, codec); err != nil {
			r.mu.Unlock()
			return err
		}
		p.blobs = append(p.blobs, h)
		var full *packer
		if p.w.Size() >= int64(r.cfg.PackSize) {
			full = p
			delete(r.open, h.Kind)
		}
		r.mu.Unlock()
		if full != nil {
			return r.finishPack(ctx, full)
		}
		return nil
	}
}

// popBuffer removes a buffer from free, returning nil if free is empty.
func popBuffer(free [][]byte) ([][]byte, []byte) {
	if len(free) == 0 {
		return free, nil
	}
	return free[:len(free)-1], free[len(free)-1]
}

// releaseSlot gives back a pack slot and keeps its buffer for reuse.
func (r *Repository) releaseSlot(buf []byte) {
	if buf != nil {
		r.mu.Lock()
		r.free = append(r.free, buf[:0])
		r.mu.Unlock()
	}
	<-r.packSlots
}

// finishPack seals p's header, checks that the header opens and lists the
// blobs written, and starts its upload once an upload worker is free. The
// upload runs under the session's upload context; ctx only bounds the wait
// for an upload slot. On error, p's blobs are no longer pending and the
// error is also recorded for the session.
func (r *Repository) finishPack(ctx context.Context, p *packer) error {
	id, entries, err := p.w.Finish()
	if err == nil {
		err = verifyPack(p.buf.b, r.key, id, entries)
	}
	if err == nil {
		select {
		case r.uploading <- struct{}{}:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		r.failPack(p, err)
		return err
	}
	go r.upload(r.uploadCtx, p, id, entries)
	return nil
}

// verifyPack re-reads the header of a finished pack, as a reader will, and
// compares it with what the writer reported.
func verifyPack(b []byte, s pack.Sealer, id pack.ID, want []pack.Entry) error {
	got, err := pack.ReadHeader(bytes.NewReader(b), int64(len(b)), s, id)
	if err != nil {
		return fmt.Errorf("verify new pack %v: %w", id.Short(), err)
	}
	if len(got) != len(want) {
		return fmt.Errorf("verify new pack %v: header lists %d blobs, wrote %d", id.Short(), len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Errorf("verify new pack %v: header entry %d is %+v, wrote %+v", id.Short(), i, got[i], want[i])
		}
	}
	return nil
}

// upload saves a finished pack, adds it to the index and, every
// indexEveryPacks packs or indexMaxBlobs blobs, writes an index file. It
// runs in its own goroutine holding an upload token and p's pack slot.
func (r *Repository) upload(ctx context.Context, p *packer, id pack.ID, entries []pack.Entry) {
	defer func() { <-r.uploading }()
	b := p.buf.b
	err := r.saveBytes(ctx, backend.Handle{Type: backend.Pack, Name: id.String()}, b)
	if err != nil {
		r.failPack(p, fmt.Errorf("save pack %v: %w", id.Short(), err))
		return
	}
	r.stats.packs.Add(1)
	// The index learns the blobs before pending forgets them; see
	// SaveChunk.
	r.idx.Add(id, entries)
	r.mu.Lock()
	for _, h := range p.blobs {
		delete(r.pending, h)
	}
	r.unindexed = append(r.unindexed, index.PackBlobs{ID: id, Blobs: entries})
	r.unindexedBlobs += len(entries)
	var batch []index.PackBlobs
	if len(r.unindexed) >= indexEveryPacks || r.unindexedBlobs >= indexMaxBlobs {
		batch = r.unindexed
		r.unindexed, r.unindexedBlobs = nil, 0
	}
	r.mu.Unlock()
	r.releaseSlot(b)

	if batch != nil {
		if _, err := r.saveIndexFile(ctx, batch); err != nil {
			r.mu.Lock()
			r.unindexed = append(batch, r.unindexed...)
			r.unindexedBlobs += countBlobs(batch)
			r.setErrLocked(fmt.Errorf("save index file: %w", err))
			r.mu.Unlock()
		}
	}
}

// failPack forgets the blobs of a pack that will not be uploaded, records
// err for the session and releases the pack's slot.
func (r *Repository) failPack(p *packer, err error) {
	r.mu.Lock()
	for _, h := range p.blobs {
		delete(r.pending, h)
	}
	r.setErrLocked(err)
	r.mu.Unlock()
	r.releaseSlot(p.buf.b)
}

// setErrLocked records err unless an earlier error is recorded.
func (r *Repository) setErrLocked(err error) {
	if r.err == nil {
		r.err = err
	}
}

func countBlobs(packs []index.PackBlobs) int {
	n := 0
	for _, p := range packs {
		n += len(p.Blobs)
	}
	return n
}

// Flush finishes the open packs, waits for every upload, and writes an index
// file listing the uploaded packs no index file lists yet. After Flush
// returns nil, every blob of a SaveChunk call that returned before Flush was
// called is stored and indexed. Flush returns the first error of the
// session (for example a failed upload) and clears it, so the Repository
// can start a new session; blobs of failed packs are not stored, but the
// packs that did upload are still indexed.
func (r *Repository) Flush(ctx context.Context) error {
	r.mu.Lock()
	var full []*packer
	for k, p := range r.open {
		full = append(full, p)
		delete(r.open, k)
	}
	r.mu.Unlock()

	var firstErr error
	for _, p := range full {
		if p.w.Count() == 0 {
			// Left by a failed Add: nothing to upload.
			r.releaseSlot(p.buf.b)
			continue
		}
		if err := r.finishPack(ctx, p); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if err := r.waitUploads(ctx); err != nil {
		return err
	}

	r.mu.Lock()
	batch := r.unindexed
	r.unindexed, r.unindexedBlobs = nil, 0
	if r.err != nil && firstErr == nil {
		firstErr = r.err
	}
	r.err = nil
	r.mu.Unlock()

	if len(batch) > 0 {
		if _, err := r.saveIndexFile(ctx, batch); err != nil {
			r.mu.Lock()
			r.unindexed = append(batch, r.unindexed...)
			r.unindexedBlobs += countBlobs(batch)
			r.mu.Unlock()
			if firstErr == nil {
				firstErr = fmt.Errorf("save index file: %w", err)
			}
		}
	}
	if firstErr != nil {
		return fmt.Errorf("repo: flush: %w", firstErr)
	}
	return nil
}

// waitUploads returns when every upload started before it was called has
// ended, index file included: holding every upload token means no upload
// is running.
func (r *Repository) waitUploads(ctx context.Context) error {
	for i := range uploadWorkers {
		select {
		case r.uploading <- struct{}{}:
		case <-ctx.Done():
			for range i {
				<-r.uploading
			}
			return ctx.Err()
		}
	}
	for range uploadWorkers {
		<-r.uploading
	}
	return nil
}
