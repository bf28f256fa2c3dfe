"""What the API server decides about pods, in the emulator: graceful deletion and the Eviction API.

The rules are in ``tests/fakes/kube_pods.py`` (with the pages they follow); these tests drive them over
HTTP, as the kubelet, ``kubectl delete pod`` and ``kubectl drain`` do.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.kube_pods import judge_eviction
from tests.fakes.kube_server import KubeApiHandle, running_kube_api
from tests.fakes.pods.statefulsets import POD_INDEX_LABEL, REVISION_LABEL, plan_statefulset

MERGE = "application/merge-patch+json"
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApiHandle]:
    with running_kube_api() as handle:
        yield handle


def namespace(kube: KubeApiHandle) -> str:
    name = f"pods-{next(_numbers)}"
    assert kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    return name


def pods(ns: str, name: str = "", sub: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/pods" + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def make_pod(
    kube: KubeApiHandle, ns: str, name: str, *, node: str | None = "node-1", ready: bool = True, **spec: Any
) -> None:
    body = {
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], **({"nodeName": node} if node else {}), **spec},
    }
    assert kube.request("POST", pods(ns), body).status == 201
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    status = {"status": {"phase": "Running", "conditions": [condition]}}
    assert kube.request("PATCH", pods(ns, name, "status"), status, content_type=MERGE).status == 200


def budget(
    kube: KubeApiHandle, ns: str, *, allowed: int, healthy: int, desired: int, policy: str | None = None
) -> None:
    spec: dict[str, Any] = {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}
    if policy:
        spec["unhealthyPodEvictionPolicy"] = policy
    path = f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets"
    created = kube.request("POST", path, {"metadata": {"name": "web"}, "spec": spec}).body
    status = {
        "observedGeneration": created["metadata"]["generation"],
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": healthy,
    }
    assert kube.request("PATCH", f"{path}/web/status", {"status": status}, content_type=MERGE).status == 200


def evict(kube: KubeApiHandle, ns: str, name: str) -> Any:
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
    return kube.request("POST", pods(ns, name, "eviction"), body)


def test_a_running_pod_stays_terminating_for_its_grace_period_until_its_kubelet_deletes_it(kube: KubeApiHandle) -> None:
    ns = namespace(kube)
    make_pod(kube, ns, "web", terminationGracePeriodSeconds=45)
    answer = kube.request("DELETE", pods(ns, "web"))
    assert answer.status == 202
    meta = kube.request("GET", pods(ns, "web")).body["metadata"]
    assert meta["deletionTimestamp"] and meta["deletionGracePeriodSeconds"] == 45
    status = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}
    assert kube.request("PATCH", pods(ns, "web", "status"), status, content_type=MERGE).status == 200
    assert kube.request("GET", pods(ns, "web")).status == 200, "a status write must not end the grace period"
    assert kube.request("DELETE", pods(ns, "web"), {"gracePeriodSeconds": 0}).status == 200
    assert kube.request("GET", pods(ns, "web")).status == 404


def test_a_pod_no_node_runs_and_a_finished_pod_are_deleted_at_once(kube: KubeApiHandle) -> None:
    ns = namespace(kube)
    make_pod(kube, ns, "pending", node=None)
    assert kube.request("DELETE", pods(ns, "pending")).status == 200
    make_pod(kube, ns, "done")
    kube.request("PATCH", pods(ns, "done", "status"), {"status": {"phase": "Succeeded"}}, content_type=MERGE)
    assert kube.request("DELETE", pods(ns, "done")).status == 200
    assert kube.request("GET", pods(ns, "done")).status == 404


def test_a_later_deletion_may_shorten_the_grace_period_but_not_lengthen_it(kube: KubeApiHandle) -> None:
    ns = namespace(kube)
    make_pod(kube, ns, "web", terminationGracePeriodSeconds=30)
    kube.request("DELETE", pods(ns, "web"), {"gracePeriodSeconds": 20})
    kube.request("DELETE", pods(ns, "web"), {"gracePeriodSeconds": 60})
    assert kube.request("GET", pods(ns, "web")).body["metadata"]["deletionGracePeriodSeconds"] == 20
    kube.request("DELETE", pods(ns, "web"), params={"gracePeriodSeconds": "5"})
    assert kube.request("GET", pods(ns, "web")).body["metadata"]["deletionGracePeriodSeconds"] == 5


def test_eviction_spends_the_budget_and_is_refused_with_429_once_it_is_spent(kube: KubeApiHandle) -> None:
    ns = namespace(kube)
    make_pod(kube, ns, "web-a")
    make_pod(kube, ns, "web-b")
    budget(kube, ns, allowed=1, healthy=2, desired=1)
    assert evict(kube, ns, "web-a").status == 201
    assert kube.request("GET", pods(ns, "web-a")).body["metadata"]["deletionTimestamp"]
    pdb = kube.request("GET", f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/web").body["status"]
    assert pdb["disruptionsAllowed"] == 0 and "web-a" in pdb["disruptedPods"]
    refused = evict(kube, ns, "web-b")
    assert refused.status == 429 and refused.reason == "TooManyRequests"
    assert refused.body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert refused.body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert "deletionTimestamp" not in kube.request("GET", pods(ns, "web-b")).body["metadata"]


def test_an_unready_pod_may_be_evicted_when_the_budget_says_always_allow(kube: KubeApiHandle) -> None:
    ns = namespace(kube)
    make_pod(kube, ns, "web-a", ready=False)
    budget(kube, ns, allowed=0, healthy=0, desired=1, policy="AlwaysAllow")
    assert evict(kube, ns, "web-a").status == 201


def test_a_budget_not_yet_processed_refuses_every_eviction() -> None:
    pod = {
        "metadata": {"name": "p", "labels": {"app": "web"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    pdb = {
        "metadata": {"name": "web", "generation": 2},
        "spec": {"selector": {"matchLabels": {"app": "web"}}},
        "status": {"observedGeneration": 1, "disruptionsAllowed": 5},
    }
    verdict = judge_eviction(pod, [pdb])
    assert getattr(verdict, "code", None) == 429
    two = judge_eviction(pod, [pdb, {**pdb, "metadata": {"name": "other", "generation": 1}}])
    assert getattr(two, "code", None) == 500


# -- the StatefulSet controller's rolling update (a pure pass) ---------------------------------------


def _set(policy: str) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": "t"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "tracker", "namespace": "ns", "uid": "set-uid", "generation": 2},
        "spec": {
            "replicas": 2,
            "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": "t"}},
            "template": template,
            "updateStrategy": {"type": "RollingUpdate"},
        },
    }


def _pod(ordinal: int, revision: str, *, ready: bool) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"tracker-{ordinal}",
            "labels": {"app": "t", REVISION_LABEL: revision, POD_INDEX_LABEL: str(ordinal)},
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


@pytest.mark.parametrize("policy", ["OrderedReady", "Parallel"])
def test_a_rolling_update_waits_for_the_replaced_pod_whatever_the_pod_management_policy(policy: str) -> None:
    """Kubernetes docs, StatefulSet "Rolling Updates": the controller waits until an updated Pod is Running
    and Ready before updating its predecessor; "Parallel" pod management does not apply to updates."""
    statefulset = _set(policy)
    update = plan_statefulset(statefulset, [], [], set(), 1.0).revision
    assert update is not None
    new = str(update["metadata"]["name"])
    old = "tracker-old"
    # tracker-1 was replaced and its new pod is not created yet, or not Ready yet: tracker-0 must stay.
    for pods in ([_pod(0, old, ready=True)], [_pod(0, old, ready=True), _pod(1, new, ready=False)]):
        plan = plan_statefulset(statefulset, pods, [update], set(), 1.0)
        assert plan.delete == [], (policy, [p["metadata"]["name"] for p in pods])
    # Once it is Ready, tracker-0 is next.
    plan = plan_statefulset(statefulset, [_pod(0, old, ready=True), _pod(1, new, ready=True)], [update], set(), 1.0)
    assert plan.delete == ["tracker-0"]
