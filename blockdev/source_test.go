package blockdev

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/snapshot"
)

// supportsHoles skips the test unless the file system of dir keeps holes.
func supportsHoles(t testing.TB, dir string) {
	t.Helper()
	p := dir + "/probe"
	truncate(t, p, 8*miB)
	writeAt(t, p, 4*miB, []byte{1})
	s, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer os.Remove(p)
	if !s.holes {
		t.Skip("the file system of the temp dir reports no holes")
	}
}

func TestRanges(t *testing.T) {
	dir := t.TempDir()
	supportsHoles(t, dir)
	path := dir + "/disk.img"
	truncate(t, path, 1*miB)
	writeAt(t, path, 64*kiB, randomBytes(1, 8*kiB))
	writeAt(t, path, 512*kiB, randomBytes(2, 4*kiB))
	writeAt(t, path, 1*miB, randomBytes(3, 100)) // unaligned end

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Size() != 1*miB+100 || s.Device() || s.Name() != path {
		t.Fatalf("size %d device %v name %q", s.Size(), s.Device(), s.Name())
	}
	var got []Range
	if err := s.Ranges(context.Background(), func(r Range) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []Range{
		{0, 64 * kiB, true},
		{64 * kiB, 8 * kiB, false},
		{72 * kiB, 440 * kiB, true},
		{512 * kiB, 4 * kiB, false},
		{516 * kiB, 508 * kiB, true},
		{1 * miB, 100, false},
	}
	if len(got) != len(want) {
		t.Fatalf("ranges %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("range %d is %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestOpenRefusesOtherFiles(t *testing.T) {
	for _, path := range []string{t.TempDir(), "/dev/null", t.TempDir() + "/missing"} {
		if s, err := Open(path); err == nil {
			s.Close()
			t.Errorf("Open(%s) succeeded", path)
		}
	}
}

// TestStreamEqualsDenseFile checks that a stream gives the same image as a
// file without holes holding the same bytes.
func TestStreamEqualsDenseFile(t *testing.T) {
	path := t.TempDir() + "/dense.img"
	img := append(randomBytes(1, 700*kiB), make([]byte, 300*kiB)...)
	img = append(img, randomBytes(2, 333*kiB+17)...)
	writeAt(t, path, 0, img)

	m := snapshot.NewMemStore()
	opts := BackupOptions{Params: testParams, SegmentSize: testSegment}
	file := backupPath(t, path, m, opts)
	stream, err := Backup(context.Background(), OpenReader(bytes.NewReader(img), "-"), m, storeHasher{m}, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkSame(t, m, file, stream)
	if stream.Digest != imageDigestHex(img) || stream.Size != uint64(len(img)) {
		t.Fatalf("stream digest %s size %d, want %s %d", stream.Digest, stream.Size, imageDigestHex(img), len(img))
	}
	if stream.BytesZero < 290*kiB {
		t.Errorf("only %d zero bytes became holes", stream.BytesZero)
	}
}

func TestEmptySources(t *testing.T) {
	m := snapshot.NewMemStore()
	opts := BackupOptions{Params: testParams, SegmentSize: testSegment}
	path := t.TempDir() + "/empty.img"
	truncate(t, path, 0)
	for name, res := range map[string]*BackupResult{
		"file":   backupPath(t, path, m, opts),
		"stream": backupStream(t, path, m, opts),
	} {
		if res.Size != 0 || res.Extents != 0 || res.Digest != imageDigestHex(nil) {
			t.Errorf("%s: size %d, %d extents, digest %s", name, res.Size, res.Extents, res.Digest)
		}
	}
}

// TestSourceChangesWhileRead checks that a file that shrinks or grows while
// it is read gives an error, never a result.
func TestSourceChangesWhileRead(t *testing.T) {
	for _, tc := range []struct {
		name    string
		newSize int64
	}{
		{"shrinks into the next segment", 300 * kiB},
		{"shrinks to nothing", 0},
		{"grows", 3 * miB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := t.TempDir() + "/disk.img"
			writeAt(t, path, 0, randomBytes(1, 2*miB))
			src, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			reads := 0
			src.afterRead = func(int64, int) {
				if reads++; reads == 1 {
					truncate(t, path, tc.newSize)
				}
			}
			m := snapshot.NewMemStore()
			opts := BackupOptions{Params: testParams, SegmentSize: testSegment, Workers: 1}
			res, err := Backup(context.Background(), src, m, storeHasher{m}, opts)
			if !errors.Is(err, ErrSourceChanged) {
				t.Fatalf("got result %v and error %v, want ErrSourceChanged", res, err)
			}
		})
	}
}

// failingReader returns its data, then an error.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestStreamReadError(t *testing.T) {
	m := snapshot.NewMemStore()
	boom := errors.New("pipe broke")
	src := OpenReader(&failingReader{data: randomBytes(1, 600*kiB), err: boom}, "stdin")
	_, err := Backup(context.Background(), src, m, storeHasher{m}, BackupOptions{Params: testParams, SegmentSize: testSegment})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the read error", err)
	}
}

// failingSaver fails every save after the first n.
type failingSaver struct {
	*snapshot.MemStore
	n atomic.Int64
}

var errSaveFailed = errors.New("disk full")

func (s *failingSaver) SaveChunk(ctx context.Context, k chunk.Kind, data []byte) (chunk.ID, int, error) {
	if s.n.Add(-1) < 0 {
		return chunk.ID{}, 0, errSaveFailed
	}
	return s.MemStore.SaveChunk(ctx, k, data)
}

func TestBackupErrors(t *testing.T) {
	path := t.TempDir() + "/disk.img"
	writeAt(t, path, 0, randomBytes(1, 2*miB))
	opts := BackupOptions{Params: testParams, SegmentSize: testSegment, Workers: 3}

	t.Run("save fails", func(t *testing.T) {
		src, _ := Open(path)
		defer src.Close()
		m := snapshot.NewMemStore()
		saver := &failingSaver{MemStore: m}
		saver.n.Store(10)
		_, err := Backup(context.Background(), src, saver, storeHasher{m}, opts)
		if !errors.Is(err, errSaveFailed) {
			t.Fatalf("got %v, want the save error", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		src, _ := Open(path)
		defer src.Close()
		ctx, cancel := context.WithCancel(context.Background())
		src.afterRead = func(int64, int) { cancel() }
		m := snapshot.NewMemStore()
		_, err := Backup(ctx, src, m, storeHasher{m}, opts)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
	t.Run("bad options", func(t *testing.T) {
		src, _ := Open(path)
		defer src.Close()
		m := snapshot.NewMemStore()
		for _, o := range []BackupOptions{
			{Params: testParams, SegmentSize: 1000},
			{Params: testParams, SegmentSize: 16 * kiB}, // below Params.Max
			{Params: DefaultParams},                     // no polynomial
			{Params: testParams, Parent: &snapshot.Content{}},
		} {
			if _, err := Backup(context.Background(), src, m, storeHasher{m}, o); err == nil {
				t.Errorf("options %+v accepted", o)
			}
		}
	})
	t.Run("damaged parent", func(t *testing.T) {
		m := snapshot.NewMemStore()
		img := t.TempDir() + "/big.img"
		writeAt(t, img, 0, randomBytes(2, 4*miB)) // enough extents for pages
		parent := backupPath(t, img, m, opts)
		if parent.Content.Level == 0 {
			t.Fatal("parent content list has no pages")
		}
		m.Corrupt(parent.Content.Pages[0].ID)
		src, _ := Open(img)
		defer src.Close()
		o := opts
		o.Parent, o.ParentLoader = &parent.Content, m
		if _, err := Backup(context.Background(), src, m, storeHasher{m}, o); err == nil || !strings.Contains(err.Error(), "parent") {
			t.Fatalf("got %v, want an error about the parent", err)
		}
		o.Force = true
		if _, err := Backup(context.Background(), src, m, storeHasher{m}, o); err != nil {
			t.Fatalf("with Force: %v", err)
		}
	})
}

// allocated returns the bytes the file at path occupies on disk.
func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}
