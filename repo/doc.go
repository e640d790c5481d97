// Package repo is an imago repository: its config and keys, the write
// session that turns chunks into packs and index files, verified reads of
// blobs, sealed whole files (snapshots, index files, locks) and locks.
//
// A Repository is made by Init or Open over a backend.Backend. It satisfies
// snapshot.ChunkSaver and snapshot.ChunkLoader without importing package
// snapshot, so the backup and restore pipelines run against it unchanged.
//
// Writes follow one order so that a crash at any moment leaves a usable
// repository: packs first, then the index files that list them, then the
// snapshot that refers to their blobs; at init the key file comes before the
// config. Every read is authenticated and every blob loaded is hashed again
// and compared with its ID, so damage is an error naming the object, never
// wrong data. The stored format is specified in docs/FORMAT.md.
//
// Every fan-out is bounded; the limits and their memory costs are documented
// where they are declared (see maxOpenPacks and indexLoaders).
package repo
