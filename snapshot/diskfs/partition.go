package diskfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// ErrCorruptTable is wrapped by errors about a partition table that is
// present but cannot be trusted: a GPT whose primary and backup headers both
// fail their checks, or partitions outside the image.
var ErrCorruptTable = errors.New("corrupt partition table")

// Partition is one partition of an image, or the whole image (Number 0)
// when it has no partition table.
type Partition struct {
	// Number is the partition's number as Linux names it (1 for sda1; MBR
	// logical partitions start at 5), or 0 for the whole image.
	Number int
	// Start and Size are in bytes from the start of the image.
	Start, Size int64
	// Table is "gpt", "mbr" or "" (no table).
	Table string
	// Type is the partition type: a known name ("Linux filesystem",
	// "EFI System", ...) or, for GPT, the type GUID; for MBR the type byte
	// in hex ("0x83") followed by its name when known.
	Type string
	// Name is the GPT partition name (empty for MBR).
	Name string
}

// Partitions returns the partitions of the image r of size bytes, in the
// order of their numbers. An image without a partition table (a bare file
// system, or unrecognised bytes) is one partition numbered 0 covering it
// all; a table that is present but damaged is an error wrapping
// ErrCorruptTable.
func Partitions(r io.ReaderAt, size int64) ([]Partition, error) {
	whole := []Partition{{Number: 0, Start: 0, Size: size}}
	if size < 512 {
		return whole, nil
	}
	mbr := make([]byte, 512)
	if err := readFull(r, mbr, 0); err != nil {
		return nil, fmt.Errorf("read partition table: %w", err)
	}
	hasSig := mbr[510] == 0x55 && mbr[511] == 0xAA
	protective := false
	if hasSig {
		for i := 0; i < 4; i++ {
			if mbr[446+16*i+4] == 0xEE {
				protective = true
			}
		}
	}
	// A GPT is looked for with 512- and 4096-byte sectors; its signature
	// counts even without a protective MBR (some tools omit it).
	for _, ss := range []int64{512, 4096} {
		parts, found, err := readGPT(r, size, ss)
		if found {
			return parts, err
		}
	}
	if protective {
		return nil, fmt.Errorf("%w: protective MBR but no valid GPT header (primary or backup)", ErrCorruptTable)
	}
	if !hasSig || looksLikeBootSector(mbr) {
		return whole, nil
	}
	parts, ok, err := readMBR(r, size, mbr)
	if err != nil {
		return nil, err
	}
	if !ok {
		return whole, nil
	}
	return parts, nil
}

// looksLikeBootSector reports whether sector 0 is the boot sector of a FAT
// or NTFS file system covering the whole image (a "superfloppy"), whose
// boot code would otherwise be mistaken for MBR entries.
func looksLikeBootSector(b []byte) bool {
	if string(b[3:11]) == "NTFS    " || string(b[3:11]) == "EXFAT   " {
		return true
	}
	_, err := parseFATBoot(b)
	return err == nil
}

// readMBR parses an MBR with its extended partitions. ok is false when the
// four entries do not look like a partition table at all (bad status bytes),
// so that the image is treated as having none.
func readMBR(r io.ReaderAt, size int64, mbr []byte) (parts []Partition, ok bool, err error) {
	const ss = 512
	sectors := size / ss
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i : 446+16*i+16]
		if e[0] != 0 && e[0] != 0x80 {
			return nil, false, nil
		}
	}
	var ext *Partition
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i : 446+16*i+16]
		typ := e[4]
		start := int64(binary.LittleEndian.Uint32(e[8:]))
		n := int64(binary.LittleEndian.Uint32(e[12:]))
		if typ == 0 || n == 0 {
			continue
		}
		if start == 0 || start+n > sectors {
			return nil, true, fmt.Errorf("%w: MBR partition %d (sectors %d..%d) lies outside the image (%d sectors)",
				ErrCorruptTable, i+1, start, start+n-1, sectors)
		}
		p := Partition{Number: i + 1, Start: start * ss, Size: n * ss, Table: "mbr", Type: mbrTypeName(typ)}
		if isExtended(typ) {
			if ext != nil {
				return nil, true, fmt.Errorf("%w: MBR has two extended partitions", ErrCorruptTable)
			}
			ext = &p
			continue
		}
		parts = append(parts, p)
	}
	if ext != nil {
		logical, err := readEBRs(r, sectors, ext.Start/ss, ext.Size/ss)
		if err != nil {
			return nil, true, err
		}
		parts = append(parts, logical...)
	}
	if err := checkOverlap(parts); err != nil {
		return nil, true, err
	}
	return parts, true, nil
}

// maxLogical bounds the EBR chain (Linux supports at most 60 partitions on
// a SCSI disk); it also ends chains that loop.
const maxLogical = 128

// readEBRs follows the chain of extended boot records of the extended
// partition at extStart (sectors) and returns the logical partitions,
// numbered from 5.
func readEBRs(r io.ReaderAt, sectors, extStart, extLen int64) ([]Partition, error) {
	const ss = 512
	var parts []Partition
	b := make([]byte, 512)
	ebr := extStart
	for n := 0; ; n++ {
		if n == maxLogical {
			return nil, fmt.Errorf("%w: more than %d logical partitions (a loop in the EBR chain?)", ErrCorruptTable, maxLogical)
		}
		if err := readFull(r, b, ebr*ss); err != nil {
			return nil, fmt.Errorf("read extended boot record at sector %d: %w", ebr, err)
		}
		if b[510] != 0x55 || b[511] != 0xAA {
			return nil, fmt.Errorf("%w: extended boot record at sector %d has no signature", ErrCorruptTable, ebr)
		}
		e := b[446:462]
		start := ebr + int64(binary.LittleEndian.Uint32(e[8:]))
		length := int64(binary.LittleEndian.Uint32(e[12:]))
		if e[4] != 0 && length > 0 {
			if start+length > extStart+extLen || start+length > sectors {
				return nil, fmt.Errorf("%w: logical partition %d lies outside its extended partition", ErrCorruptTable, 5+len(parts))
			}
			parts = append(parts, Partition{Number: 5 + len(parts), Start: start * ss, Size: length * ss, Table: "mbr", Type: mbrTypeName(e[4])})
		}
		next := b[462:478]
		rel := int64(binary.LittleEndian.Uint32(next[8:]))
		if next[4] == 0 || rel == 0 {
			return parts, nil
		}
		if !isExtended(next[4]) || rel >= extLen {
			return nil, fmt.Errorf("%w: bad link in the extended boot record at sector %d", ErrCorruptTable, ebr)
		}
		ebr = extStart + rel
	}
}

func isExtended(t byte) bool { return t == 0x05 || t == 0x0F || t == 0x85 }

func checkOverlap(parts []Partition) error {
	for i, a := range parts {
		for _, b := range parts[i+1:] {
			if a.Start < b.Start+b.Size && b.Start < a.Start+a.Size {
				return fmt.Errorf("%w: partitions %d and %d overlap", ErrCorruptTable, a.Number, b.Number)
			}
		}
	}
	return nil
}

// maxGPTEntriesBytes bounds the partition entry array read (the standard is
// 128 entries of 128 bytes, 16 KiB); 1 MiB allows unusual layouts.
const maxGPTEntriesBytes = 1 << 20

// readGPT looks for a GPT with sector size ss. found is true when a GPT
// signature is present (at the primary or the backup location); then err
// tells whether it could be read.
func readGPT(r io.ReaderAt, size, ss int64) (parts []Partition, found bool, err error) {
	sectors := size / ss
	if sectors < 3 {
		return nil, false, nil
	}
	primary, perr := readGPTHeader(r, ss, 1, sectors)
	if perr == nil {
		parts, perr = readGPTEntries(r, ss, sectors, primary)
		if perr == nil {
			return parts, true, nil
		}
	}
	// The backup header sits in the last sector (or where the primary,
	// if readable, says it is).
	alt := sectors - 1
	if primary != nil && primary.alternate > 1 && primary.alternate < uint64(sectors) {
		alt = int64(primary.alternate)
	}
	backup, berr := readGPTHeader(r, ss, alt, sectors)
	if berr == nil {
		parts, berr = readGPTEntries(r, ss, sectors, backup)
		if berr == nil {
			return parts, true, nil
		}
	}
	if errors.Is(perr, errNoGPT) && errors.Is(berr, errNoGPT) {
		return nil, false, nil
	}
	if errors.Is(perr, errNoGPT) {
		perr = errors.New("missing")
	}
	if errors.Is(berr, errNoGPT) {
		berr = errors.New("missing")
	}
	return nil, true, fmt.Errorf("%w: GPT primary header: %v; backup header: %v", ErrCorruptTable, perr, berr)
}

var errNoGPT = errors.New("no GPT signature")

type gptHeader struct {
	alternate            uint64
	firstUsable          uint64
	lastUsable           uint64
	entriesLBA           uint64
	numEntries           uint32
	entrySize            uint32
	entriesCRC           uint32
	sectorSize, lbaOfHdr int64
}

func readGPTHeader(r io.ReaderAt, ss, lba, sectors int64) (*gptHeader, error) {
	b := make([]byte, ss)
	if err := readFull(r, b, lba*ss); err != nil {
		return nil, err
	}
	if string(b[:8]) != "EFI PART" {
		return nil, errNoGPT
	}
	hsize := binary.LittleEndian.Uint32(b[12:])
	if hsize < 92 || int64(hsize) > ss {
		return nil, fmt.Errorf("header size %d", hsize)
	}
	want := binary.LittleEndian.Uint32(b[16:])
	h := append([]byte(nil), b[:hsize]...)
	clear(h[16:20])
	if got := crc32.ChecksumIEEE(h); got != want {
		return nil, fmt.Errorf("header CRC %08x, computed %08x", want, got)
	}
	g := &gptHeader{
		alternate:   binary.LittleEndian.Uint64(b[32:]),
		firstUsable: binary.LittleEndian.Uint64(b[40:]),
		lastUsable:  binary.LittleEndian.Uint64(b[48:]),
		entriesLBA:  binary.LittleEndian.Uint64(b[72:]),
		numEntries:  binary.LittleEndian.Uint32(b[80:]),
		entrySize:   binary.LittleEndian.Uint32(b[84:]),
		entriesCRC:  binary.LittleEndian.Uint32(b[88:]),
		sectorSize:  ss, lbaOfHdr: lba,
	}
	if myLBA := binary.LittleEndian.Uint64(b[24:]); myLBA != uint64(lba) {
		return nil, fmt.Errorf("header at LBA %d says it is at LBA %d", lba, myLBA)
	}
	if g.entrySize < 128 || g.entrySize%8 != 0 || uint64(g.numEntries)*uint64(g.entrySize) > maxGPTEntriesBytes {
		return nil, fmt.Errorf("%d entries of %d bytes", g.numEntries, g.entrySize)
	}
	n := (uint64(g.numEntries)*uint64(g.entrySize) + uint64(ss) - 1) / uint64(ss)
	if g.entriesLBA < 1 || g.entriesLBA+n > uint64(sectors) {
		return nil, fmt.Errorf("entry array at LBA %d outside the image", g.entriesLBA)
	}
	return g, nil
}

func readGPTEntries(r io.ReaderAt, ss, sectors int64, g *gptHeader) ([]Partition, error) {
	b := make([]byte, int(g.numEntries)*int(g.entrySize))
	if err := readFull(r, b, int64(g.entriesLBA)*ss); err != nil {
		return nil, err
	}
	if got := crc32.ChecksumIEEE(b); got != g.entriesCRC {
		return nil, fmt.Errorf("entry array CRC %08x, computed %08x", g.entriesCRC, got)
	}
	var parts []Partition
	for i := 0; i < int(g.numEntries); i++ {
		e := b[i*int(g.entrySize) : (i+1)*int(g.entrySize)]
		if bytes.Equal(e[:16], make([]byte, 16)) {
			continue
		}
		first := binary.LittleEndian.Uint64(e[32:])
		last := binary.LittleEndian.Uint64(e[40:])
		if first > last || last >= uint64(sectors) {
			return nil, fmt.Errorf("partition %d (LBA %d..%d) lies outside the image (%d sectors)", i+1, first, last, sectors)
		}
		parts = append(parts, Partition{
			Number: i + 1, Start: int64(first) * ss, Size: int64(last-first+1) * ss, Table: "gpt",
			Type: gptTypeName(guidString(e[:16])), Name: utf16Name(e[56:128]),
		})
	}
	if err := checkOverlap(parts); err != nil {
		return nil, err
	}
	return parts, nil
}

// guidString formats a GUID stored in the mixed-endian layout of GPT.
func guidString(b []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint16(b[4:]),
		binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16])
}

// utf16Name decodes a NUL-terminated UTF-16LE name.
func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

var gptTypes = map[string]string{
	"C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
	"21686148-6449-6E6F-744E-656564454649": "BIOS boot",
	"0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
	"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
	"933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux home",
	"0657FD6D-A4AB-4313-8EFA-D9E68A6B5ED4": "Linux swap",
	"E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
	"A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
	"CA7D7CCB-63ED-4C53-861C-1742536059CC": "Linux LUKS",
	"BC13C2FF-59E6-4262-A352-B275FD6F7172": "Linux extended boot",
	"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
	"E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
	"DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery",
}

func gptTypeName(guid string) string {
	if n, ok := gptTypes[guid]; ok {
		return n
	}
	return guid
}

var mbrTypes = map[byte]string{
	0x01: "FAT12", 0x04: "FAT16 <32M", 0x05: "Extended", 0x06: "FAT16", 0x07: "NTFS/exFAT",
	0x0B: "W95 FAT32", 0x0C: "W95 FAT32 (LBA)", 0x0E: "W95 FAT16 (LBA)", 0x0F: "W95 Extended (LBA)",
	0x82: "Linux swap", 0x83: "Linux", 0x85: "Linux extended", 0x8E: "Linux LVM", 0xEF: "EFI System",
	0xFD: "Linux RAID",
}

func mbrTypeName(t byte) string {
	s := fmt.Sprintf("0x%02x", t)
	if n, ok := mbrTypes[t]; ok {
		s += " " + n
	}
	return s
}

// ParsePath splits an inside path "[PARTITION:]PATH" into the partition
// number (-1 when none is given) and the absolute, cleaned path. "2:" is
// the root of partition 2; a path that does not start with digits and a
// colon has no partition number.
func ParsePath(s string) (part int, path string) {
	part = -1
	if i := strings.IndexByte(s, ':'); i > 0 && i <= 4 {
		n := 0
		digits := true
		for _, c := range s[:i] {
			if c < '0' || c > '9' {
				digits = false
				break
			}
			n = n*10 + int(c-'0')
		}
		if digits {
			part, s = n, s[i+1:]
		}
	}
	return part, cleanPath(s)
}

// readFull reads len(b) bytes at off; a short read is io.ErrUnexpectedEOF.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at offset %d: %w", len(b), off, err)
}
