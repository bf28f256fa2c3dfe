"""The dashboard's page shell, session decisions and stylesheet, as pure functions: what every page
inherits (landmarks, one h1, nav by role, headers) and what sessions decide (cookie shape, CSRF, https)."""

from __future__ import annotations

import re

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from politetenant.tracker.http.auth import Role
from politetenant.tracker.http.errors import NotFound
from politetenant.tracker.storage.base import StorageUnavailable
from politetenant.tracker.ui.layout import (
    PAGE_HEADERS,
    SignInRequired,
    UiBadRequest,
    UiForbidden,
    e,
    empty_state,
    error_state,
    fewer_than,
    html_response,
    page,
    stylesheet,
    stylesheet_url,
    ui_handler,
)
from politetenant.tracker.ui.session import (
    UiSession,
    came_over_https,
    check_csrf,
    cookie_secret,
    csrf_for,
    landing_path,
    new_cookie,
    parse_form,
    session_verdict,
)

ANALYST = UiSession(token_id="0123456789ab", role=Role.ANALYST, csrf='c"<>', expires_at=1)
PRIVACY = UiSession(token_id="0123456789ab", role=Role.PRIVACY, csrf="csrf-token", expires_at=1)


def test_e_escapes_text_and_quoted_attributes() -> None:
    assert e("<a href=\"x\">Tom & 'Jerry'</a>") == "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#x27;Jerry&#x27;&lt;/a&gt;"
    assert e(42) == "42"


def test_a_hidden_figure_has_one_wording() -> None:
    assert fewer_than(10) == '<span class="hidden-figure">fewer than 10</span>'


def test_empty_and_error_states_escape_their_text() -> None:
    assert empty_state("No <messages>", '<a href="/x">Do</a>') == (
        '<div class="empty-state"><p>No &lt;messages&gt;</p><a href="/x">Do</a></div>'
    )
    assert 'role="alert"' in error_state("x") and "&lt;b&gt;" in error_state("<b>")


@pytest.mark.parametrize("body", ["<p>text</p>", "<h1>Own heading</h1><p>text</p>"])
def test_a_page_has_landmarks_a_skip_link_and_exactly_one_h1(body: str) -> None:
    html = page("Messages & more", body, session=ANALYST, active="messages")
    assert html.startswith("<!doctype html>") and '<html lang="en">' in html
    assert html.count("<h1") == 1
    assert "<title>Messages &amp; more · PoliteTenant</title>" in html
    assert re.search(r'<a class="skip-link" href="#main">.*<header .*<nav aria-label="Main">.*<main id="main"', html)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html


def test_the_nav_shows_the_pages_of_the_role_and_a_sign_out_form_with_the_csrf() -> None:
    analyst = page("T", "", session=ANALYST, active="messages")
    assert '<a href="/ui/messages" aria-current="page">Messages</a>' in analyst and "/ui/privacy" not in analyst
    assert '<form class="sign-out" method="post" action="/ui/sign-out">' in analyst
    assert '<input type="hidden" name="csrf" value="c&quot;&lt;&gt;">' in analyst  # escaped
    privacy = page("T", "", session=PRIVACY, active="audit")
    assert '<a href="/ui/privacy">Privacy</a>' in privacy
    assert '<a href="/ui/privacy/audit" aria-current="page">Audit log</a>' in privacy
    assert "/ui/messages" not in privacy
    signed_out = page("Sign in", "", session=None)
    assert "<nav" not in signed_out and "sign-out" not in signed_out


def test_a_page_has_no_inline_style_script_or_external_url() -> None:
    html = page("T", "<p>x</p>", session=PRIVACY)
    assert "style=" not in html and "<style" not in html and "<script" not in html
    assert not re.search(r'(href|src)="(https?:)?//', html)
    assert f'<link rel="stylesheet" href="{stylesheet_url()}">' in html
    assert re.fullmatch(r"/ui/static/app\.css\?v=[0-9a-f]{12}", stylesheet_url())


def test_html_responses_carry_the_page_headers() -> None:
    response = html_response("<p>x</p>", 404)
    assert response.status == 404
    assert {k: response.headers[k] for k in PAGE_HEADERS} == PAGE_HEADERS
    assert "frame-ancestors 'none'" in PAGE_HEADERS["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("scheme", "trusted", "proto", "secure"),
    [
        ("https", False, None, True),
        ("http", True, "https", True),
        ("http", True, "http, https", True),  # the nearest proxy's word counts
        ("http", True, "https, http", False),
        ("http", False, "https", False),  # a client's own header: ignored
        ("http", True, None, False),
    ],
)
def test_the_cookie_is_secure_when_the_browser_used_https(
    scheme: str, trusted: bool, proto: str | None, secure: bool
) -> None:
    assert came_over_https(scheme, trusted, proto) is secure


def test_a_cookie_has_one_spelling_of_32_bytes() -> None:
    cookie = new_cookie()
    secret = cookie_secret(cookie)
    assert secret is not None and len(secret) == 32 and len(cookie) == 43
    assert new_cookie() != cookie
    for bad in ["", cookie + "=", cookie[:-1], cookie[:-1] + "+", "A" * 42 + "B", " " + cookie[1:]]:
        assert cookie_secret(bad) is None


def test_the_csrf_token_is_derived_from_the_cookie_and_differs_between_sessions() -> None:
    one, two = bytes(32), bytes([1]) * 32
    assert csrf_for(one) == csrf_for(one) != csrf_for(two)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", csrf_for(one))
    check_csrf(PRIVACY, {"csrf": "csrf-token"})
    for form in [{}, {"csrf": ""}, {"csrf": "csrf-tokeN"}, {"csrf": "ünïcode"}]:
        with pytest.raises(UiForbidden):
            check_csrf(PRIVACY, form)


@pytest.mark.parametrize(
    ("row", "verdict"),
    [
        (None, "missing"),
        (("id", "analyst", 2_000, "id"), "valid"),
        (("id", "analyst", 1_000, "id"), "expired"),  # expires_at is the first instant it no longer works
        (("id", "analyst", 2_000, None), "revoked"),
        (("id", "analyst", 500, None), "expired"),
    ],
)
def test_a_session_row_is_judged_by_expiry_then_by_its_api_token(row: tuple[object, ...] | None, verdict: str) -> None:
    assert session_verdict(row, 1_000) == verdict


def test_each_role_lands_on_its_own_page() -> None:
    assert landing_path(Role.ANALYST) == "/ui/messages"
    assert landing_path(Role.PRIVACY) == "/ui/privacy"


def test_a_form_keeps_the_first_value_and_refuses_garbage() -> None:
    assert parse_form(b"a=1&b=&a=2&email=x%40example.com") == {"a": "1", "b": "", "email": "x@example.com"}
    with pytest.raises(UiBadRequest):
        parse_form(b"token=\xff")
    with pytest.raises(UiBadRequest):
        parse_form(b"&".join(b"f%d=1" % i for i in range(60)))


async def _raise(exc: Exception) -> web.StreamResponse:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise exc

    request = make_mocked_request("GET", "/ui/x", headers={"Cookie": "polite_session=abc"})
    return await ui_handler(handler)(request)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (SignInRequired("expired"), 303),
        (UiForbidden("nope", session=ANALYST), 403),
        (NotFound("no such message"), 404),
        (StorageUnavailable("down"), 503),
        (web.HTTPRequestEntityTooLarge(max_size=1, actual_size=2), 413),
        (RuntimeError("a bug"), 500),
    ],
)
async def test_failures_become_html_pages_with_the_headers(exc: Exception, status: int) -> None:
    response = await _raise(exc)
    assert response.status == status
    assert {k: response.headers[k] for k in PAGE_HEADERS} == PAGE_HEADERS
    assert isinstance(response, web.Response) and isinstance(response.body, bytes)
    assert b"<!doctype html>" in response.body and b'"error"' not in response.body
    if status == 303:
        assert response.headers["Location"] == "/ui/sign-in"
        assert response.cookies["polite_session"]["max-age"] == "0"  # the dead cookie is expired
    if status == 403:
        assert b'name="csrf"' in response.body  # the page keeps the signed-in nav


def test_wrapping_a_handler_twice_is_harmless() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response()

    once = ui_handler(handler)
    assert ui_handler(once) is once


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_stylesheet_is_small_self_contained_responsive_and_readable() -> None:
    css = stylesheet().decode("utf-8")
    assert len(stylesheet()) < 10_240
    assert "url(" not in css and "@import" not in css and "http" not in css
    assert ":focus-visible" in css and "outline: none" not in css.split("main:focus")[0]
    assert re.search(r"@media \(max-width: 40rem\)", css)  # 640 px and below, phones down to 360 px
    assert re.search(r"\.table-wrap \{ overflow-x: auto", css)
    for selector in [".tiles", ".tile-value", ".hidden-figure", ".chart text", ".chart-series-1", ".heat-4", "label"]:
        assert selector in css
    colours = dict(re.findall(r"--([a-z0-9-]+): (#[0-9a-f]{6})", css))
    for name in ["ink", "muted", "accent", "bad", "ok"]:  # text colours on white: WCAG AA for body text
        assert contrast(colours[name], colours["bg"]) >= 4.5, name
    assert contrast(colours["muted"], colours["panel"]) >= 4.5
    assert contrast(colours["accent-ink"], colours["accent"]) >= 4.5
    assert contrast(colours["focus"], colours["bg"]) >= 3  # non-text: the focus ring
