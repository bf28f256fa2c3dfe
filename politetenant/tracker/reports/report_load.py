"""Loading a report's inputs: the records aggregated in SQL, the few a per-copy rule may fire on
streamed event by event through ``judge_copy``, all folded by one ``Accumulator``.

PostgreSQL aggregates the records' rows into tallies itself (``report_sql_pg``); SQLite streams one
row per record (``report_sql``) into the Accumulator. Memory: the segment of each record (as
before), one batch of rows, the candidates' ids; never the events. CPU work runs off the event loop.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable

from politetenant.crypto import Sealer
from politetenant.tracker.judging.behaviour import CopyRules
from politetenant.tracker.reports import figures
from politetenant.tracker.reports.report_data import (
    Accumulator,
    ReportInputs,
    SealedTexts,
    first_hit,
    load_links,
    load_segments,
)
from politetenant.tracker.reports.report_sql import RecordSummary, stream_events_of, stream_records
from politetenant.tracker.reports.report_sql_pg import load_tallies
from politetenant.tracker.reports.thresholds import ALL
from politetenant.tracker.storage.base import Store
from politetenant.tracker.storage.rows import MessageRow


async def load_inputs(
    store: Store, sealer: Sealer, message: MessageRow, rules: CopyRules, attribute: str | None = None
) -> ReportInputs:
    segment_of = None if attribute is None else await load_segments(store, sealer, message.id, attribute)
    populations = {ALL: message.tracked} if segment_of is None else Counter(segment_of.values())
    folded = figures.enabled(store)  # PostgreSQL: per-record figures; SQLite: per-record rows from events
    if folded:
        await figures.fold(store)  # what arrived since the tracker's last fold: the figures are exact from here
        start = await figures.first_hit(store, message.id)
    else:
        start = await first_hit(store, message.id)
    open_city = SealedTexts(sealer, "event.city")
    accumulator = Accumulator(rules, start, segment_of=segment_of, open_city=open_city)
    if start is not None:  # else the message has no event yet
        candidates: list[bytes] = []
        if folded:
            tallies, candidates = await load_tallies(
                store, message.id, rules, start + rules.early_ms, segment_of, open_city
            )
            for segment, (tally, records) in tallies.items():
                accumulator.add_tally(segment, tally, records)
        else:
            async for summaries in stream_records(store, message.id, rules, start + rules.early_ms, candidates):
                await asyncio.to_thread(_add_records, accumulator, summaries)
        async for rows in stream_events_of(store, candidates):
            await asyncio.to_thread(accumulator.add, rows)
    tallies_out = await asyncio.to_thread(accumulator.finish, populations)
    return ReportInputs(tallies_out, await load_links(store, sealer, message.id), attribute)


def _add_records(accumulator: Accumulator, summaries: Iterable[RecordSummary]) -> None:
    for summary in summaries:
        accumulator.add_record(summary)
