"""The region catalogue: where a tenant's data may live, and what that means on each cloud.

A tenant names one region; the operator turns it into node affinity on
``topology.kubernetes.io/region`` (the cloud's own region name) and a storage class, so pods and
volumes stay in the jurisdiction the customer chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

RegionName = Literal["us-east", "us-west", "eu-ireland", "eu-germany", "ap-singapore", "ap-australia"]
Cloud = Literal["aws", "azure"]


class Jurisdiction(StrEnum):
    EU = "EU"
    US = "US"
    APAC = "APAC"


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    jurisdiction: Jurisdiction
    aws: str
    azure: str
    storage_class: dict[str, str]

    def cloud_region(self, cloud: Cloud) -> str:
        """The value of ``topology.kubernetes.io/region`` on that cloud's nodes."""
        return self.aws if cloud == "aws" else self.azure


_AWS_SC = "gp3"
_AZURE_SC = "managed-csi-premium"


def _region(name: str, jurisdiction: Jurisdiction, aws: str, azure: str) -> Region:
    return Region(name, jurisdiction, aws, azure, {"aws": _AWS_SC, "azure": _AZURE_SC})


REGIONS: dict[str, Region] = {
    r.name: r
    for r in (
        _region("us-east", Jurisdiction.US, "us-east-1", "eastus"),
        _region("us-west", Jurisdiction.US, "us-west-2", "westus2"),
        _region("eu-ireland", Jurisdiction.EU, "eu-west-1", "northeurope"),
        _region("eu-germany", Jurisdiction.EU, "eu-central-1", "germanywestcentral"),
        _region("ap-singapore", Jurisdiction.APAC, "ap-southeast-1", "southeastasia"),
        _region("ap-australia", Jurisdiction.APAC, "ap-southeast-2", "australiaeast"),
    )
}
REGION_NAMES: tuple[str, ...] = tuple(REGIONS)


def region(name: str) -> Region:
    try:
        return REGIONS[name]
    except KeyError:
        raise ValueError(f"unknown region {name!r}; known: {', '.join(REGION_NAMES)}") from None
