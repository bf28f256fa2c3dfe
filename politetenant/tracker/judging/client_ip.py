"""The client's address behind trusted reverse proxies (X-Forwarded-For), without trusting spoofers.

Each proxy appends the address it received the connection from, so the right end of
X-Forwarded-For is written by the proxy nearest to us and the left end by whoever sent the request.
Only hops appended by proxies we trust are believed: starting from the socket peer, the header is
walked right to left while the hop is a trusted proxy, and the first address outside the trusted
networks is the client. A peer outside the trusted networks means the header is the client's own
words and is ignored entirely.

A request may carry several X-Forwarded-For lines: HAProxy, for one, adds a line of its own after
whatever the client sent instead of extending the client's line. Repeated field lines are one list
(RFC 9110, section 5.3), so every line is read, in order (``forwarded_for``); reading only the first
would let a client's own line decide where it is.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["NO_PEER", "IPAddress", "Network", "Peer", "client_ip", "forwarded_for", "parse_address", "parse_cidrs"]

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_SEPARATORS = re.compile(r"[\s,]+")
# "1.2.3.4:5678" (IPv4 with a port): exactly one colon, digits after it.
_IPV4_PORT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$")
# "[2001:db8::1]" or "[2001:db8::1]:443".
_BRACKETED = re.compile(r"^\[([^\]]+)\](?::\d{1,5})?$")
_MAX_HOP_LENGTH = 64  # longer than any written address (scoped IPv6 included): garbage


def forwarded_for(lines: Iterable[str]) -> str | None:
    """All X-Forwarded-For field lines of a request, in the order received, as the one list they are;
    None when there is none."""
    return ", ".join(lines) or None


def parse_cidrs(value: str | Iterable[str]) -> tuple[Network, ...]:
    """Parse networks from comma/space separated text or an iterable of such texts.

    Host bits are allowed ("10.0.0.1/8" is 10.0.0.0/8); a bare address is a /32 or /128.
    Raises ``ValueError`` naming the first entry that is not a network.
    """
    items = [value] if isinstance(value, str) else list(value)
    networks: list[Network] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not a CIDR network")
        for entry in _SEPARATORS.split(item.strip()):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"{entry!r} is not a CIDR network") from None
    return tuple(networks)


def parse_address(text: str | None) -> IPAddress | None:
    """Parse an address as proxies and servers write it, or return None.

    Accepts surrounding whitespace and quotes, an IPv4 port ("1.2.3.4:5678") and IPv6 brackets
    with or without a port ("[2001:db8::1]:443"). An IPv4-mapped IPv6 address is returned as the
    IPv4 address it maps.
    """
    if not text or not isinstance(text, str):
        return None
    candidate = text.strip().strip('"').strip()
    if not candidate or len(candidate) > _MAX_HOP_LENGTH:
        return None
    if ":" not in candidate:  # IPv4, the common case: the C parser is as strict and 3x faster
        try:
            return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, candidate))
        except OSError:
            return None
    if candidate[0] == "[":
        bracketed = _BRACKETED.match(candidate)
        if bracketed is None:
            return None
        candidate = bracketed.group(1)
    elif candidate.count(":") == 1:
        with_port = _IPV4_PORT.match(candidate)
        if with_port is None:
            return None
        candidate = with_port.group(1)
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, trusted: Sequence[Network]) -> bool:
    # Membership across IP versions is simply False in ipaddress, never an error.
    return any(address in network for network in trusted)


@dataclass(frozen=True, slots=True)
class Peer:
    """A connection's socket peer, parsed once: the lean server keeps one per connection, so a
    keep-alive client costs one parse, not one per request."""

    address: IPAddress | None
    trusted: bool  # a proxy whose X-Forwarded-For we believe
    text: str | None  # ``address`` as judging uses it (normalised)

    @classmethod
    def of(cls, peer: str | None, trusted: Sequence[Network]) -> Peer:
        try:
            address = parse_address(peer)
            if address is None:
                return NO_PEER
            return cls(address, bool(trusted) and _is_trusted(address, trusted), str(address))
        except Exception:  # this runs on every connection and must not fail
            return NO_PEER

    def client(self, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
        """The client's address (see ``client_ip``); never raises."""
        if not forwarded_for or not self.trusted or self.address is None:
            return self.text
        try:
            nearest = self.address
            for hop in reversed(forwarded_for.split(",")):
                if not hop.strip():
                    continue  # "a, , b" or a trailing comma: no hop there
                address = parse_address(hop)
                if address is None:
                    break
                for network in trusted:  # _is_trusted, without a generator per hop (every request)
                    if address in network:
                        break
                else:
                    # A dotted IPv4 hop parsed (inet_pton: canonical only) is already its own text.
                    text = hop.strip().strip('"').strip()
                    return text if ":" not in text else str(address)
                nearest = address
            return str(nearest)
        except Exception:
            return None


NO_PEER = Peer(None, False, None)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """Return the client's address (normalised text), or None when the peer is not an address.

    - Peer outside ``trusted``: X-Forwarded-For is ignored (anyone can write it); the peer is it.
    - Peer trusted: walk X-Forwarded-For right to left, skip trusted hops, and return the first
      untrusted address. A missing or empty header gives the peer. A hop that is not an address
      breaks the chain (what lies left of it cannot be vouched for): the nearest trusted address
      seen so far is returned. When every hop is trusted, the leftmost one is the client.

    Never raises.
    """
    return Peer.of(peer, trusted).client(forwarded_for, trusted)
