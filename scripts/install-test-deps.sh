#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine, idempotently.
# Today that is only the Go toolchain's module download; later issues add
# e2fsprogs, OpenSSH's sshd and an S3 server here.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in mkfs.ext4 debugfs; do
	command -v "$tool" >/dev/null 2>&1 || need+=(e2fsprogs)
done
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
go mod download
