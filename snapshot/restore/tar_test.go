package restore

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagobackup/imago/snapshot"
)

func TestWriteTar(t *testing.T) {
	data := randomBytes(8, 3*testChunkSize+5)
	entries := []entry{
		{path: "/home/u", typ: snapshot.TypeDir, mode: 0o2750, uid: 1000, gid: 1000, mtime: baseTime + 3},
		{path: "/home/u/a", typ: snapshot.TypeFile, mode: 0o4755, uid: 1000, gid: 100, data: data, inode: 5, links: 2,
			xattrs: []snapshot.Xattr{{Name: "user.k", Value: []byte("v\x00w")}}},
		{path: "/home/u/b\xff", typ: snapshot.TypeFile, mode: 0o644, data: data, inode: 5, links: 2},
		{path: "/home/u/fifo", typ: snapshot.TypeFIFO, mode: 0o600},
		{path: "/home/u/null", typ: snapshot.TypeCharDev, mode: 0o666, rdev: unix.Mkdev(1, 3)},
		{path: "/home/u/sock", typ: snapshot.TypeSocket, mode: 0o777},
		{path: "/home/u/sparse", typ: snapshot.TypeFile, mode: 0o600, parts: []part{{hole: 100}, {data: []byte("end")}}},
		{path: "/home/u/sym", typ: snapshot.TypeSymlink, mode: 0o777, target: "a"},
		{path: "/other/x", typ: snapshot.TypeFile, mode: 0o644, data: []byte("x")},
	}
	s := snapshot.NewMemStore()
	root := buildSnapshot(t, s, entries)

	type want struct {
		name     string
		typ      byte
		mode     int64
		linkname string
		content  []byte
		entry    *entry
	}
	wants := []want{
		{name: "home/u/", typ: tar.TypeDir, mode: 0o2750, entry: &entries[0]},
		{name: "home/u/a", typ: tar.TypeReg, mode: 0o4755, content: data, entry: &entries[1]},
		{name: "home/u/b\xff", typ: tar.TypeLink, mode: 0o644, linkname: "home/u/a", entry: &entries[2]},
		{name: "home/u/fifo", typ: tar.TypeFifo, mode: 0o600, entry: &entries[3]},
		{name: "home/u/null", typ: tar.TypeChar, mode: 0o666, entry: &entries[4]},
		{name: "home/u/sparse", typ: tar.TypeReg, mode: 0o600, content: entries[6].content(), entry: &entries[6]},
		{name: "home/u/sym", typ: tar.TypeSymlink, mode: 0o777, linkname: "a", entry: &entries[7]},
	}
	var buf bytes.Buffer
	if err := WriteTar(context.Background(), s, root, "home/u/", &buf); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	for _, w := range wants {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("want entry %q: %v", w.name, err)
		}
		if h.Name != w.name || h.Typeflag != w.typ || h.Mode != w.mode || h.Linkname != w.linkname {
			t.Errorf("entry %q type %c mode %#o link %q; want %q %c %#o %q", h.Name, h.Typeflag, h.Mode, h.Linkname, w.name, w.typ, w.mode, w.linkname)
		}
		atime, mtime := w.entry.times()
		if h.ModTime.UnixNano() != mtime || h.AccessTime.UnixNano() != atime {
			t.Errorf("%s: times %v %v, want mtime %d atime %d", h.Name, h.ModTime, h.AccessTime, mtime, atime)
		}
		if h.Uid != int(w.entry.uid) || h.Gid != int(w.entry.gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", h.Name, h.Uid, h.Gid, w.entry.uid, w.entry.gid)
		}
		if w.typ == tar.TypeChar && (h.Devmajor != 1 || h.Devminor != 3) {
			t.Errorf("%s: device %d,%d, want 1,3", h.Name, h.Devmajor, h.Devminor)
		}
		for _, x := range w.entry.xattrs {
			if got := h.PAXRecords["SCHILY.xattr."+x.Name]; got != string(x.Value) {
				t.Errorf("%s: xattr %s = %q, want %q", h.Name, x.Name, got, x.Value)
			}
		}
		got, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, w.content) {
			t.Errorf("%s: %d bytes of content, want %d", h.Name, len(got), len(w.content))
		}
	}
	if h, err := tr.Next(); err != io.EOF {
		t.Errorf("extra entry %v (%v); the socket and paths outside the subtree must be left out", h, err)
	}
}

func TestWriteTarWholeSnapshot(t *testing.T) {
	entries := []entry{
		{path: "/a/f", typ: snapshot.TypeFile, mode: 0o644, data: []byte("f")},
		{path: "/b", typ: snapshot.TypeFile, mode: 0o644, data: []byte("b")},
	}
	s := snapshot.NewMemStore()
	root := buildSnapshot(t, s, entries)
	for _, p := range []string{"/", ""} {
		var buf bytes.Buffer
		if err := WriteTar(context.Background(), s, root, p, &buf); err != nil {
			t.Fatal(err)
		}
		var names []string
		tr := tar.NewReader(&buf)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
		}
		if got := strings.Join(names, " "); got != "a/ a/f b" {
			t.Errorf("WriteTar(%q) entries %q, want \"a/ a/f b\"", p, got)
		}
	}
}

func TestDumpFile(t *testing.T) {
	data := randomBytes(9, 5*testChunkSize+1)
	entries := []entry{
		{path: "/d/f", typ: snapshot.TypeFile, mode: 0o644, parts: []part{{data: data}, {hole: 4096, data: data[:10]}}},
		{path: "/d/empty", typ: snapshot.TypeFile, mode: 0o644},
		{path: "/d/sym", typ: snapshot.TypeSymlink, mode: 0o777, target: "f"},
	}
	s := snapshot.NewMemStore()
	root := buildSnapshot(t, s, entries)
	tests := []struct {
		path    string
		want    []byte
		wantErr error
	}{
		{"/d/f", entries[0].content(), nil},
		{"d/f", entries[0].content(), nil},
		{"/d/empty", nil, nil},
		{"/d", nil, ErrIsDir},
		{"/", nil, ErrIsDir},
		{"/d/sym", nil, ErrNotRegular},
		{"/d/missing", nil, snapshot.ErrNotFound},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		err := DumpFile(context.Background(), s, root, tt.path, &buf)
		if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
			t.Errorf("DumpFile(%q): %v, want %v", tt.path, err, tt.wantErr)
			continue
		}
		if !bytes.Equal(buf.Bytes(), tt.want) {
			t.Errorf("DumpFile(%q): %d bytes, want %d", tt.path, buf.Len(), len(tt.want))
		}
	}
}
