package imago_test

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/imagobackup/imago"

// allowed lists, for each package of the module, the module packages it may
// import (docs/ARCHITECTURE.md, ../shared/STYLE.md). A prefix ending in "/..."
// allows a whole family. Packages not listed may import nothing of the module
// except cmd/, which may import everything.
var allowed = map[string][]string{
	"chunk":            {},
	"pack":             {"chunk"},
	"index":            {"chunk", "pack"},
	"repo/crypto":      {},
	"repo/backend":     {},
	"repo/backend/...": {"repo/backend/..."},
	"repo":             {"chunk", "pack", "index", "repo/backend/...", "repo/crypto"},
	"snapshot":         {"chunk"},
	"snapshot/filter":  {},
	"snapshot/...":     {"chunk", "snapshot", "snapshot/..."},
	"snapshot/archive": {"chunk", "snapshot", "snapshot/filter", "internal/ring"},
	"snapshot/restore": {"chunk", "snapshot", "snapshot/filter"},
	"blockdev":         {"chunk", "snapshot", "internal/ring"},
	"internal/ring":    {},
	"blockdev/...":     {"chunk", "snapshot", "blockdev"},
	"cmd/...":          {"..."},
	"bench/...":        {"..."},
	"":                 {},
}

func matches(pattern, pkg string) bool {
	if pattern == "..." {
		return true
	}
	if fam, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == fam || strings.HasPrefix(pkg, fam+"/")
	}
	return pattern == pkg
}

// rulesFor returns the allowed imports of pkg: an exact entry wins over a
// family entry.
func rulesFor(pkg string) ([]string, bool) {
	if r, ok := allowed[pkg]; ok {
		return r, true
	}
	for pat, r := range allowed {
		if strings.HasSuffix(pat, "/...") && matches(pat, pkg) {
			return r, true
		}
	}
	return nil, false
}

func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	n := 0
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		n++
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		rules, ok := rulesFor(rel)
		if !ok {
			t.Errorf("package %q has no layering rule: add it to allowed in layers_test.go and docs/ARCHITECTURE.md", rel)
			continue
		}
		for _, imp := range p.Imports {
			if imp != module && !strings.HasPrefix(imp, module+"/") {
				continue
			}
			dep := strings.TrimPrefix(strings.TrimPrefix(imp, module), "/")
			ok := false
			for _, r := range rules {
				ok = ok || matches(r, dep)
			}
			if !ok {
				t.Errorf("layering: %s imports %s, which its layer may not", rel, dep)
			}
		}
	}
	if n < 5 {
		t.Fatalf("go list found only %d packages", n)
	}
}

func TestLayeringRulesCatchViolations(t *testing.T) {
	// The rule table itself must reject the edges STYLE.md forbids.
	bad := [][2]string{{"chunk", "pack"}, {"repo", "snapshot"}, {"snapshot", "repo"}, {"pack", "index"}, {"repo/backend/local", "repo"}}
	for _, e := range bad {
		rules, _ := rulesFor(e[0])
		for _, r := range rules {
			if matches(r, e[1]) {
				t.Errorf("rule table allows forbidden edge %s -> %s", e[0], e[1])
			}
		}
	}
}
