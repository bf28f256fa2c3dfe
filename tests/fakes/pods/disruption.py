"""The disruption controller: the status of PodDisruptionBudgets, which the Eviction API reads.

https://kubernetes.io/docs/tasks/run-application/configure-pdb/ and .../concepts/workloads/pods/disruptions/ :
expectedPods is the scale of the controllers owning the selected pods; desiredHealthy is
``minAvailable`` (a percentage rounded up) or expectedPods - ``maxUnavailable`` (a percentage rounded
up); currentHealthy counts selected pods that are Ready and not being deleted, less the pods an
eviction already let go (``disruptedPods``, forgotten after two minutes, scaled); disruptionsAllowed is
what remains above desiredHealthy. Condition DisruptionAllowed: SufficientPods or InsufficientPods.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from typing import Any

from tests.fakes.pods.api import PDBS, PODS, REPLICASETS, STATEFULSETS, Body, meta
from tests.fakes.pods.cluster import Cluster
from tests.fakes.pods.deployments import write_status
from tests.fakes.pods.pod_status import is_ready, now
from tests.fakes.pods.podspec import labels_match

DISRUPTED_POD_TIMEOUT = 120.0


def _scaled(value: Any, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(total * int(value[:-1]) / 100)
    return int(value)


def budget_status(budget: Mapping[str, Any], pods: list[Body], scales: Mapping[str, int], scale: float) -> Body:
    """The status of one budget from the pods of its namespace; ``scales``: controller uid -> replicas."""
    spec = budget.get("spec") or {}
    selected = [
        p for p in pods if labels_match(spec.get("selector"), meta(p).get("labels") or {})
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]  # fmt: skip
    owners: dict[str, int] = {}
    lone = 0
    for pod in selected:
        ref = next((r for r in meta(pod).get("ownerReferences") or [] if r.get("controller")), None)
        if ref is not None and str(ref.get("uid")) in scales:
            owners[str(ref["uid"])] = scales[str(ref["uid"])]
        else:
            lone += 1
    expected = sum(owners.values()) + lone
    disrupted = {
        name: stamp
        for name, stamp in ((budget.get("status") or {}).get("disruptedPods") or {}).items()
        if any(meta(p).get("name") == name and not meta(p).get("deletionTimestamp") for p in selected)
        and _age(stamp) < DISRUPTED_POD_TIMEOUT * scale
    }
    healthy = sum(
        is_ready(p) and not meta(p).get("deletionTimestamp") and meta(p).get("name") not in disrupted for p in selected
    )
    if spec.get("minAvailable") is not None:
        desired = _scaled(spec["minAvailable"], expected)
    else:
        desired = max(expected - _scaled(spec.get("maxUnavailable", 0), expected), 0)
    allowed = max(healthy - desired, 0)
    previous = {str(c.get("type")): c for c in (budget.get("status") or {}).get("conditions") or []}
    status_word = "True" if allowed > 0 else "False"
    before = previous.get("DisruptionAllowed") or {}
    condition = {
        "type": "DisruptionAllowed",
        "status": status_word,
        "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
        "message": "",
        "observedGeneration": meta(budget).get("generation"),
        "lastTransitionTime": before.get("lastTransitionTime") if before.get("status") == status_word else now(),
    }
    return {
        "observedGeneration": meta(budget).get("generation"),
        "expectedPods": expected,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "disruptionsAllowed": allowed,
        "disruptedPods": disrupted,
        "conditions": [condition],
    }


def _age(stamp: str) -> float:
    then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds()


class DisruptionController:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def sync(self) -> None:
        c = self.cluster
        scales = {
            str(meta(owner).get("uid")): int((owner.get("spec") or {}).get("replicas", 1))
            for kind in (REPLICASETS, STATEFULSETS)
            for owner in c.cache(kind).items()
        }
        for budget in list(c.cache(PDBS).items()):
            namespace = str(meta(budget).get("namespace"))
            if not c.managed(namespace):
                continue
            status = budget_status(budget, list(c.cache(PODS).items(namespace)), scales, c.scale)
            await write_status(c, PDBS, budget, status)
