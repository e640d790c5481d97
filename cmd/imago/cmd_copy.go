package main

// copy: snapshots from one repository to another.
//
// Blob IDs are keyed BLAKE3 hashes whose key (the ID key) is part of each
// repository's master key, so the same bytes have different IDs in two
// repositories, and every reference to a blob must be rewritten on the way:
//
//   - A data blob is loaded from the source (verified against its source
//     ID), saved in the destination and gets its destination ID there.
//     SaveChunk stores it only if the destination lacks it, so only
//     missing blobs are uploaded; each is still downloaded once, since its
//     destination ID cannot be known without its bytes.
//   - A content list (the extents of a file or image) is read in order
//     from the source and fed, with the new data IDs, into a fresh
//     snapshot.ContentBuilder in the destination. Page boundaries depend
//     on the IDs, so the pages are rebuilt rather than translated.
//   - A directory is copied bottom-up: its listing is loaded from all its
//     tree blobs, each node's content list and subdirectory are copied
//     first, and the rewritten listing is saved with snapshot.SaveTree
//     (which may split it differently, since the content roots changed
//     size).
//   - Finally the snapshot record is saved with the new root tree, the same
//     time, host, paths, tags and summary, and its parent mapped to the
//     parent's copy when the destination has one.
//
// Chunk boundaries are not changed: a file keeps the source's chunks. That
// is only useful if the destination cuts data the same way, else later
// backups into the destination would not deduplicate against the copies;
// so copy refuses repositories with different chunker parameters and
// points at init --copy-chunker-params.
//
// A snapshot is already in the destination when one there has the same
// time, host, user, kind, paths, tags and image digest (tree IDs cannot be
// compared across repositories); those are skipped, so running copy again
// transfers nothing.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/snapshot"
)

func init() { moreCommands = append(moreCommands, newCopyCommand) }

// Limits of a copy.
const (
	// copyWorkers is how many data blobs are moved at once: each holds
	// one plaintext blob (at most pack.MaxBlobSize, 12 MiB; 8 MiB for the
	// file chunker's maximum) while it is loaded and saved, so ~100 MiB
	// at worst, and two requests in flight per backend hide latency.
	copyWorkers = 4
	// copyBatch is how many extents of a content list are mapped before
	// they are added to the destination's content list in order.
	copyBatch = 64
	// maxDataMemo bounds the source → destination data ID memo (about
	// 100 bytes per entry with the map's overhead: 25 MiB); it is emptied
	// when full. It spares a download for blobs repeated within a run.
	maxDataMemo = 1 << 18
	// maxTreeMemo bounds the directory memo (source tree IDs →
	// destination tree IDs, ~150 bytes per entry: 10 MiB), which lets
	// directories shared by several copied snapshots be copied once.
	maxTreeMemo = 1 << 16
	// maxCopyDepth bounds directory nesting (as snapshot.Walk does), so a
	// hostile source cannot exhaust the stack.
	maxCopyDepth = 4096
)

// fromRepoOptions names a second repository: the source of copy and of
// init --copy-chunker-params.
type fromRepoOptions struct {
	repo            string
	passwordFile    string
	passwordCommand string
}

func (o *fromRepoOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.repo, "from-repo", os.Getenv("IMAGO_FROM_REPOSITORY"), "source repository `location` (env IMAGO_FROM_REPOSITORY)")
	fs.StringVar(&o.passwordFile, "from-password-file", os.Getenv("IMAGO_FROM_PASSWORD_FILE"), "read the source repository's password from `file` (env IMAGO_FROM_PASSWORD_FILE)")
	fs.StringVar(&o.passwordCommand, "from-password-command", os.Getenv("IMAGO_FROM_PASSWORD_COMMAND"), "run `command` for the source repository's password (env IMAGO_FROM_PASSWORD_COMMAND)")
}

// password finds the source repository's password: IMAGO_FROM_PASSWORD,
// --from-password-file, --from-password-command, or a prompt.
func (o *fromRepoOptions) password() (string, error) {
	if pw, ok := os.LookupEnv("IMAGO_FROM_PASSWORD"); ok && o.passwordFile == "" && o.passwordCommand == "" {
		return pw, nil
	}
	switch {
	case o.passwordFile != "":
		b, err := os.ReadFile(o.passwordFile)
		if err != nil {
			return "", fmt.Errorf("read source password file: %w", err)
		}
		return strings.TrimRight(firstLine(b), "\r"), nil
	case o.passwordCommand != "":
		cmd := exec.Command("sh", "-c", o.passwordCommand)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("source password command: %w", err)
		}
		return strings.TrimRight(firstLine(out), "\r"), nil
	}
	pw, err := promptPassword("enter password for source repository: ")
	if err != nil {
		return "", fmt.Errorf("source repository: %w (or IMAGO_FROM_PASSWORD, --from-password-file, --from-password-command)", err)
	}
	return pw, nil
}

// open opens the source repository, through the cache like the
// destination; noIndex skips loading its index.
func (o *fromRepoOptions) open(ctx context.Context, g *globalOptions, noIndex bool) (*repo.Repository, error) {
	if o.repo == "" {
		return nil, errors.New("no source repository given: use --from-repo")
	}
	be, err := openBackend(o.repo, false)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	pw, err := o.password()
	if err != nil {
		be.Close()
		return nil, err
	}
	opts := g.cachedOptions(o.repo)
	opts.NoIndex = noIndex
	r, err := repo.Open(ctx, be, pw, opts)
	if err != nil {
		be.Close()
		if errors.Is(err, repo.ErrNoRepository) {
			return nil, fmt.Errorf("source repository %s does not exist: %w", o.repo, err)
		}
		return nil, fmt.Errorf("source: %w", err)
	}
	if !noIndex {
		announceTreePacks(r)
	}
	return r, nil
}

func newCopyCommand(g *globalOptions) *cobra.Command {
	var from fromRepoOptions
	var f snapshotFilter
	cmd := &cobra.Command{
		Use:   "copy --from-repo SOURCE [SNAPSHOT...]",
		Short: "Copy snapshots from another repository into this one",
		Long: `copy copies snapshots from the repository given by --from-repo into the
repository given by -r/--repo, which may use another backend and password.
Only the data the destination lacks is uploaded; every blob of a copied
snapshot is downloaded from the source once, since the two repositories
name blobs with different keys.

Without SNAPSHOT arguments, every snapshot of the source (matching --host,
--tag and --path) that is not yet in the destination is copied. Both
repositories must cut data with the same chunker parameters; create the
destination with "imago init --copy-chunker-params --from-repo SOURCE".`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCopy(cmd.Context(), g, &from, &f, args)
		},
	}
	from.addFlags(cmd.Flags())
	f.addFlags(cmd.Flags())
	return cmd
}

// copyStats counts what a copy did.
type copyStats struct {
	Copied     int   `json:"snapshots_copied"`
	Skipped    int   `json:"snapshots_skipped"`
	BlobsNew   int64 `json:"blobs_new"`
	BytesAdded int64 `json:"bytes_added"`
	// BlobBytesLoaded counts the plaintext bytes of the data and tree
	// blobs read from the source (snapshot records and index files
	// aside).
	BlobBytesLoaded int64 `json:"blob_bytes_downloaded"`
}

func runCopy(ctx context.Context, g *globalOptions, from *fromRepoOptions, f *snapshotFilter, args []string) error {
	src, err := from.open(ctx, g, false)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := g.openRepository(ctx)
	if err != nil {
		return err
	}
	defer dst.Close()
	if src.Config().ID == dst.Config().ID {
		return errors.New("source and destination are the same repository")
	}
	if err := sameChunker(src.Config(), dst.Config()); err != nil {
		return err
	}
	unlockSrc, err := g.lockRepository(ctx, src, false)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer unlockSrc()
	unlockDst, err := g.lockBackup(ctx, dst)
	if err != nil {
		return err
	}
	defer unlockDst()
	// A prune of either repository that ended before the locks were
	// taken must not leave the index pointing at deleted packs.
	for _, r := range []*repo.Repository{src, dst} {
		if _, err := r.RefreshIndex(ctx); err != nil {
			return err
		}
	}
	announceTreePacks(src)

	all, err := loadSnapshots(ctx, src, nil)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	var snaps []storedSnapshot
	if len(args) == 0 {
		for _, s := range all {
			if f.match(s.Snapshot) {
				snaps = append(snaps, s)
			}
		}
	}
	for _, a := range args {
		s, err := findSnapshot(ctx, src, f, a)
		if err != nil {
			return fmt.Errorf("source: %w", err)
		}
		snaps = append(snaps, s)
	}
	existing, err := loadSnapshots(ctx, dst, nil)
	if err != nil {
		return err
	}
	// copies maps the identity of every snapshot in the destination to
	// its ID there.
	copies := make(map[string]string, len(existing))
	for _, s := range existing {
		copies[snapshotIdentity(s.Snapshot)] = s.ID
	}
	// srcIdentity maps source IDs to identities, for mapping parents.
	srcIdentity := make(map[string]string, len(all))
	for _, s := range all {
		srcIdentity[s.ID] = snapshotIdentity(s.Snapshot)
	}

	c := newCopier(src, dst)
	var st copyStats
	done := make(map[string]bool, len(snaps))
	for _, s := range snaps {
		if done[s.ID] {
			continue // named twice on the command line
		}
		done[s.ID] = true
		key := snapshotIdentity(s.Snapshot)
		if id, ok := copies[key]; ok {
			st.Skipped++
			g.verbosef(1, "snapshot %s of %s is already in the destination as %s\n", shortID(s.ID), s.Time.Format(time.DateTime), shortID(id))
			continue
		}
		id, err := c.copySnapshot(ctx, s, copies, srcIdentity)
		if err != nil {
			return fmt.Errorf("copy snapshot %s: %w", shortID(s.ID), err)
		}
		copies[key] = id
		st.Copied++
		g.printf("snapshot %s of %s at %s copied as %s\n", shortID(s.ID), strings.Join(s.Paths, ", "), s.Time.Format(time.DateTime), shortID(id))
	}
	ds := dst.Stats()
	st.BlobsNew, st.BytesAdded = ds.BlobsNew, ds.BytesNew
	st.BlobBytesLoaded = c.loaded.Load()
	if g.json {
		return g.printJSON(struct {
			Type string `json:"message_type"`
			copyStats
		}{"summary", st})
	}
	g.printf("%d snapshots copied, %d already there; %d new blobs, %s added\n",
		st.Copied, st.Skipped, st.BlobsNew, formatBytes(st.BytesAdded))
	return nil
}

// sameChunker refuses to copy between repositories that cut data
// differently.
func sameChunker(src, dst repo.Config) error {
	if src.Polynomial == dst.Polynomial && src.FileChunker == dst.FileChunker && src.ImageChunker == dst.ImageChunker {
		return nil
	}
	return errors.New("the source and destination repositories use different chunker parameters, " +
		"so later backups into the destination would not deduplicate against the copied data; " +
		"copy into a repository made with \"imago init --copy-chunker-params --from-repo SOURCE\"")
}

// snapshotIdentity returns what tells a snapshot apart across
// repositories: time, host, user, kind, paths, tags and image digest.
func snapshotIdentity(s *snapshot.Snapshot) string {
	paths := slices.Clone(s.Paths)
	slices.Sort(paths)
	tags := slices.Clone(s.Tags)
	slices.Sort(tags)
	digest := ""
	if s.Image != nil {
		digest = s.Image.TreeDigest + s.Image.Digest // one of them is set
	}
	// NUL cannot occur in any of the fields' text.
	return strings.Join([]string{
		s.Time.UTC().Format(time.RFC3339Nano), s.Host, s.Username, string(s.Kind),
		strings.Join(paths, "\x01"), strings.Join(tags, "\x01"), digest,
	}, "\x00")
}

// copier moves blobs from src to dst, rewriting their references. It is
// used by one goroutine; only data blobs are moved concurrently.
type copier struct {
	src, dst *repo.Repository
	// data maps source data IDs to destination IDs (bounded, see
	// maxDataMemo); only the goroutine running copySnapshot touches it.
	data map[chunk.ID]chunk.ID
	// trees maps a directory's source tree IDs (concatenated) to its
	// destination tree IDs (bounded, see maxTreeMemo).
	trees map[string][]chunk.ID
	buf   []byte // tree loads
	// loaded counts the plaintext bytes of the blobs loaded from src.
	loaded atomic.Int64
}

func newCopier(src, dst *repo.Repository) *copier {
	return &copier{src: src, dst: dst, data: make(map[chunk.ID]chunk.ID), trees: make(map[string][]chunk.ID)}
}

// copySnapshot copies the trees and data of s and then its record, and
// returns the new snapshot's ID. copies maps identities to destination
// IDs, srcIdentity source IDs to identities; both map parents.
func (c *copier) copySnapshot(ctx context.Context, s storedSnapshot, copies, srcIdentity map[string]string) (string, error) {
	ids, err := c.dir(ctx, []chunk.ID{s.Tree}, 0)
	if err != nil {
		return "", err
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("the root tree became %d tree blobs in the destination; a root must be one", len(ids))
	}
	if err := c.dst.Flush(ctx); err != nil {
		return "", err
	}
	rec := *s.Snapshot
	rec.Tree = ids[0]
	rec.Parent = nil
	if s.Parent != nil {
		if key, ok := srcIdentity[s.Parent.String()]; ok {
			if pid, ok := copies[key]; ok {
				if id, err := snapshot.ParseID(pid); err == nil {
					rec.Parent = &id
				}
			}
		}
	}
	b, err := snapshot.Encode(&rec)
	if err != nil {
		return "", err
	}
	return c.dst.SaveFile(ctx, backend.Snapshot, b)
}

// dir copies the directory listed by the source tree blobs ids, and
// everything below it, and returns its tree blobs in the destination.
func (c *copier) dir(ctx context.Context, ids []chunk.ID, depth int) ([]chunk.ID, error) {
	if depth >= maxCopyDepth {
		return nil, fmt.Errorf("directories nested deeper than %d", maxCopyDepth)
	}
	key := treeKey(ids)
	if out, ok := c.trees[key]; ok {
		return out, nil
	}
	t := &snapshot.Tree{}
	for _, id := range ids {
		b, err := c.src.LoadChunk(ctx, chunk.Handle{ID: id, Kind: chunk.KindTree}, c.buf)
		if err != nil {
			return nil, err
		}
		c.buf = b
		c.loaded.Add(int64(len(b)))
		part, err := snapshot.DecodeTree(b)
		if err != nil {
			return nil, fmt.Errorf("tree %v: %w", id.Short(), err)
		}
		t.Nodes = append(t.Nodes, part.Nodes...)
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var err error
		if n.Content, err = c.content(ctx, n.Content); err != nil {
			return nil, fmt.Errorf("%s: %w", n.Name, err)
		}
		if len(n.Subtrees) > 0 {
			if n.Subtrees, err = c.dir(ctx, n.Subtrees, depth+1); err != nil {
				return nil, fmt.Errorf("%s/%w", n.Name, err)
			}
		}
	}
	out, _, err := snapshot.SaveTree(ctx, c.dst, t)
	if err != nil {
		return nil, err
	}
	if len(c.trees) >= maxTreeMemo {
		clear(c.trees)
	}
	c.trees[key] = out
	return out, nil
}

// treeKey joins tree IDs into a map key.
func treeKey(ids []chunk.ID) string {
	b := make([]byte, 0, len(ids)*len(chunk.ID{}))
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	return string(b)
}

// content copies the data of a content list and returns the destination's
// content list for it, built from the same extents with destination IDs.
func (c *copier) content(ctx context.Context, in snapshot.Content) (snapshot.Content, error) {
	if len(in.Extents) == 0 && len(in.Pages) == 0 {
		return in, nil
	}
	rd := snapshot.NewContentReader(c.src, in)
	b := snapshot.NewContentBuilder(c.dst)
	batch := make([]snapshot.Extent, 0, copyBatch)
	flush := func() error {
		if err := c.mapExtents(ctx, batch); err != nil {
			return err
		}
		for _, e := range batch {
			if err := b.Add(ctx, e); err != nil {
				return err
			}
		}
		batch = batch[:0]
		return nil
	}
	err := rd.Extents(ctx, 0, func(_ uint64, e snapshot.Extent) error {
		batch = append(batch, e)
		if len(batch) == copyBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return snapshot.Content{}, err
	}
	out, _, _, err := b.Finish(ctx)
	return out, err
}

// mapExtents replaces the source data IDs of xs with destination IDs,
// copying the blobs not seen before, copyWorkers at a time.
func (c *copier) mapExtents(ctx context.Context, xs []snapshot.Extent) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(copyWorkers)
	var todo []int
	for i, x := range xs {
		if x.Hole() {
			continue
		}
		if id, ok := c.data[x.ID]; ok {
			xs[i].ID = id
			continue
		}
		todo = append(todo, i)
	}
	// The workers write only their own xs elements; the memo is updated
	// after Wait, on this goroutine.
	srcIDs := make([]chunk.ID, len(todo))
	for j, i := range todo {
		srcIDs[j] = xs[i].ID
		g.Go(func() error {
			plain, err := c.src.LoadChunk(gctx, chunk.Handle{ID: srcIDs[j], Kind: chunk.KindData}, nil)
			if err != nil {
				return err
			}
			c.loaded.Add(int64(len(plain)))
			id, _, err := c.dst.SaveChunk(gctx, chunk.KindData, plain)
			if err != nil {
				return err
			}
			xs[i].ID = id
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for j, i := range todo {
		if len(c.data) >= maxDataMemo {
			clear(c.data)
		}
		c.data[srcIDs[j]] = xs[i].ID
	}
	return nil
}
