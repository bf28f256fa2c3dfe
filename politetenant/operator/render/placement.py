"""Residency: which nodes a tenant's pods may run on and which storage class its volumes use.

A tenant's region becomes required node affinity on ``topology.kubernetes.io/region`` (the cloud's
own name for it, from the region catalogue) on every pod, and the region's storage class on every
volume, so neither can land outside the jurisdiction the customer chose.
"""

from __future__ import annotations

from typing import Any

from politetenant.operator.model.config import OperatorConfig
from politetenant.regions import RegionName, region

REGION_KEY = "topology.kubernetes.io/region"
ZONE_KEY = "topology.kubernetes.io/zone"
HOSTNAME_KEY = "kubernetes.io/hostname"


def cloud_region(region_name: str, config: OperatorConfig) -> str:
    """The value of ``topology.kubernetes.io/region`` on this cluster's nodes in that region."""
    return region(region_name).cloud_region(config.cloud)


def storage_class(region_name: RegionName, config: OperatorConfig) -> str:
    """The configured storage class of the region, else the catalogue's for this cloud."""
    return config.storage_classes.get(region_name) or region(region_name).storage_class[config.cloud]


def node_affinity(region_name: str, config: OperatorConfig) -> dict[str, Any]:
    """A NodeAffinity that admits only nodes of the tenant's region."""
    term = {"matchExpressions": [{"key": REGION_KEY, "operator": "In", "values": [cloud_region(region_name, config)]}]}
    return {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}


def spread(selector: dict[str, str]) -> list[dict[str, Any]]:
    """Spread replicas over zones, then nodes, without ever refusing to schedule."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        }
        for key in (ZONE_KEY, HOSTNAME_KEY)
    ]
