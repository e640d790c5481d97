package archive_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
	"github.com/imagobackup/imago/snapshot/archive"
)

// testPolynomial is a fixed irreducible polynomial of degree 53.
const testPolynomial = 0x3DA3358B4DC173

// testParams cut small chunks (8 KiB to 64 KiB, ~24 KiB on average) so
// that files of a few hundred KiB span many chunks and tests stay fast.
var testParams = chunk.Params{Polynomial: testPolynomial, Min: 8 << 10, Max: 64 << 10, AverageBits: 14}

// reported collects the OnError calls of a run.
type reported struct {
	mu   sync.Mutex
	errs map[string]error
}

func (r *reported) onError(path string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.errs == nil {
		r.errs = make(map[string]error)
	}
	r.errs[path] = err
}

func (r *reported) get(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errs[path]
}

// options returns Options with the test parameters and an error collector.
func options() (archive.Options, *reported) {
	rep := &reported{}
	return archive.Options{Params: testParams, Workers: 2, OnError: rep.onError}, rep
}

// run backs up paths and fails the test on an error.
func run(t testing.TB, store *snapshot.MemStore, paths []string, opts archive.Options) *archive.Result {
	t.Helper()
	res, err := archive.Run(context.Background(), store, store, paths, opts)
	if err != nil {
		t.Fatalf("Run(%q): %v", paths, err)
	}
	return res
}

// find returns the node at the absolute path p in the snapshot with root
// tree root, or nil when there is none.
func find(t testing.TB, store *snapshot.MemStore, root chunk.ID, p string) *snapshot.Node {
	t.Helper()
	n, err := snapshot.FindNode(context.Background(), store, root, strings.TrimPrefix(p, "/"))
	if err != nil {
		return nil
	}
	return n
}

// mustFind is find that fails the test on a missing node.
func mustFind(t testing.TB, store *snapshot.MemStore, root chunk.ID, p string) *snapshot.Node {
	t.Helper()
	n := find(t, store, root, p)
	if n == nil {
		t.Fatalf("no node for %s in the snapshot", p)
	}
	return n
}

// content returns the bytes of a file node.
func content(t testing.TB, store *snapshot.MemStore, n *snapshot.Node) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := snapshot.Dump(context.Background(), store, n.Content, &buf, 2); err != nil {
		t.Fatalf("dump %q: %v", n.Name, err)
	}
	return buf.Bytes()
}

// extents returns the extent list of a file node.
func extents(t testing.TB, store *snapshot.MemStore, n *snapshot.Node) []snapshot.Extent {
	t.Helper()
	var xs []snapshot.Extent
	r := snapshot.NewContentReader(store, n.Content)
	err := r.Extents(context.Background(), 0, func(_ uint64, e snapshot.Extent) error {
		xs = append(xs, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return xs
}

// randomBytes returns n pseudo-random bytes from seed.
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	_, _ = r.Read(b)
	return b
}

// writeFile creates path (and its directories) with data.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
