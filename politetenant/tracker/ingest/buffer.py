"""From accepted hit to stored row: buffer in memory, write in batches, spool when the database fails.

Handlers call ``submit`` and never wait on the database. One flusher task drains the buffer in
batches; when the database refuses, the batch is fsynced to the spool and replayed once the database
answers again. ``stop`` (on SIGTERM) writes out everything still buffered. Nothing accepted is lost;
when neither the database nor the spool can take events and the buffer is full, ``submit`` says no
and the hit is answered 503 instead of being silently dropped. The same happens at once, buffer full
or not, while the database takes no events and the spool holds its budget (``spool_max_bytes``):
what is accepted then could only wait in memory, where a crash would lose it.

When the database answers but more slowly than hits arrive, what a crash (SIGKILL) can lose is
bounded by time, not by how far the database has fallen behind: events that have waited in memory
longer than two flush intervals are written ahead to a journal segment on the spool (one fsync for
all of them) and STAY in the buffer; they go to the database from memory, and the segment is deleted
once they have all left memory. So a SIGKILL loses at most the hits of the last two flush intervals
plus the batch in flight, and the next start replays the dead worker's segments (idempotently: the
event ids). ``max_buffered`` bounds the events that are in memory only (what a crash could lose);
journaled events may fill up to ``JOURNALED_IN_MEMORY`` times as much again before they are dropped
from memory (their segments become spool files to replay), so a lagging database never turns into
503s while the spool has room, and a burst that the database drains within seconds is written once.

Why write-ahead rather than the previous version's spill (events that waited were moved to the spool
and replayed from there): under a flood that wrote half of all events twice, and the JSON it wrote
cost more CPU than COPY itself (bench.ingest, 200,000 events: 0.57-0.88 of raw COPY, 0.79 of raw
executemany). With write-ahead the steady state never reads the disk back, and the binary records
(``framing``) make the one write cheap; letting journaled events go from a full buffer costs only
the read, never a second write. Journaling every event on every flush (a group commit) would also
hold the bound, but pays the write when the database keeps up, which is nearly always; the
figures are in bench/ingest.py's docstring.

Spool writes, fsyncs and reads run on one thread of their own (``_on_disk``), in the order the
flusher asks for them, so a slow disk delays the spool, never the beacons on the event loop. A
journal write does not hold up the flusher either: batches keep going to the database while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from politetenant.tracker.ingest.spool import Spool, SpoolFull
from politetenant.tracker.metrics import Metrics
from politetenant.tracker.storage.base import StorageUnavailable, Store
from politetenant.tracker.storage.erased import ErasedRecords
from politetenant.tracker.storage.rows import Event

log = logging.getLogger(__name__)

SPILL_AFTER_INTERVALS = 2  # what SIGKILL can lose: the hits of about this many flush intervals
# Journaled events (durable already) may occupy this many times ``max_buffered`` in memory besides the
# events that are in memory only: 50,000 x 4 events are ~70 MB (~350 bytes each), well inside the
# tracker's 512 MiB limit.
JOURNALED_IN_MEMORY = 3
INGEST_FULL, SPOOL_FULL = "ingest_full", "spool_full"  # why ``submit`` said no (the 503's error code)
T = TypeVar("T")


class EventIds:
    """Unique 16-byte event ids without a syscall per event: a random prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8)
        self._counter = itertools.count(1)
        self._pack = struct.Struct(">Q").pack

    def next(self) -> bytes:
        return self._prefix + self._pack(next(self._counter))


class Ingest:
    def __init__(
        self,
        store: Store,
        spool: Spool,
        metrics: Metrics,
        *,
        batch_size: int = 1000,
        flush_interval: float = 0.5,
        max_buffered: int = 50_000,
        on_recovered: Callable[[], Awaitable[None]] | None = None,
        erased: ErasedRecords | None = None,
    ) -> None:
        self.store = store
        self.erased = erased if erased is not None else ErasedRecords()  # events of these are dropped
        self.spool = spool
        self.metrics = metrics
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.ids = EventIds()
        self._buffer: list[Event] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.on_recovered = on_recovered
        self.database_ok = False
        self.spool_ok = True
        self._retry_at = 0.0
        self._backoff = 0.25
        # The first ``_journaled`` events of the buffer are on a journal segment too. When the oldest
        # event not on it arrived, at the latest: set when an event enters a buffer with no such event
        # and kept while batches leave, so the age is never underestimated.
        self._journaled = 0
        self._unjournaled_since = 0.0
        self._left = 0  # events that have left the head of the buffer so far: the journal's sequence
        self._journal_uptos: list[int] = []  # per live journal segment, the sequence just past its last event
        # The journal write under way, if any: the flusher goes on storing batches while the spool's
        # thread encodes and fsyncs; its events count as journaled only once the fsync has returned.
        self._journaling: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        # This worker wrote to the spool since its last replay: a flush looks at the spool directory
        # only then, not on every flush (start and recovery replay whatever is there, orphans too).
        self._spooled_since_replay = False
        self._disk: ThreadPoolExecutor | None = None  # the one thread that touches the spool
        self.spool_full = False  # the last append found the spool at its budget
        self._accepted = 0  # accepted in this turn of the event loop, not yet on the counter
        self._woken = False  # ``_wake`` is set: a flooded buffer does not set it again on every hit

    # -- the hot path ---------------------------------------------------------------------------
    def submit(self, event: Event) -> bool:
        """Accept an event for storage; False means it cannot be kept and the hit must get a 503
        (``refusal`` says why). Runs once per hit: ``accepting`` is inlined and each step is paid
        only when it changes something (a flood spends 2-3 % of its ingest time here)."""
        buffer = self._buffer
        held = len(buffer)
        if held - self._journaled >= self.max_buffered or (self.spool_full and not self.database_ok):
            return self._refuse()
        if held == self._journaled:
            self._unjournaled_since = time.monotonic()
        buffer.append(event)
        if self._accepted:
            self._accepted += 1
        else:  # the first this turn: counted once per turn of the loop, before any scrape can be answered
            self._accepted = 1
            try:
                asyncio.get_running_loop().call_soon(self._count_accepted)
            except RuntimeError:  # no loop (a test submitting directly): count now
                self._count_accepted()
        if not self._woken and held >= self.batch_size - 1:
            self._woken = True
            self._wake.set()
        return True

    def _refuse(self) -> bool:
        self.metrics.events_refused.inc()
        if self.refusal == SPOOL_FULL:
            self.metrics.spool_full_refusals.inc()
        return False

    def _count_accepted(self) -> None:
        """Add this turn's accepted events to the counter: one ``inc`` (a lock, and a file write in
        multi-worker mode) per turn instead of per event, 6% of a flood's ingest time."""
        accepted, self._accepted = self._accepted, 0
        if accepted:
            self.metrics.events_accepted.inc(accepted)

    @property
    def accepting(self) -> bool:
        """What ``submit`` checks first (inlined there: keep the two the same)."""
        only_in_memory = len(self._buffer) - self._journaled
        return only_in_memory < self.max_buffered and not (self.spool_full and not self.database_ok)

    @property
    def _memory_full(self) -> bool:
        """Journaled events fill memory up to their share: let the journal take them (replayed later)."""
        return len(self._buffer) >= self.max_buffered * (1 + JOURNALED_IN_MEMORY)

    @property
    def refusal(self) -> str:
        """The error code of a refused hit: the spool at its budget, or the buffer full."""
        return SPOOL_FULL if self.spool_full and not self.database_ok else INGEST_FULL

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._ensure_database()
        if self.database_ok:
            await self._replay_spool()
        self._task = asyncio.create_task(self._run(), name="ingest-flusher")

    async def stop(self) -> None:
        """Write out everything: to the database if it answers, else to the spool (past its budget if
        need be: the budget is set below the volume's size so that this last write always fits)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task  # lets a batch in flight finish instead of cancelling it mid-COPY
            self._task = None
        self._count_accepted()
        await self._flush(final=True)
        if self._disk is not None:
            self._disk.shutdown(wait=True)  # every write asked for is done; a later call starts a new thread
            self._disk = None

    async def _on_disk(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a spool call on the spool's thread: in order, one at a time, off the event loop."""
        if self._disk is None:
            self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._disk, call)

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval)
            self._wake.clear()
            self._woken = False
            if self._stopping:
                return
            try:
                await self._flush(final=False)
            except Exception:  # never let the flusher die: log the class only, nothing personal
                log.exception("ingest: flush failed unexpectedly; events stay buffered")
                await asyncio.sleep(self.flush_interval)

    # -- flushing -------------------------------------------------------------------------------
    async def _ensure_database(self) -> None:
        if self.database_ok or time.monotonic() < self._retry_at:
            return
        try:
            await self.store.ping()
            if self.on_recovered is not None:
                await self.on_recovered()  # e.g. the schema, when the database was down at start
                self.on_recovered = None
        except Exception as exc:
            if not isinstance(exc, StorageUnavailable):
                log.warning("ingest: database not usable yet (%s)", exc.__class__.__name__)
            self._note_failure()
            return
        self.database_ok = True
        self._backoff = 0.25
        self.metrics.database_up.set(1)
        log.info("ingest: database reachable")

    def _note_failure(self) -> None:
        if self.database_ok:
            log.warning("ingest: database unavailable; spooling events to disk")
        self.database_ok = False
        self.metrics.database_up.set(0)
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 5.0)

    async def _flush(self, *, final: bool) -> None:
        async with self._flushing:  # one flush at a time: a replay must not meet another one
            await self._flush_now(final=final)

    async def _flush_now(self, *, final: bool) -> None:
        if not self.database_ok:
            await self._ensure_database()
            if self.database_ok:
                await self._replay_spool()
        while self._buffer:
            if not final:
                await self._spill_if_behind()
                if not self._buffer:
                    break
            batch = self._buffer[: self.batch_size]
            stored = await self._store_batch(batch) if self.database_ok else False
            if not stored and not await self._spool_batch(batch, final=final):
                break  # neither took it: keep it in memory, submit() refuses once the buffer is full
            await self._leave(len(batch))
        if self.database_ok and self._spooled_since_replay:
            await self._replay_spool()  # what was spilled while the database lagged (on stop too)
        await self._journal_settled()  # a flush ends with its journal write done: nothing left behind
        self.metrics.events_buffered.set(len(self._buffer))

    async def _spill_if_behind(self) -> None:
        """The oldest event not yet on the journal has waited longer than two flush intervals (one,
        plus slack for a busy loop's late timer): the database is not keeping up. Write every such
        event ahead to a journal segment now (one fsync); they stay in memory and are stored from
        there. The write runs on the spool's thread while the flusher goes on storing batches: a
        flush that waited for it left the database idle for the encoding and the fsync (bench.ingest
        on PostgreSQL: 40-250 ms per write; the gaps between COPYs summed to 0.15-0.27 s a run, now
        0.02 s). One write at a time; its events count as journaled (for ``accepting``, eviction and
        the next write) only once it has returned.
        If journaled events fill their share of memory, or the database went away, they leave
        memory without being written again: their segments are replayed instead (``evict_journal``)."""
        if self._journaling is not None and self._journaling.done():
            await self._journal_settled()
        started = time.monotonic()
        waiting = len(self._buffer) - self._journaled
        behind = started - self._unjournaled_since > SPILL_AFTER_INTERVALS * self.flush_interval
        # When the database is down, the outage spool takes them all.
        if self._journaling is None and waiting and behind and self.database_ok and self.spool_ok:
            upto = self._left + len(self._buffer)
            events = self._buffer[self._journaled :]
            self._journaling = asyncio.create_task(self._journal(events, upto, started), name="ingest-journal")
        if (self._memory_full or not self.database_ok) and (self._journaled or self._journaling is not None):
            await self._journal_settled()  # what is being written ahead can leave memory too, once on disk
            if self._journaled:
                await self._on_disk(self.spool.evict_journal)
                self._journal_uptos.clear()
                self._spooled_since_replay = True  # the evicted segments are replayed like an outage's spool
                del self._buffer[: self._journaled]
                self._left += self._journaled
                self._journaled = 0

    async def _journal(self, events: list[Event], upto: int, started: float) -> None:
        """Write ``events`` (the buffer's sequence up to ``upto``, taken at ``started``) ahead to a
        journal segment; once durable, count them as journaled, whatever has left memory meanwhile."""
        if not await self._write_spool(events, journal_upto=upto):
            return
        self.metrics.events_spilled.inc(len(events))
        self._journaled = max(0, upto - self._left)  # those stored meanwhile have left the buffer
        self._journal_uptos.append(upto)
        # Hits that arrived during the write are younger than its start; if every event it covered
        # left memory meanwhile, submit() has already noted the arrival of the oldest one since.
        self._unjournaled_since = max(self._unjournaled_since, started)
        await self._retire_stored()

    async def _journal_settled(self) -> None:
        """Wait for the journal write under way, if any (its error, if unexpected, is the flush's)."""
        if self._journaling is not None:
            journaling, self._journaling = self._journaling, None
            await journaling

    async def _leave(self, count: int) -> None:
        """The first ``count`` events of the buffer are stored or spooled: drop them from memory and
        delete the journal segments that held only them."""
        del self._buffer[:count]
        self._left += count
        self._journaled = max(0, self._journaled - count)
        await self._retire_stored()

    async def _retire_stored(self) -> None:
        """Delete the journal segments whose events have all left memory."""
        if self._journal_uptos and self._journal_uptos[0] <= self._left:
            self._journal_uptos = [upto for upto in self._journal_uptos if upto > self._left]
            await self._on_disk(self.spool.retire, self._left)

    async def _store_batch(self, batch: list[Event]) -> bool:
        started = time.perf_counter()
        kept = self.erased.keep(batch)  # accepted before this worker knew of an erasure: not stored
        try:
            if kept:
                await self.store.insert_events(kept)
        except StorageUnavailable:
            self._note_failure()
            return False
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        self.metrics.events_stored.inc(len(kept))
        return True

    async def _spool_batch(self, batch: list[Event], *, final: bool = False) -> bool:
        return await self._write_spool(batch, final=final)

    async def _write_spool(self, batch: list[Event], *, final: bool = False, journal_upto: int | None = None) -> bool:
        """Append ``batch`` to the outage spool, or with ``journal_upto`` to a journal segment, on the
        spool's thread; False, with the state noted for ``accepting``, when the spool is at its budget
        or the disk fails."""
        try:
            if journal_upto is None:
                await self._on_disk(self.spool.append, batch, beyond_budget=final)
            else:
                await self._on_disk(self.spool.journal, batch, journal_upto)
        except SpoolFull:
            self._note_spool_full(True)
            return False
        except OSError as exc:
            if self.spool_ok:
                log.error("ingest: cannot write the spool (%s); refusing hits once the buffer is full", exc.strerror)
            self.spool_ok = False
            return False
        self.spool_ok = True
        if not final:  # a final write may go past the budget: that is not room again
            self._note_spool_full(False)
        if journal_upto is None:
            self._spooled_since_replay = True
        self.metrics.events_spooled.inc(len(batch))
        self.metrics.spool_bytes.set(await self._on_disk(self.spool.size_bytes))
        return True

    def _note_spool_full(self, full: bool) -> None:
        """One log line when the spool reaches its budget and one when it has room again, not one per hit."""
        if full and not self.spool_full:
            log.error(
                "ingest: the spool holds its budget (spool_max_bytes=%d); while the database takes no events,"
                " hits are answered 503",
                self.spool.max_bytes or 0,
            )
        elif self.spool_full and not full:
            log.info("ingest: the spool has room again; accepting hits")
        self.spool_full = full
        self.metrics.spool_full.set(1 if full else 0)

    async def _replay_spool(self) -> None:
        """Move spooled events into the database; stop at the first failure and try again later.

        Between batches, events that waited too long in memory are spilled to the fresh own file
        (``seal_own`` set the replayed one aside), so a long replay does not widen a crash's loss.
        """
        if not await self._on_disk(self.spool.pending):
            return
        await self._on_disk(self.spool.seal_own)
        self._spooled_since_replay = False  # what is spilled from here on lands in the fresh file
        replayed = 0
        current = None
        batches = self.spool.drain_batches(self.batch_size)  # a generator: advanced on the spool thread only
        while (item := await self._on_disk(next, batches, None)) is not None:
            batch, spool_file = item
            if current is not None and spool_file is not current:
                await self._on_disk(self.spool.done, current)
            current = spool_file
            if batch and not await self._store_batch(batch):
                log.warning("ingest: replay interrupted after %d events; will retry", replayed)
                self._spooled_since_replay = True
                return
            replayed += len(batch)
            if self._buffer:
                await self._spill_if_behind()
        if current is not None:
            await self._on_disk(self.spool.done, current)
        await self._journal_settled()  # (start() replays before the flusher runs: settle here too)
        if replayed:
            log.info("ingest: replayed %d spooled events", replayed)
        size = await self._on_disk(self.spool.size_bytes)
        self.metrics.spool_bytes.set(size)
        if self.spool.max_bytes is None or size < self.spool.max_bytes:
            self._note_spool_full(False)
