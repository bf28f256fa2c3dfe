"""Apply rendered objects idempotently: create what is missing, merge-patch what drifted, else nothing.

``plan`` is the pure decision. An object is unchanged when its ``polite.io/spec-hash`` annotation
equals the rendered one *and* every rendered field still holds its rendered value in the live
object; the second test catches a hand edit that kept the annotation. Fields the API server or
other controllers add (defaults, status, a Service's clusterIP) are not ours and never count as
drift. A patch is a JSON merge patch of the rendered object: lists are replaced whole, maps merged,
so nothing the cluster added is lost.

Some fields cannot change once an object exists (``IMMUTABLE``): the API server refuses an update
that touches them with 422 Invalid, forever, at every reconcile. Patches leave them out, and a
difference in one is not drift (restoring it would fail on every resync); ``immutable_differences``
names such differences so the status can say what the cluster keeps from an earlier render. The
spec hash still moves on: it records the render applied as far as the API allows.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from politetenant.operator.kube.client import KubeApi, KubeError
from politetenant.operator.model import names
from politetenant.operator.render.hardening import parse_quantity

# Where quantities live in what render emits: the API server stores them canonically ("0.5" comes
# back as "500m"), so they compare by value, not by spelling.
_QUANTITY_MAPS = frozenset({"requests", "limits", "hard"})
_QUANTITY_FIELDS = frozenset({"storage", "sizeLimit"})

FieldPath = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Fixed:
    """A field that keeps its first value, except for the sub-fields under it in ``mutable``."""

    path: FieldPath
    mutable: frozenset[FieldPath] = frozenset()


def _under(*keys: str) -> frozenset[FieldPath]:
    return frozenset((key,) for key in keys)


# What the API server refuses to change, by (API group, kind), for the kinds the operator renders or
# might: each from the validation the Kubernetes API reference describes for the kind.
IMMUTABLE: dict[tuple[str, str], tuple[Fixed, ...]] = {
    # https://kubernetes.io/docs/reference/access-authn-authz/rbac/#clusterrolebinding-example: "After
    # you create a binding, you cannot change the Role or ClusterRole that it refers to."
    ("rbac.authorization.k8s.io", "RoleBinding"): (Fixed(("roleRef",)),),
    # https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/ and the API server's
    # ValidateStatefulSetUpdate: "spec: Forbidden: updates to statefulset spec for fields other than
    # 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and
    # 'minReadySeconds' are forbidden" (volumeClaimTemplates, selector, serviceName, podManagementPolicy,
    # ...). revisionHistoryLimit joined the mutable list only in Kubernetes 1.33: fixed here, so older
    # API servers never see it change.
    ("apps", "StatefulSet"): (
        Fixed(
            ("spec",),
            _under(
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ),
        ),
    ),
    # https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#label-selector-updates:
    # in apps/v1 a selector is immutable ("spec.selector: Invalid value: ...: field is immutable").
    ("apps", "Deployment"): (Fixed(("spec", "selector")),),
    ("apps", "ReplicaSet"): (Fixed(("spec", "selector")),),
    ("apps", "DaemonSet"): (Fixed(("spec", "selector")),),
    # https://kubernetes.io/docs/concepts/workloads/controllers/job/#mutable-scheduling-directives: a
    # Job's pod template is immutable (a few scheduling fields of a suspended Job aside), and so is its
    # selector. A CronJob's jobTemplate is not: it shapes the next Job only.
    ("batch", "Job"): (Fixed(("spec", "selector")), Fixed(("spec", "template"))),
    # https://kubernetes.io/docs/reference/kubernetes-api/service-resources/service-v1/#ServiceSpec:
    # clusterIP "may not be changed through updates" (save to or from type ExternalName), nor may
    # clusterIPs. Render sets clusterIP only to "None", for headless Services; an allocated one is the
    # API server's and never compared.
    ("", "Service"): (Fixed(("spec", "clusterIP")), Fixed(("spec", "clusterIPs"))),
    # https://kubernetes.io/docs/concepts/storage/persistent-volumes/#expanding-persistent-volumes-claims:
    # a claim grows through spec.resources.requests; the API server refuses the rest ("spec: Forbidden:
    # spec is immutable after creation except resources.requests and volumeAttributesClassName for bound
    # claims").
    ("", "PersistentVolumeClaim"): (
        Fixed(("spec",), frozenset({("resources", "requests"), ("volumeAttributesClassName",)})),
    ),
}


@dataclass(frozen=True, slots=True)
class Create:
    desired: dict[str, Any]
    restore: bool  # it existed before at this generation: someone deleted it


@dataclass(frozen=True, slots=True)
class Patch:
    desired: dict[str, Any]  # the merge patch: the rendered object less its immutable fields
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


def _differences(live: Any, desired: Any, key: str | None, parent: str | None, path: str) -> Iterator[str]:
    """Where a field of ``desired`` does not hold its value in ``live``, as field paths
    (``spec.volumeClaimTemplates[0].spec.resources.requests.storage``); lists compare item by item."""
    if desired is None:
        return
    if isinstance(desired, dict):
        if live is None:
            if desired:  # the API server drops some empty objects
                yield path
        elif not isinstance(live, dict):
            yield path
        else:
            for k, v in desired.items():
                yield from _differences(live.get(k), v, k, key, f"{path}.{k}" if path else k)
    elif isinstance(desired, list):
        if live is None:
            if desired:
                yield path
        elif not isinstance(live, list) or len(live) != len(desired):
            yield path
        else:
            for index, (item, want) in enumerate(zip(live, desired, strict=True)):
                yield from _differences(item, want, key, parent, f"{path}[{index}]")
    elif not _same_scalar(live, desired, key, parent):
        yield path


def contains(live: Any, desired: Any, key: str | None = None, parent: str | None = None) -> bool:
    """Whether every field of ``desired`` holds the same value in ``live`` (lists item by item).

    Given a whole object (apiVersion and kind), its immutable fields are left out: a difference there
    cannot be repaired, so it is no drift (``immutable_differences`` reports it)."""
    if key is None and parent is None and _is_object(desired):
        desired = mutable_fields(desired)
    return next(_differences(live, desired, key, parent, ""), None) is None


def _is_object(value: Any) -> bool:
    return isinstance(value, Mapping) and "apiVersion" in value and "kind" in value


def _fixed_fields(obj: Mapping[str, Any]) -> tuple[Fixed, ...]:
    group = str(obj["apiVersion"]).rpartition("/")[0]
    return IMMUTABLE.get((group, str(obj["kind"])), ())


def _lookup(node: Any, path: FieldPath) -> Any:
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _only(node: Any, paths: frozenset[FieldPath]) -> dict[str, Any]:
    """The sub-fields of ``node`` at ``paths`` (those present), nothing else."""
    kept: dict[str, Any] = {}
    for path in sorted(paths):
        value = _lookup(node, path)
        if value is None:
            continue
        target = kept
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return kept


def _without(node: Any, paths: frozenset[FieldPath]) -> Any:
    """A copy of ``node`` less its sub-fields at ``paths``."""
    if not paths or not isinstance(node, Mapping):
        return copy.deepcopy(node)
    return {
        key: _without(value, frozenset(p[1:] for p in paths if p[0] == key and len(p) > 1))
        for key, value in node.items()
        if (key,) not in paths
    }


def mutable_fields(desired: Mapping[str, Any]) -> dict[str, Any]:
    """``desired`` less its immutable fields (``IMMUTABLE``): what a patch may send and drift compares.
    A merge patch without a field leaves it as stored. Copied only along the paths it cuts (the rest
    is shared with ``desired``, which nobody changes): a reconcile plans every child on every resync."""
    result = dict(desired)
    for fixed in _fixed_fields(desired):
        parent: dict[str, Any] | None = result
        for key in fixed.path[:-1]:
            child = parent.get(key) if parent is not None else None
            if not isinstance(child, Mapping) or parent is None:
                parent = None
                break
            parent[key] = dict(child)
            parent = parent[key]
        leaf = fixed.path[-1]
        if parent is None or leaf not in parent:
            continue
        kept = _only(parent[leaf], fixed.mutable)
        if kept:
            parent[leaf] = kept
        else:
            del parent[leaf]
    return result


def immutable_differences(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> list[str]:
    """Field paths where ``live`` keeps a value the render no longer asks for and the API server will
    not change (``spec.volumeClaimTemplates[0].spec.resources.requests.storage``); empty when none."""
    if live is None:
        return []
    found: list[str] = []
    for fixed in _fixed_fields(desired):
        want = _lookup(desired, fixed.path)
        if want is None:
            continue
        parent = fixed.path[-2] if len(fixed.path) > 1 else None
        have = _lookup(live, fixed.path)
        path = ".".join(fixed.path)
        found.extend(_differences(have, _without(want, fixed.mutable), fixed.path[-1], parent, path))
    return found


def outlives_tenant(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` holds or fences tenant data: then only the deletion policy may remove it (with the
    namespace), never the garbage collector, so it carries no ownerReference."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return any(annotations.get(key) == "true" for key in (names.HOLDS_DATA_ANNOTATION, names.GUARDS_DATA_ANNOTATION))


def plan(desired: Mapping[str, Any], live: Mapping[str, Any] | None, *, known: bool) -> Action:
    """What to do about one rendered object. ``known``: this render was applied before, so a missing
    object was deleted, or a differing one edited, by someone else. A patch carries the mutable fields
    only (``mutable_fields``): the API server would refuse the whole patch for one immutable field."""
    if live is None:
        return Create(dict(desired), restore=known)
    mutable = mutable_fields(desired)
    if outlives_tenant(desired) and (live.get("metadata") or {}).get("ownerReferences"):
        # Made owned by an earlier version: a merge patch with null drops the reference, or the
        # garbage collector would take the object with the tenant whatever its deletionPolicy.
        return Patch({**mutable, "metadata": {**mutable["metadata"], "ownerReferences": None}}, restore=False)
    if _hash(live) == _hash(desired):
        if contains(live, mutable):
            return Unchanged(dict(live))
        return Patch(mutable, restore=True)
    return Patch(mutable, restore=False)


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
