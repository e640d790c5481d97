package diskfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"
)

// Errors callers branch on. Errors for a missing path also match
// fs.ErrNotExist.
var (
	// ErrUnknownFilesystem is wrapped when a partition holds no file system
	// signature this package knows; the message says what was found.
	ErrUnknownFilesystem = errors.New("unknown filesystem")
	// ErrUnsupportedFilesystem is wrapped when a file system is recognised
	// (NTFS, exFAT, XFS, ...) but cannot be read by this package.
	ErrUnsupportedFilesystem = errors.New("filesystem not supported")
	// ErrNotDir is wrapped when a directory operation meets a non-directory.
	ErrNotDir = errors.New("not a directory")
	// ErrIsDir is wrapped when Open is asked for a directory.
	ErrIsDir = errors.New("is a directory")
	// ErrNotRegular is wrapped when Open is asked for a symlink or special file.
	ErrNotRegular = errors.New("not a regular file")
)

// CorruptError reports damaged file system structures.
type CorruptError struct {
	FS     string // "ext4", "fat32", ...
	What   string // the structure: "superblock", "inode 12", "cluster chain of /a"
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt %s: %s: %s", e.FS, e.What, e.Reason)
}

// Entry describes one file of a file system. Mode holds the type bits and
// the permission bits (with setuid, setgid and sticky) as fs.FileMode.
type Entry struct {
	Name       string
	Path       string // absolute within the file system, "/" for the root
	Mode       fs.FileMode
	Size       int64
	MTime      time.Time
	UID, GID   uint32
	LinkTarget string // symlinks only
}

// File is an open regular file. ReadAt reads the file's bytes only (never
// the padding of its last block or cluster) and returns io.EOF at Size.
type File interface {
	io.ReaderAt
	Size() int64
}

// FS is a read-only file system inside an image. Paths are absolute
// ("/etc/passwd"; "" and "/" name the root) and use '/'. Symlinks in the
// middle of a path are followed within the file system (an absolute target
// starts at its root); the last element is not followed by Stat and ReadDir
// of a symlink is an error. Implementations are safe for concurrent use.
type FS interface {
	// Type returns "ext2", "ext3", "ext4", "fat12", "fat16", "fat32" or "ntfs".
	Type() string
	// Label returns the volume label ("" when none).
	Label() string
	// Warning returns a note about the file system state the reader should
	// see, or "" (an ext4 journal left unreplayed by an unclean shutdown,
	// an NTFS volume marked dirty).
	Warning() string
	// Stat describes the file at path.
	Stat(path string) (Entry, error)
	// ReadDir lists the directory at path, sorted by name, without "." and "..".
	ReadDir(path string) ([]Entry, error)
	// Open opens the regular file at path.
	Open(path string) (File, error)
}

// driver is what each file system implements; fsys turns it into an FS.
// A ref identifies a file to the driver (an inode number, or the location
// of a FAT directory entry) and is only ever passed back to the same driver.
type driver interface {
	typ() string
	label() string
	warning() string
	root() ref
	// list returns the children of the directory ref, without "." and "..".
	list(d ref) ([]ref, error)
	// stat describes ref; Path is filled by the caller.
	stat(r ref) (Entry, error)
	open(r ref) (File, error)
}

// ref is an opaque handle to a file: a driver-defined number and the
// child's name in the directory it was listed from, plus whatever the
// driver keeps to stat it without rereading the directory.
type ref struct {
	name string
	n    uint64
	ent  *Entry // filled by drivers that learn everything from the directory
	aux  uint64 // driver-defined
}

type fsys struct{ d driver }

func (f *fsys) Type() string    { return f.d.typ() }
func (f *fsys) Label() string   { return f.d.label() }
func (f *fsys) Warning() string { return f.d.warning() }

func (f *fsys) Stat(p string) (Entry, error) {
	r, full, err := f.resolve(p, false)
	if err != nil {
		return Entry{}, err
	}
	e, err := f.d.stat(r)
	if err != nil {
		return Entry{}, err
	}
	e.Path, e.Name = full, path.Base(full)
	return e, nil
}

func (f *fsys) ReadDir(p string) ([]Entry, error) {
	r, full, err := f.resolve(p, true)
	if err != nil {
		return nil, err
	}
	e, err := f.d.stat(r)
	if err != nil {
		return nil, err
	}
	if !e.Mode.IsDir() {
		return nil, &fs.PathError{Op: "readdir", Path: full, Err: ErrNotDir}
	}
	kids, err := f.d.list(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", full, err)
	}
	out := make([]Entry, 0, len(kids))
	for _, k := range kids {
		e, err := f.d.stat(k)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path.Join(full, k.name), err)
		}
		e.Name, e.Path = k.name, path.Join(full, k.name)
		out = append(out, e)
	}
	sortEntries(out)
	return out, nil
}

func (f *fsys) Open(p string) (File, error) {
	r, full, err := f.resolve(p, true)
	if err != nil {
		return nil, err
	}
	e, err := f.d.stat(r)
	if err != nil {
		return nil, err
	}
	switch {
	case e.Mode.IsDir():
		return nil, &fs.PathError{Op: "open", Path: full, Err: ErrIsDir}
	case !e.Mode.IsRegular():
		return nil, &fs.PathError{Op: "open", Path: full, Err: ErrNotRegular}
	}
	file, err := f.d.open(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", full, err)
	}
	return file, nil
}

// maxSymlinks bounds the symlinks followed while resolving one path, as
// Linux does (ELOOP after 40).
const maxSymlinks = 40

// resolve walks p from the root. With followLast, a symlink as the last
// element is followed too. It returns the file's ref and its resolved path.
func (f *fsys) resolve(p string, followLast bool) (ref, string, error) {
	orig := p
	todo := splitPath(p)
	cur := f.d.root()
	var stack []ref // ancestors of cur, for ".."
	var names []string
	links := 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		if name == ".." {
			if len(stack) > 0 {
				cur, stack, names = stack[len(stack)-1], stack[:len(stack)-1], names[:len(names)-1]
			}
			continue
		}
		e, err := f.d.stat(cur)
		if err != nil {
			return ref{}, "", err
		}
		if !e.Mode.IsDir() {
			return ref{}, "", &fs.PathError{Op: "lookup", Path: "/" + strings.Join(names, "/"), Err: ErrNotDir}
		}
		kids, err := f.d.list(cur)
		if err != nil {
			return ref{}, "", fmt.Errorf("/%s: %w", strings.Join(names, "/"), err)
		}
		var next *ref
		for i := range kids {
			if kids[i].name == name {
				next = &kids[i]
				break
			}
		}
		if next == nil && (strings.HasPrefix(f.d.typ(), "fat") || f.d.typ() == "ntfs") {
			// FAT names are case-insensitive, and so are NTFS names
			// as Windows looks them up.
			for i := range kids {
				if strings.EqualFold(kids[i].name, name) {
					next = &kids[i]
					break
				}
			}
		}
		if next == nil {
			return ref{}, "", &fs.PathError{Op: "lookup", Path: cleanPath(orig), Err: fs.ErrNotExist}
		}
		if len(todo) > 0 || followLast {
			ne, err := f.d.stat(*next)
			if err != nil {
				return ref{}, "", err
			}
			if ne.Mode&fs.ModeSymlink != 0 {
				if links++; links > maxSymlinks {
					return ref{}, "", &fs.PathError{Op: "lookup", Path: cleanPath(orig), Err: errors.New("too many levels of symbolic links")}
				}
				t := ne.LinkTarget
				if strings.HasPrefix(t, "/") {
					cur, stack, names = f.d.root(), nil, nil
				}
				todo = append(splitPath(t), todo...)
				continue
			}
		}
		stack = append(stack, cur)
		names = append(names, next.name)
		cur = *next
	}
	return cur, "/" + strings.Join(names, "/"), nil
}

func splitPath(p string) []string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		if s != "" && s != "." {
			out = append(out, s)
		}
	}
	return out
}

// cleanPath returns p as an absolute, cleaned path.
func cleanPath(p string) string { return path.Clean("/" + p) }

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
}

// OpenFS detects the file system of partition p of the image r and opens
// it. A partition with no known signature gives ErrUnknownFilesystem, a
// recognised one that cannot be read ErrUnsupportedFilesystem; both
// messages name what was found.
func OpenFS(r io.ReaderAt, p Partition) (FS, error) {
	sr := io.NewSectionReader(r, p.Start, p.Size)
	kind, err := Detect(sr, p.Size)
	if err != nil {
		return nil, err
	}
	var d driver
	switch kind {
	case "ext2", "ext3", "ext4":
		d, err = openExt(sr, p.Size)
	case "fat12", "fat16", "fat32":
		d, err = openFAT(sr, p.Size)
	case "ntfs":
		d, err = openNTFS(sr, p.Size)
	case "":
		return nil, fmt.Errorf("%s: %w (%s)", partName(p), ErrUnknownFilesystem, describeUnknown(sr))
	default:
		return nil, fmt.Errorf("%s holds %s: %w", partName(p), kind, ErrUnsupportedFilesystem)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", partName(p), err)
	}
	return &fsys{d: d}, nil
}

func partName(p Partition) string {
	if p.Number == 0 {
		return "image"
	}
	return fmt.Sprintf("partition %d", p.Number)
}

// Detect returns the file system found at the start of r (size bytes):
// "ext2", "ext3", "ext4", "fat12", "fat16", "fat32", "ntfs" (readable), the
// name of a recognised but unreadable one ("exfat", "xfs", "btrfs", "swap",
// "LUKS", "LVM2", "squashfs", "iso9660"), or "" when nothing is recognised.
func Detect(r io.ReaderAt, size int64) (string, error) {
	head := make([]byte, min(size, 68<<10))
	n, err := r.ReadAt(head, 0)
	if n < len(head) && err != nil && err != io.EOF {
		return "", fmt.Errorf("read file system header: %w", err)
	}
	head = head[:n]
	at := func(off int, s string) bool {
		return off+len(s) <= len(head) && string(head[off:off+len(s)]) == s
	}
	switch {
	case len(head) >= 2048 && binary.LittleEndian.Uint16(head[1024+0x38:]) == 0xEF53:
		return extKind(head[1024:2048]), nil
	case at(3, "NTFS    "):
		return "ntfs", nil
	case at(3, "EXFAT   "):
		return "exfat", nil
	case at(0, "XFSB"):
		return "xfs", nil
	case at(0x10040, "_BHRfS_M"):
		return "btrfs", nil
	case at(0, "LUKS\xba\xbe"):
		return "LUKS", nil
	case at(536, "LVM2 001"):
		return "LVM2", nil
	case at(0, "hsqs"):
		return "squashfs", nil
	case at(0x8001, "CD001"):
		return "iso9660", nil
	case at(4086, "SWAPSPACE2"), at(4086, "SWAP-SPACE"):
		return "swap", nil
	}
	if len(head) >= 512 {
		if b, err := parseFATBoot(head[:512]); err == nil {
			return b.kind, nil
		}
	}
	return "", nil
}

// describeUnknown says what the first bytes of an unknown partition look
// like, for the error message.
func describeUnknown(r io.ReaderAt) string {
	b := make([]byte, 16)
	n, _ := r.ReadAt(b, 0)
	b = b[:n]
	if n == 0 {
		return "empty"
	}
	zero := make([]byte, 4096)
	if m, _ := r.ReadAt(zero, 0); m > 0 && allZero(zero[:m]) {
		return "the first 4 KiB are zeros"
	}
	return fmt.Sprintf("no known signature; first bytes % x", b)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
