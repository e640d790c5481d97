package repo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/crypto"
)

// KeyInfo describes one key file, for `imago key list`.
type KeyInfo struct {
	Name     string    // the key file's name: hex BLAKE3 of its bytes
	Current  bool      // whether this session opened the repository with it
	Created  time.Time // when the key file was written
	Host     string    // the host recorded at creation
	Username string    // the user recorded at creation
}

// saveKeyFile seals key with password into a new key file, stores it under
// the hex BLAKE3 of its bytes and returns that name.
func saveKeyFile(ctx context.Context, be backend.Backend, key *crypto.Key, password string, p crypto.KDFParams, host, user string) (string, error) {
	kf, err := crypto.NewKeyFile(key, password, p, host, user)
	if err != nil {
		return "", err
	}
	b, err := crypto.EncodeKeyFile(kf)
	if err != nil {
		return "", err
	}
	name := hashName(b)
	if err := saveBytes(ctx, be, backend.Handle{Type: backend.Key, Name: name}, b); err != nil {
		return "", fmt.Errorf("save key file %s: %w", shortName(backend.Key, name), err)
	}
	return name, nil
}

// loadKeyFile loads the key file name, checks that its bytes match its name
// and decodes it. Errors name the file.
func loadKeyFile(ctx context.Context, be backend.Backend, name string) (*crypto.KeyFile, error) {
	label := shortName(backend.Key, name)
	b, err := loadBounded(ctx, be, backend.Handle{Type: backend.Key, Name: name}, maxKeyFileSize)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", label, err)
	}
	if hashName(b) != name {
		return nil, fmt.Errorf("key file %s: %w", label, errNameMismatch)
	}
	kf, err := crypto.DecodeKeyFile(b)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", label, err)
	}
	return kf, nil
}

// currentKey returns the name of the key file this session opened.
func (r *Repository) currentKey() string {
	r.keyMu.Lock()
	defer r.keyMu.Unlock()
	return r.keyName
}

// AddKey stores a new key file that opens the repository with password and
// returns its name. host and user are recorded in it.
func (r *Repository) AddKey(ctx context.Context, password string, p crypto.KDFParams, host, user string) (string, error) {
	name, err := saveKeyFile(ctx, r.be, r.key, password, p, host, user)
	if err != nil {
		return "", fmt.Errorf("repo: add key: %w", err)
	}
	return name, nil
}

// RemoveKey removes the key file named name or by a unique prefix of its
// name. It refuses the key this session opened the repository with, and the
// last key, either of which would lock everyone out.
func (r *Repository) RemoveKey(ctx context.Context, name string) error {
	full, err := r.FindFile(ctx, backend.Key, name)
	if err != nil {
		return fmt.Errorf("repo: remove key: %w", err)
	}
	if full == r.currentKey() {
		return fmt.Errorf("repo: remove key %s: it is the key in use; open the repository with another password first", shortName(backend.Key, full))
	}
	n := 0
	if err := r.be.List(ctx, backend.Key, func(backend.FileInfo) error { n++; return nil }); err != nil {
		return fmt.Errorf("repo: remove key: list keys: %w", err)
	}
	if n <= 1 {
		return fmt.Errorf("repo: remove key %s: it is the last key", shortName(backend.Key, full))
	}
	if err := r.be.Remove(ctx, backend.Handle{Type: backend.Key, Name: full}); err != nil {
		return fmt.Errorf("repo: remove key %s: %w", shortName(backend.Key, full), err)
	}
	return nil
}

// ListKeys returns every key file, sorted by creation time. A damaged key
// file gives an error naming it.
func (r *Repository) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	var names []string
	err := r.be.List(ctx, backend.Key, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repo: list keys: %w", err)
	}
	current := r.currentKey()
	infos := make([]KeyInfo, 0, len(names))
	for _, name := range names {
		kf, err := loadKeyFile(ctx, r.be, name)
		if errors.Is(err, backend.ErrNotExist) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("repo: list keys: %w", err)
		}
		infos = append(infos, KeyInfo{
			Name:     name,
			Current:  name == current,
			Created:  kf.Created,
			Host:     kf.Host,
			Username: kf.Username,
		})
	}
	slices.SortFunc(infos, func(a, b KeyInfo) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return infos, nil
}

// ChangePassword replaces the key file in use by one for newPassword: it
// adds the new key file (keeping the old one's host and user), then removes
// the old one. If the removal fails, both passwords work and the error says
// so.
func (r *Repository) ChangePassword(ctx context.Context, newPassword string, p crypto.KDFParams) error {
	old := r.currentKey()
	kf, err := loadKeyFile(ctx, r.be, old)
	if err != nil {
		return fmt.Errorf("repo: change password: %w", err)
	}
	name, err := saveKeyFile(ctx, r.be, r.key, newPassword, p, kf.Host, kf.Username)
	if err != nil {
		return fmt.Errorf("repo: change password: %w", err)
	}
	r.keyMu.Lock()
	r.keyName = name
	r.keyMu.Unlock()
	if err := r.be.Remove(ctx, backend.Handle{Type: backend.Key, Name: old}); err != nil {
		return fmt.Errorf("repo: change password: new key %s added, but removing the old key %s failed: %w",
			shortName(backend.Key, name), shortName(backend.Key, old), err)
	}
	return nil
}
