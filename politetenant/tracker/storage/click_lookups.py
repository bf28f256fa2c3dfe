"""Where clicks go, looked up together: the misses of one event-loop turn become one query.

A recipient's first click on a link is a database read (the worker's cache only helps repeats), and a
newsletter's clicks come in bursts. One query per click queued the bursts on a small connection pool
(p99 of hundreds of ms in bench/tracker_http); gathering the lookups asked for in the same turn of
the loop into one ``Store.click_targets`` call costs one round trip for all of them. Two clicks on
the same link share one lookup.
"""

from __future__ import annotations

import asyncio

from politetenant.tracker.storage.base import ClickKey, Store
from politetenant.tracker.storage.rows import ClickTarget

MAX_BATCH = 500  # keys per query: bounded parameters and a bounded wait for the first of them


class ClickLookups:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: dict[ClickKey, asyncio.Future[ClickTarget | None]] = {}
        self._flight: set[asyncio.Task[None]] = set()

    async def get(self, record_id: bytes, link_no: int) -> ClickTarget | None:
        """The link's target, None when no such record or link is stored; raises what the store
        raises (StorageUnavailable) for every lookup of the failed batch."""
        # shield: one requester giving up (its client hung up) must not cancel the others' answer
        return await asyncio.shield(self.lookup(record_id, link_no))

    def lookup(self, record_id: bytes, link_no: int) -> asyncio.Future[ClickTarget | None]:
        """What ``get`` awaits, for a caller that takes the answer in a done callback (the lean
        server: no task and no shield per click). The future is shared by every request for the link
        in this batch: never cancel it."""
        key = (record_id, link_no)
        future = self._waiting.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = self._waiting[key] = loop.create_future()
            if len(self._waiting) == 1:
                loop.call_soon(self._dispatch)  # after this turn: the other misses of it join
            elif len(self._waiting) >= MAX_BATCH:
                self._dispatch()
        return future

    def _dispatch(self) -> None:
        if not self._waiting:
            return
        batch, self._waiting = self._waiting, {}
        task = asyncio.get_running_loop().create_task(self._resolve(batch))
        self._flight.add(task)
        task.add_done_callback(self._flight.discard)

    async def _resolve(self, batch: dict[ClickKey, asyncio.Future[ClickTarget | None]]) -> None:
        try:
            found = await self._store.click_targets(list(batch))
        except Exception as exc:
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved here too: no warning when every requester left
            return
        for key, future in batch.items():
            if not future.done():
                future.set_result(found.get(key))
