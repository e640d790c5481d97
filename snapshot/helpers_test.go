package snapshot

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/imagobackup/imago/chunk"
)

// testHasher makes stand-in data blob IDs for content lists: content-list
// code only needs IDs that look like keyed hashes.
var testHasher = chunk.NewHasher([32]byte{1, 2, 3})

// fakeID returns a deterministic, uniformly distributed ID for n.
func fakeID(n uint64) chunk.ID {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], n)
	return testHasher.Sum(b[:])
}

// wantFormatError fails the test unless err is a *FormatError.
func wantFormatError(t testing.TB, err error) *FormatError {
	t.Helper()
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("got error %v (%T), want *FormatError", err, err)
	}
	return fe
}

// sampleTree returns a tree with one node of every kind and every field set,
// including non-UTF-8 names, xattrs, inline and paged content.
func sampleTree() *Tree {
	return &Tree{Nodes: []Node{
		{Name: "dir", Type: TypeDir, Mode: 0o755, Subtrees: []chunk.ID{fakeID(3), fakeID(4)}},
		{Name: "disk.img", Type: TypeImage, Size: 1 << 40,
			Content: Content{Level: 2, Pages: []PageRef{{ID: fakeID(5), Length: 1 << 39, Count: 500000}, {ID: fakeID(6), Length: 1 << 39, Count: 7}}}},
		{Name: "fifo", Type: TypeFIFO, Mode: 0o600},
		{Name: "link", Type: TypeSymlink, Mode: 0o777, LinkTarget: "../\x80target"},
		{Name: "sda", Type: TypeBlockDev, Mode: 0o660, Rdev: 8<<8 | 0},
		{Name: "sock", Type: TypeSocket},
		{Name: "tty", Type: TypeCharDev, Rdev: 5<<8 | 0},
		{Name: "zero", Type: TypeFile},
		{Name: "\xff\xfebin", Type: TypeFile, Mode: 0o4755, UID: 1000, GID: 100, User: "ann", Group: "users",
			MTime: 1700000000123456789, ATime: -5, CTime: 1, Size: 3 << 20, Inode: 42, Dev: 2049, Links: 2,
			Xattrs:  []Xattr{{Name: "security.selinux", Value: []byte("system_u:object_r")}, {Name: "user.empty"}},
			Content: Content{Extents: []Extent{{Length: 1 << 20, ID: fakeID(1)}, {Length: 1 << 20}, {Length: 1 << 20, ID: fakeID(2)}}}},
	}}
}
