#!/usr/bin/env bash
# Backs up the same disk image with imago (--image) and Debian's restic
# (--stdin, as restic users image disks) in one run and prints a Markdown
# table: first backup, backup of the unchanged image (warm and cold page
# cache, beside a plain sequential read of the image), and restore, with
# time, MiB/s, peak RSS and imago/restic ratios; then imago alone on a sparse
# 32 GiB image to show that memory stays flat as the image grows.
#
#   bench/image-compare.sh [SIZE_MIB]     (default 2048)
set -euo pipefail
SIZE_MIB=${1:-2048}
WORK=${WORK:-/tmp/imago-image-bench}
cd "$(dirname "$0")/.."
. bench/lib.sh
need_packages restic=restic /usr/bin/time=time
make -s build
IMAGO=$PWD/imago
rm -rf "$WORK" && mkdir -p "$WORK"
export IMAGO_PASSWORD=bench RESTIC_PASSWORD=bench
img=$WORK/disk.img
# A disk-like image: 60% data (half text-like, half random) in 4 MiB runs,
# 40% zeros, not sparse (a block device has no holes).
go run ./bench/gentree -size "$((SIZE_MIB * 6 / 10))MiB" -seed 3 "$WORK/fill" >/dev/null
find "$WORK/fill" -type f | sort | xargs cat | head -c $((SIZE_MIB * 6 / 10 << 20)) >"$WORK/data"
: >"$img"
for ((i = 0; i < SIZE_MIB / 4; i++)); do
	if ((i % 5 < 3)); then
		dd if="$WORK/data" bs=4M skip=$((i * 3 / 5)) count=1 status=none >>"$img"
	else
		head -c $((4 << 20)) /dev/zero >>"$img"
	fi
done
rm -rf "$WORK/fill" "$WORK/data"
bytes=$(stat -c %s "$img")

declare -A T R
# measure_in NAME cold|warm CMD...: measure (bench/lib.sh) with the page
# cache dropped, or holding the image.
measure_in() {
	local name=$1 cold=$2
	shift 2
	sync
	if [ "$cold" = cold ]; then echo 3 >/proc/sys/vm/drop_caches; else cat "$img" >/dev/null; fi
	measure "$name" "$@"
}
"$IMAGO" -r "$WORK/imago" init -q
restic -r "$WORK/restic" init -q
measure_in read-cold cold dd if="$img" of=/dev/null bs=4M
measure_in imago-first warm "$IMAGO" -r "$WORK/imago" backup -q --image "$img"
measure_in imago-second warm "$IMAGO" -r "$WORK/imago" backup -q --image "$img"
measure_in imago-cold cold "$IMAGO" -r "$WORK/imago" backup -q --image "$img"
measure_in imago-restore warm "$IMAGO" -r "$WORK/imago" restore -q latest --target "$WORK/imago.img"
measure_in restic-first warm sh -c "restic -r '$WORK/restic' backup -q --stdin --stdin-filename disk.img < '$img'"
measure_in restic-second warm sh -c "restic -r '$WORK/restic' backup -q --stdin --stdin-filename disk.img < '$img'"
measure_in restic-cold cold sh -c "restic -r '$WORK/restic' backup -q --stdin --stdin-filename disk.img < '$img'"
measure_in restic-restore warm restic -r "$WORK/restic" restore -q latest --target "$WORK/restic-restore"
cmp "$img" "$WORK/imago.img"
cmp "$img" "$WORK/restic-restore/disk.img"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { if (s > 0) printf "%.0f", b / s / 1048576; else print "inf" }'; }
echo "Image: $SIZE_MIB MiB (60% data, 40% zeros, no holes); $(nproc) cores; $(restic version | head -1)"
echo "Sequential read of the image with a cold page cache: $(mbps "${T[read-cold]}") MiB/s"
echo
echo "| job | imago s | restic s | speed imago/restic | imago MiB/s | restic MiB/s | imago RSS MiB | restic RSS MiB | RSS imago/restic |"
echo "|---|---|---|---|---|---|---|---|---|"
for job in first second cold restore; do
	i=imago-$job r=restic-$job
	printf '| %s | %s | %s | %s | %s | %s | %d | %d | %s |\n' "$job" "${T[$i]}" "${T[$r]}" "$(ratio "${T[$r]}" "${T[$i]}")" \
		"$(mbps "${T[$i]}")" "$(mbps "${T[$r]}")" $((R[$i] / 1024)) $((R[$r] / 1024)) "$(ratio "${R[$i]}" "${R[$r]}")"
done
echo
echo "(second = the unchanged image again, warm cache; cold = the unchanged image after dropping the page cache)"
echo

# Flat memory as the image grows: a 32 GiB sparse image with 1 GiB of data.
rm -f "$WORK/imago.img" && rm -rf "$WORK/restic-restore"
big=$WORK/big.img
truncate -s 32G "$big"
for i in 0 7 13 21 30; do dd if="$img" of="$big" bs=4M count=50 seek=$((i * 256)) conv=notrunc status=none; done
measure_in big-first warm "$IMAGO" -r "$WORK/imago" backup -q --image "$big"
measure_in big-second warm "$IMAGO" -r "$WORK/imago" backup -q --image "$big"
echo "| 32 GiB sparse image (1 GiB of data) | s | peak RSS MiB |"
echo "|---|---|---|"
echo "| first backup | ${T[big-first]} | $((R[big-first] / 1024)) |"
echo "| unchanged | ${T[big-second]} | $((R[big-second] / 1024)) |"
