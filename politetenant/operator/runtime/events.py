"""The Events a reconcile posts about a tenant: what changed, what was restored, what the keys did.

One Event per kind of change and one per restored object (someone touched it); a failing key check is
said once, not on every retry. Posting never fails a reconcile: a refused Event is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from politetenant.operator.keys.secret import KeyPlan
from politetenant.operator.kube.apply import Applied, Create, Patch, describe
from politetenant.operator.kube.client import KubeError, ObjectRef, event_body
from politetenant.operator.kube.secrets import SecretOutcome
from politetenant.operator.model.reasons import EventType, Reason
from politetenant.operator.model.status import Check
from politetenant.operator.model.tenant import PoliteTenant

if TYPE_CHECKING:
    from politetenant.operator.runtime.reconcile import Runtime

log = logging.getLogger(__name__)


async def announce(rt: Runtime, about: ObjectRef, type_: EventType, reason: Reason, message: str) -> None:
    """Post an Event about the tenant; a failure to post is logged, never fatal."""
    rt.metrics.event(type_, reason)
    event = event_body(
        about, namespace=rt.config.namespace, type_=type_, reason=reason, message=message, now=rt.clock(),
        instance=rt.instance,
    )  # fmt: skip
    try:
        await rt.kube.post_event(event)
    except KubeError as exc:
        log.warning("tenant %s: could not post Event %s: %s", about.name, reason.value, exc)


async def tell(
    rt: Runtime,
    tenant: PoliteTenant,
    ref: ObjectRef,
    status: Mapping[str, Any],
    applied: list[Applied],
    secrets: list[SecretOutcome],
    keys: KeyPlan,
) -> None:
    """Events for what changed: one per kind of change, one per restored object (someone touched it).
    ``status`` is the tenant's status before this reconcile."""
    created = [a for a in applied if a.wrote and not a.restored and isinstance(a.action, Create)]
    updated = [a for a in applied if a.wrote and not a.restored and isinstance(a.action, Patch)]
    if created and created[0].desired["kind"] == "Namespace":
        await announce(rt, ref, EventType.NORMAL, Reason.NAMESPACE_CREATED, f"namespace {tenant.namespace} created")
        created = created[1:]
    if created:
        await announce(rt, ref, EventType.NORMAL, Reason.OBJECTS_CREATED, "created " + _listed(created))
    if updated:
        await announce(rt, ref, EventType.NORMAL, Reason.OBJECT_UPDATED, "updated to the spec: " + _listed(updated))
    for restored in (a for a in applied if a.restored):
        how = "was deleted; re-created" if isinstance(restored.action, Create) else "was changed by hand; restored"
        await announce(rt, ref, EventType.WARNING, Reason.OBJECT_RESTORED, f"{describe(restored.desired)} {how}")
    made = [s.name for s in secrets if s.created]
    if made:
        await announce(rt, ref, EventType.NORMAL, Reason.SECRET_CREATED, "created Secrets " + ", ".join(made))
    await tell_keys(rt, tenant, ref, status, keys)
    for failure in [a for a in applied if a.error] + [s for s in secrets if s.error]:
        what = describe(failure.desired) if isinstance(failure, Applied) else f"Secret {failure.name}"
        await announce(rt, ref, EventType.WARNING, Reason.API_ERROR, f"{what}: {failure.error}")


async def tell_keys(
    rt: Runtime, tenant: PoliteTenant, ref: ObjectRef, status: Mapping[str, Any], keys: KeyPlan
) -> None:
    provider = tenant.spec.keys.provider.value
    if keys.create is not None:
        message = f"keys created ({provider} provider), version {keys.version}"
        await announce(rt, ref, EventType.NORMAL, Reason.KEYS_CREATED, message)
    elif keys.patch is not None:
        rt.metrics.rotated(tenant.spec.region)
        message = (
            f"keys rotated ({provider} provider): version {keys.rotated_from} -> {keys.version}; tracker restarting"
        )
        await announce(rt, ref, EventType.NORMAL, Reason.KEYS_ROTATED, message)
    elif not keys.check.ok and not still(status, keys.check):  # said once, not on every retry
        await announce(rt, ref, EventType.WARNING, keys.check.reason, keys.check.message)


def still(status: Mapping[str, Any], check: Check) -> bool:
    """The previous status already showed this very check."""
    return any(
        c.get("type") == check.type and c.get("status") == check.status and c.get("reason") == check.reason.value
        for c in status.get("conditions") or []
    )


def _listed(applied: list[Applied]) -> str:
    return ", ".join(describe(a.desired) for a in applied)
