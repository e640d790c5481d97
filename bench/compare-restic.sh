#!/usr/bin/env bash
# Backs up the same generated tree with imago and with Debian's restic in one
# run, on the same machine, and prints a Markdown table of time, peak RSS and
# repository size, with imago/restic ratios. Warm page cache for both.
#
#   bench/compare-restic.sh [SIZE]      (default 1GiB; e.g. 256MiB for a quick look)
#
# Environment: WORK (default /tmp/imago-bench) holds the tree and repositories.
set -euo pipefail
SIZE=${1:-1GiB}
WORK=${WORK:-/tmp/imago-bench}
cd "$(dirname "$0")/.."

. bench/lib.sh
need_packages restic=restic /usr/bin/time=time

make -s build
IMAGO=$PWD/imago
rm -rf "$WORK" && mkdir -p "$WORK"
go run ./bench/gentree -size "$SIZE" -seed 1 "$WORK/src"
cat $(find "$WORK/src" -type f) >/dev/null # warm the page cache for both tools

export IMAGO_PASSWORD=bench RESTIC_PASSWORD=bench
declare -A T R

"$IMAGO" -r "$WORK/imago-repo" init -q
measure imago-first "$IMAGO" -r "$WORK/imago-repo" backup -q "$WORK/src"
measure imago-second "$IMAGO" -r "$WORK/imago-repo" backup -q "$WORK/src"
measure imago-restore "$IMAGO" -r "$WORK/imago-repo" restore -q latest --target "$WORK/imago-restore"

restic -r "$WORK/restic-repo" init -q
measure restic-first restic -r "$WORK/restic-repo" backup -q "$WORK/src"
measure restic-second restic -r "$WORK/restic-repo" backup -q "$WORK/src"
measure restic-restore restic -r "$WORK/restic-repo" restore -q latest --target "$WORK/restic-restore"

diff -r "$WORK/src" "$WORK/imago-restore$WORK/src" >/dev/null || { echo "imago restore differs"; exit 1; }

bytes=$(du -sb "$WORK/src" | cut -f1)
isize=$(du -sb "$WORK/imago-repo" | cut -f1)
rsize=$(du -sb "$WORK/restic-repo" | cut -f1)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { if (s > 0) printf "%.0f", b / s / 1048576; else print "inf" }'; }

echo "Data: $SIZE generated tree ($bytes bytes), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(restic version | head -1)"
echo
echo "| job | imago s | restic s | time imago/restic | imago MiB/s | restic MiB/s | imago peak RSS MiB | restic peak RSS MiB | RSS imago/restic |"
echo "|---|---|---|---|---|---|---|---|---|"
for job in first second restore; do
	i=imago-$job r=restic-$job
	printf '| %s | %s | %s | %s | %s | %s | %d | %d | %s |\n' "$job" "${T[$i]}" "${T[$r]}" "$(ratio "${T[$i]}" "${T[$r]}")" \
		"$(mbps "${T[$i]}")" "$(mbps "${T[$r]}")" $((R[$i] / 1024)) $((R[$r] / 1024)) "$(ratio "${R[$i]}" "${R[$r]}")"
done
echo
echo "Repository size: imago $((isize / 1048576)) MiB, restic $((rsize / 1048576)) MiB (ratio $(ratio "$isize" "$rsize"))"
