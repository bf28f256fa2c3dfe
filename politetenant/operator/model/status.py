"""The tenant's status, computed: conditions, the phase people read, and the patch that writes them.

Pure functions. A condition keeps its ``lastTransitionTime`` while its status stays the same (the
metav1.Condition rule), so an unchanged tenant yields an unchanged status and the handler writes
nothing. Every status carries ``observedGeneration``, and so does every condition (metav1.Condition
has the field): a reader knows which spec it describes.

Three conditions are derived from the parts (Placement, NamespaceReady, KeysReady, DatabaseReady,
TrackerReady, RetentionReady), never judged on their own, so that GitOps tools read the tenant right
with the kstatus rules (https://github.com/kubernetes-sigs/cli-utils/blob/master/pkg/kstatus/README.md,
"Conditions"; Flux waits on them, and Argo CD's health check will read the same):

- ``Stalled`` (abnormal-true): True only when a part fails for a reason that needs a person to change
  the spec or the platform (``reasons.NEEDS_ACTION``): an invalid spec, a region this operator does not
  serve, a database engine not installed or a refused engine change, a Vault that refuses (403: its
  policy or role must be fixed; retrying the same request cannot succeed), keys gone from their
  Secret, a legal hold blocking deletion. kstatus then says Failed, so a GitOps tool reports the
  problem at once instead of waiting out its timeout. Never for progress.
- ``Reconciling`` (abnormal-true): True while the generation is not fully applied and rolled out and
  nothing terminal is wrong. Reason ``Progressing`` while parts are only being created or rolled out;
  ``ProgressingWithRetry`` when a part failed for a reason the operator retries by itself (a transient
  API error, Vault unreachable): retrying is reconciling, as Flux's own controllers report it
  (fluxcd/pkg apis/meta ``ProgressingWithRetryReason``), and kstatus's Stalled is for what retrying
  cannot fix. Such a tenant is Reconciling True *and* Ready False: kstatus says InProgress, and a
  GitOps tool keeps waiting, up to its timeout, as it should for something that heals by itself.
  ``Deleting`` while a deletion proceeds. False once Ready is True or the tenant is Stalled.
- ``Ready``: True when every part is True; Unknown (not False) while parts are merely on their way
  (``reasons.PROGRESS``: not created yet, rolling out) and none failed; False when a part failed, with
  the first failure's reason.

So the first reconcile of a generation writes its ``observedGeneration`` with Ready Unknown and
Reconciling True whenever anything still rolls out (a workload's own controller has not yet seen its
new spec: ``tracker_check``, ``database_check``), and kstatus reads: observedGeneration behind ->
InProgress; Reconciling -> InProgress; Stalled -> Failed; Ready True -> Current. The phase is derived
from the same checks, for people.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from politetenant.operator.model import names
from politetenant.operator.model.reasons import NEEDS_ACTION, PROGRESS, ROLLING_OUT, Reason
from politetenant.operator.model.tenant import DatabaseEngine, PoliteTenant
from politetenant.operator.model.tenant_status import CONDITION_TYPES

ConditionStatus = Literal["True", "False", "Unknown"]
FENCE_KINDS = frozenset({"Namespace", "ResourceQuota", "NetworkPolicy", "ServiceAccount", "RoleBinding"})
# Conditions computed from the parts. Only Ready may be passed in (a spec that cannot be read has no
# parts to derive it from); Reconciling and Stalled are always recomputed.
DERIVED = ("Ready", "Reconciling", "Stalled")
# Every condition Ready depends on, in the order a person would check them: placement first.
PARTS = ("Placement", *(t for t in CONDITION_TYPES if t not in (*DERIVED, "Placement")))


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


def unknown(type_: str, reason: Reason, message: str = "") -> Check:
    return Check(type_, "Unknown", reason, message)


def utc_now() -> str:
    """Now, as the RFC 3339 seconds-precision UTC time Kubernetes writes."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _about(part: str, check: Check) -> str:
    return f"{part}: {check.message}" if check.message else part


def ready(checks: Iterable[Check]) -> Check:
    """Ready: True when every part is True; False with the first failing part's reason; Unknown
    while parts are only on their way (not created yet, rolling out) or not judged yet."""
    by_type = {check.type: check for check in checks}
    waiting = [(part, by_type[part]) for part in PARTS if part in by_type and not by_type[part].ok]
    for part, check in waiting:
        if check.reason not in PROGRESS:
            return failed("Ready", check.reason, _about(part, check))
    if waiting:
        part, check = waiting[0]
        return unknown("Ready", check.reason, _about(part, check))
    for part in PARTS:
        if part not in by_type:
            return unknown("Ready", Reason.PROVISIONING, f"{part}: not yet known")
    return passed("Ready", Reason.READY, "every part of the tenant is ready")


def _needs_a_person(checks: Iterable[Check]) -> Check | None:
    """Stalled True with the first part (then an explicit Ready) failing for a reason only a person
    can fix, else None."""
    by_type = {check.type: check for check in checks}
    for type_ in (*PARTS, "Ready"):
        check = by_type.get(type_)
        if check is not None and not check.ok and check.reason in NEEDS_ACTION:
            message = check.message if type_ == "Ready" else _about(type_, check)
            return Check("Stalled", "True", check.reason, message)
    return None


def progress(checks: Iterable[Check], *, deleting: bool = False) -> tuple[Check, Check]:
    """Reconciling and Stalled, from the parts and Ready (``checks`` must hold Ready)."""
    checks = list(checks)
    summary = next(check for check in checks if check.type == "Ready")
    stop = _needs_a_person(checks)
    if stop is not None:
        return failed("Reconciling", stop.reason, f"stalled until a person acts: {stop.message}"), stop
    if summary.ok and not deleting:
        done = "the spec is applied and every part is ready"
        return failed("Reconciling", Reason.READY, done), failed("Stalled", Reason.READY, done)
    if deleting:
        reason = Reason.DELETING
    elif summary.status == "Unknown":
        reason = Reason.PROGRESSING
    else:
        reason = Reason.PROGRESSING_WITH_RETRY
    calm = "nothing needs a person; the operator gets there by itself"
    return passed("Reconciling", reason, summary.message), failed("Stalled", reason, calm)


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
    Degraded (was ready, is not), else Provisioning. ``checks``: the parts and Ready."""
    checks = [check for check in checks if check.type not in ("Reconciling", "Stalled")]
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
    failing = [check for check in checks if not check.ok and check.type not in DERIVED]
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
    """The whole status the operator wants the tenant to show: ``checks`` are the parts (plus Ready
    when it cannot be derived from them); Ready, Reconciling and Stalled are added."""
    previous = previous or {}
    checks = [check for check in checks if check.type not in ("Reconciling", "Stalled")]
    if not any(check.type == "Ready" for check in checks):
        checks.append(ready(checks))
    derived = progress(checks, deleting=deleting)
    body: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase(checks, previous_phase=previous.get("phase"), deleting=deleting),
        "conditions": conditions(previous.get("conditions") or [], [*checks, *derived], generation=generation, now=now),
        "namespace": facts.namespace,
        "endpoint": facts.endpoint,
    }
    if facts.keys_version is not None:
        body["keys"] = {"version": facts.keys_version, "rotatedAt": facts.keys_rotated_at}
    if facts.database_engine is not None:
        body["database"] = {"engine": facts.database_engine}
    return {key: value for key, value in body.items() if value is not None}


def keep_checks(previous: Mapping[str, Any] | None, *, except_types: Iterable[str]) -> list[Check]:
    """The previous status's conditions as checks, leaving out ``except_types`` and the derived
    Reconciling and Stalled (deletion keeps the last known health of the parts and replaces only what
    deletion changes)."""
    skip = {*except_types, "Reconciling", "Stalled"}
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
    field the operator no longer reports is removed with ``null``. A desired condition whose status
    is the stored one keeps the stored ``lastTransitionTime``: the step may have judged from an older
    copy of the tenant (a retry kopf started with the body it had then), and a transition time moves
    only when the stored status changes (metav1.Condition), so such a step writes nothing.
    """
    current = current or {}
    desired = dict(desired)
    if isinstance(desired.get("conditions"), list):
        desired["conditions"] = _since_stored(current.get("conditions"), desired["conditions"])
    patch: dict[str, Any] = {key: value for key, value in desired.items() if current.get(key) != value}
    patch.update({key: None for key in current if key not in desired})
    return patch


def _since_stored(stored: Any, desired: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_type = {c.get("type"): c for c in stored or [] if isinstance(c, Mapping)}
    kept = []
    for condition in desired:
        old = by_type.get(condition.get("type"))
        if old is not None and old.get("status") == condition.get("status") and old.get("lastTransitionTime"):
            condition = {**condition, "lastTransitionTime": old["lastTransitionTime"]}
        kept.append(condition)
    return kept


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
    """A StatefulSet counts readyReplicas once its controller saw the newest spec and updated every
    replica (as for the tracker: a changed database spec is not Ready until rolled out), a
    CloudNativePG Cluster readyInstances."""
    if live is None:
        return failed("DatabaseReady", Reason.PROVISIONING, "database not created yet")
    spec, status = live.get("spec") or {}, live.get("status") or {}
    current = True
    if live["kind"] == "Cluster":
        want, ready_now, what = _int(spec.get("instances"), 1), _int(status.get("readyInstances")), "instances"
    else:
        want, ready_now, what = _int(spec.get("replicas"), 1), _int(status.get("readyReplicas")), "replicas"
        seen = _int(status.get("observedGeneration")) >= _int(live["metadata"].get("generation"))
        current = seen and _int(status.get("updatedReplicas")) >= want
    message = f"{live['kind']} {live['metadata']['name']}: {ready_now} of {want} {what} ready"
    if current and ready_now >= want:
        return passed("DatabaseReady", Reason.DATABASE_AVAILABLE, message)
    return failed("DatabaseReady", Reason.DATABASE_STARTING, message if current else f"{message}, rollout pending")


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
