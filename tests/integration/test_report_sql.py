"""Reports aggregated in SQL (``report_sql``) give the very tallies of the reference path (every
event judged by ``judge_copy`` and folded by ``Accumulator``), on a real SQLite and a real
PostgreSQL database, for any copies: bursts, honeypot hits, gateway clicks, proxies, early hits,
unknown reasons, ties, segments, per-copy and aggregate mode."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from politetenant.crypto import Keyring, KeySet, Sealer
from politetenant.tracker.judging.behaviour import CopyRules
from politetenant.tracker.judging.verdicts import Reason
from politetenant.tracker.reports.report_data import (
    Accumulator,
    EventRow,
    SealedTexts,
    Tally,
    load_report_inputs,
)
from politetenant.tracker.reports.thresholds import ALL
from politetenant.tracker.storage import open_store
from politetenant.tracker.storage.rows import Event, MessageRow, RecordRow
from tests.support import scratch_database

KEYRING = Keyring("acme", [KeySet(1, os.urandom(32), os.urandom(32), os.urandom(32))])
SEALER = Sealer(KEYRING)
CREATED = 1_700_000_000_000
CITIES = [SEALER.seal_repeated("event.city", name) for name in ("Dublin", "Cork")]
PLACES = [("mobile", "iOS", "Mail", "IE", CITIES[0]), ("desktop", "Windows", "Outlook", "IE", CITIES[1]),
          ("desktop", "macOS", "Mail", None, None)]  # fmt: skip
REASONS = [*Reason, *[Reason.PERSON] * 6, Reason.PROXIED, 40, 99]  # 99: unknown, its bit is 63
_ids = itertools.count(1)

_hit = st.tuples(
    st.sampled_from([1, 1, 2, 3, 3]),  # kind
    st.sampled_from([None, 0, 1, 1, 2, 2, 3]),  # link (clicks only; 0 the honeypot, 3 above link_count 2)
    st.sampled_from([0, 0, 1, 6, 12, 25, 40]),  # seconds after the copy's start: bursts (10 s), ties
    st.sampled_from(REASONS),
    st.sampled_from([None, 0, 1_500, 6_000, 25_000]),  # read ms
    st.integers(0, len(PLACES) - 1),
)
_every_link = st.builds(  # a burst clicking links 1 and 2, plus anything
    lambda reason, more: [(3, 1, 0, reason, None, 0), (3, 2, 1, reason, None, 1), *more],
    st.sampled_from(REASONS),
    st.lists(_hit, max_size=2),
)
_hits = st.one_of(st.lists(_hit, max_size=6), _every_link)
_copy = st.tuples(st.sampled_from("ABC"), st.integers(0, 600), _hits)  # segment, start (s), hits


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    with scratch_database() as dsn:
        yield [f"sqlite:///{tmp_path_factory.mktemp('report-sql')}/tracker.db", dsn]


def _events(message_id: str, copies: list[tuple[str, int, list[Any]]]) -> tuple[list[RecordRow], list[Event]]:
    records, events = [], []
    for segment, start, hits in copies:
        record_id = next(_ids).to_bytes(16, "big")
        attributes = SEALER.seal("record.attributes", json.dumps({"team": segment}).encode(), row=record_id)
        records.append(RecordRow(record_id, message_id, attributes, None))
        for kind, link, seconds, reason, read_ms, place in hits:
            device, os_, browser, country, city = PLACES[place]
            at = CREATED + (start + seconds) * 1000
            events.append(
                Event(
                    next(_ids).to_bytes(16, "big"),
                    record_id,
                    kind,
                    link if kind == 3 else None,
                    at,
                    country,
                    None,
                    city,
                    os_,
                    device,
                    browser,
                    int(reason),
                    read_ms if kind == 2 else None,
                )
            )
    return records, events


def _reference(rules: CopyRules, events: list[Event], segment_of: dict[bytes, str] | None, tracked: int) -> Any:
    """The tallies of the pure path: every event, in the stream's order, through the Accumulator."""
    ordered = sorted(events, key=lambda e: (e.record_id, e.occurred_at, e.kind, e.event_id))
    rows: list[EventRow] = [
        (e.record_id, e.kind, e.link_no, e.occurred_at, e.country, e.city, e.os, e.device, e.browser, e.bot, e.read_ms)
        for e in ordered
    ]
    first = min((e.occurred_at for e in events), default=None)
    acc = Accumulator(rules, first, segment_of=segment_of, open_city=SealedTexts(SEALER, "event.city"))
    acc.add(rows)
    populations: dict[str, int] = {ALL: tracked}
    if segment_of is not None:
        populations = {}
        for value in segment_of.values():
            populations[value] = populations.get(value, 0) + 1
    return _comparable(acc.finish(populations))


def _comparable(tallies: Any) -> dict[str, Tally]:
    """Lists whose order carries no meaning (median, overlaps) sorted."""
    return {
        segment: dataclasses.replace(t, read_times=sorted(t.read_times), click_masks=sorted(t.click_masks))
        for segment, t in tallies.items()
    }


async def _sql_path(db: str, message: MessageRow, records: list[RecordRow], events: list[Event], rules: CopyRules,
                    attribute: str | None, *, first: int = 0) -> dict[str, Tally]:  # fmt: skip
    """The report's tallies; with ``first``, a report is made after that many events (PostgreSQL folds
    them into its figures) and the rest arrive after it, so the figures are folded in two goes."""
    store = open_store(db)
    await store.connect()
    try:
        await store.migrate()
        await store.insert_message(message, [], records, [])
        if first:
            await store.insert_events(events[:first])
            await load_report_inputs(store, SEALER, message, rules, attribute)
        await store.insert_events(events[first:])
        inputs = await load_report_inputs(store, SEALER, message, rules, attribute)
        return _comparable(inputs.tallies)
    finally:
        await store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    copies=st.lists(_copy, max_size=12),
    per_copy=st.booleans(),
    segmented=st.booleans(),
    link_count=st.integers(0, 3),
    early_s=st.sampled_from([0, 2, 30]),
    arrival=st.randoms(use_true_random=False),
    split=st.floats(0, 1),
)
def test_sql_aggregation_gives_the_reference_tallies_on_both_databases(
    databases: list[str], copies: list[tuple[str, int, list[Any]]], per_copy: bool, segmented: bool,
    link_count: int, early_s: int, arrival: Any, split: float,
) -> None:  # fmt: skip
    """Also when the events arrive in any order, part of them before an earlier report."""
    message_id = f"msg_{next(_ids):020d}"
    records, events = _events(message_id, copies)
    message = MessageRow(message_id, CREATED, "anonymous" if per_copy else "aggregate", b"s", b"s", b"s", b"s",
                         len(records), len(records), 100, 60.0, link_count, "tok")  # fmt: skip
    rules = CopyRules(early_ms=early_s * 1000, burst_ms=10_000, gateway_click_ms=20_000, link_count=link_count,
                      per_copy=per_copy)  # fmt: skip
    segment_of = {r.id: json.loads(SEALER.open("record.attributes", r.attributes or b"", row=r.id))["team"]
                  for r in records} if segmented else None  # fmt: skip
    expected = _reference(rules, events, segment_of, len(records))
    arrival.shuffle(events)
    first = int(len(events) * split)
    for db in databases:
        got = asyncio.run(_sql_path(db, message, records, events, rules, "team" if segmented else None, first=first))
        assert got == expected, db.split(":")[0]


def test_a_gateway_tenants_copies_are_judged_by_their_behaviour_in_sql_too(databases: list[str]) -> None:
    """A plain case: most copies aggregated in SQL; gateway clicks, a honeypot burst and a burst
    clicking every link judged event by event. The figures a user reads are the reference's."""
    copies: list[tuple[str, int, list[Any]]] = [
        ("A", 0, [(1, None, 0, Reason.PERSON, None, 0)]),  # the message's first hit: an early open
        ("A", 300, [(1, None, 0, Reason.PERSON, None, 0), (3, 1, 5, Reason.GATEWAY_NETWORK, None, 0)]),
        ("B", 400, [(3, 1, 0, Reason.GATEWAY_NETWORK, None, 1)]),  # no open before: the gateway's check
        ("B", 500, [(1, None, 0, Reason.PERSON, None, 1), (3, 0, 1, Reason.PERSON, None, 1)]),  # honeypot burst
        ("C", 600, [(1, None, 0, Reason.PROXIED, None, 2), (2, None, 3, Reason.PERSON, 6_000, 1)]),
        ("C", 700, [(3, 2, 0, Reason.PERSON, None, 0), (3, 1, 4, Reason.PERSON, None, 0)]),  # every link at once
    ]
    message_id = f"msg_{next(_ids):020d}"
    records, events = _events(message_id, copies)
    message = MessageRow(message_id, CREATED, "anonymous", b"s", b"s", b"s", b"s", 6, 6, 100, 60.0, 2, "tok")
    rules = CopyRules(early_ms=2_000, burst_ms=10_000, gateway_click_ms=20_000, link_count=2)
    expected = _reference(rules, events, None, 6)[ALL]
    assert (expected.opens_unique, expected.clicks_unique, expected.machine_records) == (2, 1, 4)
    for db in databases:
        got = asyncio.run(_sql_path(db, message, records, events, rules, None))[ALL]
        assert got == expected, db.split(":")[0]
