"""Judging on arrival over real sockets, on SQLite and PostgreSQL: a HEAD or a prefetch gets the usual
answer and is stored as a machine's, on the lean path and on aiohttp's alike; proxies, Apple's
privacy proxy and libraries land with their reason and no place."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from politetenant.tracker.judging.verdicts import Reason
from politetenant.tracker.storage.rows import EventKind
from tests.conftest import Tracker
from tests.integration.test_beacons_and_report import hit, register
from tests.support import IP_DUBLIN, UA_CHROME, UA_IPHONE_MAIL

GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
APPLE_PROXY_IP = "17.58.100.1"  # inside Apple's 17.0.0.0/8


@pytest.fixture
async def router_port(tracker: Tracker) -> AsyncIterator[int]:
    """aiohttp's own site on the tracker's runner: the path every HEAD, and every request the lean
    path does not take, goes through."""
    runner = tracker.client.server.runner
    assert runner is not None
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site.port


async def stored(tracker: Tracker) -> list[tuple[object, ...]]:
    await tracker.flush()
    rows = await tracker.state.store.fetch(
        "SELECT kind, link_no, bot, country, region, city, browser FROM events ORDER BY event_id"
    )
    return [tuple(row) for row in rows]


async def test_head_and_prefetch_answer_as_usual_and_are_stored_as_machines(tracker: Tracker, router_port: int) -> None:
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    lean_port = tracker.client.server.port
    headers = {"User-Agent": UA_CHROME, "X-Forwarded-For": IP_DUBLIN}
    expected: list[tuple[object, ...]] = []
    async with aiohttp.ClientSession() as session:
        for n, port in enumerate((lean_port, router_port)):
            base = f"http://127.0.0.1:{port}"
            t = tokens[4 * n : 4 * n + 4]
            async with session.head(f"{base}/o/{t[0]}.gif", headers=headers) as resp:
                assert (resp.status, resp.headers["Content-Type"]) == (200, "image/gif")
                assert "no-store" in resp.headers["Cache-Control"]
            prefetch = {**headers, "Sec-Purpose": "prefetch;prerender"}
            async with session.get(f"{base}/o/{t[1]}.gif", headers=prefetch) as resp:
                assert (resp.status, len(await resp.read())) == (200, 43)
            purpose = {**headers, "Purpose": "prefetch"}
            async with session.get(f"{base}/c/{t[2]}/1", headers=purpose, allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == "https://intranet.example.com/policy?id=7&v=2"
            async with session.head(f"{base}/c/{t[3]}/1", headers=headers, allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == "https://intranet.example.com/policy?id=7&v=2"
            expected += [
                (EventKind.OPEN, None, Reason.HEAD, None, None, None, "Chrome"),
                (EventKind.OPEN, None, Reason.PREFETCH, None, None, None, "Chrome"),
                (EventKind.CLICK, 1, Reason.PREFETCH, None, None, None, "Chrome"),
                (EventKind.CLICK, 1, Reason.HEAD, None, None, None, "Chrome"),
            ]
    assert await stored(tracker) == expected


async def test_a_head_on_the_read_beacon_answers_at_once_and_is_stored_as_a_head(
    tracker: Tracker, router_port: int
) -> None:
    token = (await register(tracker, 12))["recipients"][0]["token"]
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{router_port}/t/{token}.gif"
        async with session.head(url, headers={"User-Agent": UA_CHROME}, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            assert (resp.status, resp.headers["Content-Type"]) == (200, "image/gif")
    assert [(kind, bot) for kind, _, bot, *_ in await stored(tracker)] == [(EventKind.READ, Reason.HEAD)]


async def test_proxies_apples_privacy_proxy_and_libraries_land_with_their_reason_and_no_place(
    tracker: Tracker,
) -> None:
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    for token, ua, ip in (
        (tokens[0], GMAIL_PROXY, IP_DUBLIN),
        (tokens[1], "Mozilla/5.0", APPLE_PROXY_IP),
        (tokens[2], "python-httpx/0.27.0", IP_DUBLIN),
        (tokens[3], "Mozilla/5.0", IP_DUBLIN),  # bare, but not from Apple: no real client
        (tokens[4], UA_IPHONE_MAIL, IP_DUBLIN),  # a person: the one row with a place
    ):
        assert (await hit(tracker, f"/o/{token}.gif", ua=ua, ip=ip)).status == 200
    rows = await stored(tracker)
    assert [(bot, country, region, city, browser) for _, _, bot, country, region, city, browser in rows] == [
        (Reason.PROXIED, None, None, None, "Gmail Image Proxy"),
        (Reason.PRIVACY_PROXY, None, None, None, "Apple Mail Privacy Protection"),
        (Reason.LIBRARY, None, None, None, "Other"),
        (Reason.LIBRARY, None, None, None, "Other"),
        (Reason.PERSON, "IE", rows[4][4], rows[4][5], "Apple Mail"),
    ]
    assert rows[4][4] is not None and rows[4][5] is not None  # region and city, sealed
