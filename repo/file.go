package repo

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"

	"github.com/imagobackup/imago/repo/backend"
)

// MaxFileSize bounds the plaintext of a sealed whole file (snapshot, index
// file, lock) and so the memory LoadFile may allocate for a hostile one.
// Writers keep far below it: an index file lists at most indexMaxBlobs
// blobs, about 3 MiB.
const MaxFileSize = 256 * miB

// Codecs of a sealed file's payload. They are stored on disk: never
// renumber.
const (
	fileCodecNone byte = 0
	fileCodecZstd byte = 1
)

// fileADPrefix starts the associated data of a sealed file of version 1; the
// file type follows, so a snapshot cannot be passed off as an index file.
const fileADPrefix = "imago file v1 "

// errNameMismatch reports a stored file whose bytes no longer hash to its
// name: it was damaged or replaced.
var errNameMismatch = errors.New("content does not match its name (damaged or replaced)")

// fileEncoder compresses sealed files. EncodeAll is safe for concurrent use;
// it keeps one state of ~3.5 MiB (a 1 MiB window with low-memory history,
// and its match tables), so concurrent calls take turns: sealed files are
// few and small (an index file is at most ~3 MiB). With GOMAXPROCS states
// and the default 8 MiB window, each state kept a 16 MiB history once it
// had compressed an index file: 32 MiB of a 2-core backup's heap.
var fileEncoder = sync.OnceValue(func() *zstd.Encoder {
	e, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(1<<20),
		zstd.WithLowerEncoderMem(true),
		zstd.WithEncoderCRC(false), // the seal authenticates every byte
	)
	if err != nil {
		panic(err) // unreachable: the options are constant and valid
	}
	return e
})

// fileDecoder decompresses sealed files, refusing output beyond MaxFileSize.
var fileDecoder = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(MaxFileSize),
	)
	if err != nil {
		panic(err) // unreachable: the options are constant and valid
	}
	return d
})

// SaveFile stores plaintext as a sealed file of type t (snapshots, index
// files, locks) and returns its name: codec byte ‖ payload (zstd when that
// is smaller) is sealed with "imago file v1 " + t as associated data, and
// the name is the hex BLAKE3-256 of the stored bytes.
func (r *Repository) SaveFile(ctx context.Context, t backend.FileType, plaintext []byte) (string, error) {
	if len(plaintext) > MaxFileSize {
		return "", fmt.Errorf("repo: save %s file: %d bytes, more than %d", t, len(plaintext), MaxFileSize)
	}
	box := make([]byte, 1, 1+len(plaintext)/2)
	box[0] = fileCodecZstd
	box = fileEncoder().EncodeAll(plaintext, box)
	if len(box)-1 >= len(plaintext) {
		box = append(box[:0], fileCodecNone)
		box = append(box, plaintext...)
	}
	stored := r.key.Seal(nil, box, fileAD(t))
	name := hashName(stored)
	if err := r.saveBytes(ctx, backend.Handle{Type: t, Name: name}, stored); err != nil {
		return "", fmt.Errorf("repo: save %s: %w", shortName(t, name), err)
	}
	return name, nil
}

// LoadFile loads the sealed file t/name and returns its plaintext. It checks
// that the stored bytes hash to name, opens them and decompresses at most
// MaxFileSize bytes; every failure is an error naming the file.
func (r *Repository) LoadFile(ctx context.Context, t backend.FileType, name string) ([]byte, error) {
	label := shortName(t, name)
	stored, err := loadBounded(ctx, r.be, backend.Handle{Type: t, Name: name}, MaxFileSize+1+int64(r.key.Overhead()))
	r.stats.bytesDownloaded.Add(int64(len(stored)))
	if err != nil {
		return nil, fmt.Errorf("repo: load %s: %w", label, err)
	}
	if hashName(stored) != name {
		return nil, fmt.Errorf("repo: load %s: %w", label, errNameMismatch)
	}
	box, err := r.key.Open(nil, stored, fileAD(t))
	if err != nil {
		return nil, fmt.Errorf("repo: load %s: %w", label, err)
	}
	if len(box) == 0 {
		return nil, fmt.Errorf("repo: load %s: missing codec byte", label)
	}
	switch box[0] {
	case fileCodecNone:
		return box[1:], nil
	case fileCodecZstd:
		plain, err := fileDecoder().DecodeAll(box[1:], nil)
		if err != nil {
			return nil, fmt.Errorf("repo: load %s: decompress: %w", label, err)
		}
		return plain, nil
	}
	return nil, fmt.Errorf("repo: load %s: unknown codec %d", label, box[0])
}

// ListFiles calls fn with the name and size of every file of type t, in no
// particular order, on the calling goroutine. An error from fn stops the
// listing and is returned unchanged.
func (r *Repository) ListFiles(ctx context.Context, t backend.FileType, fn func(name string, size int64) error) error {
	return r.be.List(ctx, t, func(fi backend.FileInfo) error { return fn(fi.Name, fi.Size) })
}

// RemoveFile removes the file t/name. A missing file gives an error wrapping
// backend.ErrNotExist.
func (r *Repository) RemoveFile(ctx context.Context, t backend.FileType, name string) error {
	if err := r.be.Remove(ctx, backend.Handle{Type: t, Name: name}); err != nil {
		return fmt.Errorf("repo: remove %s: %w", shortName(t, name), err)
	}
	return nil
}

// FindFile returns the name of the only file of type t whose name starts
// with prefix. No match gives an error wrapping backend.ErrNotExist; more
// than one, an error saying how many match.
func (r *Repository) FindFile(ctx context.Context, t backend.FileType, prefix string) (string, error) {
	var match string
	n := 0
	err := r.be.List(ctx, t, func(fi backend.FileInfo) error {
		if strings.HasPrefix(fi.Name, prefix) {
			match = fi.Name
			n++
		}
		return nil
	})
	switch {
	case err != nil:
		return "", fmt.Errorf("repo: find %s %q: %w", t, prefix, err)
	case n == 0:
		return "", fmt.Errorf("repo: find %s %q: no match: %w", t, prefix, backend.ErrNotExist)
	case n > 1:
		return "", fmt.Errorf("repo: find %s %q: prefix is ambiguous: %d files match", t, prefix, n)
	}
	return match, nil
}

// fileAD returns the associated data of a sealed file of type t.
func fileAD(t backend.FileType) []byte { return []byte(fileADPrefix + string(t)) }

// hashName returns the name of a file with content b: its unkeyed
// BLAKE3-256 in hex.
func hashName(b []byte) string {
	sum := blake3.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// shortName returns "type/" and the first 8 characters of name, the form
// errors use to name files.
func shortName(t backend.FileType, name string) string {
	if t == backend.Config {
		return "config"
	}
	if len(name) > 8 {
		name = name[:8]
	}
	return string(t) + "/" + name
}

// saveBytes saves b under h and counts it as uploaded.
func (r *Repository) saveBytes(ctx context.Context, h backend.Handle, b []byte) error {
	if err := saveBytes(ctx, r.be, h, b); err != nil {
		return err
	}
	r.stats.bytesUploaded.Add(int64(len(b)))
	return nil
}

// saveBytes saves b under h.
func saveBytes(ctx context.Context, be backend.Backend, h backend.Handle, b []byte) error {
	return be.Save(ctx, h, bytes.NewReader(b), int64(len(b)))
}

// loadBounded loads all of h, refusing a file longer than limit bytes before
// reading more than limit+1 of them.
func loadBounded(ctx context.Context, be backend.Backend, h backend.Handle, limit int64) ([]byte, error) {
	var buf []byte
	err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		var b bytes.Buffer
		n, err := b.ReadFrom(io.LimitReader(rd, limit+1))
		if err != nil {
			return err
		}
		if n > limit {
			return fmt.Errorf("file longer than the limit of %d bytes", limit)
		}
		buf = b.Bytes()
		return nil
	})
	return buf, err
}
