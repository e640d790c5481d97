package snapshot

import (
	"github.com/imagobackup/imago/chunk"
)

// NodeType is the type of a tree node. It is stored on disk: never renumber.
type NodeType uint8

// Node types.
const (
	TypeFile     NodeType = 1
	TypeDir      NodeType = 2
	TypeSymlink  NodeType = 3
	TypeBlockDev NodeType = 4 // device node (content not read)
	TypeCharDev  NodeType = 5
	TypeFIFO     NodeType = 6
	TypeSocket   NodeType = 7
	TypeImage    NodeType = 8 // a disk or image file backed up as an image
)

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Node is one entry of a directory (or the single entry of an image
// snapshot's root tree). Name is the raw file name and may hold any bytes
// but '/' and NUL. Times are nanoseconds since the Unix epoch.
type Node struct {
	Name  string
	Type  NodeType
	Mode  uint32 // permission and special bits (07777), as in st_mode & 07777
	UID   uint32
	GID   uint32
	User  string
	Group string

	MTime int64
	ATime int64
	CTime int64

	Size  uint64 // regular files and images: content length in bytes
	Inode uint64
	Dev   uint64 // st_dev of the file system holding the node
	Links uint64 // st_nlink; >1 with Inode+Dev identifies hard links
	Rdev  uint64 // device number of block/char device nodes

	LinkTarget string // symlinks: raw target bytes
	Xattrs     []Xattr

	// Content is the content list of files and images.
	Content Content
	// Subtrees holds, for directories, the tree blobs that list the
	// directory's entries, in order (more than one only for directories too
	// large for one tree blob).
	Subtrees []chunk.ID
}

// Extent is one run of content: Length bytes that are either the data blob
// ID, or a hole (ID null) that reads as zeros.
type Extent struct {
	Length uint64
	ID     chunk.ID
}

// Hole reports whether e is a hole.
func (e Extent) Hole() bool { return e.ID.IsNull() }

// PageRef points at a content-list page blob (a tree blob) covering Length
// bytes with Count extents at level 0 below it.
type PageRef struct {
	ID     chunk.ID
	Length uint64
	Count  uint64
}

// Content is the root of a content list. With Level 0 the extents are held
// inline in Extents. With Level n > 0, Pages lists pages of level n-1 (a
// page of level 0 holds extents, a page of level k > 0 holds PageRefs of
// level k-1). Page boundaries are content-defined so that a change in one
// place rewrites only the pages on the path to it.
type Content struct {
	Level   uint8
	Extents []Extent
	Pages   []PageRef
}

// Tree is one directory listing: nodes sorted by Name (bytewise).
type Tree struct {
	Nodes []Node
}
