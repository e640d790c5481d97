#!/usr/bin/env bash
# Builds the same history of nightly image backups in an imago and a restic
# repository (restic reads the image from stdin, as its users do), then runs
# `forget --keep-daily 7 --keep-weekly 4 --prune` in both with a cold page
# cache and reports time, peak RSS, bytes read from disk and the sizes.
#
#   bench/prune-compare.sh            NIGHTS=60 SIZE_MIB=256 by default
#
# The history is built once per NIGHTS and SIZE_MIB in $WORK/history-N-S and
# copied for each measurement, so runs that compare imago builds share it:
# IMAGO=/path/to/imago measures that binary instead of a fresh `make build`
# (the history is still written by the fresh build), FRESH=1 rebuilds the
# history.
set -euo pipefail
NIGHTS=${NIGHTS:-60}
SIZE_MIB=${SIZE_MIB:-256}
WORK=${WORK:-/tmp/imago-prune-bench}
cd "$(dirname "$0")/.."
. bench/lib.sh
need_packages restic=restic /usr/bin/time=time
make -s build
BUILT=$PWD/imago
IMAGO=${IMAGO:-$BUILT}
export IMAGO_PASSWORD=bench RESTIC_PASSWORD=bench TZ=UTC
HIST=$WORK/history-$NIGHTS-$SIZE_MIB
mkdir -p "$WORK"
if [ -n "${FRESH:-}" ] || [ ! -e "$HIST/done" ]; then
	rm -rf "$HIST" && mkdir -p "$HIST"
	img=$HIST/disk.img
	head -c $((SIZE_MIB << 20)) /dev/urandom >"$img"
	"$BUILT" -r "$HIST/imago" init -q
	restic -r "$HIST/restic" init -q

	# Night n: about 1% of the 4 KiB blocks rewritten at seeded random places,
	# plus one rewritten 1 MiB region.
	blocks=$((SIZE_MIB * 256))
	for n in $(seq 0 $((NIGHTS - 1))); do
		if [ "$n" -gt 0 ]; then
			RANDOM=$n
			for _ in $(seq 1 $((blocks / 100))); do
				dd if=/dev/urandom of="$img" bs=4096 count=1 seek=$(((RANDOM * 32768 + RANDOM) % blocks)) conv=notrunc status=none
			done
			dd if=/dev/urandom of="$img" bs=1M count=1 seek=$((n % SIZE_MIB)) conv=notrunc status=none
		fi
		t=$(date -u -d "@$((1767232800 + n * 86400))" +%Y-%m-%dT%H:%M:%SZ) # 2026-01-01 02:00 UTC + n days
		"$BUILT" -r "$HIST/imago" backup -q --image "$img" --time "$t"
		restic -r "$HIST/restic" backup -q --stdin --stdin-filename disk.img --time "$(date -u -d "$t" '+%Y-%m-%d %H:%M:%S')" <"$img"
	done
	touch "$HIST/done"
fi
rm -rf "$WORK/imago" "$WORK/restic"
cp -a "$HIST/imago" "$HIST/restic" "$WORK/"

declare -A T R I
measure() {
	local name=$1
	shift
	sync
	echo 3 >/proc/sys/vm/drop_caches
	/usr/bin/time -f '%e %M %I' -o "$WORK/time.$name" "$@" >"$WORK/out.$name" 2>&1 || {
		cat "$WORK/out.$name"
		exit 1
	}
	read -r T[$name] R[$name] I[$name] <"$WORK/time.$name"
}
ib=$(du -sb "$WORK/imago" | cut -f1)
rb=$(du -sb "$WORK/restic" | cut -f1)
# Opening alone (key derivation, index): the floor under every command.
measure imago-open "$IMAGO" -r "$WORK/imago" snapshots -q
measure restic-open restic -r "$WORK/restic" snapshots -q
measure imago "$IMAGO" -r "$WORK/imago" forget --keep-daily 7 --keep-weekly 4 --prune
measure restic restic -r "$WORK/restic" forget --keep-daily 7 --keep-weekly 4 --prune
ia=$(du -sb "$WORK/imago" | cut -f1)
ra=$(du -sb "$WORK/restic" | cut -f1)
"$IMAGO" -r "$WORK/imago" check -q

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
echo "History: $NIGHTS nightly backups of a ${SIZE_MIB} MiB image with ~1% of its blocks rewritten each night; $(nproc) cores; $(restic version | head -1)"
echo
echo "| tool | forget+prune s | peak RSS MiB | read from disk MiB | repo before MiB | repo after MiB |"
echo "|---|---|---|---|---|---|"
echo "| imago | ${T[imago]} | $((R[imago] / 1024)) | $((I[imago] / 2048)) | $(mib "$ib") | $(mib "$ia") |"
echo "| restic | ${T[restic]} | $((R[restic] / 1024)) | $((I[restic] / 2048)) | $(mib "$rb") | $(mib "$ra") |"
echo "| imago snapshots (open only) | ${T[imago-open]} | $((R[imago-open] / 1024)) | $((I[imago-open] / 2048)) | | |"
echo "| restic snapshots (open only) | ${T[restic-open]} | $((R[restic-open] / 1024)) | $((I[restic-open] / 2048)) | | |"
echo
echo "imago/restic: time $(ratio "${T[imago]}" "${T[restic]}"), peak RSS $(ratio "${R[imago]}" "${R[restic]}"), bytes read $(ratio "${I[imago]}" "${I[restic]}")"
echo
echo "imago prune summary:"
grep -iE "repack|delet|pack|read" "$WORK/out.imago" | tail -12 || true
