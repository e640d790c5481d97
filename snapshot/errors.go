package snapshot

import (
	"errors"
	"fmt"

	"github.com/imagobackup/imago/chunk"
)

// ErrNotFound is wrapped by the error FindNode returns when a path does not
// exist in a snapshot.
var ErrNotFound = errors.New("snapshot: not found")

// FormatError reports stored bytes that do not follow the format: a damaged
// or hostile tree blob, content-list page or snapshot file. Decoders return it
// instead of panicking on any input.
type FormatError struct {
	// What names the object: "tree", "page", "content" or "snapshot".
	What string
	// ID is the blob the bytes came from, when known (null otherwise).
	ID chunk.ID
	// Offset is the byte offset in the object where decoding stopped, or -1
	// when the problem is not tied to one place.
	Offset int
	// Reason says what is wrong.
	Reason string
}

// Error returns a one-line description naming the object and the offset.
func (e *FormatError) Error() string {
	s := "snapshot: malformed " + e.What
	if !e.ID.IsNull() {
		s += " " + e.ID.Short()
	}
	if e.Offset >= 0 {
		s += fmt.Sprintf(" at offset %d", e.Offset)
	}
	return s + ": " + e.Reason
}

// withID returns err with the blob ID filled in when err is a *FormatError
// without one, so that errors from decoders name the blob they came from.
func withID(err error, id chunk.ID) error {
	var fe *FormatError
	if errors.As(err, &fe) && fe.ID.IsNull() {
		c := *fe
		c.ID = id
		return &c
	}
	return err
}
