"""PostgreSQL's per-record report figures (``reports.figures``): folded exactly once per event, even
when an inserting transaction commits after a later one, and only for records that still exist.
The figures' values themselves are held to the event-by-event reference by test_report_sql.py."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from politetenant.tracker.reports import figures
from politetenant.tracker.storage.base import StorageUnavailable, Store
from politetenant.tracker.storage.postgres import EVENT_COLUMNS
from politetenant.tracker.storage.rows import Event, MessageRow, RecordRow
from tests.support import emptied_store, scratch_database

MESSAGE = MessageRow("msg_figures0000000000001", 1_700_000_000_000, "anonymous", b"s", b"s", b"s", b"s", 3, 3, 100,
                     60.0, 2, "tok")  # fmt: skip
RECORDS = [RecordRow(bytes([n]) * 16, MESSAGE.id, None, None) for n in (1, 2, 3)]


def opens(record: bytes, count: int) -> list[Event]:
    return [
        Event(os.urandom(16), record, 1, None, MESSAGE.created_at + 60_000 + n, "IE", None, None, "iOS", "mobile",
              "Mail", 0, None)
        for n in range(count)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with scratch_database() as made:
        yield made


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[Store]:
    async with emptied_store(dsn) as made:
        await made.insert_message(MESSAGE, [], RECORDS, [])
        yield made


async def opens_of(store: Store) -> dict[bytes, int]:
    return {bytes(r): int(n) for r, n in await store.fetch("SELECT record_id, opens FROM record_figures")}


async def test_a_fold_waits_for_an_insert_in_progress_and_so_misses_none_of_its_events(store: Store, dsn: str) -> None:
    """Sequence numbers are drawn inside the inserting transaction: a batch in flight holds smaller
    numbers than one committed after it. A fold taking the highest committed number as its watermark
    would never come back for the batch in flight."""
    slow = await asyncpg.connect(dsn)
    try:
        transaction = slow.transaction()
        await transaction.start()
        rows = [tuple(e) for e in opens(RECORDS[0].id, 3)]
        await slow.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)  # numbers drawn first
        await store.insert_events(opens(RECORDS[1].id, 2))  # later numbers, committed at once

        folding = asyncio.create_task(figures.fold(store))
        await asyncio.sleep(0.3)
        assert not folding.done()  # waits for the batch in flight to commit (or roll back)
        await transaction.commit()
        assert await folding == 5
    finally:
        await slow.close()

    assert await opens_of(store) == {RECORDS[0].id: 3, RECORDS[1].id: 2}
    assert await figures.fold(store) == 0  # nothing new: nothing folded twice
    await store.insert_events(opens(RECORDS[0].id, 1))
    assert await figures.fold(store) == 1
    assert await opens_of(store) == {RECORDS[0].id: 4, RECORDS[1].id: 2}


async def test_a_timer_fold_gives_way_to_one_in_progress_and_a_report_fold_waits_for_it(store: Store, dsn: str) -> None:
    await store.insert_events(opens(RECORDS[0].id, 2))
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", figures.FOLD_LOCK)  # another worker folding
        assert await figures.fold(store, wait=False) == 0
        waiting = asyncio.create_task(figures.fold(store))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await holder.execute("SELECT pg_advisory_unlock($1)", figures.FOLD_LOCK)
        assert await waiting == 2
    finally:
        await holder.close()
    assert await opens_of(store) == {RECORDS[0].id: 2}


async def test_events_of_an_erased_record_leave_no_figures(store: Store) -> None:
    await store.insert_events(opens(RECORDS[0].id, 1))
    await figures.fold(store)
    await store.execute("DELETE FROM events WHERE record_id = $1", RECORDS[0].id)
    await store.execute("DELETE FROM records WHERE id = $1", RECORDS[0].id)  # an erasure
    assert await opens_of(store) == {}  # the figures went with the record
    await store.insert_events(opens(RECORDS[0].id, 2) + opens(RECORDS[2].id, 1))  # a beacon hit after it
    assert await figures.fold(store) == 3
    assert await opens_of(store) == {RECORDS[2].id: 1}


async def test_the_trackers_timer_keeps_the_figures_folded_until_it_stops(store: Store) -> None:
    stopping = asyncio.Event()
    timer = asyncio.create_task(figures.keep_folded(store, stopping, every=0.05))
    await store.insert_events(opens(RECORDS[2].id, 4))
    for _ in range(100):
        if await opens_of(store):
            break
        await asyncio.sleep(0.05)
    assert await opens_of(store) == {RECORDS[2].id: 4}
    stopping.set()
    await asyncio.wait_for(timer, 2)


async def test_a_long_backlog_is_folded_a_chunk_at_a_time_to_the_same_figures(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(figures, "FOLD_CHUNK", 2)
    await store.insert_events(opens(RECORDS[0].id, 3) + opens(RECORDS[1].id, 2))
    assert await figures.fold(store) == 5
    assert await opens_of(store) == {RECORDS[0].id: 3, RECORDS[1].id: 2}
    assert (await store.fetch("SELECT seq FROM figures_folded"))[0][0] == 5


async def test_records_whose_old_events_were_deleted_are_rebuilt_by_the_next_fold(store: Store) -> None:
    old, recent = opens(RECORDS[0].id, 3), opens(RECORDS[0].id, 1)
    await store.insert_events(old + recent + opens(RECORDS[1].id, 2))
    await figures.fold(store)
    await store.execute("DELETE FROM events WHERE event_id = ANY($1::bytea[])", [e.event_id for e in old])
    await store.events_deleted([RECORDS[0].id])  # what retention says after deleting them
    await store.insert_events(opens(RECORDS[0].id, 2))  # not folded yet: folded once, by the same fold

    assert await figures.fold(store) == 2
    assert await opens_of(store) == {RECORDS[0].id: 3, RECORDS[1].id: 2}
    assert await store.fetch("SELECT record_id FROM figures_stale") == []


async def test_a_report_fold_that_cannot_start_soon_says_so_instead_of_waiting_for_ever(
    store: Store, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(figures, "LOCK_WAIT_SECONDS", 0.2)
    await store.insert_events(opens(RECORDS[0].id, 1))
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", figures.FOLD_LOCK)  # a long fold elsewhere
        with pytest.raises(StorageUnavailable):  # the API answers 503 "try again shortly"
            await asyncio.wait_for(figures.fold(store), 5)
    finally:
        await holder.close()
    assert await figures.fold(store) == 1  # nothing was lost meanwhile
