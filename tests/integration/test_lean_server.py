"""The lean path over real sockets: same answers and events as aiohttp's router, keep-alive,
pipelining, and the hand-over of a connection to aiohttp mid-stream (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from politetenant.tracker.http.auth import Role
from politetenant.tracker.judging.verdicts import Reason
from politetenant.tracker.server.lean_server import _REDIRECT_HEAD, MAX_PIPELINED_BYTES, LeanSite, response_bytes
from tests.conftest import Tracker
from tests.integration.test_beacons_and_report import register
from tests.support import IP_DUBLIN, UA_CHROME, UA_IPHONE_MAIL


class Http:
    """A raw HTTP/1.1 client on one connection: what is sent is exactly what the test wrote."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Http:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, *requests: bytes) -> None:
        self.writer.write(b"".join(requests))

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        status_line = await asyncio.wait_for(self.reader.readline(), 10)
        assert status_line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), status_line
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def closed_by_server(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 10) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def get(path: str, *headers: str, version: str = "HTTP/1.1") -> bytes:
    lines = [f"GET {path} {version}", "Host: t.acme.example", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def beacon(path: str, ua: str = UA_IPHONE_MAIL, ip: str = IP_DUBLIN, *extra: str) -> bytes:
    return get(path, f"User-Agent: {ua}", f"X-Forwarded-For: {ip}", *extra)


@pytest.fixture
async def router_port(tracker: Tracker) -> AsyncIterator[int]:
    """aiohttp's own site on the same runner and state: the path the lean one must answer like."""
    runner = tracker.client.server.runner
    assert runner is not None
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site.port


def lean_port(tracker: Tracker) -> int:
    port = tracker.client.server.port
    assert port is not None
    return port


async def events(tracker: Tracker) -> list[tuple[object, ...]]:
    await tracker.flush()
    rows = await tracker.state.store.fetch(
        "SELECT kind, link_no, country, os, device, browser, bot FROM events ORDER BY kind, link_no, bot, country, os"
    )
    return [tuple(row) for row in rows]


async def one(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    http = await Http.connect(port)
    try:
        http.send(request)
        return await http.response()
    finally:
        await http.close()


async def test_lean_and_router_answer_every_public_request_alike_and_store_the_same_events(
    tracker: Tracker, router_port: int
) -> None:
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    forged = tokens[0][:-2] + ("AA" if not tokens[0].endswith("AA") else "BA")
    requests = [
        beacon(f"/o/{tokens[0]}.gif"),
        beacon(f"/o/{tokens[1]}.gif?utm=1", UA_CHROME, "203.0.113.200"),  # scanner network
        beacon(f"/o/{forged}.gif"),
        beacon(f"/c/{tokens[2]}/1", UA_CHROME),  # first click on a link: looked up in the database
        beacon(f"/c/{tokens[2]}/1", UA_CHROME),  # then from the worker's cache
        beacon(f"/c/{tokens[3]}/0"),  # honeypot
        beacon(f"/c/{tokens[3]}/99"),
        beacon(f"/c/{tokens[3]}/1234567"),
        beacon(f"/c/{forged}/1"),
        get(f"/o/{tokens[4]}.gif"),  # no user agent: a machine
    ]
    answers = {}
    for name, port in (("lean", lean_port(tracker)), ("router", router_port)):
        tracker.state.click_cache.clear()  # the first click is a look-up on either path, the second a hit
        answers[name] = [await one(port, request) for request in requests]
    for request, lean, router in zip(requests, answers["lean"], answers["router"], strict=True):
        assert lean[0] == router[0], request
        assert lean[2] == router[2], request
        for header in ("content-type", "cache-control", "pragma", "location", "referrer-policy", "content-length"):
            assert lean[1].get(header) == router[1].get(header), (request, header)
        assert "date" in lean[1]
    statuses = [status for status, _, _ in answers["lean"]]
    assert statuses == [200, 200, 404, 302, 302, 200, 404, 404, 404, 200]
    assert json.loads(answers["lean"][2][2]) == {"error": "not_found", "message": "unknown tracking token"}
    stored = await events(tracker)
    assert len(stored) == 2 * 6  # every accepted hit twice (once per path), nothing for the 404s
    assert stored[0::2] == stored[1::2]  # and each pair is the same judged event
    # judged from X-Forwarded-For via trusted loopback: the scanner's address is the forwarded one
    assert (Reason.SCANNER_NETWORK,) in {(row[6],) for row in stored}


async def test_one_keep_alive_connection_serves_pipelined_beacons_in_order(tracker: Tracker) -> None:
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    http = await Http.connect(lean_port(tracker))
    http.send(*(beacon(f"/o/{token}.gif") for token in tokens), beacon(f"/c/{tokens[0]}/2"), beacon("/o/bad.gif"))
    answers = [await http.response() for _ in range(len(tokens) + 2)]
    assert [status for status, _, _ in answers] == [200] * 12 + [302, 404]
    assert answers[12][1]["location"] == "https://hr.example.com/faq"
    http.send(beacon(f"/o/{tokens[0]}.gif"))  # the connection is still open
    assert (await http.response())[0] == 200
    await http.close()
    assert len(await events(tracker)) == 14


async def test_a_click_waiting_on_the_database_keeps_the_pipelined_order(tracker: Tracker) -> None:
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    tracker.state.click_cache.clear()  # as on a worker that did not register the message
    http = await Http.connect(lean_port(tracker))
    http.send(beacon(f"/c/{tokens[5]}/1"), beacon(f"/o/{tokens[5]}.gif"), beacon(f"/c/{tokens[6]}/99"))
    assert [(await http.response())[0] for _ in range(3)] == [302, 200, 404]
    await http.close()


async def test_other_requests_on_the_same_connection_are_handed_to_aiohttp(tracker: Tracker) -> None:
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    http = await Http.connect(lean_port(tracker))
    http.send(
        beacon(f"/o/{tokens[0]}.gif"),
        get("/api/v1/messages", f"Authorization: Bearer {tracker.tokens[Role.ANALYST]}"),  # aiohttp from here on
        beacon(f"/o/{tokens[1]}.gif"),
        get("/healthz"),
    )
    status, headers, body = await http.response()
    assert (status, headers["content-type"], len(body)) == (200, "image/gif", 43)
    status, headers, body = await http.response()
    assert status == 200 and "messages" in json.loads(body)
    assert (await http.response())[0] == 200
    assert (await http.response())[0] == 200
    await http.close()
    assert len(await events(tracker)) == 2


async def test_connection_close_and_http_1_0_are_honoured(tracker: Tracker) -> None:
    token = (await register(tracker, 12))["recipients"][0]["token"]
    http = await Http.connect(lean_port(tracker))
    http.send(beacon(f"/o/{token}.gif", UA_IPHONE_MAIL, IP_DUBLIN, "Connection: close"))
    status, headers, _ = await http.response()
    assert status == 200 and headers["connection"] == "close"
    assert await http.closed_by_server()
    await http.close()
    http = await Http.connect(lean_port(tracker))
    http.send(get(f"/o/{token}.gif", version="HTTP/1.0"))
    assert (await http.response())[0] == 200
    assert await http.closed_by_server()
    await http.close()


async def test_malformed_and_oversized_requests_get_aiohttps_refusal(
    tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    token = (await register(tracker, 12))["recipients"][0]["token"]
    caplog.set_level(logging.DEBUG)
    status, _, _ = await one(lean_port(tracker), beacon(f"/o/{token}.gif", "MarkerAgent/1.0 " + "x" * 20_000))
    assert status in (400, 431)
    # aiohttp's own log line would name the client's address and quote the user agent: redacted.
    assert "refused a malformed request (LineTooLong)" in caplog.text
    assert "127.0.0.1" not in caplog.text and "MarkerAgent" not in caplog.text
    nul_in_header = b"GET /o/" + token.encode() + b".gif HTTP/1.1\r\nUser-Agent: a\x00b\r\n\r\n"
    status, _, _ = await one(lean_port(tracker), nul_in_header)
    assert status == 400
    status, _, _ = await one(lean_port(tracker), get(f"/o/{token}.gif", "Content-Length: 3")[:-2] + b"\r\nabc")
    assert status == 200  # aiohttp took it (a body on a GET) and served the beacon
    assert len(await events(tracker)) == 1


async def test_lean_answers_are_counted_in_the_request_metrics(tracker: Tracker) -> None:
    token = (await register(tracker, 12))["recipients"][0]["token"]
    for _ in range(3):
        await one(lean_port(tracker), beacon(f"/o/{token}.gif"))
    await one(lean_port(tracker), beacon("/o/forged.gif"))
    resp = await tracker.client.get("/metrics")
    text = await resp.text()
    assert 'polite_requests_total{outcome="2xx",route="/o/{token}.gif"} 3.0' in text
    assert 'polite_requests_total{outcome="4xx",route="/o/{token}.gif"} 1.0' in text
    assert "polite_rejected_tokens_total 1.0" in text


@pytest.mark.settings(buffer_max_events=2, flush_interval_seconds=60)
async def test_a_full_buffer_is_a_503_never_a_silent_drop(tracker: Tracker) -> None:
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    http = await Http.connect(lean_port(tracker))
    http.send(*(beacon(f"/o/{token}.gif") for token in tokens[:3]))
    answers = [await http.response() for _ in range(3)]
    await http.close()
    assert [status for status, _, _ in answers] == [200, 200, 503]
    assert json.loads(answers[2][2])["error"] == "ingest_full"
    assert len(await events(tracker)) == 2


async def test_stopping_the_site_closes_idle_keep_alive_connections(tracker: Tracker) -> None:
    token = (await register(tracker, 12))["recipients"][0]["token"]
    http = await Http.connect(lean_port(tracker))
    http.send(beacon(f"/o/{token}.gif"))
    assert (await http.response())[0] == 200
    runner = tracker.client.server.runner
    assert runner is not None
    for site in list(runner.sites):
        await site.stop()
    assert await http.closed_by_server()
    await http.close()
    assert len(await events(tracker)) == 1


def held_click_lookups(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Clicks' database look-ups wait until the returned event is set; the cache is emptied first,
    as on a worker that did not register the message."""
    tracker.state.click_cache.clear()
    store = tracker.state.store
    lookup, release = store.click_targets, asyncio.Event()

    async def slow_lookup(keys: list[tuple[bytes, int]]) -> object:
        await release.wait()
        return await lookup(keys)

    monkeypatch.setattr(store, "click_targets", slow_lookup)
    return release


async def test_requests_piled_behind_a_slow_click_lookup_pause_reading_and_are_all_answered(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    release = held_click_lookups(tracker, monkeypatch)
    piled = [beacon(f"/o/{tokens[n % 12]}.gif") for n in range(700)]
    assert sum(map(len, piled)) > 2 * 64 * 1024
    http = await Http.connect(lean_port(tracker))
    http.send(beacon(f"/c/{tokens[0]}/1"), *piled)
    await asyncio.sleep(0.2)  # the server reads what it may, then stops reading
    runner = tracker.client.server.runner
    assert runner is not None
    (site,) = runner.sites
    assert isinstance(site, LeanSite) and site._lean is not None
    (connection,) = site._lean.connections
    assert connection._reading_paused  # memory per connection stays bounded while it waits
    assert MAX_PIPELINED_BYTES < len(connection._buffer) < MAX_PIPELINED_BYTES + 512 * 1024
    release.set()
    statuses = [(await http.response())[0] for _ in range(701)]
    await http.close()
    assert statuses == [302] + [200] * 700
    assert len(await events(tracker)) == 701


async def test_every_forwarded_for_line_is_read_so_a_forged_first_line_does_not_win(
    tracker: Tracker, router_port: int
) -> None:
    """HAProxy appends its own X-Forwarded-For line after the one a client sent. The lines are one
    list (RFC 9110 5.3), walked from the right past trusted proxies: the client's own line names
    an address of its choosing and must not be believed, on either path."""
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    forged, real = "203.0.113.30", IP_DUBLIN  # New York, claimed by the client; Dublin, seen by the proxy
    answers = []
    for n, port in enumerate((lean_port(tracker), router_port)):
        request = beacon(f"/o/{tokens[n]}.gif", UA_IPHONE_MAIL, forged, f"X-Forwarded-For: {real}")
        assert request.count(b"X-Forwarded-For") == 2
        answers.append(await one(port, request))
    assert [status for status, _, _ in answers] == [200, 200]
    assert answers[0][1]["content-type"] == answers[1][1]["content-type"] == "image/gif"
    countries = [row[2] for row in await events(tracker)]
    assert countries == ["IE", "IE"]


async def test_a_links_remembered_redirect_is_byte_for_byte_the_first_one(tracker: Tracker) -> None:
    """A link's 302 is built at its first click in the worker and kept (``LinkTarget.redirect``);
    every later click writes the kept bytes: the same as building the answer afresh, date apart."""
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    tracker.state.click_cache.clear()
    http = await Http.connect(lean_port(tracker))
    raw = []
    for token in (tokens[0], tokens[1], tokens[0]):  # looked up, then remembered (another record, same link)
        http.send(beacon(f"/c/{token}/1"))
        raw.append(await asyncio.wait_for(http.reader.readuntil(b"\r\n\r\n"), 10))
    await http.close()
    location = b"https://intranet.example.com/policy?id=7&v=2"
    for answer in raw:
        date = answer.split(b"\r\nDate: ", 1)[1].split(b"\r\n", 1)[0]
        fresh = response_bytes(302, b"Location: " + location + b"\r\n" + _REDIRECT_HEAD, b"", date, keep_alive=True)
        assert answer == fresh


async def test_stopping_the_site_answers_a_click_still_waiting_on_its_look_up(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A click waiting on the database when the worker stops is owed its answer (within the grace):
    the site waits on the look-up, whose answer is written before the connection is closed."""
    token = (await register(tracker, 12))["recipients"][0]["token"]
    release = held_click_lookups(tracker, monkeypatch)
    http = await Http.connect(lean_port(tracker))
    http.send(beacon(f"/c/{token}/1"))
    await asyncio.sleep(0.1)
    runner = tracker.client.server.runner
    assert runner is not None
    (site,) = runner.sites
    stopping = asyncio.create_task(site.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done()  # waiting for the click's answer
    release.set()
    status, headers, _ = await http.response()
    assert (status, headers["location"]) == (302, "https://intranet.example.com/policy?id=7&v=2")
    await stopping
    assert await http.closed_by_server()
    await http.close()
    assert len(await events(tracker)) == 1
