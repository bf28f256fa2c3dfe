#!/usr/bin/env bash
# Builds the tracker and operator images without a daemon or a registry (`make images`, as root).
#
# The base is Debian bookworm's own python3 from the machine's configured Debian mirror (debootstrap
# into a `buildah from scratch` container), because no registry (Docker Hub's python image) is
# reachable from CI; it is built once and reused. Both Dockerfile targets are then built on it with
# buildah and tagged with the package version. Where a registry is reachable, `docker build --target
# tracker .` does the same from the Dockerfile's default python image (README: Kubernetes quick start).
#
# Environment: IMAGE_REPO (default localhost/politetenant: images are IMAGE_REPO/polite-tracker:VERSION
# and IMAGE_REPO/polite-operator:VERSION), BASE_IMAGE (default localhost/politetenant-base:bookworm),
# DEBIAN_MIRROR (default: the bookworm mirror of this machine's apt sources), REBUILD_BASE=1.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE_REPO=${IMAGE_REPO:-localhost/politetenant}
BASE_IMAGE=${BASE_IMAGE:-localhost/politetenant-base:bookworm}
SUITE=bookworm
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')

[ "$(id -u)" = 0 ] || { echo "build-images.sh: run as root (buildah mounts and debootstrap need it)" >&2; exit 1; }

# The first Debian archive mirror of apt's sources (deb822 .sources files or one-line sources.list):
# the same mirror, proxy and snapshot policy the machine already trusts for its own packages.
debian_mirror() {
    local files=(/etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list)
    local f
    for f in "${files[@]}"; do
        [ -f "$f" ] || continue
        case "$f" in
            *.sources) awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' "$f" ;;
            *) awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$f" ;;
        esac
    done | grep -E '/debian/?$' | head -1
}

build_base() {
    local mirror=${DEBIAN_MIRROR:-$(debian_mirror)}
    [ -n "$mirror" ] || { echo "build-images.sh: no Debian mirror in /etc/apt (set DEBIAN_MIRROR)" >&2; exit 1; }
    echo "==> base image $BASE_IMAGE: debootstrap $SUITE from $mirror"
    local ctr mnt
    ctr=$(buildah from scratch)
    BASE_CTR=$ctr
    # A failed debootstrap must not leave a half-made container behind.
    trap 'buildah umount "$BASE_CTR" >/dev/null 2>&1 || true; buildah rm "$BASE_CTR" >/dev/null 2>&1 || true' EXIT
    mnt=$(buildah mount "$ctr")
    local log=/tmp/politetenant-debootstrap.log
    timeout 900 debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
        "$SUITE" "$mnt" "$mirror" >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
    # Downloaded packages and apt lists are not needed at run time: they only make every layer larger.
    rm -rf "$mnt"/var/cache/apt/archives/*.deb "$mnt"/var/lib/apt/lists/* "$mnt"/var/log/*.log
    buildah umount "$ctr" >/dev/null
    buildah config --env LANG=C.UTF-8 --cmd python3 \
        --label org.opencontainers.image.description="Debian $SUITE minbase with python3 (PoliteTenant's base)" "$ctr"
    buildah commit --quiet --format docker "$ctr" "$BASE_IMAGE" >/dev/null
    buildah rm "$ctr" >/dev/null
    trap - EXIT
}

build_target() {
    local target=$1 tag="$IMAGE_REPO/polite-$1:$VERSION"
    echo "==> $tag (Dockerfile target $target)"
    # --format docker keeps HEALTHCHECK; the host's CA bundle is bind-mounted for pip, never copied.
    timeout 1200 buildah bud --isolation chroot --format docker --layers --network host --quiet \
        -v "$CA_BUNDLE:$CA_BUNDLE:ro" \
        --build-arg PYTHON_IMAGE="$BASE_IMAGE" \
        --target "$target" -t "$tag" -f Dockerfile . >/dev/null
}

timed() {
    local start=$SECONDS
    "$@"
    echo "    $1 ${2:-}: $((SECONDS - start)) s"
}

if [ "${REBUILD_BASE:-0}" != 1 ] && buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "==> base image $BASE_IMAGE: present, reused (REBUILD_BASE=1 rebuilds it)"
else
    timed build_base
fi
timed build_target tracker
timed build_target operator
for image in "$BASE_IMAGE" "$IMAGE_REPO/polite-tracker:$VERSION" "$IMAGE_REPO/polite-operator:$VERSION"; do
    printf '%-50s %s MB\n' "$image" "$(( $(podman image inspect --format '{{.Size}}' "$image") / 1000000 ))"
done
