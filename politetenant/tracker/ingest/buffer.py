"""From accepted hit to stored row: buffer in memory, write in batches, spool when the database fails.

Handlers call ``submit`` and never wait on the database. One flusher task drains the buffer in
batches; when the database refuses, the batch is fsynced to the spool and replayed once the database
answers again. When the database answers but more slowly than hits arrive, events that have waited
in memory longer than two flush intervals are fsynced to the spool too and replayed from there, so
what a crash (SIGKILL) can lose is bounded by time, not by how far the database has fallen behind.
``stop`` (on SIGTERM) writes out everything still buffered. Nothing accepted is lost; when neither
the database nor the spool can take events and the buffer is full, ``submit`` says no and the hit is
answered 503 instead of being silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable

from politetenant.tracker.ingest.spool import Spool
from politetenant.tracker.metrics import Metrics
from politetenant.tracker.storage.base import StorageUnavailable, Store
from politetenant.tracker.storage.rows import Event

log = logging.getLogger(__name__)

SPILL_AFTER_INTERVALS = 2  # what SIGKILL can lose: the hits of about this many flush intervals


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
    ) -> None:
        self.store = store
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
        # When the event now at the head of the buffer arrived, at the latest: set when an event
        # enters an empty buffer and kept while batches leave, so the age is never underestimated.
        self._head_since = 0.0
        self._flushing = asyncio.Lock()
        # This worker wrote to the spool since its last replay: a flush looks at the spool directory
        # only then, not on every flush (start and recovery replay whatever is there, orphans too).
        self._spooled_since_replay = False

    # -- the hot path ---------------------------------------------------------------------------
    def submit(self, event: Event) -> bool:
        """Accept an event for storage; False means it cannot be kept and the hit must get a 503."""
        if len(self._buffer) >= self.max_buffered:
            self.metrics.events_refused.inc()
            return False
        if not self._buffer:
            self._head_since = time.monotonic()
        self._buffer.append(event)
        self.metrics.events_accepted.inc()
        if len(self._buffer) >= self.batch_size:
            self._wake.set()
        return True

    @property
    def accepting(self) -> bool:
        return len(self._buffer) < self.max_buffered

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
        """Write out everything: to the database if it answers, else to the spool."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task  # lets a batch in flight finish instead of cancelling it mid-COPY
            self._task = None
        await self._flush(final=True)

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval)
            self._wake.clear()
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
                self._spill_if_behind()
                if not self._buffer:
                    break
            batch = self._buffer[: self.batch_size]
            stored = await self._store_batch(batch) if self.database_ok else False
            if not stored and not self._spool_batch(batch):
                break  # neither took it: keep it in memory, submit() refuses once the buffer is full
            del self._buffer[: len(batch)]
        if self.database_ok and self._spooled_since_replay:
            await self._replay_spool()  # what was spilled while the database lagged (on stop too)
        self.metrics.events_buffered.set(len(self._buffer))

    def _spill_if_behind(self) -> None:
        """The head of the buffer has waited longer than two flush intervals (one, plus slack for a busy
        loop's late timer): the database is not keeping up. Make the whole buffer durable on the spool
        now (one fsync) and replay it from there."""
        if time.monotonic() - self._head_since <= SPILL_AFTER_INTERVALS * self.flush_interval or not self.spool_ok:
            return
        if self._spool_batch(self._buffer):
            self.metrics.events_spilled.inc(len(self._buffer))
            self._buffer.clear()

    async def _store_batch(self, batch: list[Event]) -> bool:
        started = time.perf_counter()
        try:
            await self.store.insert_events(batch)
        except StorageUnavailable:
            self._note_failure()
            return False
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        self.metrics.events_stored.inc(len(batch))
        return True

    def _spool_batch(self, batch: list[Event]) -> bool:
        try:
            self.spool.append(batch)
        except OSError as exc:
            if self.spool_ok:
                log.error("ingest: cannot write the spool (%s); refusing hits once the buffer is full", exc.strerror)
            self.spool_ok = False
            return False
        self.spool_ok = True
        self._spooled_since_replay = True
        self.metrics.events_spooled.inc(len(batch))
        self.metrics.spool_bytes.set(self.spool.size_bytes())
        return True

    async def _replay_spool(self) -> None:
        """Move spooled events into the database; stop at the first failure and try again later.

        Between batches, events that waited too long in memory are spilled to the fresh own file
        (``seal_own`` set the replayed one aside), so a long replay does not widen a crash's loss.
        """
        if not self.spool.pending():
            return
        self.spool.seal_own()
        self._spooled_since_replay = False  # what is spilled from here on lands in the fresh file
        replayed = 0
        current = None
        for batch, spool_file in self.spool.drain_batches(self.batch_size):
            if current is not None and spool_file is not current:
                self.spool.done(current)
            current = spool_file
            if batch and not await self._store_batch(batch):
                log.warning("ingest: replay interrupted after %d events; will retry", replayed)
                self._spooled_since_replay = True
                return
            replayed += len(batch)
            if self._buffer:
                self._spill_if_behind()
        if current is not None:
            self.spool.done(current)
        if replayed:
            log.info("ingest: replayed %d spooled events", replayed)
        self.metrics.spool_bytes.set(self.spool.size_bytes())
