// Package archive is the file-tree backup pipeline: it walks paths, records
// every entry as a snapshot.Node, cuts file contents into chunks, saves them
// through a snapshot.ChunkSaver and returns the root tree of a snapshot.
//
// The root tree mirrors the absolute paths given: backing up /home/u/docs
// gives a root tree holding "home", which holds "u", which holds "docs" and
// everything below it. Unchanged files are found by comparing against the
// parent snapshot's tree and are not read again; unchanged directories
// encode to the same tree blob and deduplicate.
//
// Concurrency: one walker goroutine lists directories depth-first and hands
// files to a bounded group of readers; readers cut chunks and queue them for
// a bounded group of save workers, which compress and encrypt them (inside
// SaveChunk) on all cores. The chunk buffers in flight are bounded by a
// weighted semaphore, so memory does not grow with the size of the source.
// A directory's tree is saved by whichever goroutine completes its last
// child, so trees are written bottom-up.
package archive
