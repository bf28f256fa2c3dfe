"""Events accepted are never lost: the buffer spools to disk when the database fails and replays."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from politetenant.tracker.ingest.buffer import Ingest
from politetenant.tracker.ingest.framing import MAGIC, encode_event, encode_record, read_events
from politetenant.tracker.ingest.spool import PATTERNS, Spool
from politetenant.tracker.metrics import Metrics
from politetenant.tracker.storage import open_store
from politetenant.tracker.storage.rows import Event, EventKind
from tests.conftest import Tracker
from tests.fakes.flaky_store import FlakyStore
from tests.integration.test_beacons_and_report import hit, register


def room_for(ingest: Ingest, events: int) -> int:
    """A spool budget that holds one write of ``events`` events and no more."""
    return len(MAGIC) + len(encode_record([make_event(ingest, n) for n in range(events)]))


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


async def test_spool_of_a_dead_worker_is_adopted_and_a_torn_record_skipped(
    flaky: tuple[FlakyStore, Ingest], tmp_path: Path
) -> None:
    store, ingest = flaky
    orphan = tmp_path / "spool" / "spool-dead-123.spool"
    whole = encode_record([make_event(ingest, n) for n in range(30)])
    torn = encode_record([make_event(ingest, n) for n in range(30, 40)])
    orphan.write_bytes(MAGIC + whole + torn[:-7])  # the worker died mid-write
    await ingest._replay_spool()
    assert await store.inner.count_rows("events") == 30
    assert not orphan.exists()


async def test_json_spool_left_by_the_previous_version_is_replayed_after_an_upgrade(
    flaky: tuple[FlakyStore, Ingest], tmp_path: Path
) -> None:
    store, ingest = flaky
    old = tmp_path / "spool" / "spool-old-7.jsonl"
    lines = b"".join(encode_event(make_event(ingest, n)) for n in range(30))
    old.write_bytes(lines + b'["deadbeef", "torn li')  # that worker died mid-write, too
    store.down = True
    for n in range(30, 50):  # and this one spools in its own format meanwhile
        ingest.submit(make_event(ingest, n))
    await ingest._flush(final=True)
    store.down = False
    ingest._retry_at = 0
    await ingest._flush(final=True)  # recovery: replays both files
    assert await store.inner.count_rows("events") == 50
    assert not old.exists() and ingest.spool.size_bytes() == 0


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

    def disk_full(events: object, **_: object) -> None:
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
    """Events on disk in every spool file (journal segments too), whatever their format."""
    paths = (path for pattern in PATTERNS for path in spool_dir.glob(pattern))
    return sum(len(events) for path in paths for events in read_events(path))


async def test_events_that_wait_while_the_database_lags_are_made_durable_on_the_spool(
    flaky: tuple[FlakyStore, Ingest], tmp_path: Path
) -> None:
    """A database that answers, but slower than hits arrive: what waits longer than two flush
    intervals is written ahead to the spool (a crash now loses none of it), and still stored from
    memory: nothing is read back, and the journal is gone once everything is stored."""
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
    original_journal = ingest.spool.journal
    durable_at_spill: list[int] = []

    def journal_and_count(events: list[Event], upto: int) -> None:
        original_journal(events, upto)
        durable_at_spill.append(spooled_events(tmp_path / "spool"))

    ingest.spool.journal = journal_and_count  # type: ignore[method-assign]
    await flushing
    assert durable_at_spill == [250]  # on disk at once, in one write
    assert ingest.metrics.events_spilled._value.get() == 250
    assert ingest.buffered == 0
    assert await store.inner.count_rows("events") == 350  # stored while the database caught up
    assert ingest.spool.events_read == 0  # from memory: nothing was read back from the disk
    assert spooled_events(tmp_path / "spool") == 0 and not list((tmp_path / "spool").glob("*.j*.spool"))


async def test_batches_go_to_the_database_while_the_journal_is_written(
    flaky: tuple[FlakyStore, Ingest], tmp_path: Path
) -> None:
    """A lagging database is not also left idle while the spool's thread encodes and fsyncs the journal."""
    store, ingest = flaky
    flushing = await _lagging_behind_a_hung_batch(store, ingest)
    original_journal = ingest.spool.journal
    inserts_during_write: list[int] = []
    calls = store.insert_calls  # the batch hanging in the database; the journal is written once it lands

    def journal_slowly(events: list[Event], upto: int) -> None:
        for _ in range(500):  # a slow disk: up to 5 s, until the flusher has sent the next batch
            if store.insert_calls > calls:
                break
            time.sleep(0.01)
        inserts_during_write.append(store.insert_calls - calls)
        original_journal(events, upto)

    ingest.spool.journal = journal_slowly  # type: ignore[method-assign]
    store.gate.set()
    await flushing
    assert inserts_during_write and inserts_during_write[0] > 0, "the flusher waited for the journal write"
    assert ingest.metrics.events_spilled._value.get() == 200 and ingest.spool.events_read == 0
    assert await store.inner.count_rows("events") == 300 and spooled_events(tmp_path / "spool") == 0


async def test_events_written_ahead_survive_a_crash_and_the_next_worker_stores_them(
    flaky: tuple[FlakyStore, Ingest], tmp_path: Path
) -> None:
    store, ingest = flaky
    flushing = await _lagging_behind_a_hung_batch(store, ingest)  # the database hangs on the first batch ...
    first_gate, store.gate = store.gate, asyncio.Event()  # ... and on every batch after it
    first_gate.set()
    for _ in range(500):  # the 200 behind the first batch are written ahead meanwhile
        if ingest.metrics.events_spilled._value.get() == 200:
            break
        await asyncio.sleep(0.01)
    assert ingest.metrics.events_spilled._value.get() == 200 and ingest.buffered == 200
    assert spooled_events(tmp_path / "spool") == 200  # on disk and in memory
    flushing.cancel()  # SIGKILL: nothing more runs, the memory is gone, the locks die with the process
    with contextlib.suppress(asyncio.CancelledError):
        await flushing
    ingest._buffer.clear()
    ingest.spool.close()
    store.gate.set()
    successor = Ingest(store, Spool(tmp_path / "spool", "w1"), Metrics(), batch_size=100)  # type: ignore[arg-type]
    await successor.start()  # adopts the dead worker's journal
    await successor.stop()
    successor.spool.close()
    assert await store.inner.count_rows("events") == 300
    assert spooled_events(tmp_path / "spool") == 0
    ingest.spool = Spool(tmp_path / "spool", "w0")  # for the fixture's teardown


async def _lagging_behind_a_hung_batch(store: FlakyStore, ingest: Ingest) -> asyncio.Task[None]:
    """300 events accepted, the first batch hanging in the database, the other 200 waiting long enough
    to be written ahead once the flush goes on (when the store's gate opens)."""
    ingest.flush_interval = 0.01
    for n in range(300):
        ingest.submit(make_event(ingest, n))
    store.gate.clear()
    flushing = asyncio.create_task(ingest._flush(final=False))
    await store.inserting.wait()
    await asyncio.sleep(0.05)
    return flushing


async def test_a_full_buffer_lets_journaled_events_go_and_replays_them_so_hits_are_still_accepted(
    flaky: tuple[FlakyStore, Ingest], tmp_path: Path
) -> None:
    """Written-ahead events wait in memory; when they fill their share of it (JOURNALED_IN_MEMORY times
    max_buffered besides the events in memory only) while the database lags, they leave memory (their
    journal is on disk) and are replayed, instead of hits being refused."""
    store, ingest = flaky
    flushing = await _lagging_behind_a_hung_batch(store, ingest)
    ingest.max_buffered = 50  # the 200 waiting behind the batch in flight: over the cap, and 4 x 50 once journaled
    assert not ingest.accepting
    store.gate.set()
    await flushing
    assert ingest.accepting and ingest.metrics.events_spilled._value.get() == 200
    assert await store.inner.count_rows("events") == 300  # what left memory was replayed from the spool
    assert ingest.spool.events_read == 200 and spooled_events(tmp_path / "spool") == 0


async def test_journaled_events_within_their_share_of_memory_are_stored_from_memory_and_never_read_back(
    flaky: tuple[FlakyStore, Ingest], tmp_path: Path
) -> None:
    """Journaled events are durable: they do not count against max_buffered (hits keep being accepted)
    and, within their share of memory, go to the database from memory, written to disk once."""
    store, ingest = flaky
    flushing = await _lagging_behind_a_hung_batch(store, ingest)
    ingest.max_buffered = 150  # 200 in memory only behind the batch in flight: refused for now
    assert not ingest.accepting
    store.gate.set()
    await flushing
    assert ingest.metrics.events_spilled._value.get() == 200  # journaled: on disk once
    assert ingest.spool.events_read == 0  # and stored from memory, never read back
    assert await store.inner.count_rows("events") == 300 and spooled_events(tmp_path / "spool") == 0
    assert ingest.accepting


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
    assert ingest.buffered == 60  # still in memory ...
    assert spooled_events(tmp_path / "spool") == 60  # ... and written ahead to a journal the replay left alone
    await ingest._flush(final=False)
    assert await store.inner.count_rows("events") == 260
    assert spooled_events(tmp_path / "spool") == 0


async def test_beacons_are_answered_while_a_spill_waits_on_the_disk(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During an outage every batch is fsynced to the spool. A slow disk must slow the spool, not
    the beacons: while an fsync is blocked, the event loop keeps answering hits."""
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    tracker.state.ingest.store = store = FlakyStore(tracker.state.store)
    store.down = True
    assert (await hit(tracker, f"/o/{tokens[0]}.gif")).status == 200
    entered, released, synced = threading.Event(), threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        entered.set()
        released.wait(timeout=5)  # only a deadlock breaker: a blocked loop is answered after this
        real_fsync(fd)
        synced.set()

    monkeypatch.setattr(os, "fsync", slow_fsync)
    spilling = asyncio.create_task(tracker.flush())
    assert await asyncio.to_thread(entered.wait, 10), "the spill never reached fsync"
    answered = await hit(tracker, f"/o/{tokens[1]}.gif")
    answered_while_blocked = not synced.is_set()
    released.set()
    await spilling
    assert answered.status == 200
    assert answered_while_blocked, "the beacon waited for the spool's fsync: the event loop was blocked"
    monkeypatch.undo()
    store.down = False
    tracker.state.ingest._retry_at = 0
    await tracker.flush()
    assert await tracker.state.store.count_rows("events") == 2


async def test_a_spool_at_its_budget_refuses_hits_during_an_outage_and_loses_nothing(
    flaky: tuple[FlakyStore, Ingest], caplog: pytest.LogCaptureFixture
) -> None:
    store, ingest = flaky
    ingest.spool.max_bytes = room_for(ingest, 50)
    store.down = True
    assert all(ingest.submit(make_event(ingest, n)) for n in range(40))
    await ingest._flush(final=False)  # 40 fit: on disk
    assert all(ingest.submit(make_event(ingest, n)) for n in range(40, 80))
    for _ in range(3):
        await ingest._flush(final=False)  # 40 more do not fit: they stay in memory
    assert ingest.buffered == 40 and ingest.spool_full
    assert not ingest.submit(make_event(ingest, 80)) and ingest.refusal == "spool_full"
    assert not ingest.accepting  # so /readyz says not ready: the pod cannot keep what it is sent
    assert ingest.metrics.spool_full_refusals._value.get() == ingest.metrics.events_refused._value.get() == 1
    assert caplog.text.count("the spool holds its budget") == 1  # one line, not one per flush or hit
    store.down = False
    ingest._retry_at = 0
    await ingest._flush(final=False)
    assert await store.inner.count_rows("events") == 80 and ingest.spool.size_bytes() == 0
    assert ingest.accepting and not ingest.spool_full
    assert ingest.submit(make_event(ingest, 81))


async def test_shutdown_writes_what_is_in_memory_past_the_spool_budget(
    flaky: tuple[FlakyStore, Ingest], tmp_path: Path
) -> None:
    """The budget keeps the volume from filling up during an outage; on SIGTERM what was accepted
    must still reach the disk, so the last write may go past it (the volume is larger)."""
    store, ingest = flaky
    ingest.spool.max_bytes = room_for(ingest, 10)
    store.down = True
    for n in range(30):
        ingest.submit(make_event(ingest, n))
    await ingest._flush(final=False)
    assert ingest.buffered == 30  # refused by the budget
    await ingest.stop()
    assert spooled_events(tmp_path / "spool") == 30
    ingest.spool.close()
    store.down = False
    successor = Ingest(store, Spool(tmp_path / "spool", "w1"), Metrics(), batch_size=100)  # type: ignore[arg-type]
    await successor.start()
    await successor.stop()
    successor.spool.close()
    assert await store.inner.count_rows("events") == 30
    ingest.spool = Spool(tmp_path / "spool", "w0")  # for the fixture's teardown


@pytest.mark.settings(spool_max_bytes=4 * 1024 * 1024)
async def test_hits_beyond_the_spool_budget_get_a_json_503_and_readiness_says_so(tracker: Tracker) -> None:
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    spool_dir = Path(tracker.state.settings.spool_dir)
    (spool_dir / "spool-gone-1.jsonl").write_bytes(b"torn line of a worker that died\n" * (4 * 1024 * 1024 // 32))
    tracker.state.ingest.store = store = FlakyStore(tracker.state.store)
    store.down = True
    assert (await hit(tracker, f"/o/{tokens[0]}.gif")).status == 200
    await tracker.state.ingest._flush(final=False)  # the spool cannot take it: it stays in memory
    refused = await hit(tracker, f"/o/{tokens[1]}.gif")
    assert refused.status == 503
    assert (await refused.json())["error"] == "spool_full"
    ready = await tracker.client.get("/readyz")
    body = await ready.json()
    assert ready.status == 503 and body["spool_full"] is True and body["checks"]["ingest"] is False
    metrics = await (await tracker.client.get("/metrics")).text()
    assert "polite_spool_full_refusals_total 1.0" in metrics and "polite_spool_full 1.0" in metrics
    store.down = False
    tracker.state.ingest._retry_at = 0
    await tracker.state.ingest._flush(final=False)  # stores what waited, replays (and drops) the torn file
    assert (await hit(tracker, f"/o/{tokens[2]}.gif")).status == 200
    await tracker.flush()
    assert await tracker.state.store.count_rows("events") == 2


async def test_accepted_events_are_on_the_counter_by_the_next_turn_of_the_loop(
    flaky: tuple[FlakyStore, Ingest],
) -> None:
    """The counter is added to once per loop turn, not per event: a scrape (a later turn) sees them all."""
    _, ingest = flaky
    for n in range(25):
        assert ingest.submit(make_event(ingest, n))
    await asyncio.sleep(0)
    assert ingest.metrics.events_accepted._value.get() == 25
    ingest.submit(make_event(ingest, 25))
    await ingest.stop()  # stop counts what this turn accepted too
    assert ingest.metrics.events_accepted._value.get() == 26
