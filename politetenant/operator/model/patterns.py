"""The patterns string fields of the PoliteTenant resource must match, shared by the CRD and the model.

Patterns use [0-9], not \\d: the API server's RE2 reads \\d as ASCII only, pydantic's and Python's
regex engines as any Unicode digit, and both sides must accept exactly the same strings.
"""

from __future__ import annotations

# Kubernetes quantity (resource.Quantity) as the API server accepts it, without negative values.
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[mkMGTPE])?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HOSTNAME_PATTERN = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
HTTP_URL_PATTERN = r"^https?://[^\s/]+\S*$"
# Five numeric cron fields (minute hour day-of-month month day-of-week), each `*`, a value or a range,
# with an optional /step and comma lists, in the ranges CronJob accepts; or a CronJob descriptor.
_CRON_VALUES = (r"[0-5]?[0-9]", r"([01]?[0-9]|2[0-3])", r"(0?[1-9]|[12][0-9]|3[01])", r"(0?[1-9]|1[0-2])", r"[0-7]")


def _cron_field(value: str) -> str:
    item = rf"(\*|{value}(-{value})?)(/[1-9][0-9]*)?"
    return rf"{item}(,{item})*"


CRON_PATTERN = (
    "^" + " ".join(_cron_field(v) for v in _CRON_VALUES) + "$|^@(yearly|annually|monthly|weekly|daily|midnight|hourly)$"
)


def _ipv6() -> str:
    """RFC 3986's IPv6address: eight groups, or fewer around one ``::``, the last two may be IPv4."""
    h16 = "[0-9a-fA-F]{1,4}"
    ls32 = f"({h16}:{h16}|{_IPV4})"
    forms = [f"({h16}:){{6}}{ls32}", f"::({h16}:){{5}}{ls32}", f"({h16})?::({h16}:){{4}}{ls32}"]
    forms += [f"(({h16}:){{0,{n}}}{h16})?::({h16}:){{{4 - n}}}{ls32}" for n in (1, 2)]
    forms += [f"(({h16}:){{0,3}}{h16})?::{h16}:{ls32}", f"(({h16}:){{0,4}}{h16})?::{ls32}"]
    forms += [f"(({h16}:){{0,5}}{h16})?::{h16}", f"(({h16}:){{0,6}}{h16})?::"]
    return "(" + "|".join(forms) + ")"


_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
# An IPv4 or IPv6 network in CIDR notation, as ingress controllers read allow-lists (host bits may be
# set). A pattern, not CEL's isCIDR(): that needs Kubernetes 1.31 and the CRD serves 1.30.
CIDR_PATTERN = rf"^({_IPV4}/(3[0-2]|[12]?[0-9])|{_ipv6()}/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))$"
