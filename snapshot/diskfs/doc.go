// Package diskfs reads partition tables and file systems inside a disk
// image given as an io.ReaderAt, in user space and read-only: no root, no
// loop device, no kernel driver. It is how imago lists, restores and finds
// files inside image snapshots without restoring the image: every read goes
// to the io.ReaderAt, which for a snapshot fetches only the chunks holding
// the bytes asked for.
//
// Partitions parses MBR (with extended partitions) and GPT tables; OpenFS
// detects and opens ext2/3/4, FAT12/16/32 and NTFS. The ext and FAT
// readers are written here rather than taken from a library: go-diskfs
// v1.9.4 returns FAT files padded to the sector size, fails on sparse ext4
// files ("negative offset"), reads unwritten (fallocated) extents as
// whatever the disk held, cannot read ext2/ext3 block-mapped files, and
// indexes extent entries without bounds checks. NTFS is read with go-ntfs for its metadata, with this package's
// own checks, extent maps and LZNT1 decoder around it (see ntfs.go).
// exFAT and other file systems are recognised and named, but not read
// (ErrUnsupportedFilesystem).
//
// Every length and offset read from the image is bounds-checked: a damaged
// or hostile image gives an error (*CorruptError, ErrCorruptTable), never a
// panic or an unbounded allocation.
package diskfs
