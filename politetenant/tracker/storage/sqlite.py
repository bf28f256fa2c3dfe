"""SQLite backend: the embedded default for a laptop, the demo and small tenants.

One connection on one dedicated thread keeps sqlite3 happy and the event loop free; WAL mode lets
several tracker workers (processes) share the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from politetenant.tracker.storage import base
from politetenant.tracker.storage.base import MessageWriter, StorageUnavailable, Store
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
from politetenant.tracker.storage.schema import SQLITE, pending, statements

T = TypeVar("T")
_PARAM = re.compile(r"\$(\d+)")


def _q(sql: str) -> str:
    return _PARAM.sub(r"?\1", sql)


_Runner = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]


def _open_connection(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a process crash; fsync at checkpoints
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _open_message_connection(path: str) -> sqlite3.Connection:
    """A connection for one message's transaction. Its commit does not checkpoint: a big message leaves
    some 40 MB in the write-ahead log, and copying them into the database (0.14 s for 100,000
    recipients) would hold up the sender's answer. ``_checkpoint_and_close`` does it afterwards."""
    conn = _open_connection(path)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


def _checkpoint_and_close(conn: sqlite3.Connection) -> None:
    """Copy the log into the database as far as no reader needs it (PASSIVE: never waits for one), on
    the message's own thread once its answer is on its way; what is left, the next checkpoint takes."""
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error:
        pass  # a busy or vanished database: the shared connection's automatic checkpoints catch up
    finally:
        conn.close()


def _unavailable_on_error(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    try:
        return fn(conn)
    except sqlite3.OperationalError as exc:
        # "database is locked", "disk I/O error", missing file...: retryable, spool meanwhile.
        raise StorageUnavailable(f"SQLite: {exc}") from exc


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@functools.lru_cache(maxsize=8)
def _insert_rows(table: str, columns: tuple[str, ...], rows: int) -> str:
    """One INSERT of ``rows`` rows."""
    row = "(" + ",".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ",".join([row] * rows)


# Rows per INSERT. Each statement costs a GIL hand-back (up to the switch interval while the builder
# thread runs), so few; its compiled form takes memory (some 2 MB for 5,000 rows of five columns,
# kept by the allocator after), so not too few.
_ROWS_PER_INSERT = 1_000


def _insert_many(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: Sequence[Any]) -> None:
    """``rows`` in statements of ``_ROWS_PER_INSERT`` (fewer if SQLite allows fewer parameters).

    Values of type ``bytes`` are bound as ``bytearray``: sqlite3 binds a bytearray (like int, float and
    str) directly, but passes bytes through its adapter registry first (a tuple, a dict look-up and two
    attribute look-ups each), holding the GIL: for a message of 100,000 recipients that was 0.27 s of
    this thread's GIL time, taken from the thread building the rows. Both are stored as the same BLOB."""
    most = min(_ROWS_PER_INSERT, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(columns))
    for start in range(0, len(rows), most):
        chunk = rows[start : start + most]
        values = [bytearray(v) if v.__class__ is bytes else v for v in itertools.chain.from_iterable(chunk)]
        conn.execute(_insert_rows(table, columns, len(chunk)), values)


class _SqliteWriter(MessageWriter):
    """Each batch goes in as a few multi-row INSERTs rather than ``executemany``: sqlite3 runs a statement
    with the GIL released and takes it back when the statement is done, so the thread building the next
    batch keeps running meanwhile (``overlaps``). ``executemany`` takes the GIL back after every row,
    and each time waits for the other thread's switch interval: the two threads would only wait on each
    other. It is also a third cheaper: one statement walks many rows."""

    overlaps = True

    def __init__(self, run: _Runner, message_id: str) -> None:
        self.run = run
        self.message_id = message_id

    async def _insert(self, table: str, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
        self._still_open()
        if rows:
            await self.run(lambda conn: _insert_many(conn, table, columns, rows))

    async def add_recipients(self, rows: Sequence[RecipientRow]) -> None:
        await self._insert("recipients", RecipientRow._fields, rows)

    async def add_records(self, rows: Sequence[RecordRow]) -> None:
        await self._insert("records", RecordRow._fields, rows)

    async def set_tracked(self, tracked: int) -> None:
        self._still_open()
        await self.run(lambda conn: conn.execute(_q(base.SET_TRACKED), (self.message_id, tracked)))


class SqliteStore(Store):
    url_scheme = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._conn is None:
                raise StorageUnavailable("the SQLite database is not open")
            try:
                return fn(self._conn)
            except sqlite3.OperationalError as exc:
                # "database is locked", "disk I/O error", missing file...: retryable, spool meanwhile.
                raise StorageUnavailable(f"SQLite: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def connect(self) -> None:
        def open_db() -> None:
            if self._conn is not None:
                return
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = _open_connection(self.path)

        await asyncio.get_running_loop().run_in_executor(self._executor, open_db)

    async def close(self) -> None:
        def close_db() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close_db)
        self._executor.shutdown(wait=True)

    async def migrate(self) -> list[int]:
        def run(conn: sqlite3.Connection) -> list[int]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT)"
                )
                applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
                todo = pending(applied)
                for version in todo:
                    for sql in statements(SQLITE, version):
                        conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, int(time.time() * 1000)))
                conn.execute("COMMIT")
                return todo
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._run(run)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

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
        """One transaction on a connection of its own, on a thread of its own: the transaction stays open
        while the rows are built, and on the shared connection every other query of the tracker would
        fall into it. Its BEGIN IMMEDIATE takes the write lock, so other writers wait (busy_timeout), as
        they would for one long insert. An in-memory database has no second connection: it uses the
        shared one."""
        if self.path == ":memory:":
            async with self._message_transaction(self._run, message, links) as writer:
                yield writer
            return
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-message")
        try:
            conn = await loop.run_in_executor(executor, _open_message_connection, self.path)
        except sqlite3.OperationalError as exc:
            executor.shutdown(wait=False)
            raise StorageUnavailable(f"SQLite: {exc}") from exc

        async def run(fn: Callable[[sqlite3.Connection], T]) -> T:
            return await loop.run_in_executor(executor, _unavailable_on_error, fn, conn)

        try:
            async with self._message_transaction(run, message, links) as writer:
                yield writer
        finally:
            executor.submit(_checkpoint_and_close, conn)  # after the answer: nobody waits for it
            executor.shutdown(wait=False)

    @contextlib.asynccontextmanager
    async def _message_transaction(
        self, run: _Runner, message: MessageRow, links: Sequence[LinkRow]
    ) -> AsyncIterator[MessageWriter]:
        def begin(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    _q(base.INSERT_MESSAGE),
                    (
                        message.id, message.created_at, message.mode, message.subject, message.from_name,
                        message.from_email, message.list_name, message.recipients, message.tracked,
                        message.word_count, message.flesch, message.link_count, message.created_by,
                    ),
                )  # fmt: skip
                conn.executemany(_q(base.INSERT_LINK), links)
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await run(begin)
        writer = _SqliteWriter(run, message.id)
        try:
            yield writer
        except BaseException:
            writer.closed = True
            with contextlib.suppress(Exception):
                await run(lambda conn: conn.execute("ROLLBACK"))
            raise
        writer.closed = True
        await run(_commit)

    async def objected(self, indexes: Sequence[bytes]) -> set[bytes]:
        def run(conn: sqlite3.Connection) -> set[bytes]:
            found: set[bytes] = set()
            for start in range(0, len(indexes), 500):
                chunk = list(indexes[start : start + 500])
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT subject_index FROM objections WHERE subject_index IN ({marks})"
                found.update(bytes(row[0]) for row in conn.execute(sql, chunk))
            return found

        if not indexes:
            return set()
        return await self._run(run)

    async def add_objection(self, index: bytes, created_at: int) -> None:
        await self._run(lambda conn: conn.execute(_q(base.INSERT_OBJECTION), (index, created_at)))

    async def insert_events(self, events: Sequence[Event]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_q(base.INSERT_EVENT_IGNORING_DUPLICATES), events)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        if events:
            await self._run(run)

    async def events_deleted(self, record_ids: Sequence[bytes]) -> None:
        """Nothing to rebuild: SQLite reports from its events directly."""

    async def click_targets(self, keys: Sequence[base.ClickKey]) -> dict[base.ClickKey, ClickTarget]:
        def run(conn: sqlite3.Connection) -> dict[base.ClickKey, ClickTarget]:
            found = {}
            for key in keys:  # one thread hop for the batch; each lookup is an index probe
                row = conn.execute(_q(base.CLICK_TARGET), key).fetchone()
                if row is None:  # an erased record (storage.erased), or a forged or stale link
                    row = conn.execute(_q(base.ERASED_CLICK_TARGET), key).fetchone()
                if row is not None:
                    found[key] = ClickTarget(message_id=row[0], url=row[1])
            return found

        return await self._run(run) if keys else {}

    async def get_message(self, message_id: str) -> MessageRow | None:
        row = await self._run(lambda conn: conn.execute(_q(base.SELECT_MESSAGE), (message_id,)).fetchone())
        return None if row is None else MessageRow(*row)

    async def insert_api_token(self, row: ApiTokenRow) -> None:
        await self._run(
            lambda conn: conn.execute(_q(base.INSERT_API_TOKEN), (row.id, row.role, row.secret_hash, row.created_at))
        )

    async def get_api_token(self, token_id: str) -> ApiTokenRow | None:
        row = await self._run(lambda conn: conn.execute(_q(base.SELECT_API_TOKEN), (token_id,)).fetchone())
        return None if row is None else ApiTokenRow(row[0], row[1], bytes(row[2]), row[3])

    async def import_bootstrap_token(self, row: ApiTokenRow) -> BootstrapImport:
        def run(conn: sqlite3.Connection) -> BootstrapImport:
            conn.execute("BEGIN IMMEDIATE")  # the database write lock: other importers wait
            try:
                existing = conn.execute(_q(base.SELECT_TOKEN_FOR_IMPORT), (row.id,)).fetchone()
                outcome = base.bootstrap_outcome(existing, row)
                revoked: tuple[str, ...] = ()
                if outcome is None:
                    outcome = "imported"
                    revoked = tuple(r[0] for r in conn.execute(_q(base.SELECT_BOOTSTRAP_IN_FORCE), (row.role,)))
                    conn.execute(_q(base.REVOKE_BOOTSTRAP_IN_FORCE), (row.role, row.created_at))
                    conn.execute(_q(base.INSERT_BOOTSTRAP_TOKEN), (row.id, row.role, row.secret_hash, row.created_at))
                conn.execute("COMMIT")
                return BootstrapImport(outcome, revoked)
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._run(run)

    async def count_rows(self, table: str) -> int:
        if table not in base.TABLES:
            raise ValueError(f"unknown table {table!r}")
        row: Any = await self._run(lambda conn: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone())
        return int(row[0])

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return await self._run(lambda conn: [tuple(r) for r in conn.execute(_q(sql), args).fetchall()])

    async def execute(self, sql: str, *args: Any) -> int:
        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                changed = conn.execute(_q(sql), args).rowcount
                conn.execute("COMMIT")
                return changed
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._run(run)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_q(sql), rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        if rows:
            await self._run(run)

    async def stream(self, sql: str, *args: Any, batch: int = 5000) -> AsyncIterator[list[tuple[Any, ...]]]:
        # Keyset-free streaming: a dedicated read connection so the writer thread is never blocked.
        def open_cursor() -> tuple[sqlite3.Connection, sqlite3.Cursor]:
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            return conn, conn.execute(_q(sql), args)

        loop = asyncio.get_running_loop()
        conn, cursor = await loop.run_in_executor(None, open_cursor)
        try:
            while True:
                rows = await loop.run_in_executor(None, cursor.fetchmany, batch)
                if not rows:
                    return
                yield [tuple(r) for r in rows]
        finally:
            conn.close()

    async def append_chained(
        self, table: str, columns: Sequence[str], values: Sequence[Any], link: Callable[[bytes | None], bytes]
    ) -> int:
        if table not in base.TABLES:
            raise ValueError(f"unknown table {table!r}")

        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")  # the database write lock: no other worker appends meanwhile
            try:
                row = conn.execute(f"SELECT hash FROM {table} ORDER BY id DESC LIMIT 1").fetchone()
                prev = bytes(row[0]) if row else None
                names = ", ".join([*columns, "prev_hash", "hash"])
                marks = ", ".join("?" * (len(columns) + 2))
                cur = conn.execute(
                    f"INSERT INTO {table} ({names}) VALUES ({marks})",
                    (*values, prev, link(prev)),
                )
                conn.execute("COMMIT")
                return int(cur.lastrowid or 0)
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._run(run)
