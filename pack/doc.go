// Package pack reads and writes pack files, the unit of storage of an imago
// repository, and encodes the blobs inside them.
//
// A blob is compressed with zstd when that makes it smaller, prefixed with
// its codec byte and sealed on its own with the blob's kind and ID as
// associated data, so any single blob can be read with one ranged read and a
// blob moved to another ID or kind fails to open. A pack is the concatenation
// of sealed blobs, followed by a sealed header that lists them and a 4-byte
// trailer holding the header's length. A pack is named by the unkeyed
// BLAKE3-256 of its bytes.
//
// The package is a pure codec: it does no I/O beyond the io.Writer and
// io.ReaderAt it is given, starts no goroutines and knows nothing of
// backends. Damage found while reading a pack is reported as a *FormatError;
// damage found while decoding a blob as a *BlobError. Hostile bytes never
// cause a panic. The byte layout is specified in docs/FORMAT.md.
package pack
