package restore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/filter"
)

// DefaultWorkers is the number of parallel chunk fetches when
// Options.Workers is not set: enough requests in flight to hide a remote
// backend's latency (4 batches of up to 3 loads), at about 8 × 8 MiB =
// 64 MiB of chunk buffers at most.
const DefaultWorkers = 8

// tempPrefix starts the names of files being restored; a crash leaves only
// names with this prefix behind, never a partial file at a real name.
const tempPrefix = ".imago-restore-"

// ErrVerify is wrapped by the error Run returns when a restored file read
// back from disk differs from the snapshot.
var ErrVerify = errors.New("restored content differs from the snapshot")

// Options configure Run.
type Options struct {
	// Include selects what to restore: a node is restored if Include
	// matches it or one of its parent directories, and the parent
	// directories of restored nodes are created. Nil restores everything.
	Include *filter.Matcher
	// Verify reads every restored file back and compares it with the
	// snapshot before renaming it into place.
	Verify bool
	// Workers bounds, about, the number of chunks fetched at once
	// (DefaultWorkers when zero or negative): chunks are loaded in
	// batches of up to 4 MiB, Workers/2 batches at a time, each with a
	// few loads in flight. Chunk buffers take at most about
	// Workers × 8 MiB.
	Workers int
	// Progress, if not nil, is updated while Run works; another goroutine
	// may read it at any time.
	Progress *Progress
	// OnError, if not nil, is called for each problem that does not stop
	// the restore (for example an extended attribute the target file system
	// does not support, or a device node that cannot be created without
	// privileges). Calls are serialized; they come from Run's goroutines.
	OnError func(path string, err error)
}

// Progress holds counters for a progress display. Totals are set by a first
// walk before anything is written.
type Progress struct {
	// TotalFiles and TotalBytes count the non-directory entries and the
	// content bytes selected for restore.
	TotalFiles atomic.Int64
	TotalBytes atomic.Int64
	// Files counts the non-directory entries restored so far.
	Files atomic.Int64
	// Bytes counts the content bytes restored so far; holes count as
	// restored when they are reached, so Bytes ends at TotalBytes.
	Bytes atomic.Int64
}

// Result summarizes a restore.
type Result struct {
	// Files counts restored non-directory entries: regular files, hard
	// links, symlinks, FIFOs and device nodes.
	Files int64
	// Dirs counts directories created or updated.
	Dirs int64
	// Bytes is the total size of the regular files written (hard links
	// count once).
	Bytes int64
	// Errors counts the problems reported to Options.OnError.
	Errors int
	// VerifiedFiles counts the files read back and found equal to the
	// snapshot (only with Options.Verify).
	VerifiedFiles int
}

// Run restores the snapshot tree root into the directory target, creating
// target if needed. Entries already at the target are replaced.
//
// Run returns a non-nil Result even with an error. The error names the path
// being restored; with a canceled ctx it is ctx.Err().
func Run(ctx context.Context, l snapshot.ChunkLoader, root chunk.ID, target string, opts Options) (*Result, error) {
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	r := &restorer{
		l:      l,
		opts:   opts,
		target: target,
		isRoot: os.Geteuid() == 0,
		links:  make(map[linkKey]string),
	}
	if opts.Progress != nil {
		if err := countSelected(ctx, l, root, opts.Include, opts.Progress); err != nil {
			return r.result(), err
		}
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return r.result(), fmt.Errorf("create target: %w", err)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, opts.Workers/workersPerBatch))
	r.g = g
	w := &walker{l: l, include: opts.Include, enter: r.enter, leave: r.leave}
	walkErr := w.walkTree(gctx, []chunk.ID{root}, "/", false)
	if walkErr == nil {
		r.dispatch(gctx)
	} else {
		r.dropBatch(gctx)
	}
	if err := g.Wait(); err != nil {
		return r.result(), err
	}
	if walkErr != nil {
		return r.result(), walkErr
	}
	if err := ctx.Err(); err != nil {
		return r.result(), err
	}

	for _, hl := range r.hardLinks {
		if err := r.link(hl); err != nil {
			return r.result(), err
		}
	}
	for i := range r.dirs {
		d := &r.dirs[i]
		r.applyMeta(d.path, d.dst, &d.node)
	}
	return r.result(), nil
}

// restorer is the state of one Run.
type restorer struct {
	l      snapshot.ChunkLoader
	opts   Options
	target string
	isRoot bool // lchown is attempted only as root
	g      *errgroup.Group

	// batch is the data extents collected for the next batch, holding
	// batchBytes bytes (see dispatch).
	batch      []batchExtent
	batchBytes uint64

	// links, hardLinks, dirs and batch are used by the walking goroutine
	// only.
	links     map[linkKey]string // first restored link → its destination
	hardLinks []hardLink         // links to create after all files are written
	dirs      []dirMeta          // directories in post-order

	files, dirCount, bytes, verified atomic.Int64

	errMu sync.Mutex // serializes OnError calls and guards errors
	errs  int
}

// hardLink is a link to create from an already restored file.
type hardLink struct {
	path     string // snapshot path of the new link
	old, dst string
}

// dirMeta is what a directory's post-order metadata step needs. It keeps a
// copy of the node without its subtrees, so that the tree blobs can be freed.
type dirMeta struct {
	path, dst string
	node      snapshot.Node
}

func (r *restorer) result() *Result {
	r.errMu.Lock()
	errs := r.errs
	r.errMu.Unlock()
	return &Result{
		Files:         r.files.Load(),
		Dirs:          r.dirCount.Load(),
		Bytes:         r.bytes.Load(),
		Errors:        errs,
		VerifiedFiles: int(r.verified.Load()),
	}
}

// report hands a non-fatal problem to OnError and counts it.
func (r *restorer) report(p string, err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	r.errs++
	if r.opts.OnError != nil {
		r.opts.OnError(p, err)
	}
}

// fileDone counts a restored non-directory entry.
func (r *restorer) fileDone() {
	r.files.Add(1)
	if pr := r.opts.Progress; pr != nil {
		pr.Files.Add(1)
	}
}

// destination returns the local path for snapshot path p.
func (r *restorer) destination(p string) string {
	return filepath.Join(r.target, filepath.FromSlash(p))
}

// enter restores one node in pre-order.
func (r *restorer) enter(ctx context.Context, p string, n *snapshot.Node) error {
	dst := r.destination(p)
	switch n.Type {
	case snapshot.TypeDir:
		if err := makeDir(dst); err != nil {
			return fmt.Errorf("restore %s: %w", p, err)
		}
		r.dirCount.Add(1)
		return nil
	case snapshot.TypeFile, snapshot.TypeImage:
		if key, ok := hardLinkKey(n); ok {
			if old, seen := r.links[key]; seen {
				r.hardLinks = append(r.hardLinks, hardLink{path: p, old: old, dst: dst})
				return nil
			}
			r.links[key] = dst
		}
		return r.restoreFile(ctx, p, dst, n)
	case snapshot.TypeSymlink, snapshot.TypeFIFO, snapshot.TypeBlockDev, snapshot.TypeCharDev:
		return r.restoreSpecial(p, dst, n)
	case snapshot.TypeSocket:
		return nil // a socket is bound by a running program; there is nothing to restore
	}
	r.report(p, fmt.Errorf("unknown node type %d, skipped", n.Type))
	return nil
}

// leave remembers a directory for the post-order metadata step.
func (r *restorer) leave(p string, n *snapshot.Node) {
	d := dirMeta{path: p, dst: r.destination(p), node: *n}
	d.node.Subtrees = nil
	d.node.Content = snapshot.Content{}
	r.dirs = append(r.dirs, d)
}

// makeDir creates directory dst with mode 0700, or makes sure an existing
// one is writable. Another kind of entry at dst is removed; a symlink is never
// followed.
func makeDir(dst string) error {
	err := os.Mkdir(dst, 0o700)
	if err == nil || !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dst)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		// Keep an existing directory's mode while it is writable (always
		// so for root), so that restoring over a live tree such as / does
		// not lock other users out until the directory's metadata is set.
		if unix.Access(dst, unix.W_OK|unix.X_OK) == nil {
			return nil
		}
		return unix.Chmod(dst, uint32(fi.Mode().Perm())|0o700)
	}
	if err := os.Remove(dst); err != nil {
		return err
	}
	return os.Mkdir(dst, 0o700)
}

// restoreSpecial creates a symlink, FIFO or device node under a temporary
// name, applies its metadata, and renames it into place. A node that cannot
// be created (a device node without privileges, a FIFO on a file system
// without them) is reported and skipped.
func (r *restorer) restoreSpecial(p, dst string, n *snapshot.Node) error {
	tmp := tempName(filepath.Dir(dst))
	var err error
	switch n.Type {
	case snapshot.TypeSymlink:
		err = os.Symlink(n.LinkTarget, tmp)
	case snapshot.TypeFIFO:
		err = unix.Mkfifo(tmp, 0o600)
	case snapshot.TypeBlockDev:
		err = unix.Mknod(tmp, unix.S_IFBLK|0o600, int(n.Rdev))
	case snapshot.TypeCharDev:
		err = unix.Mknod(tmp, unix.S_IFCHR|0o600, int(n.Rdev))
	}
	if err != nil {
		r.report(p, fmt.Errorf("create: %w", err))
		return nil
	}
	r.applyMeta(p, tmp, n)
	if err := replace(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("restore %s: %w", p, err)
	}
	r.fileDone()
	return nil
}

// link creates a hard link to an already restored file.
func (r *restorer) link(hl hardLink) error {
	tmp := tempName(filepath.Dir(hl.dst))
	if err := os.Link(hl.old, tmp); err != nil {
		return fmt.Errorf("restore hard link %s: %w", hl.path, err)
	}
	if err := replace(tmp, hl.dst); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("restore hard link %s: %w", hl.path, err)
	}
	// rename(2) does nothing when both names are links of one file, which
	// happens when dst already was a link to the file; drop the extra name.
	if _, err := os.Lstat(tmp); err == nil {
		_ = os.Remove(tmp)
	}
	r.fileDone()
	return nil
}

// replace renames tmp to dst. A directory in the way is removed first, as
// the snapshot says a non-directory belongs at dst.
func replace(tmp, dst string) error {
	err := os.Rename(tmp, dst)
	if err == nil {
		return nil
	}
	fi, lerr := os.Lstat(dst)
	if lerr != nil || !fi.IsDir() {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// tempName returns an unused-looking temporary path in dir. 26 random base32
// characters (130 bits) make a collision with another name negligible;
// creators still use exclusive creation where the call offers it.
func tempName(dir string) string {
	return filepath.Join(dir, tempPrefix+rand.Text())
}

// countSelected walks the restore set and adds its totals to pr.
func countSelected(ctx context.Context, l snapshot.ChunkLoader, root chunk.ID, include *filter.Matcher, pr *Progress) error {
	seen := make(map[linkKey]bool)
	w := &walker{l: l, include: include, enter: func(_ context.Context, _ string, n *snapshot.Node) error {
		switch n.Type {
		case snapshot.TypeSymlink, snapshot.TypeFIFO, snapshot.TypeBlockDev, snapshot.TypeCharDev:
			pr.TotalFiles.Add(1)
		case snapshot.TypeFile, snapshot.TypeImage:
			pr.TotalFiles.Add(1)
			if key, ok := hardLinkKey(n); ok {
				if seen[key] {
					return nil
				}
				seen[key] = true
			}
			pr.TotalBytes.Add(int64(n.Size))
		}
		return nil // directories are not counted, sockets are skipped
	}}
	return w.walkTree(ctx, []chunk.ID{root}, "/", false)
}
