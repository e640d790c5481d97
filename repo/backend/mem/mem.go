package mem

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/imagobackup/imago/repo/backend"
)

// Backend keeps files in memory. It is safe for concurrent use. Stored
// slices are private: Save, Load, Raw and SetRaw copy.
type Backend struct {
	// mu guards files.
	mu    sync.Mutex
	files map[backend.Handle][]byte
}

var _ backend.Backend = (*Backend)(nil)

// New returns an empty in-memory backend.
func New() *Backend {
	return &Backend{files: make(map[backend.Handle][]byte)}
}

// Location returns "mem:" and the address of b, so two in-memory backends
// in one test can be told apart.
func (b *Backend) Location() string { return fmt.Sprintf("mem:%p", b) }

// Save stores a copy of the size bytes of rd under h.
func (b *Backend) Save(ctx context.Context, h backend.Handle, rd io.ReaderAt, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("mem: save %v: negative size %d", h, size)
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(rd, 0, size), buf); err != nil {
		return fmt.Errorf("mem: save %v: read source: %w", h, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	b.files[h] = buf
	b.mu.Unlock()
	return nil
}

// Load calls fn with a reader over a copy of the requested range of h.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if length < 0 || offset < 0 {
		return fmt.Errorf("mem: load %v: negative length %d or offset %d", h, length, offset)
	}
	// Stored slices are never modified in place (Save and SetRaw replace
	// them), so data may be read after the lock is released.
	b.mu.Lock()
	data, exists := b.files[h]
	b.mu.Unlock()
	if !exists {
		return fmt.Errorf("mem: load %v: %w", h, backend.ErrNotExist)
	}
	part, ok := rangeOf(data, length, offset)
	if !ok {
		return fmt.Errorf("mem: load %v: range %d+%d beyond end of %d-byte file", h, offset, length, len(data))
	}
	part = bytes.Clone(part)
	return fn(bytes.NewReader(part))
}

// rangeOf returns length bytes of data at offset (length 0: to the end), and
// false if the range does not lie within data.
func rangeOf(data []byte, length int, offset int64) ([]byte, bool) {
	if offset > int64(len(data)) {
		return nil, false
	}
	rest := data[offset:]
	if length == 0 {
		return rest, true
	}
	if length > len(rest) {
		return nil, false
	}
	return rest[:length], true
}

// Stat returns the size of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, err
	}
	if err := h.Validate(); err != nil {
		return backend.FileInfo{}, err
	}
	b.mu.Lock()
	data, ok := b.files[h]
	b.mu.Unlock()
	if !ok {
		return backend.FileInfo{}, fmt.Errorf("mem: stat %v: %w", h, backend.ErrNotExist)
	}
	return backend.FileInfo{Name: h.Name, Size: int64(len(data))}, nil
}

// List calls fn for every file of type t. It takes a snapshot of the names
// first, so fn may call other methods of b.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !slices.Contains(backend.FileTypes, t) {
		return fmt.Errorf("mem: list %q: %w: unknown file type", t, backend.ErrInvalidHandle)
	}
	var infos []backend.FileInfo
	b.mu.Lock()
	for h, data := range b.files {
		if h.Type == t {
			infos = append(infos, backend.FileInfo{Name: h.Name, Size: int64(len(data))})
		}
	}
	b.mu.Unlock()
	return backend.CallEach(ctx, infos, fn)
}

// Remove deletes h.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return err
	}
	b.mu.Lock()
	_, ok := b.files[h]
	delete(b.files, h)
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("mem: remove %v: %w", h, backend.ErrNotExist)
	}
	return nil
}

// Close does nothing; the files stay readable.
func (b *Backend) Close() error { return nil }

// Raw returns a copy of the bytes stored under h, and whether h exists. It
// is meant for tests.
func (b *Backend) Raw(h backend.Handle) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	data, ok := b.files[h]
	if !ok {
		return nil, false
	}
	return bytes.Clone(data), true
}

// SetRaw stores a copy of data under h without any check, replacing what
// was there. It is meant for tests that damage stored files.
func (b *Backend) SetRaw(h backend.Handle, data []byte) {
	buf := make([]byte, len(data))
	copy(buf, data)
	b.mu.Lock()
	b.files[h] = buf
	b.mu.Unlock()
}
