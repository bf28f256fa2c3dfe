"""Judging a tracker request on arrival: place, device families and the reason it is (not) a person's.

The handler calls :meth:`Judge.judge` with the client's IP address, user agent, method and fetch
purpose, keeps the returned :class:`Verdict` and drops the strings. A verdict carries only families,
a place and a :class:`~politetenant.tracker.judging.verdicts.Reason`, never the address or the user
agent text. Only a person's own client gets a place: a proxy's or a machine's address says where the
proxy or the machine is, which is nobody's city.

Hot path: every beacon hit goes through here. Per distinct user agent the expensive part (ua-parser
and the agent regexes) is done once and remembered in a bounded LRU cache keyed by the string (in
memory only); the address is never cached. Networks are matched with one set probe per distinct
prefix length, so a long list of CIDRs costs no more than a short one.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from politetenant.tracker.judging.client_ip import IPAddress, Network, parse_address, parse_cidrs
from politetenant.tracker.judging.geoip import UNKNOWN_PLACE, GeoPlace
from politetenant.tracker.judging.networks import DEFAULT_GATEWAY_NETWORKS
from politetenant.tracker.judging.useragent import (
    MAIL_PROXY_BROWSERS,
    MAX_USER_AGENT_LENGTH,
    UNKNOWN_DEVICE,
    Device,
    UserAgentClassifier,
    is_library,
)
from politetenant.tracker.judging.verdicts import Reason

__all__ = [
    "APPLE_PRIVACY_DEVICE",
    "BARE_USER_AGENT",
    "DEFAULT_APPLE_PRIVACY_NETWORKS",
    "DEFAULT_SCANNER_AGENTS",
    "GeoLookup",
    "Judge",
    "Verdict",
    "compile_scanner_agents",
    "fetch_purpose",
    "is_prefetch",
    "judge_agent",
]

#: What Apple Mail Privacy Protection sends: the user agent and nothing else. Any other client that
#: says only this is a script that set the least it could, so outside Apple's networks it is judged
#: ``Reason.LIBRARY`` (software, not a person's client).
BARE_USER_AGENT: Final = "Mozilla/5.0"
DEFAULT_APPLE_PRIVACY_NETWORKS: Final = ("17.0.0.0/8",)
#: Apple's proxy fetches every image on delivery: nothing is known of the reader's device.
APPLE_PRIVACY_DEVICE: Final = Device("Other", "unknown", "Apple Mail Privacy Protection")

#: Regex fragments (lowercase: they are searched in the lowercased user agent) of e-mail security
#: scanners, link checkers and crawlers. HTTP libraries and automation are judged apart
#: (``useragent.LIBRARY_FAMILIES`` and ``LIBRARY_AGENT_PATTERNS``: ``Reason.LIBRARY``).
#: Real Outlook says "Microsoft Outlook" / "ms-office" / "MSOffice" and is not matched; Office's
#: WebDAV probe before opening a link ("Microsoft Office Protocol Discovery" / "Existence
#: Discovery") is. Several scanners (Microsoft Defender Safe Links above all) send ordinary browser
#: user agents: for them the gateway and scanner networks are what works.
DEFAULT_SCANNER_AGENTS: tuple[str, ...] = (
    # e-mail security gateways and link scanners
    r"barracuda",
    r"mimecast",
    r"proofpoint",
    r"microsoft office (?:protocol|existence) discovery",
    r"safe ?links",
    r"microsoft-atp",
    r"symantec",
    r"messagelabs",
    r"broadcom",
    r"trend ?micro",
    r"ironport",
    r"sophos",
    r"forcepoint",
    r"fireeye",
    r"trellix",
    r"zscaler",
    r"google-safety",
    # crawlers, previewers and generic bots ("cubot" is a phone brand)
    r"(?<!cu)bot\b",
    r"crawler",
    r"spider",
    r"scanner",
    r"slackbot",
    r"facebookexternalhit",
)

_PURPOSE_TOKENS: Final = re.compile(r"[\s,;]+")


def fetch_purpose(sec_purpose: Sequence[str], purpose: Sequence[str]) -> str | None:
    """Every ``Sec-Purpose`` and ``Purpose`` field line of a request as one list; None when none."""
    return ", ".join((*sec_purpose, *purpose)) or None


def is_prefetch(purpose: str | None) -> bool:
    """Whether a ``Sec-Purpose`` / ``Purpose`` value names the token ``prefetch`` (``prefetch``,
    ``prefetch;prerender``, ``prefetch;anonymous-client-ip``): fetched ahead, not seen by anyone."""
    if not purpose or not isinstance(purpose, str) or "prefetch" not in purpose.lower():
        return False
    return "prefetch" in _PURPOSE_TOKENS.split(purpose.lower())


def compile_scanner_agents(extra: Sequence[str] = ()) -> re.Pattern[str]:
    """One regex of the default fragments and ``extra`` ones (regexes, any case).

    The result is meant to be searched in the *lowercased* user agent: the defaults are lowercase
    and compiled without IGNORECASE, which makes the search about three times faster; each extra
    fragment is wrapped in ``(?i:...)`` so it matches whatever case it was written in.
    Raises ``ValueError`` naming a fragment that is not a valid regex (or matches everything).
    """
    parts = [f"(?:{fragment})" for fragment in DEFAULT_SCANNER_AGENTS]
    for fragment in extra:
        if not isinstance(fragment, str) or not fragment.strip():
            raise ValueError(f"{fragment!r} is not a scanner agent pattern")
        try:
            compiled = re.compile(fragment, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"{fragment!r} is not a valid scanner agent pattern: {exc}") from None
        if compiled.search("") is not None:
            raise ValueError(f"{fragment!r} matches every user agent")
        parts.append(f"(?i:{fragment})")
    return re.compile("|".join(parts))


class GeoLookup(Protocol):
    """What the judge needs of a geolocator (:class:`~politetenant.tracker.judging.geoip.GeoLocator`)."""

    def lookup(self, ip: str | None) -> GeoPlace: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """Everything kept about a request: place (a person's only), device families and the reason.
    No IP, no UA."""

    country: str | None
    region: str | None
    city: str | None
    os: str
    device_type: str
    browser: str
    bot: Reason


_COARSE: Final = {4: (32, 8), 6: (128, 16)}  # IP version -> (bits, coarse prefix length)


class _NetworkSet:
    """Membership in many networks with one set probe per distinct (version, prefix length), behind
    a coarse filter: an address whose /8 (IPv4) or /16 (IPv6) holds none of the networks, which is
    nearly every person's, costs one probe whatever the list holds."""

    __slots__ = ("_coarse4", "_coarse6", "_v4", "_v6")

    def __init__(self, networks: Sequence[Network]) -> None:
        v4: dict[int, set[int]] = {}
        v6: dict[int, set[int]] = {}
        coarse: dict[int, set[int] | None] = {4: set(), 6: set()}
        for network in networks:
            net = ipaddress.ip_network(network, strict=False)
            table = v4 if net.version == 4 else v6
            table.setdefault(net.prefixlen, set()).add(int(net.network_address))
            bits, prefix = _COARSE[net.version]
            keys = coarse[net.version]
            if keys is not None:
                first = int(net.network_address) >> (bits - prefix)
                span = 1 << max(prefix - net.prefixlen, 0)
                coarse[net.version] = None if span > 4096 else keys | set(range(first, first + span))
        self._v4 = self._freeze(v4, 32)
        self._v6 = self._freeze(v6, 128)
        self._coarse4 = None if coarse[4] is None else frozenset(coarse[4])
        self._coarse6 = None if coarse[6] is None else frozenset(coarse[6])

    @staticmethod
    def _freeze(table: dict[int, set[int]], bits: int) -> tuple[tuple[int, frozenset[int]], ...]:
        full = (1 << bits) - 1
        return tuple((full ^ (full >> prefixlen), frozenset(starts)) for prefixlen, starts in sorted(table.items()))

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)

    @property
    def coarse4(self) -> frozenset[int] | None:
        """The /8s of every IPv4 network here (None: too many to list, any /8 may hold one)."""
        return self._coarse4

    def __contains__(self, address: IPAddress) -> bool:
        value = int(address)
        if address.version == 4:
            return self.holds_v4(value)
        coarse, tables = self._coarse6, self._v6
        if coarse is not None and value >> 112 not in coarse:
            return False
        for mask, starts in tables:
            if value & mask in starts:
                return True
        return False

    def holds_v4(self, value: int) -> bool:
        """Whether the IPv4 address of this integer value is in one of the networks."""
        coarse = self._coarse4
        if coarse is not None and value >> 24 not in coarse:
            return False
        for mask, starts in self._v4:
            if value & mask in starts:
                return True
        return False


def _ipv4_value(ip: str) -> int | None:
    """The integer of ``ip`` when it is a plain dotted IPv4 address, as judging nearly always gets it
    (``client_ip`` hands over addresses it wrote itself); None for anything else, which
    ``parse_address`` then reads. The same C parser ``parse_address`` uses for IPv4, without the
    ``ipaddress`` object: this runs on every hit."""
    if ":" in ip:
        return None
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
    except OSError:
        return None


_NO_AGENT: Final[tuple[Device, Reason, bool]] = (UNKNOWN_DEVICE, Reason.NO_AGENT, False)
#: Distinct verdicts kept (``Judge._verdicts``): places times device families times reasons seen
#: lately. Past it the memo starts again, so memory stays bounded whatever the traffic.
_VERDICTS_MAX: Final = 4096


def judge_agent(user_agent: str, device: Device, scanner_agents: re.Pattern[str]) -> tuple[Reason, bool]:
    """The reason a (stripped, non-empty) user agent gives on its own, and whether it is bare.

    PROXIED (a webmail image proxy) > LIBRARY (library, automation, or a bare "Mozilla/5.0": the
    caller turns that into PRIVACY_PROXY inside Apple's networks) > SCANNER_AGENT (scanner pattern or
    a ua-parser "Spider") > PERSON.
    """
    if device.browser in MAIL_PROXY_BROWSERS:
        return Reason.PROXIED, False
    if user_agent == BARE_USER_AGENT:
        return Reason.LIBRARY, True
    lowered = user_agent.lower()
    if is_library(lowered, device.browser):
        return Reason.LIBRARY, False
    if device.device_type == "bot" or scanner_agents.search(lowered) is not None:
        return Reason.SCANNER_AGENT, False
    return Reason.PERSON, False


class Judge:
    """Turns a request (IP, user agent, method, purpose) into a :class:`Verdict`. Thread-safe; never
    raises in :meth:`judge`.

    ``scanner_networks``: CIDRs of the tenant's known scanners (see ``client_ip.parse_cidrs``).
    ``extra_scanner_agents``: regex fragments added to :data:`DEFAULT_SCANNER_AGENTS`
    (``ValueError`` if one is invalid). ``apple_privacy_networks``: where a bare "Mozilla/5.0" is
    Apple Mail Privacy Protection. ``gateway_networks``: mail security gateways (None: the built-in
    ``networks.DEFAULT_GATEWAY_NETWORKS``). ``cache_size``: distinct user agents remembered.
    """

    __slots__ = (
        "_agent_cache", "_agents", "_any_network_coarse4", "_apple_networks", "_gateway_networks", "_geo",
        "_scanner_agents", "_scanner_networks", "_verdicts",
    )  # fmt: skip

    def __init__(
        self,
        geo: GeoLookup,
        agents: UserAgentClassifier,
        scanner_networks: Sequence[Network] = (),
        extra_scanner_agents: Sequence[str] = (),
        *,
        apple_privacy_networks: Sequence[Network] | None = None,
        gateway_networks: Sequence[Network] | None = None,
        cache_size: int = 10_000,
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._geo = geo
        self._agents = agents
        self._scanner_networks = _NetworkSet(scanner_networks)
        if apple_privacy_networks is None:
            apple_privacy_networks = parse_cidrs(DEFAULT_APPLE_PRIVACY_NETWORKS)
        self._apple_networks = _NetworkSet(apple_privacy_networks)
        if gateway_networks is None:
            gateway_networks = parse_cidrs(DEFAULT_GATEWAY_NETWORKS)
        self._gateway_networks = _NetworkSet(gateway_networks)
        # The /8s that hold any network of the three: an IPv4 address outside them, nearly every
        # person's, is in none of them (one set probe rather than one per set).
        sets = (self._scanner_networks, self._apple_networks, self._gateway_networks)
        coarse = [network_set.coarse4 for network_set in sets]
        self._any_network_coarse4 = frozenset().union(*filter(None, coarse)) if None not in coarse else None
        self._scanner_agents = compile_scanner_agents(extra_scanner_agents)
        self._agent_cache = functools.lru_cache(maxsize=cache_size)(self._judge_agent)
        # Verdicts by their fields: a frozen Verdict costs more to build than to find, and a few
        # places, families and reasons make nearly every hit's. Nothing in them is an address or a
        # user agent.
        self._verdicts: dict[tuple[str | None, str | None, str | None, str, str, str, Reason], Verdict] = {}

    def _judge_agent(self, user_agent: str) -> tuple[Device, Reason, bool]:
        device = self._agents.classify(user_agent)
        reason, bare = judge_agent(user_agent, device, self._scanner_agents)
        return device, reason, bare

    def _agent(self, user_agent: str | None) -> tuple[Device, Reason, bool]:
        if not user_agent or not isinstance(user_agent, str):
            return _NO_AGENT
        ua = user_agent[:MAX_USER_AGENT_LENGTH].strip()
        if not ua:
            return _NO_AGENT
        try:
            return self._agent_cache(ua)
        except Exception:
            return UNKNOWN_DEVICE, Reason.PERSON, False

    def _place(self, ip: str | None) -> GeoPlace:
        try:
            place = self._geo.lookup(ip)
        except Exception:
            return UNKNOWN_PLACE
        return place if isinstance(place, GeoPlace) else UNKNOWN_PLACE

    def _network_reason(self, ip: str | None, bare: bool) -> Reason | None:
        try:
            value = _ipv4_value(ip) if ip and isinstance(ip, str) else None
            if value is not None:
                return self._network_reason_v4(value, bare)
            address = parse_address(ip)
            if address is None:
                return None
            if address in self._scanner_networks:
                return Reason.SCANNER_NETWORK
            if bare and address in self._apple_networks:
                return Reason.PRIVACY_PROXY
            if address in self._gateway_networks:
                return Reason.GATEWAY_NETWORK
        except Exception:
            return None
        return None

    def _network_reason_v4(self, value: int, bare: bool) -> Reason | None:
        """``_network_reason`` of an IPv4 address, by its integer value (the same checks, in order)."""
        coarse = self._any_network_coarse4
        if coarse is not None and value >> 24 not in coarse:
            return None
        if self._scanner_networks.holds_v4(value):
            return Reason.SCANNER_NETWORK
        if bare and self._apple_networks.holds_v4(value):
            return Reason.PRIVACY_PROXY
        if self._gateway_networks.holds_v4(value):
            return Reason.GATEWAY_NETWORK
        return None

    def judge(
        self, ip: str | None, user_agent: str | None, *, honeypot: bool = False, method: str = "GET",
        purpose: str | None = None,
    ) -> Verdict:  # fmt: skip
        """Judge one request. The first that applies decides the reason:

        HONEYPOT (the hidden link) > HEAD (a link checker asking whether the URL exists) > PREFETCH
        (``Sec-Purpose``/``Purpose: prefetch``) > SCANNER_NETWORK (the tenant's scanners) >
        PRIVACY_PROXY (a bare "Mozilla/5.0" from Apple's networks) > GATEWAY_NETWORK (a mail
        security gateway) > what the user agent says (PROXIED / LIBRARY / SCANNER_AGENT / NO_AGENT)
        > PERSON. Only a person's verdict carries a place.
        """
        device, reason, bare = self._agent(user_agent)
        if honeypot:
            reason = Reason.HONEYPOT
        elif method == "HEAD":
            reason = Reason.HEAD
        elif purpose and is_prefetch(purpose):  # most hits say no purpose: no call
            reason = Reason.PREFETCH
        else:
            reason = self._network_reason(ip, bare) or reason
        if reason is Reason.PRIVACY_PROXY:
            device = APPLE_PRIVACY_DEVICE
        place = self._place(ip) if reason is Reason.PERSON else UNKNOWN_PLACE
        fields = (place.country, place.region, place.city, device.os, device.device_type, device.browser, reason)
        verdicts = self._verdicts
        try:
            verdict = verdicts.get(fields)
        except TypeError:  # a duck-typed geolocator's place with a field that cannot be a key
            return Verdict(*fields)
        if verdict is None:
            if len(verdicts) >= _VERDICTS_MAX:
                verdicts.clear()
            verdict = verdicts[fields] = Verdict(*fields)
        return verdict

    def cache_clear(self) -> None:
        """Forget every cached user agent string (here and in the classifier), and the verdicts."""
        self._agent_cache.cache_clear()
        self._verdicts.clear()
        self._agents.cache_clear()
