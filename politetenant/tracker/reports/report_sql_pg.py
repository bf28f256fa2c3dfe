"""PostgreSQL: the records' folded figures (``figures``) aggregated further in SQL, into tallies.

A server-side cursor (``Store.stream``) is planned for a fast start: no parallel workers, index
order, and an estimated cost that triggers seconds of JIT optimisation; one plain query whose
answer is small runs as the baseline does. So, on PostgreSQL, the records' rows never reach Python:
one query groups them by segment and by each figure a ``Tally`` holds (``GROUPING SETS``; readers'
read times come as one text per segment, their median needs them all), and the segment of each
record (attributes are sealed, opened in Python) is passed in as JSON. Candidates' ids come back in
the same answer, for ``judge_copy``. Memory: the answer (rows per segment and hour, place, link
set, reason set) and the read times, which a ``Tally`` holds anyway; never a row per event.
What a row adds to a tally mirrors ``Accumulator._count``; the property test in
tests/integration/test_report_sql.py holds both to the same figures.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from politetenant.tracker.judging.behaviour import CopyRules
from politetenant.tracker.reports.figures import figures_sql
from politetenant.tracker.reports.report_data import HOUR_MS, UNKNOWN, Tally, bits, read_bucket
from politetenant.tracker.reports.report_sql import PROXIED, link_columns
from politetenant.tracker.reports.thresholds import ALL
from politetenant.tracker.storage.base import Store
from politetenant.tracker.storage.postgres import PostgresStore

#: The grouping sets, each named for the part of a tally it fills (beside candidate and segment).
SETS: dict[str, tuple[str, ...]] = {
    "totals": (),
    "device": ("opener", "device"),
    "os": ("opener", "os"),
    "browser": ("opener", "browser"),
    "city": ("opener", "country", "city"),
    "open_hour": ("open_hour",),
    "links": ("links",),
    "click_hour": ("click_hour",),
    "reasons": ("reasons",),
    "candidate": ("cand_rid",),
}
_GROUPED = ("opener", "device", "os", "browser", "country", "city", "open_hour", "links", "click_hour", "reasons",
            "cand_rid")  # fmt: skip
_SUMS = ("opens", "proxied_opens", "privacy_opens", "machine_opens", "machine_clicks", "clicks", "proxied", "privacy")


def _grouping(columns: tuple[str, ...]) -> int:
    """PostgreSQL's GROUPING(...) of a set: bit set (first column highest) for each column not in it."""
    value = 0
    for column in _GROUPED:
        value = value << 1 | (column not in columns)
    return value


_SET_OF = {_grouping(columns): name for name, columns in SETS.items()}


def tallies_sql(rules: CopyRules, segmented: bool) -> str:
    """``$1`` message, ``$2`` end of the early window; segmented: ``$3`` the segment number of each record."""
    links = link_columns(rules)
    mask = " + ".join(f"CASE WHEN link_{n} > 0 THEN CAST(1 AS BIGINT) << {n} ELSE 0 END" for n in range(1, links + 1))
    proxied_first = f"x.bot IN ({PROXIED})"  # a proxy's fetch tells no device or place
    # A JSON object (record id in hex -> segment number) is looked up by binary search; a join on two
    # arrays would work too, but its row estimate makes the plan look costly enough to JIT-optimise.
    segment = "COALESCE(CAST($3::jsonb ->> encode(x.rid, 'hex') AS INTEGER), -1)" if segmented else "0"
    sets = ", ".join(f"({', '.join(columns)})" for name, columns in SETS.items() if name != "totals")
    sums = [f"CAST(SUM({name}) AS BIGINT)" for name in (*_SUMS, *(f"link_{n}" for n in range(1, links + 1)))]
    # Each reader's longest read, as text: as many values as readers, in one row per segment.
    reads = "string_agg(CAST(read_ms AS TEXT), ',')"
    # The breakdowns only count records; the totals (sums, reads) are one plain aggregate of their own:
    # in one GROUPING SETS query every aggregate would be computed for every set, and dropped.
    return (
        f"WITH y AS MATERIALIZED (SELECT x.candidate, {segment} AS seg,"
        " CASE WHEN x.candidate = 0 THEN NULL ELSE x.rid END AS cand_rid,"
        " CASE WHEN x.first_open IS NULL THEN 0 ELSE 1 END AS opener,"
        f" CASE WHEN {proxied_first} THEN '' ELSE x.device END AS device,"
        f" CASE WHEN {proxied_first} THEN '' ELSE x.os END AS os,"
        f" CASE WHEN {proxied_first} THEN '' ELSE x.browser END AS browser,"
        f" CASE WHEN {proxied_first} THEN NULL ELSE x.country END AS country,"
        f" CASE WHEN {proxied_first} THEN NULL ELSE x.city END AS city,"
        f" x.first_open / {HOUR_MS} AS open_hour, x.read_ms, {mask or '0'} AS links,"
        f" x.first_click / {HOUR_MS} AS click_hour, x.reasons,"
        f" {', '.join(f'x.{name}' for name in _SUMS)}{''.join(f', x.link_{n}' for n in range(1, links + 1))}"
        f" FROM ({figures_sql(rules)}) x)"
        f" SELECT GROUPING({', '.join(_GROUPED)}), candidate, seg, {', '.join(_GROUPED)}, COUNT(*),"
        f" CAST(NULL AS TEXT), {', '.join('CAST(NULL AS BIGINT)' for _ in sums)}"
        f" FROM y GROUP BY candidate, seg, GROUPING SETS ({sets})"
        f" UNION ALL SELECT {_grouping(SETS['totals'])}, candidate, seg, {', '.join('NULL' for _ in _GROUPED)},"
        f" COUNT(*), {reads}, {', '.join(sums)} FROM y GROUP BY candidate, seg"
    )


async def plain_query(store: Store, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """One plain query (see above), with room to hash its groups in memory and no JIT: the planner's
    estimate of the groups is far too high, and sorting 100,000 records per grouping set or compiling
    the expressions costs more than the whole query."""
    if not isinstance(store, PostgresStore):
        raise TypeError("tallies are aggregated in SQL on PostgreSQL only")
    async with store.session() as conn, conn.transaction():
        await conn.execute("SET LOCAL jit = off; SET LOCAL work_mem = '32MB'")
        return [tuple(row) for row in await conn.fetch(sql, *args)]


async def load_tallies(
    store: Store,
    message_id: str,
    rules: CopyRules,
    early_until: int,
    segment_of: Mapping[bytes, str] | None,
    open_city: Callable[[bytes], str],
) -> tuple[dict[str, tuple[Tally, int]], list[bytes]]:
    """Tally and number of records with events, per segment, of the records aggregated in SQL; and
    the candidates' ids."""
    args: list[Any] = [message_id, early_until]
    names: list[str] = [ALL]
    if segment_of is not None:
        names = sorted(set(segment_of.values()))
        index = {name: n for n, name in enumerate(names)}
        args.append(json.dumps({rid.hex(): index[value] for rid, value in segment_of.items()}))
    tallies: dict[str, tuple[Tally, int]] = {}
    candidates: list[bytes] = []
    rows = await plain_query(store, tallies_sql(rules, segment_of is not None), *args)
    fold_rows(rows, names, open_city, tallies, candidates)
    return tallies, candidates


def fold_rows(
    rows: Sequence[Sequence[Any]],
    names: Sequence[str],
    open_city: Callable[[bytes], str],
    tallies: dict[str, tuple[Tally, int]],
    candidates: list[bytes],
) -> None:
    """Add grouped rows to the tallies (and candidates' ids): what ``Accumulator._count`` adds per record."""
    for row in rows:
        part, candidate, seg = _SET_OF[row[0]], row[1], row[2]
        opener, device, os_, browser, country, city, open_hour, mask, click_hour, reasons, cand = row[3:14]
        if part == "candidate":
            if cand is not None:
                candidates.append(bytes(cand))
            continue
        if candidate:
            continue
        segment = names[seg] if seg >= 0 else UNKNOWN
        tally, records = tallies.get(segment) or (Tally(), 0)
        count = row[14]
        if part == "totals":
            records += count
            read_times = [int(ms) for ms in row[15].split(",")] if row[15] else []
            tally.reads_unique += len(read_times)
            tally.read_times += read_times
            tally.read_buckets.update(read_bucket(ms) for ms in read_times)
            sums = [n or 0 for n in row[16:]]
            (tally.opens_total, tally.proxied_opens_total, tally.privacy_opens_total, tally.machine_opens,
             tally.machine_clicks, tally.clicks_total, tally.proxied_opens_unique,
             tally.privacy_opens_unique) = sums[: len(_SUMS)]  # fmt: skip
            tally.link_clicks.update({n: c for n, c in enumerate(sums[len(_SUMS) :], 1) if c})
        elif part in ("device", "os", "browser") and opener:
            tally.breakdowns[part][(device, os_, browser)[("device", "os", "browser").index(part)] or UNKNOWN] += count
        elif part == "city" and opener:
            tally.breakdowns["country"][country or UNKNOWN] += count
            label = UNKNOWN if city is None else f"{open_city(bytes(city))}, {country or UNKNOWN}"
            tally.breakdowns["city"][label] += count
        elif part == "open_hour" and open_hour is not None:
            tally.opens_unique += count
            tally.first_opens[open_hour] += count
        elif part == "links" and mask:
            tally.clicks_unique += count
            tally.click_masks += [mask] * count
            for link in bits(mask):
                tally.link_clickers[link] += count
        elif part == "click_hour" and click_hour is not None:
            tally.first_clicks[click_hour] += count
        elif part == "reasons" and reasons:
            tally.machine_records += count
            tally.reason_masks[reasons % (1 << 64)] += count
            for reason in bits(reasons % (1 << 64)):
                tally.reason_records[reason] += count
        tallies[segment] = (tally, records)
