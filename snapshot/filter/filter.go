package filter

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ErrBadPattern is wrapped by the error Compile returns for a pattern that
// cannot be parsed.
var ErrBadPattern = errors.New("filter: bad pattern")

// doubleStar is the component that matches zero or more components.
const doubleStar = "**"

// pattern is one compiled pattern line.
type pattern struct {
	source  string   // the line as given, for error messages
	comps   []string // components; "**" matches any number of components
	literal []bool   // literal[i] means comps[i] has no glob syntax
	negated bool     // the line started with '!'
	dirOnly bool     // the line ended with '/'
}

// Matcher matches paths against an ordered list of patterns. It is
// immutable after Compile and safe for concurrent use.
type Matcher struct {
	patterns []pattern
}

// Compile parses patterns in order (see the package documentation). Empty
// patterns are an error, as is a pattern with malformed glob syntax; the
// error wraps ErrBadPattern and names the pattern.
func Compile(patterns []string) (*Matcher, error) {
	m := &Matcher{patterns: make([]pattern, 0, len(patterns))}
	for _, src := range patterns {
		p, err := compile(src)
		if err != nil {
			return nil, err
		}
		m.patterns = append(m.patterns, p)
	}
	return m, nil
}

func compile(src string) (pattern, error) {
	p := pattern{source: src}
	s := src
	if strings.HasPrefix(s, "!") {
		p.negated = true
		s = s[1:]
	}
	if s == "" {
		return p, fmt.Errorf("%w %q: empty", ErrBadPattern, src)
	}
	anchored := strings.HasPrefix(s, "/")
	if strings.HasSuffix(s, "/") && s != "/" {
		p.dirOnly = true
	}
	for _, c := range strings.Split(s, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return p, fmt.Errorf("%w %q: '..' is not allowed", ErrBadPattern, src)
		}
		if c == doubleStar && len(p.comps) > 0 && p.comps[len(p.comps)-1] == doubleStar {
			continue // "**/**" is the same as "**"
		}
		c = bangClass(c)
		// path.Match reports malformed syntax for the whole pattern, even
		// when the match fails early (since Go 1.16).
		if _, err := path.Match(c, ""); err != nil {
			return p, fmt.Errorf("%w %q: component %q: %v", ErrBadPattern, src, c, err)
		}
		p.comps = append(p.comps, c)
	}
	if !anchored && (len(p.comps) == 0 || p.comps[0] != doubleStar) {
		p.comps = append([]string{doubleStar}, p.comps...)
	}
	p.literal = make([]bool, len(p.comps))
	for i, c := range p.comps {
		p.literal[i] = c != doubleStar && !strings.ContainsAny(c, `*?[\`)
	}
	return p, nil
}

// bangClass rewrites the gitignore class negation "[!...]" to path.Match's
// "[^...]".
func bangClass(c string) string {
	if !strings.Contains(c, "[!") {
		return c
	}
	b := []byte(c)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++ // skip the escaped byte
		case '[':
			if i+1 < len(b) && b[i+1] == '!' {
				b[i+1] = '^'
			}
			// Skip to the end of the class so that a '[' inside it is
			// not taken as the start of another.
			for i++; i < len(b) && b[i] != ']'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		}
	}
	return string(b)
}

// Empty reports whether m has no patterns, so that it never matches.
func (m *Matcher) Empty() bool { return m == nil || len(m.patterns) == 0 }

// Match reports whether the absolute slash-separated path (a directory when
// isDir) is matched: the last pattern that matches path or one of its
// ancestors decides, and a negated pattern un-matches. A nil Matcher matches
// nothing.
func (m *Matcher) Match(p string, isDir bool) bool {
	if m.Empty() {
		return false
	}
	comps := split(p)
	for i := len(m.patterns) - 1; i >= 0; i-- {
		pt := &m.patterns[i]
		if pt.match(0, comps, isDir, false) {
			return !pt.negated
		}
	}
	return false
}

// ChildMayMatch reports whether some path strictly below the directory dir
// could be matched by a pattern that is not negated. It is conservative: a
// true result means only that the walker must descend. Restore --include uses
// it to descend into /home on the way to /home/a/file.
func (m *Matcher) ChildMayMatch(dir string) bool {
	return m.childMay(dir, false)
}

// ChildMayReinclude reports whether some path strictly below the directory
// dir could be matched by a negated pattern. A backup walker that finds dir
// excluded must still descend when this is true, because a later "!" pattern
// may re-include an entry below it.
func (m *Matcher) ChildMayReinclude(dir string) bool {
	return m.childMay(dir, true)
}

func (m *Matcher) childMay(dir string, negated bool) bool {
	if m.Empty() {
		return false
	}
	comps := split(dir)
	for i := range m.patterns {
		pt := &m.patterns[i]
		if pt.negated == negated && pt.match(0, comps, true, true) {
			return true
		}
	}
	return false
}

// split returns the non-empty components of a slash-separated path.
func split(p string) []string {
	comps := make([]string, 0, strings.Count(p, "/")+1)
	for len(p) > 0 {
		i := strings.IndexByte(p, '/')
		var c string
		if i < 0 {
			c, p = p, ""
		} else {
			c, p = p[:i], p[i+1:]
		}
		if c != "" && c != "." {
			comps = append(comps, c)
		}
	}
	return comps
}

// match reports whether pt.comps[pi:] matches a prefix of path (the whole
// path only for a directory when pt.dirOnly). With partial, running out of
// path while pattern components remain also counts: something below the
// path could then match.
func (pt *pattern) match(pi int, path []string, isDir, partial bool) bool {
	for {
		if pi == len(pt.comps) {
			// The pattern matched path's first components: path itself when
			// nothing is left, an ancestor (a directory) otherwise.
			return len(path) > 0 || isDir || !pt.dirOnly
		}
		if len(path) == 0 {
			return partial
		}
		c := pt.comps[pi]
		if c == doubleStar {
			// "**" absorbs zero or more components: try each split point.
			for k := 0; k <= len(path); k++ {
				if pt.match(pi+1, path[k:], isDir, partial) {
					return true
				}
			}
			return false
		}
		if !pt.matchComp(pi, path[0]) {
			return false
		}
		pi++
		path = path[1:]
	}
}

// matchComp reports whether component pattern pi matches name.
func (pt *pattern) matchComp(pi int, name string) bool {
	if pt.literal[pi] {
		return pt.comps[pi] == name
	}
	ok, _ := path.Match(pt.comps[pi], name) // syntax was checked by Compile
	return ok
}

// String returns the patterns as given, separated by spaces.
func (m *Matcher) String() string {
	if m == nil {
		return ""
	}
	s := make([]string, len(m.patterns))
	for i, p := range m.patterns {
		s[i] = p.source
	}
	return strings.Join(s, " ")
}
