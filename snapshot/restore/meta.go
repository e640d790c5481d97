package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/imagobackup/imago/snapshot"
)

// applyMeta sets the metadata of n on the entry at name (not following a
// symlink): owner (as root only), mode, extended attributes, then access
// and modification times, last because the other steps change the ctime
// only but a later write would change the mtime. Failures are reported
// under the snapshot path p and do not stop the restore.
func (r *restorer) applyMeta(p, name string, n *snapshot.Node) {
	symlink := n.Type == snapshot.TypeSymlink
	if r.isRoot {
		// Owner before mode: chown clears the setuid and setgid bits.
		if err := unix.Lchown(name, int(n.UID), int(n.GID)); err != nil {
			r.report(p, fmt.Errorf("chown %d:%d: %w", n.UID, n.GID, err))
		}
	}
	if !symlink { // Linux has no mode for symlinks
		if err := unix.Chmod(name, n.Mode&0o7777); err != nil {
			r.report(p, fmt.Errorf("chmod %#o: %w", n.Mode&0o7777, err))
		}
	}
	for _, x := range n.Xattrs {
		if err := unix.Lsetxattr(name, x.Name, x.Value, 0); err != nil {
			r.report(p, fmt.Errorf("set xattr %q: %w", x.Name, err))
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(n.ATime), unix.NsecToTimespec(n.MTime)}
	flags := 0
	if symlink {
		flags = unix.AT_SYMLINK_NOFOLLOW
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, name, ts, flags); err != nil {
		r.report(p, fmt.Errorf("set times: %w", err))
	}
}
