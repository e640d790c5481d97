package diskfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
)

// fatBoot is the part of a FAT boot sector (BIOS parameter block) the
// reader uses, with derived geometry in bytes.
type fatBoot struct {
	kind        string // fat12, fat16, fat32
	bps         int64  // bytes per sector
	clusterSize int64
	fatOffset   int64 // first FAT
	fatBytes    int64 // one FAT
	rootOffset  int64 // FAT12/16 fixed root directory
	rootBytes   int64
	rootCluster uint32 // FAT32
	dataOffset  int64
	clusters    uint32 // data clusters, numbered 2..clusters+1
	label       string
}

// parseFATBoot checks a boot sector and derives the geometry; the cluster
// count decides the FAT type, as the specification says.
func parseFATBoot(b []byte) (*fatBoot, error) {
	le := binary.LittleEndian
	bad := func(f string, a ...any) error { return fmt.Errorf("not a FAT boot sector: "+f, a...) }
	if len(b) < 512 || b[0] != 0xEB && b[0] != 0xE9 {
		return nil, bad("no jump instruction")
	}
	bps := int64(le.Uint16(b[11:]))
	spc := int64(b[13])
	rsvd := int64(le.Uint16(b[14:]))
	nfats := int64(b[16])
	rootEnt := int64(le.Uint16(b[17:]))
	tot := int64(le.Uint16(b[19:]))
	fatSz := int64(le.Uint16(b[22:]))
	if tot == 0 {
		tot = int64(le.Uint32(b[32:]))
	}
	if fatSz == 0 {
		fatSz = int64(le.Uint32(b[36:]))
	}
	switch {
	case bps != 512 && bps != 1024 && bps != 2048 && bps != 4096:
		return nil, bad("%d bytes per sector", bps)
	case spc == 0 || spc&(spc-1) != 0:
		return nil, bad("%d sectors per cluster", spc)
	case rsvd == 0 || nfats == 0 || fatSz == 0 || tot == 0:
		return nil, bad("empty geometry")
	case b[21] != 0xF0 && b[21] < 0xF8:
		return nil, bad("media byte %#x", b[21])
	}
	rootSecs := (rootEnt*32 + bps - 1) / bps
	meta := rsvd + nfats*fatSz + rootSecs
	if meta >= tot {
		return nil, bad("no data area")
	}
	fb := &fatBoot{
		bps: bps, clusterSize: bps * spc,
		fatOffset: rsvd * bps, fatBytes: fatSz * bps,
		rootOffset: (rsvd + nfats*fatSz) * bps, rootBytes: rootEnt * 32,
		dataOffset: meta * bps,
		clusters:   uint32((tot - meta) / spc),
	}
	labelAt := 43
	switch {
	case fb.clusters < 4085:
		fb.kind = "fat12"
	case fb.clusters < 65525:
		fb.kind = "fat16"
	default:
		fb.kind = "fat32"
		fb.rootCluster = le.Uint32(b[44:])
		labelAt = 71
		if rootEnt != 0 {
			return nil, bad("FAT32 with a fixed root directory")
		}
	}
	if fb.kind != "fat32" && rootEnt == 0 {
		return nil, bad("%s without a root directory", fb.kind)
	}
	// The FAT must hold an entry for every cluster.
	need := map[string]int64{"fat12": (int64(fb.clusters) + 2) * 3 / 2, "fat16": (int64(fb.clusters) + 2) * 2, "fat32": (int64(fb.clusters) + 2) * 4}[fb.kind]
	if fb.fatBytes < need {
		return nil, bad("FAT of %d bytes for %d clusters", fb.fatBytes, fb.clusters)
	}
	if sig := b[labelAt-5]; sig == 0x29 {
		fb.label = strings.TrimRight(string(b[labelAt:labelAt+11]), " ")
	}
	return fb, nil
}

// fatCachePages bounds the FAT cache: 64 pages of 64 KiB (4 MiB) cover the
// chains of 1 M clusters of FAT32, and a lookup reads only its page.
const (
	fatPageSize   = 64 << 10
	fatCachePages = 64
	fatMaxDir     = 1 << 16 // entries in one directory: the FAT limit
)

type fatFS struct {
	r    io.ReaderAt
	size int64
	b    *fatBoot

	mu sync.Mutex // guards pages
	// pages caches pages of the first FAT by page index; cleared when full.
	pages map[int64][]byte
}

func openFAT(r io.ReaderAt, size int64) (*fatFS, error) {
	bs := make([]byte, 512)
	if err := readFull(r, bs, 0); err != nil {
		return nil, err
	}
	b, err := parseFATBoot(bs)
	if err != nil {
		return nil, &CorruptError{FS: "fat", What: "boot sector", Reason: err.Error()}
	}
	f := &fatFS{r: r, size: size, b: b, pages: make(map[int64][]byte)}
	if b.kind == "fat32" && !f.validCluster(b.rootCluster) {
		return nil, f.corrupt("boot sector", "root cluster %d", b.rootCluster)
	}
	if b.dataOffset+int64(b.clusters)*b.clusterSize > size {
		return nil, f.corrupt("boot sector", "%d clusters of %d bytes do not fit the partition's %d bytes", b.clusters, b.clusterSize, size)
	}
	return f, nil
}

func (f *fatFS) corrupt(what, format string, args ...any) error {
	return &CorruptError{FS: f.b.kind, What: what, Reason: fmt.Sprintf(format, args...)}
}

func (f *fatFS) typ() string     { return f.b.kind }
func (f *fatFS) label() string   { return f.b.label }
func (f *fatFS) warning() string { return "" }

// A FAT ref: n is the first cluster (0 for the FAT12/16 root and for empty
// files), ent the entry read from the directory.
func (f *fatFS) root() ref {
	n := uint64(0)
	if f.b.kind == "fat32" {
		n = uint64(f.b.rootCluster)
	}
	return ref{n: n, ent: &Entry{Mode: fs.ModeDir | 0o755}, aux: 1}
}

func (f *fatFS) validCluster(c uint32) bool { return c >= 2 && c < f.b.clusters+2 }

// next returns the FAT entry of cluster c.
func (f *fatFS) next(c uint32) (uint32, error) {
	var off int64
	switch f.b.kind {
	case "fat12":
		off = int64(c) + int64(c)/2
	case "fat16":
		off = int64(c) * 2
	default:
		off = int64(c) * 4
	}
	pi := off / fatPageSize
	f.mu.Lock()
	page, ok := f.pages[pi]
	f.mu.Unlock()
	if !ok {
		n := min(fatPageSize+4, f.b.fatBytes-pi*fatPageSize) // +4: a FAT12 entry may straddle pages
		page = make([]byte, n)
		if err := readFull(f.r, page, f.b.fatOffset+pi*fatPageSize); err != nil {
			return 0, fmt.Errorf("read FAT: %w", err)
		}
		f.mu.Lock()
		if len(f.pages) >= fatCachePages {
			clear(f.pages)
		}
		f.pages[pi] = page
		f.mu.Unlock()
	}
	o := off - pi*fatPageSize
	le := binary.LittleEndian
	switch f.b.kind {
	case "fat12":
		v := uint32(le.Uint16(page[o:]))
		if c&1 == 1 {
			v >>= 4
		}
		v &= 0xFFF
		if v >= 0xFF7 {
			v |= 0x0FFFF000
		}
		return v, nil
	case "fat16":
		v := uint32(le.Uint16(page[o:]))
		if v >= 0xFFF7 {
			v |= 0x0FFF0000
		}
		return v, nil
	}
	return le.Uint32(page[o:]) & 0x0FFFFFFF, nil
}

// run is a stretch of contiguous clusters.
type run struct{ first, n uint32 }

// chain returns the clusters of the chain starting at first, as runs,
// reading at most maxClusters of it (the file's size says how many it
// needs; directories pass the FAT's limit).
func (f *fatFS) chain(first uint32, maxClusters uint32, what string) ([]run, error) {
	var runs []run
	c := first
	for i := uint32(0); ; i++ {
		if !f.validCluster(c) {
			return nil, f.corrupt(what, "cluster %d outside 2..%d", c, f.b.clusters+1)
		}
		if i >= f.b.clusters {
			return nil, f.corrupt(what, "cluster chain loops")
		}
		if l := len(runs); l > 0 && runs[l-1].first+runs[l-1].n == c {
			runs[l-1].n++
		} else {
			runs = append(runs, run{c, 1})
		}
		if i+1 == maxClusters {
			return runs, nil
		}
		nx, err := f.next(c)
		if err != nil {
			return nil, err
		}
		if nx >= 0x0FFFFFF8 {
			return runs, nil
		}
		if nx == 0x0FFFFFF7 || nx == 0 {
			return nil, f.corrupt(what, "cluster %d is followed by %s", c, map[bool]string{true: "a bad cluster", false: "a free cluster"}[nx != 0])
		}
		c = nx
	}
}

// fatFile reads the first size bytes of a cluster chain.
type fatFile struct {
	f    *fatFS
	size int64
	runs []run
}

func (x *fatFile) Size() int64 { return x.size }

func (x *fatFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= x.size {
		return 0, io.EOF
	}
	want := p[:min(int64(len(p)), x.size-off)]
	cs := x.f.b.clusterSize
	done := 0
	pos := int64(0) // file offset where runs[i] starts
	for _, r := range x.runs {
		end := pos + int64(r.n)*cs
		at := off + int64(done)
		if at < end && done < len(want) {
			k := int(min(end-at, int64(len(want)-done)))
			disk := x.f.b.dataOffset + int64(r.first-2)*cs + (at - pos)
			if err := readFull(x.f.r, want[done:done+k], disk); err != nil {
				return done, err
			}
			done += k
		}
		pos = end
	}
	if done < len(want) {
		return done, x.f.corrupt("cluster chain", "ends before the file's %d bytes", x.size)
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

func (f *fatFS) open(r ref) (File, error) {
	size := r.ent.Size
	if size == 0 {
		return &memFile{bytes.NewReader(nil)}, nil
	}
	need := uint32((size + f.b.clusterSize - 1) / f.b.clusterSize)
	runs, err := f.chain(uint32(r.n), need, "cluster chain of "+r.name)
	if err != nil {
		return nil, err
	}
	got := int64(0)
	for _, x := range runs {
		got += int64(x.n)
	}
	if got < int64(need) {
		return nil, f.corrupt("cluster chain of "+r.name, "%d clusters for %d bytes", got, size)
	}
	return &fatFile{f: f, size: size, runs: runs}, nil
}

func (f *fatFS) stat(r ref) (Entry, error) {
	if r.ent == nil {
		return Entry{}, errors.New("fat: entry without directory data")
	}
	return *r.ent, nil
}

// dirBytes reads a whole directory.
func (f *fatFS) dirBytes(d ref) ([]byte, error) {
	if d.n == 0 && d.aux == 1 && f.b.kind != "fat32" {
		b := make([]byte, f.b.rootBytes)
		return b, readFull(f.r, b, f.b.rootOffset)
	}
	if d.n == 0 {
		return nil, nil // an empty directory entry with no cluster (corrupt but harmless)
	}
	maxClusters := uint32(min(int64(fatMaxDir)*32/f.b.clusterSize+1, int64(f.b.clusters)))
	runs, err := f.chain(uint32(d.n), maxClusters, "directory "+d.name)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, x := range runs {
		total += int64(x.n) * f.b.clusterSize
	}
	file := &fatFile{f: f, size: total, runs: runs}
	b := make([]byte, total)
	if _, err := file.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}

func (f *fatFS) list(d ref) ([]ref, error) {
	if d.ent == nil || !d.ent.Mode.IsDir() {
		return nil, ErrNotDir
	}
	b, err := f.dirBytes(d)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	var out []ref
	var lfn []uint16 // the long name being assembled, in order
	lfnSum, lfnNext := -1, 0
	for off := 0; off+32 <= len(b); off += 32 {
		e := b[off : off+32]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xE5 {
			lfnSum = -1
			continue
		}
		attr := e[11]
		if attr&0x3F == 0x0F { // a long-name part
			ord := int(e[0] & 0x1F)
			if e[0]&0x40 != 0 {
				lfn, lfnSum, lfnNext = make([]uint16, 13*ord), int(e[13]), ord
			}
			if lfnSum < 0 || ord != lfnNext || ord == 0 || int(e[13]) != lfnSum {
				lfnSum = -1
				continue
			}
			part := lfn[13*(ord-1):]
			for i := 0; i < 5; i++ {
				part[i] = le.Uint16(e[1+2*i:])
			}
			for i := 0; i < 6; i++ {
				part[5+i] = le.Uint16(e[14+2*i:])
			}
			for i := 0; i < 2; i++ {
				part[11+i] = le.Uint16(e[28+2*i:])
			}
			lfnNext--
			continue
		}
		if attr&0x08 != 0 { // volume label
			lfnSum = -1
			continue
		}
		name := ""
		if lfnSum >= 0 && lfnNext == 0 && int(sfnChecksum(e[:11])) == lfnSum {
			name = decodeLFN(lfn)
		}
		lfnSum = -1
		if name == "" {
			name = shortName(e)
		}
		if name == "." || name == ".." {
			continue
		}
		first := uint32(le.Uint16(e[26:])) | uint32(le.Uint16(e[20:]))<<16
		if f.b.kind != "fat32" {
			first &= 0xFFFF
		}
		ent := &Entry{MTime: fatTime(le.Uint16(e[24:]), le.Uint16(e[22:]))}
		if attr&0x10 != 0 {
			ent.Mode = fs.ModeDir | 0o755
		} else {
			ent.Mode, ent.Size = 0o644, int64(le.Uint32(e[28:]))
		}
		if attr&0x01 != 0 { // read-only
			ent.Mode &^= 0o222
		}
		if ent.Size > 0 && !f.validCluster(first) {
			return nil, f.corrupt("directory entry "+name, "first cluster %d", first)
		}
		out = append(out, ref{name: name, n: uint64(first), ent: ent})
		if len(out) > fatMaxDir {
			return nil, f.corrupt("directory "+d.name, "more than %d entries", fatMaxDir)
		}
	}
	return out, nil
}

func sfnChecksum(name []byte) byte {
	var s byte
	for _, c := range name {
		s = (s&1)<<7 + s>>1 + c
	}
	return s
}

func decodeLFN(u []uint16) string {
	for i, c := range u {
		if c == 0 {
			u = u[:i]
			break
		}
	}
	for len(u) > 0 && u[len(u)-1] == 0xFFFF {
		u = u[:len(u)-1]
	}
	return string(utf16.Decode(u))
}

// shortName decodes an 8.3 name, honouring the lowercase flags Windows NT
// and Linux set for names like "readme.txt".
func shortName(e []byte) string {
	base := []byte(strings.TrimRight(string(e[0:8]), " "))
	ext := []byte(strings.TrimRight(string(e[8:11]), " "))
	if len(base) > 0 && base[0] == 0x05 {
		base[0] = 0xE5
	}
	lower := func(b []byte) {
		for i, c := range b {
			if c >= 'A' && c <= 'Z' {
				b[i] = c + 'a' - 'A'
			}
		}
	}
	if e[12]&0x08 != 0 {
		lower(base)
	}
	if e[12]&0x10 != 0 {
		lower(ext)
	}
	s := latin1(base)
	if len(ext) > 0 {
		s += "." + latin1(ext)
	}
	return s
}

// latin1 maps OEM bytes to runes one to one (code page 437 differs above
// 0x7F, but such short names are rare and have a long name beside them).
func latin1(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

// fatTime decodes a FAT date and time. FAT stores local time without a
// zone; it is read in the local zone, as mtools and Windows write it.
func fatTime(date, tm uint16) time.Time {
	if date == 0 {
		return time.Unix(0, 0)
	}
	return time.Date(1980+int(date>>9), time.Month(date>>5&0xF), int(date&0x1F),
		int(tm>>11), int(tm>>5&0x3F), 2*int(tm&0x1F), 0, time.Local)
}
