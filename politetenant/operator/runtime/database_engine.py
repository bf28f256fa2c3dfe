"""Which database engine a tenant has: decided once, at its first provisioning, and kept.

An unset ``spec.database.engine`` used to be decided anew on every reconcile from whether the
CloudNativePG CRD exists, so installing CloudNativePG later made an empty Cluster, moved the tracker's
DSN to it and orphaned every record (links in mail already sent answered 404). The engine resolved the
first time is recorded in ``status.database.engine`` and on the namespace
(``polite.io/database-engine``, which outlives a tenant deleted with Retain), and read from there ever
after; a namespace provisioned before the record existed is read from what runs in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from politetenant.operator.kube.client import KubeApi
from politetenant.operator.model import names
from politetenant.operator.model.reasons import Reason
from politetenant.operator.model.status import Check, failed
from politetenant.operator.model.tenant import DatabaseEngine

CNPG_CRD = "clusters.postgresql.cnpg.io"


async def recorded_engine(kube: KubeApi, status: Mapping[str, Any], namespace: str) -> DatabaseEngine | None:
    """The engine resolved when the tenant was first provisioned, or None for a tenant never provisioned:
    its status says it; else the namespace (its annotation, or the database StatefulSet in it) does."""
    recorded = (status.get("database") or {}).get("engine")
    if recorded is None:
        found = await kube.get("v1", "Namespace", namespace)
        recorded = (((found or {}).get("metadata") or {}).get("annotations") or {}).get(
            names.DATABASE_ENGINE_ANNOTATION
        )
        if recorded is None and found is not None:
            running = await kube.get("apps/v1", "StatefulSet", names.DATABASE, namespace)
            recorded = DatabaseEngine.STATEFULSET.value if running is not None else None
    try:
        return DatabaseEngine(recorded) if recorded is not None else None
    except ValueError:
        return None


def without_missing_engine(
    engine: DatabaseEngine, objects: list[dict[str, Any]], cnpg: bool
) -> tuple[list[dict[str, Any]], Check | None]:
    """A tenant whose engine is CloudNativePG where it is not installed gets everything else and a
    condition saying why it has no database (a Cluster cannot be created without its CRD)."""
    if engine is not DatabaseEngine.CNPG or cnpg:
        return objects, None
    message = (
        f"the database engine is cnpg but CloudNativePG is not installed (no CRD {CNPG_CRD}); "
        "install CloudNativePG, or choose engine statefulset for a new tenant"
    )
    kept = [
        obj for obj in objects if not (obj["kind"] == "Cluster" and obj["apiVersion"].startswith("postgresql.cnpg.io/"))
    ]
    return kept, failed("DatabaseReady", Reason.DATABASE_ENGINE_UNAVAILABLE, message)
