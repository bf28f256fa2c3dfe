"""Events accepted are never lost: the buffer spools to disk when the database fails and replays."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from politetenant.tracker.ingest.buffer import Ingest
from politetenant.tracker.ingest.spool import Spool, encode_event
from politetenant.tracker.metrics import Metrics
from politetenant.tracker.storage import open_store
from politetenant.tracker.storage.rows import Event, EventKind
from tests.fakes.flaky_store import FlakyStore


def make_event(ingest: Ingest, n: int) -> Event:
    return Event(
        ingest.ids.next(), n.to_bytes(12, "big"), int(EventKind.OPEN), None, 1_700_000_000_000 + n,
        "IE", b"\x00\x02sealed", b"\x00\x01sealed", "iOS", "mobile", "Apple Mail", 0, None,
    )  # fmt: skip


@pytest.fixture
async def flaky(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[FlakyStore, Ingest]]:
    real = open_store(db_url)
    await real.connect()
    await real.migrate()
    store = FlakyStore(real)
    ingest = Ingest(store, Spool(tmp_path / "spool", "w0"), Metrics(), batch_size=100, flush_interval=60)  # type: ignore[arg-type]
    await ingest.start()
    try:
        yield store, ingest
    finally:
        store.down = False
        await ingest.stop()
        ingest.spool.close()
        await real.close()


async def test_outage_spools_to_disk_and_recovery_replays_everything(flaky: tuple[FlakyStore, Ingest]) -> None:
    store, ingest = flaky
    for n in range(250):
        assert ingest.submit(make_event(ingest, n))
    store.down = True
    await ingest._flush(final=True)
    assert ingest.buffered == 0
    assert ingest.spool.size_bytes() > 0
    assert ingest.database_ok is False
    for n in range(250, 400):  # still accepting while the database is down
        assert ingest.submit(make_event(ingest, n))
    await ingest._flush(final=True)
    store.down = False
    ingest._retry_at = 0
    await ingest._flush(final=True)
    assert ingest.database_ok is True
    assert await store.inner.count_rows("events") == 400
    assert ingest.spool.size_bytes() == 0


async def test_replaying_a_spool_twice_does_not_count_twice(flaky: tuple[FlakyStore, Ingest]) -> None:
    store, ingest = flaky
    events = [make_event(ingest, n) for n in range(120)]
    await store.inner.insert_events(events[:60])  # stored once already, e.g. before a crash
    ingest.spool.append(events)  # and also still in the spool
    await ingest._replay_spool()
    assert await store.inner.count_rows("events") == 120
    ingest.spool.append(events)
    await ingest._replay_spool()
    assert await store.inner.count_rows("events") == 120


async def test_spool_of_a_dead_worker_is_adopted_and_a_torn_line_skipped(
    flaky: tuple[FlakyStore, Ingest], tmp_path: Path
) -> None:
    store, ingest = flaky
    orphan = tmp_path / "spool" / "spool-dead-123.jsonl"
    lines = b"".join(encode_event(make_event(ingest, n)) for n in range(30))
    orphan.write_bytes(lines + b'["deadbeef", "torn li')  # the worker died mid-write
    await ingest._replay_spool()
    assert await store.inner.count_rows("events") == 30
    assert not orphan.exists()


async def test_events_in_the_buffer_are_written_on_stop(flaky: tuple[FlakyStore, Ingest]) -> None:
    store, ingest = flaky
    for n in range(42):
        ingest.submit(make_event(ingest, n))
    await ingest.stop()
    assert await store.inner.count_rows("events") == 42


async def test_stop_during_outage_leaves_events_in_the_spool_for_the_next_start(
    flaky: tuple[FlakyStore, Ingest], tmp_path: Path
) -> None:
    store, ingest = flaky
    for n in range(42):
        ingest.submit(make_event(ingest, n))
    store.down = True
    await ingest.stop()
    assert await store.inner.count_rows("events") == 0
    ingest.spool.close()
    store.down = False
    successor = Ingest(store, Spool(tmp_path / "spool", "w1"), Metrics(), batch_size=100)  # type: ignore[arg-type]
    await successor.start()  # replays what the previous worker left
    await successor.stop()
    successor.spool.close()
    assert await store.inner.count_rows("events") == 42
    ingest.spool = Spool(tmp_path / "spool", "w0")  # for the fixture's teardown


async def test_when_neither_database_nor_disk_can_keep_events_hits_are_refused(
    flaky: tuple[FlakyStore, Ingest], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ingest = flaky
    ingest.max_buffered = 50

    def disk_full(events: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ingest.spool, "append", disk_full)
    store.down = True
    accepted = sum(ingest.submit(make_event(ingest, n)) for n in range(80))
    await ingest._flush(final=True)
    assert accepted == 50  # the rest were refused, not silently dropped
    assert ingest.buffered == 50  # kept in memory, not lost
    assert not ingest.accepting
    monkeypatch.undo()
    store.down = False
    ingest._retry_at = 0
    await ingest._flush(final=True)
    assert await store.inner.count_rows("events") == 50


def spooled_events(spool_dir: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in spool_dir.glob("spool-*.jsonl"))


async def test_events_that_wait_while_the_database_lags_are_made_durable_on_the_spool(
    flaky: tuple[FlakyStore, Ingest], tmp_path: Path
) -> None:
    """A database that answers, but slower than hits arrive: what waits longer than two flush
    intervals goes to the spool (a crash now loses none of it), and is replayed from there."""
    store, ingest = flaky
    ingest.flush_interval = 0.01
    for n in range(300):
        ingest.submit(make_event(ingest, n))
    store.gate.clear()  # the next insert hangs, as on a database that has fallen behind
    flushing = asyncio.create_task(ingest._flush(final=False))
    await store.inserting.wait()
    await asyncio.sleep(0.05)  # the 200 events behind the batch in flight have now waited 5 intervals
    for n in range(300, 350):  # hits keep coming meanwhile
        ingest.submit(make_event(ingest, n))
    store.gate.set()  # the first batch (100) lands; the flusher sees how old the rest is
    original_append = ingest.spool.append
    durable_at_spill: list[int] = []

    def append_and_count(events: list[Event]) -> None:
        original_append(events)
        durable_at_spill.append(spooled_events(tmp_path / "spool"))

    ingest.spool.append = append_and_count  # type: ignore[method-assign]
    await flushing
    assert durable_at_spill and durable_at_spill[0] == 250  # everything waiting went to disk at once
    assert ingest.metrics.events_spilled._value.get() == 250
    assert ingest.buffered == 0
    assert await store.inner.count_rows("events") == 350  # and was replayed while the database caught up
    assert spooled_events(tmp_path / "spool") == 0


async def test_events_spilled_during_a_replay_are_not_truncated_with_the_replayed_file(
    flaky: tuple[FlakyStore, Ingest], tmp_path: Path
) -> None:
    store, ingest = flaky
    ingest.flush_interval = 0.01
    ingest.spool.append([make_event(ingest, n) for n in range(200)])  # spilled earlier
    store.gate.clear()
    replaying = asyncio.create_task(ingest._replay_spool())
    await store.inserting.wait()
    for n in range(200, 260):  # arrive during the replay, and wait long enough to be spilled
        ingest.submit(make_event(ingest, n))
    await asyncio.sleep(0.05)
    store.gate.set()
    await replaying
    assert ingest.buffered == 0  # spilled between replayed batches ...
    assert spooled_events(tmp_path / "spool") == 60  # ... into the fresh file, which the replay left alone
    await ingest._flush(final=False)
    assert await store.inner.count_rows("events") == 260
    assert spooled_events(tmp_path / "spool") == 0
