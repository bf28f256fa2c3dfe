"""What the lean path takes as its own, and what it leaves to aiohttp (None = aiohttp answers it)."""

from __future__ import annotations

import pytest

from politetenant.tracker.public import gif
from politetenant.tracker.server import lean_server
from politetenant.tracker.server.lean_server import (
    CLICK_ROUTE,
    OPEN_ROUTE,
    PublicRequest,
    before_date,
    parse_public_request,
    redirect_before_date,
    response_bytes,
)

TOKEN = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBk"
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"


def head(*lines: str, request_line: str = f"GET /o/{TOKEN}.gif HTTP/1.1") -> bytes:
    return "\r\n".join((request_line, *lines)).encode("utf-8", "surrogateescape")


def test_an_open_beacon_request_is_read_with_the_headers_judging_needs() -> None:
    request = parse_public_request(head("Host: t.example", f"User-Agent: {UA}", "X-Forwarded-For: 192.0.2.1, 10.0.0.1"))
    assert request == PublicRequest(TOKEN, None, UA, "192.0.2.1, 10.0.0.1", True)
    assert request.route == OPEN_ROUTE


def test_a_click_request_names_its_link_and_a_query_string_is_ignored() -> None:
    request = parse_public_request(head("Host: t", request_line=f"GET /c/{TOKEN}/3?utm_source=x HTTP/1.1"))
    assert request is not None
    assert (request.token, request.link, request.route) == (TOKEN, "3", CLICK_ROUTE)
    assert request.user_agent is None and request.forwarded_for is None


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "Close", False),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "keep-alive", True),
    ],
)
def test_keep_alive_follows_the_protocol_version_and_connection_header(
    version: str, connection: str | None, keep_alive: bool
) -> None:
    lines = ["Host: t"] + ([f"Connection: {connection}"] if connection else [])
    request = parse_public_request(head(*lines, request_line=f"GET /o/{TOKEN}.gif {version}"))
    assert request is not None and request.keep_alive is keep_alive


def test_header_names_are_case_insensitive_and_values_trimmed() -> None:
    request = parse_public_request(head("user-AGENT:   Outlook  ", "x-forwarded-for:\t192.0.2.1"))
    assert request is not None
    assert (request.user_agent, request.forwarded_for) == ("Outlook", "192.0.2.1")


def test_repeated_forwarded_for_lines_are_one_list_in_the_order_received() -> None:
    """A proxy such as HAProxy adds its own line after the client's; both are read, as aiohttp's
    handlers read them (``headers.getall``), so the two paths judge the same client."""
    request = parse_public_request(
        head("X-Forwarded-For: 203.0.113.30", "Host: t", "x-forwarded-for: 192.0.2.1, 10.0.0.1", "X-Forwarded-For: ")
    )
    assert request is not None and request.forwarded_for == "203.0.113.30, 192.0.2.1, 10.0.0.1, "


def test_an_empty_content_length_body_is_still_a_beacon() -> None:
    assert parse_public_request(head("Content-Length: 0")) is not None


@pytest.mark.parametrize(
    "raw",
    [
        head(request_line=f"HEAD /o/{TOKEN}.gif HTTP/1.1"),
        head(request_line=f"POST /o/{TOKEN}.gif HTTP/1.1"),
        head(request_line="GET /api/v1/messages HTTP/1.1"),
        head(request_line="GET /healthz HTTP/1.1"),
        head(request_line=f"GET /t/{TOKEN}.gif HTTP/1.1"),  # the read-time stream stays aiohttp's
        head(request_line=f"GET /o/{TOKEN}.gif HTTP/2.0"),
        head(request_line=f"GET http://t.example/o/{TOKEN}.gif HTTP/1.1"),
        head(request_line=f"GET  /o/{TOKEN}.gif HTTP/1.1"),
        head(request_line="GET /o/%41%41.gif HTTP/1.1"),  # percent-encoded: aiohttp decodes
        head(request_line="GET /o/a.b.gif HTTP/1.1"),
        head(request_line="GET /o/.gif HTTP/1.1"),
        head(request_line=f"GET /o/{TOKEN}.png HTTP/1.1"),
        head(request_line=f"GET /c/{TOKEN}/x HTTP/1.1"),
        head(request_line=f"GET /c/{TOKEN} HTTP/1.1"),
        head(request_line=f"GET /c/{TOKEN}/1/2 HTTP/1.1"),
        head(request_line=f"GET /c/{TOKEN}/1?a\x01b HTTP/1.1"),  # a control byte in the query
        head(request_line=f"GET /o/{TOKEN}.gif?a b HTTP/1.1"),
        head(request_line=f"GET /o/{TOKEN}.gif HTTP/1.1 "),
        head("Host: t", ""),  # an empty line inside the head
        head("Content-Length: 5"),
        head("Transfer-Encoding: chunked"),
        head("Expect: 100-continue"),
        head("Upgrade: websocket"),
        head(f"User-Agent: {UA}", "User-Agent: other"),  # which one counts? aiohttp decides
        head("User-Agent: a", " folded continuation"),  # obs-fold
        head("User Agent: a"),  # not a field name
        head("User-Agent : a"),
        head("NoColonHere"),
        head("User-Agent: a\nX-Forwarded-For: 192.0.2.1"),  # bare LF
        head("User-Agent: a\rb"),  # bare CR
        head("User-Agent: a\x00b"),  # control byte
        head("User-Agent: a\x7fb"),
    ],
)
def test_anything_else_is_left_to_aiohttp(raw: bytes) -> None:
    assert parse_public_request(raw) is None


def test_non_utf8_user_agent_bytes_survive_as_aiohttp_would_decode_them() -> None:
    request = parse_public_request(b"GET /o/" + TOKEN.encode() + b".gif HTTP/1.1\r\nUser-Agent: caf\xe9")
    assert request is not None and request.user_agent == "caf\udce9"


def test_prefetch_headers_are_read_so_the_lean_path_judges_like_aiohttp() -> None:
    """Sec-Purpose and Purpose lines, every one, in order: ``beacons.request_purpose`` reads them so."""
    request = parse_public_request(head("Sec-Purpose: prefetch;prerender", "purpose:  prefetch ", "Host: t"))
    assert request is not None and request.purpose == "prefetch;prerender, prefetch"
    plain = parse_public_request(head("Host: t"))
    assert plain is not None and plain.purpose is None


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize(
    ("status", "head", "body"),
    [
        (200, lean_server._GIF_HEAD, gif.PIXEL),
        (200, lean_server._EMPTY_HTML_HEAD, b""),
        (302, b"Location: https://example.com/a?b=c\r\n" + lean_server._REDIRECT_HEAD, b""),
        (404, lean_server._JSON_HEAD, b'{"error": "not_found"}'),
        (503, lean_server._JSON_HEAD, b'{"error": "ingest_full"}'),
    ],
)
def test_an_answer_built_ahead_of_its_date_is_the_answer_built_whole(
    status: int, head: bytes, body: bytes, keep_alive: bool
) -> None:
    """The lean path writes fixed answers from bytes made once (``before_date``), plus the date, the
    end of the head and the body: byte for byte what ``response_bytes`` builds from the parts."""
    date = b"Mon, 07 Dec 2026 10:00:00 GMT"
    end = lean_server._KEEP_ALIVE_END if keep_alive else lean_server._CLOSE_END
    ahead = before_date(status, head, len(body)) + date + end + body
    assert ahead == response_bytes(status, head, body, date, keep_alive=keep_alive)


def test_the_fixed_answers_and_a_links_redirect_are_the_ones_built_whole() -> None:
    date = b"Mon, 07 Dec 2026 10:00:00 GMT"
    end = lean_server._KEEP_ALIVE_END
    assert lean_server._GIF_BEFORE_DATE + date + end + gif.PIXEL == response_bytes(
        200, lean_server._GIF_HEAD, gif.PIXEL, date, keep_alive=True
    )
    assert lean_server._HONEYPOT_BEFORE_DATE + date + end == response_bytes(
        200, lean_server._EMPTY_HTML_HEAD, b"", date, keep_alive=True
    )
    location = "https://example.com/caf%C3%A9?x=1&y=%20"
    fresh = response_bytes(
        302, f"Location: {location}\r\n".encode() + lean_server._REDIRECT_HEAD, b"", date, keep_alive=True
    )
    assert redirect_before_date(location) + date + end == fresh
