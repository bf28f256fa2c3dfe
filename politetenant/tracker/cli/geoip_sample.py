"""A small pure-Python writer of MaxMind DB (``.mmdb``) files, and a sample City database.

Why it exists: the demo and the tests need a GeoIP City database, but the real GeoLite2 files need
a licence key and a download, and MaxMind's own writers are Perl / Go. This module needs neither the
network nor any dependency beyond the standard library. It is for test and demo data only.

The sample uses only documentation and reserved address ranges (RFC 5737 ``192.0.2.0/24``,
``198.51.100.0/24``, ``203.0.113.0/24``; RFC 6598 shared space ``100.64.0.0/10``; RFC 3849
``2001:db8::/32``), so it can never geolocate a real person.

Format: MaxMind DB spec v2.0 (https://maxmind.github.io/MaxMind-DB/). The tree is IPv6
(``ip_version`` 6); IPv4 networks sit in the IPv4-compatible subtree ``::/96`` (where readers look
IPv4 addresses up), and ``::ffff:0:0/96`` is aliased to it as MaxMind's writers do, so IPv4-mapped
IPv6 addresses find the same records. Identical records are stored once.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from politetenant.durable import replace_durably

__all__ = ["SAMPLE_ADDRESSES", "SAMPLE_NETWORKS", "write_mmdb", "write_sample"]

_METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
_IPV4_MAPPED_PREFIX = 0xFFFF << 32  # ::ffff:0:0/96

# Data section type numbers (spec, "Output Data Section").
_POINTER, _UTF8, _DOUBLE, _BYTES, _UINT16, _UINT32, _MAP = 1, 2, 3, 4, 5, 6, 7
_INT32, _UINT64, _UINT128, _ARRAY, _BOOLEAN = 8, 9, 10, 11, 14


class _Leaf:
    """A tree record pointing at one record in the data section."""

    __slots__ = ("offset",)

    def __init__(self, offset: int) -> None:
        self.offset = offset


class _Node:
    __slots__ = ("children",)

    def __init__(self, left: _Child = None, right: _Child = None) -> None:
        self.children: list[_Child] = [left, right]


_Child: TypeAlias = _Node | _Leaf | None


def _control(type_id: int, size: int) -> bytes:
    if size < 29:
        first, extra = size, b""
    elif size < 285:
        first, extra = 29, bytes([size - 29])
    elif size < 65_821:
        first, extra = 30, (size - 285).to_bytes(2, "big")
    elif size < 65_821 + (1 << 24):
        first, extra = 31, (size - 65_821).to_bytes(3, "big")
    else:
        raise ValueError(f"value too large for a MaxMind DB field: {size} bytes")
    if type_id <= 7:
        return bytes([(type_id << 5) | first]) + extra
    return bytes([first, type_id - 7]) + extra


def _uint(type_id: int, value: int) -> bytes:
    payload = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return _control(type_id, len(payload)) + payload


def _encode(value: Any) -> bytes:
    """Encode one value for the data section (no pointers are emitted)."""
    if isinstance(value, bool):  # before int: bool is an int
        return _control(_BOOLEAN, int(value))
    if isinstance(value, str):
        data = value.encode("utf-8")
        return _control(_UTF8, len(data)) + data
    if isinstance(value, int):
        if value < 0:
            if value < -(1 << 31):
                raise ValueError(f"negative integer out of int32 range: {value}")
            return _control(_INT32, 4) + (value & 0xFFFFFFFF).to_bytes(4, "big")
        for type_id, bits in ((_UINT16, 16), (_UINT32, 32), (_UINT64, 64), (_UINT128, 128)):
            if value < (1 << bits):
                return _uint(type_id, value)
        raise ValueError(f"integer out of uint128 range: {value}")
    if isinstance(value, float):
        return _control(_DOUBLE, 8) + struct.pack(">d", value)
    if isinstance(value, bytes | bytearray):
        return _control(_BYTES, len(value)) + bytes(value)
    if isinstance(value, Mapping):
        parts = [_control(_MAP, len(value))]
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"map keys must be strings, not {type(key).__name__}")
            parts += [_encode(key), _encode(item)]
        return b"".join(parts)
    if isinstance(value, list | tuple):
        return _control(_ARRAY, len(value)) + b"".join(_encode(item) for item in value)
    raise TypeError(f"cannot encode {type(value).__name__} in a MaxMind DB")


def _tree_position(cidr: str) -> tuple[int, int]:
    """The 128-bit tree path (value, depth) of a CIDR string; IPv4 goes under ``::/96``."""
    network = ipaddress.ip_network(cidr, strict=True)
    if network.version == 4:
        return int(network.network_address), 96 + network.prefixlen
    return int(network.network_address), network.prefixlen


def _bit(value: int, depth: int) -> int:
    return (value >> (127 - depth)) & 1


def _insert(root: _Node, value: int, length: int, leaf: _Leaf) -> None:
    """Set ``leaf`` for the prefix; shorter prefixes must be inserted first (longest match wins)."""
    if length == 0:
        root.children = [leaf, leaf]
        return
    node = root
    for depth in range(length - 1):
        bit = _bit(value, depth)
        child = node.children[bit]
        if not isinstance(child, _Node):  # empty, or a shorter network's data: split it
            child = node.children[bit] = _Node(child, child)
        node = child
    node.children[_bit(value, length - 1)] = leaf


def _alias_ipv4_mapped(root: _Node) -> None:
    """Point ``::ffff:0:0/96`` at the ``::/96`` subtree unless a network already covers that path."""
    node: _Child = root
    for _ in range(95):
        node = node.children[0] if isinstance(node, _Node) else None
    if not isinstance(node, _Node) or node.children[0] is None:
        return
    target = node.children[0]
    parent = root
    for depth in range(95):
        bit = _bit(_IPV4_MAPPED_PREFIX, depth)
        child = parent.children[bit]
        if child is None:
            child = parent.children[bit] = _Node()
        elif not isinstance(child, _Node):
            return
        parent = child
    if parent.children[1] is None:
        parent.children[1] = target


def _number_nodes(root: _Node) -> list[_Node]:
    """Nodes in breadth-first order (root is node 0); aliased subtrees are listed once."""
    order: list[_Node] = [root]
    seen = {id(root)}
    for node in order:  # grows while iterating
        for child in node.children:
            if isinstance(child, _Node) and id(child) not in seen:
                seen.add(id(child))
                order.append(child)
    return order


def _search_tree(nodes: list[_Node], record_size: int) -> bytes:
    index = {id(node): number for number, node in enumerate(nodes)}
    node_count = len(nodes)
    limit = 1 << record_size

    def record(child: _Child) -> int:
        if child is None:
            value = node_count
        elif isinstance(child, _Leaf):
            value = node_count + 16 + child.offset
        else:
            value = index[id(child)]
        if value >= limit:
            raise ValueError(f"database too large for record_size {record_size}")
        return value

    out = bytearray()
    for node in nodes:
        left, right = (record(child) for child in node.children)
        if record_size == 24:
            out += left.to_bytes(3, "big") + right.to_bytes(3, "big")
        elif record_size == 28:
            out += (left & 0xFFFFFF).to_bytes(3, "big")
            out.append(((left >> 24) << 4) | (right >> 24))
            out += (right & 0xFFFFFF).to_bytes(3, "big")
        else:
            out += left.to_bytes(4, "big") + right.to_bytes(4, "big")
    return bytes(out)


def _metadata(
    node_count: int, record_size: int, database_type: str, languages: Sequence[str], description: str
) -> bytes:
    # Typed exactly as the spec says: strict readers (libmaxminddb) check the types.
    fields: list[tuple[str, bytes]] = [
        ("binary_format_major_version", _uint(_UINT16, 2)),
        ("binary_format_minor_version", _uint(_UINT16, 0)),
        ("build_epoch", _uint(_UINT64, int(time.time()))),
        ("database_type", _encode(database_type)),
        ("description", _encode({"en": description})),
        ("ip_version", _uint(_UINT16, 6)),
        ("languages", _encode(list(languages))),
        ("node_count", _uint(_UINT32, node_count)),
        ("record_size", _uint(_UINT16, record_size)),
    ]
    return _control(_MAP, len(fields)) + b"".join(_encode(key) + value for key, value in fields)


def write_mmdb(
    path: str | os.PathLike[str],
    networks: Mapping[str, Mapping[str, Any]],
    *,
    database_type: str = "GeoLite2-City",
    description: str = "PoliteTenant sample City database (documentation address ranges only)",
    languages: Sequence[str] = ("en",),
    record_size: int = 28,
) -> None:
    """Write ``networks`` (CIDR string -> record) as a MaxMind DB file, atomically.

    Nested networks are allowed: a lookup gets the record of the longest matching prefix. The same
    network given twice (after normalisation, e.g. ``2001:db8::/32`` and ``2001:0db8::/32``) and
    CIDR strings with host bits set are ``ValueError``. Output is deterministic except
    ``build_epoch``.
    """
    if record_size not in (24, 28, 32):
        raise ValueError(f"record_size must be 24, 28 or 32, not {record_size}")
    positions: dict[tuple[int, int], Mapping[str, Any]] = {}
    for cidr, record in networks.items():
        position = _tree_position(cidr)
        if position in positions:
            raise ValueError(f"network given twice: {cidr}")
        positions[position] = record

    data = bytearray()
    leaves: dict[bytes, _Leaf] = {}  # identical records share one copy
    root = _Node()
    for (value, length), record in sorted(positions.items(), key=lambda item: (item[0][1], item[0][0])):
        encoded = _encode(record)
        leaf = leaves.get(encoded)
        if leaf is None:
            leaf = leaves[encoded] = _Leaf(len(data))
            data += encoded
        _insert(root, value, length, leaf)
    _alias_ipv4_mapped(root)

    nodes = _number_nodes(root)
    content = b"".join(
        (
            _search_tree(nodes, record_size),
            bytes(16),
            bytes(data),
            _METADATA_MARKER,
            _metadata(len(nodes), record_size, database_type, languages, description),
        )
    )
    replace_durably(path, content)


def _place(
    city: str,
    country_iso: str,
    country: str,
    subdivision: tuple[str, str] | None,
    latitude: float,
    longitude: float,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "city": {"names": {"en": city}},
        "country": {"iso_code": country_iso, "names": {"en": country}},
    }
    if subdivision is not None:
        record["subdivisions"] = [{"iso_code": subdivision[0], "names": {"en": subdivision[1]}}]
    record["location"] = {"latitude": latitude, "longitude": longitude}
    return record


_DUBLIN = _place("Dublin", "IE", "Ireland", ("L", "Leinster"), 53.3498, -6.2603)
_FRANKFURT = _place("Frankfurt am Main", "DE", "Germany", ("HE", "Hesse"), 50.1109, 8.6821)
_BERLIN = _place("Berlin", "DE", "Germany", ("BE", "Land Berlin"), 52.5200, 13.4050)
_NEW_YORK = _place("New York", "US", "United States", ("NY", "New York"), 40.7128, -74.0060)
_ASHBURN = _place("Ashburn", "US", "United States", ("VA", "Virginia"), 39.0438, -77.4874)
_SAN_FRANCISCO = _place("San Francisco", "US", "United States", ("CA", "California"), 37.7749, -122.4194)
_SINGAPORE = _place("Singapore", "SG", "Singapore", None, 1.3521, 103.8198)
_SYDNEY = _place("Sydney", "AU", "Australia", ("NSW", "New South Wales"), -33.8688, 151.2093)

#: GeoLite2-City-shaped sample: documentation / reserved ranges only (see the module docstring).
SAMPLE_NETWORKS: dict[str, dict[str, Any]] = {
    "192.0.2.0/24": _DUBLIN,
    "198.51.100.0/24": _FRANKFURT,
    "198.51.100.128/25": _BERLIN,  # nested inside Frankfurt's /24: longest prefix wins
    "203.0.113.0/24": _NEW_YORK,
    "100.64.0.0/16": _ASHBURN,
    "100.65.0.0/16": _SAN_FRANCISCO,
    "100.66.0.0/16": _SINGAPORE,
    "100.67.0.0/16": _SYDNEY,
    "2001:db8:1::/48": _DUBLIN,
    "2001:db8:2::/48": _FRANKFURT,
    "2001:db8:3::/48": _BERLIN,
    "2001:db8:4::/48": _NEW_YORK,
    "2001:db8:5::/48": _ASHBURN,
    "2001:db8:6::/48": _SAN_FRANCISCO,
    "2001:db8:7::/48": _SINGAPORE,
    "2001:db8:8::/48": _SYDNEY,
}

#: One address inside each sample city's IPv4 network (city name -> address), for the demo.
SAMPLE_ADDRESSES: dict[str, str] = {
    "Dublin": "192.0.2.10",
    "Frankfurt am Main": "198.51.100.20",
    "Berlin": "198.51.100.200",
    "New York": "203.0.113.30",
    "Ashburn": "100.64.1.40",
    "San Francisco": "100.65.2.50",
    "Singapore": "100.66.3.60",
    "Sydney": "100.67.4.70",
}


def write_sample(path: str | os.PathLike[str]) -> None:
    """Write :data:`SAMPLE_NETWORKS` as a GeoLite2-City-layout database at ``path``."""
    write_mmdb(path, SAMPLE_NETWORKS)
