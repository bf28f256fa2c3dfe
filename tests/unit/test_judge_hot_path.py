"""Judging on the hot path: a plain IPv4 address is matched by its integer, verdicts are shared."""

from __future__ import annotations

import ipaddress

from politetenant.tracker.judging import judge as judge_module
from politetenant.tracker.judging.client_ip import parse_cidrs
from politetenant.tracker.judging.geoip import GeoLocator, GeoPlace
from politetenant.tracker.judging.judge import Judge, Verdict
from politetenant.tracker.judging.networks import DEFAULT_GATEWAY_NETWORKS
from politetenant.tracker.judging.useragent import UserAgentClassifier
from politetenant.tracker.judging.verdicts import Reason

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


def test_ipv4_networks_are_matched_exactly_at_each_edge() -> None:
    """Judging reads a plain dotted IPv4 address by its integer, behind one /8 filter for all three
    lists (``Judge._network_reason_v4``): at each edge of every network, inside and just outside, the
    reason is the one ``ipaddress`` membership gives, in the documented order."""
    scanners, apple = parse_cidrs("203.0.113.128/25, 10.0.0.0/7"), parse_cidrs("17.0.0.0/8, 100.64.0.0/10")
    gateways = parse_cidrs(DEFAULT_GATEWAY_NETWORKS)
    judge = Judge(GeoLocator(None), UserAgentClassifier(), scanner_networks=scanners, apple_privacy_networks=apple)
    edges = set()
    for network in (*scanners, *apple, *gateways):
        if network.version == 4:
            first, last = int(network.network_address), int(network.broadcast_address)
            edges |= {first - 1, first, last, (last + 1) % 2**32}
    assert len(edges) > 20
    for value in sorted(edges):
        address = ipaddress.IPv4Address(value)
        for agent, bare, otherwise in ((CHROME_WINDOWS, False, Reason.PERSON), ("Mozilla/5.0", True, Reason.LIBRARY)):
            if any(address in network for network in scanners):
                expected = Reason.SCANNER_NETWORK
            elif bare and any(address in network for network in apple):
                expected = Reason.PRIVACY_PROXY
            elif any(address in network for network in gateways):
                expected = Reason.GATEWAY_NETWORK
            else:
                expected = otherwise
            assert judge.judge(str(address), agent).bot is expected, (address, agent)
            assert judge.judge(f" {address} ", agent).bot is expected, (address, agent)  # through parse_address


class PlacePerAddress:
    """A geolocator whose every address is a town of its own (and one whose place is no key)."""

    def lookup(self, ip: str | None) -> GeoPlace:
        if ip == "192.0.2.1":
            return GeoPlace(["XX"], None, None)  # type: ignore[arg-type]
        return GeoPlace("IE", "Leinster", f"Town {ip}")


def test_verdicts_are_shared_equal_to_fresh_ones_and_bounded() -> None:
    judge = Judge(PlacePerAddress(), UserAgentClassifier())
    first = judge.judge("198.51.100.1", CHROME_WINDOWS)
    assert first == Verdict("IE", "Leinster", "Town 198.51.100.1", "Windows", "desktop", "Chrome", Reason.PERSON)
    assert judge.judge("198.51.100.1", CHROME_WINDOWS) is first  # built once, shared (it is frozen)
    assert judge.judge("198.51.100.2", CHROME_WINDOWS).city == "Town 198.51.100.2"
    assert judge.judge("198.51.100.1", "Mozilla/5.0").bot is Reason.LIBRARY  # same place, other reason
    assert judge.judge("192.0.2.1", CHROME_WINDOWS).country == ["XX"]  # not a key: built, not kept
    for n in range(judge_module._VERDICTS_MAX + 10):
        address = str(ipaddress.IPv4Address(0x0A000000 + n))
        assert judge.judge(address, CHROME_WINDOWS).city == f"Town {address}"
    assert 0 < len(judge._verdicts) <= judge_module._VERDICTS_MAX
    judge.cache_clear()
    assert not judge._verdicts
