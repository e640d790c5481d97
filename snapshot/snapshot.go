package snapshot

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/imagobackup/imago/chunk"
)

// FormatVersion is the version of the snapshot record this package writes
// and the only one it reads.
const FormatVersion = 1

// ID names a snapshot: the name of its file in the repository's snapshots/
// directory (the unkeyed BLAKE3-256 of the stored file, computed by repo).
type ID [32]byte

// String returns the lowercase hex form of id.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits of id.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// IsNull reports whether id is the all-zero ID, which names no snapshot.
func (id ID) IsNull() bool { return id == ID{} }

// MarshalText encodes id as hex (used by JSON).
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText decodes a 64-digit hex ID.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseID parses a 64-digit hex snapshot ID (either case).
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("snapshot: invalid ID %q: want %d hex digits", s, 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("snapshot: invalid ID %q: %w", s, err)
	}
	return id, nil
}

// Kind says what a snapshot holds.
type Kind string

// Snapshot kinds. They are stored on disk: never rename.
const (
	// KindFiles is a file-tree backup: the root tree lists one node per
	// backed-up path.
	KindFiles Kind = "files"
	// KindImage is a disk or image backup: the root tree holds one node of
	// type TypeImage.
	KindImage Kind = "image"
)

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k == KindFiles || k == KindImage }

// Snapshot is the record of one backup, stored as JSON in its own file.
type Snapshot struct {
	Time     time.Time `json:"time"`
	Host     string    `json:"host"`
	Username string    `json:"username"`
	UID      uint32    `json:"uid"`
	GID      uint32    `json:"gid"`
	Tags     []string  `json:"tags"`
	Paths    []string  `json:"paths"`
	Kind     Kind      `json:"kind"`
	// Parent is the snapshot the backup compared against, if any.
	Parent *ID `json:"parent,omitempty"`
	// Tree is the root tree blob: one blob, listing the top-level nodes.
	Tree    chunk.ID   `json:"tree"`
	Summary *Summary   `json:"summary"`
	Image   *ImageInfo `json:"image,omitempty"`
	// ProgramVersion is the imago version that wrote the snapshot.
	ProgramVersion string `json:"program_version"`
	// Version is the record's format version; Encode writes FormatVersion
	// when it is 0.
	Version int `json:"version"`
}

// ImageInfo describes the image of a KindImage snapshot.
type ImageInfo struct {
	// Size is the image length in bytes.
	Size uint64 `json:"size"`
	// TreeDigest is the image digest of docs/FORMAT.md §7 (BLAKE3 over
	// 1 MiB leaves, blockdev.ImageDigest) in lowercase hex: what image
	// backups record. Digest is the plain unkeyed BLAKE3-256 of the whole
	// image, which snapshots recorded before (empty since). Restores check
	// each one that is set.
	TreeDigest string `json:"tree_digest,omitempty"`
	Digest     string `json:"digest"`
	// Name is the source the image was read from (device or file path).
	Name string `json:"name"`
}

// Summary holds the statistics of the backup that made a snapshot.
type Summary struct {
	FilesNew            uint64    `json:"files_new"`
	FilesChanged        uint64    `json:"files_changed"`
	FilesUnchanged      uint64    `json:"files_unchanged"`
	DirsNew             uint64    `json:"dirs_new"`
	DirsChanged         uint64    `json:"dirs_changed"`
	DirsUnchanged       uint64    `json:"dirs_unchanged"`
	FilesUnreadable     uint64    `json:"files_unreadable"`
	TotalFilesProcessed uint64    `json:"total_files_processed"`
	TotalBytesProcessed uint64    `json:"total_bytes_processed"`
	BytesRead           uint64    `json:"bytes_read"`
	BytesSkippedHoles   uint64    `json:"bytes_skipped_holes"`
	BytesReused         uint64    `json:"bytes_reused"`
	DataBlobs           uint64    `json:"data_blobs"`
	TreeBlobs           uint64    `json:"tree_blobs"`
	DataAdded           uint64    `json:"data_added"`     // bytes added to the repository (data and metadata)
	MetadataAdded       uint64    `json:"metadata_added"` // of DataAdded, the bytes of tree blobs and content-list pages
	BackupStart         time.Time `json:"backup_start"`
	BackupEnd           time.Time `json:"backup_end"`
	DurationSeconds     float64   `json:"duration_seconds"`
}

// Encode validates s and returns its JSON encoding (compact, fields in
// declaration order). A zero Version is written as FormatVersion; s is not
// modified.
func Encode(s *Snapshot) ([]byte, error) {
	c := *s
	if c.Version == 0 {
		c.Version = FormatVersion
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("snapshot: encode: %s", err.Reason)
	}
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("snapshot: encode: %w", err)
	}
	return b, nil
}

// Decode parses a snapshot file's plaintext. It is strict: invalid JSON,
// trailing data, an unknown version, an unknown kind, a missing time or root
// tree, or image information that does not match the kind give a
// *FormatError. Unknown fields are ignored.
func Decode(b []byte) (*Snapshot, error) {
	s := &Snapshot{}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, &FormatError{What: "snapshot", Offset: -1, Reason: err.Error()}
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Snapshot) validate() *FormatError {
	bad := func(format string, args ...any) *FormatError {
		return &FormatError{What: "snapshot", Offset: -1, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case s.Version != FormatVersion:
		return bad("unsupported version %d", s.Version)
	case !s.Kind.Valid():
		return bad("unknown kind %q", s.Kind)
	case s.Time.IsZero():
		return bad("missing time")
	case s.Tree.IsNull():
		return bad("missing root tree")
	case s.Parent != nil && s.Parent.IsNull():
		return bad("null parent ID")
	case s.Kind == KindImage && s.Image == nil:
		return bad("image snapshot without image information")
	case s.Kind != KindImage && s.Image != nil:
		return bad("image information in a %q snapshot", s.Kind)
	}
	if s.Image != nil && s.Image.Digest != "" && !isLowerHex(s.Image.Digest, 64) {
		return bad("image digest %q is not 64 lowercase hex digits", s.Image.Digest)
	}
	if s.Image != nil && s.Image.TreeDigest != "" && !isLowerHex(s.Image.TreeDigest, 64) {
		return bad("image tree digest %q is not 64 lowercase hex digits", s.Image.TreeDigest)
	}
	return nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// HasTags reports whether s carries every tag in tags (true for none).
func (s *Snapshot) HasTags(tags []string) bool {
	for _, t := range tags {
		if !slices.Contains(s.Tags, t) {
			return false
		}
	}
	return true
}

// HasPaths reports whether s includes every path in paths (true for none).
func (s *Snapshot) HasPaths(paths []string) bool {
	for _, p := range paths {
		if !slices.Contains(s.Paths, p) {
			return false
		}
	}
	return true
}

// SortByTime sorts snaps oldest first; snapshots with equal times keep their
// order.
func SortByTime(snaps []*Snapshot) {
	slices.SortStableFunc(snaps, func(a, b *Snapshot) int { return a.Time.Compare(b.Time) })
}
