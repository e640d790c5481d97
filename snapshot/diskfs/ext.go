package diskfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"time"
)

// Feature bits of the ext superblock this reader looks at.
const (
	extCompatJournal     = 0x4
	extIncompatFiletype  = 0x2
	extIncompatRecover   = 0x4
	extIncompatMetaBG    = 0x10
	extIncompatExtents   = 0x40
	extIncompat64Bit     = 0x80
	extIncompatFlexBG    = 0x200
	extIncompatInline    = 0x8000
	extROCompatSparse    = 0x1
	extROCompatHugeFile  = 0x8
	extROCompatGdtCsum   = 0x10
	extROCompatExtraIsz  = 0x40
	extROCompatMetaCsum  = 0x400
	extROCompatBigalloc  = 0x200
	extInodeFlagExtents  = 0x80000
	extInodeFlagInline   = 0x10000000
	extInodeFlagEncrypt  = 0x800
	extInodeFlagCompress = 0x4
)

// extIncompatKnown are the incompatible features a read-only reader may
// ignore or handles: filetype, recover (warned about), meta_bg, extents,
// 64bit, mmp, flex_bg, ea_inode, csum_seed, largedir, inline_data, encrypt
// (encrypted files are refused one by one) and casefold.
const extIncompatKnown = 0x2 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000

// Limits on what a damaged image can make the reader do.
const (
	extMaxDirBytes     = 256 << 20 // a directory of ~4 million entries
	extMaxExtentDepth  = 5         // the kernel's limit
	extMaxExtentBlocks = 1 << 16   // extent tree blocks read for one file (a 256 GiB file in 4 KiB fragments)
	extMaxSymlink      = 4096      // PATH_MAX
	extRootInode       = 2
)

type extFS struct {
	r              io.ReaderAt
	kind, lbl      string
	warn           string
	bs             int64
	blocksCount    uint64
	firstDataBlock uint64
	blocksPerGroup uint64
	inodesPerGroup uint64
	inodesCount    uint64
	inodeSize      int64
	descSize       int64
	groups         uint64
	incompat       uint32
	roCompat       uint32
	firstMetaBG    uint64
	clusterSize    int64

	mu sync.Mutex // guards itables
	// itables caches each group's inode table block (8 bytes a group).
	itables map[uint64]uint64
}

func extKind(sb []byte) string {
	compat := binary.LittleEndian.Uint32(sb[0x5C:])
	incompat := binary.LittleEndian.Uint32(sb[0x60:])
	ro := binary.LittleEndian.Uint32(sb[0x64:])
	switch {
	case incompat&(extIncompatExtents|extIncompat64Bit|extIncompatFlexBG) != 0,
		ro&(extROCompatHugeFile|extROCompatGdtCsum|extROCompatExtraIsz|extROCompatMetaCsum) != 0:
		return "ext4"
	case compat&extCompatJournal != 0:
		return "ext3"
	}
	return "ext2"
}

func (x *extFS) corrupt(what, format string, args ...any) error {
	return &CorruptError{FS: x.kind, What: what, Reason: fmt.Sprintf(format, args...)}
}

func openExt(r io.ReaderAt, size int64) (*extFS, error) {
	sb := make([]byte, 1024)
	if err := readFull(r, sb, 1024); err != nil {
		return nil, err
	}
	x := &extFS{r: r, kind: extKind(sb), itables: make(map[uint64]uint64)}
	le := binary.LittleEndian
	logBS := le.Uint32(sb[0x18:])
	if logBS > 6 {
		return nil, x.corrupt("superblock", "block size 2^%d KiB", logBS)
	}
	x.bs = 1024 << logBS
	x.inodesCount = uint64(le.Uint32(sb[0x0:]))
	x.blocksCount = uint64(le.Uint32(sb[0x4:]))
	x.firstDataBlock = uint64(le.Uint32(sb[0x14:]))
	x.blocksPerGroup = uint64(le.Uint32(sb[0x20:]))
	x.inodesPerGroup = uint64(le.Uint32(sb[0x28:]))
	x.incompat = le.Uint32(sb[0x60:])
	x.roCompat = le.Uint32(sb[0x64:])
	x.inodeSize = 128
	if le.Uint32(sb[0x4C:]) >= 1 {
		x.inodeSize = int64(le.Uint16(sb[0x58:]))
	}
	x.descSize = 32
	if x.incompat&extIncompat64Bit != 0 {
		x.descSize = int64(le.Uint16(sb[0xFE:]))
		x.blocksCount |= uint64(le.Uint32(sb[0x150:])) << 32
		if x.descSize < 64 || x.descSize > 1024 || x.descSize&(x.descSize-1) != 0 {
			return nil, x.corrupt("superblock", "group descriptor size %d", x.descSize)
		}
	}
	x.clusterSize = x.bs
	if x.roCompat&extROCompatBigalloc != 0 {
		if lc := le.Uint32(sb[0x1C:]); lc <= 16 {
			x.clusterSize = 1024 << lc
		}
	}
	x.firstMetaBG = uint64(le.Uint32(sb[0x104:]))
	x.lbl = string(bytes.TrimRight(sb[0x78:0x88], "\x00"))
	switch {
	case x.inodeSize < 128 || x.inodeSize > x.bs || x.inodeSize&(x.inodeSize-1) != 0:
		return nil, x.corrupt("superblock", "inode size %d", x.inodeSize)
	case x.blocksPerGroup == 0 || x.blocksPerGroup > 8*uint64(x.bs) && x.clusterSize == x.bs:
		return nil, x.corrupt("superblock", "%d blocks per group", x.blocksPerGroup)
	case x.inodesPerGroup == 0 || x.inodesPerGroup > 8*uint64(x.bs):
		return nil, x.corrupt("superblock", "%d inodes per group", x.inodesPerGroup)
	case x.firstDataBlock >= x.blocksCount:
		return nil, x.corrupt("superblock", "first data block %d of %d", x.firstDataBlock, x.blocksCount)
	}
	x.groups = (x.blocksCount - x.firstDataBlock + x.blocksPerGroup - 1) / x.blocksPerGroup
	if x.inodesCount > x.groups*x.inodesPerGroup {
		return nil, x.corrupt("superblock", "%d inodes in %d groups of %d", x.inodesCount, x.groups, x.inodesPerGroup)
	}
	if unknown := x.incompat &^ extIncompatKnown; unknown != 0 {
		return nil, fmt.Errorf("%s with incompatible features %#x: %w", x.kind, unknown, ErrUnsupportedFilesystem)
	}
	if x.incompat&extIncompatRecover != 0 {
		x.warn = x.kind + " was not cleanly unmounted and its journal is not replayed: changes of the last seconds before the image was taken may be missing"
	}
	if int64(x.blocksCount) > size/x.bs {
		x.warn = fmt.Sprintf("%s claims %d bytes but its partition has %d: files near the end cannot be read", x.kind, int64(x.blocksCount)*x.bs, size)
	}
	if _, err := x.readInode(extRootInode); err != nil {
		return nil, err
	}
	return x, nil
}

func (x *extFS) typ() string     { return x.kind }
func (x *extFS) label() string   { return x.lbl }
func (x *extFS) warning() string { return x.warn }
func (x *extFS) root() ref       { return ref{n: extRootInode} }

// hasSuper reports whether group g holds a superblock backup.
func (x *extFS) hasSuper(g uint64) bool {
	if g <= 1 || x.roCompat&extROCompatSparse == 0 {
		return true
	}
	for _, b := range []uint64{3, 5, 7} {
		p := b
		for p < g {
			p *= b
		}
		if p == g {
			return true
		}
	}
	return false
}

// inodeTable returns the first block of group g's inode table.
func (x *extFS) inodeTable(g uint64) (uint64, error) {
	x.mu.Lock()
	b, ok := x.itables[g]
	x.mu.Unlock()
	if ok {
		return b, nil
	}
	perBlock := uint64(x.bs / x.descSize)
	var off int64
	if x.incompat&extIncompatMetaBG != 0 && g/perBlock >= x.firstMetaBG {
		first := g / perBlock * perBlock
		blk := x.firstDataBlock + first*x.blocksPerGroup
		if x.hasSuper(first) {
			blk++
		}
		off = int64(blk)*x.bs + int64(g%perBlock)*x.descSize
	} else {
		off = int64(x.firstDataBlock+1)*x.bs + int64(g)*x.descSize
	}
	d := make([]byte, x.descSize)
	if err := readFull(x.r, d, off); err != nil {
		return 0, fmt.Errorf("group descriptor %d: %w", g, err)
	}
	b = uint64(binary.LittleEndian.Uint32(d[0x8:]))
	if x.descSize >= 64 {
		b |= uint64(binary.LittleEndian.Uint32(d[0x28:])) << 32
	}
	itBlocks := (x.inodesPerGroup*uint64(x.inodeSize) + uint64(x.bs) - 1) / uint64(x.bs)
	if b == 0 || b+itBlocks > x.blocksCount {
		return 0, x.corrupt(fmt.Sprintf("group descriptor %d", g), "inode table at block %d", b)
	}
	x.mu.Lock()
	x.itables[g] = b
	x.mu.Unlock()
	return b, nil
}

// extInode is the part of an inode the reader uses.
type extInode struct {
	num     uint64
	mode    uint16
	uid     uint32
	gid     uint32
	size    uint64
	mtime   time.Time
	flags   uint32
	blocks  uint64 // i_blocks in 512-byte units (low 32 bits)
	fileACL uint64
	block   [60]byte
	raw     []byte
}

func (x *extFS) readInode(num uint64) (*extInode, error) {
	if num == 0 || num > x.inodesCount {
		return nil, x.corrupt("directory entry", "inode %d out of range 1..%d", num, x.inodesCount)
	}
	g, idx := (num-1)/x.inodesPerGroup, (num-1)%x.inodesPerGroup
	it, err := x.inodeTable(g)
	if err != nil {
		return nil, err
	}
	b := make([]byte, x.inodeSize)
	if err := readFull(x.r, b, int64(it)*x.bs+int64(idx)*x.inodeSize); err != nil {
		return nil, fmt.Errorf("inode %d: %w", num, err)
	}
	le := binary.LittleEndian
	in := &extInode{
		num:     num,
		mode:    le.Uint16(b[0x0:]),
		uid:     uint32(le.Uint16(b[0x2:])) | uint32(le.Uint16(b[0x78:]))<<16,
		gid:     uint32(le.Uint16(b[0x18:])) | uint32(le.Uint16(b[0x7A:]))<<16,
		size:    uint64(le.Uint32(b[0x4:])) | uint64(le.Uint32(b[0x6C:]))<<32,
		flags:   le.Uint32(b[0x20:]),
		blocks:  uint64(le.Uint32(b[0x1C:])),
		fileACL: uint64(le.Uint32(b[0x68:])) | uint64(le.Uint16(b[0x76:]))<<32,
		raw:     b,
	}
	copy(in.block[:], b[0x28:0x64])
	sec, nsec := int64(int32(le.Uint32(b[0x10:]))), int64(0)
	if x.inodeSize > 128 {
		extra := int64(le.Uint16(b[0x80:]))
		if 128+extra >= 0x8C && 128+extra <= x.inodeSize {
			e := le.Uint32(b[0x88:])
			sec += int64(e&3) << 32
			nsec = int64(e >> 2)
			if nsec > 999999999 {
				nsec = 0
			}
		}
	}
	in.mtime = time.Unix(sec, nsec)
	if in.mode&0xF000 == 0xA000 && in.size > extMaxSymlink {
		return nil, x.corrupt(fmt.Sprintf("inode %d", num), "symlink of %d bytes", in.size)
	}
	return in, nil
}

func extMode(m uint16) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	switch m & 0xF000 {
	case 0x4000:
		mode |= fs.ModeDir
	case 0xA000:
		mode |= fs.ModeSymlink
	case 0x2000:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case 0x6000:
		mode |= fs.ModeDevice
	case 0x1000:
		mode |= fs.ModeNamedPipe
	case 0xC000:
		mode |= fs.ModeSocket
	}
	return mode
}

func (x *extFS) stat(r ref) (Entry, error) {
	in, err := x.readInode(r.n)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Mode: extMode(in.mode), Size: int64(in.size), MTime: in.mtime, UID: in.uid, GID: in.gid}
	if e.Mode&fs.ModeSymlink != 0 {
		t, err := x.readLink(in)
		if err != nil {
			return Entry{}, err
		}
		e.LinkTarget = t
	}
	if e.Size < 0 {
		return Entry{}, x.corrupt(fmt.Sprintf("inode %d", in.num), "size %d", in.size)
	}
	return e, nil
}

func (x *extFS) readLink(in *extInode) (string, error) {
	eaBlocks := uint64(0)
	if in.fileACL != 0 {
		eaBlocks = uint64(x.clusterSize / 512)
	}
	if in.flags&extInodeFlagInline == 0 && in.blocks-eaBlocks == 0 || in.blocks < eaBlocks {
		if in.size > 60 {
			return "", x.corrupt(fmt.Sprintf("inode %d", in.num), "fast symlink of %d bytes", in.size)
		}
		return string(in.block[:in.size]), nil
	}
	b, err := x.readAll(in, extMaxSymlink)
	return string(b), err
}

func (x *extFS) open(r ref) (File, error) {
	in, err := x.readInode(r.n)
	if err != nil {
		return nil, err
	}
	return x.openInode(in)
}

func (x *extFS) openInode(in *extInode) (File, error) {
	what := fmt.Sprintf("inode %d", in.num)
	switch {
	case in.flags&extInodeFlagEncrypt != 0:
		return nil, fmt.Errorf("%s: %w: the file is encrypted (fscrypt)", what, ErrUnsupportedFilesystem)
	case in.flags&extInodeFlagInline != 0:
		data, err := x.inlineData(in)
		if err != nil {
			return nil, err
		}
		if uint64(len(data)) < in.size {
			return nil, x.corrupt(what, "inline data holds %d of %d bytes", len(data), in.size)
		}
		return &memFile{bytes.NewReader(data[:in.size])}, nil
	case in.size > x.maxFileSize(in.flags&extInodeFlagExtents != 0):
		return nil, x.corrupt(what, "size %d beyond what its block map can address", in.size)
	case in.flags&extInodeFlagExtents != 0:
		m, err := x.extentMap(in)
		if err != nil {
			return nil, err
		}
		return &extFile{x: x, size: int64(in.size), m: m}, nil
	}
	return &extFile{x: x, size: int64(in.size), m: &indirectMap{x: x, in: in}}, nil
}

// maxFileSize is the largest size a file's block map can address: 2^32
// blocks with extents, 12 direct plus three levels of indirect pointers
// without. A larger size is damage (restoring it would write zeros
// without end).
func (x *extFS) maxFileSize(extents bool) uint64 {
	bs := uint64(x.bs)
	if extents {
		return bs << 32
	}
	p := bs / 4
	return min((12+p+p*p+p*p*p)*bs, bs<<32)
}

// readAll reads a whole small file (a directory or a symlink target).
func (x *extFS) readAll(in *extInode, limit int64) ([]byte, error) {
	if int64(in.size) > limit || int64(in.size) < 0 {
		return nil, x.corrupt(fmt.Sprintf("inode %d", in.num), "%d bytes, more than %d", in.size, limit)
	}
	f, err := x.openInode(in)
	if err != nil {
		return nil, err
	}
	b := make([]byte, in.size)
	if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}

// inlineData returns i_block followed by the system.data attribute.
func (x *extFS) inlineData(in *extInode) ([]byte, error) {
	data := append([]byte(nil), in.block[:]...)
	v, err := x.ibodyXattr(in, 7, "data")
	if err != nil {
		return nil, err
	}
	return append(data, v...), nil
}

// ibodyXattr returns the value of the in-inode extended attribute with
// the given name index and name, or nil.
func (x *extFS) ibodyXattr(in *extInode, index byte, name string) ([]byte, error) {
	b := in.raw
	if len(b) <= 128 {
		return nil, nil
	}
	start := 128 + int(binary.LittleEndian.Uint16(b[0x80:]))
	if start+4 > len(b) || binary.LittleEndian.Uint32(b[start:]) != 0xEA020000 {
		return nil, nil
	}
	base := start + 4
	for off := base; off+16 <= len(b); {
		if binary.LittleEndian.Uint32(b[off:]) == 0 {
			break
		}
		nl := int(b[off])
		vo := int(binary.LittleEndian.Uint16(b[off+2:]))
		vinum := binary.LittleEndian.Uint32(b[off+4:])
		vs := int(binary.LittleEndian.Uint32(b[off+8:]))
		if off+16+nl > len(b) {
			break
		}
		if b[off+1] == index && string(b[off+16:off+16+nl]) == name {
			if vinum != 0 {
				return nil, fmt.Errorf("inode %d: %w: inline data in an EA inode", in.num, ErrUnsupportedFilesystem)
			}
			if vs < 0 || base+vo+vs > len(b) || vo < 0 {
				return nil, x.corrupt(fmt.Sprintf("inode %d", in.num), "xattr value outside the inode")
			}
			return b[base+vo : base+vo+vs], nil
		}
		off += (16 + nl + 3) &^ 3
	}
	return nil, nil
}

func (x *extFS) list(d ref) ([]ref, error) {
	in, err := x.readInode(d.n)
	if err != nil {
		return nil, err
	}
	if in.mode&0xF000 != 0x4000 {
		return nil, ErrNotDir
	}
	var out []ref
	if in.flags&extInodeFlagInline != 0 {
		data, err := x.inlineData(in)
		if err != nil {
			return nil, err
		}
		// The first 4 bytes are the parent's inode; the rest of i_block
		// and the attribute are two runs of directory entries.
		if out, err = x.parseDirBlock(in, data[4:60], out); err != nil {
			return nil, err
		}
		return x.parseDirBlock(in, data[60:], out)
	}
	b, err := x.readAll(in, extMaxDirBytes)
	if err != nil {
		return nil, err
	}
	for off := int64(0); off < int64(len(b)); off += x.bs {
		if out, err = x.parseDirBlock(in, b[off:min(off+x.bs, int64(len(b)))], out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// parseDirBlock appends the entries of one directory block (linear format;
// hash-tree nodes look like one empty entry and are skipped).
func (x *extFS) parseDirBlock(dir *extInode, b []byte, out []ref) ([]ref, error) {
	le := binary.LittleEndian
	for off := 0; off+8 <= len(b); {
		ino := uint64(le.Uint32(b[off:]))
		rl := int(le.Uint16(b[off+4:]))
		if x.bs >= 65536 && (rl == 65535 || rl == 0) {
			rl = int(x.bs)
		} else if x.bs >= 65536 {
			rl = rl&65532 | (rl&3)<<16
		}
		if rl == 0 && allZero(b[off:]) {
			break // a hole in the directory
		}
		nl := int(b[off+6])
		if x.incompat&extIncompatFiletype == 0 {
			nl |= int(b[off+7]) << 8
		}
		if rl < 8 || rl%4 != 0 || off+rl > len(b) || 8+nl > rl {
			return nil, x.corrupt(fmt.Sprintf("directory inode %d", dir.num), "entry at offset %d: record length %d, name length %d", off, rl, nl)
		}
		name := string(b[off+8 : off+8+nl])
		if ino != 0 && name != "." && name != ".." && nl > 0 {
			out = append(out, ref{name: name, n: ino})
		}
		off += rl
	}
	return out, nil
}
