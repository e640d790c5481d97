package pack

import (
	"encoding/hex"
	"fmt"
)

// IDSize is the size of a pack ID in bytes.
const IDSize = 32

// ID names a pack: the unkeyed BLAKE3-256 of the pack file's bytes. Its hex
// form is the pack's file name in the repository.
type ID [IDSize]byte

// String returns the lowercase hex form of id.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits of id.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// IsNull reports whether id is the all-zero ID, which never names a pack.
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

// ParseID parses a 64-digit hex pack ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("pack: invalid ID %q: want %d hex digits", s, 2*IDSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("pack: invalid ID %q: %w", s, err)
	}
	return id, nil
}
