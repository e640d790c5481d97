// Package backend defines the storage contract of an imago repository and the
// names of the files in it. Implementations live in sub-packages (local, mem,
// and later sftp, s3) together with stackable wrappers; backendtest holds the
// conformance suite every implementation and wrapper must pass.
package backend

import (
	"context"
	"errors"
	"io"
)

// FileType is the kind of a file in the repository; its value is the name of
// the folder that holds such files.
type FileType string

// The file types of a repository.
const (
	Config   FileType = "config"    // the single config file (Name is "")
	Key      FileType = "keys"      // key files, one per password
	Pack     FileType = "data"      // packs, sharded by the first two hex digits of their name
	Index    FileType = "index"     // index files
	Snapshot FileType = "snapshots" // snapshot files
	Lock     FileType = "locks"     // lock files
)

// FileTypes lists every file type, config first.
var FileTypes = []FileType{Config, Key, Pack, Index, Snapshot, Lock}

// Handle names one file in a repository. For Config, Name is empty.
type Handle struct {
	Type FileType
	Name string
}

// String returns a readable path-like form, e.g. "data/0a1b…".
func (h Handle) String() string {
	if h.Type == Config {
		return "config"
	}
	return string(h.Type) + "/" + h.Name
}

// FileInfo describes a stored file.
type FileInfo struct {
	Name string
	Size int64
}

// ErrNotExist is returned (possibly wrapped) when a file does not exist.
var ErrNotExist = errors.New("file does not exist")

// Backend stores the files of one repository. All methods are safe for
// concurrent use and take a context first; a cancelled context ends the call
// with an error wrapping ctx.Err().
type Backend interface {
	// Location returns a human-readable location, e.g. "/srv/repo".
	Location() string

	// Save stores size bytes read from rd under h. The file appears
	// atomically: a reader sees either no file or the whole file, also after
	// a crash. Saving a name that exists replaces it. Save may read rd more
	// than once (retries), always from offset 0; it does not keep rd after
	// it returns. A failed Save (rd yields fewer than size bytes or fails,
	// the disk is full, ctx is cancelled) never leaves a partial or
	// temporary file: h keeps its earlier content, if any, unless the error
	// came after the complete new file was in place (a failed folder
	// sync). An invalid handle (see Handle.Validate) gives an error wrapping
	// ErrInvalidHandle.
	Save(ctx context.Context, h Handle, rd io.ReaderAt, size int64) error

	// Load calls fn with a reader for length bytes of h starting at offset
	// (length 0: up to the end). The reader is valid only inside fn and is
	// closed by Load; fn runs on the calling goroutine. A missing file gives
	// an error wrapping ErrNotExist. A file shorter than offset+length gives
	// an error (never short data silently); a reader that ends early
	// returns io.ErrUnexpectedEOF. If fn returns an error, Load returns it
	// unchanged.
	//
	// Wrappers that retry (package retry) may call fn more than once: fn
	// must be safe to re-call, each call starting over and discarding what
	// an earlier call consumed. Load is retried after fn ran only when fn's
	// error wraps a TransientError, so a backend whose reader can fail
	// transiently (a dropped connection) should wrap such read errors in a
	// TransientError, and fn should pass them on wrapped with %w.
	Load(ctx context.Context, h Handle, length int, offset int64, fn func(rd io.Reader) error) error

	// Stat returns the size of h, or an error wrapping ErrNotExist.
	Stat(ctx context.Context, h Handle) (FileInfo, error)

	// List calls fn for every file of type t, in no particular order, on
	// the calling goroutine. For Config, fn sees the config file (Name "")
	// if it exists. Temporary files of unfinished saves are never listed.
	// An error from fn stops the listing and is returned unchanged. Listing
	// a type with no files (or no folder yet) is not an error. A retrying
	// wrapper retries List only while fn has not been called yet.
	List(ctx context.Context, t FileType, fn func(FileInfo) error) error

	// Remove deletes h. Removing a missing file gives an error wrapping
	// ErrNotExist. Behind a retrying wrapper, a Remove whose first attempt
	// failed transiently may report ErrNotExist if that attempt did in fact
	// remove the file.
	Remove(ctx context.Context, h Handle) error

	// Close releases connections; the Backend is unusable afterwards.
	Close() error
}

// LoadAll reads the whole file h into buf (reused when large enough) and
// returns it. Its callback starts over at buf[:0], so it is safe to re-call
// as Load's contract requires.
func LoadAll(ctx context.Context, be Backend, h Handle, buf []byte) ([]byte, error) {
	err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := rd.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	})
	return buf, err
}

// CallEach calls fn for every entry of list in order, stopping at the first
// error of fn or of ctx: the end of a List implementation that collected its
// listing first.
func CallEach(ctx context.Context, list []FileInfo, fn func(FileInfo) error) error {
	for _, fi := range list {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}
