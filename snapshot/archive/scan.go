package archive

import (
	"context"

	"github.com/imagobackup/imago/snapshot"
	"golang.org/x/sys/unix"
)

// Scan counts the regular files and their bytes that Run with the same
// paths and options will process, so that a caller can show an ETA. It
// applies the same exclusions, does not look at a parent, skips what it
// cannot read without reporting it, and may run concurrently with Run. A
// path that does not exist is an error, as for Run.
func Scan(ctx context.Context, paths []string, opts Options) (files, bytes int64, err error) {
	a := newArchiver(nil, nil, opts)
	root, err := a.resolve(paths)
	if err != nil {
		return 0, 0, err
	}
	var sc scanCount
	err = a.scanTargets(ctx, root, &sc)
	return sc.files, sc.bytes, err
}

type scanCount struct{ files, bytes int64 }

func (a *archiver) scanTargets(ctx context.Context, t *target, sc *scanCount) error {
	if t.selected {
		if t.path == "/" {
			return a.scanDir(ctx, "/", uint64(t.st.Dev), sc)
		}
		return a.scanEntry(ctx, t.path, &t.st, uint64(t.st.Dev), sc)
	}
	for _, c := range t.children {
		if err := a.scanTargets(ctx, c, sc); err != nil {
			return err
		}
	}
	return nil
}

// scanEntry counts the entry at path with the rules of archiver.entry.
func (a *archiver) scanEntry(ctx context.Context, path string, st *unix.Stat_t, fsDev uint64, sc *scanCount) error {
	typ := nodeType(st.Mode)
	if a.opts.Exclude.Match(path, typ == snapshot.TypeDir) &&
		(typ != snapshot.TypeDir || !a.opts.Exclude.ChildMayReinclude(path)) {
		return nil
	}
	switch typ {
	case snapshot.TypeFile:
		sc.files++
		sc.bytes += st.Size
	case snapshot.TypeDir:
		cross, dev := a.crossesDevice(path, st, fsDev)
		if cross {
			return nil
		}
		return a.scanDir(ctx, path, dev, sc)
	}
	return nil
}

func (a *archiver) scanDir(ctx context.Context, path string, fsDev uint64, sc *scanCount) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	names, err := a.readDirNames(path)
	if err != nil || a.excludedByPresence(names) {
		return nil
	}
	for _, name := range names {
		p := joinPath(path, name)
		var st unix.Stat_t
		if err := a.lstat(p, &st); err != nil {
			continue // Run reports it
		}
		if err := a.scanEntry(ctx, p, &st, fsDev, sc); err != nil {
			return err
		}
	}
	return nil
}
