package archive

import (
	"errors"
	"os"
	"sync/atomic"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/filter"
	"golang.org/x/sys/unix"
)

// ErrFileChanged is wrapped by the error passed to Options.OnError for a
// file whose size, mtime or ctime changed while it was read. It is a
// warning: the file is stored with the content that was read.
var ErrFileChanged = errors.New("file changed during backup")

// Options configures Run and Scan.
type Options struct {
	// Exclude leaves out every path it matches (and everything below a
	// matched directory, unless a negated pattern re-includes something
	// there). Nil excludes nothing. It also applies to the paths given.
	Exclude *filter.Matcher
	// ExcludeIfPresent leaves out every directory that holds an entry with
	// one of these names (for example ".nobackup" or "CACHEDIR.TAG").
	ExcludeIfPresent []string
	// OneFileSystem keeps the walk on the file system of each path given:
	// a mount point below it is recorded as an empty directory, unless the
	// mount point is itself one of the paths given.
	OneFileSystem bool
	// Parent is the root tree of the parent snapshot, used to skip reading
	// unchanged files. The null ID means no parent.
	Parent chunk.ID
	// Params are the repository's chunker parameters.
	Params chunk.Params
	// Workers is the number of files read concurrently and, separately,
	// the number of chunks saved concurrently. 0 means GOMAXPROCS.
	Workers int
	// OnError is told of every entry that could not be read (it is left
	// out of the snapshot and counted in Result.Errors) and of every file
	// that changed while it was read (the error wraps ErrFileChanged; the
	// file is stored and counted in Result.Warnings). Calls are
	// serialized, so OnError needs no locking. Nil ignores them.
	OnError func(path string, err error)
	// Progress, when not nil, is updated while Run works, for a caller
	// that polls it from another goroutine.
	Progress *Progress

	// Test hooks, set through export_test.go; nil means the real call.
	lstat     func(path string, st *unix.Stat_t) error
	open      func(path string, flag int) (*os.File, error)
	afterRead func(path string)
}

// Result is what Run produced.
type Result struct {
	// Tree is the root tree of the snapshot.
	Tree chunk.ID
	// Summary holds the counters for the snapshot record.
	Summary snapshot.Summary
	// Errors counts entries that could not be read and were left out, or
	// whose extended attributes could not be read.
	Errors int
	// Warnings counts files that changed while they were read.
	Warnings int
}

// Progress holds counters that Run updates atomically and a caller may
// poll concurrently. The zero value is ready to use.
type Progress struct {
	// Files counts regular files done (read, or reused from the parent).
	Files atomic.Int64
	// Bytes counts bytes of file content processed: read, skipped as
	// holes, or reused from the parent. Scan predicts its final value.
	Bytes atomic.Int64
	// BytesRead counts bytes actually read from files.
	BytesRead atomic.Int64

	current atomic.Pointer[string]
}

// Current returns the path of the file most recently started.
func (p *Progress) Current() string {
	if s := p.current.Load(); s != nil {
		return *s
	}
	return ""
}

func (p *Progress) setCurrent(path string) {
	if p != nil {
		p.current.Store(&path)
	}
}

func (p *Progress) fileDone() {
	if p != nil {
		p.Files.Add(1)
	}
}

func (p *Progress) addBytes(processed, read int64) {
	if p != nil {
		p.Bytes.Add(processed)
		p.BytesRead.Add(read)
	}
}
