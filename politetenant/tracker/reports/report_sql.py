"""The common case of a report aggregated in SQL: one row per record instead of every event.

Report-time rules (``judging.behaviour.judge_copy``) change a copy's stored reasons in only two
ways that a row-by-row expression can reproduce: a person's hit in the early window becomes
``EARLY_HIT``, a person's click on the honeypot link ``HONEYPOT``. The other rules (a burst with a
honeypot hit, a burst clicking every tracked link, a click from a gateway network) need the copy's
hits in order, and can only fire on a record that has a honeypot hit, a gateway click or a click on
every tracked link. So one query, grouped by record:

- flags those *candidates* (per-copy mode only; also a person's click on a link the query has no
  column for): their events are then streamed in order through ``Accumulator`` and ``judge_copy``,
  which stay the one place the behaviour rules are decided;
- for every other record, judges each hit in SQL as ``judge_copy`` would and returns what the
  record contributes (``RecordSummary``): first open and its place, first click, longest read,
  clicks per link, machine reasons, proxy flags, per-hit counts. ``Accumulator.add_record`` folds
  it into the same ``Tally`` a run of hits would give.

The verdict class of each stored reason is written into the SQL from ``judging.verdicts``, never
typed here. Ties are broken as the event stream orders hits: (occurred_at, kind, event_id).
The rows are streamed: memory holds a batch of per-record rows and the candidates' ids (bounded by
the records, usually few), never the events. This is SQLite's path; PostgreSQL keeps the same
per-record columns folded as events arrive (``figures``) and groups them itself (``report_sql_pg``).
``figures`` writes its SQL from the same reason lists (``PEOPLE``, ``NOT_MACHINE``, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, NamedTuple

from politetenant.tracker.judging.behaviour import CLICK, HONEYPOT_LINK, OPEN, CopyRules
from politetenant.tracker.judging.verdicts import Reason, VerdictClass, person_reasons, reasons_of
from politetenant.tracker.storage.base import Store, marks

MAX_LINK_COLUMNS = 62  # clicks on links above this go through the event stream (bit 63 is the unknown reason)
CANDIDATE_BATCH = 500  # record ids per query (well under SQLite's parameter limit)
#: Tally figures a record adds to hit by hit, in the order of ``RecordSummary.per_hit``.
PER_HIT = (
    "opens_total",
    "proxied_opens_total",
    "privacy_opens_total",
    "machine_opens",
    "machine_clicks",
    "clicks_total",
)
Place = tuple[str, str, str, str | None, bytes | None]  # device, os, browser, country, city (sealed)


def _in(reasons: Iterable[int]) -> str:
    listed = ", ".join(str(int(r)) for r in reasons)
    if not listed:
        raise ValueError("a verdict class without reasons cannot be written as SQL")
    return listed


PEOPLE = _in(person_reasons())  # person and proxied: people's opens and clicks
PERSON = _in(reasons_of(VerdictClass.PERSON))  # reads: a person's own client only
PROXIED = _in(reasons_of(VerdictClass.PROXIED))
PRIVACY = _in(reasons_of(VerdictClass.PRIVACY_PROXY))
NOT_MACHINE = _in([*person_reasons(), *reasons_of(VerdictClass.PRIVACY_PROXY)])  # any other number: machine
_PROXIED_REASONS = frozenset(int(r) for r in reasons_of(VerdictClass.PROXIED))


def judged_reason(e: str, *, early: bool = True) -> str:
    """``judge_copy``'s reason for a hit of a record that is not a candidate (``$2``: the end of the
    early window), as SQL over the events alias ``e``. Without ``early`` (``figures``, folded before
    the window is known), only a person's click on the honeypot link changes."""
    window = f" WHEN {e}.bot IN ({PEOPLE}) AND {e}.occurred_at < $2 THEN {int(Reason.EARLY_HIT)}" if early else ""
    return (
        f"CASE WHEN {e}.bot IN ({PEOPLE}) AND {e}.kind = {CLICK} AND {e}.link_no = {HONEYPOT_LINK}"
        f" THEN {int(Reason.HONEYPOT)}{window} ELSE {e}.bot END"
    )


def _people_open(e: str) -> str:
    """An open or read ``judged_reason`` leaves a person's (the honeypot rule is about clicks), in
    terms the planner can estimate: with a good row estimate the join back is a hash join."""
    return f"{e}.kind <> {CLICK} AND {e}.bot IN ({PEOPLE}) AND {e}.occurred_at >= $2"


def _candidate(rules: CopyRules, links: int) -> str:
    """1 when a per-copy rule may fire on the record, or a person clicked a link with no column."""
    hit = [f"(kind = {CLICK} AND why IN ({PEOPLE}) AND (link_no IS NULL OR link_no < 1 OR link_no > {links}))"]
    if rules.per_copy:
        hit += [
            f"(kind = {CLICK} AND link_no = {HONEYPOT_LINK})",
            f"bot = {int(Reason.HONEYPOT)}",
            f"(kind = {CLICK} AND bot = {int(Reason.GATEWAY_NETWORK)})",
        ]
    flag = f"MAX(CASE WHEN {' OR '.join(hit)} THEN 1 ELSE 0 END)"
    if rules.per_copy and rules.link_count >= 2:
        every = " + ".join(
            f"MAX(CASE WHEN kind = {CLICK} AND link_no = {n} THEN 1 ELSE 0 END)" for n in range(1, rules.link_count + 1)
        )
        flag += f" + CASE WHEN {every} = {rules.link_count} THEN 1 ELSE 0 END"
    return flag


def count_when(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


def link_columns(rules: CopyRules) -> int:
    return max(0, min(rules.link_count, MAX_LINK_COLUMNS))


def records_sql(rules: CopyRules) -> str:
    """One row per record of message ``$1`` (``$2``: the end of the early window): see ``summary``.

    SQLite sums the distinct reason bits and finds the first open's place by joining back on the
    event id a correlated subquery picks, ordering ties as the event stream does. (PostgreSQL reads
    the same columns from its folded figures: ``figures.figures_sql``.)"""
    links = link_columns(rules)
    first_of = (
        f"FROM events f WHERE f.record_id = p.rid AND f.occurred_at = p.first_open AND {_people_open('f')}"
        " ORDER BY f.kind, f.event_id LIMIT 1"
    )
    place = (
        " SELECT p.*, o.bot, o.device, o.os, o.browser, o.country, o.city FROM p LEFT JOIN events o"
        f" ON p.candidate = 0 AND o.event_id = (SELECT f.event_id {first_of})"
    )
    machine = f"why NOT IN ({NOT_MACHINE})"
    people = f"why IN ({PEOPLE})"
    per_link = "".join(
        f", {count_when(f'kind = {CLICK} AND {people} AND link_no = {n}')} AS link_{n}" for n in range(1, links + 1)
    )
    return (
        "WITH h AS (SELECT e.record_id AS rid, e.kind AS kind, e.link_no AS link_no, e.occurred_at AS at,"
        f" e.read_ms AS read_ms, e.bot AS bot, {judged_reason('e')} AS why"
        " FROM records r JOIN events e ON e.record_id = r.id WHERE r.message_id = $1),"
        f" p AS (SELECT rid, {_candidate(rules, links)} AS candidate,"
        f" MIN(CASE WHEN kind <> {CLICK} AND {people} THEN at END) AS first_open,"
        f" MIN(CASE WHEN kind = {CLICK} AND {people} THEN at END) AS first_click,"
        f" MAX(CASE WHEN kind <> {OPEN} AND kind <> {CLICK} AND why IN ({PERSON}) THEN COALESCE(read_ms, 0) END)"
        " AS read_ms,"
        f" SUM(DISTINCT CASE WHEN {machine} THEN CAST(1 AS BIGINT) << (CASE WHEN why BETWEEN 0 AND 62 THEN why"
        " ELSE 63 END) END) AS reasons,"
        f" MAX(CASE WHEN kind <> {CLICK} AND why IN ({PROXIED}) THEN 1 ELSE 0 END) AS proxied,"
        f" MAX(CASE WHEN why IN ({PRIVACY}) THEN 1 ELSE 0 END) AS privacy,"
        f" {count_when(f'kind = {OPEN} AND {people}')} AS opens, {count_when(f'kind = {OPEN} AND why IN ({PROXIED})')}"
        f" AS proxied_opens, {count_when(f'kind = {OPEN} AND why IN ({PRIVACY})')} AS privacy_opens,"
        f" {count_when(f'kind = {OPEN} AND {machine}')} AS machine_opens, {count_when(f'kind = {CLICK} AND {machine}')}"
        f" AS machine_clicks, {count_when(f'kind = {CLICK} AND {people}')} AS clicks{per_link}"
        f" FROM h GROUP BY rid){place}"
    )


class RecordSummary(NamedTuple):
    """What one record (not a candidate) contributes, its hits judged in SQL."""

    record_id: bytes
    first_open: int | None  # a person's first open or read
    place: Place | None  # at the first open; None when it was a proxy's fetch
    first_click: int | None
    read_ms: int  # the longest read, -1 when none
    reasons: int  # bit r: a hit judged machine for reason r
    proxied: bool
    privacy: bool
    per_hit: Sequence[int]  # PER_HIT
    link_clicks: dict[int, int]  # link -> people's clicks (only links clicked)


def summary(row: Sequence[Any], links: int) -> RecordSummary:
    """A row of ``records_sql`` (not a candidate's) as a ``RecordSummary``. Both drivers return
    Python ints for these columns; the reason bits may come back negative (bit 63): made unsigned."""
    rid, _, first_open, first_click, read_ms, reasons, proxied, privacy = row[:8]
    clicks = {n: c for n, c in enumerate(row[14 : 14 + links], 1) if c}
    opened_by, device, os_, browser, country, city = row[-6:]
    place = None if opened_by is None or opened_by in _PROXIED_REASONS else (device, os_, browser, country, city)
    return RecordSummary(
        rid, first_open, place, first_click, -1 if read_ms is None else read_ms,
        0 if reasons is None else reasons % (1 << 64), proxied == 1, privacy == 1, row[8:14], clicks,
    )  # fmt: skip


async def stream_records(
    store: Store, message_id: str, rules: CopyRules, early_until: int, candidates: list[bytes]
) -> AsyncIterator[list[RecordSummary]]:
    """Summaries of the message's records, in batches; candidates' ids are appended to ``candidates``."""
    links = link_columns(rules)
    sql = records_sql(rules)
    async for rows in store.stream(sql, message_id, early_until):
        batch = []
        for row in rows:
            if row[1]:
                candidates.append(bytes(row[0]))
            else:
                batch.append(summary(row, links))
        yield batch


EVENT_COLUMNS = (
    "SELECT e.record_id, e.kind, e.link_no, e.occurred_at, e.country, e.city, e.os, e.device, e.browser,"
    " e.bot, e.read_ms FROM events e"
)


async def stream_events_of(store: Store, record_ids: Sequence[bytes]) -> AsyncIterator[list[tuple[Any, ...]]]:
    """The events of some records, ordered by (record, time, kind, event id) as ``Accumulator`` needs."""
    ordered = sorted(record_ids)
    for start in range(0, len(ordered), CANDIDATE_BATCH):
        chunk = ordered[start : start + CANDIDATE_BATCH]
        order = "ORDER BY e.record_id, e.occurred_at, e.kind, e.event_id"
        sql = f"{EVENT_COLUMNS} WHERE e.record_id IN ({marks(len(chunk))}) {order}"
        async for rows in store.stream(sql, *chunk):
            yield rows
