package blockdev

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// fixedConfigs are fixed-size chunkings (the repository's default image
// chunker is fixed 16 KiB) with segments of a few chunks and of many, so
// that hashAhead's batches end at segment edges and at the window's end.
var fixedConfigs = []BackupOptions{
	{Params: chunk.Params{Polynomial: testPol, Min: 4 * kiB, Max: 4 * kiB, AverageBits: 12}, SegmentSize: testSegment, Workers: 3},
	{Params: chunk.Params{Polynomial: testPol, Min: 16 * kiB, Max: 16 * kiB, AverageBits: 14}, SegmentSize: 2 * miB, Workers: 2},
}

// backupSplitter is backupPath with the splitter cutting fixed-size chunks
// and no fixed-size shortcut, as Backup did before they existed.
func backupSplitter(t testing.TB, path string, m *snapshot.MemStore, opts BackupOptions) *BackupResult {
	t.Helper()
	testNoFixedCutter = true
	defer func() { testNoFixedCutter = false }()
	return backupPath(t, path, m, opts)
}

// TestFixedGuidedEqualsFull checks, for fixed-size chunks, that the
// fixed-size cutter and zero shortcuts give exactly the content list the
// splitter gives, with and without a parent, wherever the image changed.
func TestFixedGuidedEqualsFull(t *testing.T) {
	for _, opts := range fixedConfigs {
		t.Run(fmt.Sprintf("%dK-seg%dK", opts.Params.Max/kiB, opts.SegmentSize/kiB), func(t *testing.T) {
			g := newGuidedBase(t, opts)
			m, parent, streamParent := g.m, g.parent, g.streamParent
			checkSame(t, m, backupSplitter(t, g.path, m, opts), parent)

			for _, mu := range mutations {
				t.Run(mu.name, func(t *testing.T) {
					path, want := g.mutated(t, mu.fn)

					ref := backupSplitter(t, path, m, opts)
					full := backupPath(t, path, m, opts)
					checkSame(t, m, ref, full)
					guidedOpts := opts
					guidedOpts.Parent, guidedOpts.ParentLoader = &parent.Content, m
					guided := backupPath(t, path, m, guidedOpts)
					checkSame(t, m, ref, guided)
					checkSame(t, m, ref, backupSplitter(t, path, m, guidedOpts))
					checkReadsBack(t, m, guided, want)

					refStream := backupStream(t, path, m, opts)
					checkSame(t, m, refStream, backupStream(t, path, m, guidedOpts))
					guidedOpts.Parent = &streamParent.Content
					checkSame(t, m, ref, backupPath(t, path, m, guidedOpts))
				})
			}
		})
	}
}

// TestFixedUnchangedSkipsChunker checks that an unchanged image cut into
// fixed-size chunks is matched by hash alone, its allocated zeros
// included.
func TestFixedUnchangedSkipsChunker(t *testing.T) {
	for _, opts := range fixedConfigs {
		path := t.TempDir() + "/disk.img"
		baseImage(t, path)
		m := snapshot.NewMemStore()
		parent := backupPath(t, path, m, opts)
		opts.Parent, opts.ParentLoader = &parent.Content, m
		res := backupPath(t, path, m, opts)
		if res.BytesChunked != 0 || res.DataBlobs != 0 {
			t.Errorf("%d KiB: chunker ran over %d bytes, %d data blobs saved again", opts.Params.Max/kiB, res.BytesChunked, res.DataBlobs)
		}
		if !reflect.DeepEqual(res.Content, parent.Content) {
			t.Errorf("%d KiB: unchanged image has a different content root", opts.Params.Max/kiB)
		}
	}
}
