"""The public, token-only routes: open beacon, read-time beacon, click redirect.

Each handler reads like its list of steps: verify the token, judge the request, hand the event to
the ingest buffer, answer. The IP address and user agent live only in local variables of ``_judge``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import quote

from aiohttp import web

from politetenant.tracker import gif
from politetenant.tracker.client_ip import client_ip
from politetenant.tracker.errors import NotFound, ServiceUnavailable
from politetenant.tracker.judge import Verdict
from politetenant.tracker.openapi import Operation
from politetenant.tracker.state import STATE, TrackerState
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

_GIF_HEADERS = {"Content-Type": "image/gif", "Cache-Control": "no-store, max-age=0", "Pragma": "no-cache"}
_SAFE_URL_CHARS = ":/?#[]@!$&'()*+,;=%~"
_CLICK_CACHE_MAX = 100_000


def _judge(state: TrackerState, request: web.Request, *, honeypot: bool = False) -> Verdict:
    ip = client_ip(request.remote, request.headers.get("X-Forwarded-For"), state.trusted_proxies)
    return state.judge.judge(ip, request.headers.get("User-Agent"), honeypot=honeypot)


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
    verified = state.tokens.verify(token)
    if verified is None:
        state.metrics.rejected_tokens.inc()
        raise NotFound("unknown tracking token")
    return verified.record_id


def _accept(state: TrackerState, event: Event) -> None:
    if not state.ingest.submit(event):
        raise ServiceUnavailable("the tracker cannot store events right now", code="ingest_full")


async def open_beacon(request: web.Request) -> web.Response:
    state = request.app[STATE]
    record_id = _verify(state, request.match_info["token"])
    _accept(state, _event(state, record_id, EventKind.OPEN, _judge(state, request)))
    return web.Response(body=gif.PIXEL, headers=_GIF_HEADERS)


async def read_beacon(request: web.Request) -> web.StreamResponse:
    """Trickle GIF frames until the client hangs up (or the limit): the elapsed time is the read time."""
    state = request.app[STATE]
    record_id = _verify(state, request.match_info["token"])
    settings = state.settings
    if state.read_streams >= settings.read_streams_per_worker or not state.ingest.accepting:
        # Saturated: answer at once and record nothing, so a flood of opens cannot exhaust memory.
        return web.Response(body=gif.PIXEL, headers=_GIF_HEADERS)
    verdict = _judge(state, request)
    started_wall, started = time.time(), time.monotonic()
    response = web.StreamResponse(headers=_GIF_HEADERS)
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


async def _click_target(state: TrackerState, record_id: bytes, link_no: int) -> ClickTarget | None:
    key = (record_id, link_no)
    target = state.click_cache.get(key)
    if target is None:
        target = await state.store.click_target(record_id, link_no)
        if target is not None:
            if len(state.click_cache) >= _CLICK_CACHE_MAX:
                state.click_cache.clear()
            state.click_cache[key] = target
    return target


async def click(request: web.Request) -> web.Response:
    """302 to the URL stored for this message's link; the URL itself never travels in a request."""
    state = request.app[STATE]
    record_id = _verify(state, request.match_info["token"])
    link = request.match_info["link"]
    if not link.isdigit() or len(link) > 6:
        raise NotFound("unknown link")
    target = await _click_target(state, record_id, int(link))
    if target is None:
        raise NotFound("unknown link")
    if target.url is None:  # the hidden honeypot link: only machines follow it
        _accept(state, _event(state, record_id, EventKind.CLICK, _judge(state, request, honeypot=True), link_no=0))
        return web.Response(text="", content_type="text/html", headers={"Cache-Control": "no-store"})
    url = state.sealer.open_text("link.url", target.url)
    if not url.lower().startswith(("http://", "https://")):
        raise NotFound("unknown link")
    _accept(state, _event(state, record_id, EventKind.CLICK, _judge(state, request), link_no=int(link)))
    return web.Response(
        status=302,
        headers={
            "Location": quote(url, safe=_SAFE_URL_CHARS),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )
