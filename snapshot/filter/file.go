package filter

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// ReadPatternFile reads patterns from the file at name, one a line, for
// --exclude-file and --include-file. Lines starting with '#' are comments;
// blank lines are skipped; trailing spaces and tabs (and a trailing '\r') are
// trimmed, leading ones are kept as part of the pattern. Write "\#" for a
// pattern that starts with '#'.
func ReadPatternFile(name string) ([]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read pattern file: %w", err)
	}
	defer f.Close()
	var patterns []string
	// A line longer than bufio's 64 KiB limit (sixteen times PATH_MAX) is
	// reported as an error rather than split.
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		patterns = append(patterns, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read pattern file %s: %w", name, err)
	}
	return patterns, nil
}
