package diskfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"time"

	"www.velocidex.com/golang/go-ntfs/parser"
)

// NTFS is read with go-ntfs (www.velocidex.com/golang/go-ntfs/parser) for
// the boot sector, the bootstrap of $MFT, MFT record fixups, attribute
// enumeration (including $ATTRIBUTE_LIST), index node walking and runlist
// decoding. The library is a forensic tool that reads as much as it can
// and reports little, so this file adds what a backup reader needs on top:
//
//   - Its own checks before every library call whose loops are bounded by
//     lengths read from disk (the boot sector geometry, the size of
//     $ATTRIBUTE_LIST and $INDEX_ALLOCATION, MFT record numbers).
//   - Directory entries are checked against the MFT record they name (in
//     use, same sequence number, a $FILE_NAME whose parent is the
//     directory), so stale entries in unused index blocks, which the
//     library returns, are not listed. DOS 8.3 aliases and the metafiles
//     ($MFT, $Bitmap, ..., records below 16) are not listed either.
//   - File data is read through its own extent map built from the decoded
//     runlists, checked to cover the file and to lie inside the volume, and
//     its own LZNT1 decoder (ntfs_lznt1.go): the library's RangeReader
//     returns short reads without an error when runs are missing, its
//     compressed-run grouping drops compression units split over several
//     runs, and its LZNT1Decompress indexes past its input on truncated
//     chunks and does not zero-fill short sub-blocks as NTFS does.
//
// Encrypted (EFS) files are listed but refused on Open (ErrUnsupportedFile);
// symbolic links are read both as Windows makes them (reparse points, and
// junctions) and as ntfs-3g does (Interix "IntxLNK" system files); other
// reparse points (deduplicated or WOF-compressed files, cloud
// placeholders, ...) are listed as irregular files, so Open refuses them
// rather than return the placeholder's bytes.

// Limits on lengths read from the image, each far above what a real
// volume holds and each bounding a library loop or an allocation.
const (
	ntfsRootRecord  = 5
	ntfsFirstUser   = 16      // records 0..15 are metafiles ($MFT, $MFTMirr, ..., $Extend) and reserved
	ntfsIndexRecord = 4096    // go-ntfs walks $INDEX_ALLOCATION in 4 KiB steps; every Windows and mkntfs volume uses 4 KiB
	ntfsMaxIndex    = 1 << 30 // bytes of one directory's $INDEX_ALLOCATION: a million entries need about 200 MiB
	ntfsMaxAttrList = 1 << 20 // bytes of one $ATTRIBUTE_LIST: real ones hold a few hundred 32-byte entries
	ntfsMaxDir      = 1 << 22 // entries of one directory listed
	ntfsMaxExtents  = 1 << 20 // runs of one file (24 bytes each in memory)
)

// Attribute types and flags (MS-FSCC, [MS-NTFS]).
const (
	ntfsAttrStdInfo   = 0x10
	ntfsAttrList      = 0x20
	ntfsAttrFileName  = 0x30
	ntfsAttrVolName   = 0x60
	ntfsAttrVolInfo   = 0x70
	ntfsAttrData      = 0x80
	ntfsAttrIndexRoot = 0x90
	ntfsAttrIndexAllc = 0xA0
	ntfsAttrReparse   = 0xC0

	ntfsFlagCompressed = 0x0001 // attribute flags
	ntfsFlagEncrypted  = 0x4000
	ntfsFlagSparse     = 0x8000

	ntfsFileReadOnly  = 0x0001 // $STANDARD_INFORMATION file attributes
	ntfsFileSystem    = 0x0004
	ntfsFileReparse   = 0x0400
	ntfsFileEncrypted = 0x4000

	ntfsTagSymlink    = 0xA000000C
	ntfsTagMountPoint = 0xA0000003
)

type ntfsFS struct {
	r        io.ReaderAt // the partition
	size     int64
	ctx      *parser.NTFSContext
	cs       int64 // cluster size
	clusters int64 // clusters in the volume
	recSize  int64 // MFT record size
	records  int64 // records in $MFT
	lbl      string
	warn     string
	rootEnt  Entry

	mu sync.Mutex // guards dirs and dirEntries
	// dirs caches listed directories by record number, so that resolving
	// each path of a directory does not reread all its children's
	// records; cleared when it holds ntfsCacheEntries entries.
	dirs       map[uint64][]ref
	dirEntries int
}

// ntfsCacheEntries bounds the directory cache: about 200 bytes per entry,
// 25 MiB in all.
const ntfsCacheEntries = 1 << 17

func openNTFS(r io.ReaderAt, size int64) (*ntfsFS, error) {
	b := make([]byte, 512)
	if err := readFull(r, b, 0); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	bad := func(f string, a ...any) error {
		return &CorruptError{FS: "ntfs", What: "boot sector", Reason: fmt.Sprintf(f, a...)}
	}
	bps := int64(le.Uint16(b[0x0B:]))
	spc := int64(b[0x0D])
	total := int64(le.Uint64(b[0x28:]))
	mftLCN := le.Uint64(b[0x30:])
	switch {
	case b[510] != 0x55 || b[511] != 0xAA:
		return nil, bad("no 55 AA signature")
	case bps != 512 && bps != 1024 && bps != 2048 && bps != 4096:
		return nil, bad("%d bytes per sector", bps)
	case spc > 0x80:
		// Encoded as a negative power of two: clusters above 64 KiB
		// (Windows 10 1709 and later), which go-ntfs cannot read.
		return nil, fmt.Errorf("ntfs with %d KiB clusters: %w", (int64(1)<<(256-spc))*bps>>10, ErrUnsupportedFilesystem)
	case spc == 0 || spc&(spc-1) != 0:
		return nil, bad("%d sectors per cluster", spc)
	case total <= 0 || total > size/bps:
		return nil, bad("%d sectors in a partition of %d bytes", total, size)
	}
	cs := bps * spc
	clusters := total * bps / cs
	if mftLCN == 0 || mftLCN >= uint64(clusters) {
		return nil, bad("$MFT at cluster %d of %d", mftLCN, clusters)
	}
	recSize := ntfsSizeField(int8(b[0x40]), cs)
	if recSize < 512 || recSize > 4096 {
		return nil, bad("MFT records of %d bytes", recSize)
	}
	if idx := ntfsSizeField(int8(b[0x44]), cs); idx != ntfsIndexRecord {
		return nil, fmt.Errorf("ntfs with index records of %d bytes: %w", idx, ErrUnsupportedFilesystem)
	}
	ctx, err := parser.GetNTFSContext(r, 0)
	if err != nil {
		return nil, bad("%v", err)
	}
	if ctx.ClusterSize != cs || ctx.GetRecordSize() != recSize {
		return nil, bad("geometry read as %d/%d bytes, library says %d/%d", cs, recSize, ctx.ClusterSize, ctx.GetRecordSize())
	}
	f := &ntfsFS{r: r, size: size, ctx: ctx, cs: cs, clusters: clusters, recSize: recSize, records: 16, dirs: map[uint64][]ref{}}
	mft, err := f.record(0)
	if err != nil {
		return nil, err
	}
	var mftData int64
	for _, a := range mft.EnumerateAttributes(ctx) {
		if a.Type().Value == ntfsAttrData && a.Name() == "" && (a.IsResident() || a.Runlist_vcn_start() == 0) {
			mftData = a.DataSize()
		}
	}
	if mftData < 16*recSize || mftData > clusters*cs {
		return nil, f.corrupt("$MFT", "%d bytes of records", mftData)
	}
	f.records = mftData / recSize
	root, err := f.record(ntfsRootRecord)
	if err != nil {
		return nil, err
	}
	if f.rootEnt, _, err = f.entry(root, "root directory"); err != nil {
		return nil, err
	}
	if !f.rootEnt.Mode.IsDir() {
		return nil, f.corrupt("root directory", "record 5 is not a directory")
	}
	f.volumeInfo()
	return f, nil
}

// ntfsSizeField decodes the MFT and index record sizes of the boot
// sector: clusters when positive, 2^-v bytes when negative.
func ntfsSizeField(v int8, cs int64) int64 {
	if v > 0 {
		return int64(v) * cs
	}
	if v < -31 || v == 0 {
		return 0
	}
	return 1 << -v
}

func (f *ntfsFS) corrupt(what, format string, args ...any) error {
	return &CorruptError{FS: "ntfs", What: what, Reason: fmt.Sprintf(format, args...)}
}

func (f *ntfsFS) typ() string     { return "ntfs" }
func (f *ntfsFS) label() string   { return f.lbl }
func (f *ntfsFS) warning() string { return f.warn }

// An NTFS ref: n is the MFT record number, ent the entry built when the
// directory was listed.
func (f *ntfsFS) root() ref {
	e := f.rootEnt
	return ref{n: ntfsRootRecord, ent: &e}
}

func (f *ntfsFS) stat(r ref) (Entry, error) {
	if r.ent == nil {
		return Entry{}, fmt.Errorf("ntfs: record %d without directory data", r.n)
	}
	return *r.ent, nil
}

// volumeInfo reads the label and the dirty flag from $Volume (record 3).
// A damaged $Volume only loses them: the files are still readable.
func (f *ntfsFS) volumeInfo() {
	v, err := f.record(3)
	if err != nil {
		return
	}
	for _, a := range v.EnumerateAttributes(f.ctx) {
		if !a.IsResident() {
			continue
		}
		c, err := f.resident(a, "$Volume")
		if err != nil {
			continue
		}
		switch a.Type().Value {
		case ntfsAttrVolName:
			f.lbl = utf16Name(c)
		case ntfsAttrVolInfo:
			if len(c) >= 12 && binary.LittleEndian.Uint16(c[10:])&0x0001 != 0 {
				f.warn = "the NTFS volume is marked dirty (not cleanly unmounted or needing chkdsk): changes logged in $LogFile may be missing"
			}
		}
	}
}

// record returns MFT record n after checks go-ntfs does not make: n is in
// $MFT, the record has the FILE signature, and its $ATTRIBUTE_LIST and
// $INDEX_ALLOCATION sizes, which bound library loops, are sane.
func (f *ntfsFS) record(n uint64) (*parser.MFT_ENTRY, error) {
	what := fmt.Sprintf("MFT record %d", n)
	if n >= uint64(f.records) {
		return nil, f.corrupt(what, "beyond the %d records of $MFT", f.records)
	}
	e, err := f.ctx.GetMFT(int64(n))
	if err != nil {
		return nil, f.corrupt(what, "%v", err)
	}
	raw := make([]byte, f.recSize)
	if k, _ := e.Reader.ReadAt(raw, e.Offset); k < len(raw) {
		return nil, f.corrupt(what, "short record (%d bytes)", k)
	}
	if string(raw[:4]) != "FILE" {
		return nil, f.corrupt(what, "signature %q", raw[:4])
	}
	le := binary.LittleEndian
	used := int(le.Uint32(raw[0x18:]))
	if used > len(raw) {
		return nil, f.corrupt(what, "%d bytes used in a %d-byte record", used, len(raw))
	}
	for off := int(le.Uint16(raw[0x14:])); ; {
		if off < 0x30 || off+8 > used {
			return nil, f.corrupt(what, "attribute at %d outside the %d used bytes", off, used)
		}
		typ := le.Uint32(raw[off:])
		if typ == 0xFFFFFFFF {
			break
		}
		l := int(le.Uint32(raw[off+4:]))
		if l < 24 || l%8 != 0 || off+l > used {
			return nil, f.corrupt(what, "attribute %#x of %d bytes at %d", typ, l, off)
		}
		if raw[off+8] != 0 { // non-resident
			if l < 0x40 {
				return nil, f.corrupt(what, "non-resident attribute %#x of %d bytes", typ, l)
			}
			dsize := le.Uint64(raw[off+0x30:])
			switch {
			case typ == ntfsAttrList && dsize > ntfsMaxAttrList:
				return nil, f.corrupt(what, "$ATTRIBUTE_LIST of %d bytes", dsize)
			case typ == ntfsAttrIndexAllc && dsize > ntfsMaxIndex:
				return nil, f.corrupt(what, "$INDEX_ALLOCATION of %d bytes", dsize)
			}
		}
		off += l
	}
	return e, nil
}

// attrs returns the attributes of record e including those an
// $ATTRIBUTE_LIST places in other records, and checks the size of an
// $INDEX_ALLOCATION found there (record checks only the base record).
func (f *ntfsFS) attrs(e *parser.MFT_ENTRY, what string) ([]*parser.NTFS_ATTRIBUTE, error) {
	base := e.EnumerateAttributes(f.ctx)
	for _, a := range base {
		if a.Type().Value == ntfsAttrIndexAllc && a.DataSize() > ntfsMaxIndex {
			return nil, f.corrupt(what, "$INDEX_ALLOCATION of %d bytes", a.DataSize())
		}
	}
	return base, nil
}

// resident returns the content of a resident attribute.
func (f *ntfsFS) resident(a *parser.NTFS_ATTRIBUTE, what string) ([]byte, error) {
	n := int64(a.Content_size())
	if n > f.recSize {
		return nil, f.corrupt(what, "resident attribute of %d bytes", n)
	}
	b := make([]byte, n)
	if k, _ := a.Reader.ReadAt(b, a.Offset+int64(a.Content_offset())); int64(k) < n {
		return nil, f.corrupt(what, "resident attribute of %d bytes ends after %d", n, k)
	}
	return b, nil
}

// ntfsInfo is what entry learns from a record besides the Entry.
type ntfsInfo struct {
	parents map[uint64]bool // records of the directories holding a name of this file
	attrs   uint32          // $STANDARD_INFORMATION file attributes
	data    []*parser.NTFS_ATTRIBUTE
}

// entry describes record e. Mode: directories 0755, files 0644 (0444
// with the read-only attribute; Windows ignores it on directories, so
// they stay 0755), symbolic links and junctions as symlinks, other
// reparse points irregular. MTime is the $STANDARD_INFORMATION
// modification time; owners are 0.
func (f *ntfsFS) entry(e *parser.MFT_ENTRY, what string) (Entry, *ntfsInfo, error) {
	flags := e.Flags().Value
	if flags&0x1 == 0 {
		return Entry{}, nil, f.corrupt(what, "record not in use")
	}
	as, err := f.attrs(e, what)
	if err != nil {
		return Entry{}, nil, err
	}
	info := &ntfsInfo{parents: map[uint64]bool{}}
	ent := Entry{Mode: 0o644}
	var haveSI bool
	var reparse []byte
	le := binary.LittleEndian
	for _, a := range as {
		switch a.Type().Value {
		case ntfsAttrStdInfo:
			c, err := f.resident(a, what)
			if err != nil {
				return Entry{}, nil, err
			}
			if len(c) < 0x24 {
				return Entry{}, nil, f.corrupt(what, "$STANDARD_INFORMATION of %d bytes", len(c))
			}
			ent.MTime = ntfsTime(le.Uint64(c[0x08:]))
			info.attrs = le.Uint32(c[0x20:])
			haveSI = true
		case ntfsAttrFileName:
			c, err := f.resident(a, what)
			if err != nil {
				return Entry{}, nil, err
			}
			if len(c) >= 8 {
				info.parents[le.Uint64(c)&(1<<48-1)] = true
			}
		case ntfsAttrData:
			if a.Name() == "" {
				info.data = append(info.data, a)
			}
		case ntfsAttrReparse:
			if a.IsResident() {
				reparse, _ = f.resident(a, what)
			}
		}
	}
	if !haveSI {
		return Entry{}, nil, f.corrupt(what, "no $STANDARD_INFORMATION")
	}
	switch {
	case info.attrs&ntfsFileReparse != 0:
		ent.Mode = fs.ModeIrregular | 0o644
		if t, ok := ntfsLinkTarget(reparse); ok {
			ent.Mode, ent.LinkTarget = fs.ModeSymlink|0o777, t
		}
	case flags&0x2 != 0:
		ent.Mode = fs.ModeDir | 0o755
	default:
		for _, a := range info.data {
			if a.IsResident() || a.Runlist_vcn_start() == 0 {
				ent.Size = a.DataSize()
			}
		}
		if ent.Size < 0 || ent.Size > f.clusters*f.cs && len(info.data) > 0 && !ntfsSparse(info.data[0]) {
			return Entry{}, nil, f.corrupt(what, "file of %d bytes in a volume of %d", ent.Size, f.clusters*f.cs)
		}
		if info.attrs&ntfsFileReadOnly != 0 {
			ent.Mode = 0o444
		}
		if t, ok := f.interixLink(info, ent.Size, what); ok {
			ent.Mode, ent.LinkTarget, ent.Size = fs.ModeSymlink|0o777, t, 0
		}
	}
	return ent, info, nil
}

// interixLink decodes the symbolic links ntfs-3g makes by default: a
// file with the system attribute holding "IntxLNK\x01" and the target
// in UTF-16 (Interix/SFU links).
func (f *ntfsFS) interixLink(info *ntfsInfo, size int64, what string) (string, bool) {
	const magic = "IntxLNK\x01"
	if info.attrs&ntfsFileSystem == 0 || size <= int64(len(magic)) || size > int64(len(magic))+2*4096 || len(info.data) == 0 {
		return "", false
	}
	file, err := f.openData(info.data, what)
	if err != nil {
		return "", false
	}
	b := make([]byte, size)
	if n, err := file.ReadAt(b, 0); int64(n) < size && err != nil || string(b[:len(magic)]) != magic {
		return "", false
	}
	t := utf16Name(b[len(magic):])
	return t, t != ""
}

func ntfsSparse(a *parser.NTFS_ATTRIBUTE) bool {
	return uint64(*a.Flags())&(ntfsFlagSparse|ntfsFlagCompressed) != 0
}

// ntfsTime converts a FILETIME (100 ns since 1601) to a time.Time.
func ntfsTime(ft uint64) time.Time {
	const epochDiff = 116444736000000000 // 1601-01-01 to 1970-01-01 in 100 ns
	d := int64(ft/1e7) - epochDiff/1e7
	return time.Unix(d, int64(ft%1e7)*100).UTC()
}

// ntfsLinkTarget decodes the target of a symbolic link or junction
// reparse point, with '/' separators; a target with a drive letter or
// a volume name stays as Windows wrote it apart from the separators.
func ntfsLinkTarget(b []byte) (string, bool) {
	if len(b) < 16 {
		return "", false
	}
	le := binary.LittleEndian
	tag := le.Uint32(b)
	hdr := 16 // tag, length, reserved, then four uint16 offsets/lengths
	switch tag {
	case ntfsTagSymlink:
		hdr = 20 // plus flags
	case ntfsTagMountPoint:
	default:
		return "", false
	}
	if len(b) < hdr {
		return "", false
	}
	subOff, subLen := int(le.Uint16(b[8:])), int(le.Uint16(b[10:]))
	prOff, prLen := int(le.Uint16(b[12:])), int(le.Uint16(b[14:]))
	off, n := prOff, prLen
	if n == 0 {
		off, n = subOff, subLen
	}
	if hdr+off+n > len(b) || n == 0 {
		return "", false
	}
	t := strings.TrimPrefix(utf16Name(b[hdr+off:hdr+off+n]), `\??\`)
	return strings.ReplaceAll(t, `\`, "/"), true
}

func (f *ntfsFS) list(d ref) ([]ref, error) {
	if d.ent == nil || !d.ent.Mode.IsDir() {
		return nil, ErrNotDir
	}
	f.mu.Lock()
	kids, ok := f.dirs[d.n]
	f.mu.Unlock()
	if ok {
		return kids, nil
	}
	kids, err := f.listRecord(d)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if f.dirEntries+len(kids) > ntfsCacheEntries {
		clear(f.dirs)
		f.dirEntries = 0
	}
	f.dirs[d.n] = kids
	f.dirEntries += len(kids)
	f.mu.Unlock()
	return kids, nil
}

// listRecord reads the index of directory d. Callers must not modify the
// refs returned by list, which are shared through the cache.
func (f *ntfsFS) listRecord(d ref) ([]ref, error) {
	what := fmt.Sprintf("directory record %d", d.n)
	e, err := f.record(d.n)
	if err != nil {
		return nil, err
	}
	if _, err := f.attrs(e, what); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []ref
	for _, ie := range e.Dir(f.ctx) {
		if ie.Flags()&0x2 != 0 { // the last entry of a node holds no name
			continue
		}
		fn := ie.File()
		if fn.NameType().Value == 2 { // a DOS 8.3 alias of a long name
			continue
		}
		n := ie.MftReference()
		if n < ntfsFirstUser {
			continue
		}
		name := fn.Name()
		if seen[name] {
			continue
		}
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			return nil, f.corrupt(what, "entry name %q", name)
		}
		ce, err := f.record(n)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if seq := ie.Seq_num(); seq != 0 && seq != ce.Sequence_value() {
			continue // a stale entry: the record was freed and reused
		}
		if ce.Flags().Value&0x1 == 0 {
			continue // a stale entry of a deleted file
		}
		ent, info, err := f.entry(ce, name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if !info.parents[d.n] {
			continue // a stale entry of a file moved elsewhere
		}
		seen[name] = true
		out = append(out, ref{name: name, n: n, ent: &ent})
		if len(out) > ntfsMaxDir {
			return nil, f.corrupt(what, "more than %d entries", ntfsMaxDir)
		}
	}
	return out, nil
}

func (f *ntfsFS) open(r ref) (File, error) {
	e, err := f.record(r.n)
	if err != nil {
		return nil, err
	}
	_, info, err := f.entry(e, r.name)
	if err != nil {
		return nil, err
	}
	if info.attrs&ntfsFileEncrypted != 0 {
		return nil, fmt.Errorf("encrypted (EFS) file: %w", ErrUnsupportedFile)
	}
	if len(info.data) == 0 {
		if r.ent.Size != 0 {
			return nil, f.corrupt(r.name, "no $DATA for %d bytes", r.ent.Size)
		}
		return &memFile{bytes.NewReader(nil)}, nil
	}
	return f.openData(info.data, r.name)
}
