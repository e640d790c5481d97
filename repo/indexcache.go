package repo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/pack"
)

// The local index.
//
// With OpenOptions.IndexDir, LoadIndex keeps the index in files of that
// local folder (index.NewInDir) rather than in the heap, and leaves a copy
// of what it loaded there (index.Persist, file indexFileName) for the next
// Open: that one maps it and loads only the index files written since. The
// copy's tag lists the index files it was built from and their packs; a
// copy that names a file the repository no longer holds (a prune or repair
// replaced it) is stale and is rebuilt from the repository. The copy holds
// only blobs of index files, never packs a session uploaded but had not
// indexed yet, so it never claims more than the repository's index files
// do. Any trouble with the folder costs only the copy: the index is then
// built as without it.
const (
	// indexFileName is the local index's file in OpenOptions.IndexDir.
	indexFileName = "index-v1"

	// persistMinBlobs and persistRatio decide when LoadIndex writes the
	// local index anew: when the blobs it loaded from index files on top
	// of the mapped copy are at least persistMinBlobs and 1/persistRatio
	// of the copy. Below that, loading them again next time costs less
	// than rewriting the copy (43 bytes a blob); a nightly image backup
	// adds ~1% of a repository's blobs, so the copy is rewritten about
	// once a week.
	persistMinBlobs = 64 << 10
	persistRatio    = 8
)

// loadIndexLocal is LoadIndex with a local index in dir: it maps the copy
// there if it is current, loads the index files it lacks, and writes a new
// copy when that is worthwhile. A missing, damaged or stale copy is not an
// error; the index is then built from the repository's index files.
func (r *Repository) loadIndexLocal(ctx context.Context, dir string, names []string) error {
	path := filepath.Join(dir, indexFileName)
	missing, base := names, 0
	if x, files, ok := openLocalIndex(path, dir, names); ok {
		_ = r.idx.Close()
		r.idx = x
		for name, ids := range files {
			r.idxFiles.recordIDs(name, ids)
		}
		missing = slices.DeleteFunc(slices.Clone(names), func(n string) bool { _, ok := files[n]; return ok })
		base = x.Len()
	}
	if err := r.loadIndexFiles(ctx, missing); err != nil {
		return err
	}
	if added := r.idx.Len() - base; added > 0 && (base == 0 || added >= max(persistMinBlobs, base/persistRatio)) {
		// A failed write leaves the index as it was; the next Open just
		// loads more index files.
		_ = r.idx.Persist(path, encodeIndexTag(r.idxFiles.snapshot()))
	}
	return nil
}

// useIndexDir makes the repository keep its index in files in dir, unless
// dir is "" or cannot be created: the local index saves memory and time,
// and without it the index is built on the heap as with --no-cache. It is
// called before the index is used.
func (r *Repository) useIndexDir(dir string) {
	if dir == "" || os.MkdirAll(dir, 0o700) != nil {
		return
	}
	removeStaleTemps(dir)
	r.indexDir = dir
	r.idx = index.NewInDir(dir)
}

// staleTempAge is how old a temporary file in the local index folder must
// be before LoadIndex deletes it: a process writes one for at most minutes
// (a spill or a Persist of a few GiB) and unlinks or renames it at once, so
// a day-old one was left by a crash.
const staleTempAge = 24 * time.Hour

// removeStaleTemps deletes the temporary files a crashed process left in
// the local index folder dir (index.NewInDir's spills, Persist's copies).
func removeStaleTemps(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.Contains(e.Name(), ".tmp") {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTempAge {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// openLocalIndex maps the local index at path and returns it with the index
// files it was built from, if every one of them is among names.
func openLocalIndex(path, dir string, names []string) (*index.Index, map[string][]pack.ID, bool) {
	x, tag, err := index.OpenFile(path, dir)
	if err != nil {
		if errors.Is(err, index.ErrBadFile) {
			_ = os.Remove(path)
		}
		return nil, nil, false
	}
	files, err := decodeIndexTag(tag)
	current := make(map[string]struct{}, len(names))
	for _, n := range names {
		current[n] = struct{}{}
	}
	for name := range files {
		if _, ok := current[name]; !ok {
			err = fmt.Errorf("index file %s is gone", name)
			break
		}
	}
	if err != nil {
		x.Close()
		return nil, nil, false
	}
	return x, files, true
}

// encodeIndexTag encodes the index files of a local index and their packs:
//
//	uvarint count, then per file: uvarint name length, name,
//	uvarint pack count, pack IDs (32 bytes each)
func encodeIndexTag(files map[string][]pack.ID) []byte {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	b := binary.AppendUvarint(nil, uint64(len(names)))
	for _, n := range names {
		b = binary.AppendUvarint(b, uint64(len(n)))
		b = append(b, n...)
		b = binary.AppendUvarint(b, uint64(len(files[n])))
		for _, id := range files[n] {
			b = append(b, id[:]...)
		}
	}
	return b
}

// decodeIndexTag decodes what encodeIndexTag wrote. The tag comes from a
// local file, so every length is checked before it is used.
func decodeIndexTag(b []byte) (map[string][]pack.ID, error) {
	errBad := errors.New("repo: local index: malformed list of index files")
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	count, ok := next()
	if !ok || count > uint64(len(b)) {
		return nil, errBad
	}
	files := make(map[string][]pack.ID, count)
	for range count {
		l, ok := next()
		if !ok || l > uint64(len(b)) {
			return nil, errBad
		}
		name := string(b[:l])
		b = b[l:]
		np, ok := next()
		if !ok || np > uint64(len(b))/uint64(len(pack.ID{})) {
			return nil, errBad
		}
		ids := make([]pack.ID, np)
		for i := range ids {
			b = b[copy(ids[i][:], b):]
		}
		files[name] = ids
	}
	if len(b) != 0 {
		return nil, errBad
	}
	return files, nil
}
