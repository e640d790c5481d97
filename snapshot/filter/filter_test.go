package filter

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		path     string
		isDir    bool
		want     bool
	}{
		{"no patterns", nil, "/a/b", false, false},
		{"name at top", []string{"cache"}, "/cache", true, true},
		{"name at depth", []string{"cache"}, "/home/u/cache", true, true},
		{"below matched name", []string{"cache"}, "/home/u/cache/x/y.bin", false, true},
		{"name is whole component", []string{"cache"}, "/home/u/cachedir", true, false},
		{"name is not a suffix", []string{"cache"}, "/home/u/mycache", false, false},
		{"star in component", []string{"*.log"}, "/var/log/syslog.log", false, true},
		{"star does not cross slash", []string{"/var/*.log"}, "/var/log/x.log", false, false},
		{"star only the component", []string{"/var/*/x.log"}, "/var/log/x.log", false, true},
		{"question mark", []string{"file?.txt"}, "/d/file1.txt", false, true},
		{"question mark needs one", []string{"file?.txt"}, "/d/file.txt", false, false},
		{"class", []string{"[ab].go"}, "/src/b.go", false, true},
		{"negated class", []string{"[!ab].go"}, "/src/b.go", false, false},
		{"negated class other", []string{"[!ab].go"}, "/src/c.go", false, true},
		{"caret class", []string{"[^ab].go"}, "/src/c.go", false, true},
		{"escaped bracket bang", []string{`\[!ab].go`}, "/src/[!ab].go", false, true},
		{"escape", []string{`\*`}, "/d/*", false, true},
		{"escape is literal", []string{`\*`}, "/d/x", false, false},
		{"anchored", []string{"/home/u/cache"}, "/home/u/cache", true, true},
		{"anchored below", []string{"/home/u/cache"}, "/home/u/cache/f", false, true},
		{"anchored elsewhere", []string{"/home/u/cache"}, "/x/home/u/cache", true, false},
		{"anchored ancestor not matched", []string{"/home/u/cache"}, "/home/u", true, false},
		{"relative with slash at depth", []string{"u/cache"}, "/home/u/cache", true, true},
		{"relative with slash at root", []string{"u/cache"}, "/u/cache", true, true},
		{"double star middle", []string{"/home/**/cache"}, "/home/a/b/c/cache", true, true},
		{"double star zero comps", []string{"/home/**/cache"}, "/home/cache", true, true},
		{"double star elsewhere", []string{"/home/**/cache"}, "/srv/a/cache", true, false},
		{"double star trailing", []string{"/tmp/**"}, "/tmp/a/b", false, true},
		{"double star trailing not dir itself", []string{"/tmp/**"}, "/tmp", true, false},
		{"leading double star", []string{"**/node_modules"}, "/p/q/node_modules", true, true},
		{"dir only on dir", []string{"build/"}, "/src/build", true, true},
		{"dir only on file", []string{"build/"}, "/src/build", false, false},
		{"dir only below dir", []string{"build/"}, "/src/build/out.o", false, true},
		{"root pattern", []string{"/"}, "/anything/at/all", false, true},
		{"negation after match", []string{"*.log", "!keep.log"}, "/v/keep.log", false, false},
		{"negation leaves others", []string{"*.log", "!keep.log"}, "/v/drop.log", false, true},
		{"later pattern wins", []string{"!keep.log", "*.log"}, "/v/keep.log", false, true},
		{"negation inside excluded dir", []string{"/data", "!/data/keep"}, "/data/keep/f", false, false},
		{"excluded dir itself", []string{"/data", "!/data/keep"}, "/data", true, true},
		{"sibling in excluded dir", []string{"/data", "!/data/keep"}, "/data/other", false, true},
		{"non-UTF-8 name literal", []string{"caf\xe9"}, "/x/caf\xe9", false, true},
		{"non-UTF-8 name glob", []string{"caf?"}, "/x/caf\xe9", false, true},
		{"duplicate slashes in path", []string{"/a/b"}, "//a///b", false, true},
		{"duplicate slashes in pattern", []string{"/a//b"}, "/a/b", false, true},
		{"escaped bang is literal", []string{`\!x`}, "/d/!x", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Compile(tt.patterns)
			if err != nil {
				t.Fatalf("Compile(%q): %v", tt.patterns, err)
			}
			if got := m.Match(tt.path, tt.isDir); got != tt.want {
				t.Errorf("Compile(%q).Match(%q, %v) = %v, want %v", tt.patterns, tt.path, tt.isDir, got, tt.want)
			}
		})
	}
}

func TestNilMatcher(t *testing.T) {
	var m *Matcher
	if m.Match("/a", false) || m.ChildMayMatch("/") || m.ChildMayReinclude("/") {
		t.Error("a nil Matcher matched")
	}
}

func TestChildMayMatch(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		dir      string
		want     bool
	}{
		{"root toward anchored", []string{"/home/a/file"}, "/", true},
		{"ancestor of anchored", []string{"/home/a/file"}, "/home", true},
		{"parent of anchored", []string{"/home/a"}, "/home", true},
		{"anchored itself", []string{"/home/a"}, "/home/a", true},
		{"below anchored", []string{"/home/a"}, "/home/a/b", true},
		{"sibling of anchored", []string{"/home/a/file"}, "/home/b", false},
		{"other top", []string{"/home/a/file"}, "/srv", false},
		{"unanchored anywhere", []string{"*.txt"}, "/srv/x", true},
		{"double star", []string{"/home/**/doc"}, "/home/u/v", true},
		{"double star other root", []string{"/home/**/doc"}, "/srv", false},
		{"glob component", []string{"/home/u*/doc"}, "/home/user", true},
		{"glob component mismatch", []string{"/home/u*/doc"}, "/home/x", false},
		{"negated ignored", []string{"!/home/a"}, "/home", false},
		{"dir only pattern toward", []string{"/home/a/"}, "/home", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Compile(tt.patterns)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.ChildMayMatch(tt.dir); got != tt.want {
				t.Errorf("ChildMayMatch(%q) with %q = %v, want %v", tt.dir, tt.patterns, got, tt.want)
			}
		})
	}
}

func TestChildMayReinclude(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		dir      string
		want     bool
	}{
		{"negation below", []string{"/data", "!/data/keep"}, "/data", true},
		{"no negation", []string{"/data"}, "/data", false},
		{"negation elsewhere", []string{"/data", "!/srv/keep"}, "/data", false},
		{"unanchored negation", []string{"/data", "!*.keep"}, "/data", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Compile(tt.patterns)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.ChildMayReinclude(tt.dir); got != tt.want {
				t.Errorf("ChildMayReinclude(%q) with %q = %v, want %v", tt.dir, tt.patterns, got, tt.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	for _, p := range []string{"", "!", "/a/[b", "x/../y", `foo\`} {
		t.Run(p, func(t *testing.T) {
			_, err := Compile([]string{"ok", p})
			if !errors.Is(err, ErrBadPattern) {
				t.Errorf("Compile(%q) error = %v, want ErrBadPattern", p, err)
			}
		})
	}
}

func TestReadPatternFile(t *testing.T) {
	name := filepath.Join(t.TempDir(), "excludes")
	content := "# comment\n\n*.log   \n  spaced\n/abs/path/\t\n\\#literal\n!keep.log\r\n   \n"
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadPatternFile(name)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"*.log", "  spaced", "/abs/path/", `\#literal`, "!keep.log"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadPatternFile = %q, want %q", got, want)
	}
	m, err := Compile(got)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Match("/x/#literal", false) {
		t.Error(`pattern \#literal does not match a file named #literal`)
	}
	if _, err := ReadPatternFile(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: error = %v, want ErrNotExist", err)
	}
}

func BenchmarkMatch(b *testing.B) {
	m, err := Compile([]string{"*.log", "/home/*/.cache", "node_modules/", "/srv/**/tmp", "!keep.log"})
	if err != nil {
		b.Fatal(err)
	}
	const p = "/home/user/src/project/internal/pkg/file.go"
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		m.Match(p, false)
	}
}
