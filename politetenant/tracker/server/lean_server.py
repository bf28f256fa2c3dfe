"""The two public routes served straight off the socket; every other request is aiohttp's.

Beacons and clicks are nearly all of a tracker's traffic and the simplest requests it gets: a GET, a
token in the path, two headers that matter. Building aiohttp's request object, routing, middlewares
and response object for them costs more than the tracker's own work (verify, judge, enqueue).
``LeanProtocol`` answers well-formed ``GET /o/{token}.gif`` and ``GET /c/{token}/{link}`` itself,
with the very steps aiohttp's handlers run (``beacons.record_open`` and friends), and hands the
connection, with the bytes it has read, to aiohttp's protocol the moment a request is anything else:
another path or method, a body, a header it does not take verbatim. aiohttp then answers that
request and every later one on the connection. So the lean path only has to be right about what it
accepts; everything else keeps aiohttp's behaviour, errors included.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import socket
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, NamedTuple, cast

from aiohttp import web

from politetenant.tracker.http.errors import ERROR_HEADERS, ApiError, error_body
from politetenant.tracker.http.state import TrackerState
from politetenant.tracker.judging.client_ip import NO_PEER, Peer, forwarded_for
from politetenant.tracker.judging.judge import fetch_purpose
from politetenant.tracker.public import gif
from politetenant.tracker.public.beacons import (
    GIF_HEADERS,
    HONEYPOT_HEADERS,
    REDIRECT_HEADERS,
    cached_click_target,
    learn_click_target,
    record_click,
    record_open,
    verify_click,
)
from politetenant.tracker.storage.base import StorageUnavailable
from politetenant.tracker.storage.click_cache import LinkTarget
from politetenant.tracker.storage.rows import ClickTarget

log = logging.getLogger(__name__)

OPEN_ROUTE, CLICK_ROUTE = "/o/{token}.gif", "/c/{token}/{link}"  # the labels aiohttp's router gives
MAX_HEAD_BYTES = 8190  # aiohttp's line limit: a longer head is handed over, and aiohttp refuses it
MAX_PIPELINED_BYTES = 64 * 1024  # buffered behind an answer that waits on the database
KEEPALIVE_SECONDS = 75.0
_SWEEP_SECONDS = 5.0

# A head the lean path takes, read by one regular expression: ``GET``, an open or click path (a
# base64url token, a decimal link number; a query string is ignored), HTTP/1.0 or 1.1, then field
# lines ending in CRLF whose names are RFC 9110 tokens and whose values hold no control byte. No
# obs-fold (a line that starts with a blank has no field name), no bare CR or LF, no absolute form,
# no percent-encoding in the path: anything else goes to aiohttp's parser, which knows every way to
# refuse it. Every repetition is possessive (``*+``): none can end where the next part could start
# (a value holds no CR, a name no colon), so the language is the same and the matcher keeps no
# backtracking state for each byte of a long User-Agent.
_REQUEST = re.compile(
    rb"GET /(?:o/([A-Za-z0-9_=-]{1,200}+)\.gif|c/([A-Za-z0-9_=-]{1,200}+)/([0-9]++))(?:\?[\x21-\x7e\x80-\xff]*+)?"
    rb" HTTP/1\.([01])((?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]++:[\t\x20-\x7e\x80-\xff]*+)*+)"
)
# What each field line of a lean request is to ``parse_public_request`` (names lowercased): the few
# that matter, or that make it aiohttp's (a body); every other field is ignored.
_USER_AGENT, _FORWARDED_FOR, _SEC_PURPOSE, _PURPOSE, _CONNECTION, _LENGTH, _BODY = (
    "user-agent", "x-forwarded-for", "sec-purpose", "purpose", "connection", "content-length", "body",
)  # fmt: skip
_FIELD_KINDS = {
    b"user-agent": _USER_AGENT, b"x-forwarded-for": _FORWARDED_FOR, b"sec-purpose": _SEC_PURPOSE,
    b"purpose": _PURPOSE, b"connection": _CONNECTION, b"content-length": _LENGTH,
    b"transfer-encoding": _BODY, b"expect": _BODY, b"upgrade": _BODY,
}  # fmt: skip
_REASONS = {200: b"OK", 302: b"Found", 404: b"Not Found", 500: b"Internal Server Error", 503: b"Service Unavailable"}


def _head(headers: dict[str, str]) -> bytes:
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in headers.items())


# The same headers aiohttp's handlers send (beacons.py, errors.py), written once as bytes.
_GIF_HEAD = _head(GIF_HEADERS)
_JSON_HEAD = _head({"Content-Type": "application/json; charset=utf-8", **ERROR_HEADERS})
_EMPTY_HTML_HEAD = _head(HONEYPOT_HEADERS)
_REDIRECT_HEAD = _head(REDIRECT_HEADERS)


def before_date(status: int, head: bytes, length: int) -> bytes:
    """An answer's bytes up to its Date value: everything in it but the date and the end of the head
    (``response_bytes`` written in two halves). A fixed answer is built once (a beacon's at import,
    a link's redirect at its first click, kept on its ``LinkTarget``), so answering it costs one join."""
    return b"HTTP/1.1 %d %s\r\n%sContent-Length: %d\r\nDate: " % (status, _REASONS[status], head, length)


_KEEP_ALIVE_END, _CLOSE_END = b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"  # after the Date value
_GIF_BEFORE_DATE = before_date(200, _GIF_HEAD, len(gif.PIXEL))
_HONEYPOT_BEFORE_DATE = before_date(200, _EMPTY_HTML_HEAD, 0)


def redirect_before_date(location: str) -> bytes:
    """A link's 302 up to its Date value (kept on the link's ``LinkTarget`` as ``redirect``)."""
    return before_date(302, b"Location: %s\r\n%s" % (location.encode(), _REDIRECT_HEAD), 0)


class PublicRequest(NamedTuple):
    """What the lean path needs of a beacon or click request; ``link`` is None for an open.
    ``purpose`` is every Sec-Purpose and Purpose line (a prefetch says so there)."""

    token: str
    link: str | None
    user_agent: str | None
    forwarded_for: str | None
    keep_alive: bool
    purpose: str | None = None

    @property
    def route(self) -> str:
        return OPEN_ROUTE if self.link is None else CLICK_ROUTE


def parse_public_request(head: bytes) -> PublicRequest | None:
    """Read a request head (everything before the blank line) the lean path can answer, or None.

    None is not an error: it means "aiohttp answers this one" (another route, HEAD, a body, a
    repeated User-Agent the two paths could read differently, anything malformed). Repeated
    X-Forwarded-For lines are one list, read in order, as aiohttp's handlers read them; so are
    Sec-Purpose and Purpose lines (``beacons.request_purpose``). A HEAD is aiohttp's: it answers it
    with the same handler, which judges it as a HEAD.
    """
    match = _REQUEST.fullmatch(head)
    if match is None:
        return None
    token, click_token, link, minor, fields = match.groups()
    user_agent = connection = None
    forwarded: list[str] = []
    sec_purpose: list[str] = []
    purpose: list[str] = []
    for line in fields.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        kind = _FIELD_KINDS.get(name.lower())  # one look-up: most lines (Host, Accept...) are none of ours
        if kind is None:
            continue
        value = value.strip(b" \t")
        if kind == _USER_AGENT:
            if user_agent is not None:
                return None
            user_agent = value.decode("utf-8", "surrogateescape")
        elif kind == _FORWARDED_FOR:
            forwarded.append(value.decode("latin-1"))
        elif kind == _CONNECTION:
            connection = value.lower()
        elif kind == _SEC_PURPOSE:
            sec_purpose.append(value.decode("latin-1"))
        elif kind == _PURPOSE:
            purpose.append(value.decode("latin-1"))
        elif kind == _BODY or value != b"0":  # a body, or a Content-Length other than 0
            return None
    keep_alive = connection != b"close" if minor == b"1" else connection == b"keep-alive"
    hops = forwarded_for(forwarded) if forwarded else None  # both are None for no line at all
    fetch = fetch_purpose(sec_purpose, purpose) if sec_purpose or purpose else None
    if token is None:
        return PublicRequest(click_token.decode(), link.decode(), user_agent, hops, keep_alive, fetch)
    return PublicRequest(token.decode(), None, user_agent, hops, keep_alive, fetch)


class _HttpDate:
    """The Date header, formatted once a second rather than once a response."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode()
        return self._value


def response_bytes(status: int, head: bytes, body: bytes, date: bytes, *, keep_alive: bool) -> bytes:
    """A whole HTTP/1.1 response: status line, the route's fixed headers, length, date, body. The
    lean path writes the same bytes from parts built ahead (``before_date``); the tests hold the two
    to each other."""
    return b"".join((
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]), head,
        b"Content-Length: %d\r\nDate: %s\r\n" % (len(body), date),
        b"" if keep_alive else b"Connection: close\r\n", b"\r\n", body,
    ))  # fmt: skip


class LeanServer:
    """One worker's lean connections: the state they share, the hand-over to aiohttp, idle sweeps."""

    def __init__(self, state: TrackerState, fallback: Callable[[], asyncio.Protocol]) -> None:
        self.state = state
        self.fallback = fallback
        self.connections: set[LeanProtocol] = set()
        self.pending: set[asyncio.Future[ClickTarget | None]] = set()  # click look-ups that answers wait on
        self.date = _HttpDate()
        self._sweeper: asyncio.Task[None] | None = None

    def protocol(self) -> LeanProtocol:
        return LeanProtocol(self)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close keep-alive connections idle for longer than KEEPALIVE_SECONDS (as aiohttp does)."""
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            cutoff = time.monotonic() - KEEPALIVE_SECONDS
            for connection in [c for c in self.connections if c.last_active < cutoff]:
                connection.close_when_idle()

    async def close(self, grace_seconds: float) -> None:
        """Stop: close idle connections now, the rest after the answer they owe (within the grace)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self.connections):
            connection.close_when_idle()
        if self.pending:
            await asyncio.wait(list(self.pending), timeout=grace_seconds)


class LeanProtocol(asyncio.Protocol):
    """One client connection while it asks only for beacons and clicks."""

    def __init__(self, server: LeanServer) -> None:
        self.server = server
        self.last_active = time.monotonic()
        self._transport: asyncio.Transport | None = None
        self._peer = NO_PEER
        self._buffer = b""
        self._waiting = False  # an answer awaits the database (a click on a link not seen yet)
        self._closing = False
        self._reading_paused = False
        self._writing_paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is one, without subclassing it
        peer = transport.get_extra_info("peername")
        self._peer = Peer.of(peer[0] if isinstance(peer, tuple) and peer else None, self.server.state.trusted_proxies)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        self._buffer = self._buffer + data if self._buffer else data
        if not self._waiting:
            self._serve()
        elif len(self._buffer) > MAX_PIPELINED_BYTES:
            self._set_reading(False)  # a client piling requests behind a database lookup waits

    def eof_received(self) -> bool:
        return False  # the client is done sending: close once written

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._closing = True
        self._buffer = b""

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._set_reading(False)  # a client that does not read its answers gets no more served

    def resume_writing(self) -> None:
        self._writing_paused = False
        if not self._waiting:
            self._set_reading(True)

    def _set_reading(self, reading: bool) -> None:
        if self._transport is None or self._reading_paused is not reading:
            return
        self._reading_paused = not reading
        if reading:
            self._transport.resume_reading()
        else:
            self._transport.pause_reading()

    # -- serving --------------------------------------------------------------------------------
    def close_when_idle(self) -> None:
        self._closing = True
        if not self._waiting and self._transport is not None:
            self._transport.close()

    def _serve(self) -> None:
        """Answer every complete request in the buffer, in order (pipelining included)."""
        data, pos = self._buffer, 0
        while not self._waiting and not self._closing:
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            request = parse_public_request(data[pos:end]) if end - pos <= MAX_HEAD_BYTES else None
            if request is None:
                self._buffer = b""
                self._hand_over(data[pos:])
                return
            pos = end + 4
            self._answer(request)
        rest = data[pos:] if pos else data
        if self._closing:
            rest = b""
        elif not self._waiting and len(rest) > MAX_HEAD_BYTES:
            self._buffer = b""
            self._hand_over(rest)  # a head too long to be ours: aiohttp refuses it properly
            return
        self._buffer = rest

    def _hand_over(self, data: bytes) -> None:
        """From here on this connection is aiohttp's, starting with the request in ``data``."""
        transport = self._transport
        self.server.connections.discard(self)
        self._transport = None
        if transport is None or transport.is_closing():
            return
        protocol = self.server.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._reading_paused:
            transport.resume_reading()
        if self._writing_paused:
            protocol.pause_writing()
        if data:
            protocol.data_received(data)

    def _answer(self, request: PublicRequest) -> None:
        state = self.server.state
        try:
            if request.link is None:
                record_open(
                    state, request.token, self._peer, request.forwarded_for, request.user_agent,
                    purpose=request.purpose,
                )  # fmt: skip
                self._respond(request, 200, _GIF_BEFORE_DATE, gif.PIXEL)
                return
            record_id, link_no = verify_click(state, request.token, request.link)
            target = cached_click_target(state, record_id, link_no)
            if target is None:  # a database look-up, batched with this turn's others; answered when it is done
                self._waiting = True
                lookup = state.click_lookups.lookup(record_id, link_no)
                self.server.pending.add(lookup)  # close() waits on it, its callbacks after these: answered first
                lookup.add_done_callback(functools.partial(self._click_after_lookup, request, record_id, link_no))
                lookup.add_done_callback(self.server.pending.discard)
                return
            self._click(request, record_id, link_no, target)
        except Exception as exc:  # every failure becomes the JSON error aiohttp would send
            self._fail(request, exc)

    def _click_after_lookup(
        self, request: PublicRequest, record_id: bytes, link_no: int, lookup: asyncio.Future[ClickTarget | None]
    ) -> None:
        try:
            found = lookup.result()  # or the batch's error
            self._click(request, record_id, link_no, learn_click_target(self.server.state, record_id, link_no, found))
        except Exception as exc:
            self._fail(request, exc)
        finally:
            self._waiting = False
        if self._closing:
            self.close_when_idle()
        elif self._transport is not None:
            self._serve()  # requests pipelined behind this one
            if not self._writing_paused and not self._waiting:
                self._set_reading(True)

    def _click(self, request: PublicRequest, record_id: bytes, link_no: int, target: LinkTarget) -> None:
        state = self.server.state
        location = record_click(
            state, record_id, link_no, target, self._peer, request.forwarded_for, request.user_agent,
            purpose=request.purpose,
        )  # fmt: skip
        if location is None:
            self._respond(request, 200, _HONEYPOT_BEFORE_DATE, b"")
            return
        redirect = target.redirect
        if redirect is None:  # the link's first click in this worker: every later one gets the same answer
            redirect = target.redirect = redirect_before_date(location)
        self._respond(request, 302, redirect, b"")

    def _fail(self, request: PublicRequest, exc: Exception) -> None:
        if isinstance(exc, ApiError):
            status, code, message = exc.status, exc.code, exc.message
        elif isinstance(exc, StorageUnavailable):
            status, code, message = 503, "database_unavailable", "the database is unavailable; try again shortly"
        else:
            log.exception("unhandled error on GET %s", request.route)
            status, code, message = 500, "internal", "internal error; it has been logged"
        if status not in _REASONS:
            status = 500
        body = json.dumps(error_body(code, message)).encode()
        self._respond(request, status, before_date(status, _JSON_HEAD, len(body)), body)

    def _respond(self, request: PublicRequest, status: int, before: bytes, body: bytes) -> None:
        """Send one answer: ``before`` is all of it up to the Date value (``before_date``)."""
        self.server.state.metrics.count_request(request.route, status)
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        keep_alive = request.keep_alive
        transport.write(b"".join((before, self.server.date.now(), _KEEP_ALIVE_END if keep_alive else _CLOSE_END, body)))
        if not keep_alive:
            self._closing = True
            transport.close()


class LeanSite(web.TCPSite):
    """aiohttp's TCP site, but each connection starts on ``LeanProtocol``; aiohttp's own protocol
    (``runner.server``) takes a connection over when a request is not a beacon or a click."""

    def __init__(self, runner: web.BaseRunner, state: TrackerState, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._state = state
        self._lean: LeanServer | None = None

    async def start(self) -> None:
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None, "runner.setup() comes first"
        self._lean = LeanServer(self._state, server)
        self._server = await asyncio.get_running_loop().create_server(
            self._lean.protocol, self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )  # fmt: skip
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
        self._lean.start()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # no new connections
        if self._lean is not None:
            await self._lean.close(self._runner._shutdown_timeout)
        await super().stop()
