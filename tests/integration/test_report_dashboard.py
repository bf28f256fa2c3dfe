"""What the dashboard reads, on a live tracker (SQLite and PostgreSQL): the same report as the API, the
same audit entry, and the message list filtered by list name and dates with its keyset cursor."""

from __future__ import annotations

from typing import Any

import pytest

from politetenant.tracker.http.auth import Role
from politetenant.tracker.reports import dashboard
from politetenant.tracker.reports.dashboard import (
    InvalidCursor,
    filtered_messages,
    list_names,
    read_report,
    recent_headlines,
    report_for,
)
from politetenant.tracker.storage.rows import MessageRow
from tests.conftest import Tracker
from tests.integration.test_reports_api import audit_rows, get, hit, people, register, tokens_of

LISTS = ["All staff Dublin", "Engineering", "All staff Dublin", "Sales & Marketing", "Engineering", "All staff Dublin"]


async def message_row(t: Tracker, message_id: str) -> MessageRow:
    message = await t.state.store.get_message(message_id)
    assert message is not None
    return message


async def every_page(t: Tracker, limit: int, **filters: Any) -> list[dict[str, Any]]:
    """Walk the list page by page, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        page, cursor = await filtered_messages(t.state, limit, cursor, **filters)
        assert len(page) <= limit
        items += page
        if cursor is None:
            return items
    raise AssertionError("the cursor never ran out")


@pytest.mark.settings(min_segment_size=5, segment_attributes=("department",))
async def test_report_for_is_the_apis_report_and_a_page_read_is_audited_alike(tracker: Tracker) -> None:
    out = await register(tracker, people(("Finance", 12), ("Sales", 14)))
    for token in tokens_of(out)[:20]:
        await hit(tracker, f"/o/{token}.gif")
    message = await message_row(tracker, out["id"])
    for segment in (None, "department"):
        query = "" if segment is None else f"?segment={segment}"
        api = await get(tracker, f"/api/v1/messages/{out['id']}/report{query}")
        assert await report_for(tracker.state, message, segment) == api
        page = await read_report(tracker.state, "tok_page", Role.ANALYST, message, segment)
        assert page == api and page["heatmap"]["cells"][0]["records"] == 20
    detail = f"message={out['id']}"
    assert await audit_rows(tracker, "report.read") == [
        ("analyst", detail, "ok"),
        ("analyst", detail, "ok"),
        ("analyst", f"{detail} segment=department", "ok"),
        ("analyst", f"{detail} segment=department", "ok"),
    ]


async def test_recent_headlines_are_the_lists_entries_newest_first(tracker: Tracker) -> None:
    ids = [(await register(tracker, n, subject=f"Message {i}"))["id"] for i, n in enumerate((12, 4, 12))]
    for token in tokens_of(await register(tracker, 12, subject="Message 3"))[:6]:
        await hit(tracker, f"/o/{token}.gif")
    api = (await get(tracker, "/api/v1/messages"))["messages"]
    recent = await recent_headlines(tracker.state)
    assert recent == api and [m["subject"] for m in recent] == ["Message 3", "Message 2", "Message 1", "Message 0"]
    assert recent[0]["opens"]["unique"] == 6 and recent[2] == {**recent[2], "suppressed": True}
    older = await recent_headlines(tracker.state, limit=5, before=await message_row(tracker, ids[2]))
    assert [m["id"] for m in older] == [ids[1], ids[0]]
    assert dashboard.medians(recent)["open_rate"] == 0.0  # 0.5, 0, 0: the suppressed one shows none
    assert dashboard.open_rate_trend(recent)[-1][1] == 0.5


async def test_the_list_filters_by_list_name_and_dates_and_pages_by_cursor(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i, name in enumerate(LISTS):
        await register(tracker, 12, subject=f"Message {i}", list_name=name)
    everything = await every_page(tracker, 100)
    assert [m["subject"] for m in everything] == [f"Message {i}" for i in reversed(range(6))]
    assert await list_names(tracker.state) == ["All staff Dublin", "Engineering", "Sales & Marketing"]

    dublin = await every_page(tracker, 2, list_name="All staff Dublin")
    assert [m["subject"] for m in dublin] == ["Message 5", "Message 2", "Message 0"]
    assert dublin == [m for m in everything if m["list_name"] == "All staff Dublin"]  # the list's own entries
    assert await every_page(tracker, 2, list_name="all staff dublin") == []  # exact names only

    times = sorted(m["created_at"] for m in everything)
    since, until = times[1], times[4]  # from the second message up to, not including, the fifth
    expected = [m for m in everything if since <= m["created_at"] < until]
    assert await every_page(tracker, 1, since_ms=since, until_ms=until) == expected
    assert await every_page(tracker, 1, list_name="Engineering", since_ms=since) == [
        m for m in everything if m["list_name"] == "Engineering" and m["created_at"] >= since
    ]

    # A page that runs out of its scan budget hands back a cursor; following it still finds them all.
    monkeypatch.setattr(dashboard, "SCAN_BATCH", 1)
    monkeypatch.setattr(dashboard, "SCAN_BUDGET", 2)
    page, cursor = await filtered_messages(tracker.state, 1, None, "Sales & Marketing")  # scans Messages 5 and 4
    assert page == [] and cursor is not None
    assert [m["subject"] for m in await every_page(tracker, 1, list_name="Sales & Marketing")] == ["Message 3"]

    with pytest.raises(InvalidCursor):
        await filtered_messages(tracker.state, 5, "not-a-cursor")


@pytest.mark.settings(min_segment_size=5)
async def test_the_medians_beside_a_page_reuse_other_messages_headlines_for_a_while(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await register(tracker, 10), await register(tracker, 10)
    for token in tokens_of(a)[:6]:
        await hit(tracker, f"/o/{token}.gif")
    await tracker.flush()
    state, message_a = tracker.state, await message_row(tracker, a["id"])

    def opens(headlines: list[dict[str, Any]]) -> dict[str, int]:
        return {h["id"]: h["opens"]["unique"] for h in headlines}

    page_report = await report_for(state, message_a, None)
    assert opens(await dashboard.context_headlines(state, 20, {a["id"]: page_report})) == {a["id"]: 6, b["id"]: 0}
    for token in tokens_of(b)[:7]:  # message b moves on meanwhile
        await hit(tracker, f"/o/{token}.gif")
    await tracker.flush()
    # Another view of a's page within the TTL: b's headline is the one read before; a's is the page's own.
    assert opens(await dashboard.context_headlines(state, 20, {a["id"]: page_report})) == {a["id"]: 6, b["id"]: 0}
    # The list itself always reads current figures.
    assert opens(await recent_headlines(state, 20)) == {a["id"]: 6, b["id"]: 7}
    monkeypatch.setattr(dashboard, "HEADLINE_TTL_SECONDS", 0.0)
    assert opens(await dashboard.context_headlines(state, 20, {a["id"]: page_report})) == {a["id"]: 6, b["id"]: 7}
