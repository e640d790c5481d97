// Package blockdev reads disks and disk image files as image sources and
// writes image snapshots back to files and block devices.
//
// A Source is a block device (its size from the BLKGETSIZE64 ioctl), a
// regular file read as a disk image (its holes found with SEEK_DATA and
// SEEK_HOLE), or a stream such as stdin (no size, no holes, read once in
// order). Reads are large and aligned, direct (O_DIRECT) where the
// file system allows, and the page cache behind buffered ones is dropped
// with posix_fadvise so that a nightly backup does not evict the machine's
// working set; blocks the cache already held are copied from it and left
// there.
//
// Backup turns a Source into the content list of an image node: the image is
// read once, in order, and cut into fixed segments, each chunked on its own;
// holes and all-zero chunks become hole extents, and with a parent image the
// chunker runs only where the image changed (parent-guided re-chunking); new
// chunks are saved by parallel workers. The result is the same content list
// whatever the number of workers and whether or not a parent was given;
// docs/format-fragments/blockdev.md states the definition. The BLAKE3-256
// digest of the whole image is computed in the same pass.
//
// Restore writes a content list to a Target, a regular file (kept sparse) or
// a block device (refused when it is mounted or too small), in windows of
// about 4 MiB of chunks: the chunks of a window are loaded together, so
// that a repository reads those stored side by side with one ranged read,
// several windows are loaded and written at once, and the image digest is
// computed over the windows in order and verified at the end.
//
// Memory is bounded: Backup holds 8 read blocks of 1 MiB (in one mapping
// backed by transparent huge pages where the kernel gives them), a window of
// Params.Max + 1.5 MiB over them, and a ring of 8 MiB (at least 2 ×
// Params.Max) for the new chunks waiting to be saved, whatever the segment
// size, the image size and the number of workers; Restore Workers window
// buffers of 4 MiB (or one chunk) and, per window, the repository's range
// buffers (3 of 1 MiB).
package blockdev
