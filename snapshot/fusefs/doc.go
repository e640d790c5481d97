// Package fusefs presents the snapshots of a repository as a read-only FUSE
// file system (github.com/hanwen/go-fuse/v2):
//
//	ids/<short id>/...              every snapshot by ID
//	snapshots/<time>/...            by time (latest -> the newest)
//	hosts/<host>/<time>/...         by host (latest -> the host's newest)
//	tags/<tag>/<time>/...           by tag (latest -> the tag's newest)
//
// A file snapshot's directory holds its trees with the recorded modes,
// owners, times, sizes, symlink targets, device numbers, extended
// attributes and hard-link counts (names of one hard-linked file share an
// inode). An image snapshot's directory holds one read-only regular file,
// named after the image, whose random reads go through an imageio.ReaderAt:
// the content list finds the chunk at any offset, decoded chunks are kept
// in one bounded cache shared by every open file, and sequential readers
// get read-ahead. Trees are loaded on demand and kept in a bounded LRU.
//
// The list of snapshots is fixed when the file system is made.
package fusefs
