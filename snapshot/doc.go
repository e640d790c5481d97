// Package snapshot holds what a backup records: the snapshot record, the
// directory trees and the content lists of files and images, and the ways to
// read them back.
//
// A snapshot (Snapshot, stored as JSON by repo) names a root tree blob. A
// tree blob (EncodeTree, SaveTree) lists the nodes of one directory sorted by
// name in a compact binary encoding that carries names as raw bytes; a
// directory too large for one blob is split at node boundaries. A file's or
// image's content is a content list (Content): a short list of extents inline
// in its node, or a tree of content-defined pages (ContentBuilder) so that a
// nightly image rewrites only the pages on the path to what changed, and the
// extent at any offset is found in one page load per level (ContentReader).
// The byte layouts are specified in docs/FORMAT.md.
//
// The package does not import repo: it reads and writes blobs through the
// ChunkSaver and ChunkLoader interfaces, which *repo.Repository satisfies and
// MemStore implements for tests. Walk, FindNode and Blobs traverse a
// snapshot; Dump streams a content list in order with bounded parallel
// fetches. The backup and restore pipelines live in the archive and restore
// sub-packages.
package snapshot
