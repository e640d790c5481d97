package snapshot

import (
	"context"

	"github.com/imagobackup/imago/chunk"
)

// ChunkSaver stores blobs. *repo.Repository satisfies it.
type ChunkSaver interface {
	// SaveChunk stores data as a blob of kind k unless a blob with the same
	// ID exists, and returns the ID. added is the number of bytes the call
	// added to the repository (after compression and encryption; 0 when the
	// blob was known). It is safe for concurrent use and does not retain
	// data after it returns.
	SaveChunk(ctx context.Context, k chunk.Kind, data []byte) (id chunk.ID, added int, err error)
}

// ChunkLoader reads blobs. *repo.Repository satisfies it.
type ChunkLoader interface {
	// LoadChunk returns the plaintext of blob h, verified against its ID,
	// in buf (grown when too small). Safe for concurrent use.
	LoadChunk(ctx context.Context, h chunk.Handle, buf []byte) ([]byte, error)
}
