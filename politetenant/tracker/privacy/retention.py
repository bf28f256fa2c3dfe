"""Retention: delete interaction data and messages older than the tenant's limits, never during a hold.

Two cutoffs (``retention_interaction_days``, ``retention_message_days``). Events older than the first
go on their own; a message older than the second goes with its recipients, records, links and the
events of its records, however recent those are. Every DELETE touches at most ``batch`` rows and is
its own short transaction, so a purge of tens of millions of rows never holds a long lock, never
loads a table into memory, and a purge cut short is simply finished by the next one (children are
always deleted before their parents: nothing is left pointing at a deleted row).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from politetenant.crypto import Keyring
from politetenant.settings import TrackerSettings
from politetenant.tracker.privacy import audit
from politetenant.tracker.storage.base import Store, marks

DAY_MS = 86_400_000
# Ids bound into one IN list at most: well inside SQLite's (32766 since 3.32) and PostgreSQL's limits.
MAX_BATCH = 10_000

_OLD_EVENTS = "SELECT event_id, record_id FROM events WHERE occurred_at < $1 ORDER BY occurred_at LIMIT $2"
_OLD_MESSAGES_PAGE = "SELECT id, link_count FROM messages WHERE created_at < $1 ORDER BY created_at, id LIMIT $2"

_OF_OLD_MESSAGES = "message_id IN (SELECT id FROM messages WHERE created_at < $1)"
_COUNTS = {
    "events": "SELECT COUNT(*) FROM events WHERE occurred_at < $1",
    "messages": "SELECT COUNT(*) FROM messages WHERE created_at < $1",
    "recipients": f"SELECT COUNT(*) FROM recipients WHERE {_OF_OLD_MESSAGES}",
    "records": f"SELECT COUNT(*) FROM records WHERE {_OF_OLD_MESSAGES}",
    "links": f"SELECT COUNT(*) FROM links WHERE {_OF_OLD_MESSAGES}",
    # Events the message purge takes that the interaction purge has not already taken.
    "message_events": (
        "SELECT COUNT(*) FROM events e JOIN records r ON r.id = e.record_id"
        f" WHERE r.{_OF_OLD_MESSAGES} AND e.occurred_at >= $2"
    ),
}


@dataclass(frozen=True, slots=True)
class PurgeProgress:
    """One statement's worth: ``rows`` deleted (or counted, in a dry run) from ``table``."""

    table: str
    rows: int
    total: int  # rows of this table so far in this purge


@dataclass(slots=True)
class PurgeResult:
    interaction_cutoff_ms: int
    message_cutoff_ms: int
    dry_run: bool = False
    refused_for_legal_hold: bool = False
    events: int = 0  # interaction events older than the interaction cutoff
    message_events: int = 0  # newer events that went with their message
    messages: int = 0
    recipients: int = 0
    records: int = 0
    links: int = 0
    statements: int = 0

    @property
    def total_events(self) -> int:
        return self.events + self.message_events

    @property
    def total_rows(self) -> int:
        return self.total_events + self.messages + self.recipients + self.records + self.links

    def detail(self) -> str:
        """The audit entry's detail: counts only, nothing personal."""
        if self.refused_for_legal_hold:
            return "legal_hold=on events=0 messages=0"
        return (
            f"events={self.total_events} messages={self.messages} recipients={self.recipients}"
            f" records={self.records} links={self.links}"
        )


ProgressCallback = Callable[[PurgeProgress], None]


async def purge(
    store: Store,
    settings: TrackerSettings,
    keyring: Keyring,
    *,
    now_ms: int | None = None,
    dry_run: bool = False,
    batch: int = 5000,
    progress: ProgressCallback | None = None,
) -> PurgeResult:
    """Apply the tenant's retention (or, with ``dry_run``, count what it would delete) and audit it.

    Each DELETE removes at most ``batch`` rows (``MAX_BATCH`` at most). Under a legal hold nothing is
    deleted or counted: the result says it was refused.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    result = PurgeResult(
        interaction_cutoff_ms=now - settings.retention_interaction_days * DAY_MS,
        message_cutoff_ms=now - settings.retention_message_days * DAY_MS,
        dry_run=dry_run,
    )
    if settings.legal_hold:
        result.refused_for_legal_hold = True
        await _audit(store, keyring, "refused", result)
        return result
    try:
        if dry_run:
            await _count(store, result, progress)
        else:
            await _Deleter(store, result, batch, progress).run()
    except BaseException:
        # What was deleted before the failure stays deleted: say so in the log, if the database lets us.
        with contextlib.suppress(Exception):
            await _audit(store, keyring, "failed", result)
        raise
    await _audit(store, keyring, "dry-run" if dry_run else "ok", result)
    return result


async def _audit(store: Store, keyring: Keyring, outcome: str, result: PurgeResult) -> None:
    await audit.record(store, keyring, audit.SYSTEM_ACTOR, audit.Action.PURGE, outcome=outcome, detail=result.detail())


async def _count(store: Store, result: PurgeResult, progress: ProgressCallback | None) -> None:
    """A dry run: one COUNT per table (reads only, so no lock held against the tracker)."""
    for name, sql in _COUNTS.items():
        if name == "events":
            args: tuple[int, ...] = (result.interaction_cutoff_ms,)
        elif name == "message_events":
            args = (result.message_cutoff_ms, result.interaction_cutoff_ms)
        else:
            args = (result.message_cutoff_ms,)
        rows = await store.fetch(sql, *args)
        count = int(rows[0][0])
        setattr(result, name, count)
        result.statements += 1
        if progress is not None:
            progress(PurgeProgress(name, count, count))


def _groups(messages: Sequence[tuple[Any, ...]], batch: int) -> list[list[str]]:
    """Split a page of (id, link_count) so each group's links (link_count + the honeypot) fit a batch."""
    groups: list[list[str]] = []
    group: list[str] = []
    links = 0
    for message_id, link_count in messages:
        rows = int(link_count) + 1
        if group and links + rows > batch:
            groups.append(group)
            group, links = [], 0
        group.append(message_id)
        links += rows
    if group:
        groups.append(group)
    return groups


class _Deleter:
    """The real run: select at most a batch of keys, delete exactly those; children before parents.

    Two statements per batch rather than ``DELETE ... WHERE key IN (SELECT ... LIMIT n)``: given a
    subquery, PostgreSQL plans a hash semi-join that scans the whole table once per batch, while an
    explicit list of keys is always an index look-up, on both databases.
    """

    def __init__(self, store: Store, result: PurgeResult, batch: int, progress: ProgressCallback | None) -> None:
        self.store = store
        self.result = result
        self.batch = min(batch, MAX_BATCH)
        self.progress = progress

    async def run(self) -> None:
        await self._in_batches(
            "events", "events", "event_id", _OLD_EVENTS, self.result.interaction_cutoff_ms, deleted=self._refold
        )
        while True:
            page = await self._select(_OLD_MESSAGES_PAGE, self.result.message_cutoff_ms, self.batch)
            if not page:
                return
            for group in _groups(page, self.batch):
                await self._delete_messages(group)

    async def _select(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        self.result.statements += 1
        return await self.store.fetch(sql, *args)

    async def _delete(self, table: str, result_field: str | None, where: str, *args: Any) -> None:
        """One DELETE, counted under ``result_field`` (None: rows that are no one's data, not counted)."""
        deleted = await self.store.execute(f"DELETE FROM {table} WHERE {where}", *args)
        self.result.statements += 1
        if result_field is None:
            return
        total = getattr(self.result, result_field) + deleted
        setattr(self.result, result_field, total)
        if self.progress is not None:
            self.progress(PurgeProgress(result_field, deleted, total))

    async def _in_batches(
        self, table: str, result_field: str, key: str, select_sql: str, *args: Any,
        deleted: Callable[[list[tuple[Any, ...]]], Awaitable[None]] | None = None,
    ) -> None:  # fmt: skip
        """Select keys a batch at a time (``select_sql`` ends in LIMIT of the next parameter), delete
        them; then ``deleted`` is given the selected rows."""
        while True:
            rows = await self._select(select_sql, *args, self.batch)
            keys = [row[0] for row in rows]
            if not keys:
                return
            await self._delete(table, result_field, f"{key} IN ({marks(len(keys))})", *keys)
            if deleted is not None:
                await deleted(rows)
            if len(keys) < self.batch:
                return

    async def _refold(self, rows: list[tuple[Any, ...]]) -> None:
        """Old events went while their records stay: figures kept per record are rebuilt."""
        await self.store.events_deleted([bytes(row[1]) for row in rows])

    async def _delete_messages(self, ids: Sequence[str]) -> None:
        n = len(ids)
        in_group = f"message_id IN ({marks(n)})"
        # Records a chunk at a time: first every event of the chunk (the one record of an aggregate
        # message can have hundreds of thousands), then the chunk itself.
        records_sql = f"SELECT id FROM records WHERE {in_group} LIMIT ${n + 1}"
        while True:
            chunk = [row[0] for row in await self._select(records_sql, *ids, self.batch)]
            if not chunk:
                break
            k = len(chunk)
            await self._in_batches(
                "events",
                "message_events",
                "event_id",
                f"SELECT event_id FROM events WHERE record_id IN ({marks(k)}) LIMIT ${k + 1}",
                *chunk,
            )
            await self._delete("records", "records", f"id IN ({marks(k)})", *chunk)
        await self._in_batches(
            "recipients", "recipients", "id", f"SELECT id FROM recipients WHERE {in_group} LIMIT ${n + 1}", *ids
        )
        # What an erasure left of their records (storage.erased): the links it led to go now.
        await self._delete("erased_records", None, in_group, *ids)
        # The group was sized by link_count, so its links fit one statement; then its message rows.
        await self._delete("links", "links", in_group, *ids)
        await self._delete("messages", "messages", f"id IN ({marks(n)})", *ids)
