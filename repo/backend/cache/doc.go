// Package cache wraps a remote backend.Backend with a local copy of the
// files that commands read again and again: index files, snapshot files
// and the packs that hold tree blobs. With a warm cache, listing snapshots,
// listing or searching their trees, diffing them and starting a backup
// (which reads the parent snapshot's trees and content lists) download
// nothing but listings, the config and the key files.
//
// # What is cached
//
// Index and snapshot files are cached whenever they are loaded or saved
// through the wrapper. Packs are cached only when their name was announced
// with AddPacks or SetPacks: the backend layer cannot tell a tree pack from
// a data pack (both are sealed), but the repository can, since a pack
// holds blobs of one kind only and the index records the kind of every
// blob. The command line therefore announces, right after opening a
// repository, every pack the index lists with tree blobs (SetPacks), and
// the cache keeps whole copies of those packs. A data pack is never
// copied, so the cache stays small: it grows with the metadata of the
// repository, not with its data. A tree pack written by this process is
// cached when it is first read, by this process (after AddPacks) or by the
// next one.
//
// Config, key and lock files are never cached: they are small and may
// change.
//
// # Layout and verification
//
// Files are stored under the cache folder as <type>/<name>, packs as
// data/<first two hex digits>/<name>, the layout of package local. Every
// cached file is content-addressed: its name is the BLAKE3-256 of its
// bytes, so a copy can be checked without trusting anything. A file is
// hashed while it is downloaded, and a copy already on disk is hashed again
// the first time this process uses it; a copy that does not match its name
// (a damaged disk, a truncated write, a stray edit) is deleted and
// downloaded again. A downloaded file that does not match its name is not
// cached, and the call is passed to the backend, so the repository's own
// verification reports the damage precisely. Later uses in the same
// process trust the checked copy; the repository still verifies every blob
// and sealed file it reads.
//
// New copies are written to a temporary file in the target folder and
// renamed into place, so a crash never leaves a partial copy under a
// file's name. Any failure of the cache itself (a full disk, a read-only
// folder) falls back to the backend: the cache only ever saves requests.
//
// # Staleness
//
// Files removed through the wrapper lose their copy at once. Files removed
// by another client (a prune or forget elsewhere) are noticed on the next
// complete listing of their type: after List(Index), List(Snapshot) or
// List(Pack) succeeds, the copies of files the listing did not report are
// deleted, and so are temporary files older than an hour. SetPacks also
// deletes the copies of packs the index no longer lists with tree blobs.
// Until then, a copy of a file that is gone from the repository may still
// be read; its contents are what the file held, since files never change
// under their name.
package cache
