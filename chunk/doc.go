// Package chunk holds the identities of blobs and the tools that cut content
// into blobs.
//
// An ID is the keyed BLAKE3-256 of a blob's plaintext (see Hasher), a Kind
// says whether a blob is data or tree, and a Handle joins the two. The
// Splitter cuts a stream into content-defined chunks with a Rabin fingerprint
// (github.com/restic/chunker) over a per-repository random polynomial, so that
// an insertion or deletion changes only the chunks around it. IsZero detects
// all-zero ranges, which are stored as holes instead of blobs.
//
// The package is a pure codec over bytes and io.Reader: it starts no
// goroutines and knows nothing of repositories.
package chunk
