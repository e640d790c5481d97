package repo

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo/backend"
	"github.com/imagobackup/imago/repo/backend/faulty"
	"github.com/imagobackup/imago/repo/backend/local"
	"github.com/imagobackup/imago/repo/backend/mem"
)

func TestSaveLoadChunk(t *testing.T) {
	ctx := context.Background()
	r := TestRepository(t)
	cases := []struct {
		name string
		kind chunk.Kind
		data []byte
	}{
		{"empty data", chunk.KindData, nil},
		{"random data", chunk.KindData, randomBytes(1, 100<<10)},
		{"compressible data", chunk.KindData, compressibleBytes(100 << 10)},
		{"random tree", chunk.KindTree, randomBytes(2, 3000)},
		{"tree with same bytes as data", chunk.KindTree, randomBytes(1, 100<<10)},
	}
	ids := make([]chunk.ID, len(cases))
	for i, c := range cases {
		id, added, err := r.SaveChunk(ctx, c.kind, c.data)
		if err != nil {
			t.Fatalf("%s: SaveChunk: %v", c.name, err)
		}
		if added == 0 {
			t.Errorf("%s: SaveChunk added 0 bytes for a new blob", c.name)
		}
		if id != r.HashChunk(c.data) {
			t.Errorf("%s: ID %v, want the keyed hash %v", c.name, id, r.HashChunk(c.data))
		}
		ids[i] = id
	}
	mustFlush(t, r)
	if got := r.Index().Len(); got != len(cases) {
		t.Errorf("index holds %d blobs, want %d (data and tree blobs are distinct)", got, len(cases))
	}
	for i, c := range cases {
		got, err := r.LoadChunk(ctx, chunk.Handle{ID: ids[i], Kind: c.kind}, nil)
		if err != nil {
			t.Fatalf("%s: LoadChunk: %v", c.name, err)
		}
		if !bytes.Equal(got, c.data) {
			t.Errorf("%s: LoadChunk returned %d different bytes", c.name, len(got))
		}
	}
	st := r.Stats()
	if st.BlobsNew != int64(len(cases)) || st.PacksWritten != 2 || st.IndexFilesWritten != 1 {
		t.Errorf("stats %+v: want %d new blobs, 2 packs (one per kind), 1 index file", st, len(cases))
	}
}

func TestCompressionShrinksStoredBlob(t *testing.T) {
	ctx := context.Background()
	data := compressibleBytes(256 << 10)
	for _, c := range []struct {
		level   pack.CompressionLevel
		smaller bool
	}{
		{pack.CompressionOff, false},
		{pack.CompressionFastest, true},
		{pack.CompressionDefault, true},
	} {
		r := TestRepository(t, TestCompression(c.level))
		_, added, err := r.SaveChunk(ctx, chunk.KindData, data)
		if err != nil {
			t.Fatal(err)
		}
		if got := added < len(data)/2; got != c.smaller {
			t.Errorf("level %v: stored %d bytes of %d, want compressed=%v", c.level, added, len(data), c.smaller)
		}
	}
}

func TestLoadChunkUnknownBlob(t *testing.T) {
	r := TestRepository(t)
	id := r.HashChunk([]byte("never saved"))
	_, err := r.LoadChunk(context.Background(), chunk.Handle{ID: id, Kind: chunk.KindData}, nil)
	wantErrContaining(t, err, "data blob "+id.Short(), "not in the index")
}

func TestSaveChunkDeduplicates(t *testing.T) {
	ctx := context.Background()
	r := TestRepository(t)
	data := randomBytes(3, 50<<10)
	id1, added1, err := r.SaveChunk(ctx, chunk.KindData, data)
	if err != nil {
		t.Fatal(err)
	}
	// The second save finds the blob in flight (not yet uploaded).
	id2, added2, err := r.SaveChunk(ctx, chunk.KindData, data)
	if err != nil {
		t.Fatal(err)
	}
	mustFlush(t, r)
	// The third finds it in the index.
	id3, added3, err := r.SaveChunk(ctx, chunk.KindData, data)
	if err != nil {
		t.Fatal(err)
	}
	mustFlush(t, r)
	if id1 != id2 || id1 != id3 {
		t.Errorf("IDs differ: %v %v %v", id1, id2, id3)
	}
	if added1 == 0 || added2 != 0 || added3 != 0 {
		t.Errorf("added %d, %d, %d; want >0, 0, 0", added1, added2, added3)
	}
	if n := r.Index().Len(); n != 1 {
		t.Errorf("index holds %d blobs, want 1", n)
	}
	if st := r.Stats(); st.BlobsNew != 1 || st.BlobsKnown != 2 || st.PacksWritten != 1 {
		t.Errorf("stats %+v: want 1 new blob, 2 known, 1 pack", st)
	}
}

func TestConcurrentSaveChunk(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := TestRepositoryWithBackend(t, be, TestPackSize(32<<10))
	const workers, perWorker, distinct = 8, 40, 100
	blobs := make([][]byte, distinct)
	for i := range blobs {
		blobs[i] = randomBytes(uint64(100+i), 2<<10+i*97)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	added := map[chunk.ID]int{}
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				// Workers overlap: every blob is saved by several.
				data := blobs[(w*perWorker/2+i)%distinct]
				id, n, err := r.SaveChunk(ctx, chunk.KindData, data)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				added[id] += n
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	mustFlush(t, r)

	var total int64
	for id, n := range added {
		if n == 0 {
			t.Errorf("blob %v: no caller was told it added bytes", id.Short())
		}
		total += int64(n)
	}
	st := r.Stats()
	if st.BytesNew != total || st.BlobsNew != int64(len(added)) {
		t.Errorf("stats %+v, callers saw %d blobs, %d bytes added", st, len(added), total)
	}
	if st.PacksWritten < 2 {
		t.Errorf("wrote %d packs, want several at a 32 KiB pack size", st.PacksWritten)
	}

	r2, err := Open(ctx, be, TestPassword, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := r2.Index().Len(); n != len(added) {
		t.Errorf("reopened index holds %d blobs, want %d", n, len(added))
	}
	for id := range added {
		if _, err := r2.LoadChunk(ctx, chunk.Handle{ID: id, Kind: chunk.KindData}, nil); err != nil {
			t.Error(err)
		}
	}
}

func TestInterruptedSessionKeepsIndexedPacks(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := TestRepositoryWithBackend(t, be, TestPackSize(MinPackSize))
	// Every blob is larger than a pack, so each SaveChunk finishes one pack.
	const n = 2*indexEveryPacks + 5
	for i := range n {
		if _, _, err := r.SaveChunk(ctx, chunk.KindData, randomBytes(uint64(i), MinPackSize+1)); err != nil {
			t.Fatal(err)
		}
	}
	// The process dies here, after its uploads but without Flush.
	if err := r.waitUploads(ctx); err != nil {
		t.Fatal(err)
	}

	r2, err := Open(ctx, be, TestPassword, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r2.Index().Len(), 2*indexEveryPacks; got != want {
		t.Fatalf("reopened index holds %d blobs, want the %d listed in index files", got, want)
	}
	newBlobs := 0
	for i := range n {
		_, added, err := r2.SaveChunk(ctx, chunk.KindData, randomBytes(uint64(i), MinPackSize+1))
		if err != nil {
			t.Fatal(err)
		}
		if added > 0 {
			newBlobs++
		}
	}
	mustFlush(t, r2)
	if newBlobs != n-2*indexEveryPacks {
		t.Errorf("next session stored %d blobs again, want only the %d unindexed ones", newBlobs, n-2*indexEveryPacks)
	}
}

func TestUploadFailureSurfacesFromFlush(t *testing.T) {
	ctx := context.Background()
	fb := faulty.New(mem.New())
	r := TestRepositoryWithBackend(t, fb)
	fb.FailSaveAfter(1, faulty.ErrInjected)

	data := randomBytes(7, 10<<10)
	if _, _, err := r.SaveChunk(ctx, chunk.KindData, data); err != nil {
		t.Fatalf("SaveChunk before any upload: %v", err)
	}
	err := r.Flush(ctx)
	if !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("Flush = %v, want the injected save error", err)
	}
	if r.HasChunk(chunk.Handle{ID: r.HashChunk(data), Kind: chunk.KindData}) {
		t.Error("a blob whose pack failed to upload is still reported as stored")
	}

	// The error was reported; a new session stores the blob again.
	fb.FailSaveAfter(0, nil)
	_, added, err := r.SaveChunk(ctx, chunk.KindData, data)
	if err != nil || added == 0 {
		t.Fatalf("SaveChunk after the failure: added %d, err %v; want the blob stored again", added, err)
	}
	mustFlush(t, r)
	if _, err := r.LoadChunk(ctx, chunk.Handle{ID: r.HashChunk(data), Kind: chunk.KindData}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestUploadFailureSurfacesFromSaveChunk(t *testing.T) {
	ctx := context.Background()
	fb := faulty.New(mem.New())
	r := TestRepositoryWithBackend(t, fb, TestPackSize(MinPackSize))
	fb.FailSaveAfter(1, faulty.ErrInjected)
	var err error
	// Each blob fills a pack; a later call sees an earlier upload fail.
	for i := 0; i < 50 && err == nil; i++ {
		_, _, err = r.SaveChunk(ctx, chunk.KindData, randomBytes(uint64(i), MinPackSize))
		if err == nil {
			err = r.waitUploads(ctx)
		}
	}
	if !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("SaveChunk = %v, want the injected error of an earlier upload", err)
	}
	if err := r.Flush(ctx); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("Flush = %v, want the injected error", err)
	}
	n := 0
	_ = r.Backend().List(ctx, backend.Pack, func(backend.FileInfo) error { n++; return nil })
	if n != 0 {
		t.Errorf("%d packs stored although every save failed", n)
	}
}

func TestSaveChunkCancelled(t *testing.T) {
	r := TestRepository(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := r.SaveChunk(ctx, chunk.KindData, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("SaveChunk with a cancelled context = %v", err)
	}
	if r.HasChunk(chunk.Handle{ID: r.HashChunk([]byte("x")), Kind: chunk.KindData}) {
		t.Error("a blob whose save was cancelled is reported as stored")
	}
}

// A pipeline saves chunks under a context that ends when the pipeline does,
// often before the uploads its last SaveChunk calls started have finished.
// Those uploads must not be cancelled with it: Flush under a live context
// must store every blob.
func TestUploadsOutliveTheSaveChunkContext(t *testing.T) {
	be := mem.New()
	r := TestRepositoryWithBackend(t, be, TestPackSize(MinPackSize))
	ctx, cancel := context.WithCancel(context.Background())
	var ids []chunk.ID
	for i := range 64 {
		id, _, err := r.SaveChunk(ctx, chunk.KindData, randomBytes(uint64(i), 3000))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	cancel() // the pipeline is over; some packs may still be uploading
	if err := r.Flush(context.Background()); err != nil {
		t.Fatalf("Flush after the saving context ended: %v", err)
	}
	for _, id := range ids {
		if _, err := r.LoadChunk(context.Background(), chunk.Handle{ID: id, Kind: chunk.KindData}, nil); err != nil {
			t.Fatalf("blob %v lost: %v", id.Short(), err)
		}
	}
}

// TestPacksMovedIntoLocalRepository saves through a local repository, whose
// backend takes packs as files (fileSaver), and checks that every blob
// reads back after reopening, that packs were written in place (no copy
// through os.TempDir) and that no temporary file is left.
func TestPacksMovedIntoLocalRepository(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	be, err := local.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := be.CreateTempFile(backend.Pack); err != nil {
		t.Skipf("the backend cannot make unnamed temporary files here: %v", err)
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	r := TestRepositoryWithBackend(t, be, TestPackSize(64<<10))
	var ids []chunk.ID
	for i := range 40 {
		id, _, err := r.SaveChunk(ctx, chunk.KindData, randomBytes(uint64(i), 10<<10))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	mustFlush(t, r)
	if st := r.Stats(); st.PacksWritten < 4 {
		t.Errorf("wrote %d packs, want several", st.PacksWritten)
	}
	if r.noDirect.Load() {
		t.Error("packs were written to os.TempDir(), not into the repository")
	}
	r2, err := Open(ctx, be, TestPassword, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, err := r2.LoadChunk(ctx, chunk.Handle{ID: id, Kind: chunk.KindData}, nil); err != nil {
			t.Fatal(err)
		}
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".") {
			t.Errorf("temporary file %s left behind", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("%d files left in TMPDIR", len(left))
	}
}

// TestTemporaryPackFilesLeaveNothing checks that packs written to
// os.TempDir() (for backends that take no files) leave nothing there, after
// Flush and after a session closed without one.
func TestTemporaryPackFilesLeaveNothing(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	r := TestRepository(t, TestPackSize(32<<10))
	for i := range 20 {
		if _, _, err := r.SaveChunk(ctx, chunk.KindData, randomBytes(uint64(i), 5<<10)); err != nil {
			t.Fatal(err)
		}
	}
	mustFlush(t, r)
	if _, _, err := r.SaveChunk(ctx, chunk.KindData, randomBytes(99, 5<<10)); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("%d files left in TMPDIR", len(left))
	}
}
