"""PostgreSQL: what each record's events add up to, kept folded in ``record_figures``.

A report needs, per record, a handful of figures (first open and its place, first click, longest
read, clicks per link, machine reasons, per-hit counts); grouping a million events by record costs
seconds on every report, while the figures only change when events arrive. So they are folded in as
events arrive: each fold reads only the events stored since the last one (``events.seq`` above the
watermark in ``figures_folded``) and combines them with the stored figures. Every figure is
composable: counts add, first times take the least, the first open's place goes with the least
(time, kind, event id) as the event stream orders hits, reason and link bits are ORed.

The figures are judged as ``judge_copy`` would judge a record's hits without the two rules that need
more than the record's own events: the early window (it starts at the message's first hit) and the
per-copy rules (bursts, gateway clicks, every-link bursts). A record that either may touch is a
*candidate* at report time (``figures_sql``): its first person hit falls in the early window, or its
flags say a per-copy rule could fire. Candidates are streamed event by event through ``judge_copy``
as before, so the behaviour rules stay in one place. Flags may over-flag, never under-flag: a
candidate costs speed, a missed one would cost correctness.

Safety of the watermark: sequence numbers are drawn inside the inserting transaction, so a smaller
number can commit after a larger one. Every such transaction holds ``events`` in ROW EXCLUSIVE mode
from before it draws its first number until it ends. So a fold reads the highest committed number,
then waits for the transactions holding that lock at that moment to end (``pg_locks``; one batch,
a few ms); every number up to it is then committed or gone for good. It takes no table lock itself:
``LOCK TABLE ... SHARE`` would do the same, but would also stall ingest meanwhile and cancel any
autovacuum of ``events`` it waits on, every few seconds.
Folds are serialised by an advisory lock: the tracker folds every few seconds (skipping when
another worker is at it) and a report folds what is left first, so it is exact when it starts.

Deleting events (retention's interaction purge) makes a record's figures too high: the purge marks
those records (``Store.events_deleted``, into ``figures_stale``) and the next fold, under its lock,
rebuilds them from the events they have left (retention sits below reports, so it only marks them).
Deleting a record (erasure, a message's purge) removes its figures with it (``ON DELETE CASCADE``).
The first open's sealed city is copied here: key rotation reseals it with the events'
(``privacy.reseal``).
SQLite, the single-node default, reports from its events directly (``report_sql``): no figures.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from politetenant.tracker.judging.behaviour import CLICK, OPEN, CopyRules
from politetenant.tracker.judging.verdicts import Reason
from politetenant.tracker.reports.report_sql import (
    MAX_LINK_COLUMNS,
    NOT_MACHINE,
    PEOPLE,
    PERSON,
    PRIVACY,
    PROXIED,
    count_when,
    judged_reason,
    link_columns,
)
from politetenant.tracker.storage.base import StorageUnavailable, Store
from politetenant.tracker.storage.postgres import PostgresStore

log = logging.getLogger("politetenant.tracker.figures")

FOLD_SECONDS = 5.0  # a tracker folds this often: what a report folds first stays a few seconds' worth
WAIT_SECONDS = 30.0  # a report waits this long at most for a write in progress (one batch: ms)
LOCK_WAIT_SECONDS = 30.0  # ... and for another worker's fold to end (a few seconds' events: ms)
TIMER_WAIT_SECONDS = 2.0
FOLD_LOCK = 7_415_553_002  # advisory lock id: one fold at a time (migrations hold ..._001)
FOLD_CHUNK = 500_000  # sequence numbers per transaction
FOLD_ATTEMPTS = 3
REFOLD_BATCH = 1_000  # record ids per rebuild statement

#: Stored per record, in this order (the table's columns after ``record_id`` and ``message_id``).
COLUMNS = (
    "first_hit",  # the record's first hit, whoever made it: the message's is where the early window starts
    "first_people",  # a person's first hit of any kind: whether the early window touches the record
    "first_open", "open_kind", "open_event", "open_bot", "device", "os", "browser", "country", "city",
    "first_click", "read_ms", "reasons", "proxied", "privacy",
    "opens", "proxied_opens", "privacy_opens", "machine_opens", "machine_clicks", "clicks",
    "link_clicks",  # people's clicks on links 1..n (n: the highest link clicked, at most 62)
    "max_link",  # the highest link 1..62 a person clicked
    "odd_click",  # a person clicked a link with no column (none, below 1, above 62)
    "click_mask",  # bit n: any click on link n (0..62), bit 63: on any other link
    "honeypot_bot", "gateway_click",
)  # fmt: skip
_COUNTS = ("opens", "proxied_opens", "privacy_opens", "machine_opens", "machine_clicks", "clicks")
_PLACE = ("open_kind", "open_event", "open_bot", "device", "os", "browser", "country", "city")


def fold_sql(links: int, where: str) -> str:
    """Fold the events matching ``where`` (over ``events e``) into ``record_figures``; ``links``: the
    highest link number 1..62 a person clicked among them (sizes ``link_clicks``)."""
    people = f"why IN ({PEOPLE})"
    machine = f"why NOT IN ({NOT_MACHINE})"
    per_link = ", ".join(count_when(f"kind = {CLICK} AND {people} AND link_no = {n}") for n in range(1, links + 1))
    bit = f"CAST(1 AS BIGINT) << (CASE WHEN link_no BETWEEN 0 AND {MAX_LINK_COLUMNS} THEN link_no ELSE 63 END)"
    aggregate = (
        "SELECT rid, MIN(mid) AS mid, MIN(at) AS first_hit,"
        f" MIN(CASE WHEN bot IN ({PEOPLE}) THEN at END) AS first_people,"
        f" MIN(CASE WHEN kind <> {CLICK} AND {people} THEN at END) AS first_open,"
        f" MIN(CASE WHEN kind = {CLICK} AND {people} THEN at END) AS first_click,"
        f" MAX(CASE WHEN kind <> {OPEN} AND kind <> {CLICK} AND why IN ({PERSON}) THEN COALESCE(read_ms, 0) END)"
        " AS read_ms,"
        f" COALESCE(BIT_OR(CASE WHEN {machine} THEN CAST(1 AS BIGINT) << (CASE WHEN why BETWEEN 0 AND 62 THEN why"
        " ELSE 63 END) END), 0) AS reasons,"
        f" BOOL_OR(kind <> {CLICK} AND why IN ({PROXIED})) AS proxied, BOOL_OR(why IN ({PRIVACY})) AS privacy,"
        f" {count_when(f'kind = {OPEN} AND {people}')} AS opens, {count_when(f'kind = {OPEN} AND why IN ({PROXIED})')}"
        f" AS proxied_opens, {count_when(f'kind = {OPEN} AND why IN ({PRIVACY})')} AS privacy_opens,"
        f" {count_when(f'kind = {OPEN} AND {machine}')} AS machine_opens, {count_when(f'kind = {CLICK} AND {machine}')}"
        f" AS machine_clicks, {count_when(f'kind = {CLICK} AND {people}')} AS clicks,"
        f" ARRAY[{per_link}]::BIGINT[] AS link_clicks,"
        f" MAX(CASE WHEN kind = {CLICK} AND {people} AND link_no BETWEEN 1 AND {MAX_LINK_COLUMNS} THEN link_no END)"
        " AS max_link,"
        f" BOOL_OR(kind = {CLICK} AND {people} AND (link_no IS NULL OR link_no < 1 OR link_no > {MAX_LINK_COLUMNS}))"
        " AS odd_click,"
        f" COALESCE(BIT_OR(CASE WHEN kind = {CLICK} THEN {bit} END), 0) AS click_mask,"
        f" BOOL_OR(bot = {int(Reason.HONEYPOT)}) AS honeypot_bot,"
        f" BOOL_OR(kind = {CLICK} AND bot = {int(Reason.GATEWAY_NETWORK)}) AS gateway_click"
        " FROM h GROUP BY rid"
    )
    # The first open, as the event stream orders hits: its place goes with it.
    first = (
        "SELECT DISTINCT ON (rid) rid, kind, event_id, bot, device, os, browser, country, city FROM h"
        f" WHERE kind <> {CLICK} AND bot IN ({PEOPLE}) ORDER BY rid, at, kind, event_id"
    )
    place = dict(zip(_PLACE, ("kind", "event_id", "bot", "device", "os", "browser", "country", "city"), strict=True))
    values = [f"o.{place[c]}" if c in place else f"a.{c}" for c in COLUMNS]
    f, x = "record_figures", "excluded"
    earlier = (
        f"{f}.first_open IS NULL OR ({x}.first_open, {x}.open_kind, {x}.open_event)"
        f" < ({f}.first_open, {f}.open_kind, {f}.open_event)"
    )
    combine = {
        **{c: f"LEAST({f}.{c}, {x}.{c})" for c in ("first_hit", "first_people", "first_open", "first_click")},
        **{c: f"CASE WHEN {earlier} THEN {x}.{c} ELSE {f}.{c} END" for c in _PLACE},
        "read_ms": f"GREATEST({f}.read_ms, {x}.read_ms)",
        "max_link": f"GREATEST({f}.max_link, {x}.max_link)",
        **{c: f"{f}.{c} | {x}.{c}" for c in ("reasons", "click_mask")},
        **{c: f"{f}.{c} OR {x}.{c}" for c in ("proxied", "privacy", "odd_click", "honeypot_bot", "gateway_click")},
        **{c: f"{f}.{c} + {x}.{c}" for c in _COUNTS},
        "link_clicks": (
            f"ARRAY(SELECT COALESCE(s, 0) + COALESCE(t, 0) FROM unnest({f}.link_clicks, {x}.link_clicks)"
            " WITH ORDINALITY AS u(s, t, n) ORDER BY n)"
        ),
    }
    assert set(combine) == set(COLUMNS), set(COLUMNS) ^ set(combine)
    return (
        "WITH h AS MATERIALIZED (SELECT e.record_id AS rid, r.message_id AS mid, e.kind, e.link_no,"
        " e.occurred_at AS at, e.read_ms, e.bot, e.event_id, e.device, e.os, e.browser, e.country, e.city,"
        f" {judged_reason('e', early=False)} AS why FROM events e JOIN records r ON r.id = e.record_id WHERE {where}),"
        f" a AS ({aggregate}), o AS ({first})"
        f" INSERT INTO {f} (record_id, message_id, {', '.join(COLUMNS)})"
        f" SELECT a.rid, a.mid, {', '.join(values)} FROM a LEFT JOIN o ON o.rid = a.rid"
        f" ON CONFLICT (record_id) DO UPDATE SET {', '.join(f'{c} = {combine[c]}' for c in COLUMNS)}"
    )


def enabled(store: Store) -> bool:
    """Figures are PostgreSQL's (migration 6 creates them there only)."""
    return isinstance(store, PostgresStore)


_HIGHEST_LINK = (
    f"SELECT MAX(link_no) FROM events e WHERE {{where}} AND kind = {CLICK} AND link_no BETWEEN 1 AND {MAX_LINK_COLUMNS}"
)


async def _fold(conn: Any, where: str, *args: Any) -> None:
    links = await conn.fetchval(_HIGHEST_LINK.format(where=where), *args)
    await conn.execute(fold_sql(int(links or 0), where), *args)


_WRITERS = (
    "SELECT virtualtransaction FROM pg_locks WHERE locktype = 'relation' AND relation = 'events'::regclass"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND mode = 'RowExclusiveLock' AND granted AND pid <> pg_backend_pid()"
)


async def _writers_ended(conn: Any, *, wait: bool) -> bool:
    """Wait until the transactions writing ``events`` now have ended (see the module's docstring).
    False when they take too long for the timer; a report's fold raises instead."""
    writers = [row[0] for row in await conn.fetch(_WRITERS)]
    deadline = asyncio.get_running_loop().time() + (WAIT_SECONDS if wait else TIMER_WAIT_SECONDS)
    while writers:
        if asyncio.get_running_loop().time() > deadline:
            if wait:
                raise StorageUnavailable("PostgreSQL: a transaction writing events has not ended")
            return False
        await asyncio.sleep(0.005)
        writers = [row[0] for row in await conn.fetch(f"{_WRITERS} AND virtualtransaction = ANY($1)", writers)]
    return True


async def _rebuild_stale(conn: Any, done: int) -> None:
    """Records some of whose events were deleted (``Store.events_deleted``): their figures are made
    again from the events they have left that earlier folds covered (later ones are this fold's)."""
    stale = [row[0] for row in await conn.fetch("DELETE FROM figures_stale RETURNING record_id")]
    for start in range(0, len(stale), REFOLD_BATCH):
        chunk = stale[start : start + REFOLD_BATCH]
        await conn.execute("DELETE FROM record_figures WHERE record_id = ANY($1::bytea[])", chunk)
        await _fold(conn, "e.record_id = ANY($1::bytea[]) AND e.seq <= $2", chunk, done)


async def fold(store: Store, *, wait: bool = True) -> int:
    """Fold the events stored since the last fold; how many sequence numbers it covered.

    ``wait=False`` (the tracker's timer) gives way to a fold in progress; a report waits for it, so
    its figures hold every event stored before it began. The lock is the transaction's: it ends with
    it, whatever happens to the connection (the pool keeps no session state)."""
    if not isinstance(store, PostgresStore):
        return 0
    covered = 0
    async with store.session() as conn:
        while True:  # a chunk of sequence numbers per transaction: an upgrade's first fold stays bounded
            for attempt in range(FOLD_ATTEMPTS):
                try:
                    chunk = await _fold_chunk(conn, wait=wait)
                    break
                except asyncpg.ForeignKeyViolationError:
                    # A record erased between reading its events and writing its figures: the
                    # transaction is gone, nothing of it kept; the next attempt no longer sees it.
                    if attempt == FOLD_ATTEMPTS - 1:
                        raise
            if chunk is None:
                return covered
            covered += chunk


async def _fold_chunk(conn: Any, *, wait: bool) -> int | None:
    """One transaction of ``fold``: the sequence numbers it covered, None when there is nothing (more)
    to fold or the timer gives way."""
    async with conn.transaction():
        if wait:
            # A long fold in progress (an upgrade's first, over every stored event): a report says
            # "try again shortly" (503) rather than hold its client for minutes.
            await conn.execute(f"SET LOCAL lock_timeout = '{int(LOCK_WAIT_SECONDS * 1000)}ms'")
            try:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", FOLD_LOCK)
            except asyncpg.LockNotAvailableError:
                raise StorageUnavailable("PostgreSQL: report figures are being folded") from None
        elif not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", FOLD_LOCK):
            return None
        done = await conn.fetchval("SELECT seq FROM figures_folded")
        await _rebuild_stale(conn, done)
        highest = await conn.fetchval("SELECT MAX(seq) FROM events")
        if highest is None or highest <= done:
            return None
        if not await _writers_ended(conn, wait=wait):
            return None  # the timer tries again at its next tick
        upto = min(highest, done + FOLD_CHUNK)
        await _fold(conn, "e.seq > $1 AND e.seq <= $2", done, upto)
        await conn.execute("UPDATE figures_folded SET seq = $1", upto)
        return int(upto - done)


async def keep_folded(store: Store, stopping: asyncio.Event, every: float = FOLD_SECONDS) -> None:
    """A tracker's timer: fold every ``every`` seconds until ``stopping`` is set. A failed fold (the
    database is away) is tried again at the next tick; nothing is lost, the events wait in their table."""
    while not stopping.is_set():
        try:
            await asyncio.wait_for(stopping.wait(), every)
            return
        except TimeoutError:
            pass
        try:
            await fold(store, wait=False)
        except Exception as exc:  # the next tick tries again
            log.warning("report figures: fold failed (%s); trying again in %.0f s", type(exc).__name__, every)


async def first_hit(store: Store, message_id: str) -> int | None:
    """The message's first hit from its records' figures (``report_data.first_hit`` reads every event)."""
    rows = await store.fetch("SELECT MIN(first_hit) FROM record_figures WHERE message_id = $1", message_id)
    return None if not rows or rows[0][0] is None else int(rows[0][0])


def figures_sql(rules: CopyRules) -> str:
    """One row per record of message ``$1`` with events (``$2``: the end of the early window), with
    the columns ``report_sql.records_sql`` gives on PostgreSQL, read from the folded figures."""
    links, link_count = link_columns(rules), rules.link_count
    flags = ["f.first_people < $2", "f.odd_click", f"COALESCE(f.max_link, 0) > {links}"]
    if rules.per_copy:
        flags += ["(f.click_mask & 1) <> 0", "f.honeypot_bot", "f.gateway_click"]
        if link_count >= 2:  # every link clicked; bit 63 stands for all links above 62 (may over-flag)
            wanted = sum(1 << n for n in range(1, links + 1)) | (1 << 63 if link_count > MAX_LINK_COLUMNS else 0)
            signed = wanted - (1 << 64) if wanted >= 1 << 63 else wanted  # BIGINT is signed
            flags.append(f"(f.click_mask & CAST({signed} AS BIGINT)) = CAST({signed} AS BIGINT)")
    per_link = "".join(f", COALESCE(f.link_clicks[{n}], 0) AS link_{n}" for n in range(1, links + 1))
    return (
        f"SELECT f.record_id AS rid, CASE WHEN {' OR '.join(f'COALESCE({c}, FALSE)' for c in flags)} THEN 1 ELSE 0 END"
        " AS candidate, f.first_open, f.first_click, f.read_ms, f.reasons,"
        " CASE WHEN f.proxied THEN 1 ELSE 0 END AS proxied, CASE WHEN f.privacy THEN 1 ELSE 0 END AS privacy,"
        " f.opens, f.proxied_opens, f.privacy_opens, f.machine_opens, f.machine_clicks, f.clicks"
        f"{per_link}, f.open_bot AS bot, f.device, f.os, f.browser, f.country, f.city"
        " FROM record_figures f WHERE f.message_id = $1"
    )
