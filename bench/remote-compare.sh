#!/usr/bin/env bash
# Backs up the same generated tree with imago and with restic to the same
# SFTP server (a real OpenSSH sshd) and the same S3 server (versitygw), both
# on 127.0.0.1 and started by bench/remoteservers exactly as the tests start
# them, then restores it, and prints a Markdown table of seconds, MiB/s and
# peak RSS with imago/restic ratios. Each tool uses its own local cache;
# the servers share the machine's cores with the clients, alike for both.
#
#   bench/remote-compare.sh [SIZE]      (default 512MiB; e.g. 128MiB for a quick look)
#
# Environment: WORK (default /tmp/imago-remote-bench) holds the tree, the
# restores, the SFTP repositories and the S3 server's folder.
set -euo pipefail
SIZE=${1:-512MiB}
WORK=${WORK:-/tmp/imago-remote-bench}
cd "$(dirname "$0")/.."

. bench/lib.sh
need_packages restic=restic /usr/bin/time=time ssh=openssh-client
if [ ! -x /usr/sbin/sshd ] || { ! command -v versitygw >/dev/null && [ ! -x "$(go env GOPATH)/bin/versitygw" ]; }; then
	echo "sshd or versitygw missing: run scripts/install-test-deps.sh" >&2
	exit 1
fi

rm -rf "$WORK" && mkdir -p "$WORK"
go build -trimpath -o "$WORK/imago" ./cmd/imago
go build -o "$WORK/remoteservers" ./bench/remoteservers
IMAGO=$WORK/imago
go run ./bench/gentree -size "$SIZE" -seed 1 "$WORK/src"
cat $(find "$WORK/src" -type f) >/dev/null # warm the page cache for both tools

# The servers run until their standard input, the fifo held open on fd 3,
# ends: when this script exits, however it exits.
mkfifo "$WORK/hold"
TMPDIR=$WORK "$WORK/remoteservers" -env "$WORK/servers.env" <"$WORK/hold" 2>"$WORK/servers.log" &
servers=$!
exec 3>"$WORK/hold"
trap 'exec 3>&-; wait $servers 2>/dev/null || true' EXIT
for _ in $(seq 300); do
	[ -f "$WORK/servers.env" ] && break
	kill -0 $servers 2>/dev/null || { cat "$WORK/servers.log"; exit 1; }
	sleep 0.1
done
# shellcheck disable=SC1091
. "$WORK/servers.env"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
export IMAGO_PASSWORD=bench RESTIC_PASSWORD=bench

declare -A T R
load_start=$(cut -d' ' -f1 /proc/loadavg)

# run TOOL TRANSPORT CMD...: init, first backup, unchanged second backup and
# restore, checked against the source.
run() {
	local tool=$1 tr=$2
	shift 2
	local restore=$WORK/restore-$tool-$tr
	"$@" init >"$WORK/out.$tool-$tr-init" 2>&1 || { cat "$WORK/out.$tool-$tr-init"; exit 1; }
	measure "$tool-$tr-first" "$@" backup -q "$WORK/src"
	measure "$tool-$tr-second" "$@" backup -q "$WORK/src"
	measure "$tool-$tr-restore" "$@" restore -q latest --target "$restore"
	diff -r "$WORK/src" "$restore$WORK/src" >/dev/null || { echo "$tool restore over $tr differs from the source"; exit 1; }
	rm -rf "$restore"
}

ssh_cmd="ssh -i $SFTP_KEY -p $SFTP_PORT -o UserKnownHostsFile=$SFTP_KNOWN_HOSTS -o IdentitiesOnly=yes -o BatchMode=yes $SFTP_USER@$SFTP_HOST -s sftp"
run imago sftp "$IMAGO" -r "sftp://$SFTP_USER@$SFTP_HOST:$SFTP_PORT$WORK/imago-sftp" --cache-dir "$WORK/imago-cache" \
	-o sftp.identity="$SFTP_KEY" -o sftp.identities-only=true -o sftp.known-hosts="$SFTP_KNOWN_HOSTS" -o sftp.ssh-config=false
run restic sftp restic -r "sftp:$SFTP_USER@$SFTP_HOST:$WORK/restic-sftp" --cache-dir "$WORK/restic-cache" -o sftp.command="$ssh_cmd"
run imago s3 "$IMAGO" -r "s3:$S3_URL/$S3_BUCKET/imago" --cache-dir "$WORK/imago-cache"
run restic s3 restic -r "s3:$S3_URL/$S3_BUCKET/restic" --cache-dir "$WORK/restic-cache"

bytes=$(du -sb "$WORK/src" | cut -f1)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { if (s > 0) printf "%.0f", b / s / 1048576; else print "inf" }'; }

echo "Data: $SIZE generated tree ($bytes bytes, $(find "$WORK/src" -type f | wc -l) files), $(nproc) cores," \
	"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(restic version | head -1 | cut -d' ' -f1-2)," \
	"servers on 127.0.0.1: $(/usr/sbin/sshd -V 2>&1 | head -1 | cut -d, -f1), versitygw;" \
	"load average $load_start at the start, $(cut -d' ' -f1 /proc/loadavg) at the end (other work on the machine skews the figures)"
echo
echo "| server | job | imago s | restic s | time imago/restic | imago MiB/s | restic MiB/s | imago peak RSS MiB | restic peak RSS MiB | RSS imago/restic |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for tr in sftp s3; do
	for job in first second restore; do
		i=imago-$tr-$job r=restic-$tr-$job
		printf '| %s | %s | %s | %s | %s | %s | %s | %d | %d | %s |\n' "$tr" "$job" "${T[$i]}" "${T[$r]}" "$(ratio "${T[$i]}" "${T[$r]}")" \
			"$(mbps "${T[$i]}")" "$(mbps "${T[$r]}")" $((R[$i] / 1024)) $((R[$r] / 1024)) "$(ratio "${R[$i]}" "${R[$r]}")"
	done
done
echo
echo "Repository size: over SFTP imago $(($(du -sb "$WORK/imago-sftp" | cut -f1) / 1048576)) MiB," \
	"restic $(($(du -sb "$WORK/restic-sftp" | cut -f1) / 1048576)) MiB"
