"""Deleting a tenant, conservatively: a legal hold blocks it, Retain (the default) keeps everything,
Delete removes the namespace and then crypto-shreds the keys.

Called by the delete handler while the operator's finalizer holds the tenant; ``Outcome.done`` says
whether the finalizer may go. Under a legal hold the tenant stays, visibly: phase Deleting, Ready
False with reason LegalHold, and one Event; releasing the hold lets the next attempt proceed.
Shredding happens only after the namespace is gone, so no pod is still running on keys that no
longer exist, and nothing can recreate data under them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from politetenant.operator.keys.lifecycle import KeyServiceError, key_name
from politetenant.operator.keys.secret import destroy_keys
from politetenant.operator.model.reasons import NEEDS_ACTION, EventType, Reason
from politetenant.operator.model.status import Check, Facts, failed, keep_checks, status_body
from politetenant.operator.model.tenant import DeletionPolicy, PoliteTenant
from politetenant.operator.runtime.events import announce
from politetenant.operator.runtime.reconcile import ORPHANED_LABEL, Outcome, Runtime, parse, tenant_ref

# A held deletion is looked at again this often (never more often than the resync), so releasing the
# hold takes effect within it; each look is one kopf progress write on the tenant, hence not seconds.
LEGAL_HOLD_RECHECK_SECONDS = 30.0
NAMESPACE_RECHECK_SECONDS = 5.0
ORPHANED_AT_ANNOTATION = "polite.io/orphaned-at"


async def offboard(body: Mapping[str, Any], rt: Runtime) -> Outcome:
    """One attempt at deleting the tenant; retried by the handler until ``done``."""
    ref = tenant_ref(body)
    tenant = parse(body)
    if isinstance(tenant, str):
        message = f"spec unreadable ({tenant}); released without touching any namespace or keys"
        await announce(rt, ref, EventType.WARNING, Reason.INVALID_SPEC, message)
        return Outcome(None)
    if tenant.spec.region not in rt.config.served_regions:
        rt.metrics.forget(tenant.name)
        return Outcome(None)  # nothing was provisioned here
    if tenant.spec.legal_hold:
        return await _held(body, tenant, rt)
    if tenant.spec.deletion_policy is DeletionPolicy.RETAIN:
        return await _orphan(body, tenant, rt)
    return await _shred(body, tenant, rt)


def _deleting(body: Mapping[str, Any], rt: Runtime, *checks: Check) -> dict[str, Any]:
    """The status of a tenant being deleted: its parts as last seen, Ready and ``checks`` replaced."""
    status = body.get("status") or {}
    replaced = {"Ready", *(check.type for check in checks)}
    kept = keep_checks(status, except_types=replaced)
    keys = status.get("keys") or {}
    facts = Facts(status.get("namespace"), status.get("endpoint"), keys.get("version"), keys.get("rotatedAt"))
    generation = (body.get("metadata") or {}).get("generation")
    result = status_body(status, [*kept, *checks], facts, generation=generation, now=rt.clock(), deleting=True)
    # What the alerts read (polite_tenant_condition) follows a tenant being deleted too: legal hold, not Ready.
    name, region = (body.get("metadata") or {}).get("name"), (body.get("spec") or {}).get("region")
    rt.metrics.tenant_conditions(str(name), str(region), result.get("conditions") or [])
    return result


def _showing(body: Mapping[str, Any], reason: Reason) -> bool:
    """The tenant already shows Ready False with ``reason`` (so the Event was already posted)."""
    status = body.get("status") or {}
    return status.get("phase") == "Deleting" and any(
        c.get("type") == "Ready" and c.get("reason") == reason.value for c in status.get("conditions") or []
    )


async def _held(body: Mapping[str, Any], tenant: PoliteTenant, rt: Runtime) -> Outcome:
    message = (
        f"deletion blocked: tenant {tenant.name} is under legal hold; its namespace, data and keys stay. "
        f"Release the hold (spec.legalHold: false, or kubectl polite legal-hold off {tenant.name}) to let it proceed"
    )
    status = _deleting(body, rt, failed("Ready", Reason.LEGAL_HOLD, message))
    if not _showing(body, Reason.LEGAL_HOLD):
        await announce(rt, tenant_ref(body), EventType.WARNING, Reason.LEGAL_HOLD, message)
    rt.metrics.tenant(tenant.name, tenant.spec.region, "Deleting")
    delay = min(LEGAL_HOLD_RECHECK_SECONDS, rt.resync_seconds)
    return Outcome(status, retry=True, why="deletion held: legal hold", delay=delay, done=False)


async def _orphan(body: Mapping[str, Any], tenant: PoliteTenant, rt: Runtime) -> Outcome:
    """Retain: label the namespace orphaned and let the tenant go; data and keys stay where they are."""
    name = tenant.namespace
    namespace = await rt.kube.get("v1", "Namespace", name)
    if namespace is None:
        message = f"deletionPolicy Retain: namespace {name} was already gone; keys {key_name(tenant)} kept"
    else:
        labels = (namespace.get("metadata") or {}).get("labels") or {}
        if labels.get(ORPHANED_LABEL) != "true":
            patch = {
                "metadata": {"labels": {ORPHANED_LABEL: "true"}, "annotations": {ORPHANED_AT_ANNOTATION: rt.clock()}}
            }
            await rt.kube.patch("v1", "Namespace", name, patch)
        message = (
            f"deletionPolicy Retain: namespace {name} with its database, Secrets and keys is kept, labelled "
            f"{ORPHANED_LABEL}=true (the tracker and other owned workloads are garbage-collected); "
            f"delete the namespace by hand to remove the data, or re-create the tenant to manage it again"
        )
    await announce(rt, tenant_ref(body), EventType.NORMAL, Reason.ORPHANED, message)
    rt.metrics.forget(tenant.name)
    return Outcome(None)


async def _shred(body: Mapping[str, Any], tenant: PoliteTenant, rt: Runtime) -> Outcome:
    """Delete: the namespace first, its disappearance awaited, then the keys destroyed."""
    ref, name = tenant_ref(body), tenant.namespace
    rt.metrics.tenant(tenant.name, tenant.spec.region, "Deleting")
    namespace = await rt.kube.get("v1", "Namespace", name)
    if namespace is not None:
        if not (namespace.get("metadata") or {}).get("deletionTimestamp"):
            await rt.kube.delete("v1", "Namespace", name)
            message = f"deletionPolicy Delete: deleting namespace {name} and everything in it; keys are shredded next"
            await announce(rt, ref, EventType.NORMAL, Reason.NAMESPACE_DELETING, message)
        status = _deleting(body, rt, failed("Ready", Reason.NAMESPACE_DELETING, f"waiting for namespace {name} to go"))
        delay = min(NAMESPACE_RECHECK_SECONDS, rt.resync_seconds)
        return Outcome(status, retry=True, why=f"waiting for namespace {name} to go", delay=delay, done=False)
    try:
        await destroy_keys(rt.keys, tenant)
    except KeyServiceError as exc:
        rt.metrics.api_error("keys", exc.reason)
        keys = failed("KeysReady", exc.reason, exc.message)
        status = _deleting(body, rt, keys, failed("Ready", exc.reason, f"keys not yet destroyed: {exc.message}"))
        if not _showing(body, exc.reason):
            await announce(rt, ref, EventType.WARNING, exc.reason, f"keys not yet destroyed: {exc.message}")
        return Outcome(status, retry=True, why=exc.message, done=False, needs_action=exc.reason in NEEDS_ACTION)
    message = (
        f"keys {key_name(tenant)} destroyed after namespace {name} was deleted: "
        "data sealed under them can no longer be read by anyone, from any copy or backup"
    )
    await announce(rt, ref, EventType.NORMAL, Reason.CRYPTO_SHREDDED, message)
    rt.metrics.forget(tenant.name)
    return Outcome(None)
