package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/imagobackup/imago/blockdev"
	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/index"
	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/faulty"
	"github.com/imagobackup/imago/repo/backend/location"
	"github.com/imagobackup/imago/repo/backend/s3/s3test"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/archive"
	"github.com/imagobackup/imago/snapshot/restore"
)

// countedRemote is an S3 repository opened the way the command line opens
// it (location.Open: retry over s3; then the cache of cacheWrapper), with a
// counting wrapper between the cache and the network, so that what a
// command downloads and uploads can be asserted.
type countedRemote struct {
	t     *testing.T
	loc   string
	store *faulty.Backend
	g     *globalOptions

	// mu guards packsLoaded.
	mu          sync.Mutex
	packsLoaded map[string]bool // names of the packs loaded from the store
}

func newCountedRemote(t *testing.T) *countedRemote {
	t.Helper()
	srv := s3test.StartServer(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	c := &countedRemote{
		t:   t,
		loc: "s3:" + srv.URL + "/" + srv.Bucket + "/repo",
		g:   &globalOptions{cacheDir: t.TempDir(), stdout: io.Discard, stderr: io.Discard},
	}
	be, err := location.Open(context.Background(), c.loc, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	c.store = faulty.New(be)
	c.store.FailLoad(func(h backend.Handle) error {
		if h.Type == backend.Pack {
			c.mu.Lock()
			c.packsLoaded[h.Name] = true
			c.mu.Unlock()
		}
		return nil
	})
	c.reset()
	repo.TestRepositoryWithBackend(t, c.store) // init; the CLI's default pack size
	return c
}

// reset sets the counters to zero.
func (c *countedRemote) reset() {
	c.store.ResetCounts()
	c.mu.Lock()
	c.packsLoaded = map[string]bool{}
	c.mu.Unlock()
}

// open opens the repository as a new command would: through the cache,
// with the tree packs announced.
func (c *countedRemote) open(ctx context.Context) *repo.Repository {
	c.t.Helper()
	r, err := repo.Open(ctx, c.store, repo.TestPassword, c.g.cachedOptions(c.loc))
	if err != nil {
		c.t.Fatal(err)
	}
	announceTreePacks(r)
	return r
}

// dataPacksLoaded returns how many of the packs loaded since reset hold
// data blobs, by r's index.
func (c *countedRemote) dataPacksLoaded(r *repo.Repository) int {
	c.t.Helper()
	data := map[string]bool{}
	r.Index().Each(func(h chunk.Handle, loc index.Location) bool {
		if h.Kind == chunk.KindData {
			data[loc.Pack.String()] = true
		}
		return true
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for name := range c.packsLoaded {
		if data[name] {
			n++
		}
	}
	return n
}

// backupImage is one nightly `imago backup --image img` as runImageBackup
// does it, in a command of its own: open, lock, find the parent, back up,
// save the tree, flush, save the snapshot. It returns the bytes reused
// from the parent.
func (c *countedRemote) backupImage(ctx context.Context, img string, when time.Time) uint64 {
	t := c.t
	t.Helper()
	r := c.open(ctx)
	defer r.Close()
	unlock, err := c.g.lockBackup(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	src, err := blockdev.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	const host = "counted"
	parent, parentNode, err := findImageParent(ctx, r, &backupOptions{}, host, img)
	if err != nil {
		t.Fatal(err)
	}
	cfg := r.Config()
	opts := blockdev.BackupOptions{Params: cfg.ImageParams(), SegmentSize: cfg.ImageChunker.Segment}
	var parentID *snapshot.ID
	if parent != nil {
		id, err := snapshot.ParseID(parent.ID)
		if err != nil {
			t.Fatal(err)
		}
		parentID = &id
		opts.Parent, opts.ParentLoader = &parentNode.Content, r
	}
	res, err := blockdev.Backup(ctx, src, r, r, opts)
	if err != nil {
		t.Fatal(err)
	}
	node := snapshot.Node{Name: imageNodeName(img), Type: snapshot.TypeImage, Mode: 0o600, Size: res.Size, Content: res.Content}
	ids, _, err := snapshot.SaveTree(ctx, r, &snapshot.Tree{Nodes: []snapshot.Node{node}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := newSnapshotRecord(host, when, []string{img}, nil, snapshot.KindImage, parentID, ids[0], &snapshot.Summary{})
	sn.Image = &snapshot.ImageInfo{Size: res.Size, TreeDigest: res.Digest, Name: node.Name}
	if _, err := saveSnapshot(ctx, r, sn); err != nil {
		t.Fatal(err)
	}
	return res.BytesReused
}

// backupTree is `imago backup dir` without a parent.
func (c *countedRemote) backupTree(ctx context.Context, dir string, when time.Time) {
	t := c.t
	t.Helper()
	r := c.open(ctx)
	defer r.Close()
	res, err := archive.Run(ctx, r, r, []string{dir}, archive.Options{Params: r.Config().FileParams()})
	if err != nil || res.Errors != 0 {
		t.Fatalf("backup %s: %v (%d files not read)", dir, err, res.Errors)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := newSnapshotRecord("counted", when, []string{dir}, nil, snapshot.KindFiles, nil, res.Tree, &res.Summary)
	if _, err := saveSnapshot(ctx, r, sn); err != nil {
		t.Fatal(err)
	}
}

// listAndWalk is `imago snapshots` followed by `imago ls` of every
// snapshot, in a command of its own; it returns the nodes seen.
func (c *countedRemote) listAndWalk(ctx context.Context) int {
	t := c.t
	t.Helper()
	r := c.open(ctx)
	defer r.Close()
	snaps, err := loadSnapshots(ctx, r, &snapshotFilter{})
	if err != nil {
		t.Fatal(err)
	}
	nodes := 0
	for _, s := range snaps {
		err := snapshot.Walk(ctx, r, s.Tree, func(string, *snapshot.Node) error {
			nodes++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// TestNightlyImageToS3Counted backs up an unchanged image a second night
// to S3 and counts what crosses the network: the second backup uploads
// less than 1 MiB and downloads no data pack, and listing and walking the
// snapshots with a warm cache downloads nothing but listings, the config
// and the key.
func TestNightlyImageToS3Counted(t *testing.T) {
	ctx := context.Background()
	c := newCountedRemote(t)

	// A 96 MiB image: 32 MiB of data, a 32 MiB hole, 16 MiB of data, a
	// hole at the end.
	const size = 96 << 20
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	writeAt(t, img, 0, 32<<20, 11)
	writeAt(t, img, 64<<20, 16<<20, 12)
	tree := t.TempDir()
	writeRandom(t, filepath.Join(tree, "a"), 300<<10, 13)
	if err := os.WriteFile(filepath.Join(tree, "b.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	night1 := time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)
	c.backupTree(ctx, tree, night1)
	c.backupImage(ctx, img, night1)
	first := c.store.Counts()
	if first.BytesSaved < 48<<20 {
		t.Fatalf("first night uploaded %d bytes for 48 MiB of random data", first.BytesSaved)
	}

	c.reset()
	reused := c.backupImage(ctx, img, night1.Add(24*time.Hour))
	second := c.store.Counts()
	if reused < 48<<20 {
		t.Errorf("second night reused %d bytes from its parent, want all 48 MiB of data", reused)
	}
	if second.BytesSaved >= 1<<20 {
		t.Errorf("second night of an unchanged image uploaded %d bytes (%d files), want < 1 MiB", second.BytesSaved, second.Saves)
	}
	r := c.open(ctx)
	if n := c.dataPacksLoaded(r); n != 0 {
		t.Errorf("second night downloaded %d data packs, want none (packs loaded: %d)", n, second.LoadsByType[backend.Pack])
	}
	r.Close()
	t.Logf("second night: %d bytes uploaded in %d files, %d bytes downloaded in %d loads (%v)",
		second.BytesSaved, second.Saves, second.BytesLoaded, second.Loads, second.LoadsByType)

	// The first listing may fetch the tree packs the last backup wrote;
	// every later one finds everything in the cache.
	nodes := c.listAndWalk(ctx)
	if nodes < 5 {
		t.Fatalf("walked %d nodes of 3 snapshots", nodes)
	}
	for round := range 2 {
		c.reset()
		if got := c.listAndWalk(ctx); got != nodes {
			t.Fatalf("round %d: walked %d nodes, want %d", round, got, nodes)
		}
		got := c.store.Counts()
		for _, ft := range []backend.FileType{backend.Pack, backend.Index, backend.Snapshot} {
			if got.LoadsByType[ft] != 0 {
				t.Errorf("round %d: warm cache downloaded %d %s files, want none", round, got.LoadsByType[ft], ft)
			}
		}
		if got.Saves != 0 || got.BytesLoaded > 8<<10 {
			t.Errorf("round %d: warm listing saved %d files and downloaded %d bytes, want no save and only config and key",
				round, got.Saves, got.BytesLoaded)
		}
	}
}

// TestRestoreFromS3Counted restores a tree of many small files and an
// image from S3 and counts the requests: chunks stored side by side are
// fetched with a few large ranged reads, not one request per file or per
// image chunk, and what is restored is what was backed up.
func TestRestoreFromS3Counted(t *testing.T) {
	ctx := context.Background()
	c := newCountedRemote(t)

	tree := t.TempDir()
	want := map[string][]byte{}
	for i := range 300 {
		name := fmt.Sprintf("f%03d", i)
		want[name] = writeRandom(t, filepath.Join(tree, name), 1000+i*13, uint64(100+i))
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	writeAt(t, img, 0, 24<<20, 21) // 1,536 image chunks
	night := time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)
	c.backupTree(ctx, tree, night)
	c.backupImage(ctx, img, night)

	r := c.open(ctx)
	defer r.Close()
	snaps, err := loadSnapshots(ctx, r, &snapshotFilter{})
	if err != nil || len(snaps) != 2 {
		t.Fatalf("%d snapshots, %v", len(snaps), err)
	}

	for _, s := range snaps {
		c.reset()
		if s.Kind == snapshot.KindImage {
			n, err := imageNode(ctx, r, s)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "restored.img")
			tgt, err := blockdev.OpenTarget(out, int64(n.Size), blockdev.TargetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			err = blockdev.Restore(ctx, r, n.Content, int64(n.Size), tgt, blockdev.RestoreOptions{Digest: s.Image.TreeDigest, PlainDigest: s.Image.Digest})
			tgt.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readAll(t, out), readAll(t, img)) {
				t.Fatal("restored image differs")
			}
			// 24 MiB of chunks in 1 MiB ranges (each window's ranges end
			// where the window ends).
			if loads := c.store.Counts().LoadsByType[backend.Pack]; loads > 60 {
				t.Errorf("image restore made %d pack requests for 1,536 chunks", loads)
			}
			continue
		}
		target := t.TempDir()
		if _, err := restore.Run(ctx, r, s.Tree, target, restore.Options{}); err != nil {
			t.Fatal(err)
		}
		for name, b := range want {
			if got := readAll(t, filepath.Join(target, tree, name)); !bytes.Equal(got, b) {
				t.Fatalf("%s: restored %d bytes that differ", name, len(got))
			}
		}
		// 300 files of 1–5 KiB in a few packs.
		if loads := c.store.Counts().LoadsByType[backend.Pack]; loads > 30 {
			t.Errorf("tree restore made %d pack requests for 300 small files", loads)
		}
	}
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
