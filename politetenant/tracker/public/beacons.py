"""The public, token-only routes: open beacon, read-time beacon, click redirect.

Each step reads like its list of what it does: verify the token, judge the request, hand the event
to the ingest buffer, answer. The steps take the peer address and headers as arguments, not a request,
so aiohttp's handlers here and the lean server (``lean_server``) run the very same code. The IP address
and user agent live only in arguments and local variables: judged, then dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import quote

from aiohttp import web

from politetenant.crypto import SealError, link_row
from politetenant.tracker.http.errors import NotFound, ServiceUnavailable
from politetenant.tracker.http.openapi import Operation
from politetenant.tracker.http.state import STATE, TrackerState
from politetenant.tracker.judging.client_ip import Peer, forwarded_for
from politetenant.tracker.judging.judge import Verdict, fetch_purpose
from politetenant.tracker.public import gif
from politetenant.tracker.storage.click_cache import LinkTarget
from politetenant.tracker.storage.rows import ClickTarget, Event, EventKind

_GIF = {"type": "string", "contentMediaType": "image/gif"}
OPERATIONS = [
    Operation("GET", "/o/{token}.gif", "Open beacon: a 43-byte transparent GIF", response=_GIF,
              content_type="image/gif", errors=(404, 503)),
    Operation("GET", "/t/{token}.gif", "Read-time beacon: GIF frames trickle until the client hangs up",
              response=_GIF, content_type="image/gif", errors=(404,)),
    Operation("GET", "/c/{token}/{link}", "Click: 302 to the URL stored for this link of the message", status=302,
              errors=(404, 503), extra_responses={200: {"description": "The hidden honeypot link (no redirect)."}}),
]  # fmt: skip

# The headers of each answer, shared with the lean server (which writes them as bytes).
GIF_HEADERS = {"Content-Type": "image/gif", "Cache-Control": "no-store, max-age=0", "Pragma": "no-cache"}
HONEYPOT_HEADERS = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
REDIRECT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}  # plus Location
_SAFE_URL_CHARS = ":/?#[]@!$&'()*+,;=%~"
_VERIFIED_TOKENS_MAX = 50_000  # ~200 bytes each


def _judge(
    state: TrackerState, peer: Peer, forwarded_for: str | None, user_agent: str | None, *, honeypot: bool = False,
    method: str = "GET", purpose: str | None = None,
) -> Verdict:  # fmt: skip
    client = peer.client(forwarded_for, state.trusted_proxies)
    return state.judge.judge(client, user_agent, honeypot=honeypot, method=method, purpose=purpose)


def request_peer(state: TrackerState, request: web.Request) -> Peer:
    return Peer.of(request.remote, state.trusted_proxies)


def request_forwarded_for(request: web.Request) -> str | None:
    """Every X-Forwarded-For line, not only the first: a proxy may add its own line after the client's."""
    return forwarded_for(request.headers.getall("X-Forwarded-For", ()))


def request_purpose(request: web.Request) -> str | None:
    """Every Sec-Purpose and Purpose line: a browser prefetching the URL says so there."""
    headers = request.headers
    return fetch_purpose(headers.getall("Sec-Purpose", ()), headers.getall("Purpose", ()))


def _judge_request(state: TrackerState, request: web.Request) -> Verdict:
    peer = request_peer(state, request)
    return _judge(
        state, peer, request_forwarded_for(request), request.headers.get("User-Agent"), method=request.method,
        purpose=request_purpose(request),
    )  # fmt: skip


def _event(
    state: TrackerState, record_id: bytes, kind: EventKind, verdict: Verdict, *, link_no: int | None = None,
    read_ms: int | None = None, at: float | None = None,
) -> Event:  # fmt: skip
    sealer = state.sealer
    city = sealer.seal_repeated("event.city", verdict.city) if verdict.city else None
    region = sealer.seal_repeated("event.region", verdict.region) if verdict.region else None
    return Event(
        state.ingest.ids.next(), record_id, kind, link_no, int((at or time.time()) * 1000), verdict.country,
        region, city, verdict.os, verdict.device_type, verdict.browser, int(verdict.bot), read_ms,
    )  # fmt: skip


def _verify(state: TrackerState, token: str) -> bytes:
    """The record a genuine token names. A recipient's token comes back (every open, each click:
    the beacon and the links carry the same one) and its HMAC gives the same answer each time, so
    tokens that verified are remembered (bounded); a forged one is checked, and refused, every time."""
    known = state.verified_tokens
    record_id = known.get(token)
    if record_id is not None:
        return record_id
    verified = state.tokens.verify(token)
    if verified is None:
        state.metrics.rejected_tokens.inc()
        raise NotFound("unknown tracking token")
    known[token] = verified.record_id
    if len(known) > _VERIFIED_TOKENS_MAX:
        known.popitem(last=False)
    return verified.record_id


def _accept(state: TrackerState, event: Event) -> None:
    if not state.ingest.submit(event):
        raise ServiceUnavailable("the tracker cannot store events right now", code=state.ingest.refusal)


# -- the steps, without a request object: aiohttp's handlers and the lean server share them --------
def record_open(state: TrackerState, token: str, peer: Peer, forwarded_for: str | None,
                user_agent: str | None, *, method: str = "GET", purpose: str | None = None) -> None:  # fmt: skip
    """Verify, judge and enqueue one open; raises NotFound (bad token) or ServiceUnavailable.
    ``method`` and ``purpose`` (Sec-Purpose / Purpose) let a HEAD or a prefetch be judged as such."""
    record_id = _verify(state, token)
    verdict = _judge(state, peer, forwarded_for, user_agent, method=method, purpose=purpose)
    _accept(state, _event(state, record_id, EventKind.OPEN, verdict))


def verify_click(state: TrackerState, token: str, link: str) -> tuple[bytes, int]:
    """The record and link number a click path names; NotFound when either is not one of ours."""
    record_id = _verify(state, token)
    if not link.isdigit() or len(link) > 6:
        raise NotFound("unknown link")
    return record_id, int(link)


def cached_click_target(state: TrackerState, record_id: bytes, link_no: int) -> LinkTarget | None:
    """The link's target when this worker knows it: a message it registered, a link looked up before."""
    return state.click_cache.get(record_id, link_no)


async def load_click_target(state: TrackerState, record_id: bytes, link_no: int) -> LinkTarget:
    """Read the link's target from the database and remember it; NotFound for a link never stored."""
    found = await state.click_lookups.get(record_id, link_no)  # batched with this turn's other misses
    return learn_click_target(state, record_id, link_no, found)


def learn_click_target(state: TrackerState, record_id: bytes, link_no: int, found: ClickTarget | None) -> LinkTarget:
    """Remember what the database said of a link (``click_lookups``); NotFound for a link never stored."""
    if found is None:
        raise NotFound("unknown link")
    return state.click_cache.learn(record_id, link_no, found)


def click_location(state: TrackerState, link_no: int, target: LinkTarget) -> str:
    """The quoted URL a (non-honeypot) link redirects to, opened once per worker and kept with the link.
    NotFound when its sealed URL does not open for this link (copied from another) or is not http(s)."""
    location = target.location
    if location is not None:
        return location
    assert target.sealed_url is not None, "the honeypot link has no URL"
    try:
        url = state.sealer.open_text("link.url", target.sealed_url, row=link_row(target.message_id, link_no))
    except SealError:  # a URL copied in from another link or message: never redirect to it
        state.click_cache.forget_link(target.message_id, link_no)
        raise NotFound("unknown link") from None
    if not url.lower().startswith(("http://", "https://")):
        raise NotFound("unknown link")
    location = target.location = quote(url, safe=_SAFE_URL_CHARS)
    return location


def record_click(
    state: TrackerState, record_id: bytes, link_no: int, target: LinkTarget, peer: Peer,
    forwarded_for: str | None, user_agent: str | None, *, method: str = "GET", purpose: str | None = None,
) -> str | None:  # fmt: skip
    """Judge and enqueue one click; returns the ``Location`` to redirect to, or None for the honeypot
    link (answered 200 with an empty page: only machines follow it). A HEAD or a prefetch gets the
    same answer and is stored with its reason."""
    if target.sealed_url is None:
        verdict = _judge(state, peer, forwarded_for, user_agent, honeypot=True, method=method, purpose=purpose)
        _accept(state, _event(state, record_id, EventKind.CLICK, verdict, link_no=0))
        return None
    location = click_location(state, link_no, target)
    verdict = _judge(state, peer, forwarded_for, user_agent, method=method, purpose=purpose)
    _accept(state, _event(state, record_id, EventKind.CLICK, verdict, link_no=link_no))
    return location


# -- aiohttp handlers -----------------------------------------------------------------------------
async def open_beacon(request: web.Request) -> web.Response:
    """GET (and HEAD, which aiohttp routes here too: same answer, judged as a HEAD)."""
    state, headers = request.app[STATE], request.headers
    record_open(
        state, request.match_info["token"], request_peer(state, request), request_forwarded_for(request),
        headers.get("User-Agent"), method=request.method, purpose=request_purpose(request),
    )  # fmt: skip
    return web.Response(body=gif.PIXEL, headers=GIF_HEADERS)


async def read_beacon(request: web.Request) -> web.StreamResponse:
    """Trickle GIF frames until the client hangs up (or the limit): the elapsed time is the read time."""
    state = request.app[STATE]
    record_id = _verify(state, request.match_info["token"])
    settings = state.settings
    if state.read_streams >= settings.read_streams_per_worker or not state.ingest.accepting:
        # Saturated: answer at once and record nothing, so a flood of opens cannot exhaust memory.
        return web.Response(body=gif.PIXEL, headers=GIF_HEADERS)
    verdict = _judge_request(state, request)
    if request.method == "HEAD":
        # Nothing reads a HEAD's body: no stream to time. The machine's visit is still recorded.
        state.ingest.submit(_event(state, record_id, EventKind.READ, verdict, read_ms=0))
        return web.Response(body=gif.PIXEL, headers=GIF_HEADERS)
    started_wall, started = time.time(), time.monotonic()
    response = web.StreamResponse(headers=GIF_HEADERS)
    state.read_streams += 1
    state.metrics.read_streams.set(state.read_streams)
    try:
        await response.prepare(request)
        await response.write(gif.STREAM_HEADER)
        await _trickle(state, request, response, started)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write(gif.STREAM_TRAILER)
            await response.write_eof()
    except (ConnectionError, RuntimeError, asyncio.CancelledError):
        pass  # the client hung up: that is the signal we were waiting for
    finally:
        state.read_streams -= 1
        state.metrics.read_streams.set(state.read_streams)
        elapsed_ms = int(min(time.monotonic() - started, settings.read_max_seconds) * 1000)
        state.ingest.submit(_event(state, record_id, EventKind.READ, verdict, read_ms=elapsed_ms, at=started_wall))
    return response


async def _trickle(state: TrackerState, request: web.Request, response: web.StreamResponse, started: float) -> None:
    settings = state.settings
    deadline = started + settings.read_max_seconds
    next_frame = started + settings.read_frame_seconds
    poll = min(0.25, settings.read_frame_seconds)
    while True:
        now = time.monotonic()
        if now >= deadline or state.stopping.is_set():
            return
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError
        if now >= next_frame:
            await response.write(gif.STREAM_FRAME)
            next_frame += settings.read_frame_seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), timeout=min(poll, max(deadline - now, 0.001)))


async def click(request: web.Request) -> web.Response:
    """302 to the URL stored for this message's link; the URL itself never travels in a request."""
    state = request.app[STATE]
    record_id, link_no = verify_click(state, request.match_info["token"], request.match_info["link"])
    target = cached_click_target(state, record_id, link_no) or await load_click_target(state, record_id, link_no)
    headers = request.headers
    peer = request_peer(state, request)
    location = record_click(
        state, record_id, link_no, target, peer, request_forwarded_for(request), headers.get("User-Agent"),
        method=request.method, purpose=request_purpose(request),
    )  # fmt: skip
    if location is None:
        return web.Response(body=b"", headers=HONEYPOT_HEADERS)
    return web.Response(status=302, headers={"Location": location, **REDIRECT_HEADERS})
