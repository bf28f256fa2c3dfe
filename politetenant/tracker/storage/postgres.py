"""PostgreSQL backend (asyncpg): production. Events arrive by COPY, the fastest path PostgreSQL has."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import asyncpg

from politetenant.tracker.storage import base
from politetenant.tracker.storage.base import MessageWriter, StorageUnavailable, Store
from politetenant.tracker.storage.rows import (
    EVENT_COLUMNS,
    ApiTokenRow,
    BootstrapImport,
    ClickTarget,
    Event,
    LinkRow,
    MessageRow,
    RecipientRow,
    RecordRow,
)
from politetenant.tracker.storage.schema import POSTGRES, pending, statements

# Errors that mean "the database is not there right now": spool and retry, never drop.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    TimeoutError,
)


async def _end_open_transaction(conn: asyncpg.Connection) -> None:
    """Reset a connection going back to the pool. asyncpg's default runs RESET ALL, UNLISTEN, CLOSE
    ALL and an advisory unlock on every release: a round trip per ingest batch. The tracker sets no
    session state (its one lock and its cursors live in transactions), so only a transaction left
    open needs ending."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


# Many clicks' targets in one round trip: the keys travel as two arrays, joined like CLICK_TARGET.
_CLICK_TARGETS = (
    "SELECT k.id, k.link_no, r.message_id, l.url FROM unnest($1::bytea[], $2::int[]) AS k(id, link_no)"
    " JOIN records r ON r.id = k.id JOIN links l ON l.message_id = r.message_id AND l.link_no = k.link_no"
)
_ERASED_CLICK_TARGETS = (
    "SELECT k.id, k.link_no, e.message_id, l.url FROM unnest($1::bytea[], $2::int[]) AS k(id, link_no)"
    " JOIN erased_records e ON e.record_id = k.id JOIN links l ON l.message_id = e.message_id AND l.link_no = k.link_no"
)
_FIGURES_STALE = "INSERT INTO figures_stale SELECT DISTINCT unnest($1::bytea[]) ON CONFLICT DO NOTHING"
_MIGRATION_LOCK = 7_415_553_001  # advisory lock id: one migrator at a time across workers


@contextlib.contextmanager
def _as_unavailable() -> Iterator[None]:
    """A lost or refused connection, in whatever form asyncpg raises it, becomes StorageUnavailable."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StorageUnavailable(f"PostgreSQL: {exc.__class__.__name__}") from exc


class _PostgresWriter(MessageWriter):
    overlaps = True

    def __init__(self, conn: asyncpg.Connection, message_id: str) -> None:
        self.conn = conn
        self.message_id = message_id

    async def _copy(self, table: str, rows: Sequence[tuple[Any, ...]], columns: Sequence[str]) -> None:
        self._still_open()
        if rows:
            with _as_unavailable():
                await self.conn.copy_records_to_table(table, records=rows, columns=columns)

    async def add_recipients(self, rows: Sequence[RecipientRow]) -> None:
        await self._copy("recipients", rows, RecipientRow._fields)

    async def add_records(self, rows: Sequence[RecordRow]) -> None:
        await self._copy("records", rows, RecordRow._fields)

    async def set_tracked(self, tracked: int) -> None:
        self._still_open()
        with _as_unavailable():
            await self.conn.execute(base.SET_TRACKED, self.message_id, tracked)


class PostgresStore(Store):
    url_scheme = "postgresql"

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self.dsn = dsn
        self._pool: Any = None
        self._sizes = (min_size, max_size)

    async def connect(self) -> None:
        if self._pool is not None:
            return
        with _as_unavailable():
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=self._sizes[0], max_size=self._sizes[1], command_timeout=60, timeout=10,
                reset=_end_open_transaction,
            )  # fmt: skip

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _pool_or_fail(self) -> Any:
        if self._pool is None:
            raise StorageUnavailable("PostgreSQL: not connected")
        return self._pool

    async def _call(self, method: str, sql: str, *args: Any) -> Any:
        with _as_unavailable():
            async with self._pool_or_fail().acquire() as conn:
                return await getattr(conn, method)(sql, *args)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[asyncpg.Connection]:
        """One connection for work of several statements, some in a transaction (``reports.figures``)."""
        with _as_unavailable():
            async with self._pool_or_fail().acquire() as conn:
                yield conn

    async def migrate(self) -> list[int]:
        async with self._pool_or_fail().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            # Only when missing: even IF NOT EXISTS needs CREATE on the schema, which the application
            # role the tracker and the retention job log in as does not have (the owner migrates).
            if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT)"
                )
            applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            todo = pending(applied)
            for version in todo:
                for sql in statements(POSTGRES, version):
                    await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES ($1, (extract(epoch FROM now()) * 1000)::bigint)",
                    version,
                )
            return todo

    async def ping(self) -> None:
        if self._pool is None:  # never connected (the database was down at start): try now
            await self.connect()
        await self._call("fetchval", "SELECT 1")

    async def insert_message(
        self,
        message: MessageRow,
        recipients: Sequence[RecipientRow],
        records: Sequence[RecordRow],
        links: Sequence[LinkRow],
    ) -> None:
        async with self.message_writer(message, links) as writer:
            await writer.add_recipients(recipients)
            await writer.add_records(records)

    @contextlib.asynccontextmanager
    async def message_writer(self, message: MessageRow, links: Sequence[LinkRow]) -> AsyncIterator[MessageWriter]:
        """One pooled connection and one transaction for the whole message; each batch is a COPY."""
        with _as_unavailable():
            conn = await self._pool_or_fail().acquire()
        try:
            with _as_unavailable():
                transaction = conn.transaction()
                await transaction.start()
            writer = _PostgresWriter(conn, message.id)
            try:
                with _as_unavailable():
                    await conn.execute(
                        base.INSERT_MESSAGE,
                        message.id, message.created_at, message.mode, message.subject, message.from_name,
                        message.from_email, message.list_name, message.recipients, message.tracked,
                        message.word_count, message.flesch, message.link_count, message.created_by,
                    )  # fmt: skip
                    await conn.copy_records_to_table("links", records=links, columns=LinkRow._fields)
                yield writer
            except BaseException:
                writer.closed = True
                with contextlib.suppress(Exception):  # the connection may be gone: releasing it ends the rest
                    await transaction.rollback()
                raise
            writer.closed = True
            with _as_unavailable():
                await transaction.commit()
        finally:
            await self._pool_or_fail().release(conn)

    async def objected(self, indexes: Sequence[bytes]) -> set[bytes]:
        if not indexes:
            return set()
        rows = await self._call(
            "fetch",
            "SELECT subject_index FROM objections WHERE subject_index = ANY($1::bytea[])",
            list(indexes),
        )
        return {bytes(r[0]) for r in rows}

    async def add_objection(self, index: bytes, created_at: int) -> None:
        await self._call("execute", base.INSERT_OBJECTION, index, created_at)

    async def insert_events(self, events: Sequence[Event]) -> None:
        """COPY the batch; if some were stored before (a replay after a crash), merge instead."""
        if not events:
            return
        with _as_unavailable():
            async with self._pool_or_fail().acquire() as conn:
                try:
                    await conn.copy_records_to_table("events", records=events, columns=EVENT_COLUMNS)
                except asyncpg.exceptions.UniqueViolationError:
                    async with conn.transaction():
                        await conn.executemany(base.INSERT_EVENT_IGNORING_DUPLICATES, events)

    async def events_deleted(self, record_ids: Sequence[bytes]) -> None:
        if record_ids:  # the next fold rebuilds them (reports.figures)
            await self._call("execute", _FIGURES_STALE, list(record_ids))

    async def click_targets(self, keys: Sequence[base.ClickKey]) -> dict[base.ClickKey, ClickTarget]:
        if not keys:
            return {}
        rows = await self._call("fetch", _CLICK_TARGETS, [k[0] for k in keys], [k[1] for k in keys])
        found = {(bytes(r[0]), int(r[1])): ClickTarget(message_id=r[2], url=r[3]) for r in rows}
        if len(found) < len(keys):  # erased records (storage.erased), or forged or stale links
            missing = [key for key in keys if key not in found]
            rows = await self._call("fetch", _ERASED_CLICK_TARGETS, [k[0] for k in missing], [k[1] for k in missing])
            found.update({(bytes(r[0]), int(r[1])): ClickTarget(message_id=r[2], url=r[3]) for r in rows})
        return found

    async def get_message(self, message_id: str) -> MessageRow | None:
        row = await self._call("fetchrow", base.SELECT_MESSAGE, message_id)
        return None if row is None else MessageRow(*row)

    async def insert_api_token(self, row: ApiTokenRow) -> None:
        await self._call("execute", base.INSERT_API_TOKEN, row.id, row.role, row.secret_hash, row.created_at)

    async def get_api_token(self, token_id: str) -> ApiTokenRow | None:
        row = await self._call("fetchrow", base.SELECT_API_TOKEN, token_id)
        return None if row is None else ApiTokenRow(row[0], row[1], bytes(row[2]), row[3])

    async def import_bootstrap_token(self, row: ApiTokenRow) -> BootstrapImport:
        with _as_unavailable():
            async with self._pool_or_fail().acquire() as conn, conn.transaction():
                # Other importers (replicas, workers) wait here; readers (token checks) do not.
                await conn.execute("LOCK TABLE api_tokens IN SHARE ROW EXCLUSIVE MODE")
                existing = await conn.fetchrow(base.SELECT_TOKEN_FOR_IMPORT, row.id)
                outcome = base.bootstrap_outcome(None if existing is None else tuple(existing), row)
                if outcome is not None:
                    return BootstrapImport(outcome)
                revoked = tuple(r[0] for r in await conn.fetch(base.SELECT_BOOTSTRAP_IN_FORCE, row.role))
                await conn.execute(base.REVOKE_BOOTSTRAP_IN_FORCE, row.role, row.created_at)
                await conn.execute(base.INSERT_BOOTSTRAP_TOKEN, row.id, row.role, row.secret_hash, row.created_at)
                return BootstrapImport("imported", revoked)

    async def count_rows(self, table: str) -> int:
        if table not in base.TABLES:
            raise ValueError(f"unknown table {table!r}")
        return int(await self._call("fetchval", f"SELECT COUNT(*) FROM {table}"))

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._call("fetch", sql, *args)]

    async def execute(self, sql: str, *args: Any) -> int:
        status = await self._call("execute", sql, *args)
        try:
            return int(str(status).rsplit(" ", 1)[-1])
        except ValueError:
            return 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with _as_unavailable():
            async with self._pool_or_fail().acquire() as conn, conn.transaction():
                await conn.executemany(sql, rows)

    async def stream(self, sql: str, *args: Any, batch: int = 5000) -> AsyncIterator[list[tuple[Any, ...]]]:
        with _as_unavailable():
            async with self._pool_or_fail().acquire() as conn, conn.transaction():
                cursor = await conn.cursor(sql, *args)  # server-side cursor: bounded memory
                while True:
                    rows = await cursor.fetch(batch)
                    if not rows:
                        return
                    yield [tuple(r) for r in rows]

    async def append_chained(
        self, table: str, columns: Sequence[str], values: Sequence[Any], link: Callable[[bytes | None], bytes]
    ) -> int:
        if table not in base.TABLES:
            raise ValueError(f"unknown table {table!r}")
        names = ", ".join([*columns, "prev_hash", "hash"])
        marks = base.marks(len(columns) + 2)
        with _as_unavailable():
            async with self._pool_or_fail().acquire() as conn, conn.transaction():
                # Blocks other appenders (not readers) until commit: the chain never forks.
                await conn.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
                prev = await conn.fetchval(f"SELECT hash FROM {table} ORDER BY id DESC LIMIT 1")
                prev = bytes(prev) if prev is not None else None
                new_id = await conn.fetchval(
                    f"INSERT INTO {table} ({names}) VALUES ({marks}) RETURNING id",
                    *values,
                    prev,
                    link(prev),
                )
                return int(new_id)
