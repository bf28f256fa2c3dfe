#!/usr/bin/env bash
# Refresh the vendored axe-core (tests/vendor/axe-core/) that the browser tests inject into pages.
#
# Usage: scripts/fetch-axe-core.sh [VERSION]        (default: the version pinned below)
#
# Not run by the tests: they use the committed copy, offline. This script `npm pack`s the package,
# checks the tarball against the registry's sha512 integrity (pinned here for the default version;
# for another version it is read with `npm view`, so check the diff of README.md before committing),
# then writes axe.min.js, LICENSE and README.md. README.md records the version, the tarball URL, the
# tarball's integrity and the sha512 of axe.min.js itself, which tests/browser/harness.py verifies
# before every use. Needs npm and python3.
set -euo pipefail

PACKAGE="axe-core"
PINNED_VERSION="4.14.1"
# `npm view axe-core@4.14.1 dist.integrity`
PINNED_INTEGRITY="sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="

command -v npm >/dev/null || { echo "npm is needed to fetch $PACKAGE" >&2; exit 1; }
version="${1:-$PINNED_VERSION}"
if [ "$version" = "$PINNED_VERSION" ]; then
    integrity="$PINNED_INTEGRITY"
else
    integrity="$(npm view "$PACKAGE@$version" dist.integrity)"
fi
tarball_url="$(npm view "$PACKAGE@$version" dist.tarball)"
dest="$(cd "$(dirname "$0")/.." && pwd)/tests/vendor/axe-core"

mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetching $PACKAGE@$version" >&2
npm pack --silent --pack-destination "$work" "$PACKAGE@$version" >/dev/null

python3 - "$work" "$PACKAGE" "$version" "$integrity" "$tarball_url" "$dest" <<'PY'
"""Check the tarball's integrity, then write axe.min.js, LICENSE and README.md into DEST."""
import base64
import hashlib
import io
import sys
import tarfile
from pathlib import Path

work, package, version, integrity, url, dest = sys.argv[1:7]
(tarball,) = Path(work).glob("*.tgz")
data = tarball.read_bytes()
algorithm, _, expected = integrity.partition("-")
actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
if actual != expected:
    sys.exit(f"{tarball.name}: integrity mismatch\n  expected {integrity}\n  got      {algorithm}-{actual}")
with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
    files = {}
    for name in ("axe.min.js", "LICENSE"):
        member = tar.extractfile(f"package/{name}")
        if member is None:
            sys.exit(f"{tarball.name}: package/{name} is missing")
        files[name] = member.read()
script_sha512 = base64.b64encode(hashlib.sha512(files["axe.min.js"]).digest()).decode()
out = Path(dest)
for name, content in files.items():
    (out / name).write_bytes(content)
(out / "README.md").write_text(f"""# Vendored axe-core

The accessibility engine the browser tests (tests/browser/) inject into each page. Vendored so the
tests run offline; refreshed only by `scripts/fetch-axe-core.sh [VERSION]`, never by the tests.

- package: {package}
- version: {version}
- license: MPL-2.0 (LICENSE beside this file; axe.min.js is unmodified)
- source: {url}
- integrity: {integrity}
- axe.min.js sha512: sha512-{script_sha512}

`integrity` is the npm tarball's, as `npm view {package}@{version} dist.integrity` prints it: the script
checks the downloaded tarball against it before extracting anything. `axe.min.js sha512` is that file's
own digest, taken from the verified tarball: tests/browser/harness.py refuses to inject an axe.min.js
whose digest differs.
""")
print(f"{package}@{version}: axe.min.js sha512-{script_sha512}")
PY
