package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/crypto"
)

// maxKeyFileSize bounds a key file read from a backend; a real one is about
// 500 bytes plus host and user names (crypto refuses more than 64 KiB).
const maxKeyFileSize = 64 * kiB

// InitOptions configure a new repository. The zero value is usable: default
// KDF, default compression and pack size, a random polynomial, and no host
// or user recorded in the key file.
type InitOptions struct {
	// KDF are the argon2id parameters of the first key file; zero means
	// crypto.DefaultKDF.
	KDF crypto.KDFParams
	// Compression is the level new blobs are compressed at.
	Compression pack.CompressionLevel
	// PackSize is the pack size in bytes; zero means DefaultPackSize.
	PackSize int
	// Polynomial is the chunker polynomial; zero means a random one.
	Polynomial uint64
	// ImageChunker overrides the image chunk sizes (ImageChunker) when set;
	// bench/ compares settings with it.
	ImageChunker *ChunkerSizes
	// Host and Username are recorded in the key file.
	Host, Username string
	// Now is the clock used for locks; nil means time.Now.
	Now func() time.Time
}

// OpenOptions configure Open.
type OpenOptions struct {
	// NoIndex skips loading the index files. Commands that read no blobs
	// (key, unlock, snapshots) set it; LoadIndex loads it later.
	NoIndex bool
	// Now is the clock used for locks; nil means time.Now.
	Now func() time.Time
	// WrapBackend, if set, is called once the config is open (so the
	// repository ID is known) and before the index is loaded; the
	// repository then uses the backend it returns for everything. The
	// command line wraps remote backends in a local cache keyed by
	// cfg.ID this way.
	WrapBackend func(cfg Config, be backend.Backend) backend.Backend
	// IndexDir, if set, is called once the config is open; when it returns
	// a folder, the index is kept in files there instead of the heap
	// (index.NewInDir), also for commands that build it themselves (check,
	// repair), and LoadIndex keeps a copy of it there between runs. The
	// command line uses <cache folder>/<repository ID>/blobindex.
	IndexDir func(cfg Config) string
}

// Repository is an open repository. All methods are safe for concurrent use,
// except that Flush covers only the SaveChunk calls that returned before it
// was called.
type Repository struct {
	be     backend.Backend
	key    *crypto.Key
	cfg    Config
	hasher *chunk.Hasher
	idx    *index.Index
	// indexDir is the folder of the local index, or "" (OpenOptions.IndexDir).
	indexDir string
	now      func() time.Time
	stats    counters

	// indexLoaded is set once LoadIndex has run.
	indexLoaded atomic.Bool
	// idxFiles lists the index files idx was built from.
	idxFiles indexFiles

	// keyMu guards keyName, the key file this session opened.
	keyMu   sync.Mutex
	keyName string

	session // the write session: packers, uploads, index flushes
}

func newRepository(be backend.Backend, key *crypto.Key, keyName string, cfg Config, now func() time.Time) *Repository {
	if now == nil {
		now = time.Now
	}
	r := &Repository{
		be:      be,
		key:     key,
		cfg:     cfg,
		hasher:  chunk.NewHasher(key.IDKey()),
		idx:     index.New(),
		now:     now,
		keyName: keyName,
	}
	r.session.init()
	return r
}

// Init creates a repository on be, which must not hold one, and returns it
// open. It writes the key file first and the config last, so a crash leaves
// either a repository or no config (a stray key file is harmless: Open
// ignores keys that cannot open the config). An existing config gives
// ErrAlreadyInitialized.
func Init(ctx context.Context, be backend.Backend, password string, opts InitOptions) (*Repository, error) {
	if _, err := be.Stat(ctx, backend.Handle{Type: backend.Config}); err == nil {
		return nil, fmt.Errorf("repo: init %s: %w", be.Location(), ErrAlreadyInitialized)
	} else if !errors.Is(err, backend.ErrNotExist) {
		return nil, fmt.Errorf("repo: init %s: %w", be.Location(), err)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("repo: init: config: %w", err)
	}
	key, err := crypto.NewRandomKey()
	if err != nil {
		return nil, err
	}
	kdf := opts.KDF
	if kdf == (crypto.KDFParams{}) {
		kdf = crypto.DefaultKDF
	}
	keyName, err := saveKeyFile(ctx, be, key, password, kdf, opts.Host, opts.Username)
	if err != nil {
		return nil, fmt.Errorf("repo: init: %w", err)
	}
	sealed, err := sealConfig(key, cfg)
	if err != nil {
		return nil, err
	}
	if err := saveBytes(ctx, be, backend.Handle{Type: backend.Config}, sealed); err != nil {
		return nil, fmt.Errorf("repo: init: save config: %w", err)
	}
	return newRepository(be, key, keyName, cfg, opts.Now), nil
}

// Open opens the repository on be with password. A missing config gives
// ErrNoRepository. Each key file is tried in turn; if none opens with the
// password the error wraps ErrWrongPassword, and also names any key file that
// is damaged (its bytes do not match its name or do not decode). A damaged
// sealed master key cannot be told from a wrong password. A key that opens
// but cannot open the config (damaged config) gives an error naming
// "config". Unless opts.NoIndex is set, all index files are then loaded.
func Open(ctx context.Context, be backend.Backend, password string, opts OpenOptions) (*Repository, error) {
	sealedCfg, err := loadBounded(ctx, be, backend.Handle{Type: backend.Config}, maxConfigSize)
	if errors.Is(err, backend.ErrNotExist) {
		return nil, fmt.Errorf("repo: open %s: %w", be.Location(), ErrNoRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("repo: open %s: load config: %w", be.Location(), err)
	}

	var names []string
	err = be.List(ctx, backend.Key, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repo: open %s: list keys: %w", be.Location(), err)
	}
	slices.Sort(names) // deterministic order, so errors are reproducible

	var damaged, configErr error
	for _, name := range names {
		kf, err := loadKeyFile(ctx, be, name)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			damaged = errors.Join(damaged, err)
			continue
		}
		key, err := kf.Open(password)
		if errors.Is(err, crypto.ErrWrongPassword) {
			continue
		}
		if err != nil {
			damaged = errors.Join(damaged, fmt.Errorf("key file %s: %w", shortName(backend.Key, name), err))
			continue
		}
		cfg, err := openConfig(key, sealedCfg)
		if err != nil {
			// A stray key from a crashed Init opens but holds another
			// master key; keep looking before blaming the config.
			configErr = fmt.Errorf("repo: open %s: config: %w", be.Location(), err)
			continue
		}
		if opts.WrapBackend != nil {
			be = opts.WrapBackend(cfg, be)
		}
		r := newRepository(be, key, name, cfg, opts.Now)
		if opts.IndexDir != nil {
			r.useIndexDir(opts.IndexDir(cfg))
		}
		if !opts.NoIndex {
			if err := r.LoadIndex(ctx); err != nil {
				return nil, err
			}
		}
		return r, nil
	}
	switch {
	case configErr != nil:
		return nil, configErr
	case damaged != nil:
		return nil, fmt.Errorf("repo: open %s: %w; damaged key files: %w", be.Location(), ErrWrongPassword, damaged)
	}
	return nil, fmt.Errorf("repo: open %s: %w", be.Location(), ErrWrongPassword)
}

// Config returns the repository's config.
func (r *Repository) Config() Config { return r.cfg }

// Backend returns the backend the repository is stored on.
func (r *Repository) Backend() backend.Backend { return r.be }

// Index returns the in-memory index of every blob in the loaded index files
// and in the packs this session uploaded.
func (r *Repository) Index() *index.Index { return r.idx }

// HashChunk returns the ID data has in this repository (keyed BLAKE3).
func (r *Repository) HashChunk(data []byte) chunk.ID { return r.hasher.Sum(data) }

// Close stops uploads still running and releases the backend. Call Flush
// first: Close does not write pending packs.
func (r *Repository) Close() error {
	r.cancelUpload()
	return errors.Join(r.idx.Close(), r.be.Close())
}
