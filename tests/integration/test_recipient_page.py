"""The recipient's page against a live tracker (SQLite and PostgreSQL): what it shows in each mode, that
only the form's POST objects, and that the form can neither be forged nor used to learn who received what."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp import ClientResponse

from politetenant.tracker.http.auth import Role
from politetenant.tracker.messages.html_rewrite import TOKEN_PLACEHOLDER, rewrite_html
from politetenant.tracker.messages.notice import notice_for
from politetenant.tracker.privacy.recipient_page import CSRF_BUCKET_SECONDS, csrf_keys, csrf_valid, issue_csrf
from tests.conftest import Tracker
from tests.support import IP_DUBLIN, UA_CHROME, UA_IPHONE_MAIL, message_body

PERSON = "person000000@example.com"
OTHER = "person000001@example.com"
STRANGER = "never.sent@example.com"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Page(HTMLParser):
    """What a reader (and a screen reader) gets of a page: its elements, headings, figures, form."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.figures: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        self.style = ""
        self._stack: list[str] = []
        self._dt = ""
        self._label_for: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        self._stack.append(tag)
        if tag == "label":
            self._label_for = values.get("for")
        if tag == "dt":
            self._dt = ""

    def handle_endtag(self, tag: str) -> None:
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()
        if tag == "label":
            self._label_for = None

    def handle_data(self, data: str) -> None:
        where = self._stack[-1] if self._stack else ""
        if where == "style":
            self.style += data
            return
        self.text.append(data)
        if where == "dt":
            self._dt += data
        elif where == "dd" and self._dt:
            self.figures[self._dt] = self.figures.get(self._dt, "") + data
        elif self._label_for is not None:
            self.labels[self._label_for] = data

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())

    @property
    def csrf(self) -> str:
        return next(a["value"] for a in self.all("input") if a.get("name") == "csrf")


# -- helpers --------------------------------------------------------------------------------------------


async def register(t: Tracker, mode: str, recipients: int = 12, **kw: Any) -> dict[str, Any]:
    resp = await t.client.post(
        "/api/v1/messages", json=message_body(recipients, mode=mode, **kw), headers=t.auth(Role.SENDER)
    )
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


def token_of(out: dict[str, Any], email: str) -> str | None:
    token: str | None = next(r["token"] for r in out["recipients"] if r["email"] == email)
    return token


async def interact(t: Tracker, token: str, *, opens: int, clicks: int) -> None:
    headers = {"User-Agent": UA_IPHONE_MAIL, "X-Forwarded-For": IP_DUBLIN}
    for _ in range(opens):
        assert (await t.client.get(f"/o/{token}.gif", headers=headers)).status == 200
    for _ in range(clicks):
        resp = await t.client.get(f"/c/{token}/1", headers={**headers, "User-Agent": UA_CHROME}, allow_redirects=False)
        assert resp.status == 302


async def get_page(t: Tracker, token: str, status: int = 200) -> tuple[ClientResponse, Page]:
    resp = await t.client.get(f"/p/{token}")
    assert resp.status == status
    return resp, Page(await resp.text())


async def post_form(t: Tracker, token: str, body: str, status: int) -> tuple[ClientResponse, Page]:
    resp = await t.client.post(f"/p/{token}/object", data=body.encode(), headers=FORM)
    assert resp.status == status, await resp.text()
    return resp, Page(await resp.text())


async def still_tracked(t: Tracker, email: str) -> bool:
    """Whether the next message to ``email`` would track them (a token, not null)."""
    return token_of(await register(t, "anonymous"), email) is not None


async def objections_audited(t: Tracker) -> list[dict[str, Any]]:
    resp = await t.client.get("/api/v1/audit?action=subject.object", headers=t.auth(Role.PRIVACY))
    assert resp.status == 200
    return list((await resp.json())["entries"])


def check_plain_accessible_page(resp: ClientResponse, page: Page) -> None:
    """Headers and markup every answer of /p/ has: strict CSP, no cache, no referrer, no other origin."""
    headers = resp.headers
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in headers
    csp = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'" and csp["base-uri"] == "'none'"
    assert csp["form-action"] == "'self'"
    style_hash = base64.b64encode(hashlib.sha256(page.style.encode()).digest()).decode()
    assert csp["style-src"] == f"'sha256-{style_hash}'"  # the one inline style, and nothing else
    assert page.all("html") == [{"lang": "en"}]
    assert len(page.all("h1")) == 1
    assert not page.all("script") and not page.all("img") and not page.all("iframe") and not page.all("link")
    assert not re.search(r"https?://", str(page.tags) + page.words)  # nothing from, or pointing to, elsewhere


# -- what the page shows ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["individual", "anonymous"])
async def test_page_shows_this_copys_own_figures_and_nobody_elses(tracker: Tracker, mode: str) -> None:
    out = await register(tracker, mode)
    mine, theirs = token_of(out, PERSON), token_of(out, OTHER)
    assert mine and theirs
    await interact(tracker, mine, opens=1, clicks=1)
    await interact(tracker, theirs, opens=3, clicks=2)
    await tracker.flush()

    resp, page = await get_page(tracker, mine)
    check_plain_accessible_page(resp, page)
    assert page.figures["Opens"] == "1" and page.figures["Link clicks"] == "1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", page.figures["First opened"])
    assert "mobile" in page.figures["Devices (type, operating system, program)"]
    assert f"sent in {mode} mode" in page.words
    if mode == "individual":
        assert "recorded against your e-mail address" in page.words
        assert not page.all("input") or {a.get("name") for a in page.all("input")} == {"csrf"}
    else:
        assert "recorded without your address" in page.words
        assert page.labels["email"] == "Your e-mail address"  # the address field is labelled
    assert PERSON not in page.words and "@" not in page.words  # not even the holder's own address

    _, other_page = await get_page(tracker, theirs)
    assert other_page.figures["Opens"] == "3" and other_page.figures["Link clicks"] == "2"


async def test_aggregate_page_says_nothing_individual_is_recorded_and_shows_no_figures(tracker: Tracker) -> None:
    out = await register(tracker, "aggregate")
    token = token_of(out, PERSON)
    assert token
    await interact(tracker, token, opens=4, clicks=2)
    await tracker.flush()
    resp, page = await get_page(tracker, token)
    check_plain_accessible_page(resp, page)
    assert "nothing individual is recorded, only one shared counter for all recipients" in page.words
    assert page.figures == {} and "Opens" not in page.words
    assert page.labels["email"] == "Your e-mail address"


@pytest.mark.settings(segment_attributes=("department",))
async def test_page_says_what_is_never_recorded_and_how_long_data_is_kept(tracker: Tracker) -> None:
    token = token_of(await register(tracker, "anonymous"), PERSON)
    _, page = await get_page(tracker, str(token))
    assert "Kept with it for statistics, when your organisation holds them: department." in page.words
    assert "IP address" in page.words and "user-agent string are never stored" in page.words
    settings = tracker.state.settings
    assert f"deleted after {settings.retention_interaction_days} days" in page.words
    assert "privacy officer" in page.words and "in English only" in page.words
    (button,) = page.all("button")
    assert button["type"] == "submit"


@pytest.mark.parametrize("token", ["A" * 36, "not-a-token", "Zz9-unknown"])
async def test_unknown_or_forged_token_gets_a_plain_404_page_with_no_detail(tracker: Tracker, token: str) -> None:
    resp, page = await get_page(tracker, token, 404)
    check_plain_accessible_page(resp, page)
    assert token not in await resp.text()
    resp, _ = await post_form(tracker, token, "csrf=x", 404)
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"


# -- objecting -----------------------------------------------------------------------------------------------


async def test_getting_the_page_never_objects(tracker: Tracker) -> None:
    token = token_of(await register(tracker, "individual"), PERSON)
    for _ in range(4):
        await get_page(tracker, str(token))
    assert (await tracker.client.head(f"/p/{token}")).status == 200
    assert await still_tracked(tracker, PERSON)
    assert await objections_audited(tracker) == []


async def test_individual_form_objects_for_the_recipient_and_is_audited(tracker: Tracker) -> None:
    token = str(token_of(await register(tracker, "individual"), PERSON))
    _, page = await get_page(tracker, token)
    resp, done = await post_form(tracker, token, f"csrf={page.csrf}", 200)
    check_plain_accessible_page(resp, done)
    assert "Your address will not be tracked in future messages." in done.words

    after = await register(tracker, "individual")
    assert token_of(after, PERSON) is None and token_of(after, OTHER) is not None
    (entry,) = await objections_audited(tracker)
    assert (entry["token_id"], entry["role"], entry["outcome"]) == ("recipient-page", "recipient", "ok")
    assert entry["subject_index"] is not None and PERSON not in entry["detail"]


async def test_form_without_or_with_a_forged_csrf_token_is_refused(tracker: Tracker) -> None:
    out = await register(tracker, "individual")
    token, other = str(token_of(out, PERSON)), str(token_of(out, OTHER))
    _, other_page = await get_page(tracker, other)
    key = csrf_keys(tracker.state.keyring)[0]
    expired = issue_csrf(key, token, time.time() - 3700)
    forged = issue_csrf(b"\x00" * 32, token, time.time())
    for body in ("", "email=x%40example.com", f"csrf={other_page.csrf}", f"csrf={expired}", f"csrf={forged}"):
        resp, page = await post_form(tracker, token, body, 403)
        check_plain_accessible_page(resp, page)
        assert page.all("a") == [{"href": f"../{token}"}]  # back to the page, for a fresh form
    assert await still_tracked(tracker, PERSON)
    assert await objections_audited(tracker) == []


@pytest.mark.parametrize("mode", ["anonymous", "aggregate"])
async def test_address_form_objects_only_a_recipient_and_answers_the_same_either_way(
    tracker: Tracker, mode: str
) -> None:
    token = str(token_of(await register(tracker, mode), PERSON))
    _, page = await get_page(tracker, token)
    await post_form(tracker, token, f"csrf={page.csrf}", 400)  # the address is needed here

    _, stranger = await post_form(tracker, token, f"csrf={page.csrf}&email={STRANGER.replace('@', '%40')}", 200)
    _, recipient = await post_form(tracker, token, f"csrf={page.csrf}&email=Person000000%40Example.com", 200)
    assert stranger.words == recipient.words  # no oracle of who received this message
    assert "If this address received this message, it will not be tracked in future messages." in recipient.words

    after = await register(tracker, "anonymous")
    assert token_of(after, PERSON) is None and token_of(after, OTHER) is not None
    outcomes = [(e["token_id"], e["outcome"], e["subject_index"] is None) for e in await objections_audited(tracker)]
    assert sorted(outcomes) == [("recipient-page", "no_match", True), ("recipient-page", "ok", False)]
    rows = await tracker.state.store.fetch("SELECT COUNT(*) FROM objections")
    assert int(rows[0][0]) == 1  # the stranger was not put on the list


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ('{"csrf": "x"}', "application/json", 400),
        ("csrf=%ff%fe", FORM["Content-Type"], 400),
        ("csrf=a&csrf=b", FORM["Content-Type"], 400),
        ("csrf", FORM["Content-Type"], 400),
        ("csrf=" + "a" * 5000, FORM["Content-Type"], 413),
    ],
)
async def test_malformed_or_oversized_form_gets_a_plain_error_page(
    tracker: Tracker, body: str, content_type: str, status: int
) -> None:
    token = str(token_of(await register(tracker, "anonymous"), PERSON))
    resp = await tracker.client.post(f"/p/{token}/object", data=body.encode(), headers={"Content-Type": content_type})
    assert resp.status == status
    check_plain_accessible_page(resp, Page(await resp.text()))


# -- the notice leads here; the form token on its own ------------------------------------------------------


@pytest.mark.settings(notice_texts={"en": "We count opens.", "de": "Wir zählen Öffnungen."})
async def test_the_notice_link_in_a_recipients_copy_opens_their_page(tracker: Tracker) -> None:
    out = await register(tracker, "anonymous")
    settings = tracker.state.settings
    notice = notice_for(settings, "de")
    template = rewrite_html(message_body(1)["html"], settings.public_base_url, notice=notice).template
    copy = template.replace(TOKEN_PLACEHOLDER, str(token_of(out, PERSON)))
    href = re.search(r'<a href="([^"]+)"[^>]*>Wir zählen Öffnungen\.</a>', copy)
    assert href and href.group(1).startswith(settings.public_base_url + "/p/")
    _, page = await get_page(tracker, href.group(1).removeprefix(settings.public_base_url + "/p/"))
    assert "sent in anonymous mode" in page.words


def test_form_token_is_bound_to_its_tracking_token_and_lasts_about_an_hour() -> None:
    key, now = b"k" * 32, 1_700_000_000.0
    value = issue_csrf(key, "tok", now)
    assert csrf_valid([key], "tok", value, now)
    assert csrf_valid([b"new" * 11, key], "tok", value, now + 55 * 60)  # still good after a key rotation
    assert not csrf_valid([key], "tok", value, now + 60 * 60 + CSRF_BUCKET_SECONDS)
    assert not csrf_valid([key], "other", value, now)
    assert not csrf_valid([key], "tok", value, now - 2 * CSRF_BUCKET_SECONDS)  # from the future
    assert not csrf_valid([key], "tok", value.replace(".", ".x"), now)
    assert not csrf_valid([key], "tok", "", now) and not csrf_valid([key], "tok", "١٢.abc", now)
