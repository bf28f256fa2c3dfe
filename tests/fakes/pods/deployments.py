"""The Deployment and ReplicaSet controllers.

https://kubernetes.io/docs/concepts/workloads/controllers/deployment/ and .../replicaset/ :

- A Deployment owns one ReplicaSet per pod template, named ``<deployment>-<pod-template-hash>``, whose
  pods carry that hash as a label. A new template starts a rollout. ``RollingUpdate``: the new
  ReplicaSet grows while all pods stay within ``replicas + maxSurge`` (rounded up from a percentage),
  old ones shrink while ``replicas - maxUnavailable`` (rounded down) pods stay available, unavailable old
  pods first (defaults 25% and 25%; both 0 means maxUnavailable 1). ``Recreate``: old pods all go
  first, then the new ones come. Old ReplicaSets beyond ``revisionHistoryLimit`` (10) are deleted.
- Status as the controller writes it: observedGeneration, replicas, updatedReplicas, readyReplicas,
  availableReplicas (Ready for ``minReadySeconds``), unavailableReplicas, and the conditions Available
  (MinimumReplicasAvailable / MinimumReplicasUnavailable) and Progressing (NewReplicaSetCreated,
  ReplicaSetUpdated, NewReplicaSetAvailable, or ProgressDeadlineExceeded after
  ``progressDeadlineSeconds`` (600, scaled) without progress).
- A ReplicaSet keeps ``replicas`` active pods (not terminating, not finished), creating pods from its
  template (``<replicaset>-<suffix>``) or deleting the ones its ranking puts first: unscheduled, then
  pending, then not ready, then the lowest ``controller.kubernetes.io/pod-deletion-cost``, then the
  newest. Pods are found by their controller reference (adopting orphans by selector is not emulated).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.pods.api import DEPLOYMENTS, PODS, REPLICASETS, Body, meta
from tests.fakes.pods.cluster import Cluster
from tests.fakes.pods.pod_status import is_active, is_available, is_ready, now
from tests.fakes.pods.podspec import template_hash

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = meta(owner).get("uid")
    return any(ref.get("controller") and ref.get("uid") == uid for ref in meta(obj).get("ownerReferences") or [])


def controller_ref(owner: Mapping[str, Any]) -> Body:
    info = meta(owner)
    return {
        "apiVersion": owner.get("apiVersion"),
        "kind": owner.get("kind"),
        "name": info.get("name"),
        "uid": info.get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def scaled(value: Any, total: int, *, round_up: bool) -> int:
    """An int-or-percent field (maxSurge, maxUnavailable) against ``total``."""
    if isinstance(value, str) and value.endswith("%"):
        exact = total * int(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def surge_and_unavailable(deployment: Mapping[str, Any]) -> tuple[int, int]:
    spec = deployment.get("spec") or {}
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    desired = int(spec.get("replicas", 1))
    surge = scaled(rolling.get("maxSurge", "25%"), desired, round_up=True)
    unavailable = scaled(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


@dataclass(frozen=True)
class Counts:
    """What a ReplicaSet's pods are doing (computed from the pods, not read from its status)."""

    replicas: int = 0
    ready: int = 0
    available: int = 0


def count(pods: list[Body], min_ready: float, scale: float) -> Counts:
    active = [p for p in pods if is_active(p)]
    return Counts(len(active), sum(is_ready(p) for p in active), sum(is_available(p, min_ready, scale) for p in active))


def _created(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("creationTimestamp") or "")


def deletion_rank(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    """Pods to delete first sort first (the ReplicaSet's ranking, simplified to one node)."""
    phase = (pod.get("status") or {}).get("phase")
    cost = int((meta(pod).get("annotations") or {}).get(DELETION_COST, 0))
    newest_first = tuple(-ord(c) for c in _created(pod))
    return (
        bool((pod.get("spec") or {}).get("nodeName")),
        {"Pending": 0, "Unknown": 1}.get(str(phase), 2),
        is_ready(pod),
        cost,
        newest_first,
    )


@dataclass
class DeploymentPlan:
    create: Body | None = None
    scale: dict[str, int] = field(default_factory=dict)  # ReplicaSet name -> replicas
    delete: list[str] = field(default_factory=list)
    status: Body = field(default_factory=dict)
    revision: str | None = None


def new_replicaset(deployment: Mapping[str, Any], digest: str, replicas: int, revision: int) -> Body:
    info, spec = meta(deployment), deployment.get("spec") or {}
    template = dict(spec.get("template") or {})
    template_meta = dict(template.get("metadata") or {})
    template_meta["labels"] = {**(template_meta.get("labels") or {}), HASH_LABEL: digest}
    template["metadata"] = template_meta
    selector = dict(spec.get("selector") or {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: digest}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{info.get('name')}-{digest}",
            "namespace": info.get("namespace"),
            "labels": template_meta["labels"],
            "annotations": {
                REVISION: str(revision),
                "deployment.kubernetes.io/desired-replicas": str(spec.get("replicas", 1)),
            },
            "ownerReferences": [controller_ref(deployment)],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": spec.get("minReadySeconds", 0),
            "selector": selector,
            "template": template,
        },
    }


def _condition(
    kind: str, ok: bool, reason: str, message: str, previous: Mapping[str, Body], stamp: str, *, progressed: bool
) -> Body:
    status = "True" if ok else "False"
    before = previous.get(kind) or {}
    same = before.get("status") == status
    updated = before.get("lastUpdateTime") if same and before.get("reason") == reason and not progressed else None
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": updated or stamp,
        "lastTransitionTime": before.get("lastTransitionTime") if same else stamp,
    }


def plan_deployment(
    deployment: Mapping[str, Any], replicasets: list[Body], pods: list[Body], scale: float
) -> DeploymentPlan:
    """What the Deployment controller does in one pass, as a pure function of what it sees."""
    info, spec = meta(deployment), deployment.get("spec") or {}
    desired = int(spec.get("replicas", 1))
    min_ready = float(spec.get("minReadySeconds") or 0)
    digest = template_hash(spec.get("template") or {})
    plan = DeploymentPlan()
    new = next((rs for rs in replicasets if (meta(rs).get("labels") or {}).get(HASH_LABEL) == digest), None)
    old = sorted((rs for rs in replicasets if rs is not new), key=_created)
    counts = {
        str(meta(rs).get("name")): count([p for p in pods if owned_by(p, rs)], min_ready, scale) for rs in replicasets
    }
    replicas_of = {str(meta(rs).get("name")): int((rs.get("spec") or {}).get("replicas", 0)) for rs in replicasets}
    revisions = [int((meta(rs).get("annotations") or {}).get(REVISION, 0)) for rs in replicasets]
    strategy = str((spec.get("strategy") or {}).get("type") or "RollingUpdate")
    surge, unavailable = surge_and_unavailable(deployment)
    paused = bool(spec.get("paused"))
    created_new = False
    if new is None and not paused:
        total = sum(replicas_of.values())
        if strategy == "Recreate":
            start = desired if not any(counts[n].replicas for n in counts) and total == 0 else 0
        else:
            start = max(0, min(desired, desired + surge - total))
        new = new_replicaset(deployment, digest, start, max(revisions, default=0) + 1)
        plan.create, created_new = new, True
        replicas_of[str(meta(new)["name"])] = start
        counts[str(meta(new)["name"])] = Counts()
    new_name = str(meta(new)["name"]) if new is not None else ""
    if new is not None and not paused:
        if strategy == "Recreate":
            old_left = sum(replicas_of[str(meta(rs)["name"])] + counts[str(meta(rs)["name"])].replicas for rs in old)
            for rs in old:
                plan.scale[str(meta(rs)["name"])] = 0
            if old_left == 0:
                plan.scale[new_name] = desired
        else:
            _rolling(
                plan, new_name, [str(meta(rs)["name"]) for rs in old], replicas_of, counts, desired, surge, unavailable
            )
        history = int(spec.get("revisionHistoryLimit", 10))
        idle = [
            rs
            for rs in old
            if plan.scale.get(str(meta(rs)["name"]), replicas_of[str(meta(rs)["name"])]) == 0
            and counts[str(meta(rs)["name"])].replicas == 0
        ]
        plan.delete = [str(meta(rs)["name"]) for rs in idle[: max(0, len(idle) - history)]]
        current_revision = (meta(new).get("annotations") or {}).get(REVISION)
        plan.revision = str(current_revision) if current_revision else None
    all_counts = list(counts.values())
    status: Body = {
        "observedGeneration": info.get("generation"),
        "replicas": sum(c.replicas for c in all_counts),
        "updatedReplicas": counts.get(new_name, Counts()).replicas,
        "readyReplicas": sum(c.ready for c in all_counts),
        "availableReplicas": sum(c.available for c in all_counts),
    }
    status["unavailableReplicas"] = max(0, sum(replicas_of.values()) - status["availableReplicas"])
    previous = {str(c.get("type")): c for c in (deployment.get("status") or {}).get("conditions") or []}
    stamp = now()
    progressed = any(
        status.get(k) != (deployment.get("status") or {}).get(k)
        for k in ("replicas", "updatedReplicas", "availableReplicas", "readyReplicas")
    )
    minimum = status["availableReplicas"] >= desired - unavailable
    available = _condition(
        "Available", minimum, "MinimumReplicasAvailable" if minimum else "MinimumReplicasUnavailable",
        "Deployment has minimum availability." if minimum else "Deployment does not have minimum availability.",
        previous, stamp, progressed=False,
    )  # fmt: skip
    complete = (
        status["updatedReplicas"] == desired
        and status["replicas"] == desired
        and status["availableReplicas"] == desired
    )
    if complete:
        progress = ("NewReplicaSetAvailable", f'ReplicaSet "{new_name}" has successfully progressed.', True)
    elif created_new:
        progress = ("NewReplicaSetCreated", f'Created new replica set "{new_name}"', True)
    else:
        progress = ("ReplicaSetUpdated", f'ReplicaSet "{new_name}" is progressing.', True)
        before = previous.get("Progressing") or {}
        deadline = float(spec.get("progressDeadlineSeconds", 600)) * scale
        last = _parse(str(before.get("lastUpdateTime") or stamp))
        if not progressed and (datetime.datetime.now(datetime.UTC) - last).total_seconds() > deadline:
            progress = ("ProgressDeadlineExceeded", f'ReplicaSet "{new_name}" has timed out progressing.', False)
    progressing = _condition(
        "Progressing", progress[2], progress[0], progress[1], previous, stamp, progressed=progressed or created_new
    )
    status["conditions"] = [available, progressing]
    plan.status = status
    return plan


def _parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def _rolling(
    plan: DeploymentPlan, new: str, old: list[str], replicas_of: dict[str, int], counts: Mapping[str, Counts],
    desired: int, surge: int, unavailable: int,
) -> None:  # fmt: skip
    """reconcileNewReplicaSet, then reconcileOldReplicaSets (cleanupUnhealthyReplicas, then scale down)."""
    total = sum(replicas_of.values())
    if replicas_of[new] > desired:
        plan.scale[new] = desired
    elif replicas_of[new] < desired:
        grow = max(0, min(desired + surge - total, desired - replicas_of[new]))
        if grow:
            plan.scale[new] = replicas_of[new] + grow
    after = {**replicas_of, **plan.scale}
    if not any(after[name] for name in old):
        return
    all_pods = sum(after.values())
    min_available = desired - unavailable
    new_unavailable = after[new] - counts[new].available
    budget = all_pods - min_available - new_unavailable
    if budget <= 0:
        return
    for name in old:  # unhealthy old replicas first
        unhealthy = after[name] - counts[name].available
        cut = min(max(unhealthy, 0), budget, after[name])
        if cut:
            after[name] -= cut
            plan.scale[name] = after[name]
            budget -= cut
    available = sum(c.available for c in counts.values())
    room = available - min_available
    for name in old:
        if room <= 0:
            break
        cut = min(after[name], room)
        if cut:
            after[name] -= cut
            plan.scale[name] = after[name]
            room -= cut


def plan_replicaset(replicaset: Mapping[str, Any], pods: list[Body], scale: float) -> tuple[int, list[Body], Body]:
    """How many pods to create, which pods to delete, and the status."""
    info, spec = meta(replicaset), replicaset.get("spec") or {}
    want = int(spec.get("replicas", 1))
    owned = [p for p in pods if owned_by(p, replicaset)]
    active = [p for p in owned if is_active(p)]
    create = max(0, want - len(active))
    delete = sorted(active, key=deletion_rank)[: max(0, len(active) - want)]
    counts = count(owned, float(spec.get("minReadySeconds") or 0), scale)
    status = {
        "observedGeneration": info.get("generation"),
        "replicas": counts.replicas,
        "fullyLabeledReplicas": counts.replicas,
        "readyReplicas": counts.ready,
        "availableReplicas": counts.available,
    }
    return create, delete, status


def pod_from_template(owner: Mapping[str, Any], template: Mapping[str, Any], name: str | None = None) -> Body:
    info = meta(owner)
    template_meta = template.get("metadata") or {}
    metadata: Body = {
        "namespace": info.get("namespace"),
        "labels": dict(template_meta.get("labels") or {}),
        "annotations": dict(template_meta.get("annotations") or {}),
        "ownerReferences": [controller_ref(owner)],
    }
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = f"{info.get('name')}-"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": dict(template.get("spec") or {})}


class DeploymentController:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def sync(self) -> None:
        c, api = self.cluster, self.cluster.api
        for deployment in list(c.cache(DEPLOYMENTS).items()):
            info = meta(deployment)
            namespace, name = str(info.get("namespace")), str(info.get("name"))
            if not c.managed(namespace) or info.get("deletionTimestamp"):
                continue
            owned = [rs for rs in c.cache(REPLICASETS).items(namespace) if owned_by(rs, deployment)]
            plan = plan_deployment(deployment, owned, list(c.cache(PODS).items(namespace)), c.scale)
            if plan.create is not None:
                await c.write(REPLICASETS, api.create(REPLICASETS.path(namespace), plan.create))
            for rs_name, replicas in plan.scale.items():
                await c.write(
                    REPLICASETS, api.patch(REPLICASETS.path(namespace, rs_name), {"spec": {"replicas": replicas}})
                )
            for rs_name in plan.delete:
                await c.delete(REPLICASETS, REPLICASETS.path(namespace, rs_name))
            if plan.revision and (info.get("annotations") or {}).get(REVISION) != plan.revision:
                patch = {"metadata": {"annotations": {REVISION: plan.revision}}}
                await c.write(DEPLOYMENTS, api.patch(DEPLOYMENTS.path(namespace, name), patch))
            await write_status(c, DEPLOYMENTS, c.cache(DEPLOYMENTS).get(namespace, name) or deployment, plan.status)
        for replicaset in list(c.cache(REPLICASETS).items()):
            info = meta(replicaset)
            namespace = str(info.get("namespace"))
            if not c.managed(namespace):
                continue
            create, delete, status = plan_replicaset(replicaset, list(c.cache(PODS).items(namespace)), c.scale)
            if not info.get("deletionTimestamp"):
                template = (replicaset.get("spec") or {}).get("template") or {}
                for _ in range(create):
                    await c.write(PODS, api.create(PODS.path(namespace), pod_from_template(replicaset, template)))
                for pod in delete:
                    await c.delete(PODS, PODS.path(namespace, str(meta(pod)["name"])))
            await write_status(c, REPLICASETS, replicaset, status)


async def write_status(cluster: Cluster, kind: Any, obj: Mapping[str, Any], status: Body) -> None:
    """Write a controller's status when any field of it differs from what the object shows."""
    current = obj.get("status") or {}
    if all(current.get(k) == v for k, v in status.items()):
        return
    info = meta(obj)
    path = kind.path(str(info.get("namespace")), str(info.get("name")), "status")
    await cluster.write(kind, cluster.api.patch(path, {"status": status}))
