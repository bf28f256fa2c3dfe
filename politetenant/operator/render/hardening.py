"""What every tenant pod gets: Pod Security ``restricted`` contexts, bounded resources, a quota.

Pods run as the image's own non-root user with a read-only root filesystem, no privilege
escalation, no capabilities and the runtime's default seccomp profile. Every container has requests
and limits (a missing one is derived from the other), so the namespace's ResourceQuota can bound
CPU and memory and one tenant can never starve the node it shares.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from politetenant.operator.model.tenant import Resources

TRACKER_UID = 10001  # the tracker image's user (Dockerfile)
POSTGRES_UID = 999  # the postgres user of the official Debian PostgreSQL image

_DEFAULTS = Resources()
_SUFFIXES = {
    "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}  # fmt: skip
_QUANTITY = re.compile(r"^\+?([0-9.]+(?:[eE][-+]?\d+)?)([a-zA-Z]{0,2})$")


def pod_security_context(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity (``250m``, ``1.5Gi``, ``1e3``) as a number of base units."""
    match = _QUANTITY.match(text)
    if not match or (match.group(2) and match.group(2) not in _SUFFIXES):
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    return Decimal(match.group(1)) * _SUFFIXES.get(match.group(2), Decimal(1))


def format_cpu(cores: Decimal) -> str:
    return f"{math.ceil(cores * 1000)}m"


def format_bytes(amount: Decimal) -> str:
    whole = math.ceil(amount)
    mebi = 2**20
    return f"{whole // mebi}Mi" if whole and whole % mebi == 0 else str(whole)


def resource_requirements(resources: Resources) -> dict[str, dict[str, str]]:
    """Requests and limits for CPU and memory, each present: a missing one follows the other."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for name in ("cpu", "memory"):
        request = getattr(resources.requests, name)
        limit = getattr(resources.limits, name)
        if request is None and limit is None:
            request, limit = getattr(_DEFAULTS.requests, name), getattr(_DEFAULTS.limits, name)
        elif limit is None:
            default = getattr(_DEFAULTS.limits, name)
            limit = request if parse_quantity(request) > parse_quantity(default) else default
        elif request is None:
            default = getattr(_DEFAULTS.requests, name)
            request = limit if parse_quantity(limit) < parse_quantity(default) else default
        requests[name], limits[name] = request, limit
    return {"requests": requests, "limits": limits}


def pod_requirements(*containers: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Requests and limits of a pod: the sum over its containers (what a ResourceQuota charges)."""
    return {
        kind: {
            "cpu": format_cpu(sum((parse_quantity(c[kind]["cpu"]) for c in containers), Decimal(0))),
            "memory": format_bytes(sum((parse_quantity(c[kind]["memory"]) for c in containers), Decimal(0))),
        }
        for kind in ("requests", "limits")
    }


def workers_for(requirements: dict[str, dict[str, str]]) -> int:
    """Tracker processes for a pod: one per whole CPU of its limit, at least one."""
    return max(1, int(parse_quantity(requirements["limits"]["cpu"])))


def quota(pods: list[tuple[int, dict[str, dict[str, str]]]], volumes: int, storage: Decimal) -> dict[str, str]:
    """ResourceQuota ``hard`` admitting ``count`` pods of each requirement, and the volumes.

    The namespace may hold no LoadBalancer or NodePort Service: a tenant is reached through the
    Ingress only.
    """
    totals = {key: Decimal(0) for key in ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory")}
    for count, requirement in pods:
        for kind in ("requests", "limits"):
            totals[f"{kind}.cpu"] += count * parse_quantity(requirement[kind]["cpu"])
            totals[f"{kind}.memory"] += count * parse_quantity(requirement[kind]["memory"])
    return {
        "pods": str(sum(count for count, _ in pods)),
        "requests.cpu": format_cpu(totals["requests.cpu"]),
        "requests.memory": format_bytes(totals["requests.memory"]),
        "limits.cpu": format_cpu(totals["limits.cpu"]),
        "limits.memory": format_bytes(totals["limits.memory"]),
        "persistentvolumeclaims": str(volumes),
        "requests.storage": format_bytes(storage),
        "services.loadbalancers": "0",
        "services.nodeports": "0",
    }
