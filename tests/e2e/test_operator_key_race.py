"""Two real operators rotating one tenant's keys at once never store two keys under one version.

Both run standalone against one Kubernetes API emulator (``tests.fakes.kube_server``), so both
reconcile the same tenant, each on its own view (as two replicas during a peering hand-over, or one
whose watch lags). An SRE asks for several rotations in quick succession (``polite.io/rotate-keys``);
both operators see each request and rotate from the key Secret they read. Without a precondition on
that write the last writer wins and a version number the first writer stored, and a tracker may have
sealed data with, comes to mean another key. The rotation patch carries the resourceVersion it was
prepared from (API concepts, "Resource versions"); the loser of each race gets 409 Conflict and
re-plans (``politetenant.operator.keys.secret.store_keys``).

Every state the Secret ever had is read back with a watch from a resourceVersion taken before the
tenant existed: the emulator keeps its changes (``event_window``) and replays them, as the API server
does from its watch cache. The key material of each version is opened with the local key file's
file key (rotation re-wraps old versions under a new file key, so the wrapped bytes change; the keys
must not). The 409s are counted as PATCH requests the emulator received minus changes it stored.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from politetenant.crypto.keys import PURPOSES
from politetenant.crypto.local_provider import unwrap_key
from politetenant.operator.keys.secret import HANDLED_ANNOTATION, VERSION_ANNOTATION
from politetenant.operator.model.names import ROTATE_ANNOTATION
from tests.e2e.operator_process import OperatorProcess, start_operator, wait_for
from tests.fakes.kube_server import KubeApiHandle, running_kube_api

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TENANT = "racy"
NAMESPACE = f"polite-{TENANT}"
OPERATOR_NAMESPACE = "politetenant-system"  # the operator configuration's default
TENANTS = "/apis/polite.io/v1alpha1/politetenants"
KEY_SECRET = f"/api/v1/namespaces/{NAMESPACE}/secrets/tracker-keys"
MASTER_SECRET = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets/polite-{TENANT}-keys"
MERGE_PATCH = "application/merge-patch+json"
ROTATIONS = 8
BETWEEN_REQUESTS = 1.0  # seconds: each request seen by both operators, which rotate at once
RESYNC = "2"  # --resync-seconds: the drift timer also races
WAIT = 40.0
# What the operators log when a write of theirs found the key Secret changed since they read it.
REPLANNED = re.compile(r"Secret \S+/tracker-keys (?:was rotated by another|changed since it was read)")


def operator_args() -> list[str]:
    return ["--standalone", "--all-namespaces", "--resync-seconds", RESYNC, "--metrics-port", "0"]


def api(handle: KubeApiHandle, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
    answer = handle.request(method, path, body, content_type=content_type)
    assert answer.status < 300 or (method == "GET" and answer.status == 404), f"{method} {path}: {answer.body}"
    return answer.body if answer.status < 300 else None


def key_annotations(handle: KubeApiHandle) -> dict[str, str]:
    secret = api(handle, "GET", KEY_SECRET) or {}
    return dict((secret.get("metadata") or {}).get("annotations") or {})


def handled(handle: KubeApiHandle) -> str | None:
    return key_annotations(handle).get(HANDLED_ANNOTATION)


def key_materials(secret: Mapping[str, Any]) -> dict[int, tuple[str, ...]]:
    """Each version's plain keys (hex), opened with the file key that the local key file carries."""
    doc = json.loads(base64.b64decode(secret["data"]["keys.json"]))
    file_key = base64.b64decode(doc["kek"])
    return {
        int(entry["version"]): tuple(unwrap_key(file_key, int(entry["version"]), p, entry[p]).hex() for p in PURPOSES)
        for entry in doc["versions"]
    }


def stored_states(handle: KubeApiHandle, path: str, since: str) -> list[dict[str, Any]]:
    """Every state of one object since resourceVersion ``since``, replayed by a watch of its collection."""
    collection, _, name = path.rpartition("/")
    params = {"resourceVersion": since, "fieldSelector": f"metadata.name={name}", "timeoutSeconds": "1"}
    events = handle.watch(collection, params, timeout=10)
    assert all(e["type"] in ("ADDED", "MODIFIED") for e in events), [e["type"] for e in events]
    return [e["object"] for e in events]


def patches_sent(handle: KubeApiHandle, path: str) -> int:
    return sum(1 for r in handle.requests_served() if r.verb == "patch" and r.path == path)


def both_watching(handle: KubeApiHandle) -> bool:
    return sum(1 for r in handle.requests_served() if r.verb == "watch" and r.path == TENANTS) >= 2


def test_two_operators_rotating_at_once_store_one_key_per_version(tmp_path: Path) -> None:
    with running_kube_api(event_window=1_000_000) as handle:
        api(handle, "POST", "/api/v1/namespaces", {"metadata": {"name": OPERATOR_NAMESPACE}})
        operators = [
            start_operator(handle.kubeconfig_path, extra_args=operator_args(), log_path=tmp_path / f"operator-{i}.log")
            for i in (1, 2)
        ]
        try:
            race(handle, operators)
        finally:
            for operator in operators:
                operator.stop()
        key_states = stored_states(handle, KEY_SECRET, since="1")
        master_states = stored_states(handle, MASTER_SECRET, since="1")
        key_patches, master_patches = patches_sent(handle, KEY_SECRET), patches_sent(handle, MASTER_SECRET)
    replans = sum(len(REPLANNED.findall(operator.logs())) for operator in operators)

    seen: dict[int, set[tuple[str, ...]]] = {}
    for state in key_states:
        for version, keys in key_materials(state).items():
            seen.setdefault(version, set()).add(keys)
    final = key_materials(key_states[-1])
    print(
        f"\nkey Secret: {len(key_states)} states, versions 1..{max(final)}; PATCH sent {key_patches}, "
        f"answered 409 {key_patches - (len(key_states) - 1)}; re-plans logged {replans}"
        f"\nmaster copy: PATCH sent {master_patches}, answered 409 {master_patches - (len(master_states) - 1)}"
    )
    assert {version: len(keys) for version, keys in seen.items() if len(keys) > 1} == {}, "a version changed keys"
    assert sorted(final) == list(range(1, max(final) + 1)), "a version was lost"
    assert max(final) >= 2  # the requests may be seen fewer times than made (kopf handles the newest state)
    for version, keys in final.items():
        assert seen[version] == {keys}


def race(handle: KubeApiHandle, operators: list[OperatorProcess]) -> None:
    """Both operators up, a tenant with keys, then ROTATIONS requests in quick succession, until the
    Secret says the last one was honoured and stays so over two drift-timer periods."""
    wait_for(lambda: both_watching(handle), WAIT, what="both operators to watch PoliteTenants")
    tenant = {
        "apiVersion": "polite.io/v1alpha1",
        "kind": "PoliteTenant",
        "metadata": {"name": TENANT},
        "spec": {"displayName": "Racy", "region": "eu-ireland"},
    }
    api(handle, "POST", TENANTS, tenant)
    operators[0].wait_for(lambda: api(handle, "GET", KEY_SECRET), WAIT, what="the key Secret")
    for i in range(ROTATIONS):
        patch = {"metadata": {"annotations": {ROTATE_ANNOTATION: f"race-{i}"}}}
        api(handle, "PATCH", f"{TENANTS}/{TENANT}", patch, content_type=MERGE_PATCH)
        time.sleep(BETWEEN_REQUESTS)
    last = f"race-{ROTATIONS - 1}"
    for operator in operators:
        operator.wait_for(lambda: handled(handle) == last, WAIT, what=f"rotation {last} honoured")
    time.sleep(2 * float(RESYNC))
    assert handled(handle) == last, "a late writer rotated for an older request"
    stored_version = key_annotations(handle)[VERSION_ANNOTATION]

    def status_shows_it() -> bool:
        tenant = api(handle, "GET", f"{TENANTS}/{TENANT}") or {}
        return str(((tenant.get("status") or {}).get("keys") or {}).get("version")) == stored_version

    operators[0].wait_for(status_shows_it, WAIT, what=f"status.keys.version {stored_version}, as the Secret says")
    assert all(operator.alive for operator in operators)
