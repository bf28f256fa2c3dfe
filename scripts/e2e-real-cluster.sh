#!/usr/bin/env bash
# Run the operator's end-to-end tests (tests/e2e/test_operator_e2e.py) against a real cluster instead
# of the Kubernetes API emulator: for anyone with kind or k3d. `make e2e` calls it.
#
# Usage: KUBECONFIG=~/.kube/config scripts/e2e-real-cluster.sh [pytest arguments...]
#
# What it does, in order:
#   1. Flattens the current context of KUBECONFIG into one file (certificates inlined) and checks
#      that the cluster answers.
#   2. Installs or upgrades the chart as release "politetenant" in namespace politetenant-system with
#      replicas=0: the CRDs (PoliteTenant, ClusterKopfPeering), the namespace, RBAC and the peering
#      object, but no operator pod. The operator under test runs on this machine, as a subprocess of
#      the tests with the flattened kubeconfig, and joins the chart's peering (an in-cluster replica
#      would be a second operator reconciling the same tenants).
#   3. On kind and k3d only (contexts kind-* and k3d-*, or POLITE_E2E_LABEL_NODES=1): labels every
#      node topology.kubernetes.io/region=eu-west-1, the region catalogue's AWS name for eu-ireland,
#      where the tests put their tenants; tenant pods are pinned to it. Set POLITE_E2E_LABEL_NODES=0
#      to leave the nodes alone (then tenants only become Ready on nodes already in that region).
#   4. With POLITE_E2E_LOAD_IMAGE=1: builds the tracker image (Dockerfile target "tracker") as
#      politetenant/polite-tracker:0.1.0, the operator's default, with docker, or without a Docker
#      engine with `make images` (buildah) and `podman save`, and loads it into the kind or k3d
#      cluster. Without it the image must be pullable, or tracker pods never become ready.
#   5. Runs pytest with POLITE_E2E_KUBECONFIG set, which switches the test module to the real API:
#      tests that count the emulator's requests or need an emulator of their own are skipped, waits
#      are longer (real controllers pull images and schedule pods), and the tenants the run made are
#      deleted at the end, keys and namespaces included.
#
# Environment: KUBECONFIG (required), POLITE_E2E_STORAGE_CLASS (default: the cluster's default
# storage class), POLITE_E2E_LABEL_NODES, POLITE_E2E_LOAD_IMAGE, HELM/KUBECTL/PYTHON (default
# .tools/helm, .tools/kubectl, .venv/bin/python).
set -euo pipefail

cd "$(dirname "$0")/.."
HELM="${HELM:-.tools/helm}"
KUBECTL="${KUBECTL:-.tools/kubectl}"
PYTHON="${PYTHON:-.venv/bin/python}"
RELEASE=politetenant
NAMESPACE=politetenant-system
TRACKER_IMAGE=politetenant/polite-tracker:0.1.0
REGION_LABEL=topology.kubernetes.io/region=eu-west-1

if [ -z "${KUBECONFIG:-}" ]; then
    echo "KUBECONFIG is not set: point it at a kind or k3d cluster (e.g. KUBECONFIG=~/.kube/config)" >&2
    exit 2
fi
for tool in "$HELM" "$KUBECTL" "$PYTHON"; do
    [ -x "$tool" ] || { echo "$tool not found: run 'make venv' first" >&2; exit 2; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
kubeconfig="$work/kubeconfig"
"$KUBECTL" config view --flatten --minify >"$kubeconfig"
context="$("$KUBECTL" --kubeconfig "$kubeconfig" config current-context)"
echo "==> cluster: context $context"
"$KUBECTL" --kubeconfig "$kubeconfig" cluster-info >/dev/null

echo "==> chart: CRDs, namespace $NAMESPACE, RBAC and peering; no operator pod (replicas=0)"
"$HELM" upgrade --install "$RELEASE" charts/politetenant --kubeconfig "$kubeconfig" \
    --namespace "$NAMESPACE" --create-namespace --set replicas=0

case "$context" in
    kind-* | k3d-*) label_default=1 ;;
    *) label_default=0 ;;
esac
if [ "${POLITE_E2E_LABEL_NODES:-$label_default}" = 1 ]; then
    echo "==> nodes: $REGION_LABEL (tenant pods are pinned to their region)"
    "$KUBECTL" --kubeconfig "$kubeconfig" label nodes --all "$REGION_LABEL" --overwrite
else
    echo "==> nodes left as they are: tenants become Ready only on nodes labelled $REGION_LABEL"
fi

if [ "${POLITE_E2E_LOAD_IMAGE:-0}" = 1 ]; then
    echo "==> image: $TRACKER_IMAGE"
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        docker build --target tracker -t "$TRACKER_IMAGE" .
        case "$context" in
            kind-*) kind load docker-image "$TRACKER_IMAGE" --name "${context#kind-}" ;;
            k3d-*) k3d image import "$TRACKER_IMAGE" --cluster "${context#k3d-}" ;;
            *) echo "context $context is neither kind nor k3d: push $TRACKER_IMAGE where the cluster pulls from" >&2 ;;
        esac
    else
        # No Docker engine: the image `make images` builds with buildah, saved as an archive the
        # cluster's containerd imports under the name the operator uses by default.
        make images
        archive="$(mktemp --suffix=.tar)"
        trap 'rm -f "$archive"' EXIT
        podman tag "localhost/$TRACKER_IMAGE" "docker.io/$TRACKER_IMAGE"
        podman save --format docker-archive -o "$archive" "docker.io/$TRACKER_IMAGE"
        case "$context" in
            kind-*) kind load image-archive "$archive" --name "${context#kind-}" ;;
            k3d-*) k3d image import "$archive" --cluster "${context#k3d-}" ;;
            *) echo "context $context is neither kind nor k3d: push $TRACKER_IMAGE where the cluster pulls from" >&2 ;;
        esac
    fi
fi

echo "==> tests: tests/e2e/test_operator_e2e.py against $context"
POLITE_E2E_KUBECONFIG="$kubeconfig" "$PYTHON" -m pytest -q -p no:cacheprovider -rs \
    tests/e2e/test_operator_e2e.py "$@"
