"""Reconcile a tenant within moments of a change to one of its children.

A watch event on a child (deleted by hand, edited, or a workload's status moving during a rollout)
``poke``s its tenant. Pokes arriving within ``delay`` of each other make one reconcile, which reads
the watched state (``watched``) and so costs no request when nothing needs doing. The event of one of
the operator's own writes (the very resourceVersion it wrote, ``Written.observed``) pokes nothing: a
tenant being brought up would otherwise be reconciled again for each child it just made. A reconcile
that asks to be retried pokes itself again after its delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

DEBOUNCE_SECONDS = 0.3

# What a poke runs: the tenant's reconcile; returns seconds until it should run again, or None.
Run = Callable[[str], Awaitable[float | None]]


class DriftTrigger:
    """At most one pending reconcile per tenant, started ``delay`` seconds after its first poke."""

    def __init__(self, run: Run, *, delay: float = DEBOUNCE_SECONDS) -> None:
        self._run = run
        self._delay = delay
        self._pending: dict[str, asyncio.Task[None]] = {}

    def poke(self, tenant: str, *, after: float | None = None) -> None:
        if tenant in self._pending:
            return
        self._pending[tenant] = asyncio.get_running_loop().create_task(self._later(tenant, after))

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def _later(self, tenant: str, after: float | None) -> None:
        again: float | None = None
        try:
            await asyncio.sleep(self._delay if after is None else after)
            self._pending.pop(tenant, None)  # a poke from now on schedules another run
            again = await self._run(tenant)
        except asyncio.CancelledError:
            raise
        except Exception:  # logged; the drift timer looks at the tenant again anyway
            log.exception("tenant %s: reconcile after a change to a child failed", tenant)
        finally:
            if self._pending.get(tenant) is asyncio.current_task():
                del self._pending[tenant]
        if again is not None:
            self.poke(tenant, after=again)

    async def close(self) -> None:
        tasks = list(self._pending.values())
        self._pending.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
