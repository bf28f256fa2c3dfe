"""Client address behind trusted proxies; spoofed X-Forwarded-For ignored."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from politetenant.tracker.judging.client_ip import client_ip, forwarded_for, parse_address, parse_cidrs

TRUSTED = parse_cidrs("10.0.0.0/8, 172.16.0.0/12 fd00::/8")


# ---------------------------------------------------------------------------------------- parse_cidrs


def test_parse_cidrs_text() -> None:
    assert parse_cidrs("10.0.0.0/8, 192.168.1.0/24  2001:db8::/32\n127.0.0.1") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.0/24"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("127.0.0.1/32"),
    )


def test_parse_cidrs_iterable_and_host_bits() -> None:
    assert parse_cidrs(["10.1.2.3/8", " 192.0.2.0/24 ", "", "198.51.100.0/24,203.0.113.0/24"]) == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("198.51.100.0/24"),
        ipaddress.ip_network("203.0.113.0/24"),
    )


@pytest.mark.parametrize("value", ["", "  ,  ", []])
def test_parse_cidrs_empty(value: Any) -> None:
    assert parse_cidrs(value) == ()


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ("10.0.0.0/8, 10.0.0.0/33", "10.0.0.0/33"),
        (["192.0.2.0/24", "example.com"], "example.com"),
        ("2001:db8::/129", "2001:db8::/129"),
        ("1.2.3.4:80", "1.2.3.4:80"),
    ],
)
def test_parse_cidrs_names_the_bad_entry(value: Any, bad: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_cidrs(value)
    assert str(excinfo.value) == f"{bad!r} is not a CIDR network"


def test_parse_cidrs_error_message_example() -> None:
    with pytest.raises(ValueError, match=r"^'10\.0\.0\.0/33' is not a CIDR network$"):
        parse_cidrs("10.0.0.0/33")


# ------------------------------------------------------------------------------------- parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:5678", "1.2.3.4"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ('"[2001:db8::1]:443"', "2001:db8::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("[::ffff:192.0.2.1]:80", "192.0.2.1"),
    ],
)
def test_parse_address_forms(text: str, expected: str) -> None:
    address = parse_address(text)
    assert address is not None
    assert str(address) == expected


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "unknown",
        "_hidden",
        "1.2.3",
        "1.2.3.4:",
        "1.2.3.4:99999999",
        "[2001:db8::1",
        "[1.2.3.4]x",
        "999.1.1.1",
        "1.2.3.4 5.6.7.8",
        "x" * 1000,
    ],
)
def test_parse_address_garbage(text: str | None) -> None:
    assert parse_address(text) is None


# ----------------------------------------------------------------------------------------- client_ip


def test_untrusted_peer_spoofed_forwarded_for_is_ignored() -> None:
    # A client talking to us directly writes whatever it likes into X-Forwarded-For.
    assert client_ip("203.0.113.7", "192.0.2.10", TRUSTED) == "203.0.113.7"
    assert client_ip("203.0.113.7", "192.0.2.10, 10.0.0.1", TRUSTED) == "203.0.113.7"


def test_no_trusted_networks_means_no_forwarded_for() -> None:
    assert client_ip("10.0.0.5", "192.0.2.10", ()) == "10.0.0.5"


def test_trusted_proxy_chain_picks_the_right_hop() -> None:
    # client (spoofs 198.51.100.1) -> 192.0.2.10 is the real client -> LB 10.0.0.2 -> ingress 10.0.0.3
    xff = "198.51.100.1, 192.0.2.10, 10.0.0.2"
    assert client_ip("10.0.0.3", xff, TRUSTED) == "192.0.2.10"


def test_single_trusted_proxy() -> None:
    assert client_ip("10.1.1.1", "192.0.2.10", TRUSTED) == "192.0.2.10"


def test_multiple_headers_joined_and_spacing() -> None:
    assert client_ip("10.1.1.1", "198.51.100.1,192.0.2.10 ,  172.16.5.5", TRUSTED) == "192.0.2.10"
    assert client_ip("10.1.1.1", "192.0.2.10, ", TRUSTED) == "192.0.2.10"


def test_ports_and_brackets_as_proxies_write_them() -> None:
    assert client_ip("10.1.1.1", "192.0.2.10:5678, 10.0.0.2:443", TRUSTED) == "192.0.2.10"
    assert client_ip("[fd00::1]:443", "[2001:db8::1]:443", TRUSTED) == "2001:db8::1"
    assert client_ip("fd00::1", "2001:db8::1", TRUSTED) == "2001:db8::1"


def test_ipv4_mapped_peer_is_trusted_as_ipv4() -> None:
    assert client_ip("::ffff:10.0.0.3", "192.0.2.10", TRUSTED) == "192.0.2.10"


@pytest.mark.parametrize("xff", [None, "", "   ", ",", "unknown", "garbage, more garbage", "x" * 10_000])
def test_missing_or_garbage_forwarded_for_gives_the_peer(xff: str | None) -> None:
    assert client_ip("10.0.0.3", xff, TRUSTED) == "10.0.0.3"


def test_garbage_hop_breaks_the_chain_at_the_nearest_trusted_address() -> None:
    # Nothing left of an unparseable hop can be vouched for.
    assert client_ip("10.0.0.3", "192.0.2.10, unknown, 10.0.0.2", TRUSTED) == "10.0.0.2"


def test_every_hop_trusted_gives_the_leftmost() -> None:
    assert client_ip("10.0.0.3", "10.9.9.9, 10.0.0.2", TRUSTED) == "10.9.9.9"


def test_peer_is_normalised() -> None:
    assert client_ip("[2001:DB8::0:1]:1234", None, TRUSTED) == "2001:db8::1"
    assert client_ip("203.0.113.7:5555", None, TRUSTED) == "203.0.113.7"


@pytest.mark.parametrize("peer", [None, "", "unix:/run/sock", "not-an-ip"])
def test_peer_that_is_not_an_address_gives_none(peer: str | None) -> None:
    assert client_ip(peer, "192.0.2.10", TRUSTED) is None


@pytest.mark.parametrize(
    ("peer", "xff", "trusted"),
    [
        (b"10.0.0.1", "1.2.3.4", TRUSTED),
        ("10.0.0.1", b"1.2.3.4", TRUSTED),
        ("10.0.0.1", 12345, TRUSTED),
        ("10.0.0.1", "1.2.3.4", [None]),
        ("10.0.0.1", "1.2.3.4", ["10.0.0.0/8"]),
        (object(), object(), object()),
        ("10.0.0.1", "\x00\udcff,[::1%", TRUSTED),
    ],
)
def test_never_raises(peer: Any, xff: Any, trusted: Any) -> None:
    result = client_ip(peer, xff, trusted)
    assert result is None or isinstance(result, str)


def test_every_forwarded_for_line_is_one_list_in_the_order_received() -> None:
    # The client sent a line of its own; HAProxy added one with the address it saw.
    lines = ["198.51.100.1", "192.0.2.10"]
    assert forwarded_for(lines) == "198.51.100.1, 192.0.2.10"
    assert client_ip("10.0.0.3", forwarded_for(lines), TRUSTED) == "192.0.2.10"
    assert client_ip("10.0.0.3", forwarded_for(["192.0.2.10, 10.0.0.2", "10.0.0.1"]), TRUSTED) == "192.0.2.10"
    assert forwarded_for([]) is None and forwarded_for(["192.0.2.10"]) == "192.0.2.10"
