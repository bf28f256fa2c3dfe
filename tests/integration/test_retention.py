"""Retention on SQLite and PostgreSQL: exactly what is older than each cutoff goes, in bounded batches.

Data is registered and hit through the real app, then aged by rewriting its timestamps.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from politetenant.tracker.cli.keys_cli import run_purge
from politetenant.tracker.http.auth import Role
from politetenant.tracker.privacy import audit
from politetenant.tracker.privacy.retention import DAY_MS, PurgeProgress, PurgeResult, purge
from politetenant.tracker.storage.base import Store
from tests.conftest import Tracker
from tests.support import IP_DUBLIN, UA_IPHONE_MAIL, message_body

RETENTION = {"retention_interaction_days": 30, "retention_message_days": 365}
TABLES = ("messages", "recipients", "records", "links", "events")


async def register(t: Tracker, recipients: int = 12) -> tuple[str, list[str]]:
    resp = await t.client.post("/api/v1/messages", json=message_body(recipients), headers=t.auth(Role.SENDER))
    assert resp.status == 201, await resp.text()
    out = await resp.json()
    return out["id"], [r["token"] for r in out["recipients"]]


async def hit(t: Tracker, path: str) -> None:
    headers = {"User-Agent": UA_IPHONE_MAIL, "X-Forwarded-For": IP_DUBLIN}
    resp = await t.client.get(path, headers=headers, allow_redirects=False)
    assert resp.status in (200, 302), path


async def event_ids(store: Store, message_id: str) -> list[bytes]:
    rows = await store.fetch(
        "SELECT e.event_id FROM events e JOIN records r ON r.id = e.record_id WHERE r.message_id = $1"
        " ORDER BY e.event_id",
        message_id,
    )
    return [bytes(r[0]) for r in rows]


async def set_event_times(store: Store, ids: list[bytes], at_ms: int) -> None:
    for event_id in ids:
        assert await store.execute("UPDATE events SET occurred_at = $1 WHERE event_id = $2", at_ms, event_id) == 1


async def set_created(store: Store, message_id: str, at_ms: int) -> None:
    assert await store.execute("UPDATE messages SET created_at = $1 WHERE id = $2", at_ms, message_id) == 1


async def counts(store: Store) -> dict[str, int]:
    return {table: await store.count_rows(table) for table in TABLES}


async def rows_of(store: Store, message_id: str) -> dict[str, int]:
    """Rows that belong to one message, table by table."""
    found = {}
    for table in ("recipients", "records", "links"):
        found[table] = (await store.fetch(f"SELECT COUNT(*) FROM {table} WHERE message_id = $1", message_id))[0][0]
    found["events"] = len(await event_ids(store, message_id))
    found["messages"] = (await store.fetch("SELECT COUNT(*) FROM messages WHERE id = $1", message_id))[0][0]
    return found


async def audit_entries(store: Store) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in await store.fetch("SELECT action, outcome, detail FROM audit ORDER BY id")]


@dataclass
class Aged:
    """Three messages of different ages, with events on both sides of the interaction cutoff."""

    now: int
    old: str  # older than the message cutoff: goes with everything it has
    mid: str  # younger than the message cutoff, has events older than the interaction cutoff
    edge: str  # created exactly at the message cutoff: kept
    old_links: int


async def three_ages(t: Tracker) -> Aged:
    store = t.state.store
    now = int(time.time() * 1000)
    interaction_cutoff, message_cutoff = now - 30 * DAY_MS, now - 365 * DAY_MS
    old, old_tokens = await register(t)
    mid, mid_tokens = await register(t)
    edge, edge_tokens = await register(t)
    for token in old_tokens[:3]:
        await hit(t, f"/o/{token}.gif")
    await hit(t, f"/c/{old_tokens[0]}/1")
    for token in mid_tokens[:4]:
        await hit(t, f"/o/{token}.gif")
    await hit(t, f"/o/{edge_tokens[0]}.gif")
    await t.flush()

    await set_created(store, old, now - 400 * DAY_MS)
    await set_created(store, mid, now - 100 * DAY_MS)
    await set_created(store, edge, message_cutoff)
    old_events = await event_ids(store, old)
    await set_event_times(store, old_events[:3], now - 399 * DAY_MS)  # by age
    await set_event_times(store, old_events[3:], now - DAY_MS)  # recent, but its message goes
    mid_events = await event_ids(store, mid)
    await set_event_times(store, mid_events[:2], interaction_cutoff - 1)  # by age
    await set_event_times(store, mid_events[2:3], interaction_cutoff)  # exactly at the cutoff: kept
    await set_event_times(store, mid_events[3:], now - DAY_MS)
    links = (await store.fetch("SELECT COUNT(*) FROM links WHERE message_id = $1", old))[0][0]
    return Aged(now=now, old=old, mid=mid, edge=edge, old_links=links)


def assert_three_ages_counts(result: PurgeResult, aged: Aged) -> None:
    assert result.refused_for_legal_hold is False
    assert (result.events, result.message_events) == (5, 1)
    assert (result.messages, result.recipients, result.records) == (1, 12, 12)
    assert result.links == aged.old_links == 3  # two tracked links and the honeypot


@pytest.mark.settings(**RETENTION)
async def test_purge_deletes_exactly_what_is_older_than_each_cutoff(tracker: Tracker) -> None:
    store, keyring = tracker.state.store, tracker.state.keyring
    aged = await three_ages(tracker)
    before = await counts(store)

    result = await purge(store, tracker.state.settings, keyring, now_ms=aged.now)

    assert_three_ages_counts(result, aged)
    assert await rows_of(store, aged.old) == {"messages": 0, "recipients": 0, "records": 0, "links": 0, "events": 0}
    assert await rows_of(store, aged.mid) == {"messages": 1, "recipients": 12, "records": 12, "links": 3, "events": 2}
    assert await rows_of(store, aged.edge) == {"messages": 1, "recipients": 12, "records": 12, "links": 3, "events": 1}
    after = await counts(store)
    assert {t: before[t] - after[t] for t in TABLES} == {
        "messages": 1, "recipients": 12, "records": 12, "links": 3, "events": 6,
    }  # fmt: skip
    resp = await tracker.client.get(f"/api/v1/messages/{aged.mid}/report", headers=tracker.auth(Role.ANALYST))
    assert (await resp.json())["opens"] == {"unique": 2, "total": 2}  # what is left still reports
    entries = [e for e in await audit_entries(store) if e[0] == "purge"]  # report reads are audited too
    assert entries[-1] == (
        "purge", "ok", "events=6 messages=1 recipients=12 records=12 links=3",
    )  # fmt: skip
    assert (await audit.verify_chain(store, keyring)).ok


@pytest.mark.settings(**RETENTION)
async def test_a_report_made_before_a_purge_counts_only_what_is_left_after_it(tracker: Tracker) -> None:
    """On PostgreSQL the first report folds the events into per-record figures; the purge takes
    two of those events while their records stay, so their figures are rebuilt."""
    aged = await three_ages(tracker)
    report = f"/api/v1/messages/{aged.mid}/report"
    before = await (await tracker.client.get(report, headers=tracker.auth(Role.ANALYST))).json()
    assert before["opens"] == {"unique": 4, "total": 4}

    state = tracker.state
    await purge(state.store, state.settings, state.keyring, now_ms=aged.now)

    after = await (await tracker.client.get(report, headers=tracker.auth(Role.ANALYST))).json()
    assert after["opens"] == {"unique": 2, "total": 2}


@pytest.mark.settings(**RETENTION)
async def test_a_second_purge_finds_nothing_left(tracker: Tracker) -> None:
    aged = await three_ages(tracker)
    state = tracker.state
    await purge(state.store, state.settings, state.keyring, now_ms=aged.now)
    again = await purge(state.store, state.settings, state.keyring, now_ms=aged.now)
    assert again.total_rows == 0


@pytest.mark.settings(**RETENTION)
async def test_purge_runs_in_bounded_batches(tracker: Tracker) -> None:
    store = tracker.state.store
    now = int(time.time() * 1000)
    kept, kept_tokens = await register(tracker, 50)
    old, old_tokens = await register(tracker, 50)
    for token in kept_tokens + old_tokens:
        await hit(tracker, f"/o/{token}.gif")
    await tracker.flush()
    await set_event_times(store, await event_ids(store, kept), now - 40 * DAY_MS)
    await set_created(store, old, now - 400 * DAY_MS)

    statements: list[PurgeProgress] = []
    result = await purge(store, tracker.state.settings, tracker.state.keyring, now_ms=now, batch=7,
                         progress=statements.append)  # fmt: skip

    assert (result.events, result.message_events, result.records, result.recipients) == (50, 50, 50, 50)
    assert result.messages == 1 and result.links == 3
    assert all(0 <= s.rows <= 7 for s in statements)
    per_table = {t: [s.rows for s in statements if s.table == t] for t in {s.table for s in statements}}
    assert sum(per_table["events"]) == 50 and len(per_table["events"]) == 8  # 7 x 7 + 1
    assert sum(per_table["message_events"]) == 50 and len(per_table["message_events"]) >= 8
    assert sum(per_table["records"]) == 50 and len(per_table["records"]) == 8
    assert sum(per_table["recipients"]) == 50 and len(per_table["recipients"]) == 8
    assert result.statements > len(statements)  # the page look-ups are statements too
    assert await rows_of(store, kept) == {"messages": 1, "recipients": 50, "records": 50, "links": 3, "events": 0}
    assert await rows_of(store, old) == {"messages": 0, "recipients": 0, "records": 0, "links": 0, "events": 0}


@pytest.mark.settings(**RETENTION)
async def test_dry_run_deletes_nothing_and_counts_what_a_real_run_then_deletes(tracker: Tracker) -> None:
    state = tracker.state
    aged = await three_ages(tracker)
    before = await counts(state.store)

    dry = await purge(state.store, state.settings, state.keyring, now_ms=aged.now, dry_run=True)
    assert dry.dry_run
    assert_three_ages_counts(dry, aged)
    assert await counts(state.store) == before

    real = await purge(state.store, state.settings, state.keyring, now_ms=aged.now, batch=4)
    assert (real.events, real.message_events, real.messages, real.recipients, real.records, real.links) == (
        dry.events, dry.message_events, dry.messages, dry.recipients, dry.records, dry.links,
    )  # fmt: skip
    outcomes = [(action, outcome) for action, outcome, _ in await audit_entries(state.store)]
    assert outcomes[-2:] == [("purge", "dry-run"), ("purge", "ok")]


@pytest.mark.settings(legal_hold=True, **RETENTION)
async def test_legal_hold_refuses_and_deletes_nothing(tracker: Tracker) -> None:
    state = tracker.state
    aged = await three_ages(tracker)
    before = await counts(state.store)

    result = await purge(state.store, state.settings, state.keyring, now_ms=aged.now)

    assert result.refused_for_legal_hold
    assert result.total_rows == 0
    assert await counts(state.store) == before
    assert (await audit_entries(state.store))[-1] == ("purge", "refused", "legal_hold=on events=0 messages=0")


# -- the command -----------------------------------------------------------------------------------
@pytest.mark.settings(retention_interaction_days=30, retention_message_days=365)
async def test_purge_command_dry_run_prints_counts_and_the_real_run_deletes_them(
    tracker: Tracker, db_url: str, tmp_path: Path
) -> None:
    store = tracker.state.store
    old, tokens = await register(tracker)
    for token in tokens[:4]:
        await hit(tracker, f"/o/{token}.gif")
    await tracker.flush()
    await set_created(store, old, int(time.time() * 1000) - 400 * DAY_MS)
    keys, settings = f"local:{tmp_path}/keys.json", tracker.state.settings

    out = io.StringIO()
    assert await asyncio.to_thread(run_purge, db_url, keys, settings, dry_run=True, out=out) == 0
    assert "would delete events=4 (by age 0, with their message 4) messages=1 recipients=12 records=12" in (
        out.getvalue()
    )
    assert "nothing was deleted" in out.getvalue()
    assert await store.count_rows("messages") == 1

    out = io.StringIO()
    assert await asyncio.to_thread(run_purge, db_url, keys, settings, out=out) == 0
    assert "purge done: deleted events=4 (by age 0, with their message 4) messages=1" in out.getvalue()
    assert await store.count_rows("messages") == 0


@pytest.mark.settings(legal_hold=True)
async def test_purge_command_under_legal_hold_says_so_and_exits_0(
    tracker: Tracker, db_url: str, tmp_path: Path
) -> None:
    await register(tracker)
    out = io.StringIO()
    code = await asyncio.to_thread(run_purge, db_url, f"local:{tmp_path}/keys.json", tracker.state.settings, out=out)
    assert code == 0
    assert "purge refused: a legal hold is on; nothing was deleted" in out.getvalue()
    assert await tracker.state.store.count_rows("messages") == 1


@pytest.mark.settings(**RETENTION)
async def test_a_purged_message_takes_what_an_erasure_left_of_its_records(tracker: Tracker) -> None:
    """An erasure keeps its records' ids (and their message, for clicks: storage.erased) as long as
    the message is kept; a purge of the message takes them too, and the other messages' stay."""
    store = tracker.state.store
    sent = []
    for _ in range(2):
        body = message_body(12, mode="individual")  # records linkable to a person: what an erasure deletes
        resp = await tracker.client.post("/api/v1/messages", json=body, headers=tracker.auth(Role.SENDER))
        assert resp.status == 201, await resp.text()
        sent.append((await resp.json())["id"])
    old, kept = sent
    erased = await tracker.client.post(
        "/api/v1/subjects/erase", json={"email": "person000000@example.com"}, headers=tracker.auth(Role.PRIVACY)
    )
    assert erased.status == 200, await erased.text()
    left = "SELECT message_id FROM erased_records ORDER BY message_id"
    assert [row[0] for row in await store.fetch(left)] == sorted([old, kept])  # one record in each
    now = int(time.time() * 1000)
    await set_created(store, old, now - 400 * DAY_MS)

    await purge(store, tracker.state.settings, tracker.state.keyring, now_ms=now)

    assert [row[0] for row in await store.fetch(left)] == [kept]
