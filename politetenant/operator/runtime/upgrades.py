"""Moving a tenant's children from what earlier operator versions made to what this one renders.

Earlier versions ran the tracker as a Deployment, with its spool on an emptyDir. This version runs a
StatefulSet of the same name beside it and deletes the Deployment only once a StatefulSet pod serves,
so beacons are answered throughout: the Deployment's pods keep serving (their database login still
works) until a new pod is available, then get SIGTERM and flush what they hold. The ResourceQuota
leaves room for one new pod beside the old ones (``render.tenant._quota``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from politetenant.operator.kube.client import KubeApi
from politetenant.operator.model import names

LEGACY_TRACKER = ("apps/v1", "Deployment", names.TRACKER)


def serves(statefulset: Mapping[str, Any] | None) -> bool:
    """Whether the tracker StatefulSet has a pod of its newest revision answering (available)."""
    status = (statefulset or {}).get("status") or {}
    available = status.get("availableReplicas")
    updated = status.get("updatedReplicas")
    return isinstance(available, int) and available >= 1 and isinstance(updated, int) and updated >= 1


async def retire_tracker_deployment(
    kube: KubeApi, tenant: str, namespace: str, statefulset: Mapping[str, Any] | None
) -> str | None:
    """Delete the tenant's tracker Deployment once the StatefulSet serves; what was done, or None."""
    api_version, kind, name = LEGACY_TRACKER
    live = await kube.get(api_version, kind, name, namespace)
    labels = ((live or {}).get("metadata") or {}).get("labels") or {}
    if live is None or labels.get(names.TENANT_LABEL) != tenant or not serves(statefulset):
        return None
    await kube.delete(api_version, kind, name, namespace)
    return (
        f"removed {kind} {namespace}/{name}: StatefulSet {namespace}/{name} serves instead, "
        "its pods keeping their spool on a volume"
    )
