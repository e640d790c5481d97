package archive

import (
	"bytes"
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/imagobackup/imago/snapshot"
	"golang.org/x/sys/unix"
)

// nodeType maps the file type bits of st_mode to a node type; 0 for a type
// that cannot be stored.
func nodeType(mode uint32) snapshot.NodeType {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return snapshot.TypeFile
	case unix.S_IFDIR:
		return snapshot.TypeDir
	case unix.S_IFLNK:
		return snapshot.TypeSymlink
	case unix.S_IFBLK:
		return snapshot.TypeBlockDev
	case unix.S_IFCHR:
		return snapshot.TypeCharDev
	case unix.S_IFIFO:
		return snapshot.TypeFIFO
	case unix.S_IFSOCK:
		return snapshot.TypeSocket
	}
	return 0
}

// nodeFromStat fills the metadata of a node from an lstat result. Content,
// Subtrees, LinkTarget and Xattrs are left to the caller.
func (a *archiver) nodeFromStat(name string, st *unix.Stat_t) snapshot.Node {
	n := snapshot.Node{
		Name:  name,
		Type:  nodeType(st.Mode),
		Mode:  st.Mode & 0o7777,
		UID:   st.Uid,
		GID:   st.Gid,
		User:  a.names.user(st.Uid),
		Group: a.names.group(st.Gid),
		MTime: st.Mtim.Nano(),
		ATime: st.Atim.Nano(),
		CTime: st.Ctim.Nano(),
		Inode: st.Ino,
		Dev:   uint64(st.Dev),
		Links: uint64(st.Nlink),
	}
	switch n.Type {
	case snapshot.TypeFile:
		n.Size = uint64(st.Size)
	case snapshot.TypeBlockDev, snapshot.TypeCharDev:
		n.Rdev = uint64(st.Rdev)
	}
	return n
}

// readLink returns the raw target of the symlink at path.
func readLink(path string) (string, error) {
	// Most targets are short; PATH_MAX (4096) is the most Linux returns.
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlink(path, buf)
		if err != nil {
			return "", &pathError{"readlink", path, err}
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// readXattrs returns the extended attributes of path (not following a
// symlink), sorted by name. A file system without xattr support has none.
func readXattrs(path string) ([]snapshot.Xattr, error) {
	names, err := listXattrs(path)
	if err != nil || len(names) == 0 {
		return nil, err
	}
	xs := make([]snapshot.Xattr, 0, len(names))
	for _, name := range names {
		v, err := getXattr(path, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, err
		}
		xs = append(xs, snapshot.Xattr{Name: name, Value: v})
	}
	slices.SortFunc(xs, func(a, b snapshot.Xattr) int { return strings.Compare(a.Name, b.Name) })
	return xs, nil
}

func unsupported(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)
}

// listXattrs returns the attribute names of path. The size is asked first;
// ERANGE means the list grew in between, so ask again.
func listXattrs(path string) ([]string, error) {
	for {
		size, err := unix.Llistxattr(path, nil)
		if unsupported(err) {
			return nil, nil
		}
		if err != nil {
			return nil, &pathError{"listxattr", path, err}
		}
		if size == 0 {
			return nil, nil
		}
		buf := make([]byte, size)
		n, err := unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, &pathError{"listxattr", path, err}
		}
		var names []string
		for _, b := range bytes.Split(buf[:n], []byte{0}) {
			if len(b) > 0 {
				names = append(names, string(b))
			}
		}
		return names, nil
	}
}

// getXattr returns the value of one attribute, retrying like listXattrs.
func getXattr(path, name string) ([]byte, error) {
	for {
		size, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				return nil, err
			}
			return nil, &pathError{"getxattr " + name, path, err}
		}
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				return nil, err
			}
			return nil, &pathError{"getxattr " + name, path, err}
		}
		return buf[:n], nil
	}
}

// pathError is an fs.PathError-like error whose message does not repeat
// the path: OnError receives the path separately.
type pathError struct {
	op   string
	path string
	err  error
}

func (e *pathError) Error() string { return e.op + ": " + e.err.Error() }
func (e *pathError) Unwrap() error { return e.err }

// nameCache remembers user and group names by ID; a failed lookup is
// remembered as "".
type nameCache struct {
	mu sync.Mutex
	// The maps are guarded by mu.
	users  map[uint32]string
	groups map[uint32]string
}

func (c *nameCache) user(uid uint32) string {
	return c.lookup(&c.users, uid, func(s string) (string, error) {
		u, err := user.LookupId(s)
		if err != nil {
			return "", err
		}
		return u.Username, nil
	})
}

func (c *nameCache) group(gid uint32) string {
	return c.lookup(&c.groups, gid, func(s string) (string, error) {
		g, err := user.LookupGroupId(s)
		if err != nil {
			return "", err
		}
		return g.Name, nil
	})
}

// lookup returns m[id], calling fn outside the lock on a miss. Two
// goroutines may both look up the same new ID; both get the same answer.
func (c *nameCache) lookup(m *map[uint32]string, id uint32, fn func(string) (string, error)) string {
	c.mu.Lock()
	name, ok := (*m)[id]
	c.mu.Unlock()
	if ok {
		return name
	}
	name, err := fn(strconv.FormatUint(uint64(id), 10))
	if err != nil {
		name = ""
	}
	c.mu.Lock()
	if *m == nil {
		*m = make(map[uint32]string)
	}
	(*m)[id] = name
	c.mu.Unlock()
	return name
}

// errNotRegular is reported for a path that was a regular file when listed
// but is something else when opened.
var errNotRegular = fmt.Errorf("no longer a regular file")
