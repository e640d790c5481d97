#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine, idempotently:
# Debian packages for the real servers and tools the tests drive, the Go
# modules, and the S3 test server.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in mkfs.ext4 debugfs; do
	command -v "$tool" >/dev/null 2>&1 || need+=(e2fsprogs)
done
# OpenSSH's sshd serves the SFTP backend's tests on 127.0.0.1.
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
# nbdinfo and nbdcopy are the real NBD clients of the `serve nbd` tests;
# fusermount3 mounts the `mount` tests' FUSE file systems.
command -v nbdcopy >/dev/null 2>&1 || need+=(libnbd-bin)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
# The tests of files inside images make partition tables and file systems:
# sgdisk (gdisk), sfdisk (fdisk), mkfs.vfat (dosfstools), mcopy and mattrib
# (mtools), mkntfs (ntfs-3g).
for t in sgdisk:gdisk sfdisk:fdisk mkfs.vfat:dosfstools mcopy:mtools mkntfs:ntfs-3g; do
	command -v "${t%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${t%%:*}" ] || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
go mod download
# versitygw serves the S3 backend's tests on 127.0.0.1 (built once, cached).
./scripts/install-s3-server.sh
