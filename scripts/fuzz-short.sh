#!/usr/bin/env bash
# Runs every Go fuzz target of the module for a short time ($FUZZTIME, default
# 5s). The committed seed corpora (f.Add and testdata/fuzz) already run in
# every `go test`; this adds a brief coverage-guided search on top.
set -euo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5s}
cd "$(dirname "$0")/.."
status=0
while IFS= read -r line; do
	file=${line%%:*}
	name=$(sed -E 's/.*func (Fuzz[A-Za-z0-9_]*).*/\1/' <<<"${line#*:}")
	dir=./$(dirname "$file")
	echo "fuzz $dir $name ($FUZZTIME)"
	if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$dir" >/tmp/imago-fuzz.$$ 2>&1; then
		cat /tmp/imago-fuzz.$$
		status=1
	fi
done < <(grep -rEn --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' . | sort)
rm -f /tmp/imago-fuzz.$$
exit $status
