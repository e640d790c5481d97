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
		# Go before 1.27 can fail a run whose -fuzztime ends while a
		# worker is mid-call, with a bare "context deadline exceeded"
		# and no input (go.dev/issue/75804). A real finding always
		# writes its input to testdata/fuzz; only that, or any other
		# failure, fails this script.
		if grep -q 'context deadline exceeded' /tmp/imago-fuzz.$$ &&
			! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' /tmp/imago-fuzz.$$; then
			echo "fuzz $dir $name: the fuzztime deadline race of Go's fuzzer (go.dev/issue/75804), no failing input: not a failure"
		else
			status=1
		fi
	fi
done < <(grep -rEn --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' . | sort)
rm -f /tmp/imago-fuzz.$$
exit $status
