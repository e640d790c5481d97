// Package restore writes a snapshot's file tree back to a local file system,
// and streams parts of it as a tar archive or as one file's content.
//
// Run restores the tree below a root tree ID into a target directory. The
// snapshot's root tree mirrors absolute source paths, so a backup of
// /home/u/docs restores to TARGET/home/u/docs. The restore order is:
//
//  1. With Options.Progress set, a first walk over the trees counts the files
//     and bytes to restore, so that a progress display knows the totals.
//  2. A second walk visits the selected nodes in pre-order. Directories are
//     created with mode 0700 so that the restore can always write into them.
//     Each regular file is written to a temporary name in its destination
//     directory (".imago-restore-" followed by random characters): its size is
//     set first with Truncate, then its data extents are fetched and written
//     with WriteAt by a bounded pool of workers. Holes are never written, so
//     sparse files stay sparse. When the last extent is written the file is
//     optionally verified, its metadata is applied, and it is renamed into
//     place. Symlinks, FIFOs and device nodes are created under a temporary
//     name as well and renamed into place, so an existing entry at the target
//     is replaced atomically. Sockets are skipped.
//  3. Hard links whose first link was restored in the same run are created
//     with link(2) after all content is in place.
//  4. Directory metadata is applied in post-order, after all of a directory's
//     entries exist, so that a read-only directory still receives its files
//     and its modification time is the one recorded in the snapshot.
//
// Content is loaded in batches: the data extents of consecutive files, up
// to 4 MiB or 32 extents, are loaded with one snapshot.LoadChunks call, so
// that a repository reads chunks stored side by side (the small files of a
// directory, the chunks of a large file) with one ranged read.
//
// Memory is bounded: Options.Workers/2 batches run at once, each with a few
// loads that hold one chunk buffer each (and a repository's 1 MiB range
// buffer); chunks are at most 8 MiB (chunk.FileParams' maximum), so the
// chunk buffers in use stay near Options.Workers × 8 MiB at worst, plus one
// 1 MiB read buffer per batch while verifying. A batch keeps its files (at
// most 32) open until it is written.
//
// A repository error (a chunk that fails to load or does not match its
// extent) aborts the restore with an error naming the file; its temporary
// file is removed and incomplete content is never renamed into place.
// Problems that do not make restored data wrong, such as an ownership or an
// extended attribute the target file system refuses, are reported through
// Options.OnError and counted in Result.Errors, and the restore continues.
package restore
