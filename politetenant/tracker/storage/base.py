"""The storage interface both backends implement, and the SQL they share.

Queries are written once with ``$n`` parameters (PostgreSQL style); the SQLite backend rewrites them
to ``?n``, which SQLite also understands, so the two cannot drift apart.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from politetenant.tracker.storage.rows import (
    ApiTokenRow,
    BootstrapImport,
    ClickTarget,
    Event,
    LinkRow,
    MessageRow,
    RecipientRow,
    RecordRow,
)


class StorageUnavailable(Exception):
    """The database cannot be reached or refused the write; callers spool and retry."""


INSERT_MESSAGE = (
    "INSERT INTO messages (id, created_at, mode, subject, from_name, from_email, list_name, recipients,"
    " tracked, word_count, flesch, link_count, created_by)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
)
INSERT_RECIPIENT = (
    "INSERT INTO recipients (message_id, email_index, email, name, attributes) VALUES ($1, $2, $3, $4, $5)"
)
INSERT_RECORD = "INSERT INTO records (id, message_id, attributes, subject_index) VALUES ($1, $2, $3, $4)"
# A message's row goes in before its recipients are read; only then is it known how many objected.
SET_TRACKED = "UPDATE messages SET tracked = $2 WHERE id = $1"
INSERT_LINK = "INSERT INTO links (message_id, link_no, url, text) VALUES ($1, $2, $3, $4)"
INSERT_EVENT_IGNORING_DUPLICATES = (
    "INSERT INTO events (event_id, record_id, kind, link_no, occurred_at, country, region, city, os,"
    " device, browser, bot, read_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    " ON CONFLICT (event_id) DO NOTHING"
)
CLICK_TARGET = (
    "SELECT r.message_id, l.url FROM records r JOIN links l ON l.message_id = r.message_id"
    " WHERE r.id = $1 AND l.link_no = $2"
)
ClickKey = tuple[bytes, int]  # (record id, link number)
# The same for a record an erasure deleted: its e-mail's links still lead where they did.
ERASED_CLICK_TARGET = (
    "SELECT e.message_id, l.url FROM erased_records e JOIN links l ON l.message_id = e.message_id"
    " WHERE e.record_id = $1 AND l.link_no = $2"
)
SELECT_MESSAGE = (
    "SELECT id, created_at, mode, subject, from_name, from_email, list_name, recipients, tracked,"
    " word_count, flesch, link_count, created_by FROM messages WHERE id = $1"
)
INSERT_API_TOKEN = "INSERT INTO api_tokens (id, role, secret_hash, created_at) VALUES ($1, $2, $3, $4)"
SELECT_API_TOKEN = "SELECT id, role, secret_hash, created_at FROM api_tokens WHERE id = $1 AND revoked_at IS NULL"
# Bootstrap tokens (the operator's Secret): at most one in force per role, replaced when the Secret is.
SELECT_TOKEN_FOR_IMPORT = "SELECT role, secret_hash, revoked_at, bootstrap_role FROM api_tokens WHERE id = $1"
SELECT_BOOTSTRAP_IN_FORCE = "SELECT id FROM api_tokens WHERE bootstrap_role = $1 AND revoked_at IS NULL ORDER BY id"
REVOKE_BOOTSTRAP_IN_FORCE = "UPDATE api_tokens SET revoked_at = $2 WHERE bootstrap_role = $1 AND revoked_at IS NULL"
INSERT_BOOTSTRAP_TOKEN = (
    "INSERT INTO api_tokens (id, role, secret_hash, created_at, bootstrap_role) VALUES ($1, $2, $3, $4, $2)"
)
INSERT_OBJECTION = (
    "INSERT INTO objections (subject_index, created_at) VALUES ($1, $2) ON CONFLICT (subject_index) DO NOTHING"
)


def marks(count: int, start: int = 1) -> str:
    """``$start, ..., $(start + count - 1)``: the placeholders of an ``IN (...)`` list, as every store
    takes them (SQLite's are rewritten from these)."""
    return ", ".join(f"${n}" for n in range(start, start + count))


def bootstrap_outcome(existing: Sequence[Any] | None, row: ApiTokenRow) -> str | None:
    """What importing ``row`` means, given the stored row of the same id (SELECT_TOKEN_FOR_IMPORT):
    None to store it, replacing the role's token in force; else the outcome, with nothing written.

    A token that was revoked stays revoked (a pod with a stale copy of a rotated Secret must not bring
    it back); an id stored for another role or secret is a conflict, never overwritten."""
    if existing is None:
        return None
    role, secret_hash, revoked_at, bootstrap_role = existing
    if role != row.role or bytes(secret_hash) != row.secret_hash or bootstrap_role != row.role:
        return "conflict"
    return "revoked" if revoked_at is not None else "unchanged"


class MessageWriter(abc.ABC):
    """The rows of one message going in batch by batch inside one open transaction (``message_writer``):
    a message of 100,000 recipients never has to be in memory at once, and nothing of it is kept unless
    all of it is."""

    # Whether the database works on a batch while this process builds the next: PostgreSQL (another
    # process) and SQLite (multi-row INSERTs, which run with the GIL released; executemany would take
    # it back after every row, and a thread building rows meanwhile would only make both wait).
    overlaps: bool = False
    closed: bool = False  # the message's transaction has ended (committed or rolled back)

    def _still_open(self) -> None:
        if self.closed:
            raise RuntimeError("the message's transaction has ended: no more rows can join it")

    @abc.abstractmethod
    async def add_recipients(self, rows: Sequence[RecipientRow]) -> None: ...

    @abc.abstractmethod
    async def add_records(self, rows: Sequence[RecordRow]) -> None: ...

    @abc.abstractmethod
    async def set_tracked(self, tracked: int) -> None:
        """The message's count of tracked recipients, once the objection list has been read."""


class _BufferingWriter(MessageWriter):
    def __init__(self) -> None:
        self.recipients: list[RecipientRow] = []
        self.records: list[RecordRow] = []
        self.tracked: int | None = None

    async def add_recipients(self, rows: Sequence[RecipientRow]) -> None:
        self.recipients.extend(rows)

    async def add_records(self, rows: Sequence[RecordRow]) -> None:
        self.records.extend(rows)

    async def set_tracked(self, tracked: int) -> None:
        self.tracked = tracked


class Store(abc.ABC):
    """What the tracker needs from a database. Implementations: SQLite and PostgreSQL."""

    url_scheme: str

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied now."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StorageUnavailable unless a trivial query succeeds."""

    @abc.abstractmethod
    async def insert_message(
        self,
        message: MessageRow,
        recipients: Sequence[RecipientRow],
        records: Sequence[RecordRow],
        links: Sequence[LinkRow],
    ) -> None:
        """Store a message with everything that belongs to it, atomically."""

    @contextlib.asynccontextmanager
    async def message_writer(self, message: MessageRow, links: Sequence[LinkRow]) -> AsyncIterator[MessageWriter]:
        """Store a message in batches, atomically: the message row and its links when entered, recipients
        and records as they are added, all committed on a clean exit and none on an exception.

        This fallback buffers and calls ``insert_message``; the backends stream into one transaction."""
        writer = _BufferingWriter()
        yield writer
        if writer.tracked is not None:
            message = dataclasses.replace(message, tracked=writer.tracked)
        await self.insert_message(message, writer.recipients, writer.records, links)

    @abc.abstractmethod
    async def objected(self, indexes: Sequence[bytes]) -> set[bytes]:
        """Which of these blind indexes are on the objection list."""

    @abc.abstractmethod
    async def add_objection(self, index: bytes, created_at: int) -> None: ...

    @abc.abstractmethod
    async def insert_events(self, events: Sequence[Event]) -> None:
        """Store a batch; a batch seen before (replay) must not be counted twice."""

    @abc.abstractmethod
    async def events_deleted(self, record_ids: Sequence[bytes]) -> None:
        """Some events of these records were deleted while the records stay (retention by age). A
        store that keeps per-record figures (PostgreSQL: ``reports.figures``) has them rebuilt."""

    @abc.abstractmethod
    async def click_targets(self, keys: Sequence[ClickKey]) -> dict[ClickKey, ClickTarget]:
        """Where each (record id, link number) goes, in one query; keys not found are absent."""

    @abc.abstractmethod
    async def get_message(self, message_id: str) -> MessageRow | None: ...

    @abc.abstractmethod
    async def insert_api_token(self, row: ApiTokenRow) -> None: ...

    @abc.abstractmethod
    async def get_api_token(self, token_id: str) -> ApiTokenRow | None: ...

    @abc.abstractmethod
    async def import_bootstrap_token(self, row: ApiTokenRow) -> BootstrapImport:
        """Store ``row`` as the bootstrap token of its role and revoke the role's previous one (at
        ``row.created_at``), atomically and serialised with other importers (replicas and workers
        start together); see ``bootstrap_outcome`` for when nothing is written."""

    @abc.abstractmethod
    async def count_rows(self, table: str) -> int:
        """Rows in one of our tables (health, tests, benchmarks)."""

    # -- generic primitives: SQL written once with $n parameters, run on either backend ---------------
    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """All rows of a query (use ``stream`` for anything that can be large)."""

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement in its own transaction; return the number of rows it changed."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement per row, all in one transaction."""

    @abc.abstractmethod
    def stream(self, sql: str, *args: Any, batch: int = 5000) -> AsyncIterator[list[tuple[Any, ...]]]:
        """Rows of a query in batches, never all in memory (a cursor, not a fetchall)."""

    @abc.abstractmethod
    async def append_chained(
        self, table: str, columns: Sequence[str], values: Sequence[Any], link: Callable[[bytes | None], bytes]
    ) -> int:
        """Append a row to a hash-chained table, atomically with reading the previous row's hash.

        ``link(prev_hash)`` returns this row's hash; ``columns``/``values`` exclude ``prev_hash`` and
        ``hash``, which this method fills. Concurrent writers (other workers) are serialised by a
        table lock, so the chain never forks. Returns the new row's id.
        """


def open_store(url: str) -> Store:
    """``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or ``postgresql://...``."""
    if url.startswith("sqlite:///"):
        from politetenant.tracker.storage.sqlite import SqliteStore

        path = url[len("sqlite:///") :]
        if not path:
            raise ValueError("--db sqlite:/// needs a file path, e.g. sqlite:///./polite-data/tracker.db")
        return SqliteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from politetenant.tracker.storage.postgres import PostgresStore

        return PostgresStore(url)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ValueError(f"--db: unsupported database {scheme!r}; use sqlite:///PATH or postgresql://...")


TABLES = frozenset(
    {"messages", "recipients", "records", "links", "events", "objections", "api_tokens", "audit", "ui_sessions"}
)
