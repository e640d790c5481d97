package chunk

import (
	"encoding/hex"
	"fmt"

	"github.com/zeebo/blake3"
)

// IDSize is the size of a blob ID in bytes.
const IDSize = 32

// ID identifies a blob: the keyed BLAKE3-256 of its plaintext, keyed with the
// repository's ID key, so that the storage provider cannot confirm that a
// known plaintext is stored.
type ID [IDSize]byte

// String returns the lowercase hex form of id.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits of id.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// IsNull reports whether id is the all-zero ID, which never names a blob.
func (id ID) IsNull() bool { return id == ID{} }

// MarshalText encodes id as hex (used by JSON).
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText decodes a hex ID.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseID parses a 64-digit hex ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("chunk: invalid ID %q: want %d hex digits", s, 2*IDSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("chunk: invalid ID %q: %w", s, err)
	}
	return id, nil
}

// Kind is the type of a blob. It is stored on disk: never renumber.
type Kind uint8

const (
	// KindData is file or image content.
	KindData Kind = 1
	// KindTree is metadata: directory listings and content-list pages.
	KindTree Kind = 2
)

// String returns "data", "tree" or "kind(N)".
func (k Kind) String() string {
	switch k {
	case KindData:
		return "data"
	case KindTree:
		return "tree"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k == KindData || k == KindTree }

// Handle names a blob: its ID and its kind.
type Handle struct {
	ID   ID
	Kind Kind
}

// String returns "kind:id".
func (h Handle) String() string { return h.Kind.String() + ":" + h.ID.String() }

// Hasher computes blob IDs with the repository's 32-byte ID key. It is safe
// for concurrent use.
type Hasher struct {
	base *blake3.Hasher
}

// NewHasher returns a Hasher keyed with key.
func NewHasher(key [32]byte) *Hasher {
	h, err := blake3.NewKeyed(key[:])
	if err != nil {
		panic(err) // unreachable: the key has the required 32 bytes
	}
	return &Hasher{base: h}
}

// Sum returns the ID of data.
func (h *Hasher) Sum(data []byte) ID {
	d := h.base.Clone()
	_, _ = d.Write(data)
	var id ID
	d.Sum(id[:0])
	return id
}
