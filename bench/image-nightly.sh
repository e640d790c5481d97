#!/usr/bin/env bash
# Nightly full images of a changing ext4 disk: what each night costs imago
# (at several image chunk sizes, content-defined and fixed) and Debian's
# restic, next to what it ideally costs.
#
# It builds a SIZE ext4 image with `mkfs.ext4 -d` from about 450 MiB (per
# 2 GiB) of real files of this machine plus a 64 MiB (per 2 GiB) database
# file, fully reproducible (fixed UUID, hash seed, times). Each night 1..N it
# changes about 1.3% of the image's 4 KiB blocks through the file system
# (bench/imagechurn, seeded per night): one `debugfs -w` run deletes files,
# rewrites files (appends, small edits, insertions, regenerated tails) and
# writes new ones (real files at their own paths, logs, incompressible
# media); then database pages are overwritten in place inside the image
# (the file's blocks from `debugfs blocks`, like dd conv=notrunc). Night 0
# is the first full backup. Every tool backs up the same image each night.
#
# Per night and tool: 4 KiB blocks changed since last night; ideal = the
# blocks whose content appears in no earlier night (deduplicated), each
# compressed alone with zstd (default level); bytes added to the repository
# (sum of file sizes, before/after); metadata added (imago: the summary's
# metadata_added; restic: new index and snapshot files plus tree blobs);
# wall seconds, MiB/s of image, peak RSS (/usr/bin/time), page cache warm.
#
#   bench/image-nightly.sh                       # 2 GiB, 7 nights, all configs (~15 min)
#   SIZE=512MiB NIGHTS=3 bench/image-nightly.sh  # quick look (~2 min)
#
# Environment:
#   SIZE     image size (default 2GiB; KiB/MiB/GiB)      NIGHTS  nights after night 0 (7)
#   CHURN    fraction of the image written per night (0.012; metadata adds ~0.1–0.3%)
#   CONFIGS  what to run, in order (default below): cdc-<avg>, fixed-<size>
#            (imago init --image-chunker cdc|fixed --image-chunk-avg <size>KiB),
#            default (imago's built-in sizes), restic
#   SIMS     chunkers simulated on the block hashes, data only, no repository
#            (bench/imagechurn/sim.go): fixed-<size>, aligned-<avg> (content-
#            defined cuts at 4 KiB boundaries only); "" for none
#   IMAGO_INIT_ARGS  extra arguments for every `imago init`
#   IMAGO_BIN  use this imago binary instead of building ./cmd/imago
#   ROOTS    where the real files come from (sorted, seeded sample)
#   SEED (1), WORK (/tmp/imago-image-nightly), OUT (bench/results/image-nightly-DATE.md)
#   KEEP_PREV=1 keeps last night's image as prev.img (the measurement itself
#            keeps per-block hashes of every night, not image copies)
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-2GiB}
NIGHTS=${NIGHTS:-7}
CHURN=${CHURN:-0.012}
SEED=${SEED:-1}
CONFIGS=${CONFIGS:-"cdc-8k cdc-16k cdc-32k cdc-64k cdc-128k fixed-4k fixed-16k fixed-64k restic"}
SIMS=${SIMS-"fixed-4k fixed-16k fixed-64k aligned-8k aligned-16k aligned-32k aligned-64k"}
ROOTS=${ROOTS:-"/usr/share /usr/include /usr/local/go $(echo /usr/lib/python3*)"}
WORK=${WORK:-/tmp/imago-image-nightly}
OUT=${OUT:-bench/results/image-nightly-$(date +%F).md}
UUID=6a1e9b4c-0d3f-4e2a-9c57-2b8f1d6e7a90
EPOCH=1767225600 # 2026-01-01, the fake time of mkfs and debugfs

. bench/lib.sh
need_packages mkfs.ext4=e2fsprogs debugfs=e2fsprogs restic=restic /usr/bin/time=time

bytes_of() { # 2GiB -> 2147483648
	local s=$1 m=1
	case $s in
	*GiB) m=1073741824 s=${s%GiB} ;; *MiB) m=1048576 s=${s%MiB} ;; *KiB) m=1024 s=${s%KiB} ;;
	*G) m=1073741824 s=${s%G} ;; *M) m=1048576 s=${s%M} ;; *K) m=1024 s=${s%K} ;;
	esac
	echo $((s * m))
}
IMGBYTES=$(bytes_of "$SIZE")
FILL=${FILL:-$((IMGBYTES / 2048 * 450))}            # 450 MiB of files per 2 GiB
DB=${DB:-$((IMGBYTES / 32 / 4096 * 4096))}         # 64 MiB per 2 GiB

rm -rf "$WORK" && mkdir -p "$WORK" "$(dirname "$OUT")"
# Our own binaries, so that edits in the tree during the run change nothing.
if [ -n "${IMAGO_BIN:-}" ]; then
	cp "$IMAGO_BIN" "$WORK/imago"
else
	go build -trimpath -o "$WORK/imago" ./cmd/imago
fi
go build -o "$WORK/imagechurn" ./bench/imagechurn
IMAGO=$WORK/imago CHURNER=$WORK/imagechurn IMG=$WORK/disk.img STATE=$WORK/state
if ! "$IMAGO" backup --help 2>&1 | grep -c -- --image >/dev/null; then
	echo "imago has no 'backup --image' yet: running restic only" >&2
	CONFIGS=restic
fi
export IMAGO_PASSWORD=bench RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$WORK/restic-cache

echo "building the source tree and the ${SIZE} image..." >&2
# shellcheck disable=SC2086 # ROOTS is a list
"$CHURNER" src -out "$WORK/src" -state "$STATE" -bytes "$FILL" -db "$DB" -seed "$SEED" $ROOTS >&2
truncate -s "$IMGBYTES" "$IMG"
E2FSPROGS_FAKE_TIME=$EPOCH mkfs.ext4 -q -F -b 4096 -T default -I 256 -U "$UUID" \
	-E "hash_seed=$UUID,root_owner=0:0" -d "$WORK/src" "$IMG"
rm -rf "$WORK/src"

# repo_bytes DIR: the sum of the repository's file sizes (no directories).
repo_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
# files DIR: sorted names of the files below DIR.
files() { find "$1" -type f -printf '%P\n' 2>/dev/null | sort; }

# init_args NAME: the imago init arguments of a configuration.
init_args() {
	case $1 in
	default) echo "" ;;
	cdc-*) echo "--image-chunker cdc --image-chunk-avg ${1#cdc-}iB" | sed 's/kiB/KiB/' ;;
	fixed-*) echo "--image-chunker fixed --image-chunk-avg ${1#fixed-}iB" | sed 's/kiB/KiB/' ;;
	*) echo "unknown config $1" >&2 && exit 1 ;;
	esac
}

for c in $CONFIGS; do
	if [ "$c" = restic ]; then
		restic -r "$WORK/repo-restic" init -q >/dev/null
	else
		# shellcheck disable=SC2046,SC2086 # word splitting intended
		"$IMAGO" -r "$WORK/repo-$c" init -q $(init_args "$c") ${IMAGO_INIT_ARGS:-}
	fi
done

ROWS=$WORK/rows.tsv # night config changed ideal added meta seconds rss_kib extra
SIMROWS=$WORK/sims.tsv # night name ideal chunks new_chunks stored
: >"$ROWS"
: >"$SIMROWS"

# backup NIGHT CONFIG: one backup, one row.
backup() {
	local n=$1 c=$2 repo=$WORK/repo-$2 before after secs rss meta=n/a extra=n/a idx
	cat "$IMG" >/dev/null # warm page cache for every tool alike
	before=$(repo_bytes "$repo")
	files "$repo/index" >"$WORK/index.before"
	files "$repo/snapshots" >"$WORK/snapshots.before"
	if [ "$c" = restic ]; then
		/usr/bin/time -f '%e %M' -o "$WORK/time" restic -r "$repo" backup --json --host bench "$IMG" >"$WORK/out" 2>&1 ||
			{ cat "$WORK/out" >&2; exit 1; }
	else
		/usr/bin/time -f '%e %M' -o "$WORK/time" "$IMAGO" -r "$repo" backup --image --json --host bench "$IMG" >"$WORK/out" 2>&1 ||
			{ cat "$WORK/out" >&2; exit 1; }
		meta=$("$CHURNER" field metadata_added <"$WORK/out")
		if [ "$n" = 0 ]; then # mean chunk size: the night-0 image's non-hole bytes per chunk
			extra=$(awk -v t="$("$CHURNER" field total_bytes_processed <"$WORK/out")" \
				-v h="$("$CHURNER" field bytes_skipped_holes <"$WORK/out")" \
				-v b="$("$CHURNER" field data_blobs <"$WORK/out")" 'BEGIN { if (b > 0) printf "%.0f", (t - h) / b; else print "n/a" }')
		fi
	fi
	read -r secs rss <"$WORK/time"
	after=$(repo_bytes "$repo")
	if [ "$meta" = n/a ]; then # new index and snapshot files, plus the tree blobs they list
		meta=0
		for f in $(comm -13 "$WORK/index.before" <(files "$repo/index")); do
			meta=$((meta + $(stat -c %s "$repo/index/$f")))
			if [ "$c" = restic ]; then
				idx=$(restic -r "$repo" cat index "$f" | "$CHURNER" meta restic)
			else
				idx=$("$IMAGO" -r "$repo" cat index "$f" | "$CHURNER" meta imago)
			fi
			meta=$((meta + ${idx%% *}))
		done
		for f in $(comm -13 "$WORK/snapshots.before" <(files "$repo/snapshots")); do
			meta=$((meta + $(stat -c %s "$repo/snapshots/$f")))
		done
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$c" "$CHANGED" "$IDEAL" $((after - before)) "$meta" "$secs" "$rss" "$extra" >>"$ROWS"
	printf '  %-10s added %6.1f MiB  meta %7.1f KiB  %6.1f s  RSS %4d MiB\n' "$c" \
		"$(awk -v b=$((after - before)) 'BEGIN { print b / 1048576 }')" \
		"$(awk -v b="$meta" 'BEGIN { print b / 1024 }')" "$secs" $((rss / 1024)) >&2
}

start=$SECONDS
for n in $(seq 0 "$NIGHTS"); do
	if [ "$n" -gt 0 ]; then
		if [ "${KEEP_PREV:-0}" = 1 ]; then cp --sparse=always "$IMG" "$WORK/prev.img"; fi
		"$CHURNER" churn -image "$IMG" -state "$STATE" -night "$n" -frac "$CHURN" >&2
	fi
	m=$("$CHURNER" measure -image "$IMG" -state "$STATE" -sim "$SIMS")
	CHANGED=$(sed -n 's/.*changed=\([0-9]*\).*/\1/p' <<<"$m")
	IDEAL=$(sed -n 's/.*ideal_bytes=\([0-9]*\).*/\1/p' <<<"$m")
	{ grep '^sim ' <<<"$m" || true; } | sed 's/[a-z_]*=//g' | awk -v n="$n" -v i="$IDEAL" '{ print n "\t" $2 "\t" i "\t" $3 "\t" $4 "\t" $5 }' >>"$SIMROWS"
	echo "night $n: $(head -1 <<<"$m")" >&2
	for c in $CONFIGS; do
		backup "$n" "$c"
	done
done

# The report.
{
	echo "# Nightly image backups: $SIZE ext4 image, $NIGHTS nights"
	echo
	echo "$(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
		"$(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, Linux $(uname -r);" \
		"imago $(git describe --tags --always --dirty 2>/dev/null || echo dev) ($("$IMAGO" version | cut -d' ' -f2)), $(restic version | cut -d' ' -f1-2)," \
		"$(mkfs.ext4 -V 2>&1 | head -1 | cut -d' ' -f1-2)."
	echo
	echo "Image: $((IMGBYTES >> 20)) MiB ext4 (4 KiB blocks) from $((FILL >> 20)) MiB of real files (seed $SEED," \
		"from $ROOTS) and a $((DB >> 20)) MiB database file; churn $CHURN of the image written per night" \
		"(deletes, rewrites, new files via debugfs; database pages in place). Run took $((SECONDS - start)) s."
	echo "Ideal = the night's 4 KiB blocks seen in no earlier night, each zstd-compressed (default level)."
	echo "Added = repository growth (data + metadata); metadata = imago's metadata_added, restic's new" \
		"index + snapshot files + tree blobs. Times are wall clock with a warm page cache."
	awk -F'\t' -v nights="$NIGHTS" -v configs="$CONFIGS" -v imgmib=$((IMGBYTES >> 20)) '
	function mib(b) { return b / 1048576 }
	{ key = $2 SUBSEP $1; ch[key] = $3; id[key] = $4; ad[key] = $5; me[key] = $6; s[key] = $7; r[key] = $8; if ($1 == 0) ex[$2] = $9 }
	END {
		nc = split(configs, cs, " ")
		for (i = 1; i <= nc; i++) {
			c = cs[i]
			printf "\n### %s\n\n", c
			print "| night | 4 KiB blocks changed | ideal MiB | added MiB | added/ideal | metadata KiB | seconds | MiB/s | peak RSS MiB |"
			print "|---|---|---|---|---|---|---|---|---|"
			sr = 0; ss = 0; pk = 0; sa = 0; si = 0; sm = 0
			for (n = 0; n <= nights; n++) {
				k = c SUBSEP n
				ratio = (id[k] > 0 ? ad[k] / id[k] : 0)
				meta = (me[k] == "n/a" ? "n/a" : sprintf("%.0f", me[k] / 1024))
				printf "| %d | %d | %.1f | %.1f | %.2f | %s | %.1f | %.0f | %d |\n", n, ch[k], mib(id[k]), mib(ad[k]), ratio, meta, s[k], (s[k] > 0 ? imgmib / s[k] : 0), r[k] / 1024
				if (r[k] > pk) pk = r[k]
				if (n > 0) { sr += ratio; ss += s[k]; sa += ad[k]; si += id[k]; sm += me[k] }
			}
			d = (nights > 0 ? nights : 1)
			sum_r[c] = sr / d; sum_s[c] = ss / d; sum_p[c] = pk; sum_a[c] = sa / d; sum_i[c] = si / d; sum_m[c] = sm / d
			sum_0[c] = s[c SUBSEP 0]; sum_f[c] = ad[c SUBSEP 0]
		}
		printf "\n### Summary (nights 1–%d)\n\n", nights
		print "| config | mean added/ideal | mean added MiB | mean ideal MiB | mean metadata KiB | mean s | night-0 s | night-0 added MiB | peak RSS MiB | mean chunk KiB (night 0) | local index per TiB at 43 B/blob |"
		print "|---|---|---|---|---|---|---|---|---|---|---|"
		for (i = 1; i <= nc; i++) {
			c = cs[i]
			chunk = ((ex[c] == "n/a" || ex[c] == "") ? "n/a" : sprintf("%.1f", ex[c] / 1024))
			ram = ((ex[c] == "n/a" || ex[c] == "") ? "n/a" : sprintf("%.0f MiB", 43 * 2^40 / ex[c] / 1048576))
			printf "| %s | %.2f | %.1f | %.1f | %.0f | %.1f | %.1f | %.1f | %d | %s | %s |\n", c, sum_r[c], mib(sum_a[c]), mib(sum_i[c]), sum_m[c] / 1024, sum_s[c], sum_0[c], mib(sum_f[c]), sum_p[c] / 1024, chunk, ram
		}
	}' "$ROWS"
	[ -s "$SIMROWS" ] || exit 0
	printf '\n### Simulated chunkers (data only: new chunks each zstd-compressed, no encryption, no metadata)\n\n'
	echo "fixed-<size> cuts every <size>; aligned-<avg> is content-defined but cuts only at 4 KiB boundaries (min avg/2, max 4×avg); both make holes of zero blocks."
	echo
	awk -F'\t' -v nights="$NIGHTS" -v sims="$SIMS" '
	{ k = $2 SUBSEP $1; st[k] = $6; id[k] = $3; nc[k] = $4 }
	END {
		ns = split(sims, cs, " ")
		printf "| night |"; for (i = 1; i <= ns; i++) printf " %s MiB (×ideal) |", cs[i]; print ""
		printf "|---|"; for (i = 1; i <= ns; i++) printf "---|"; print ""
		for (n = 0; n <= nights; n++) {
			printf "| %d |", n
			for (i = 1; i <= ns; i++) { k = cs[i] SUBSEP n; printf " %.1f (%.2f) |", st[k] / 1048576, st[k] / id[k]; if (n > 0) sum[i] += st[k] / id[k] }
			print ""
		}
		printf "| mean 1–%d |", nights; for (i = 1; i <= ns; i++) printf " ×%.2f |", sum[i] / (nights > 0 ? nights : 1); print ""
		printf "| chunks (night %d) |", nights; for (i = 1; i <= ns; i++) printf " %d |", nc[cs[i] SUBSEP nights]; print ""
	}' "$SIMROWS"
} | tee "$OUT"
echo "written to $OUT" >&2
