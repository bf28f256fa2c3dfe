#!/usr/bin/env bash
# Fetch `promtool`, which the alert tests run for real (`check rules`, `test rules`).
#
# Usage: scripts/fetch-promtool.sh DEST_DIR        (the Makefile calls it with `.tools`)
#
# promtool ships in Debian's `prometheus` package. The .deb is downloaded with `apt-get download`
# (apt checks it against the archive's signed index), unpacked with `dpkg -x` into a temporary
# directory, and only usr/bin/promtool is copied to DEST_DIR: nothing is installed system-wide and no
# Prometheus server is run. Needs apt (Debian or Ubuntu); runs `apt-get update` once when apt knows
# no `prometheus` package yet (a fresh container), which needs root.
#
# Pinned: Debian 12 (bookworm) prometheus 2.42.0+ds-5+deb12u1 (promtool 2.42.0, go1.19.8), and on
# amd64 the .deb's sha256 below. A point release of Debian replaces that version in the archive; then
# the candidate apt offers is fetched instead, with a warning and its version printed (the rule tests
# use only what promtool 2.x has always done). PROMTOOL_DEB_VERSION=<version> asks for another one.
# Idempotent: when DEST_DIR already holds a promtool from the version apt would fetch, nothing is
# downloaded.
set -euo pipefail

PINNED_VERSION="2.42.0+ds-5+deb12u1"
# sha256sum prometheus_2.42.0+ds-5+deb12u1_amd64.deb
PINNED_SHA256_AMD64="81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55"

if [ "$#" -ne 1 ]; then
    echo "usage: $0 DEST_DIR" >&2
    exit 2
fi
dest="$1"
stamp="$dest/.promtool-version"
wanted="${PROMTOOL_DEB_VERSION:-$PINNED_VERSION}"

if [ -x "$dest/promtool" ] && [ -s "$stamp" ] && "$dest/promtool" --version >/dev/null 2>&1; then
    have="$(cat "$stamp")"
    if [ "$have" = "prometheus=$wanted" ] || [ -z "${PROMTOOL_DEB_VERSION:-}" ]; then
        touch "$stamp"  # newer than this script: make sees the target up to date
        echo "promtool from $have"
        "$dest/promtool" --version | head -n 1
        exit 0
    fi
fi

command -v apt-get >/dev/null || { echo "apt-get is needed to fetch Debian's prometheus package" >&2; exit 1; }

candidate() { apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}'; }
available() { apt-cache madison prometheus 2>/dev/null | awk -v v="$1" '$3 == v {found=1} END {exit !found}'; }

if ! available "$wanted"; then  # empty lists (a fresh container) or stale ones
    echo "prometheus=$wanted not in apt's lists: apt-get update" >&2
    apt-get update -q >&2
fi
version="$wanted"
if ! available "$wanted"; then
    if [ -n "${PROMTOOL_DEB_VERSION:-}" ]; then
        echo "prometheus=$wanted is not in apt's sources; apt-cache madison prometheus lists what is" >&2
        exit 1
    fi
    version="$(candidate)"
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        echo "no prometheus package in apt's sources (Debian >= 11 and Ubuntu >= 20.04 have one)" >&2
        exit 1
    fi
    echo "warning: prometheus=$PINNED_VERSION is gone from apt's sources; fetching prometheus=$version" >&2
fi

mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "fetching prometheus=$version (for its promtool)" >&2
(cd "$work" && apt-get download -q "prometheus=$version" 2>&1 | grep -v "unsandboxed as root" >&2 || true)
deb="$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' -print -quit)"
[ -n "$deb" ] || { echo "apt-get download prometheus=$version gave no .deb" >&2; exit 1; }

if [ "$version" = "$PINNED_VERSION" ] && [ "$(dpkg --print-architecture)" = "amd64" ]; then
    actual="$(sha256sum "$deb" | cut -d' ' -f1)"
    if [ "$actual" != "$PINNED_SHA256_AMD64" ]; then
        echo "$(basename "$deb"): sha256 mismatch: expected $PINNED_SHA256_AMD64, got $actual" >&2
        exit 1
    fi
fi

dpkg -x "$deb" "$work/root"
install -m 0755 "$work/root/usr/bin/promtool" "$dest/promtool.partial"
mv -f "$dest/promtool.partial" "$dest/promtool"  # atomic: a concurrent run never sees half a binary
echo "prometheus=$version" >"$stamp"
echo "promtool from prometheus=$version"
"$dest/promtool" --version | head -n 1
