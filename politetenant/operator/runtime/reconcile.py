"""Reconcile one tenant: what a create, update, resume or drift-timer handler calls.

The order keeps the tenant whole at every step: placement and rendering first (no writes); then
every key-service call (``prepare_keys``), so an unreachable Vault leaves nothing half-written; then
the namespace, the Secrets the pods need, and the rest of the children in render order (the fence
before any pod). The result is the status the tenant should show and whether to retry, or, when only
workloads are still rolling out, to look again soon; the handler writes it and asks kopf. A resync of
an unchanged tenant makes no write and posts no Event.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from politetenant.operator.keys.lifecycle import KeyBackend
from politetenant.operator.keys.secret import (
    ROTATE_ANNOTATION,
    VERSION_ANNOTATION,
    KeyPlan,
    prepare_keys,
    store_keys,
)
from politetenant.operator.kube.apply import (
    Applied,
    Create,
    apply_object,
    describe,
    owner_reference,
    with_owner,
)
from politetenant.operator.kube.client import KubeApi, KubeError, ObjectRef
from politetenant.operator.kube.secrets import SecretOutcome, ensure_secret
from politetenant.operator.model import names
from politetenant.operator.model.config import OperatorConfig
from politetenant.operator.model.reasons import NEEDS_ACTION, EventType, Reason
from politetenant.operator.model.status import (
    Check,
    Facts,
    failed,
    keep_checks,
    part_of,
    parts_checks,
    passed,
    rolling_out,
    status_body,
    utc_now,
)
from politetenant.operator.model.tenant import API_VERSION, KIND, DatabaseEngine, PoliteTenant
from politetenant.operator.render.tenant import RenderError, RenderResult, render_tenant, spec_hash
from politetenant.operator.render.wiring import database_engine, engine_conflict
from politetenant.operator.runtime.database_engine import CNPG_CRD, recorded_engine, without_missing_engine
from politetenant.operator.runtime.events import announce, still, tell
from politetenant.operator.runtime.metrics import Metrics
from politetenant.operator.runtime.upgrades import retire_tracker_deployment
from politetenant.operator.runtime.volumes import VolumeOutcome, expand_claims
from politetenant.settings import format_validation_error

log = logging.getLogger(__name__)

ORPHANED_LABEL = "polite.io/orphaned"
# Children render leaves out when the spec stops asking for them (an Ingress once its host is removed).
OPTIONAL_CHILDREN = (
    ("networking.k8s.io/v1", "Ingress", names.TRACKER),
    ("networking.k8s.io/v1", "Ingress", names.TRACKER_API),
)
SECRET_PARTS = {
    names.API_TOKENS_SECRET: "TrackerReady",
    **dict.fromkeys(
        (names.DATABASE_CREDENTIALS_SECRET, names.DATABASE_OWNER_SECRET, names.DATABASE_APP_SECRET), "DatabaseReady"
    ),
}
_TRACKER = ("StatefulSet", names.TRACKER)  # the tracker's workload, which a key rotation rolls


@dataclass
class Runtime:
    """What the steps work with: the API, the key service, the configuration, metrics and a clock."""

    kube: KubeApi
    keys: KeyBackend
    config: OperatorConfig
    metrics: Metrics = field(default_factory=Metrics)
    instance: str = "polite-operator"
    clock: Callable[[], str] = utc_now
    resync_seconds: float = 60.0  # how often tenants are looked at again; bounds every wait
    # Per tenant, the Secrets last found complete: for which tenant state (``secrets_mark``) and the key
    # version and time they held (``_secrets_known``); a resync of the
    # same tenant reads none of them (Secrets are not watched; see ``watched``).
    secrets_checked: dict[str, tuple[tuple[Any, ...], int, str | None]] = field(default_factory=dict)
    # Per tenant, its last render and what it was rendered from (``_render``).
    renders: dict[str, tuple[str, RenderResult]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The status the tenant should show (None: leave it) and whether to try again soon."""

    status: dict[str, Any] | None
    retry: bool = False
    why: str = ""  # for the log line of a retry; never a secret
    delay: float | None = None  # when to retry, if the step knows better than the backoff
    needs_action: bool = False  # what failed waits for a person (a Vault refusing): retry slowly
    done: bool = True  # deletion only: the finalizer may go
    rolling_out: bool = False  # all is applied; only workloads rolling out keep it from Ready: look again soon


@dataclass(frozen=True, slots=True)
class Seen:
    """The tenant object as this reconcile found it."""

    tenant: PoliteTenant
    ref: ObjectRef
    generation: int | None
    status: Mapping[str, Any]

    @property
    def applied_before(self) -> bool:
        """The previous reconcile applied this very generation, so a missing or differing child was
        deleted or edited by someone else."""
        same = self.status.get("observedGeneration") == self.generation
        conditions = self.status.get("conditions") or []
        return same and any(c.get("type") == "NamespaceReady" and c.get("status") == "True" for c in conditions)

    @property
    def keys_version(self) -> int | None:
        version = (self.status.get("keys") or {}).get("version")
        return version if isinstance(version, int) else None


def tenant_ref(body: Mapping[str, Any]) -> ObjectRef:
    meta = body.get("metadata") or {}
    return ObjectRef(API_VERSION, KIND, str(meta.get("name", "")), meta.get("uid"))


def parse(body: Mapping[str, Any]) -> PoliteTenant | str:
    """The tenant, or why it cannot be read (the CRD's validation should make this rare)."""
    try:
        return PoliteTenant.model_validate(
            {key: body[key] for key in ("apiVersion", "kind", "metadata", "spec") if key in body}
        )
    except ValidationError as exc:
        return format_validation_error(exc, "spec").replace("\n", "; ")


async def reconcile(body: Mapping[str, Any], rt: Runtime, *, trigger: str = "change") -> Outcome:
    """Bring the tenant's children to its spec and say how it is."""
    started = time.monotonic()
    try:
        return await _reconcile(body, rt, trigger=trigger)
    finally:
        rt.metrics.reconcile_seconds.labels(trigger).observe(time.monotonic() - started)


async def _reconcile(body: Mapping[str, Any], rt: Runtime, *, trigger: str = "change") -> Outcome:
    now = rt.clock()
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    generation = meta.get("generation")
    if meta.get("deletionTimestamp"):
        return Outcome(None)  # the delete handler has it now; never re-create what it removes
    parsed = parse(body)
    if isinstance(parsed, str):
        checks = [failed("Ready", Reason.INVALID_SPEC, parsed)]
        return Outcome(status_body(status, checks, _facts_from(status), generation=generation, now=now), why=parsed)
    seen = Seen(parsed, tenant_ref(body), generation, status)
    region = parsed.spec.region
    if region not in rt.config.served_regions:
        served = ", ".join(rt.config.served_regions)
        message = f"region {region} is not served by this operator (it serves {served}); nothing is provisioned here"
        checks = [failed("Placement", Reason.REGION_NOT_SERVED, message)]
        return _finish(rt, seen, status_body(status, checks, _facts_from(status), generation=generation, now=now))
    try:
        return await _provision(seen, rt, now, trigger=trigger)
    except KubeError as exc:
        rt.metrics.api_error("kubernetes", exc.reason)
        checks = [*keep_checks(status, except_types=("Ready",)), failed("Ready", Reason.API_ERROR, str(exc))]
        body_ = status_body(status, checks, _facts_from(status), generation=generation, now=now)
        return _finish(rt, seen, body_, retry=True, why=str(exc))


def _finish(
    rt: Runtime,
    seen: Seen,
    body: dict[str, Any],
    *,
    retry: bool = False,
    why: str = "",
    needs_action: bool = False,
    rollout: str | None = None,
) -> Outcome:
    rt.metrics.tenant(seen.tenant.name, seen.tenant.spec.region, str(body.get("phase")))
    rt.metrics.tenant_conditions(seen.tenant.name, seen.tenant.spec.region, body.get("conditions") or [])
    if rollout is not None and not retry:
        return Outcome(body, why=f"waiting for the rollout: {rollout}", rolling_out=True)
    return Outcome(body, retry=retry, why=why, needs_action=needs_action)


def _facts_from(status: Mapping[str, Any]) -> Facts:
    keys = status.get("keys") or {}
    engine = (status.get("database") or {}).get("engine")
    return Facts(status.get("namespace"), status.get("endpoint"), keys.get("version"), keys.get("rotatedAt"), engine)


def _render(rt: Runtime, tenant: PoliteTenant, cnpg: bool, engine: DatabaseEngine) -> RenderResult:
    """``render_tenant``, remembered per tenant for the same inputs: a render
    (templates to YAML to objects) is most of a reconcile's work, and a child's event or a resync
    renders the same again. The inputs are the name and the spec, not the whole object: render reads
    nothing else, and kopf's annotations and the resourceVersion change with every write to the tenant.
    The objects are shared, never changed: every later step builds new ones."""
    key = json.dumps([tenant.name, tenant.spec.model_dump(mode="json"), cnpg, engine.value], sort_keys=True)
    remembered = rt.renders.get(tenant.name)
    if remembered is not None and remembered[0] == key:
        return remembered[1]
    result = render_tenant(tenant, rt.config, cnpg_available=cnpg, recorded_engine=engine)
    rt.renders[tenant.name] = (key, result)
    return result


def secrets_mark(seen: Seen) -> tuple[Any, ...]:
    """What a tenant's Secrets depend on: its identity, its spec and a rotation request."""
    return seen.ref.uid, seen.generation, seen.tenant.metadata.annotations.get(ROTATE_ANNOTATION)


def _secrets_known(seen: Seen, rt: Runtime, trigger: str) -> KeyPlan | None:
    """The keys as last found, when this reconcile may take the tenant's Secrets as they were, reading
    none (they are not watched). A change, the operator's start, or a child changing once the tenant
    was Ready (a pod that cannot mount a deleted Secret moves its StatefulSet) reads them; a resync, and
    a child's event while the tenant is still coming up (its own writes coming back), do not."""
    known = rt.secrets_checked.get(seen.tenant.name)
    if known is None or known[0] != secrets_mark(seen):
        return None
    if trigger != "resync" and not (trigger == "drift" and seen.status.get("phase") != "Ready"):
        return None
    _, version, issued_at = known
    return KeyPlan(passed("KeysReady", Reason.KEYS_AVAILABLE, f"key version {version}"), version, issued_at)


async def _provision(seen: Seen, rt: Runtime, now: str, *, trigger: str = "change") -> Outcome:
    tenant = seen.tenant
    placed = passed("Placement", Reason.REGION_SERVED, f"region {tenant.spec.region} is served here")
    cnpg = await rt.kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", CNPG_CRD) is not None
    recorded = await recorded_engine(rt.kube, seen.status, tenant.namespace)
    engine = database_engine(tenant, cnpg, recorded)
    try:
        result = _render(rt, tenant, cnpg, engine)
    except RenderError as exc:
        checks = [placed, failed("Ready", Reason.INVALID_SPEC, str(exc).replace("\n", "; "))]
        facts = _facts_from(seen.status)  # what was provisioned before the spec went wrong is still there
        return _finish(rt, seen, status_body(seen.status, checks, facts, generation=seen.generation, now=now))
    objects, engine_check = without_missing_engine(engine, result.objects, cnpg)
    conflict = engine_conflict(tenant, recorded)
    if conflict is not None:
        engine_check = failed("DatabaseReady", Reason.DATABASE_ENGINE_CHANGE_REFUSED, conflict)
    owned = {secret.name: secret for secret in result.secrets}
    key_secret = owned.pop(names.KEYS_SECRET)
    # The operator reads and writes a namespace's Secrets through the RoleBinding it puts there first.
    access = await _grant_secrets(rt, objects, seen) if await _namespace_exists(rt, tenant.namespace) else []
    known = _secrets_known(seen, rt, trigger)
    quiet = known is not None  # found complete for this very tenant state: no Secret is read
    if known is not None:
        keys = known
    else:
        keys = await prepare_keys(rt.kube, rt.keys, tenant, key_secret, known_version=seen.keys_version, now=now)
    if not keys.usable:  # no key Secret and none to be had: write nothing at all
        return await _without_keys(rt, seen, placed, keys, now)
    namespace = await apply_object(rt.kube, objects[0], known=seen.applied_before)
    if namespace.error is not None:
        raise namespace.error
    access = access or await _grant_secrets(rt, objects, seen)
    if not quiet:  # a 409 re-plans once: another operator's keys are adopted, never overwritten
        keys, key_error = await store_keys(
            rt.kube, rt.keys, tenant, key_secret, keys, known_version=seen.keys_version, now=now
        )
        if key_error is not None:
            rt.metrics.api_error("kubernetes", key_error.reason)
        if not keys.usable:  # the namespace alone: nothing in it needs keys yet
            return await _without_keys(rt, seen, placed, keys, now)
    # A namespace created by this very reconcile holds no Secret yet: they are created without a read.
    fresh = isinstance(namespace.action, Create)
    secrets = [] if quiet else [await ensure_secret(rt.kube, tenant, s, absent=fresh) for s in owned.values()]
    if keys.check.ok and not any(s.error for s in secrets):  # all there (or written just now)
        if keys.version is not None:
            rt.secrets_checked[tenant.name] = (secrets_mark(seen), keys.version, keys.issued_at)
    else:
        rt.secrets_checked.pop(tenant.name, None)
    children = _prepared(objects[1 + len(access) :], seen, keys)  # stamped with the key version the Secret holds
    applied = [namespace, *access] + [await apply_object(rt.kube, obj, known=seen.applied_before) for obj in children]
    # A StatefulSet's claim templates never change: a storage increase grows its claims instead.
    volumes = [
        await expand_claims(rt.kube, a.desired, a.live)
        for a in applied
        if a.desired["kind"] == "StatefulSet" and a.error is None
    ]
    await _adopt(rt, seen, namespace)
    await _prune(rt, seen, objects)
    tracker = next((a.live for a in applied if (a.desired["kind"], a.desired["metadata"]["name"]) == _TRACKER), None)
    retired = await retire_tracker_deployment(rt.kube, tenant.name, tenant.namespace, tracker)
    if retired is not None:
        await announce(rt, seen.ref, EventType.NORMAL, Reason.OBJECT_UPDATED, retired)
    await tell(rt, tenant, seen.ref, seen.status, applied, secrets, keys)
    judged = _judge(tenant, applied, secrets, keys, engine, engine_check)
    checks = [placed, *(_held_back(check, volumes) for check in judged)]
    facts = Facts(tenant.namespace, result.endpoint, keys.version, keys.issued_at, engine.value)
    body = status_body(seen.status, checks, facts, generation=seen.generation, now=now)
    errors = [a.error for a in applied if a.error] + [s.error for s in secrets if s.error]
    errors += [v.error for v in volumes if v.error]
    for error in errors:
        rt.metrics.api_error("kubernetes", error.reason)
    why = "; ".join([*(str(e) for e in errors), *([] if keys.check.ok else [keys.check.message])])
    slow = not errors and keys.check.reason in NEEDS_ACTION
    retry = bool(errors) or not keys.check.ok
    return _finish(rt, seen, body, retry=retry, why=why, needs_action=slow, rollout=rolling_out(checks))


async def _without_keys(rt: Runtime, seen: Seen, placed: Check, keys: KeyPlan, now: str) -> Outcome:
    """The status of a tenant that has no keys to run on: KeysReady says why, the rest as last seen."""
    rt.metrics.api_error("keys", keys.check.reason)
    if not still(seen.status, keys.check):
        await announce(rt, seen.ref, EventType.WARNING, keys.check.reason, keys.check.message)
    checks = [*keep_checks(seen.status, except_types=("Ready", "Placement", "KeysReady")), placed, keys.check]
    body = status_body(seen.status, checks, _facts_from(seen.status), generation=seen.generation, now=now)
    return _finish(rt, seen, body, retry=True, why=keys.check.message, needs_action=keys.check.reason in NEEDS_ACTION)


def _prepared(objects: list[dict[str, Any]], seen: Seen, keys: KeyPlan) -> list[dict[str, Any]]:
    """Children owned by the tenant (unless they hold data), the tracker's pods stamped with the key
    version so a rotation rolls them, and that stamp in the object's spec hash."""
    owner = owner_reference(API_VERSION, KIND, seen.tenant.name, seen.ref.uid) if seen.ref.uid else None
    prepared = []
    for obj in objects:
        # Stamp before adding the owner: the spec hash then covers what render plus the key version
        # say, not the tenant's uid, as for every other child.
        if (obj["kind"], obj["metadata"]["name"]) == _TRACKER and keys.version is not None:
            obj = _stamp_keys_version(obj, keys.version)
        if owner is not None and obj["kind"] != "Namespace":
            obj = with_owner(obj, owner)
        prepared.append(obj)
    return prepared


def _stamp_keys_version(workload: dict[str, Any], version: int) -> dict[str, Any]:
    template = workload["spec"]["template"]
    template_meta = template.get("metadata", {})
    annotations = {**template_meta.get("annotations", {}), VERSION_ANNOTATION: str(version)}
    stamped = {
        **workload,
        "spec": {
            **workload["spec"],
            "template": {**template, "metadata": {**template_meta, "annotations": annotations}},
        },
    }
    meta = stamped["metadata"]
    stamped["metadata"] = {
        **meta,
        "annotations": {**meta["annotations"], names.SPEC_HASH_ANNOTATION: spec_hash(stamped)},
    }
    return stamped


async def _adopt(rt: Runtime, seen: Seen, namespace: Applied) -> None:
    """A namespace a deleted tenant left behind (deletionPolicy Retain) belongs to this tenant again."""
    labels = ((namespace.live or {}).get("metadata") or {}).get("labels") or {}
    if ORPHANED_LABEL not in labels:
        return
    name = seen.tenant.namespace
    await rt.kube.patch("v1", "Namespace", name, {"metadata": {"labels": {ORPHANED_LABEL: None}}})
    message = f"namespace {name}, left by a deleted tenant of the same name, is managed again with its data and keys"
    await announce(rt, seen.ref, EventType.NORMAL, Reason.NAMESPACE_ADOPTED, message)


async def _prune(rt: Runtime, seen: Seen, objects: list[dict[str, Any]]) -> None:
    """Delete an optional child the spec no longer asks for, if it is this tenant's."""
    rendered = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    namespace = seen.tenant.namespace
    for api_version, kind, name in OPTIONAL_CHILDREN:
        if (kind, name) in rendered:
            continue
        live = await rt.kube.get(api_version, kind, name, namespace)
        labels = ((live or {}).get("metadata") or {}).get("labels") or {}
        if live is None or labels.get(names.TENANT_LABEL) != seen.tenant.name:
            continue
        await rt.kube.delete(api_version, kind, name, namespace)
        message = f"removed {kind} {namespace}/{name}: the spec no longer asks for it"
        await announce(rt, seen.ref, EventType.NORMAL, Reason.OBJECT_UPDATED, message)


def _judge(
    tenant: PoliteTenant,
    applied: list[Applied],
    secrets: list[SecretOutcome],
    keys: KeyPlan,
    engine: DatabaseEngine,
    engine_check: Check | None,
) -> list[Check]:
    """One check per part: an API refusal first, else what the live objects say."""
    errors: dict[str, str] = {}
    for item in applied:
        if item.error is not None:
            errors.setdefault(part_of(item.desired), f"{describe(item.desired)}: {item.error}")
    for secret in secrets:
        if secret.error is not None:
            errors.setdefault(SECRET_PARTS.get(secret.name, "TrackerReady"), f"Secret {secret.name}: {secret.error}")
    live = {(a.desired["kind"], a.desired["metadata"]["name"]): a.live for a in applied}
    checks = parts_checks(tenant, live, keys=keys.check, engine=engine, engine_check=engine_check)
    return [failed(c.type, Reason.API_ERROR, errors[c.type]) if c.type in errors else c for c in checks]


async def _namespace_exists(rt: Runtime, namespace: str) -> bool:
    return await rt.kube.get("v1", "Namespace", namespace) is not None


async def _grant_secrets(rt: Runtime, objects: list[dict[str, Any]], seen: Seen) -> list[Applied]:
    """Apply the RoleBinding that lets the operator at the namespace's Secrets (rendered right after
    the namespace); a refusal is raised: nothing else can be done without it."""
    found = [obj for obj in objects[1:2] if obj["kind"] == "RoleBinding"]
    applied = [await apply_object(rt.kube, obj, known=seen.applied_before) for obj in found]
    for item in applied:
        if item.error is not None:
            raise item.error
    return applied


def _held_back(check: Check, volumes: list[VolumeOutcome]) -> Check:
    """A part whose volumes are growing, or cannot grow, says so; an API refusal is said first."""
    held = next((v.check for v in volumes if v.check is not None and v.check.type == check.type), None)
    return held if held is not None and check.reason is not Reason.API_ERROR else check
