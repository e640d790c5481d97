#!/usr/bin/env bash
# Installs versitygw, the S3 server the tests of repo/backend/s3 run on
# 127.0.0.1, into $(go env GOPATH)/bin (or GOBIN). The version is pinned;
# an installed binary of that version is kept, so only the first run builds
# (about 2–3 minutes on 2 cores).
set -euo pipefail
VERSION=v1.8.0
cd "$(dirname "$0")/.."
bindir="$(go env GOBIN)"
if [ -z "$bindir" ]; then
	bindir="$(go env GOPATH | cut -d: -f1)/bin"
fi
bin="$bindir/versitygw"
# The binary records the module version it was built from.
if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null | grep -qE "^[[:space:]]+mod[[:space:]]+github.com/versity/versitygw[[:space:]]+$VERSION\b"; then
	exit 0
fi
echo "building versitygw $VERSION into $bindir (takes a few minutes once)" >&2
# Built outside this module so that its go.mod and go.sum stay untouched.
(cd / && go install "github.com/versity/versitygw/cmd/versitygw@$VERSION")
