"""The StatefulSet controller, and the claims its pods keep.

https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/ :

- Pods ``<set>-<ordinal>`` (ordinals from ``ordinals.start``, 0), each with hostname = its name,
  subdomain = ``serviceName``, labels ``statefulset.kubernetes.io/pod-name``, ``apps.kubernetes.io/pod-index``
  and ``controller-revision-hash``; one PersistentVolumeClaim per ``volumeClaimTemplates`` entry and
  ordinal, ``<template>-<set>-<ordinal>``, created before the pod and kept when the pod goes, so a
  recreated pod gets the same claim (``persistentVolumeClaimRetentionPolicy`` Delete gives the claims an
  owner: the set when it is deleted, the pod when the set scales down).
- ``OrderedReady`` (default): pod N is created only once pods 0..N-1 are Running and Ready, and pods go
  from the highest ordinal down, one at a time; nothing happens while a pod is unhealthy. ``Parallel``
  creates and deletes without waiting. A pod that failed is deleted and created again.
- Each template is a revision (a ControllerRevision ``<set>-<hash>``). ``RollingUpdate`` replaces pods
  whose revision is not the newest, highest ordinal first, one at a time, waiting for each to be
  Running and Ready, and only ordinals >= ``partition``; ``OnDelete`` replaces a pod only once someone
  deleted it.
- Status: observedGeneration, replicas, readyReplicas, currentReplicas, updatedReplicas,
  availableReplicas (Ready for ``minReadySeconds``), currentRevision, updateRevision, collisionCount;
  the current revision becomes the update revision once every pod runs it and is ready.
- PersistentVolumeClaims are bound at once (a provisioner with unlimited capacity): status Bound with
  the requested capacity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.pods.api import PODS, PVCS, REVISIONS, STATEFULSETS, Body, meta
from tests.fakes.pods.cluster import Cluster
from tests.fakes.pods.deployments import controller_ref, owned_by, pod_from_template, write_status
from tests.fakes.pods.pod_status import is_available, is_ready
from tests.fakes.pods.podspec import template_hash

REVISION_LABEL = "controller-revision-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


@dataclass
class SetPlan:
    revision: Body | None = None  # a ControllerRevision to create
    claims: list[Body] = field(default_factory=list)
    create: list[Body] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    status: Body = field(default_factory=dict)


def healthy(pod: Mapping[str, Any] | None) -> bool:
    return (
        pod is not None
        and (pod.get("status") or {}).get("phase") == "Running"
        and is_ready(pod)
        and not meta(pod).get("deletionTimestamp")
    )


def _revision_of(pod: Mapping[str, Any]) -> str:
    return str((meta(pod).get("labels") or {}).get(REVISION_LABEL) or "")


def claim_body(statefulset: Mapping[str, Any], template: Mapping[str, Any], ordinal: int) -> Body:
    info, spec = meta(statefulset), statefulset.get("spec") or {}
    tmpl_meta = template.get("metadata") or {}
    labels = {**(tmpl_meta.get("labels") or {}), **((spec.get("selector") or {}).get("matchLabels") or {})}
    body: Body = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": f"{tmpl_meta.get('name')}-{info.get('name')}-{ordinal}",
            "namespace": info.get("namespace"),
            "labels": labels,
        },
        "spec": dict(template.get("spec") or {}),
    }
    policy = spec.get("persistentVolumeClaimRetentionPolicy") or {}
    if policy.get("whenDeleted") == "Delete":
        body["metadata"]["ownerReferences"] = [{**controller_ref(statefulset), "controller": False}]
    return body


def set_pod(statefulset: Mapping[str, Any], template: Mapping[str, Any], ordinal: int, revision: str) -> Body:
    info, spec = meta(statefulset), statefulset.get("spec") or {}
    name = f"{info.get('name')}-{ordinal}"
    pod = pod_from_template(statefulset, template, name)
    pod["metadata"]["labels"].update({REVISION_LABEL: revision, POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal)})
    pod_spec = pod["spec"]
    pod_spec["hostname"] = name
    if spec.get("serviceName"):
        pod_spec["subdomain"] = spec["serviceName"]
    volumes = [v for v in pod_spec.get("volumes") or []]
    for claim in spec.get("volumeClaimTemplates") or []:
        claim_name = (claim.get("metadata") or {}).get("name")
        volumes = [v for v in volumes if v.get("name") != claim_name]
        volumes.append(
            {"name": claim_name, "persistentVolumeClaim": {"claimName": f"{claim_name}-{info.get('name')}-{ordinal}"}}
        )
    pod_spec["volumes"] = volumes
    return pod


def revision_body(statefulset: Mapping[str, Any], name: str, number: int) -> Body:
    info = meta(statefulset)
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": name,
            "namespace": info.get("namespace"),
            "labels": dict(((statefulset.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}),
            "ownerReferences": [controller_ref(statefulset)],
        },
        "data": {"spec": {"template": (statefulset.get("spec") or {}).get("template") or {}}},
        "revision": number,
    }


def plan_statefulset(
    statefulset: Mapping[str, Any], pods: list[Body], revisions: list[Body], claims: set[str], scale: float
) -> SetPlan:
    """One pass of the StatefulSet controller, as a pure function of what it sees."""
    info, spec = meta(statefulset), statefulset.get("spec") or {}
    name = str(info.get("name"))
    plan = SetPlan()
    template = spec.get("template") or {}
    update = f"{name}-{template_hash(template)}"
    templates = {str(meta(r).get("name")): (r.get("data") or {}).get("spec", {}).get("template") for r in revisions}
    if update not in templates:
        plan.revision = revision_body(
            statefulset, update, max((int(r.get("revision") or 0) for r in revisions), default=0) + 1
        )
        templates[update] = template
    current = str((statefulset.get("status") or {}).get("currentRevision") or update)
    if current not in templates:
        current = update
    replicas, start = int(spec.get("replicas", 1)), int((spec.get("ordinals") or {}).get("start", 0))
    parallel = spec.get("podManagementPolicy") == "Parallel"
    strategy = spec.get("updateStrategy") or {}
    partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0))
    by_name = {str(meta(p).get("name")): p for p in pods}
    blocked = False
    for ordinal in range(start, start + replicas):
        pod_name = f"{name}-{ordinal}"
        pod = by_name.get(pod_name)
        if pod is None:
            for claim in spec.get("volumeClaimTemplates") or []:
                body = claim_body(statefulset, claim, ordinal)
                if body["metadata"]["name"] not in claims:
                    plan.claims.append(body)
            revision = current if ordinal - start < partition else update
            plan.create.append(set_pod(statefulset, templates.get(revision) or template, ordinal, revision))
            if not parallel:
                blocked = True
                break
            continue
        if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded") and not meta(pod).get("deletionTimestamp"):
            plan.delete.append(pod_name)
            blocked = True
            if not parallel:
                break
        elif not healthy(pod):
            blocked = True
            if not parallel:
                break
    condemned = sorted(
        (
            p
            for p in pods
            if not (start <= int((meta(p).get("labels") or {}).get(POD_INDEX_LABEL, -1)) < start + replicas)
        ),
        key=lambda p: -int((meta(p).get("labels") or {}).get(POD_INDEX_LABEL, 0)),
    )
    for pod in condemned:
        if meta(pod).get("deletionTimestamp"):
            if not parallel:
                break
            continue
        if parallel or not blocked:
            plan.delete.append(str(meta(pod)["name"]))
            blocked = True
        if not parallel:
            break
    # The rolling update, as the controller's updateStatefulSet does it (pkg/controller/statefulset/
    # stateful_set_control.go), for either pod management policy: from the highest ordinal down, delete
    # the first pod of an older revision that is not terminating; stop at the first pod that is not
    # healthy, or not there yet (created in this pass): it must be Running and Ready before the next
    # one goes. Parallel only changes scaling, never updates ("Parallel Pod Management" in the docs).
    if (parallel or not blocked) and strategy.get("type", "RollingUpdate") == "RollingUpdate":
        for ordinal in reversed(range(start + partition, start + replicas)):
            pod = by_name.get(f"{name}-{ordinal}")
            if pod is None:
                break
            if _revision_of(pod) != update and not meta(pod).get("deletionTimestamp"):
                plan.delete.append(str(meta(pod)["name"]))
                break
            if not healthy(pod):
                break
    plan.status = set_status(statefulset, pods, current, update, scale)
    return plan


def set_status(statefulset: Mapping[str, Any], pods: list[Body], current: str, update: str, scale: float) -> Body:
    spec = statefulset.get("spec") or {}
    min_ready = float(spec.get("minReadySeconds") or 0)
    alive = [p for p in pods if not meta(p).get("deletionTimestamp")]
    status: Body = {
        "observedGeneration": meta(statefulset).get("generation"),
        "replicas": len(pods),
        "readyReplicas": sum(is_ready(p) for p in pods),
        "availableReplicas": sum(is_available(p, min_ready, scale) for p in pods),
        "currentReplicas": sum(_revision_of(p) == current for p in alive),
        "updatedReplicas": sum(_revision_of(p) == update for p in alive),
        "currentRevision": current,
        "updateRevision": update,
        "collisionCount": 0,
    }
    replicas = int(spec.get("replicas", 1))
    if status["updatedReplicas"] == replicas and status["readyReplicas"] == replicas and len(pods) == replicas:
        status["currentRevision"], status["currentReplicas"] = update, status["updatedReplicas"]
    return status


class StatefulSetController:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def sync(self) -> None:
        c, api = self.cluster, self.cluster.api
        for statefulset in list(c.cache(STATEFULSETS).items()):
            info = meta(statefulset)
            namespace = str(info.get("namespace"))
            if not c.managed(namespace) or info.get("deletionTimestamp"):
                continue
            pods = [p for p in c.cache(PODS).items(namespace) if owned_by(p, statefulset)]
            revisions = [r for r in c.cache(REVISIONS).items(namespace) if owned_by(r, statefulset)]
            claims = {str(meta(pvc).get("name")) for pvc in c.cache(PVCS).items(namespace)}
            plan = plan_statefulset(statefulset, pods, revisions, claims, c.scale)
            if plan.revision is not None:
                await c.write(REVISIONS, api.create(REVISIONS.path(namespace), plan.revision))
            for claim in plan.claims:
                await c.write(PVCS, api.create(PVCS.path(namespace), claim))
            for pod in plan.create:
                await c.write(PODS, api.create(PODS.path(namespace), pod))
            for pod_name in plan.delete:
                await c.delete(PODS, PODS.path(namespace, pod_name))
            await write_status(c, STATEFULSETS, statefulset, plan.status)
            history = int((statefulset.get("spec") or {}).get("revisionHistoryLimit", 10))
            in_use = {_revision_of(p) for p in pods} | {plan.status["currentRevision"], plan.status["updateRevision"]}
            spare = sorted(
                (r for r in revisions if meta(r).get("name") not in in_use), key=lambda r: int(r.get("revision") or 0)
            )
            for old in spare[: max(0, len(spare) - history)]:
                await c.delete(REVISIONS, REVISIONS.path(namespace, str(meta(old)["name"])))
        await self._bind_claims()

    async def _bind_claims(self) -> None:
        c = self.cluster
        for claim in list(c.cache(PVCS).items()):
            info = meta(claim)
            if not c.managed(str(info.get("namespace"))) or (claim.get("status") or {}).get("phase") == "Bound":
                continue
            spec = claim.get("spec") or {}
            storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
            status = {
                "phase": "Bound",
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "capacity": {"storage": storage},
            }
            path = PVCS.path(str(info["namespace"]), str(info["name"]), "status")
            await c.write(PVCS, c.api.patch(path, {"status": status}))
