"""The privacy officer's dashboard pages over HTTP, on SQLite and PostgreSQL: each subject right through
its form answers as the API does (same figures, notes and audit entries), the e-mail never reaches a
URL, a form without the session's CSRF token changes nothing, an analyst is refused, the audit log
filters and pages newest first, and the chain's verification shows a row edited in the database."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import ClientResponse

from politetenant.crypto import blind_index
from politetenant.tracker.http.auth import Role
from politetenant.tracker.privacy import api_audit, audit, subjects
from politetenant.tracker.ui import pages_privacy
from politetenant.tracker.ui.session import cookie_secret, csrf_for
from tests.conftest import Tracker
from tests.integration.test_subject_rights import count, interact, register, right, token_of

A = "person000002@example.com"  # A through the forms, B through the API: same department, same clicks
B = "person000005@example.com"
SESSION = "polite_session"


@dataclass
class Browser:
    """One signed-in session (its cookie sent explicitly); every response is kept to inspect its URL."""

    t: Tracker
    cookie: str
    seen: list[ClientResponse] = field(default_factory=list)

    async def get(self, path: str, status: int = 200) -> str:
        return await self._check(await self.t.client.get(path, headers=self._headers(), allow_redirects=False), status)

    async def post(self, path: str, form: dict[str, str], status: int = 200) -> str:
        resp = await self.t.client.post(path, data=form, headers=self._headers(), allow_redirects=False)
        return await self._check(resp, status)

    def _headers(self) -> dict[str, str]:
        self.t.client.session.cookie_jar.clear()  # only this session's cookie, never another one's
        return {"Cookie": f"{SESSION}={self.cookie}"}

    async def _check(self, resp: ClientResponse, status: int) -> str:
        self.seen.append(resp)
        text = await resp.text()
        assert resp.status == status, text[:2000]
        assert resp.headers["Cache-Control"] == "no-store"
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        return text


async def sign_in(t: Tracker, role: Role) -> Browser:
    resp = await t.client.post("/ui/sign-in", data={"token": t.tokens[role]}, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    return Browser(t, resp.cookies[SESSION].value)


def csrf_of(page: str) -> str:
    tokens = set(re.findall(r'name="csrf" value="([^"]+)"', page))
    assert len(tokens) == 1, tokens
    return html.unescape(tokens.pop())


async def officer(t: Tracker) -> tuple[Browser, str]:
    browser = await sign_in(t, Role.PRIVACY)
    return browser, csrf_of(await browser.get("/ui/privacy"))


async def same_history_for_a_and_b(t: Tracker) -> None:
    """A message per mode to 12 people; A and B each open it and click once."""
    for mode in ("individual", "anonymous", "aggregate"):
        sent = await register(t, mode, subject=f"Policy update ({mode})", list_name=f"List {mode}")
        for person in (A, B):
            await interact(t, token_of(sent, person))
    await t.flush()


async def audit_of(t: Tracker, email: str) -> list[tuple[Any, ...]]:
    rows = await t.state.store.fetch(
        "SELECT action, outcome, detail, token_id, role FROM audit WHERE subject_index = $1 ORDER BY id",
        blind_index(t.state.keyring, email),
    )
    return [tuple(r) for r in rows]


async def held_now(t: Tracker, email: str) -> subjects.AccessDocument:
    state = t.state
    return await subjects.access(state.store, state.sealer, subjects.Subject.of(state.keyring, email), 0)


def shows(page: str, *texts: object) -> bool:
    return all(html.escape(str(text), quote=True) in page for text in texts)


def fact(label: str, value: object) -> str:
    return f"<dt>{html.escape(label)}</dt><dd>{html.escape(str(value))}</dd>"


def cells(page: str) -> list[list[str]]:
    """The body rows of the page's tables, cell texts unescaped."""
    bodies = re.findall(r"<tbody>(.*?)</tbody>", page, flags=re.S)
    rows = [row for body in bodies for row in re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)]
    return [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row, flags=re.S)] for row in rows]


# -- each right through its form equals the API's answer ---------------------------------------------------------


async def test_access_page_shows_what_the_api_returns_message_by_message(tracker: Tracker) -> None:
    await same_history_for_a_and_b(tracker)
    browser, csrf = await officer(tracker)
    page = await browser.post("/ui/privacy/subjects/access", {"csrf": csrf, "email": A})
    doc = await right(tracker, "access", {"email": A})
    assert doc["found"] and len(doc["messages"]) == 3
    assert "<h1>What is held about this person</h1>" in page
    for message in doc["messages"]:
        held = message["held"][0]
        assert shows(page, message["subject"], message["list_name"], message["mode"], message["id"])
        assert shows(page, held["email"], held["name"], "department=Sales", message["interactions_note"])
    kinds = [i["kind"] for m in doc["messages"] for i in m["interactions"] or []]
    assert kinds == ["open", "click"]  # only the individual message links interactions to the person
    assert [row[0] for row in cells(page) if row and row[0] in ("open", "click")] == kinds
    assert shows(page, doc["messages"][0]["interactions"][1]["url"])
    assert B not in page and "Person Number5" not in page


async def test_export_form_downloads_the_apis_json_as_an_attachment(tracker: Tracker) -> None:
    await same_history_for_a_and_b(tracker)
    browser, csrf = await officer(tracker)
    resp = await tracker.client.post(
        "/ui/privacy/subjects/export", data={"csrf": csrf, "email": A}, headers=browser._headers()
    )
    assert resp.status == 200
    assert resp.headers["Content-Disposition"] == 'attachment; filename="subject-export.json"'
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers["Cache-Control"] == "no-store" and "Content-Security-Policy" in resp.headers
    exported = json.loads(await resp.read())
    api = await right(tracker, "access", {"email": A})
    exported.pop("generated_at"), api.pop("generated_at")
    assert exported == api


async def test_rectify_object_and_erase_forms_answer_and_audit_as_the_api_does(tracker: Tracker) -> None:
    await same_history_for_a_and_b(tracker)
    browser, csrf = await officer(tracker)
    for name, form in [
        ("access", {}),
        ("export", {}),
        ("rectify", {"name": "Corrected Name", "attributes": "department = Legal\n"}),
        ("object", {}),
        ("erase", {"confirm": "yes"}),
    ]:
        page = await browser.post(f"/ui/privacy/subjects/{name}", {"csrf": csrf, "email": A, **form})
        body = (
            {"email": B, "name": "Corrected Name", "attributes": {"department": "Legal"}}
            if name == "rectify"
            else {"email": B}
        )
        api = await right(tracker, name, body)
        assert shows(page, *api.get("notes", [])), name
        if name == "rectify":
            assert "<h1>Correction done</h1>" in page
            assert fact("Fields changed", "name, attributes") in page
            assert fact("Recipient rows", api["updated"]["recipient_rows"]) in page
            assert fact("Tracking records", api["updated"]["records"]) in page
            held = (await held_now(tracker, A)).messages[0].held  # read as the API would, without an audit entry
            assert [h.model_dump() for h in held] == [{"email": A, "name": "Corrected Name",
                                                       "attributes": {"department": "Legal"}}]  # fmt: skip
        if name == "object":
            assert fact("Already objected", "no") in page and api["already_objected"] is False
        if name == "erase":
            assert api["erased"] == {"recipient_rows": 3, "messages": 3, "records": 1, "events": 2}
            for label, key in [("Recipient rows", "recipient_rows"), ("Messages", "messages"),
                               ("Tracking records", "records"), ("Interactions", "events")]:  # fmt: skip
                assert fact(label, api["erased"][key]) in page
            assert (await held_now(tracker, A)).found is False
    # The same audit entries, by the same privacy token, whichever door the request came through.
    by_form, by_api = await audit_of(tracker, A), await audit_of(tracker, B)
    assert [row[0] for row in by_form] == [f"subject.{n}" for n in ("access", "export", "rectify", "object", "erase")]
    assert by_form == by_api
    assert {row[3] for row in by_form} == {tracker.tokens[Role.PRIVACY].split("_")[1]}


async def test_erase_without_the_confirmation_box_erases_nothing_and_says_why(tracker: Tracker) -> None:
    await same_history_for_a_and_b(tracker)
    browser, csrf = await officer(tracker)
    page = await browser.post("/ui/privacy/subjects/erase", {"csrf": csrf, "email": A}, status=422)
    assert "tick the box to confirm the erasure" in page and "Nothing was done" in page
    assert A not in page  # the address typed is not echoed back
    assert (await right(tracker, "access", {"email": A}))["found"] is True
    [refusal] = await tracker.state.store.fetch("SELECT outcome, detail FROM audit WHERE action = 'subject.erase'")
    assert tuple(refusal) == ("rejected", "not_confirmed")


async def test_a_form_the_api_would_refuse_names_the_field_and_changes_nothing(tracker: Tracker) -> None:
    await same_history_for_a_and_b(tracker)
    browser, csrf = await officer(tracker)
    page = await browser.post("/ui/privacy/subjects/rectify", {"csrf": csrf, "email": A}, status=422)
    assert "name or attributes: give at least one of them to change" in page and A not in page
    page = await browser.post("/ui/privacy/subjects/access", {"csrf": csrf, "email": "not an address"}, status=422)
    assert "email:" in page and "not an address" not in page
    assert 'action="/ui/privacy/subjects/access"' in page  # the form again, to correct and resend


# -- the door: URLs, CSRF, roles ----------------------------------------------------------------------------------


async def test_the_email_never_appears_in_any_url_or_location(tracker: Tracker) -> None:
    await same_history_for_a_and_b(tracker)
    browser, csrf = await officer(tracker)
    for name, extra in [("access", {}), ("rectify", {"name": "New"}), ("object", {}), ("erase", {"confirm": "yes"})]:
        page = await browser.post(f"/ui/privacy/subjects/{name}", {"csrf": csrf, "email": A, **extra})
        links = re.findall(r'(?:href|action|src)="([^"]*)"', page)
        assert links and not any("person0" in link or "%40" in link or "@" in link for link in links), name
    page = await browser.post(f"/ui/privacy/subjects/erase?email={A}", {"csrf": csrf, "email": B, "confirm": "yes"},
                              status=400)  # fmt: skip
    assert "never in the address bar" in page and B not in page
    assert (await right(tracker, "access", {"email": B}))["found"] is True  # refused before anything ran
    for resp in browser.seen:
        for url in (str(resp.url), resp.headers.get("Location", "")):
            assert "person000002" not in url.replace(f"?email={A}", "") and "person000005" not in url


async def test_a_post_without_the_sessions_csrf_token_is_403_and_changes_nothing(tracker: Tracker) -> None:
    await same_history_for_a_and_b(tracker)
    browser, csrf = await officer(tracker)
    entries = await count(tracker, "SELECT COUNT(*) FROM audit")
    for form in ({"email": A, "confirm": "yes"}, {"email": A, "confirm": "yes", "csrf": csrf[:-2] + "xx"}):
        page = await browser.post("/ui/privacy/subjects/erase", form, status=403)
        assert "did not come from your current session" in page
        await browser.post("/ui/privacy/subjects/object", {k: v for k, v in form.items() if k != "confirm"}, 403)
    assert (await right(tracker, "access", {"email": A}))["found"] is True
    assert await tracker.state.store.count_rows("objections") == 0
    assert await count(tracker, "SELECT COUNT(*) FROM audit") == entries + 1  # only the access just above


async def test_an_analysts_session_is_refused_every_privacy_page(tracker: Tracker) -> None:
    await same_history_for_a_and_b(tracker)
    analyst = await sign_in(tracker, Role.ANALYST)
    secret = cookie_secret(analyst.cookie)
    assert secret is not None
    for path in ("/ui/privacy", "/ui/privacy/audit"):
        assert "for the privacy role" in await analyst.get(path, status=403)
    form = {"csrf": csrf_for(secret), "email": A, "confirm": "yes"}
    await analyst.post("/ui/privacy/subjects/erase", form, status=403)
    assert (await right(tracker, "access", {"email": A}))["found"] is True
    assert await count(tracker, "SELECT COUNT(*) FROM audit WHERE action = 'subject.erase'") == 0
    resp = await tracker.client.get("/ui/privacy", allow_redirects=False)  # no session at all
    assert resp.status == 303 and resp.headers["Location"] == "/ui/sign-in"


# -- the audit log page ------------------------------------------------------------------------------------------


async def write_on(t: Tracker, monkeypatch: pytest.MonkeyPatch, day: str, actions: list[audit.Action]) -> None:
    moment = api_audit.parse_time("day", f"{day}T12:00:00Z") / 1000
    monkeypatch.setattr(audit, "time", SimpleNamespace(time=lambda: moment))
    for action in actions:
        await audit.record(t.state.store, t.state.keyring, audit.SYSTEM_ACTOR, action, detail=f"on {day}")
    monkeypatch.undo()


async def test_audit_page_lists_newest_first_and_filters_by_action_and_dates(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await write_on(tracker, monkeypatch, "2025-03-01", [audit.Action.PURGE, audit.Action.REPORT_READ])
    await write_on(tracker, monkeypatch, "2025-03-02", [audit.Action.PURGE, audit.Action.TOKEN_CREATE])
    await write_on(tracker, monkeypatch, "2025-03-03", [audit.Action.PURGE])
    await right(tracker, "object", {"email": A})  # today, with a subject
    browser, _ = await officer(tracker)
    rows = cells(await browser.get("/ui/privacy/audit"))
    assert [int(r[-1]) for r in rows] == [6, 5, 4, 3, 2, 1]
    index = blind_index(tracker.state.keyring, A).hex()
    assert rows[0][1] == "subject.object" and rows[0][3] == index[:12] + "…" and index not in str(rows)
    purges = cells(await browser.get("/ui/privacy/audit?action=purge"))
    assert [(r[1], r[5]) for r in purges] == [("purge", "on 2025-03-03"), ("purge", "on 2025-03-02"),
                                              ("purge", "on 2025-03-01")]  # fmt: skip
    one_day = cells(await browser.get("/ui/privacy/audit?since=2025-03-02&until=2025-03-02&action="))
    assert [(r[0], r[1]) for r in one_day] == [("2025-03-02 12:00 UTC", "token.create"),
                                               ("2025-03-02 12:00 UTC", "purge")]  # fmt: skip
    page = await browser.get("/ui/privacy/audit?action=key.rotate")
    assert "No entries match these filters" in page and "<tbody>" not in page
    page = await browser.get("/ui/privacy/audit?since=March", status=400)
    assert "since: give a date as YYYY-MM-DD" in page


async def test_audit_page_pages_back_through_older_entries_keeping_the_filter(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await write_on(tracker, monkeypatch, "2025-03-01", [audit.Action.PURGE] * 55 + [audit.Action.REPORT_READ])
    browser, _ = await officer(tracker)
    first = await browser.get("/ui/privacy/audit?action=purge")
    assert [int(r[-1]) for r in cells(first)] == list(range(55, 5, -1))
    [older] = re.findall(r'href="(/ui/privacy/audit\?[^"]*)">Older entries', first)
    second = await browser.get(html.unescape(older))
    assert [int(r[-1]) for r in cells(second)] == [5, 4, 3, 2, 1]
    assert "Older entries" not in second and 'href="/ui/privacy/audit?action=purge">Newest entries' in second


# -- the chain's verification ----------------------------------------------------------------------------------


async def test_privacy_page_shows_the_chains_verdict_and_the_break_after_an_edit(tracker: Tracker) -> None:
    for who in (A, B, A):
        await right(tracker, "access", {"email": who})
    browser, _ = await officer(tracker)

    async def api_verdict() -> dict[str, Any]:
        resp = await tracker.client.get("/api/v1/audit/verify", headers=tracker.auth(Role.PRIVACY))
        return dict(await resp.json())

    page = await browser.get("/ui/privacy")
    verdict = await api_verdict()
    assert verdict["ok"] is True and "<strong>Intact</strong>" in page
    assert shows(page, *verdict["message"].splitlines())
    assert await tracker.state.store.execute("UPDATE audit SET detail = $1 WHERE id = $2", "messages=9", 2) == 1
    page = await browser.get("/ui/privacy")
    verdict = await api_verdict()
    assert verdict["ok"] is False and verdict["first_broken_id"] == 2
    assert "<strong>Tampering detected</strong>" in page and "Intact" not in page
    assert shows(page, *verdict["message"].splitlines()) and "audit log broken at entry id 2" in page


# -- decisions, without a server ----------------------------------------------------------------------------------


def test_rectify_form_sends_only_what_changes() -> None:
    body = pages_privacy.request_body
    assert body("rectify", {"email": A, "name": " New "}) == {"email": A, "name": "New"}
    assert body("rectify", {"email": A, "remove_name": "yes"}) == {"email": A, "name": None}
    assert body("rectify", {"email": A, "remove_attributes": "yes"}) == {"email": A, "attributes": {}}
    assert body("rectify", {"email": A, "attributes": "a=1\n\nb = x=y"}) == {
        "email": A,
        "attributes": {"a": "1", "b": "x=y"},
    }
    with pytest.raises(pages_privacy.FormProblem, match="not both"):
        body("rectify", {"email": A, "name": "New", "remove_name": "yes"})
    with pytest.raises(pages_privacy.FormProblem, match="line 2 has no '='"):
        body("rectify", {"email": A, "attributes": "a=1\nSales"})
    with pytest.raises(pages_privacy.FormProblem, match="tick the box"):
        body("erase", {"email": A})
