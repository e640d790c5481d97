package repo

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
)

// Write-session limits. A pack is written to a temporary file from its first
// blob until its upload ends, so packs cost disk, not memory: in memory a
// pack is an open file, its header entries (pack.Entry, 48 bytes a blob)
// and, while it is open for blobs, a write buffer of packWriteBuffer bytes.
// At most maxOpenPacks packs are alive: one open pack per kind (data, tree),
// uploadWorkers uploading and up to maxQueuedPacks finished and waiting for
// an upload worker. A pack can exceed PackSize by one blob, so the temporary
// files hold at most maxOpenPacks × (PackSize + pack.MaxBlobSize) bytes:
// 7 × 28 MiB = 196 MiB of disk with the defaults, in the repository's
// folder for a local repository (moved into place when done, never
// copied), else in os.TempDir() (as restic does). Callers that find no room
// wait (in SaveChunk) until an upload ends.
//
// Before, packs were buffers of PackSize + PackSize/16 bytes in memory: 5 of
// them were 85 MiB of a 1 GiB image backup's 175 MiB peak RSS.
const (
	// uploadWorkers is 2 concurrent pack uploads: enough to hide one
	// request's latency behind another on the 2-core machines we target.
	uploadWorkers = 2
	// maxQueuedPacks lets SaveChunk callers go on filling packs while
	// both upload workers are busy (a pack of a local repository costs
	// an fsync); they cost only disk.
	maxQueuedPacks = 3
	// maxOpenPacks is 2 open + uploadWorkers uploading + maxQueuedPacks.
	maxOpenPacks = 2 + uploadWorkers + maxQueuedPacks
	// packWriteBuffer buffers the writes of small blobs (tree blobs, small
	// files) to an open pack's file; blobs larger than it are written
	// directly. Memory: 2 open packs × 64 KiB.
	packWriteBuffer = 64 * kiB
)

// numKinds bounds the chunk.Kind values used as array indexes.
const numKinds = int(chunk.KindTree) + 1

// fileSaver is the optional capability of a backend that stores a complete
// local file by moving it into place instead of copying it
// (local.Backend). The write session then writes packs straight into the
// repository's folder.
type fileSaver interface {
	// CreateTempFile creates an empty temporary file for a file of type t,
	// open for reading and writing. It is never listed, and closing it
	// without SaveFile leaves nothing behind.
	CreateTempFile(t backend.FileType) (*os.File, error)
	// SaveFile stores the size bytes of f, made by CreateTempFile, as h,
	// atomically and durably like Save. f stays open; the caller closes it.
	SaveFile(ctx context.Context, h backend.Handle, f *os.File, size int64) error
}

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
	// noDirect is set once the backend's CreateTempFile failed (a file
	// system without unnamed temporary files): packs then go to
	// os.TempDir() and are saved by copying.
	noDirect atomic.Bool

	// fill[k] is held by the caller appending a blob to the open pack of
	// kind k, across the write to its file, so that a pack file has one
	// writer at a time; it guards open[k]. mu may be taken while fill[k]
	// is held, never the other way round.
	fill [numKinds]sync.Mutex
	open [numKinds]*packer

	// mu guards the fields below. No I/O happens while it is held.
	mu sync.Mutex
	// pending holds the blobs added to a pack that is not yet uploaded and
	// indexed; the first SaveChunk of a blob adds it, later ones see it
	// here and store nothing.
	pending map[chunk.Handle]struct{}
	// unindexed lists the uploaded packs no index file lists yet, and
	// unindexedBlobs counts their blobs.
	unindexed      []index.PackBlobs
	unindexedBlobs int
	// err is the first upload or index error of the session; SaveChunk
	// returns it until Flush reports and clears it.
	err error
	// lastUpload numbers the packs handed to upload; uploads holds the
	// numbers of those whose upload has not ended (at most maxOpenPacks);
	// uploadEnded is closed, and replaced, whenever one ends.
	lastUpload  uint64
	uploads     []uint64
	uploadEnded chan struct{}
}

func (s *session) init() {
	s.packSlots = make(chan struct{}, maxOpenPacks)
	s.uploading = make(chan struct{}, uploadWorkers)
	s.pending = make(map[chunk.Handle]struct{})
	s.uploadEnded = make(chan struct{})
	s.uploadCtx, s.cancelUpload = context.WithCancel(context.Background())
}

// packer is a pack being written to a temporary file.
// packCacher is the optional interface of a backend that caches the packs
// it is told about (repo/backend/cache).
type packCacher interface{ AddPacks(names ...string) }

type packer struct {
	f      *os.File
	direct bool   // f came from the backend's CreateTempFile: SaveFile moves it
	name   string // f's name while it has one to remove (only where an open file cannot be removed)
	bw     *bufio.Writer
	w      *pack.Writer
	blobs  []chunk.Handle // the pending blobs in this pack
}

// newPacker creates the temporary file of a new pack: in the repository
// when the backend can move files into place, else in os.TempDir(),
// removed at once so that nothing is left behind whatever happens.
func (r *Repository) newPacker() (*packer, error) {
	p := &packer{}
	if fs, ok := r.be.(fileSaver); ok && !r.noDirect.Load() {
		f, err := fs.CreateTempFile(backend.Pack)
		if err == nil {
			p.f, p.direct = f, true
		} else {
			r.noDirect.Store(true)
		}
	}
	if p.f == nil {
		f, err := os.CreateTemp("", "imago-pack-*")
		if err != nil {
			return nil, fmt.Errorf("create temporary pack file: %w", err)
		}
		p.f = f
		if os.Remove(f.Name()) != nil {
			p.name = f.Name() // removed by discard
		}
	}
	p.bw = bufio.NewWriterSize(p.f, packWriteBuffer)
	p.w = pack.NewWriter(p.bw, r.key)
	return p, nil
}

// discard closes p's file, which removes it.
func (p *packer) discard() {
	_ = p.f.Close() // nothing to lose: the pack is saved or abandoned
	if p.name != "" {
		_ = os.Remove(p.name)
	}
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

// encodePool holds buffers for sealed blobs between EncodeBlob and the write
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
// needed, and sends the pack on when it is full. stored is not retained.
func (r *Repository) addBlob(ctx context.Context, h chunk.Handle, stored []byte, rawLen int, codec pack.Codec) error {
	r.mu.Lock()
	err := r.err
	r.mu.Unlock()
	if err != nil {
		return err
	}
	fill := &r.fill[h.Kind]
	fill.Lock()
	p := r.open[h.Kind]
	if p == nil {
		// Waiting for a slot with fill held is fine: every other writer
		// of this kind needs the same new pack.
		select {
		case r.packSlots <- struct{}{}:
		case <-ctx.Done():
			fill.Unlock()
			return ctx.Err()
		}
		if p, err = r.newPacker(); err != nil {
			fill.Unlock()
			<-r.packSlots
			return err
		}
		r.open[h.Kind] = p
	}
	// A failed write leaves the pack writer failed: Finish (in Flush)
	// reports the error and abandons the pack with its blobs.
	if err := p.w.Add(h, stored, rawLen, codec); err != nil {
		fill.Unlock()
		return err
	}
	p.blobs = append(p.blobs, h)
	var full *packer
	if p.w.Size() >= int64(r.cfg.PackSize) {
		full = p
		r.open[h.Kind] = nil
	}
	fill.Unlock()
	if full != nil {
		return r.finishPack(full)
	}
	return nil
}

// finishPack writes p's header, checks that the header reads back and
// lists the blobs written, and hands p to an upload goroutine, which waits
// for an upload worker under the session's upload context. On error, p's
// blobs are no longer pending and the error is also recorded for the
// session.
func (r *Repository) finishPack(p *packer) error {
	id, entries, err := p.w.Finish()
	if err == nil {
		if err = p.bw.Flush(); err != nil {
			err = fmt.Errorf("write pack: %w", err)
		}
	}
	size := p.w.Size()
	// A finished pack needs neither its write buffer nor the writer's
	// hash state while it waits.
	p.bw, p.w = nil, nil
	if err == nil {
		err = verifyPack(p.f, size, r.key, id, entries)
	}
	if err != nil {
		r.failPack(p, err)
		return err
	}
	r.mu.Lock()
	r.lastUpload++
	seq := r.lastUpload
	r.uploads = append(r.uploads, seq)
	r.mu.Unlock()
	go r.upload(r.uploadCtx, p, seq, id, entries, size)
	return nil
}

// verifyPack re-reads the header of a finished pack of size bytes from f,
// as a reader will, and compares it with what the writer reported.
func verifyPack(f *os.File, size int64, s pack.Sealer, id pack.ID, want []pack.Entry) error {
	got, err := pack.ReadHeader(f, size, s, id)
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

// upload saves a finished pack once an upload worker is free, adds it to
// the index and, every indexEveryPacks packs or indexMaxBlobs blobs, writes
// an index file. It runs in its own goroutine holding p's pack slot, which
// it gives back with p's file.
func (r *Repository) upload(ctx context.Context, p *packer, seq uint64, id pack.ID, entries []pack.Entry, size int64) {
	defer r.endUpload(seq)
	select {
	case r.uploading <- struct{}{}:
	case <-ctx.Done():
		r.failPack(p, fmt.Errorf("save pack %v: %w", id.Short(), ctx.Err()))
		return
	}
	defer func() { <-r.uploading }()
	h := backend.Handle{Type: backend.Pack, Name: id.String()}
	// A cache in front of a remote repository keeps the tree packs (what
	// snapshots, ls and the next backup's parent read). Telling it about a
	// new one before the save makes the save fill the cache, so the next
	// run need not download it.
	if pc, ok := r.be.(packCacher); ok && len(p.blobs) > 0 && p.blobs[0].Kind == chunk.KindTree {
		pc.AddPacks(id.String())
	}
	var err error
	if p.direct {
		err = r.be.(fileSaver).SaveFile(ctx, h, p.f, size)
	} else {
		err = r.be.Save(ctx, h, p.f, size)
	}
	if err != nil {
		r.failPack(p, fmt.Errorf("save pack %v: %w", id.Short(), err))
		return
	}
	r.stats.bytesUploaded.Add(size)
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
	p.discard()
	<-r.packSlots

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

// endUpload records that the upload numbered seq has ended.
func (r *Repository) endUpload(seq uint64) {
	r.mu.Lock()
	for i, s := range r.uploads {
		if s == seq {
			r.uploads = append(r.uploads[:i], r.uploads[i+1:]...)
			break
		}
	}
	close(r.uploadEnded)
	r.uploadEnded = make(chan struct{})
	r.mu.Unlock()
}

// failPack forgets the blobs of a pack that will not be uploaded, records
// err for the session and releases the pack's file and slot.
func (r *Repository) failPack(p *packer, err error) {
	r.mu.Lock()
	for _, h := range p.blobs {
		delete(r.pending, h)
	}
	r.setErrLocked(err)
	r.mu.Unlock()
	p.discard()
	<-r.packSlots
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
	var full []*packer
	for k := range r.open {
		r.fill[k].Lock()
		if p := r.open[k]; p != nil {
			full = append(full, p)
			r.open[k] = nil
		}
		r.fill[k].Unlock()
	}

	var firstErr error
	for _, p := range full {
		if p.w.Count() == 0 {
			// Left by a failed Add: nothing to upload.
			p.discard()
			<-r.packSlots
			continue
		}
		if err := r.finishPack(p); err != nil && firstErr == nil {
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

// waitUploads returns when every upload handed over before it was called
// has ended, index file included.
func (r *Repository) waitUploads(ctx context.Context) error {
	r.mu.Lock()
	last := r.lastUpload
	r.mu.Unlock()
	for {
		r.mu.Lock()
		busy := false
		for _, s := range r.uploads {
			busy = busy || s <= last
		}
		ended := r.uploadEnded
		r.mu.Unlock()
		if !busy {
			return nil
		}
		select {
		case <-ended:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
