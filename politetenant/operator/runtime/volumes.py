"""Grow a StatefulSet's volumes when the spec asks for more storage: its claims, never its template.

A StatefulSet's ``volumeClaimTemplates`` keep their first value: the API server refuses to change them
(https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/), so apply leaves them out
(``kube.apply.IMMUTABLE``). What Kubernetes documents instead is growing each claim
(https://kubernetes.io/docs/concepts/storage/persistent-volumes/#expanding-persistent-volumes-claims):
raise ``spec.resources.requests.storage`` of the PersistentVolumeClaim. The API server allows that
only for a bound claim whose StorageClass sets ``allowVolumeExpansion: true`` (the
PersistentVolumeClaimResize admission plugin answers 403 "only dynamically provisioned pvc can be
resized and the storageclass that provisions the pvc must support resize"), and never below what the
claim asks already: volumes do not shrink. So the class is read first and a refusal is said plainly
rather than met as an API error at every reconcile.

A StatefulSet's claims are named ``<template>-<statefulset>-<ordinal>``
(https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/#stable-storage); each is read
by name. A claim's class is the one the API server resolved when the claim was made: its
``volume.beta.kubernetes.io/storage-class`` annotation, else ``spec.storageClassName``. A template that
names no class got the cluster's default one written there by the DefaultStorageClass admission plugin
(https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/#defaultstorageclass),
or later by the retroactive assignment; a claim with none can never be resized.

Not done now, listed for later: the template itself keeps its first size, so a pod a scale-up adds
gets a claim of that size, grown at the next reconcile. Changing the template takes deleting the
StatefulSet with ``--cascade=orphan`` (pods and claims stay) and creating it again
(https://kubernetes.io/docs/tasks/run-application/delete-stateful-set/); the operator does not do that.

API calls added: ``get`` and ``patch`` of persistentvolumeclaims, ``get`` of storageclasses
(storage.k8s.io).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from politetenant.operator.kube.client import KubeApi, KubeError
from politetenant.operator.model.reasons import Reason
from politetenant.operator.model.status import Check, failed, part_of
from politetenant.operator.render.hardening import parse_quantity

STORAGE_CLASS_API = "storage.k8s.io/v1"
# Older than spec.storageClassName and still read first by the API server (GetPersistentVolumeClaimClass).
BETA_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
# The spec field a person edits, by the condition the StatefulSet counts towards.
SPEC_FIELDS = {"DatabaseReady": "spec.database.storage", "TrackerReady": "spec.tracker.spoolStorage"}
# Claims being grown: another controller (the CSI resizer, the kubelet) finishes it by itself.
EXPANDING = {"DatabaseReady": Reason.DATABASE_STARTING, "TrackerReady": Reason.TRACKER_STARTING}
# What only a person can settle: pick an expandable class, or ask for what the claims hold.
REFUSED = Reason.INVALID_SPEC


class Storage(IntEnum):
    """How the claims stand against what the spec asks; a larger value outweighs a smaller one."""

    SAME = 0  # no claim template asks for a size other than the StatefulSet's
    EXPANDED = 1  # every claim holds what is asked
    WAITING = 2  # no claim made, or none bound, yet: nothing to do yet
    EXPANDING = 3  # claims ask for the new size; the storage provider grows them
    CANNOT_EXPAND = 4  # the class does not allow expansion, or the claim has none
    CANNOT_SHRINK = 5  # asked less than the claims hold
    FAILED = 6  # the API refused a read or the patch


@dataclass(frozen=True, slots=True)
class VolumeOutcome:
    """What ``expand_claims`` found and did. ``check``: the StatefulSet's part (DatabaseReady,
    TrackerReady) as its volumes hold it back, None when they do not."""

    state: Storage
    check: Check | None = None
    patched: tuple[str, ...] = ()  # claims asked to grow by this call
    error: KubeError | None = None


@dataclass(frozen=True, slots=True)
class Claims:
    """One claim template: its name, the size the render asks, and the StatefulSet's."""

    template: str
    asked: str
    had: str


def _size(claim_spec: Mapping[str, Any] | None) -> str | None:
    value = (((claim_spec or {}).get("resources") or {}).get("requests") or {}).get("storage")
    return str(value) if value is not None else None


def _asks(claim: Mapping[str, Any]) -> str:
    return _size(claim.get("spec")) or "0"


def _holds(claim: Mapping[str, Any]) -> str:
    """What the claim holds: its capacity once bound, else what it asks."""
    capacity = ((claim.get("status") or {}).get("capacity") or {}).get("storage")
    return str(capacity) if capacity is not None else _asks(claim)


def changed_templates(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[Claims]:
    """The claim templates whose requested storage the render changed against the live StatefulSet."""
    had = {
        str((t.get("metadata") or {}).get("name")): _size(t.get("spec"))
        for t in (live.get("spec") or {}).get("volumeClaimTemplates") or []
    }
    found = []
    for template in (desired.get("spec") or {}).get("volumeClaimTemplates") or []:
        name = str((template.get("metadata") or {}).get("name"))
        asked, before = _size(template.get("spec")), had.get(name)
        if asked is not None and before is not None and parse_quantity(asked) != parse_quantity(before):
            found.append(Claims(name, asked, before))
    return found


def claim_names(statefulset: Mapping[str, Any], template: str) -> list[str]:
    """``<template>-<statefulset>-<ordinal>`` for each replica (ordinals from ``spec.ordinals.start``)."""
    spec = statefulset.get("spec") or {}
    replicas = spec.get("replicas")
    count = replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else 1
    start = (spec.get("ordinals") or {}).get("start") or 0
    name = statefulset["metadata"]["name"]
    return [f"{template}-{name}-{ordinal}" for ordinal in range(start, start + count)]


def claim_class(claim: Mapping[str, Any]) -> str:
    """The claim's StorageClass as the API server reads it; "" for none."""
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(BETA_CLASS_ANNOTATION) or (claim.get("spec") or {}).get("storageClassName") or "")


@dataclass(frozen=True, slots=True)
class _Judged:
    state: Storage
    message: str = ""
    patched: tuple[str, ...] = ()
    error: KubeError | None = None


async def _read_claims(kube: KubeApi, statefulset: Mapping[str, Any], template: str) -> list[dict[str, Any]]:
    namespace = statefulset["metadata"].get("namespace")
    found = [
        await kube.get("v1", "PersistentVolumeClaim", name, namespace) for name in claim_names(statefulset, template)
    ]
    return [claim for claim in found if claim is not None]


async def _refusal(kube: KubeApi, claims: list[dict[str, Any]], field: str, stay: str) -> str | None:
    """Why these claims cannot grow (their class), or None. Each StorageClass is read once."""
    classes: dict[str, dict[str, Any] | None] = {}
    for claim in claims:
        name, class_name = claim["metadata"]["name"], claim_class(claim)
        if not class_name:
            return (
                f"{field}: claim {name} has no storage class, and only claims of a class that allows volume "
                f"expansion can grow; claims stay at {stay}"
            )
        if class_name not in classes:
            classes[class_name] = await kube.get(STORAGE_CLASS_API, "StorageClass", class_name)
        found = classes[class_name]
        if found is None:
            return f"{field}: storage class {class_name} of claim {name} does not exist; claims stay at {stay}"
        if found.get("allowVolumeExpansion") is not True:
            return (
                f"{field}: storage class {class_name} does not allow volume expansion; claims stay at {stay} "
                "(the StatefulSet keeps its original template)"
            )
    return None


async def _judge(kube: KubeApi, statefulset: Mapping[str, Any], claims: Claims, field: str) -> _Judged:
    """Read the template's claims, refuse what cannot be, grow what can."""
    asked = parse_quantity(claims.asked)
    if asked < parse_quantity(claims.had):  # claims start at the template's size and only grow
        return _Judged(Storage.CANNOT_SHRINK, f"{field}: {_shrink(claims.asked, claims.had)}")
    existing = await _read_claims(kube, statefulset, claims.template)
    if not existing:
        return _Judged(Storage.WAITING)
    larger = [claim for claim in existing if parse_quantity(_asks(claim)) > asked]
    if larger:
        held = max((_asks(claim) for claim in larger), key=parse_quantity)
        return _Judged(Storage.CANNOT_SHRINK, f"{field}: {_shrink(claims.asked, held)}")
    smaller = [claim for claim in existing if parse_quantity(_asks(claim)) < asked]
    growing = [claim for claim in existing if claim not in smaller and parse_quantity(_holds(claim)) < asked]
    # The API server grows a bound claim only; one still pending is grown once bound.
    bound = [claim for claim in smaller if (claim.get("status") or {}).get("phase") == "Bound"]
    stay = min((_holds(claim) for claim in existing), key=parse_quantity)
    refusal = await _refusal(kube, bound, field, stay)
    if refusal is not None:
        return _Judged(Storage.CANNOT_EXPAND, refusal)
    patched: list[str] = []
    body = {"spec": {"resources": {"requests": {"storage": claims.asked}}}}
    for claim in bound:
        meta = claim["metadata"]
        try:
            await kube.patch("v1", "PersistentVolumeClaim", meta["name"], body, meta.get("namespace"))
        except KubeError as exc:
            what = f"PersistentVolumeClaim {meta.get('namespace')}/{meta['name']}: {exc}"
            return _Judged(Storage.FAILED, what, tuple(patched), exc)
        patched.append(meta["name"])
    if patched or growing:
        return _Judged(
            Storage.EXPANDING, f"{field}: asked {claims.asked}; claims at {stay} are being expanded", tuple(patched)
        )
    return _Judged(Storage.WAITING if smaller else Storage.EXPANDED)


def _shrink(asked: str, held: str) -> str:
    return f"asked {asked} is less than the claims' {held}; volumes cannot shrink"


async def expand_claims(
    kube: KubeApi, statefulset_desired: Mapping[str, Any], live_statefulset: Mapping[str, Any] | None
) -> VolumeOutcome:
    """Grow the claims of each claim template whose storage the render raised, when their class
    allows it; say what holds the volumes back otherwise. Makes no call when no template changed."""
    if live_statefulset is None:
        return VolumeOutcome(Storage.SAME)
    part = part_of(statefulset_desired)
    judged = []
    for claims in changed_templates(statefulset_desired, live_statefulset):
        field = SPEC_FIELDS.get(part, f"volumeClaimTemplate {claims.template}")
        try:
            judged.append(await _judge(kube, live_statefulset, claims, field))
        except KubeError as exc:  # a read refused or unanswered
            judged.append(_Judged(Storage.FAILED, f"{field}: {exc}", error=exc))
    if not judged:
        return VolumeOutcome(Storage.SAME)
    state = max(j.state for j in judged)
    patched = tuple(name for j in judged for name in j.patched)
    error = next((j.error for j in judged if j.error is not None), None)
    message = "; ".join(j.message for j in judged if j.state == state)
    if state is Storage.FAILED:
        return VolumeOutcome(state, failed(part, Reason.API_ERROR, message), patched, error)
    if state in (Storage.CANNOT_EXPAND, Storage.CANNOT_SHRINK):
        return VolumeOutcome(state, failed(part, REFUSED, message), patched)
    if state is Storage.EXPANDING:
        return VolumeOutcome(state, failed(part, EXPANDING.get(part, Reason.PROVISIONING), message), patched)
    return VolumeOutcome(state, None, patched)
