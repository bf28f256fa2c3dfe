#!/usr/bin/env bash
# Smoke test of the images `make images` built (run by .ci/run as root): what a cluster would do with
# them, on this machine's podman. The tracker serves /healthz as uid 10001 on a read-only root
# filesystem, `demo` runs with a tmpfs, the operator renders an example tenant from a read-only file,
# and neither image carries a test or lint tool. Every podman call has a timeout, and every container
# this script starts is removed on exit, so a stuck image fails CI instead of hanging it.
#
# Environment: IMAGE_REPO (default localhost/politetenant), SMOKE_PORT (default 18080; the ops port is
# SMOKE_PORT + 1).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE_REPO=${IMAGE_REPO:-localhost/politetenant}
VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
TRACKER="$IMAGE_REPO/polite-tracker:$VERSION"
OPERATOR="$IMAGE_REPO/polite-operator:$VERSION"
PORT=${SMOKE_PORT:-18080}
OPS_PORT=$((PORT + 1))
TENANT=examples/tenant-minimal.yaml
NAME=polite-smoke-$$
WORK=$(mktemp -d)

# crun fails on this kernel's hybrid cgroups, and podman's default rlimits exceed what sandboxes allow.
RUN=(podman --runtime runc run --network host --read-only --ulimit nofile=8192:8192 --ulimit nproc=4096:4096)
# Podman schedules HEALTHCHECKs with systemd timers, absent here: one-shot runs skip them, and the
# tracker's is run once by hand below.
ONESHOT=("${RUN[@]}" --no-healthcheck)
# The tracker writes its database and keys under its WORKDIR only (a volume in Kubernetes).
STATE=(--tmpfs /var/lib/polite:rw,size=64m,mode=0777)

cleanup() {
    local c
    for c in "$NAME-tracker" "$NAME-demo" "$NAME-render" "$NAME-tools"; do
        timeout 60 podman rm -f --time 2 "$c" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
step() { echo "==> $*"; }

step "operator renders $TENANT (file mounted read-only)"
timeout 120 "${ONESHOT[@]}" --rm --name "$NAME-render" -v "$PWD/$TENANT:/in/tenant.yaml:ro" "$OPERATOR" \
    render -f /in/tenant.yaml >"$WORK/render.yaml" || fail "polite-operator render exited $?"
grep -q '^kind: StatefulSet$' "$WORK/render.yaml" || fail "render printed no tracker StatefulSet"
timeout 120 "${ONESHOT[@]}" --rm --name "$NAME-render" -v "$PWD/$TENANT:/in/tenant.yaml:ro" "$OPERATOR" \
    render -f /in/tenant.yaml --tracker-settings >"$WORK/settings.yaml" || fail "render --tracker-settings exited $?"
chmod 0644 "$WORK/settings.yaml"
echo "    $(grep -c '^kind: ' "$WORK/render.yaml") objects"

step "tracker serves /healthz as uid 10001 on a read-only root filesystem (the operator's settings)"
timeout 120 "${RUN[@]}" -d --name "$NAME-tracker" "${STATE[@]}" \
    -v "$WORK/settings.yaml:/etc/polite/settings.yaml:ro" \
    -e POLITE_HOST=127.0.0.1 -e POLITE_PORT="$PORT" -e POLITE_OPS_PORT="$OPS_PORT" "$TRACKER" >/dev/null 2>"$WORK/run.err" ||
    { cat "$WORK/run.err" >&2; fail "podman could not start the tracker"; }
healthy=""
for _ in $(seq 1 60); do
    if python3 -c "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:$OPS_PORT/healthz', timeout=2).status != 200)" 2>/dev/null; then
        healthy=yes
        break
    fi
    [ "$(timeout 30 podman inspect --format '{{.State.Running}}' "$NAME-tracker")" = true ] || break
    sleep 0.5
done
[ -n "$healthy" ] || { timeout 30 podman logs "$NAME-tracker" >&2 || true; fail "tracker never answered /healthz on port $OPS_PORT"; }
uid=$(timeout 30 podman exec "$NAME-tracker" python -c 'import os; print(os.getuid())')
[ "$uid" = 10001 ] || fail "tracker runs as uid $uid, not 10001"
if timeout 30 podman exec "$NAME-tracker" python -c 'open("/opt/venv/written", "w")' 2>/dev/null; then
    fail "the tracker could write to its root filesystem"
fi
timeout 60 podman healthcheck run "$NAME-tracker" >/dev/null 2>&1 || fail "the image's HEALTHCHECK reports unhealthy"
echo "    /healthz answered (and the image's HEALTHCHECK); uid $uid; root filesystem read-only"
timeout 60 podman stop --time 10 "$NAME-tracker" >/dev/null 2>&1

step "tracker demo runs with a tmpfs"
timeout 300 "${ONESHOT[@]}" --rm --name "$NAME-demo" "${STATE[@]}" "$TRACKER" demo --dir /var/lib/polite/demo \
    >"$WORK/demo.log" 2>&1 || { tail -30 "$WORK/demo.log" >&2; fail "polite-tracker demo exited non-zero"; }
echo "    $(wc -l <"$WORK/demo.log") lines of walk-through"

step "no test or lint tools in the images"
probe='import importlib.util as u, os, shutil
tools = ["pytest", "mypy", "ruff", "schemathesis", "hypothesis", "kubernetes_validate", "selenium", "lupa"]
found = [t for t in tools if u.find_spec(t) is not None]
found += ["hadolint"] if shutil.which("hadolint") or os.path.exists("/opt/venv/bin/hadolint") else []
print(" ".join(found))'
for image in "$TRACKER" "$OPERATOR"; do
    found=$(timeout 120 "${ONESHOT[@]}" --rm --name "$NAME-tools" --entrypoint python "$image" -c "$probe") ||
        fail "could not probe $image"
    [ -z "$found" ] || fail "$image carries dev tools: $found"
    if timeout 120 "${ONESHOT[@]}" --rm --name "$NAME-tools" --entrypoint python "$image" -c 'import pytest' 2>/dev/null; then
        fail "$image imports pytest"
    fi
done
echo "    none of pytest, mypy, ruff, schemathesis, hypothesis, kubernetes-validate, selenium, lupa, hadolint"

step "image sizes"
for image in "$TRACKER" "$OPERATOR"; do
    printf '    %-50s %s MB\n' "$image" "$(($(timeout 30 podman image inspect --format '{{.Size}}' "$image") / 1000000))"
done
echo "smoke: OK"
