// Package imageio reads the content of an image (or any content list) at
// random offsets, the way a block device or a mounted file is read.
//
// A ReaderAt finds the extent at an offset through a snapshot.ContentReader
// (one page load per level, cached), loads the chunk through a
// snapshot.ChunkLoader and keeps decoded chunks in a Cache, a byte-bounded
// LRU that may be shared by many readers (chunk IDs are content addresses,
// so a chunk cached for one image serves every image and file holding it).
// Concurrent reads of one chunk load it once. A reader that reads
// sequentially gets the next chunks prefetched in the background, with the
// number of background loads bounded per Cache.
//
// The package imports chunk and snapshot only; the NBD server and the FUSE
// file system build on it.
package imageio
