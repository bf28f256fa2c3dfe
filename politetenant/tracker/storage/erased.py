"""Records of erased people: hits on the e-mails already sent to them store nothing.

An erasure (``privacy.subjects.erase``) deletes a person's individual-mode records with their events,
but the e-mails already sent still carry tokens that name those records, and a token verifies by its
MAC alone: an open of one of them afterwards would be judged and stored as a new event, a history
begun again of someone who asked to be forgotten. So the erasure leaves in ``erased_records`` each
record's random id and its message's id (nothing else: no e-mail, no pseudonym), and every worker keeps
the ids in memory (``ErasedRecords``):

- a hit on an erased record is answered as any other: an open gets the GIF, a click still leads where
  the link went (the store finds the message's link through ``erased_records``), and its event is
  dropped when the batch it is in is stored (``keep``: one set look-up per event, while any record was
  erased), from the buffer or from the spool alike;
- what another worker stored before it learned is deleted when this worker learns of the erasure
  (``refresh``), and once more at the refresh after, for a batch that was being written meanwhile.

Workers learn of another's erasures within ``REFRESH_SECONDS``; the erasing worker at once. The rows
go with their message when retention purges it (``privacy.retention``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from politetenant.tracker.storage.base import StorageUnavailable, Store, marks
from politetenant.tracker.storage.rows import Event

log = logging.getLogger(__name__)

REFRESH_SECONDS = 10.0
SWEEP_CHUNK = 500  # record ids per DELETE: bounded parameters (SQLite allows 32,766)


class ErasedRecords:
    """The erased record ids this worker knows of."""

    def __init__(self) -> None:
        self.ids: set[bytes] = set()
        self._swept: set[bytes] = set()  # ids whose events this worker deleted since it learned of them
        self._last: set[bytes] = set()  # learned at the last refresh: swept once more at the next

    def __contains__(self, record_id: bytes) -> bool:
        return record_id in self.ids

    def add(self, record_ids: Iterable[bytes]) -> None:
        """Erased here and now: no hit on them is stored from this moment."""
        self.ids.update(record_ids)

    def keep(self, events: list[Event]) -> list[Event]:
        """The events whose records were not erased (the same list, at no cost, while none was)."""
        ids = self.ids
        if not ids:
            return events
        return [event for event in events if event.record_id not in ids]

    async def refresh(self, store: Store) -> int:
        """Learn the erasures every worker made; delete the events stored of newly learned ones (and of
        those learned last time). Returns how many ids were new to this worker's sweeps."""
        known = {bytes(row[0]) for row in await store.fetch("SELECT record_id FROM erased_records")}
        new = known - self._swept
        sweep = sorted(new | self._last)
        for start in range(0, len(sweep), SWEEP_CHUNK):
            chunk = sweep[start : start + SWEEP_CHUNK]
            await store.execute(f"DELETE FROM events WHERE record_id IN ({marks(len(chunk))})", *chunk)
        self._swept |= new
        self._last = new
        self.ids |= known
        return len(new)


async def keep_refreshed(erased: ErasedRecords, store: Store, stopping: asyncio.Event) -> None:
    """``refresh`` every ``REFRESH_SECONDS`` until ``stopping`` (the worker's start refreshed first); a
    database that does not answer is tried again at the next one, and meanwhile what is stored is still
    filtered by what is known."""
    while True:
        try:
            await asyncio.wait_for(stopping.wait(), REFRESH_SECONDS)
            return
        except TimeoutError:
            pass
        try:
            await erased.refresh(store)
        except StorageUnavailable as exc:
            log.warning("erased records: not refreshed (%s); trying again in %.0f s", exc, REFRESH_SECONDS)


async def remember_erased(store: Store, erased: ErasedRecords, records: Sequence[tuple[bytes, str]]) -> None:
    """Before an erasure deletes these (record id, message id): no hit on them is stored by this worker
    from now, and they are kept for the others (``refresh``) and for clicks. Idempotent, as the erasure is."""
    erased.add(record_id for record_id, _ in records)
    sql = "INSERT INTO erased_records (record_id, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    await store.executemany(sql, records)
