package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagobackup/imago/chunk"
	"github.com/imagobackup/imago/pack"
	"github.com/imagobackup/imago/repo"
	"github.com/imagobackup/imago/repo/crypto"
)

// The golden repository: a small repository written by format version 1,
// committed under testdata and read by TestGoldenRepository on every run,
// so that a change to an encoder or decoder that would make existing
// repositories unreadable fails a test. See docs/FORMAT.md, "Golden
// repositories". It is generated once, on request:
//
//	go test ./cmd/imago -run TestGoldenRepository -update-golden
//
// and must never be regenerated to make a failing test pass: a format
// change adds a new fixture (golden-v2) beside this one.
var updateGolden = flag.Bool("update-golden", false, "regenerate "+goldenDir+" (a new fixture only; see docs/FORMAT.md)")

const (
	// goldenDir holds the repository (repo/) and what it must contain
	// (manifest.json).
	goldenDir = "testdata/golden-v1"
	// goldenSource is where the generator puts the backed-up files: a
	// fixed path, since snapshots record absolute paths.
	goldenSource   = "/tmp/imago-golden-v1"
	goldenHost     = "golden-host"
	goldenUser     = "golden"
	goldenPassword = "golden-v1 fixture password"
	// goldenImageBlock is the image chunk size of the fixture repository
	// (init --image-chunker fixed --image-chunk-avg 4KiB, the minimum), so
	// that a small image has enough extents for several content-list pages.
	goldenImageBlock = 4096
)

// goldenManifest lists what the golden repository holds.
type goldenManifest struct {
	Comment       string           `json:"comment"`
	FormatVersion int              `json:"format_version"`
	Password      string           `json:"password"`
	Snapshots     []goldenSnapshot `json:"snapshots"`
}

type goldenSnapshot struct {
	ID     string   `json:"id"`
	Kind   string   `json:"kind"`
	Time   string   `json:"time"`
	Host   string   `json:"host"`
	Tags   []string `json:"tags"`
	Paths  []string `json:"paths"`
	Parent string   `json:"parent,omitempty"`
	// Entries (files snapshots) are every path a restore creates, the
	// directories above the backed-up path included.
	Entries []goldenEntry `json:"entries,omitempty"`
	Image   *goldenImage  `json:"image,omitempty"`
}

type goldenEntry struct {
	Path string `json:"path"`
	Type string `json:"type"` // dir, file or symlink
	// Mode (octal permission bits) and MTime (RFC 3339) are set for what
	// the generator made (symlinks: MTime only), not for the directories
	// above it.
	Mode   string `json:"mode,omitempty"`
	MTime  string `json:"mtime,omitempty"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	Target string `json:"target,omitempty"`
}

type goldenImage struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Digest and TreeDigest are the image digests the snapshot records:
	// the plain BLAKE3 of the image (golden-v1) or the leaf digest (later
	// fixtures; docs/FORMAT.md §7).
	Digest     string `json:"digest"`
	TreeDigest string `json:"tree_digest,omitempty"`
	// Level0Pages and DeltaPages count the level-0 pages of the content
	// list (plain 0x02 pages and 0x03 delta pages, both in Level0Pages).
	Level0Pages int `json:"level0_pages"`
	DeltaPages  int `json:"delta_pages"`
}

// TestGoldenRepository reads the repository in testdata/golden-v1, written
// by an earlier build, with this build: every snapshot lists, checks,
// restores to the recorded bytes, and the repository takes new backups.
func TestGoldenRepository(t *testing.T) {
	if *updateGolden {
		generateGolden(t)
	}
	m := readGoldenManifest(t)
	e := &env{t: t, repo: filepath.Join(t.TempDir(), "repo"), password: m.Password}
	copyTree(t, filepath.Join(goldenDir, "repo"), e.repo)
	at := func(t *testing.T) *env {
		w := *e
		w.t = t
		return &w
	}

	t.Run("snapshots", func(t *testing.T) {
		compareGoldenSnapshots(t, m.Snapshots, listSnapshotsJSON(t, at(t)))
	})
	t.Run("check", func(t *testing.T) {
		at(t).mustRun("check", "--read-data")
	})
	for _, s := range m.Snapshots {
		t.Run("restore "+s.Kind+" "+s.ID[:8], func(t *testing.T) {
			w := at(t)
			if s.Kind == "image" {
				target := filepath.Join(t.TempDir(), "restored.img")
				w.mustRun("restore", s.ID, "--target", target)
				if got := sha256File(t, target); got != s.Image.SHA256 {
					t.Errorf("restored image has sha256 %s, want %s", got, s.Image.SHA256)
				}
				dump := w.mustRun("dump", s.ID)
				if got := sha256Hex([]byte(dump.stdout)); got != s.Image.SHA256 {
					t.Errorf("dump gives %d bytes with sha256 %s, want %d bytes with %s", len(dump.stdout), got, s.Image.Size, s.Image.SHA256)
				}
				return
			}
			target := t.TempDir()
			w.mustRun("restore", s.ID, "--target", target)
			compareGoldenEntries(t, s.Entries, describeGolden(t, target, "", nil))
		})
	}
	t.Run("content-list pages", func(t *testing.T) {
		for _, s := range m.Snapshots {
			if s.Kind != "image" {
				continue
			}
			level0, delta := goldenPages(t, e.repo, m.Password, s.ID)
			if level0 != s.Image.Level0Pages || delta != s.Image.DeltaPages {
				t.Errorf("image snapshot %s: %d level-0 pages, %d of them delta pages; want %d and %d",
					s.ID[:8], level0, delta, s.Image.Level0Pages, s.Image.DeltaPages)
			}
		}
	})
	t.Run("cat pages", func(t *testing.T) {
		w := at(t)
		for _, s := range m.Snapshots {
			if s.Kind != "image" {
				continue
			}
			level0, delta := catPages(t, w, s.ID)
			if level0 != s.Image.Level0Pages || delta != s.Image.DeltaPages {
				t.Errorf("cat tree on the pages of image snapshot %s: %d level-0 pages, %d of them delta pages; want %d and %d",
					s.ID[:8], level0, delta, s.Image.Level0Pages, s.Image.DeltaPages)
			}
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		w := at(t)
		w.password = m.Password + "x"
		if r := w.run("snapshots"); r.code != exitWrongPass {
			t.Fatalf("exit %d, want %d; stderr %q", r.code, exitWrongPass, r.stderr)
		}
	})
	t.Run("new backups", func(t *testing.T) {
		goldenNewBackups(t, at(t), m)
	})
}

// goldenNewBackups backs up a new tree and a changed image (with the
// golden repository's last image snapshot as parent) into the copy of the
// golden repository: the old format stays writable.
func goldenNewBackups(t *testing.T, e *env, m goldenManifest) {
	src := filepath.Join(t.TempDir(), "new")
	if err := os.MkdirAll(filepath.Join(src, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(src, "d", "random"), 70000, 42)
	if err := os.WriteFile(filepath.Join(src, "text"), []byte("written after the golden repository\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	files := e.backupJSON("--host", goldenHost, "--tag", "after", src)

	var last *goldenSnapshot
	for i := range m.Snapshots {
		if m.Snapshots[i].Kind == "image" {
			last = &m.Snapshots[i]
		}
	}
	if last == nil {
		t.Fatal("the manifest lists no image snapshot")
	}
	img := filepath.Join(t.TempDir(), last.Image.Name)
	// The old snapshot's plain BLAKE3 digest is checked, the new one's
	// leaf digest below.
	if r := e.mustRun("restore", last.ID, "--target", img); !strings.Contains(r.stdout, "digest verified") {
		t.Errorf("restore of old image snapshot %s did not check its digest: %q", last.ID[:8], r.stdout)
	}
	writeAt(t, img, 3*goldenImageBlock, goldenImageBlock, 7)
	want := sha256File(t, img)
	image := e.backupJSON("--image", "--parent", last.ID, img)
	if num(t, image, "bytes_reused") == 0 {
		t.Errorf("image backup reused nothing from its parent %s: %v", last.ID[:8], image)
	}
	// The changed page is stored as a delta of a page the old build wrote.
	if _, delta := goldenPages(t, e.repo, e.password, image["snapshot_id"].(string)); delta == 0 {
		t.Errorf("image backup with parent %s wrote no delta page", last.ID[:8])
	}

	e.mustRun("check", "--read-data")
	if n := len(snapshotIDs(t, e)); n != len(m.Snapshots)+2 {
		t.Errorf("%d snapshots after two new backups, want %d", n, len(m.Snapshots)+2)
	}
	target := filepath.Join(t.TempDir(), "restored.img")
	if r := e.mustRun("restore", image["snapshot_id"].(string), "--target", target); !strings.Contains(r.stdout, "digest verified") {
		t.Errorf("restore of the new image snapshot did not check its digest: %q", r.stdout)
	}
	if got := sha256File(t, target); got != want {
		t.Errorf("new image snapshot restores with sha256 %s, want %s", got, want)
	}
	dir := t.TempDir()
	e.mustRun("restore", files["snapshot_id"].(string), "--target", dir)
	for _, name := range []string{"d/random", "text"} {
		if a, b := sha256File(t, filepath.Join(src, name)), sha256File(t, filepath.Join(dir, src, name)); a != b {
			t.Errorf("new files snapshot: %s restores with sha256 %s, want %s", name, b, a)
		}
	}
}

func readGoldenManifest(t *testing.T) goldenManifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(goldenDir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m goldenManifest
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if m.FormatVersion != 1 || len(m.Snapshots) == 0 {
		t.Fatalf("manifest: format version %d, %d snapshots", m.FormatVersion, len(m.Snapshots))
	}
	return m
}

// copyTree copies the regular files below src to dst, creating folders.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o700)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// listedSnapshot is a snapshot as snapshots --json prints it.
type listedSnapshot struct {
	ID     string    `json:"id"`
	Time   time.Time `json:"time"`
	Host   string    `json:"host"`
	Tags   []string  `json:"tags"`
	Paths  []string  `json:"paths"`
	Kind   string    `json:"kind"`
	Parent string    `json:"parent"`
	Image  *struct {
		Size       int64  `json:"size"`
		Digest     string `json:"digest"`
		TreeDigest string `json:"tree_digest"`
		Name       string `json:"name"`
	} `json:"image"`
}

func listSnapshotsJSON(t *testing.T, e *env) []listedSnapshot {
	t.Helper()
	r := e.mustRun("snapshots", "--json")
	var list []listedSnapshot
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("snapshots --json: %v\n%s", err, r.stdout)
	}
	return list
}

// compareGoldenSnapshots checks that got lists exactly the snapshots of
// want, with the recorded fields.
func compareGoldenSnapshots(t *testing.T, want []goldenSnapshot, got []listedSnapshot) {
	t.Helper()
	byID := make(map[string]listedSnapshot)
	for _, s := range got {
		byID[s.ID] = s
	}
	if len(got) != len(want) || len(byID) != len(want) {
		t.Errorf("snapshots lists %d snapshots, the manifest %d", len(got), len(want))
	}
	for _, w := range want {
		g, ok := byID[w.ID]
		if !ok {
			t.Errorf("snapshot %s is not listed", w.ID)
			continue
		}
		wt, err := time.Parse(time.RFC3339Nano, w.Time)
		if err != nil {
			t.Fatalf("manifest: %v", err)
		}
		if g.Kind != w.Kind || !g.Time.Equal(wt) || g.Host != w.Host || !slices.Equal(g.Tags, w.Tags) ||
			!slices.Equal(g.Paths, w.Paths) || g.Parent != w.Parent {
			t.Errorf("snapshot %s is listed as %+v, want %+v", w.ID[:8], g, w)
		}
		if (g.Image != nil) != (w.Image != nil) {
			t.Errorf("snapshot %s: image %v, want %v", w.ID[:8], g.Image, w.Image)
		} else if w.Image != nil && (g.Image.Size != w.Image.Size || g.Image.Digest != w.Image.Digest ||
			g.Image.TreeDigest != w.Image.TreeDigest || g.Image.Name != w.Image.Name) {
			t.Errorf("snapshot %s: image %+v, want %+v", w.ID[:8], *g.Image, *w.Image)
		}
	}
}

// describeGolden lists start and every path below it, named as absolute
// paths with root standing for /. meta names the paths whose mode and
// mtime are recorded; nil records them everywhere.
func describeGolden(t *testing.T, root, start string, meta func(p string) bool) []goldenEntry {
	t.Helper()
	var out []goldenEntry
	err := filepath.WalkDir(filepath.Join(root, start), func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := goldenEntry{Path: "/" + filepath.ToSlash(rel)}
		switch {
		case fi.Mode().IsRegular():
			e.Type, e.Size = "file", fi.Size()
			e.SHA256 = sha256File(t, p)
		case fi.IsDir():
			e.Type = "dir"
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Type = "symlink"
			if e.Target, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected type %v", p, fi.Mode().Type())
		}
		if meta == nil || meta(e.Path) {
			if e.Type != "symlink" { // Linux has no mode for symlinks
				e.Mode = fmt.Sprintf("%04o", fi.Mode().Perm())
			}
			e.MTime = fi.ModTime().UTC().Format(time.RFC3339Nano)
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// compareGoldenEntries checks a restored tree against the manifest: the
// same paths, types, contents and link targets, and the mode and mtime
// wherever the manifest records them.
func compareGoldenEntries(t *testing.T, want, got []goldenEntry) {
	t.Helper()
	byPath := make(map[string]goldenEntry)
	for _, g := range got {
		byPath[g.Path] = g
	}
	for _, w := range want {
		g, ok := byPath[w.Path]
		if !ok {
			t.Errorf("%s: not restored", w.Path)
			continue
		}
		delete(byPath, w.Path)
		if w.MTime == "" {
			g.Mode, g.MTime = "", ""
		}
		if g != w {
			t.Errorf("%s: restored as %+v, want %+v", w.Path, g, w)
		}
	}
	for p := range byPath {
		t.Errorf("%s: restored, but not in the manifest", p)
	}
}

// catPages counts the level-0 pages of the image in snapshot id, and the
// delta pages among them, as `imago cat tree` shows them.
func catPages(t *testing.T, e *env, id string) (level0, delta int) {
	t.Helper()
	var snap struct{ Tree string }
	if err := jsonUnmarshal(e.mustRun("cat", "snapshot", id).stdout, &snap); err != nil {
		t.Fatal(err)
	}
	var root struct {
		Nodes []struct {
			Content struct{ Pages []struct{ ID string } }
		}
	}
	if err := jsonUnmarshal(e.mustRun("cat", "tree", snap.Tree).stdout, &root); err != nil || len(root.Nodes) != 1 {
		t.Fatalf("snapshot %s: root tree: %v", id[:8], err)
	}
	var walk func(page string)
	walk = func(page string) {
		var v struct {
			Format string
			Level  int
			Pages  []struct{ ID string }
		}
		if err := jsonUnmarshal(e.mustRun("cat", "tree", page).stdout, &v); err != nil {
			t.Fatal(err)
		}
		switch {
		case v.Format == "delta":
			level0++
			delta++
		case v.Format == "page" && v.Level == 0:
			level0++
		case v.Format == "page":
			for _, p := range v.Pages {
				walk(p.ID)
			}
		default:
			t.Fatalf("cat tree %s: format %q", page[:8], v.Format)
		}
	}
	for _, p := range root.Nodes[0].Content.Pages {
		walk(p.ID)
	}
	return level0, delta
}

// goldenPages counts the level-0 pages of the content list of the image
// in snapshot id, and how many of them are delta pages (format byte 0x03,
// docs/FORMAT.md §5), reading the repository in dir with the library.
func goldenPages(t *testing.T, dir, password, id string) (level0, delta int) {
	t.Helper()
	ctx := context.Background()
	be, err := openBackend(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, password, repo.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s, err := findSnapshot(ctx, r, nil, id)
	if err != nil {
		t.Fatal(err)
	}
	n, err := imageNode(ctx, r, s)
	if err != nil {
		t.Fatal(err)
	}
	// The fixture's image is small enough for a root of refs to level-0
	// pages, and large enough not to be held inline.
	if n.Content.Level != 1 {
		t.Fatalf("snapshot %s: content list root of level %d, want 1", id[:8], n.Content.Level)
	}
	for _, ref := range n.Content.Pages {
		b, err := r.LoadChunk(ctx, chunk.Handle{ID: ref.ID, Kind: chunk.KindTree}, nil)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case len(b) >= 2 && b[0] == 0x02 && b[1] == 0:
			level0++
		case len(b) >= 2 && b[0] == 0x03 && b[1] == 0:
			level0++
			delta++
		default:
			t.Fatalf("snapshot %s: page %s starts with % x, not a level-0 page", id[:8], ref.ID.Short(), b[:min(len(b), 2)])
		}
	}
	return level0, delta
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// generateGolden writes a new golden repository and its manifest to
// goldenDir, replacing what is there: the repository is made by the
// imago binary (the key file and config by repo.Init, as init does, to
// record a fixed host and user name instead of this machine's).
func generateGolden(t *testing.T) {
	if err := os.RemoveAll(goldenSource); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(goldenSource)
	filesDir := filepath.Join(goldenSource, "files")
	mtimes := writeGoldenTree(t, filesDir)
	img := filepath.Join(goldenSource, "disk.img")
	writeGoldenImage(t, img)

	repoDir := filepath.Join(goldenDir, "repo")
	if err := os.RemoveAll(goldenDir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(goldenDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ic, err := imageChunkerSizes("fixed", fmt.Sprint(goldenImageBlock))
	if err != nil {
		t.Fatal(err)
	}
	be, err := openBackend(repoDir, true)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, goldenPassword, repo.InitOptions{
		KDF: crypto.TestKDF, Compression: pack.CompressionDefault, PackSize: repo.DefaultPackSize,
		ImageChunker: ic, Host: goldenHost, Username: goldenUser,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()

	e := &env{t: t, repo: repoDir, password: goldenPassword}
	m := goldenManifest{
		Comment: "Written by format version 1 (go test ./cmd/imago -run TestGoldenRepository -update-golden). " +
			"Never regenerate it to make a failing test pass: see docs/FORMAT.md.",
		FormatVersion: 1,
		Password:      goldenPassword,
	}
	backup := func(kind, when, src string, args ...string) goldenSnapshot {
		tags := []string{"golden-v1", kind}
		out := e.backupJSON(append([]string{"--host", goldenHost, "--time", when, "--tag", strings.Join(tags, ",")}, append(args, src)...)...)
		return goldenSnapshot{ID: out["snapshot_id"].(string), Kind: kind, Time: when, Host: goldenHost, Tags: tags, Paths: []string{src}}
	}

	files := backup("files", "2026-01-01T10:00:00Z", filesDir)
	// A restore also makes the directories above the backed-up path.
	for d := filepath.Dir(filesDir); d != "/"; d = filepath.Dir(d) {
		files.Entries = append([]goldenEntry{{Path: d, Type: "dir"}}, files.Entries...)
	}
	files.Entries = append(files.Entries, describeGolden(t, "/", filesDir, func(p string) bool { return mtimes[p] })...)
	m.Snapshots = append(m.Snapshots, files)

	var images []goldenSnapshot
	for night, when := range []string{"2026-01-02T10:00:00Z", "2026-01-03T10:00:00Z"} {
		if night > 0 {
			changeGoldenImage(t, img)
		}
		s := backup("image", when, img, "--image")
		st, err := os.Stat(img)
		if err != nil {
			t.Fatal(err)
		}
		s.Image = &goldenImage{Name: filepath.Base(img), Size: st.Size(), SHA256: sha256File(t, img)}
		s.Image.Level0Pages, s.Image.DeltaPages = goldenPages(t, repoDir, goldenPassword, s.ID)
		if night > 0 {
			s.Parent = images[0].ID
		}
		images = append(images, s)
	}
	// The digests, as recorded (the test compares them with snapshots).
	for _, s := range listSnapshotsJSON(t, e) {
		for i := range images {
			if images[i].ID == s.ID && s.Image != nil {
				images[i].Image.Digest, images[i].Image.TreeDigest = s.Image.Digest, s.Image.TreeDigest
			}
		}
	}
	m.Snapshots = append(m.Snapshots, images...)

	// What the fixture is for: several level-0 pages, and delta pages only
	// in the image snapshot made with a parent.
	first, second := images[0].Image, images[1].Image
	if first.Level0Pages < 3 || first.DeltaPages != 0 || second.Level0Pages < 3 || second.DeltaPages < 2 {
		t.Fatalf("image content lists: %d level-0 pages (%d delta), then %d (%d delta): want several, and delta pages in the second",
			first.Level0Pages, first.DeltaPages, second.Level0Pages, second.DeltaPages)
	}

	removeEmptyDirs(t, repoDir)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(goldenDir, "manifest.json"), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	assertNoMachineNames(t, goldenDir)
	t.Logf("wrote %s: %d snapshots, %d bytes", goldenDir, len(m.Snapshots), dirSize(t, goldenDir))
}

// goldenTime is the mtime of every file, directory and symlink the
// generator makes; their atime is an hour later (so that the two cannot
// be mixed up unnoticed).
var goldenTime = time.Date(2025, 12, 24, 18, 30, 15, 123456789, time.UTC)

// writeGoldenTree makes the backed-up tree below dir and returns the paths
// whose mode and mtime it set.
func writeGoldenTree(t *testing.T, dir string) map[string]bool {
	t.Helper()
	set := make(map[string]bool)
	file := func(name string, data []byte, mode fs.FileMode) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		set[p] = true
	}
	for _, d := range []string{"", "sub", "sub/empty"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Several chunks: the file chunker cuts at its minimum (512 KiB) where
	// zeros precede, whatever the polynomial, so each 512 KiB part is one
	// chunk; an all-zero part is a hole, the others small data blobs.
	const part = 512 << 10
	var big []byte
	for i := range 4 {
		p := make([]byte, part)
		if i != 2 {
			var text bytes.Buffer
			for line := 0; text.Len() < 16<<10; line++ {
				fmt.Fprintf(&text, "big.bin part %d line %04d: a compressible line of text\n", i, line)
			}
			copy(p, text.Bytes())
		}
		big = append(big, p...)
	}
	file("big.bin", big, 0o644)
	file("empty", nil, 0o600)
	file("hello.txt", []byte("hello, golden repository\n"), 0o644)
	rnd := make([]byte, 3000)
	fillGolden(rnd, 1)
	file("random.bin", rnd, 0o640)
	file("run.sh", []byte("#!/bin/sh\necho golden\n"), 0o755)
	file("sub/grüße-日本語.txt", []byte("a file with a non-ASCII name\n"), 0o644)
	link := filepath.Join(dir, "link")
	if err := os.Symlink("sub/grüße-日本語.txt", link); err != nil {
		t.Fatal(err)
	}
	set[link] = true
	for _, d := range []string{"sub/empty", "sub", ""} {
		p := filepath.Join(dir, d)
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
		set[p] = true
	}
	// Directories last: setting a file's time does not change its folder's.
	paths := make([]string, 0, len(set))
	for p := range set {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	ts := []unix.Timespec{unix.NsecToTimespec(goldenTime.Add(time.Hour).UnixNano()), unix.NsecToTimespec(goldenTime.UnixNano())}
	for _, p := range paths {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
	return set
}

// The golden image: pages of goldenPageBlocks data blocks, separated by
// zero runs of goldenSeparator blocks, then a short tail. A hole's
// boundary key depends only on its length (docs/FORMAT.md §5, paging
// rule), and goldenSeparator × 4 KiB is a length whose key ends a page, so
// every separator ends a level-0 page whatever the repository's keys: the
// content list has at least goldenImagePages pages.
const (
	goldenPageBlocks = 40
	goldenImagePages = 6
	goldenSeparator  = 42
	goldenTail       = 1234
)

// splitMix is the hole key of docs/FORMAT.md §5.
func splitMix(v uint64) uint64 {
	z := v + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// goldenBlockOffset is the offset of data block i (of page i/goldenPageBlocks).
func goldenBlockOffset(i int) int64 {
	return int64(i+i/goldenPageBlocks*goldenSeparator) * goldenImageBlock
}

// goldenBlock returns data block i of the image at revision rev: most are
// text (small blobs), some random (stored uncompressed).
func goldenBlock(i, rev int) []byte {
	b := make([]byte, goldenImageBlock)
	if i%17 == 5 {
		fillGolden(b, uint64(i*100+rev))
		return b
	}
	line := fmt.Sprintf("golden image block %04d revision %d\n", i, rev)
	for off := 0; off < len(b); off += copy(b[off:], line) {
	}
	return b
}

func writeGoldenImage(t *testing.T, path string) {
	t.Helper()
	if splitMix(goldenSeparator*goldenImageBlock)&0xff != 0 {
		t.Fatal("the separator length does not end a page")
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := goldenImagePages * goldenPageBlocks
	size := goldenBlockOffset(n-1) + goldenImageBlock + goldenTail
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := f.WriteAt(goldenBlock(i, 0), goldenBlockOffset(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Even separators are written zeros, odd ones stay holes (where the
	// file system keeps them).
	for s := 0; s < goldenImagePages-1; s += 2 {
		off := goldenBlockOffset((s+1)*goldenPageBlocks-1) + goldenImageBlock
		if _, err := f.WriteAt(make([]byte, goldenSeparator*goldenImageBlock), off); err != nil {
			t.Fatal(err)
		}
	}
	tail := bytes.Repeat([]byte("tail "), goldenTail/5+1)[:goldenTail]
	if _, err := f.WriteAt(tail, size-goldenTail); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// changeGoldenImage changes a few scattered blocks, in different pages:
// text, random, and one data block turned to zeros.
func changeGoldenImage(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range []struct {
		block int
		data  []byte
	}{
		{7, goldenBlock(7, 1)},
		{2*goldenPageBlocks + 22, goldenBlock(2*goldenPageBlocks+22, 1)},
		{3*goldenPageBlocks + 5, goldenBlock(3*goldenPageBlocks+5, 1)}, // random
		{5*goldenPageBlocks + 18, make([]byte, goldenImageBlock)},
	} {
		if _, err := f.WriteAt(c.data, goldenBlockOffset(c.block)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func fillGolden(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x601de2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

// removeEmptyDirs removes the empty folders below root (init's shard
// folders): git does not keep them, so the fixture is tested as stored.
func removeEmptyDirs(t *testing.T, root string) {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != root {
			dirs = append(dirs, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if ents, err := os.ReadDir(dirs[i]); err == nil && len(ents) == 0 {
			if err := os.Remove(dirs[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// assertNoMachineNames fails if the fixture's plaintext files (key files,
// manifest) name this machine, its user or a temporary folder.
func assertNoMachineNames(t *testing.T, dir string) {
	t.Helper()
	var bad []string
	if h, err := os.Hostname(); err == nil && h != "" && h != goldenHost {
		bad = append(bad, `"`+h+`"`)
	}
	if u, _, _ := currentUser(); u != "" && u != goldenUser {
		bad = append(bad, `"`+u+`"`)
	}
	bad = append(bad, os.TempDir()+"/Test", t.TempDir())
	keys, err := filepath.Glob(filepath.Join(dir, "repo", "keys", "*"))
	if err != nil || len(keys) != 1 {
		t.Fatalf("want one key file, got %v (%v)", keys, err)
	}
	for _, p := range append(keys, filepath.Join(dir, "manifest.json")) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range bad {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s names %s", p, s)
			}
		}
	}
}
