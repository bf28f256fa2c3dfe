"""A store that fails on command, wrapping a real one: for testing the spool without a real outage.

It behaves like a database that is unreachable (every call raises StorageUnavailable, as the real
backends do on a refused connection) while ``down`` is set; otherwise it passes calls through. While
``gate`` is closed (cleared), event inserts wait for it: a database that answers, slowly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from politetenant.tracker.storage.base import StorageUnavailable, Store
from politetenant.tracker.storage.rows import Event


class FlakyStore:
    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = False
        self.insert_calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.inserting = asyncio.Event()  # set by the first insert: a test can wait for it

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name in ("connect", "close"):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StorageUnavailable("database unreachable (flaky store is down)")
            return await attr(*args, **kwargs)

        return call

    async def insert_events(self, events: Sequence[Event]) -> None:
        self.insert_calls += 1
        self.inserting.set()
        await self.gate.wait()
        if self.down:
            raise StorageUnavailable("database unreachable (flaky store is down)")
        await self.inner.insert_events(events)
