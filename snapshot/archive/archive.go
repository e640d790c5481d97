package archive

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// archiver holds the state of one Run (or Scan, which uses only the walk
// helpers).
type archiver struct {
	opts    Options
	loader  snapshot.ChunkLoader
	count   *counter // every blob is saved through it
	saver   *saver
	workers int
	names   nameCache
	links   linkTable
	readers chan *reader // free readers, at most workers
	stats   stats

	// files runs the file readers, at most workers at a time. It is set
	// before the walk starts.
	files *errgroup.Group

	// given holds every path given to Run, also those inside another
	// given path: with OneFileSystem, a given path on another device is
	// still backed up (like restic with "/ /boot").
	given map[string]bool

	// root is the root tree, set by the goroutine that completes it.
	root []chunk.ID

	errMu sync.Mutex
	// errors and warnings are guarded by errMu, which also serializes
	// calls to opts.OnError.
	errors, warnings int
}

// stats are the summary counters, updated by the walker and the readers.
type stats struct {
	filesNew, filesChanged, filesUnchanged atomic.Int64
	dirsNew, dirsChanged, dirsUnchanged    atomic.Int64
	filesUnreadable                        atomic.Int64
	files, bytes                           atomic.Int64
	bytesRead, bytesHoles, bytesReused     atomic.Int64
}

func newArchiver(s snapshot.ChunkSaver, l snapshot.ChunkLoader, opts Options) *archiver {
	a := &archiver{opts: opts, loader: l, workers: opts.Workers}
	if a.workers <= 0 {
		a.workers = runtime.GOMAXPROCS(0)
	}
	a.readers = make(chan *reader, a.workers)
	if s != nil {
		a.count = &counter{s: s}
		a.saver = newSaver(a.count)
	}
	return a
}

// Run backs up paths and returns the root tree of the new snapshot with its
// summary. Each path is made absolute and cleaned; a path that does not
// exist is an error before anything is saved. Entries that cannot be read
// are reported to opts.OnError and left out. An error of the repository
// (from s or l) or of ctx ends the run and is returned.
func Run(ctx context.Context, s snapshot.ChunkSaver, l snapshot.ChunkLoader, paths []string, opts Options) (*Result, error) {
	start := time.Now()
	if err := opts.Params.Validate(); err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	a := newArchiver(s, l, opts)
	targets, err := a.resolve(paths)
	if err != nil {
		return nil, err
	}
	var prevRoot *snapshot.Tree
	if !opts.Parent.IsNull() {
		if l == nil {
			return nil, errors.New("archive: a parent needs a ChunkLoader")
		}
		prevRoot, err = snapshot.LoadTree(ctx, l, []chunk.ID{opts.Parent})
		if err != nil {
			return nil, fmt.Errorf("archive: load parent tree: %w", err)
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	for range a.workers {
		g.Go(func() error { return a.saver.work(gctx) })
	}
	g.Go(func() error {
		wctx, cancel := context.WithCancel(gctx)
		defer cancel()
		files, fctx := errgroup.WithContext(wctx)
		files.SetLimit(a.workers)
		a.files = files
		werr := a.walkRoot(fctx, targets, prevRoot)
		if werr != nil {
			cancel()
		}
		ferr := files.Wait()
		// Every reader has finished, so nothing submits any more.
		close(a.saver.queue)
		if werr != nil && !errors.Is(werr, context.Canceled) {
			return werr
		}
		if ferr != nil {
			return ferr
		}
		return werr
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if len(a.root) != 1 {
		// Only a root with tens of thousands of top-level names splits.
		return nil, fmt.Errorf("archive: root tree needs %d blobs; back up fewer top-level paths", len(a.root))
	}
	end := time.Now()
	return &Result{
		Tree:     a.root[0],
		Summary:  a.summary(start, end),
		Errors:   a.errors,
		Warnings: a.warnings,
	}, nil
}

// target is a node of the tree of paths to back up: the given paths
// (selected) and the directories above them.
type target struct {
	name     string
	path     string
	children []*target // sorted by name
	selected bool      // a given path: everything below it is backed up
	st       unix.Stat_t
}

// resolve lstats every path and builds the tree of targets. A path inside
// another given path is dropped; duplicates are merged.
func (a *archiver) resolve(paths []string) (*target, error) {
	if len(paths) == 0 {
		return nil, errors.New("archive: no paths to back up")
	}
	root := &target{path: "/"}
	a.given = make(map[string]bool, len(paths))
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		var st unix.Stat_t
		if err := a.lstat(abs, &st); err != nil {
			return nil, fmt.Errorf("archive: %w", &fs.PathError{Op: "lstat", Path: abs, Err: err})
		}
		a.given[abs] = true
		root.insert(abs, &st)
	}
	return root, nil
}

// insert adds the cleaned absolute path p with its lstat result.
func (t *target) insert(p string, st *unix.Stat_t) {
	for _, name := range strings.Split(p, "/") {
		if t.selected {
			return // an ancestor is already backed up whole
		}
		if name == "" {
			continue
		}
		i, found := slices.BinarySearchFunc(t.children, name, func(c *target, n string) int {
			return strings.Compare(c.name, n)
		})
		if !found {
			c := &target{name: name, path: joinPath(t.path, name)}
			t.children = slices.Insert(t.children, i, c)
		}
		t = t.children[i]
	}
	t.selected = true
	t.children = nil
	t.st = *st
}

// crossesDevice reports whether the directory at path with lstat result st
// lies on another file system than fsDev and must not be entered; a path
// given to Run is always entered. It returns the device to use below path.
func (a *archiver) crossesDevice(path string, st *unix.Stat_t, fsDev uint64) (bool, uint64) {
	dev := uint64(st.Dev)
	if !a.opts.OneFileSystem || dev == fsDev {
		return false, fsDev
	}
	if a.given[path] {
		return false, dev
	}
	return true, fsDev
}

// joinPath joins a directory path and an entry name.
func joinPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// lstat calls the test hook or unix.Lstat.
func (a *archiver) lstat(path string, st *unix.Stat_t) error {
	if a.opts.lstat != nil {
		return a.opts.lstat(path, st)
	}
	return unix.Lstat(path, st)
}

// openFile opens path with flag, adding O_NOATIME so that a backup does not
// change access times (it is refused with EPERM for files of other users
// unless we are root; then open without it).
func (a *archiver) openFile(path string, flag int) (*os.File, error) {
	if a.opts.open != nil {
		return a.opts.open(path, flag)
	}
	f, err := os.OpenFile(path, flag|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		f, err = os.OpenFile(path, flag, 0)
	}
	return f, err
}

// readDirNames returns the names in directory path, unsorted.
func (a *archiver) readDirNames(path string) ([]string, error) {
	f, err := a.openFile(path, os.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// excludedByPresence reports whether a directory listing names one of
// opts.ExcludeIfPresent.
func (a *archiver) excludedByPresence(names []string) bool {
	for _, n := range names {
		if slices.Contains(a.opts.ExcludeIfPresent, n) {
			return true
		}
	}
	return false
}

// unreadable reports an entry that is left out of the snapshot.
func (a *archiver) unreadable(path string, err error) {
	a.stats.filesUnreadable.Add(1)
	a.report(path, err, false)
}

// report passes err to OnError and counts it as an error or a warning.
func (a *archiver) report(path string, err error, warning bool) {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == path {
		err = &pathError{op: pe.Op, path: path, err: pe.Err}
	}
	a.errMu.Lock()
	defer a.errMu.Unlock()
	if warning {
		a.warnings++
	} else {
		a.errors++
	}
	if a.opts.OnError != nil {
		a.opts.OnError(path, err)
	}
}
