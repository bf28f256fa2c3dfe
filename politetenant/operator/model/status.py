"""The tenant's status, computed: conditions, the phase people read, and the patch that writes them.

Pure functions. A condition keeps its ``lastTransitionTime`` while its status stays the same (the
metav1.Condition rule), so an unchanged tenant yields an unchanged status and the handler writes
nothing. ``Ready`` is derived from the others; the phase is derived from the conditions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from politetenant.operator.model import names
from politetenant.operator.model.reasons import NEEDS_ACTION, ROLLING_OUT, Reason
from politetenant.operator.model.tenant import DatabaseEngine, PoliteTenant
from politetenant.operator.model.tenant_status import CONDITION_TYPES

ConditionStatus = Literal["True", "False", "Unknown"]
FENCE_KINDS = frozenset({"Namespace", "ResourceQuota", "NetworkPolicy", "ServiceAccount"})
# Every condition Ready depends on, in the order a person would check them: placement first.
PARTS = ("Placement", *(t for t in CONDITION_TYPES if t not in ("Ready", "Placement")))


@dataclass(frozen=True, slots=True)
class Check:
    """One condition as the reconcile step judged it, before timestamps and generations."""

    type: str
    status: ConditionStatus
    reason: Reason
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "True"


def passed(type_: str, reason: Reason, message: str = "") -> Check:
    return Check(type_, "True", reason, message)


def failed(type_: str, reason: Reason, message: str = "") -> Check:
    return Check(type_, "False", reason, message)


def utc_now() -> str:
    """Now, as the RFC 3339 seconds-precision UTC time Kubernetes writes."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready(checks: Iterable[Check]) -> Check:
    """Ready: True when every part is True, else False with the first failing part's reason (a part
    not judged yet only when none failed)."""
    by_type = {check.type: check for check in checks}
    for part in PARTS:
        check = by_type.get(part)
        if check is not None and not check.ok:
            return failed("Ready", check.reason, f"{part}: {check.message}" if check.message else part)
    for part in PARTS:
        if part not in by_type:
            return failed("Ready", Reason.PROVISIONING, f"{part}: not yet known")
    return passed("Ready", Reason.READY, "every part of the tenant is ready")


def conditions(
    previous: Iterable[Mapping[str, Any]], checks: Iterable[Check], *, generation: int | None, now: str
) -> list[dict[str, Any]]:
    """metav1.Conditions in the order of CONDITION_TYPES; a transition time moves only with the status."""
    before = {str(c.get("type")): c for c in previous if isinstance(c, Mapping)}
    by_type = {check.type: check for check in checks}
    result = []
    for type_ in CONDITION_TYPES:
        check = by_type.get(type_)
        if check is None:
            continue
        old = before.get(type_)
        since = old.get("lastTransitionTime") if old is not None and old.get("status") == check.status else None
        condition: dict[str, Any] = {
            "type": type_,
            "status": check.status,
            "reason": check.reason.value,
            "message": check.message,
            "lastTransitionTime": since or now,
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        result.append(condition)
    return result


def phase(checks: Iterable[Check], *, previous_phase: str | None, deleting: bool = False) -> str:
    """The one word for people: Deleting, Pending (not placed here), Ready, Failed (someone must act),
    Degraded (was ready, is not), else Provisioning."""
    checks = list(checks)
    if deleting:
        return "Deleting"
    by_type = {check.type: check for check in checks}
    placement = by_type.get("Placement")
    if placement is not None and not placement.ok:
        return "Pending"
    if all(check.ok for check in checks) and "Ready" in by_type:
        return "Ready"
    if any(not check.ok and check.reason in NEEDS_ACTION for check in checks):
        return "Failed"
    if previous_phase in ("Ready", "Degraded"):
        return "Degraded"
    return "Provisioning"


def rolling_out(checks: Iterable[Check]) -> str | None:
    """What the tenant waits for when that is only a rollout other controllers finish by themselves
    (``part: message``), else None: nothing to wait for, or something that needs a person or a retry."""
    failing = [check for check in checks if not check.ok and check.type != "Ready"]
    if not failing or any(check.reason not in ROLLING_OUT for check in failing):
        return None
    return "; ".join(f"{check.type}: {check.message}" for check in failing)


@dataclass(frozen=True, slots=True)
class Facts:
    """What the status reports besides conditions: where the tenant lives and its key version."""

    namespace: str | None = None
    endpoint: str | None = None
    keys_version: int | None = None
    keys_rotated_at: str | None = None
    database_engine: str | None = None


def status_body(
    previous: Mapping[str, Any] | None,
    checks: Iterable[Check],
    facts: Facts,
    *,
    generation: int | None,
    now: str,
    deleting: bool = False,
) -> dict[str, Any]:
    """The whole status the operator wants the tenant to show (checks without Ready get Ready added)."""
    previous = previous or {}
    checks = list(checks)
    if not any(check.type == "Ready" for check in checks):
        checks.append(ready(checks))
    body: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase(checks, previous_phase=previous.get("phase"), deleting=deleting),
        "conditions": conditions(previous.get("conditions") or [], checks, generation=generation, now=now),
        "namespace": facts.namespace,
        "endpoint": facts.endpoint,
    }
    if facts.keys_version is not None:
        body["keys"] = {"version": facts.keys_version, "rotatedAt": facts.keys_rotated_at}
    if facts.database_engine is not None:
        body["database"] = {"engine": facts.database_engine}
    return {key: value for key, value in body.items() if value is not None}


def keep_checks(previous: Mapping[str, Any] | None, *, except_types: Iterable[str]) -> list[Check]:
    """The previous status's conditions as checks, leaving out ``except_types`` (deletion keeps the
    last known health of the parts and replaces only what deletion changes)."""
    skip = set(except_types)
    kept = []
    for condition in (previous or {}).get("conditions") or []:
        try:
            reason = Reason(condition.get("reason"))
        except ValueError:
            continue
        if condition.get("type") in skip or condition.get("status") not in ("True", "False", "Unknown"):
            continue
        kept.append(Check(str(condition["type"]), condition["status"], reason, str(condition.get("message", ""))))
    return kept


def status_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch of the status that turns ``current`` into ``desired``; empty when equal.

    Top-level fields only: lists (conditions) are replaced whole by a merge patch anyway, and a
    field the operator no longer reports is removed with ``null``.
    """
    current = current or {}
    patch: dict[str, Any] = {key: value for key, value in desired.items() if current.get(key) != value}
    patch.update({key: None for key in current if key not in desired})
    return patch


# -- the children's health, read from the objects as the API returned them -------------------------


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def namespace_check(live: Mapping[str, Any] | None) -> Check:
    if live is None:
        return failed("NamespaceReady", Reason.PROVISIONING, "namespace not created yet")
    name = live["metadata"]["name"]
    if live["metadata"].get("deletionTimestamp") or (live.get("status") or {}).get("phase") == "Terminating":
        return failed("NamespaceReady", Reason.NAMESPACE_TERMINATING, f"namespace {name} is being deleted")
    return passed("NamespaceReady", Reason.NAMESPACE_ACTIVE, f"namespace {name}")


def tracker_check(live: Mapping[str, Any] | None) -> Check:
    """Available when the StatefulSet's controller saw the newest spec and every replica is updated
    and available (the fields a Deployment reports too)."""
    if live is None:
        return failed("TrackerReady", Reason.PROVISIONING, "StatefulSet not created yet")
    want = _int((live.get("spec") or {}).get("replicas"), 1)
    status = live.get("status") or {}
    available = _int(status.get("availableReplicas"))
    current = _int(status.get("observedGeneration")) >= _int(live["metadata"].get("generation"))
    updated = _int(status.get("updatedReplicas")) >= want
    message = f"{available} of {want} tracker replicas available"
    if current and updated and available >= want:
        return passed("TrackerReady", Reason.TRACKER_AVAILABLE, message)
    return failed("TrackerReady", Reason.TRACKER_STARTING, message if current else f"{message}, rollout pending")


def database_check(live: Mapping[str, Any] | None) -> Check:
    """A StatefulSet counts readyReplicas, a CloudNativePG Cluster readyInstances."""
    if live is None:
        return failed("DatabaseReady", Reason.PROVISIONING, "database not created yet")
    spec, status = live.get("spec") or {}, live.get("status") or {}
    if live["kind"] == "Cluster":
        want, ready_now, what = _int(spec.get("instances"), 1), _int(status.get("readyInstances")), "instances"
    else:
        want, ready_now, what = _int(spec.get("replicas"), 1), _int(status.get("readyReplicas")), "replicas"
    message = f"{live['kind']} {live['metadata']['name']}: {ready_now} of {want} {what} ready"
    if ready_now >= want:
        return passed("DatabaseReady", Reason.DATABASE_AVAILABLE, message)
    return failed("DatabaseReady", Reason.DATABASE_STARTING, message)


def retention_check(live: Mapping[str, Any] | None) -> Check:
    if live is None:
        return failed("RetentionReady", Reason.PROVISIONING, "CronJob not created yet")
    spec = live.get("spec") or {}
    if spec.get("suspend"):
        return passed("RetentionReady", Reason.LEGAL_HOLD, "retention suspended: the tenant is under legal hold")
    return passed("RetentionReady", Reason.RETENTION_SCHEDULED, f"schedule {spec.get('schedule')} (UTC)")


def part_of(obj: Mapping[str, Any]) -> str:
    """The condition a child counts towards: the fence, else its component."""
    if obj["kind"] in FENCE_KINDS:
        return "NamespaceReady"
    component = (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
    return {"database": "DatabaseReady", "retention": "RetentionReady"}.get(str(component), "TrackerReady")


def parts_checks(
    tenant: PoliteTenant,
    live: Mapping[tuple[str, str], Mapping[str, Any] | None],
    *,
    keys: Check,
    engine: DatabaseEngine,
    engine_check: Check | None = None,
) -> list[Check]:
    """Every part but Placement, from the children as stored (``live`` by kind and name)."""
    return [
        namespace_check(live.get(("Namespace", tenant.namespace))),
        keys,
        engine_check or _database(tenant, engine, live),
        tracker_check(live.get(("StatefulSet", names.TRACKER))),
        retention_check(live.get(("CronJob", names.RETENTION))),
    ]


def _database(
    tenant: PoliteTenant, engine: DatabaseEngine, live: Mapping[tuple[str, str], Mapping[str, Any] | None]
) -> Check:
    if engine is DatabaseEngine.EXTERNAL:
        ref = tenant.spec.database.external_secret_ref
        where = f"Secret {ref.name}, key {ref.key}" if ref else "its Secret"
        return passed("DatabaseReady", Reason.DATABASE_EXTERNAL, f"external PostgreSQL from {where}; not checked")
    kind = "Cluster" if engine is DatabaseEngine.CNPG else "StatefulSet"
    return database_check(live.get((kind, names.DATABASE)))
