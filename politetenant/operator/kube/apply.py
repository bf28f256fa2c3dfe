"""Apply rendered objects idempotently: create what is missing, merge-patch what drifted, else nothing.

``plan`` is the pure decision. An object is unchanged when its ``polite.io/spec-hash`` annotation
equals the rendered one *and* every rendered field still holds its rendered value in the live
object; the second test catches a hand edit that kept the annotation. Fields the API server or
other controllers add (defaults, status, a Service's clusterIP) are not ours and never count as
drift. A patch is a JSON merge patch of the whole rendered object: lists are replaced whole, maps
merged, so nothing the cluster added is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from politetenant.operator.kube.client import KubeApi, KubeError
from politetenant.operator.model import names
from politetenant.operator.render.hardening import parse_quantity

# Where quantities live in what render emits: the API server stores them canonically ("0.5" comes
# back as "500m"), so they compare by value, not by spelling.
_QUANTITY_MAPS = frozenset({"requests", "limits", "hard"})
_QUANTITY_FIELDS = frozenset({"storage", "sizeLimit"})


@dataclass(frozen=True, slots=True)
class Create:
    desired: dict[str, Any]
    restore: bool  # it existed before at this generation: someone deleted it


@dataclass(frozen=True, slots=True)
class Patch:
    desired: dict[str, Any]
    restore: bool  # the render is the same as last time: someone edited it


@dataclass(frozen=True, slots=True)
class Unchanged:
    live: dict[str, Any]


Action = Create | Patch | Unchanged


def _hash(obj: Mapping[str, Any]) -> str | None:
    value = (obj.get("metadata") or {}).get("annotations", {}).get(names.SPEC_HASH_ANNOTATION)
    return str(value) if value is not None else None


def _same_scalar(live: Any, desired: Any, key: str | None, parent: str | None) -> bool:
    if isinstance(live, bool) or isinstance(desired, bool):  # True == 1 in Python, not in Kubernetes
        return live is desired
    if live == desired:
        return True
    if (
        isinstance(desired, str)
        and isinstance(live, str | int)
        and (parent in _QUANTITY_MAPS or key in _QUANTITY_FIELDS)
    ):
        try:
            return parse_quantity(desired) == parse_quantity(str(live))
        except ValueError:
            return False
    return False


def contains(live: Any, desired: Any, key: str | None = None, parent: str | None = None) -> bool:
    """Whether every field of ``desired`` holds the same value in ``live`` (lists item by item)."""
    if desired is None:
        return True
    if isinstance(desired, dict):
        if live is None:
            return not desired  # the API server drops some empty objects
        return isinstance(live, dict) and all(contains(live.get(k), v, k, key) for k, v in desired.items())
    if isinstance(desired, list):
        if live is None:
            return not desired
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(item, want, key, parent) for item, want in zip(live, desired, strict=True))
        )
    return _same_scalar(live, desired, key, parent)


def outlives_tenant(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` holds or fences tenant data: then only the deletion policy may remove it (with the
    namespace), never the garbage collector, so it carries no ownerReference."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return any(annotations.get(key) == "true" for key in (names.HOLDS_DATA_ANNOTATION, names.GUARDS_DATA_ANNOTATION))


def plan(desired: Mapping[str, Any], live: Mapping[str, Any] | None, *, known: bool) -> Action:
    """What to do about one rendered object. ``known``: this render was applied before, so a missing
    object was deleted, or a differing one edited, by someone else."""
    if live is None:
        return Create(dict(desired), restore=known)
    if outlives_tenant(desired) and (live.get("metadata") or {}).get("ownerReferences"):
        # Made owned by an earlier version: a merge patch with null drops the reference, or the
        # garbage collector would take the object with the tenant whatever its deletionPolicy.
        return Patch({**desired, "metadata": {**desired["metadata"], "ownerReferences": None}}, restore=False)
    if _hash(live) == _hash(desired):
        if contains(live, desired):
            return Unchanged(dict(live))
        return Patch(dict(desired), restore=True)
    return Patch(dict(desired), restore=False)


def with_owner(obj: dict[str, Any], owner: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` owned by the tenant, unless it holds or fences data (``outlives_tenant``)."""
    if outlives_tenant(obj):
        return obj
    return {**obj, "metadata": {**obj["metadata"], "ownerReferences": [dict(owner)]}}


def owner_reference(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


@dataclass(frozen=True, slots=True)
class Applied:
    """One object after apply: what was done, the object as stored, or the API's refusal."""

    desired: dict[str, Any]
    action: Action | None
    live: dict[str, Any] | None
    error: KubeError | None = None

    @property
    def wrote(self) -> bool:
        return self.error is None and isinstance(self.action, Create | Patch)

    @property
    def restored(self) -> bool:
        return self.wrote and isinstance(self.action, Create | Patch) and self.action.restore


def describe(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    where = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
    return f"{obj['kind']} {where}"


async def _execute(kube: KubeApi, action: Action) -> dict[str, Any]:
    if isinstance(action, Unchanged):
        return action.live
    obj = action.desired
    meta = obj["metadata"]
    if isinstance(action, Create):
        return await kube.create(obj)
    return await kube.patch(obj["apiVersion"], obj["kind"], meta["name"], obj, meta.get("namespace"))


async def apply_object(kube: KubeApi, desired: dict[str, Any], *, known: bool) -> Applied:
    """Bring one object to its rendered state; a create that races another writer re-plans once."""
    meta = desired["metadata"]
    action: Action | None = None
    try:
        live = await kube.get(desired["apiVersion"], desired["kind"], meta["name"], meta.get("namespace"))
        action = plan(desired, live, known=known)
        try:
            return Applied(desired, action, await _execute(kube, action))
        except KubeError as exc:
            if not (isinstance(action, Create) and exc.conflict):
                raise
        live = await kube.get(desired["apiVersion"], desired["kind"], meta["name"], meta.get("namespace"))
        action = plan(desired, live, known=known)
        return Applied(desired, action, await _execute(kube, action))
    except KubeError as exc:
        return Applied(desired, action, None, exc)
