package snapshot

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleSnapshot() *Snapshot {
	parent := ID{9, 8, 7}
	t0 := time.Date(2025, 3, 1, 2, 3, 4, 567891234, time.UTC)
	return &Snapshot{
		Time: t0, Host: "nas", Username: "root", UID: 0, GID: 0,
		Tags: []string{"nightly", "disk"}, Paths: []string{"/dev/sda"}, Kind: KindImage,
		Parent: &parent, Tree: fakeID(1),
		Summary: &Summary{FilesNew: 1, BytesRead: 1 << 30, BytesSkippedHoles: 5, DataAdded: 12345, DataBlobs: 7, TreeBlobs: 3,
			BackupStart: t0.Add(-time.Minute), BackupEnd: t0, DurationSeconds: 60.5},
		Image:          &ImageInfo{Size: 1 << 40, TreeDigest: strings.Repeat("cd", 32), Digest: strings.Repeat("ab", 32), Name: "/dev/sda"},
		ProgramVersion: "imago 0.1.0",
		Version:        FormatVersion,
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	files := sampleSnapshot()
	files.Kind, files.Image, files.Parent, files.Tags = KindFiles, nil, nil, nil
	for _, s := range []*Snapshot{sampleSnapshot(), files} {
		b, err := Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("round trip changed the snapshot:\n got %+v\nwant %+v", got, s)
		}
	}
}

func TestSnapshotJSONFields(t *testing.T) {
	// Field names are the format: readers in other versions depend on them.
	b, err := Encode(sampleSnapshot())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"time", "host", "username", "uid", "gid", "tags", "paths", "kind", "parent", "tree", "summary", "image", "program_version", "version"} {
		if _, ok := m[k]; !ok {
			t.Errorf("field %q missing from %s", k, b)
		}
	}
	if string(m["time"]) != `"2025-03-01T02:03:04.567891234Z"` || string(m["kind"]) != `"image"` || string(m["version"]) != "1" {
		t.Errorf("time %s, kind %s, version %s", m["time"], m["kind"], m["version"])
	}
	// A renamed digest field would make restores of existing snapshots skip
	// their check without a word.
	for _, k := range []string{"size", "tree_digest", "digest", "name"} {
		if !bytes.Contains(m["image"], []byte(`"`+k+`"`)) {
			t.Errorf("image field %q missing from %s", k, m["image"])
		}
	}
	for _, k := range []string{"files_new", "bytes_skipped_holes", "data_added", "backup_start", "duration_seconds", "total_files_processed"} {
		if !bytes.Contains(m["summary"], []byte(`"`+k+`"`)) {
			t.Errorf("summary field %q missing", k)
		}
	}
	s := sampleSnapshot()
	s.Kind, s.Image, s.Parent = KindFiles, nil, nil
	b, _ = Encode(s)
	if bytes.Contains(b, []byte(`"parent"`)) || bytes.Contains(b, []byte(`"image"`)) {
		t.Errorf("empty parent or image written: %s", b)
	}
}

func TestEncodeSetsVersion(t *testing.T) {
	s := sampleSnapshot()
	s.Version = 0
	b, err := Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version != 0 {
		t.Fatal("Encode modified its argument")
	}
	got, err := Decode(b)
	if err != nil || got.Version != FormatVersion {
		t.Fatalf("version %v, err %v", got, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	valid, err := Encode(sampleSnapshot())
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(valid, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"not JSON", []byte("snapshot")},
		{"trailing data", append(bytes.Clone(valid), []byte(" {}")...)},
		{"version 2", edit(func(m map[string]any) { m["version"] = 2 })},
		{"no version", edit(func(m map[string]any) { delete(m, "version") })},
		{"unknown kind", edit(func(m map[string]any) { m["kind"] = "disk" })},
		{"no time", edit(func(m map[string]any) { delete(m, "time") })},
		{"bad time", edit(func(m map[string]any) { m["time"] = "yesterday" })},
		{"no tree", edit(func(m map[string]any) { delete(m, "tree") })},
		{"short tree ID", edit(func(m map[string]any) { m["tree"] = "abcd" })},
		{"null parent", edit(func(m map[string]any) { m["parent"] = strings.Repeat("0", 64) })},
		{"image kind without image", edit(func(m map[string]any) { delete(m, "image") })},
		{"files kind with image", edit(func(m map[string]any) { m["kind"] = "files" })},
		{"bad digest", edit(func(m map[string]any) { m["image"].(map[string]any)["digest"] = "ABCD" })},
		{"bad tree digest", edit(func(m map[string]any) { m["image"].(map[string]any)["tree_digest"] = strings.Repeat("g", 64) })},
		{"negative uid", edit(func(m map[string]any) { m["uid"] = -1 })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := Decode(tt.b); err == nil {
				t.Fatalf("Decode accepted it: %+v", s)
			} else {
				wantFormatError(t, err)
			}
		})
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	for _, f := range []func(*Snapshot){
		func(s *Snapshot) { s.Kind = "" },
		func(s *Snapshot) { s.Tree = [32]byte{} },
		func(s *Snapshot) { s.Version = 2 },
		func(s *Snapshot) { s.Image = nil },
	} {
		s := sampleSnapshot()
		f(s)
		if _, err := Encode(s); err == nil {
			t.Errorf("Encode accepted %+v", s)
		}
	}
}

func TestParseID(t *testing.T) {
	id := ID{0xab, 0xcd, 0xef, 0x01}
	s := id.String()
	if len(s) != 64 || id.Short() != "abcdef01" {
		t.Fatalf("String %q, Short %q", s, id.Short())
	}
	for _, in := range []string{s, strings.ToUpper(s)} {
		got, err := ParseID(in)
		if err != nil || got != id {
			t.Fatalf("ParseID(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", s[:63], s + "0", "zz" + s[2:]} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) succeeded", bad)
		}
	}
	var back ID
	if txt, _ := id.MarshalText(); back.UnmarshalText(txt) != nil || back != id {
		t.Fatal("text marshalling does not round-trip")
	}
}

func TestHasTagsAndPaths(t *testing.T) {
	s := &Snapshot{Tags: []string{"a", "b"}, Paths: []string{"/home", "/etc"}}
	tests := []struct {
		tags, paths []string
		wantTags    bool
		wantPaths   bool
	}{
		{nil, nil, true, true},
		{[]string{"a"}, []string{"/home"}, true, true},
		{[]string{"b", "a"}, []string{"/etc", "/home"}, true, true},
		{[]string{"a", "c"}, []string{"/home", "/var"}, false, false},
		{[]string{"A"}, []string{"/home/"}, false, false},
	}
	for _, tt := range tests {
		if got := s.HasTags(tt.tags); got != tt.wantTags {
			t.Errorf("HasTags(%q) = %v", tt.tags, got)
		}
		if got := s.HasPaths(tt.paths); got != tt.wantPaths {
			t.Errorf("HasPaths(%q) = %v", tt.paths, got)
		}
	}
}

func TestSortByTime(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	a := &Snapshot{Time: t0.Add(2 * time.Hour), Host: "a"}
	b := &Snapshot{Time: t0, Host: "b"}
	c := &Snapshot{Time: t0.Add(2 * time.Hour), Host: "c"}
	d := &Snapshot{Time: t0.Add(time.Hour).In(time.FixedZone("x", 3600*5)), Host: "d"}
	snaps := []*Snapshot{a, b, c, d}
	SortByTime(snaps)
	if got := []*Snapshot{b, d, a, c}; !reflect.DeepEqual(snaps, got) {
		t.Fatalf("order %v %v %v %v", snaps[0].Host, snaps[1].Host, snaps[2].Host, snaps[3].Host)
	}
}

func FuzzDecode(f *testing.F) {
	b, err := Encode(sampleSnapshot())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"time":"2025-01-01T00:00:00Z","kind":"files","tree":"` + strings.Repeat("1", 64) + `","version":1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if err != nil {
			wantFormatError(t, err)
			return
		}
		enc, err := Encode(s)
		if err != nil {
			t.Fatalf("decoded snapshot does not encode: %v", err)
		}
		s2, err := Decode(enc)
		if err != nil {
			t.Fatal(err)
		}
		enc2, err := Encode(s2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encode(decode(encode(s))) differs: %v", err)
		}
	})
}
