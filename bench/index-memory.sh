#!/usr/bin/env bash
# What the blob index costs a nightly image backup as the repository grows.
# imago keeps the index in mapped files in its cache folder (the default) or
# on the heap (--no-cache). This builds a SIZE image of incompressible data
# (every chunk a distinct blob: 131,072 blobs per GiB at the default 8 KiB),
# backs it up, then backs it up night after night, each time after
# overwriting 1% of its 8 KiB blocks at random: once with the local index
# (the first such run writes the copy, the second maps it) and once with
# --no-cache. It prints a Markdown table of time and peak RSS.
#
#   bench/index-memory.sh [SIZE_GIB]     (default 8)
#
# Environment: WORK (default /tmp/imago-index-bench); IMAGO_BIN uses that
# binary instead of building one.
set -euo pipefail
SIZE_GIB=${1:-8}
WORK=${WORK:-/tmp/imago-index-bench}
cd "$(dirname "$0")/.."
. bench/lib.sh
need_packages /usr/bin/time=time python3=python3
if [ -z "${IMAGO_BIN:-}" ]; then
	make -s build
	IMAGO_BIN=$PWD/imago
fi
rm -rf "$WORK" && mkdir -p "$WORK"
export IMAGO_PASSWORD=bench IMAGO_CACHE_DIR=$WORK/cache
img=$WORK/disk.img
head -c $((SIZE_GIB << 30)) /dev/urandom >"$img"

# churn overwrites 1% of the image's 8 KiB blocks with random bytes.
churn() {
	python3 - "$img" "$1" <<'EOF'
import os, random, sys
path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
blocks = os.path.getsize(path) // 8192
with open(path, "r+b") as f:
    for b in rng.sample(range(blocks), blocks // 100):
        f.seek(b * 8192)
        f.write(rng.randbytes(8192))
EOF
}

declare -A T R
"$IMAGO_BIN" -r "$WORK/repo" init -q
measure first "$IMAGO_BIN" -r "$WORK/repo" backup -q --image "$img"
churn 1
measure write-copy "$IMAGO_BIN" -r "$WORK/repo" backup -q --image "$img"
churn 2
measure mapped "$IMAGO_BIN" -r "$WORK/repo" backup -q --image "$img"
churn 3
measure heap "$IMAGO_BIN" -r "$WORK/repo" --no-cache backup -q --image "$img"
blobs=$((SIZE_GIB * 131072))
echo "Image: $SIZE_GIB GiB of random data (~$blobs blobs at 8 KiB); 1% of 8 KiB blocks changed per night; $(nproc) cores"
echo
echo "| run | index | s | peak RSS MiB |"
echo "|---|---|---|---|"
echo "| first backup | built in this run | ${T[first]} | $((R[first] / 1024)) |"
echo "| night 1 | local index: loaded from index files, copy written | ${T[write-copy]} | $((R[write-copy] / 1024)) |"
echo "| night 2 | local index: copy mapped | ${T[mapped]} | $((R[mapped] / 1024)) |"
echo "| night 3 | --no-cache: on the heap | ${T[heap]} | $((R[heap] / 1024)) |"
echo
echo "Local index: $(du -sh "$WORK/cache" | cut -f1) in the cache folder"
