package blockdev

import (
	"fmt"
	"runtime"
	"sync/atomic"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

const (
	kiB = 1 << 10
	miB = 1 << 20
)

// DefaultSegmentSize is the segment size of image chunking. Every segment
// edge is a forced cut, which costs about one extra chunk per 500 at the
// default chunk sizes (0.2% more chunks). Segments are not buffered: Backup
// streams them (see backup.run), so their size costs no memory. The segment
// size is part of the chunking definition: a parent must have been cut with
// the same one for parent-guided re-chunking to be exact.
const DefaultSegmentSize = 64 * miB

// maxSegmentSize bounds SegmentSize (1 GiB, as the repository config does).
const maxSegmentSize = 1 << 30

// segmentAlign is the alignment of segment edges: a multiple of every disk
// sector and page size in use, so that segment reads stay aligned.
const segmentAlign = 4 * kiB

// DefaultParams are content-defined image chunk sizes (at least 64 KiB, at
// most 1 MiB, cut where 17 fingerprint bits are zero) that blockdev's tests
// and benchmarks use, so that they exercise the rolling-hash paths. Backups
// use the sizes recorded in the repository config: fixed 8 KiB by default
// (repo.ImageChunker, chosen by measurement, docs/PERFORMANCE.md).
// Polynomial is left zero: set it before use.
var DefaultParams = chunk.Params{Min: 64 * kiB, Max: 1 * miB, AverageBits: 17}

// maxDefaultWorkers caps the default number of save workers: more than
// four rarely help, because the single chunker, the reads and the in-order
// digest (one core each at most) bound the pipeline.
const maxDefaultWorkers = 4

// maxWorkers bounds Workers.
const maxWorkers = 64

// Hasher computes blob IDs exactly as the repository does (keyed BLAKE3
// with the repository's ID key); *repo.Repository satisfies it. Backup
// compares these IDs with the parent's to reuse unchanged chunks without
// saving them again. It must be safe for concurrent use.
type Hasher interface {
	HashChunk(data []byte) chunk.ID
}

// BackupOptions configure Backup.
type BackupOptions struct {
	// Params are the chunker parameters for images, from the repository
	// config (see DefaultParams).
	Params chunk.Params
	// SegmentSize is the length of the segments the image is cut into;
	// 0 means DefaultSegmentSize. It must be a multiple of 4 KiB, at least
	// Params.Max and at most 1 GiB.
	SegmentSize int64
	// Workers is the number of new chunks compressed, sealed and saved in
	// parallel (the ChunkSaver's work), and of goroutines that share the
	// hashing of the parent's chunks checked against the image; 0 means
	// GOMAXPROCS, at most 4. The image is chunked by one goroutine and
	// hashed into its digest by another. Backup's own memory does not
	// depend on Workers nor on SegmentSize (see backup.run): 19 MiB with
	// the default chunk sizes.
	Workers int
	// Parent is the content list of the parent image, or nil. It must
	// have been made with the same Params and SegmentSize: only then does
	// parent-guided re-chunking give exactly the content list a run without
	// parent gives. The blobs it names must be in the repository.
	Parent *snapshot.Content
	// ParentLoader loads the parent's content-list pages; required with
	// Parent.
	ParentLoader snapshot.ChunkLoader
	// Force ignores Parent: every byte is run through the chunker.
	Force bool
	// Progress, if not nil, is updated while Backup runs.
	Progress *Progress
}

// Progress counts the work of a running Backup. The counters are updated
// by the workers as they go and may be read at any time.
type Progress struct {
	// BytesRead counts bytes read from the source.
	BytesRead atomic.Uint64
	// BytesHoles counts bytes the source reported as holes, never read.
	BytesHoles atomic.Uint64
	// BytesReused counts data bytes matched with the parent by hash.
	BytesReused atomic.Uint64
	// BytesNew counts the plaintext bytes of data blobs new to the
	// repository.
	BytesNew atomic.Uint64
	// BytesDone counts the image bytes whose extents are final, in order:
	// the position of the backup in the image.
	BytesDone atomic.Uint64
}

// BackupResult describes the image Backup read.
type BackupResult struct {
	// Content is the content list of the image node.
	Content snapshot.Content
	// Size is the image length in bytes.
	Size uint64
	// Digest is the image digest (ImageDigest), in lowercase hex, holes
	// read as zeros (snapshot.ImageInfo.TreeDigest).
	Digest string
	// Extents is the number of extents in Content.
	Extents uint64

	BytesRead    uint64 // bytes read from the source
	BytesHoles   uint64 // bytes the source reported as holes, never read
	BytesZero    uint64 // bytes read as all-zero chunks, stored as holes
	BytesReused  uint64 // data bytes reused from the parent by hash match
	BytesChunked uint64 // bytes run through the chunker
	BytesNew     uint64 // plaintext bytes of data blobs new to the repository
	DataBlobs    uint64 // data blobs saved, new or already known
	DataBlobsNew uint64 // data blobs the repository did not have
	DataAdded    uint64 // bytes the new data blobs added to the repository
	TreeAdded    uint64 // bytes the content-list pages added
}

// withDefaults checks o and fills in its defaults.
func (o BackupOptions) withDefaults() (BackupOptions, error) {
	if err := o.Params.Validate(); err != nil {
		return o, fmt.Errorf("image backup: %w", err)
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.SegmentSize%segmentAlign != 0 || o.SegmentSize < int64(o.Params.Max) || o.SegmentSize > maxSegmentSize {
		return o, fmt.Errorf("image backup: segment size %d must be a multiple of %d between the maximum chunk size %d and %d",
			o.SegmentSize, segmentAlign, o.Params.Max, maxSegmentSize)
	}
	if o.Workers <= 0 {
		o.Workers = min(runtime.GOMAXPROCS(0), maxDefaultWorkers)
	}
	o.Workers = min(o.Workers, maxWorkers)
	if o.Force {
		o.Parent = nil
	}
	if o.Parent != nil && o.ParentLoader == nil {
		return o, fmt.Errorf("image backup: a parent needs a ParentLoader")
	}
	return o, nil
}
