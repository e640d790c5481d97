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
// File is the decoded form of an index file: the packs it lists and their
// blobs. EncodeFile and DecodeFile convert it to and from plaintext bytes;
// the repository compresses and seals them. DecodeFile is strict and reports
// malformed bytes as a *FormatError, never a panic.
package index
