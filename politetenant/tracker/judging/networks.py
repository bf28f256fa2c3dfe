"""Networks of mail security gateways: a hit from one is a machine opening or clicking on arrival.

Microsoft Exchange Online Protection / Defender for Office 365, Mimecast, Proofpoint and Barracuda
scan each message as it passes, fetching its images and following its links before (or instead of)
any person. ``DEFAULT_GATEWAY_NETWORKS`` lists the ranges each vendor publishes, every group with
the page it comes from. These lists change as the vendors grow and move, and they are incomplete:
a vendor may scan from addresses it does not publish (Defender's Safe Links detonation, for one),
and what a page listed when this file was written is all it holds. A tenant replaces them with
``TrackerSettings.gateway_networks`` (``None``, the default, means these; an empty list means
none); ``TrackerSettings.scanner_networks`` adds the tenant's own scanners on top.

A hit from a gateway network is stored as ``Reason.GATEWAY_NETWORK``; whether a click from one
still counts (a person behind the gateway) is decided at report time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from politetenant.tracker.judging.client_ip import Network, parse_cidrs

__all__ = ["DEFAULT_GATEWAY_NETWORKS", "gateway_networks"]

DEFAULT_GATEWAY_NETWORKS: Final[tuple[str, ...]] = (
    # Microsoft Exchange Online Protection / Defender for Office 365: the "Exchange Online" SMTP
    # ranges of "Microsoft 365 URLs and IP address ranges"
    # (https://learn.microsoft.com/microsoft-365/enterprise/urls-and-ip-address-ranges), the same
    # networks spf.protection.outlook.com publishes.
    "40.92.0.0/15",
    "40.107.0.0/16",
    "52.100.0.0/14",
    "52.238.78.88/32",
    "104.47.0.0/17",
    "2a01:111:f400::/48",
    "2a01:111:f403::/48",
    # Mimecast: "Mimecast Data Centers and URLs"
    # (https://community.mimecast.com/s/article/Mimecast-Data-Centers-and-URLs), as Mimecast
    # publishes them per region in its SPF netblocks (eu., us., de., au., ca., za._netblocks.mimecast.com).
    "195.130.217.0/24",
    "91.220.42.0/24",
    "146.101.78.0/24",
    "207.82.80.0/24",
    "213.167.81.0/25",
    "193.7.206.0/25",
    "193.7.207.0/25",
    "213.167.75.0/25",
    "185.58.85.0/24",
    "185.58.86.0/24",
    "147.28.36.0/24",
    "207.211.30.64/26",
    "207.211.30.128/25",
    "207.211.31.0/25",
    "205.139.110.0/24",
    "216.205.24.0/24",
    "63.128.21.0/24",
    "170.10.128.0/24",
    "170.10.129.0/24",
    "170.10.133.0/24",
    "216.145.221.0/24",
    "51.163.158.0/24",
    "194.104.109.0/24",
    "194.104.111.0/24",
    "62.140.7.0/24",
    "103.13.69.0/24",
    "124.47.150.0/24",
    "124.47.189.0/24",
    "103.96.21.0/24",
    "103.96.23.0/24",
    "180.189.28.0/24",
    "216.145.217.0/24",
    "170.10.145.0/24",
    "170.10.147.0/24",
    "216.145.216.0/24",
    "41.74.192.0/22",
    "41.74.196.0/22",
    "41.74.200.0/23",
    "41.74.204.0/23",
    "41.74.206.0/24",
    # Proofpoint: the networks of Proofpoint's own service its support page lists
    # (https://proofpoint.my.site.com/support/PPSup_SupportInfo), and the Proofpoint-hosted ranges
    # (pphosted.com, 148.163.128.0 - 148.163.159.255) customers allow inbound mail from.
    "67.231.144.0/20",
    "148.163.128.0/19",
    "208.84.64.0/22",
    "208.86.200.0/22",
    "62.209.50.0/24",
    "91.209.104.0/24",
    # Barracuda Email Security Service / Email Gateway Defense: "Barracuda Email Security Service IP
    # Ranges" and "IP Analysis - Inbound" (https://campus.barracuda.com/product/emailgatewaydefense/),
    # also published as spf.ess.barracudanetworks.com.
    "209.222.80.0/21",
)


def gateway_networks(configured: Sequence[str] | None) -> tuple[Network, ...]:
    """The gateway networks a tracker judges with: the tenant's list, or the defaults for None."""
    return parse_cidrs(DEFAULT_GATEWAY_NETWORKS if configured is None else configured)
