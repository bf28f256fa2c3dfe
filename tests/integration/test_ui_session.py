"""Dashboard sessions over a real socket, on SQLite and PostgreSQL: sign-in with an API token, the
cookie's attributes, what the database keeps, CSRF, sign-out, expiry, revocation, and the headers and
stylesheet every /ui/ response carries. No response ever contains the API token."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http.cookies import Morsel, SimpleCookie
from typing import Any

import pytest
from multidict import CIMultiDictProxy

from politetenant.tracker.http.auth import Role, revoke_api_token
from politetenant.tracker.ui.session import cookie_secret, csrf_for
from tests.conftest import Tracker

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@dataclass
class Seen:
    status: int
    headers: CIMultiDictProxy[str]
    body: str


@dataclass
class Browser:
    """The tracker's test client with the cookie in the test's hands (sent only when given), and every
    response kept, so a test can check them all for the token at the end."""

    t: Tracker
    seen: list[Seen] = field(default_factory=list)

    async def send(self, method: str, path: str, *, cookie: str | None = None, **kw: Any) -> Seen:
        self.t.client.session.cookie_jar.clear()
        headers = dict(kw.pop("headers", {}))
        if cookie is not None:
            headers["Cookie"] = f"polite_session={cookie}"
        resp = await self.t.client.request(method, path, headers=headers, allow_redirects=False, **kw)
        seen = Seen(resp.status, resp.headers, await resp.text())
        self.seen.append(seen)
        return seen

    async def sign_in(self, role: Role, **kw: Any) -> tuple[Seen, Morsel[str]]:
        seen = await self.send("POST", "/ui/sign-in", data={"token": self.t.tokens[role]}, **kw)
        assert seen.status == 303, seen.body
        return seen, session_cookie(seen)

    async def csrf(self, cookie: str) -> str:
        """The csrf field of the session's sign-out form, as a user gets it: from a page with the nav
        (the 403 page of a stale form is one, and no other page is needed for that)."""
        page = await self.send("POST", "/ui/sign-out", cookie=cookie, data={"csrf": "stale"})
        assert page.status == 403
        match = re.search(r'name="csrf" value="([^"]+)"', page.body)
        assert match, page.body
        return match.group(1)


def session_cookie(seen: Seen) -> Morsel[str]:
    jar: SimpleCookie = SimpleCookie()
    for line in seen.headers.getall("Set-Cookie", []):
        jar.load(line)
    return jar["polite_session"]


async def session_rows(t: Tracker, role: Role) -> list[tuple[Any, ...]]:
    token_id = t.tokens[role].split("_")[1]
    return await t.state.store.fetch("SELECT * FROM ui_sessions WHERE token_id = $1", token_id)


@pytest.fixture
async def browser(tracker: Tracker) -> AsyncIterator[Browser]:
    b = Browser(tracker)
    yield b
    for seen in b.seen:  # whatever the test did: no token in a page or a redirect
        for token in tracker.tokens.values():
            assert token not in seen.body
            assert token not in seen.headers.get("Location", "")


@pytest.mark.parametrize(("role", "landing"), [(Role.ANALYST, "/ui/messages"), (Role.PRIVACY, "/ui/privacy")])
async def test_analyst_and_privacy_tokens_sign_in_with_a_strict_http_only_cookie(
    browser: Browser, tracker: Tracker, role: Role, landing: str
) -> None:
    seen, cookie = await browser.sign_in(role)
    assert seen.headers["Location"] == landing
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/ui/"
    assert cookie["max-age"] == "3600"
    assert not cookie["secure"]  # plain http, no proxy saying otherwise
    assert cookie_secret(cookie.value) is not None  # 32 random bytes
    assert (await browser.send("GET", "/ui/", cookie=cookie.value)).headers["Location"] == landing


async def test_the_database_keeps_only_the_sha256_of_the_cookie(browser: Browser, tracker: Tracker) -> None:
    _, cookie = await browser.sign_in(Role.ANALYST)
    rows = await session_rows(tracker, Role.ANALYST)
    assert len(rows) == 1
    id_hash, token_id, role, created_at, expires_at = rows[0]
    assert bytes(id_hash) == hashlib.sha256(cookie.value.encode()).digest()
    assert (token_id, role, expires_at - created_at) == (
        tracker.tokens[Role.ANALYST].split("_")[1],
        "analyst",
        3_600_000,
    )
    stored = repr(rows)
    assert cookie.value not in stored and tracker.tokens[Role.ANALYST] not in stored


async def test_the_cookie_is_secure_when_a_trusted_proxy_says_https_and_only_then(
    browser: Browser, tracker: Tracker
) -> None:
    _, cookie = await browser.sign_in(Role.ANALYST, headers={"X-Forwarded-Proto": "https"})
    assert cookie["secure"] is True
    tracker.state.trusted_proxies = ()  # the same header from a client nobody vouches for
    _, cookie = await browser.sign_in(Role.ANALYST, headers={"X-Forwarded-Proto": "https"})
    assert not cookie["secure"]


async def test_a_sender_token_is_refused_with_a_clear_message(browser: Browser, tracker: Tracker) -> None:
    seen = await browser.send("POST", "/ui/sign-in", data={"token": tracker.tokens[Role.SENDER]})
    assert seen.status == 403
    assert "Sender tokens cannot sign in: use an analyst or privacy token" in seen.body
    assert "Set-Cookie" not in seen.headers
    assert await session_rows(tracker, Role.SENDER) == []


async def test_an_unknown_or_revoked_token_gets_the_sign_in_page_again_with_401(
    browser: Browser, tracker: Tracker
) -> None:
    await revoke_api_token(tracker.state.store, tracker.tokens[Role.PRIVACY].split("_")[1])
    for token in ["ptk_0123456789ab_" + "A" * 43, "not a token", "", tracker.tokens[Role.PRIVACY]]:
        seen = await browser.send("POST", "/ui/sign-in", data={"token": token})
        assert seen.status == 401
        assert "That token is not valid" in seen.body and 'type="password"' in seen.body
        assert "Set-Cookie" not in seen.headers
        assert token not in seen.body or token == ""


@pytest.mark.parametrize("cookie", ["A" * 43, "forged", "A" * 42 + "B"])
async def test_a_forged_cookie_is_sent_to_sign_in(browser: Browser, cookie: str) -> None:
    seen = await browser.send("GET", "/ui/", cookie=cookie)
    assert (seen.status, seen.headers["Location"]) == (303, "/ui/sign-in")
    assert session_cookie(seen)["max-age"] == "0"  # and the dead cookie is dropped


async def test_an_expired_session_is_sent_to_sign_in_and_its_row_deleted(browser: Browser, tracker: Tracker) -> None:
    _, cookie = await browser.sign_in(Role.ANALYST)
    past = int(time.time() * 1000) - 1
    await tracker.state.store.execute("UPDATE ui_sessions SET expires_at = $1", past)
    seen = await browser.send("GET", "/ui/", cookie=cookie.value)
    assert (seen.status, seen.headers["Location"]) == (303, "/ui/sign-in")
    assert await session_rows(tracker, Role.ANALYST) == []


async def test_expired_sessions_of_others_are_swept_at_the_next_sign_in(browser: Browser, tracker: Tracker) -> None:
    await browser.sign_in(Role.PRIVACY)
    await tracker.state.store.execute("UPDATE ui_sessions SET expires_at = $1", int(time.time() * 1000) - 1)
    await browser.sign_in(Role.ANALYST)
    assert await session_rows(tracker, Role.PRIVACY) == []
    assert len(await session_rows(tracker, Role.ANALYST)) == 1


async def test_a_post_without_or_with_a_wrong_csrf_is_refused(browser: Browser, tracker: Tracker) -> None:
    _, cookie = await browser.sign_in(Role.PRIVACY)
    for data in [{}, {"csrf": ""}, {"csrf": "x" * 43}, {"csrf": "é"}]:
        seen = await browser.send("POST", "/ui/sign-out", cookie=cookie.value, data=data)
        assert seen.status == 403
        assert "did not come from your current session" in seen.body
    assert len(await session_rows(tracker, Role.PRIVACY)) == 1  # still signed in


async def test_sign_out_deletes_the_session_and_the_old_cookie_stops_working(
    browser: Browser, tracker: Tracker
) -> None:
    _, cookie = await browser.sign_in(Role.ANALYST)
    csrf = await browser.csrf(cookie.value)
    secret = cookie_secret(cookie.value)
    assert secret is not None and csrf == csrf_for(secret)  # derived, never stored
    seen = await browser.send("POST", "/ui/sign-out", cookie=cookie.value, data={"csrf": csrf})
    assert (seen.status, seen.headers["Location"]) == (303, "/ui/sign-in?signed_out=1")
    assert session_cookie(seen)["max-age"] == "0"
    assert await session_rows(tracker, Role.ANALYST) == []
    again = await browser.send("GET", "/ui/", cookie=cookie.value)
    assert (again.status, again.headers["Location"]) == (303, "/ui/sign-in")
    assert "You are signed out." in (await browser.send("GET", "/ui/sign-in?signed_out=1")).body


async def test_revoking_the_api_token_ends_its_sessions(browser: Browser, tracker: Tracker) -> None:
    _, cookie = await browser.sign_in(Role.ANALYST)
    assert (await browser.send("GET", "/ui/", cookie=cookie.value)).headers["Location"] == "/ui/messages"
    await revoke_api_token(tracker.state.store, tracker.tokens[Role.ANALYST].split("_")[1])
    seen = await browser.send("GET", "/ui/", cookie=cookie.value)
    assert (seen.status, seen.headers["Location"]) == (303, "/ui/sign-in")
    assert await session_rows(tracker, Role.ANALYST) == []


async def test_forms_from_another_site_too_large_or_not_urlencoded_are_refused_as_pages(browser: Browser) -> None:
    cross = await browser.send("POST", "/ui/sign-in", data={"token": "x"}, headers={"Sec-Fetch-Site": "cross-site"})
    large = await browser.send("POST", "/ui/sign-in", data={"token": "x" * 20_000})
    as_json = await browser.send("POST", "/ui/sign-in", json={"token": "x"})
    assert [cross.status, large.status, as_json.status] == [403, 413, 400]
    assert all(s.headers["Content-Type"] == "text/html; charset=utf-8" for s in (cross, large, as_json))


async def test_every_ui_response_carries_the_security_headers(browser: Browser, tracker: Tracker) -> None:
    _, cookie = await browser.sign_in(Role.ANALYST)
    await browser.send("GET", "/ui/sign-in")
    await browser.send("POST", "/ui/sign-in", data={"token": "nope"})
    await browser.send("POST", "/ui/sign-in", data={"token": tracker.tokens[Role.SENDER]})
    await browser.send("GET", "/ui/")
    await browser.send("GET", "/ui/", cookie=cookie.value)
    await browser.send("POST", "/ui/sign-out", cookie=cookie.value)
    missing = await browser.send("GET", "/ui/no/such/page")
    assert missing.status == 404 and "<h1>Not found</h1>" in missing.body  # HTML, never the API's JSON
    assert {s.status for s in browser.seen} == {200, 303, 401, 403, 404}
    for seen in browser.seen:
        assert seen.headers["Content-Security-Policy"] == CSP
        assert seen.headers["X-Content-Type-Options"] == "nosniff"
        assert seen.headers["Referrer-Policy"] == "no-referrer"
        assert seen.headers["Cache-Control"] == "no-store"
        assert seen.headers["Content-Type"] == "text/html; charset=utf-8"
        assert 'style="' not in seen.body and "<style" not in seen.body and "<script" not in seen.body


async def test_the_stylesheet_is_linked_at_a_versioned_url_and_cached_for_a_year(browser: Browser) -> None:
    sign_in = await browser.send("GET", "/ui/sign-in")
    match = re.search(r'<link rel="stylesheet" href="(/ui/static/app\.css\?v=([0-9a-f]{12}))">', sign_in.body)
    assert match, sign_in.body
    css = await browser.send("GET", match.group(1))
    assert css.status == 200
    assert css.headers["Content-Type"] == "text/css; charset=utf-8"
    assert css.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert css.headers["X-Content-Type-Options"] == "nosniff"
    assert hashlib.sha256(css.body.encode()).hexdigest()[:12] == match.group(2)
    assert ".hidden-figure" in css.body
