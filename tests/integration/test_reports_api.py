"""The read side of the API over a real socket, on SQLite and PostgreSQL: list, report, segments,
CSV export, per-recipient rows for the privacy role, roles and the audit trail."""

from __future__ import annotations

import csv
import io
import os
import time
from typing import Any

import pytest

from politetenant.crypto import blind_index
from politetenant.tracker.http.auth import Role
from politetenant.tracker.privacy.audit import verify_chain
from politetenant.tracker.reports.api_reports import MessagePage, MessageRecipientsPage, MessageReport
from politetenant.tracker.reports.build import HEADLINE_KEYS
from politetenant.tracker.storage.rows import Event, EventKind
from tests.conftest import Tracker
from tests.support import IP_DUBLIN, UA_CHROME, UA_IPHONE_MAIL, UA_OUTLOOK, UA_SCANNER, message_body


def people(*groups: tuple[str, int]) -> list[dict[str, Any]]:
    out, n = [], 0
    for department, count in groups:
        for _ in range(count):
            person = {"email": f"p{n:04d}@example.com", "name": f"Person {n}", "attributes": {"department": department}}
            out.append(person)
            n += 1
    return out


async def register(t: Tracker, recipients: int | list[dict[str, Any]] = 12, **kw: Any) -> dict[str, Any]:
    body = message_body(recipients if isinstance(recipients, int) else 1, **kw)
    if not isinstance(recipients, int):
        body["recipients"] = recipients
    resp = await t.client.post("/api/v1/messages", json=body, headers=t.auth(Role.SENDER))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


def tokens_of(out: dict[str, Any]) -> list[str]:
    return [r["token"] for r in out["recipients"]]


async def hit(t: Tracker, path: str, ua: str = UA_IPHONE_MAIL, ip: str = IP_DUBLIN) -> None:
    resp = await t.client.get(path, headers={"User-Agent": ua, "X-Forwarded-For": ip}, allow_redirects=False)
    assert resp.status in (200, 302), path


async def store_reads(t: Tracker, tokens: list[str], read_ms: int) -> None:
    """Read-time events written directly (a streamed beacon would take read_ms to happen)."""
    now = int(time.time() * 1000)
    events = []
    for token in tokens:
        verified = t.state.tokens.verify(token)
        assert verified is not None
        events.append(
            Event(os.urandom(16), verified.record_id, EventKind.READ, None, now, "IE", None, None, "iOS", "mobile",
                  "Apple Mail", 0, read_ms)
        )  # fmt: skip
    await t.state.store.insert_events(events)


async def get(t: Tracker, path: str, role: Role = Role.ANALYST) -> Any:
    """GET a JSON answer, checked against the shape the OpenAPI document publishes for it."""
    await t.flush()
    resp = await t.client.get(path, headers=t.auth(role))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    model = MessageRecipientsPage if "/recipients" in path else MessageReport if "/report" in path else MessagePage
    assert model.model_validate(body).model_dump(exclude_unset=True) == body
    return body


async def audit_rows(t: Tracker, action: str) -> list[tuple[Any, ...]]:
    return await t.state.store.fetch("SELECT role, detail, outcome FROM audit WHERE action = $1 ORDER BY id", action)


def listed(page: dict[str, Any], message_id: str) -> dict[str, Any]:
    (summary,) = [m for m in page["messages"] if m["id"] == message_id]
    return {key: value for key, value in summary.items() if key not in ("subject", "list_name")}


def headline_of(report: dict[str, Any]) -> dict[str, Any]:
    return {key: report[key] for key in HEADLINE_KEYS if key in report}


@pytest.mark.settings(min_segment_size=5)
async def test_report_carries_every_section_and_the_list_shows_its_headline(tracker: Tracker) -> None:
    out = await register(tracker, 20)
    tokens = tokens_of(out)
    for token in tokens[:12]:
        await hit(tracker, f"/o/{token}.gif")
    for token in tokens[:6]:
        await hit(tracker, f"/o/{token}.gif", ua=UA_OUTLOOK)
        await hit(tracker, f"/c/{token}/1", ua=UA_CHROME)
    await hit(tracker, f"/o/{tokens[19]}.gif", ua=UA_SCANNER)
    await hit(tracker, f"/c/{tokens[18]}/0", ua=UA_CHROME)  # the honeypot
    await store_reads(tracker, tokens[:6], 1_500)
    await store_reads(tracker, tokens[6:12], 12_000)
    report = await get(tracker, f"/api/v1/messages/{out['id']}/report")
    assert listed(await get(tracker, "/api/v1/messages"), out["id"]) == headline_of(report)  # one definition
    assert report["opens"] == {"unique": 12, "total": 18}
    assert report["clicks"] == {"unique": 6, "total": 6}
    assert report["machine"] is None  # a scanner and a honeypot hit: two copies, below the threshold
    assert report["bots"] == {"opens": 0, "clicks": 0}
    assert report["rates"] == {"open": 0.6, "click": 0.3, "click_to_open": 0.5, "read": 1.0}
    assert report["read_time"] == {
        "median_ms": 6_750,
        "buckets": [{"label": "glanced", "records": 6}, {"label": "read", "records": 6}],
        "other": None,
    }
    assert report["breakdowns"]["city"] == {"buckets": [{"label": "Dublin, IE", "records": 12}], "other": None}
    assert report["breakdowns"]["country"]["buckets"] == [{"label": "IE", "records": 12}]
    assert report["links"]["buckets"][0] == {
        "link": 1,
        "text": "new policy",
        "url": "https://intranet.example.com/policy?id=7&v=2",
        "clicks": {"unique": 6, "total": 6},
    }
    assert [w["records"] for w in report["timeline"]["opens"]] == [12]


@pytest.mark.settings(min_segment_size=5)
async def test_the_list_judges_copies_as_the_report_does(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    tokens = tokens_of(out)
    for token in tokens[:6]:  # a gateway opening each copy and trying every link, the hidden one too
        for path in (f"/o/{token}.gif", f"/c/{token}/1", f"/c/{token}/0"):
            await hit(tracker, path, ua=UA_CHROME)
    for token in tokens[6:]:
        await hit(tracker, f"/o/{token}.gif")
    report = await get(tracker, f"/api/v1/messages/{out['id']}/report")
    summary = listed(await get(tracker, "/api/v1/messages"), out["id"])
    assert summary == headline_of(report)
    assert summary["opens"] == {"unique": 6, "total": 6} and summary["clicks"] == {"unique": 0, "total": 0}
    assert summary["machine"]["records"] == 6 and summary["bots"] == {"opens": 6, "clicks": 12}


@pytest.mark.settings(min_segment_size=5, segment_attributes=("department",))
async def test_analyst_reports_never_carry_per_recipient_rows(tracker: Tracker) -> None:
    recipients = people(("Finance", 12), ("Sales", 12))
    out = await register(tracker, recipients, mode="individual")
    for token in tokens_of(out):
        await hit(tracker, f"/o/{token}.gif")
    mid = out["id"]
    texts = [
        await (await tracker.client.get(path, headers=tracker.auth(Role.ANALYST))).text()
        for path in (f"/api/v1/messages/{mid}/report", f"/api/v1/messages/{mid}/report?segment=department",
                     f"/api/v1/messages/{mid}/export.csv", "/api/v1/messages")
    ]  # fmt: skip
    for text in texts:
        assert "example.com" not in text.replace("intranet.example.com", "").replace("hr.example.com", "")
        assert "Person " not in text and "p0001" not in text
    resp = await tracker.client.get(f"/api/v1/messages/{mid}/recipients", headers=tracker.auth(Role.ANALYST))
    assert resp.status == 403


@pytest.mark.settings(min_segment_size=5, segment_attributes=("department",))
async def test_segment_report_folds_small_departments_into_other(tracker: Tracker) -> None:
    out = await register(tracker, people(("Finance", 12), ("Sales", 14), ("Legal", 3)))
    for token in tokens_of(out):
        await hit(tracker, f"/o/{token}.gif")
    report = await get(tracker, f"/api/v1/messages/{out['id']}/report?segment=department")
    seg = report["segments"]
    assert seg["attribute"] == "department"
    # Legal (3) alone would be derivable from the total: Finance, the smaller, joins it in "other".
    assert [(v["value"], v["tracked"], v["opens"]["unique"]) for v in seg["values"]] == [("Sales", 14, 14)]
    assert seg["other"]["tracked"] == 15 and seg["other"]["opens"]["unique"] == 15
    assert "Legal" not in str(report) and "Finance" not in str(report)
    assert report["opens"]["unique"] == 29


@pytest.mark.settings(segment_attributes=("department", "campus"))
async def test_only_the_tenants_segment_attributes_segment_a_report(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    for path in ("report", "export.csv"):
        resp = await tracker.client.get(
            f"/api/v1/messages/{out['id']}/{path}?segment=grade", headers=tracker.auth(Role.ANALYST)
        )
        assert resp.status == 422
        body = await resp.json()
        assert body["error"] == "unknown_segment" and "department, campus" in body["message"]
    await get(tracker, f"/api/v1/messages/{out['id']}/report?segment=campus")


async def test_a_tenant_that_keeps_no_attribute_has_no_segments(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    resp = await tracker.client.get(
        f"/api/v1/messages/{out['id']}/report?segment=department", headers=tracker.auth(Role.ANALYST)
    )
    assert resp.status == 422 and "keeps no attribute" in (await resp.json())["message"]


@pytest.mark.settings(segment_attributes=("department",))
async def test_segments_of_an_aggregate_message_are_a_conflict_and_bad_names_are_refused(tracker: Tracker) -> None:
    out = await register(tracker, 12, mode="aggregate")
    resp = await tracker.client.get(
        f"/api/v1/messages/{out['id']}/report?segment=department", headers=tracker.auth(Role.ANALYST)
    )
    assert resp.status == 409
    assert (await resp.json())["error"] == "aggregate_mode"
    resp = await tracker.client.get(
        f"/api/v1/messages/{out['id']}/report?segment=Dept;drop", headers=tracker.auth(Role.ANALYST)
    )
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_segment"


async def test_aggregate_message_reports_totals_only(tracker: Tracker) -> None:
    out = await register(tracker, 12, mode="aggregate")
    token = tokens_of(out)[0]
    for _ in range(3):
        await hit(tracker, f"/o/{token}.gif")
    await hit(tracker, f"/c/{token}/2")
    report = await get(tracker, f"/api/v1/messages/{out['id']}/report")
    assert report["opens"] == {"unique": None, "total": 3}
    assert report["clicks"] == {"unique": None, "total": 1}
    assert not {"breakdowns", "links", "timeline", "read_time", "rates"} & set(report)


async def test_suppressed_message_shows_nothing_and_cannot_be_exported(tracker: Tracker) -> None:
    out = await register(tracker, 9)
    await hit(tracker, f"/o/{tokens_of(out)[0]}.gif")
    assert await get(tracker, f"/api/v1/messages/{out['id']}/report") == {"id": out["id"], "suppressed": True}
    resp = await tracker.client.get(f"/api/v1/messages/{out['id']}/export.csv", headers=tracker.auth(Role.ANALYST))
    assert resp.status == 403
    assert resp.content_type == "application/json"
    assert (await resp.json())["error"] == "suppressed"
    assert await audit_rows(tracker, "report.export") == [("analyst", f"message={out['id']}", "refused")]


async def test_export_is_the_report_as_csv(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    for token in tokens_of(out)[:10]:
        await hit(tracker, f"/o/{token}.gif")
    await tracker.flush()
    resp = await tracker.client.get(f"/api/v1/messages/{out['id']}/export.csv", headers=tracker.auth(Role.ANALYST))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert f'filename="{out["id"]}-report.csv"' in resp.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert rows[0] == ["segment", "section", "item", "detail", "metric", "value"]
    cells = {(r[1], r[2], r[4]): r[5] for r in rows[1:]}
    assert cells[("summary", "", "opens_unique")] == "10"
    assert cells[("summary", "", "tracked")] == "12"
    assert cells[("device", "mobile", "records")] == "10"


async def test_list_is_newest_first_paginated_and_thresholded(tracker: Tracker) -> None:
    ids = [(await register(tracker, n, subject=f"Message {i}"))["id"] for i, n in enumerate((12, 4, 12, 12, 3))]
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(5):
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await get(tracker, f"/api/v1/messages{query}")
        assert len(page["messages"]) <= 2
        seen += page["messages"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [m["id"] for m in seen] == [m["id"] for m in sorted(seen, key=lambda m: (m["created_at"], m["id"]))][::-1]
    assert sorted(m["id"] for m in seen) == sorted(ids)
    by_subject = {m["subject"]: m for m in seen}
    assert by_subject["Message 1"] == {
        "id": ids[1], "suppressed": True, "created_at": by_subject["Message 1"]["created_at"], "mode": "anonymous",
        "subject": "Message 1", "list_name": "All staff Dublin",
    }  # fmt: skip
    assert by_subject["Message 0"]["recipients"] == 12
    assert by_subject["Message 0"]["opens"] == {"unique": 0, "total": 0}
    for bad in ("?cursor=nonsense", "?limit=0", "?limit=101", "?limit=x"):
        resp = await tracker.client.get(f"/api/v1/messages{bad}", headers=tracker.auth(Role.ANALYST))
        assert resp.status == 400, bad


async def test_privacy_officer_reads_per_recipient_rows_of_an_individual_message(tracker: Tracker) -> None:
    recipients = people(("Finance", 6), ("Sales", 6))
    await tracker.state.store.add_objection(blind_index(tracker.state.keyring, "p0011@example.com"), 0)
    out = await register(tracker, recipients, mode="individual")
    tokens = tokens_of(out)
    assert tokens[11] is None
    for token in tokens[:3]:
        await hit(tracker, f"/o/{token}.gif")
    await hit(tracker, f"/c/{tokens[1]}/1")
    await hit(tracker, f"/c/{tokens[1]}/1")
    await hit(tracker, f"/o/{tokens[3]}.gif", ua=UA_CHROME)  # the gateway's open, in a honeypot burst:
    await hit(tracker, f"/c/{tokens[3]}/0", ua=UA_CHROME)  # not the person's
    await hit(tracker, f"/o/{tokens[4]}.gif", ua=UA_SCANNER)  # a scanner: not the person
    await store_reads(tracker, [tokens[2]], 4_200)
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(4):
        page = await get(
            tracker, f"/api/v1/messages/{out['id']}/recipients?limit=5" + (f"&cursor={cursor}" if cursor else ""),
            Role.PRIVACY,
        )  # fmt: skip
        rows += page["recipients"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [r["email"] for r in rows] == [r["email"] for r in recipients]
    first = rows[0]
    assert first["name"] == "Person 0" and first["attributes"] == {"department": "Finance"}
    assert first["tracked"] and first["opened"] and first["opens"] == 1 and first["clicks"] == 0
    assert isinstance(first["first_open_at"], int)
    assert rows[1]["clicks"] == 2
    assert rows[2]["read_ms"] == 4_200
    assert rows[3]["opened"] is False and rows[3]["opens"] == 0 and rows[3]["first_open_at"] is None
    assert rows[4]["opened"] is False and rows[4]["opens"] == 0  # only a scanner came by
    assert rows[11]["tracked"] is False and rows[11]["opened"] is False
    assert len(await audit_rows(tracker, "recipients.read")) == 3


@pytest.mark.parametrize("mode", ["anonymous", "aggregate"])
async def test_per_recipient_rows_do_not_exist_outside_individual_mode(tracker: Tracker, mode: str) -> None:
    out = await register(tracker, 12, mode=mode)
    resp = await tracker.client.get(f"/api/v1/messages/{out['id']}/recipients", headers=tracker.auth(Role.PRIVACY))
    assert resp.status == 409
    body = await resp.json()
    assert body["error"] == "not_individual_mode" and mode in body["message"]


async def test_every_endpoint_needs_its_role(tracker: Tracker) -> None:
    out = await register(tracker, 12, mode="individual")
    mid = out["id"]
    cases = {
        "/api/v1/messages": Role.ANALYST,
        f"/api/v1/messages/{mid}/report": Role.ANALYST,
        f"/api/v1/messages/{mid}/export.csv": Role.ANALYST,
        f"/api/v1/messages/{mid}/recipients": Role.PRIVACY,
    }
    for path, allowed in cases.items():
        assert (await tracker.client.get(path)).status == 401, path
        bad = await tracker.client.get(path, headers={"Authorization": "Bearer ptk_000000000000_" + "x" * 43})
        assert bad.status == 401, path
        for role in Role:
            resp = await tracker.client.get(path, headers=tracker.auth(role))
            assert resp.status == (200 if role is allowed else 403), (path, role)
    for path in ("report", "export.csv", "recipients"):
        role = Role.PRIVACY if path == "recipients" else Role.ANALYST
        resp = await tracker.client.get(f"/api/v1/messages/msg_nope/{path}", headers=tracker.auth(role))
        assert resp.status == 404 and (await resp.json())["error"] == "not_found"


@pytest.mark.settings(segment_attributes=("department",))
async def test_every_read_and_export_is_audited(tracker: Tracker) -> None:
    out = await register(tracker, 12, mode="individual")
    mid = out["id"]
    await get(tracker, f"/api/v1/messages/{mid}/report")
    await get(tracker, f"/api/v1/messages/{mid}/report?segment=department")
    await tracker.client.get(f"/api/v1/messages/{mid}/export.csv", headers=tracker.auth(Role.ANALYST))
    await get(tracker, f"/api/v1/messages/{mid}/recipients", Role.PRIVACY)
    await get(tracker, "/api/v1/messages")
    await tracker.client.get(f"/api/v1/messages/{mid}/report", headers=tracker.auth(Role.SENDER))  # refused: 403
    assert await audit_rows(tracker, "report.read") == [
        ("analyst", f"message={mid}", "ok"),
        ("analyst", f"message={mid} segment=department", "ok"),
        ("analyst", "list", "ok"),
    ]
    assert await audit_rows(tracker, "report.export") == [("analyst", f"message={mid}", "ok")]
    assert await audit_rows(tracker, "recipients.read") == [("privacy", f"message={mid}", "ok")]
    check = await verify_chain(tracker.state.store, tracker.state.keyring)
    assert check.ok and check.entries == 5
