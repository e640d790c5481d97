package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/cache"
	"github.com/imagobackup/imago/repo/backend/location"
	"github.com/imagobackup/imago/repo/crypto"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// globalOptions holds the flags every command shares and the process's
// standard streams (replaceable in tests).
type globalOptions struct {
	repo            string
	passwordFile    string
	passwordCommand string
	json            bool
	quiet           bool
	verbose         int
	cacheDir        string
	noCache         bool
	noLock          bool
	retryLock       time.Duration

	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func newRootCommand(g *globalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:   "imago",
		Short: "Deduplicating, encrypted backups of file trees and whole disks",
		Long: `imago backs up file trees and whole disks (block devices, raw image files)
into an encrypted, deduplicating repository. Each snapshot is complete, yet
costs only what changed since the last one.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	f := root.PersistentFlags()
	f.StringVarP(&g.repo, "repo", "r", os.Getenv("IMAGO_REPOSITORY"), "repository `location` (env IMAGO_REPOSITORY)")
	f.StringVar(&g.passwordFile, "password-file", os.Getenv("IMAGO_PASSWORD_FILE"), "read the password from `file` (env IMAGO_PASSWORD_FILE)")
	f.StringVar(&g.passwordCommand, "password-command", os.Getenv("IMAGO_PASSWORD_COMMAND"), "run `command` and use its output as the password (env IMAGO_PASSWORD_COMMAND)")
	f.BoolVar(&g.json, "json", false, "print machine-readable JSON")
	f.BoolVarP(&g.quiet, "quiet", "q", false, "print only errors")
	f.CountVarP(&g.verbose, "verbose", "v", "print more (repeat for even more)")
	f.StringVar(&g.cacheDir, "cache-dir", os.Getenv("IMAGO_CACHE_DIR"), "local cache `directory` for remote repositories (env IMAGO_CACHE_DIR)")
	f.BoolVar(&g.noCache, "no-cache", false, "do not use a local cache")
	f.StringArrayVarP(&backendOptions, "option", "o", nil, "backend option `key=value`, e.g. s3.region=eu-west-1 or sftp.connections=8 (repeatable)")
	f.BoolVar(&g.noLock, "no-lock", false, "do not lock the repository (read-only commands only)")
	f.DurationVar(&g.retryLock, "retry-lock", 0, "wait up to `duration` for a locked repository")

	root.AddCommand(
		newInitCommand(g),
		newBackupCommand(g),
		newSnapshotsCommand(g),
		newLsCommand(g),
		newRestoreCommand(g),
		newDumpCommand(g),
		newCatCommand(g),
		newKeyCommand(g),
		newUnlockCommand(g),
		newVersionCommand(g),
	)
	for _, newCmd := range moreCommands {
		root.AddCommand(newCmd(g))
	}
	return root
}

// moreCommands holds constructors of commands that register themselves from
// their own file with an init function (one cmd_<verb>.go per command).
var moreCommands []func(*globalOptions) *cobra.Command

// printf writes a human message to stdout unless --quiet or --json.
func (g *globalOptions) printf(format string, args ...any) {
	if g.quiet || g.json {
		return
	}
	fmt.Fprintf(g.stdout, format, args...)
}

// verbosef writes a message when -v was given at least level times.
func (g *globalOptions) verbosef(level int, format string, args ...any) {
	if g.verbose < level || g.json || g.quiet {
		return
	}
	fmt.Fprintf(g.stdout, format, args...)
}

// warnf writes a warning to stderr (also with --json, where stdout is data).
func (g *globalOptions) warnf(format string, args ...any) {
	fmt.Fprintf(g.stderr, format, args...)
}

// printJSON writes v as one JSON document on its own line.
func (g *globalOptions) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// location returns the repository location or an error when none was given.
func (g *globalOptions) location() (string, error) {
	if g.repo == "" {
		return "", errors.New("no repository given: use -r/--repo or IMAGO_REPOSITORY")
	}
	return g.repo, nil
}

// backendOptions holds the -o key=value flags, in the order given.
var backendOptions []string

// parseBackendOptions turns the -o flags into a map; a key given twice
// keeps its last value.
func parseBackendOptions(opts []string) (map[string]string, error) {
	m := make(map[string]string, len(opts))
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("option %q: want key=value (known keys: %s)", o, strings.Join(location.Options, ", "))
		}
		m[k] = v
	}
	return m, nil
}

// openBackend opens the backend at the repository location (a path,
// local:PATH, sftp:… or s3:…) with the -o options; remote backends retry
// transient errors. With create, the location is created when missing. A
// location that does not exist gives an error wrapping
// repo.ErrNoRepository.
func openBackend(loc string, create bool) (backend.Backend, error) {
	opts, err := parseBackendOptions(backendOptions)
	if err != nil {
		return nil, err
	}
	// Remote backends bound their own connection attempts (sftp: 15 s,
	// s3: 10 s per dial), so no deadline is needed here.
	be, err := location.Open(context.Background(), loc, opts, create)
	if errors.Is(err, backend.ErrNotExist) {
		return nil, fmt.Errorf("repository %s does not exist: %w (%w)", loc, repo.ErrNoRepository, err)
	}
	return be, err
}

// cacheBase returns the cache folder: --cache-dir (IMAGO_CACHE_DIR), else
// imago/ in the user's cache folder; "" with --no-cache or when there is
// none (with a warning).
func (g *globalOptions) cacheBase() string {
	if g.noCache {
		return ""
	}
	if g.cacheDir != "" {
		return g.cacheDir
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		g.warnf("warning: no cache: %v\n", err)
		return ""
	}
	return filepath.Join(dir, "imago")
}

// makeCacheBase creates the cache folder base and reports whether it can be
// used.
func (g *globalOptions) makeCacheBase(base string) bool {
	if err := os.MkdirAll(base, 0o700); err != nil {
		g.warnf("warning: no cache: %v\n", err)
		return false
	}
	writeCacheDirTag(base)
	return true
}

// cacheWrapper returns the repo.OpenOptions.WrapBackend that puts the
// backend of a remote repository at loc behind a local cache in
// <cache folder>/<repository ID>, or nil without a cache folder or for a
// local repository (which needs none).
func (g *globalOptions) cacheWrapper(loc string, base string) func(repo.Config, backend.Backend) backend.Backend {
	if scheme, _, err := location.Parse(loc); base == "" || err != nil || scheme == location.Local {
		return nil
	}
	return func(cfg repo.Config, be backend.Backend) backend.Backend {
		if !g.makeCacheBase(base) {
			return be
		}
		dir := filepath.Join(base, cfg.ID)
		g.verbosef(2, "cache: %s\n", dir)
		return cache.New(be, dir)
	}
}

// cachedOptions returns the options that open the repository at loc with
// the cache folder: a cache of a remote backend, and the local index.
func (g *globalOptions) cachedOptions(loc string) repo.OpenOptions {
	base := g.cacheBase()
	return repo.OpenOptions{WrapBackend: g.cacheWrapper(loc, base), IndexDir: g.indexDir(base)}
}

// indexDir returns the repo.OpenOptions.IndexDir that keeps the index of
// any repository, local or remote, in <cache folder>/<repository ID>/blobindex
// (repo.Repository.LoadIndex), or nil without a cache folder: the index is
// then built in memory from the repository's index files on every run.
func (g *globalOptions) indexDir(base string) func(repo.Config) string {
	if base == "" {
		return nil
	}
	return func(cfg repo.Config) string {
		if !g.makeCacheBase(base) {
			return ""
		}
		return filepath.Join(base, cfg.ID, "blobindex")
	}
}

// writeCacheDirTag marks dir as a cache (https://bford.info/cachedir/), so
// that backup tools, imago included with its exclusion rules, can skip it.
func writeCacheDirTag(dir string) {
	p := filepath.Join(dir, "CACHEDIR.TAG")
	if _, err := os.Stat(p); err == nil {
		return
	}
	_ = os.WriteFile(p, []byte("Signature: 8a477f597d28d172789f06886806bc55\n# This folder is imago's cache: files of remote repositories and the index of every repository.\n"), 0o600)
}

// announceTreePacks tells r's cache, if it has one, which packs hold tree
// blobs, so that it copies those (and no data pack) and drops copies of
// packs no longer listed.
func announceTreePacks(r *repo.Repository) {
	c, ok := r.Backend().(*cache.Cache)
	if !ok {
		return
	}
	seen := make(map[pack.ID]struct{})
	var names []string
	r.Index().Each(func(h chunk.Handle, loc index.Location) bool {
		if _, dup := seen[loc.Pack]; h.Kind == chunk.KindTree && !dup {
			seen[loc.Pack] = struct{}{}
			names = append(names, loc.Pack.String())
		}
		return true
	})
	c.SetPacks(names)
}

// readPassword finds the password: IMAGO_PASSWORD, --password-file,
// --password-command, or a prompt on the terminal.
func (g *globalOptions) readPassword(prompt string) (string, error) {
	if pw, ok := os.LookupEnv("IMAGO_PASSWORD"); ok && g.passwordFile == "" && g.passwordCommand == "" {
		return pw, nil
	}
	switch {
	case g.passwordFile != "":
		b, err := os.ReadFile(g.passwordFile)
		if err != nil {
			return "", fmt.Errorf("read password file: %w", err)
		}
		return strings.TrimRight(firstLine(b), "\r"), nil
	case g.passwordCommand != "":
		cmd := exec.Command("sh", "-c", g.passwordCommand)
		cmd.Stderr = g.stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("password command: %w", err)
		}
		return strings.TrimRight(firstLine(out), "\r"), nil
	}
	return promptPassword(prompt)
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// promptPassword asks on the controlling terminal without echo.
func promptPassword(prompt string) (string, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil || !term.IsTerminal(int(tty.Fd())) {
		if tty != nil {
			tty.Close()
		}
		return "", errors.New("no password given: set IMAGO_PASSWORD, --password-file or --password-command")
	}
	defer tty.Close()
	fmt.Fprint(tty, prompt)
	pw, err := term.ReadPassword(int(tty.Fd()))
	fmt.Fprintln(tty)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	return string(pw), nil
}

// kdfParams returns the key-derivation cost for new key files. The cheap
// parameters are for test suites only and must be asked for explicitly.
func kdfParams() crypto.KDFParams {
	if os.Getenv("IMAGO_INSECURE_TEST_KDF") == "1" {
		return crypto.TestKDF
	}
	return crypto.DefaultKDF
}

// openRepository opens the repository named by the global flags.
func (g *globalOptions) openRepository(ctx context.Context) (*repo.Repository, error) {
	return g.openRepositoryWith(ctx, false)
}

// openRepositoryWith opens the repository; with noIndex it loads no index
// files (check and repair load them themselves and must work when some are
// damaged) and uses no cache of the storage (check must see what the
// storage holds), only the folder for the index's files.
func (g *globalOptions) openRepositoryWith(ctx context.Context, noIndex bool) (*repo.Repository, error) {
	loc, err := g.location()
	if err != nil {
		return nil, err
	}
	be, err := openBackend(loc, false)
	if err != nil {
		return nil, err
	}
	pw, err := g.readPassword("enter password for repository: ")
	if err != nil {
		be.Close()
		return nil, err
	}
	// The index is loaded only after the key derivation's buffer
	// (crypto.DefaultKDF: 32 MiB), garbage once the key opened, has been
	// given back to the OS: otherwise the two add up in the command's peak
	// memory.
	// Check and repair build the index from the storage themselves; they
	// still keep it in the cache folder's files rather than the heap.
	base := g.cacheBase()
	opts := repo.OpenOptions{NoIndex: true, IndexDir: g.indexDir(base)}
	if !noIndex {
		opts.WrapBackend = g.cacheWrapper(loc, base)
	}
	r, err := repo.Open(ctx, be, pw, opts)
	debug.FreeOSMemory()
	if err == nil && !noIndex {
		if err = r.LoadIndex(ctx); err != nil {
			r.Close()
			return nil, err
		}
	}
	if err != nil {
		be.Close()
		if errors.Is(err, repo.ErrNoRepository) {
			return nil, fmt.Errorf("repository %s does not exist: %w", loc, err)
		}
		return nil, err
	}
	if !noIndex {
		announceTreePacks(r)
	}
	return r, nil
}

// openShared opens the repository and takes a shared lock, for commands
// that only read. release unlocks and closes the repository.
func (g *globalOptions) openShared(ctx context.Context) (r *repo.Repository, release func(), err error) {
	return g.openLocked(ctx, func(ctx context.Context, r *repo.Repository) (func(), error) {
		return g.lockRepository(ctx, r, false)
	})
}

// openForBackup opens the repository and takes a backup's shared lock
// (lockBackup). release unlocks and closes the repository.
func (g *globalOptions) openForBackup(ctx context.Context) (r *repo.Repository, release func(), err error) {
	return g.openLocked(ctx, g.lockBackup)
}

// openLocked opens the repository and takes a lock with lock.
func (g *globalOptions) openLocked(ctx context.Context, lock func(context.Context, *repo.Repository) (func(), error)) (r *repo.Repository, release func(), err error) {
	r, err = g.openRepository(ctx)
	if err != nil {
		return nil, nil, err
	}
	unlock, err := lock(ctx, r)
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	return r, func() {
		unlock()
		r.Close()
	}, nil
}

// backupLockWait is how long a backup waits, unless --retry-lock says
// otherwise, for a lock another process holds exclusively: prune's final
// step holds one for seconds to minutes, and a nightly backup should wait
// for it rather than fail.
const backupLockWait = 10 * time.Minute

// lockBackup takes the shared lock of a backup, waiting up to
// backupLockWait (or --retry-lock) for an exclusive holder to finish.
func (g *globalOptions) lockBackup(ctx context.Context, r *repo.Repository) (func(), error) {
	if g.retryLock == 0 {
		h := *g
		h.retryLock = backupLockWait
		return h.lockRepository(ctx, r, false)
	}
	return g.lockRepository(ctx, r, false)
}

// lockRepository takes a shared or exclusive lock unless --no-lock was given
// (only honoured for shared locks) and returns the function that releases it.
func (g *globalOptions) lockRepository(ctx context.Context, r *repo.Repository, exclusive bool) (func(), error) {
	if g.noLock && !exclusive {
		return func() {}, nil
	}
	l, err := r.Lock(ctx, exclusive, repo.LockOptions{Retry: g.retryLock})
	if err != nil {
		return nil, err
	}
	unlock := func() {
		// Unlock with a fresh context: the command's may be cancelled.
		uctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := l.Unlock(uctx); err != nil {
			g.warnf("warning: remove lock: %v\n", err)
		}
	}
	// A prune may have finished between loading the index (at Open) and
	// taking the lock, removing packs the index still lists: bring the index
	// up to date so that nothing is looked up in, or deduplicated against, a
	// pack that may be gone. No prune can start its final step while the
	// lock is held.
	if r.IndexLoaded() {
		if _, err := r.RefreshIndex(ctx); err != nil {
			unlock()
			return nil, err
		}
	}
	return unlock, nil
}
