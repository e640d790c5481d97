// Package index maps blob handles to their location in packs, and encodes
// the index files that record those locations in a repository.
//
// Index is the in-memory table. It holds up to hundreds of millions of blobs,
// so it is compact rather than a map of pointers: every blob costs one
// 39-byte record in a sorted array, plus a share of small per-pack and
// per-table costs (see Index). It keeps only what a reader needs to fetch a
// blob, (pack, offset, length); blobs are self-describing, so the codec and
// raw length stay in pack headers and index files.
//
// An Index from New keeps its records on the heap. One from NewInDir or
// OpenFile moves its large sorted runs to files that it maps read-only (disk
// runs, see diskRun), so that its heap stays at a few tens of MiB however
// many blobs it holds: with 10 million blobs, about 1.8 bytes of heap per
// blob while blobs are added and 0.6 after Persist, against 40 for New. A
// lookup reads a dense 4-byte tag per candidate and a record only when the
// tag matches, so the pages that lookups of absent blobs keep resident are
// at most 4 bytes per blob. Persist writes the whole Index to a local cache
// file (format at the top of disk.go) that OpenFile maps again in the next
// process; it is not part of the repository.
//
// File is the decoded form of an index file: the packs it lists and their
// blobs. EncodeFile and DecodeFile convert it to and from plaintext bytes;
// the repository compresses and seals them. DecodeFile is strict and reports
// malformed bytes as a *FormatError, never a panic.
package index
