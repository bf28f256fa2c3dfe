"""PostgreSQL checks a message's recipients and records against ``messages`` once per statement
(migration 7's triggers) instead of per row (the foreign keys it drops): every guarantee the keys
gave is held here, including the row lock that keeps a concurrent delete from leaving orphans."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from politetenant.tracker.storage import open_store
from politetenant.tracker.storage.base import Store
from politetenant.tracker.storage.rows import MessageRow, RecipientRow, RecordRow
from tests.support import PG_ADMIN_DSN, emptied_store, scratch_database

NOWHERE = "msg_00000000000000000000dead"  # a message id no row has


def message(message_id: str) -> MessageRow:
    return MessageRow(message_id, 1_700_000_000_000, "individual", b"s", b"f", b"e", b"l", 2, 2, 10, None, 0, "tok")


def recipients(message_id: str, count: int = 2) -> list[RecipientRow]:
    return [RecipientRow(message_id, f"{message_id}-{n}".encode(), b"sealed", None, None) for n in range(count)]


def records(message_id: str, count: int = 2) -> list[RecordRow]:
    return [RecordRow(f"{message_id}-{n}".encode(), message_id, None, None) for n in range(count)]


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with scratch_database() as made:
        yield made


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[Store]:
    async with emptied_store(dsn) as made:
        yield made


@pytest.fixture
async def conn(store: Store, dsn: str) -> AsyncIterator[asyncpg.Connection]:
    made = await asyncpg.connect(dsn)
    yield made
    await made.close()


async def add_figures(conn: asyncpg.Connection, record_id: bytes, message_id: str) -> None:
    await conn.execute(
        "INSERT INTO record_figures (record_id, message_id, first_hit, reasons, proxied, privacy, opens, proxied_opens,"
        " privacy_opens, machine_opens, machine_clicks, clicks, link_clicks, odd_click, click_mask, honeypot_bot,"
        " gateway_click) VALUES ($1, $2, 1, 0, false, false, 1, 0, 0, 0, 0, 0, '{}', false, 0, false, false)",
        record_id, message_id,
    )  # fmt: skip


async def counts(conn: asyncpg.Connection, message_id: str) -> tuple[int, int, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM recipients WHERE message_id = $1), (SELECT count(*) FROM records"
        " WHERE message_id = $1), (SELECT count(*) FROM record_figures WHERE message_id = $1)",
        message_id,
    )
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def test_the_two_foreign_keys_are_gone_and_the_triggers_are_there(conn: asyncpg.Connection) -> None:
    keys = {r[0] for r in await conn.fetch("SELECT conname FROM pg_constraint WHERE contype = 'f'")}
    assert "recipients_message_id_fkey" not in keys and "records_message_id_fkey" not in keys
    assert {"links_message_id_fkey", "record_figures_record_id_fkey"} <= keys  # these stay
    triggers = await conn.fetch(
        "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2"
    )
    assert [tuple(t) for t in triggers] == [
        ("messages", "messages_delete_children"),
        ("messages", "messages_id_unchanged"),
        ("messages", "messages_truncate_with_children"),
        ("recipients", "recipients_need_message_on_insert"),
        ("recipients", "recipients_need_message_on_update"),
        ("records", "records_need_message_on_insert"),
        ("records", "records_need_message_on_update"),
    ]


async def test_a_message_and_its_rows_in_one_transaction_are_stored(store: Store, conn: asyncpg.Connection) -> None:
    await store.insert_message(message("msg_a"), recipients("msg_a", 3), records("msg_a", 4), [])
    assert await counts(conn, "msg_a") == (3, 4, 0)


@pytest.mark.parametrize("table", ["recipients", "records"])
async def test_an_insert_for_a_missing_message_is_refused_naming_table_and_message(
    conn: asyncpg.Connection, table: str
) -> None:
    sql = {
        "recipients": "INSERT INTO recipients (message_id, email_index, email) VALUES ($1, 'i', 'e')",
        "records": "INSERT INTO records (id, message_id) VALUES ('r', $1)",
    }[table]
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await conn.execute(sql, NOWHERE)
    assert table in str(refused.value) and NOWHERE in str(refused.value)
    assert refused.value.table_name == table
    assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0


@pytest.mark.parametrize("table", ["recipients", "records"])
async def test_a_copy_with_one_row_of_a_missing_message_is_refused_whole(
    store: Store, conn: asyncpg.Connection, table: str
) -> None:
    await store.insert_message(message("msg_a"), [], [], [])
    rows: list[tuple[object, ...]]
    columns: tuple[str, ...]
    if table == "recipients":
        rows, columns = [*recipients("msg_a", 5000), *recipients(NOWHERE, 1)], RecipientRow._fields
    else:
        rows, columns = [*records("msg_a", 5000), *records(NOWHERE, 1)], RecordRow._fields
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await conn.copy_records_to_table(table, records=rows, columns=columns)
    assert table in str(refused.value) and NOWHERE in str(refused.value)
    assert await counts(conn, "msg_a") == (0, 0, 0)


async def test_moving_a_child_to_a_missing_message_is_refused(store: Store, conn: asyncpg.Connection) -> None:
    await store.insert_message(message("msg_a"), recipients("msg_a"), records("msg_a"), [])
    for table in ("recipients", "records"):
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=table):
            await conn.execute(f"UPDATE {table} SET message_id = $1", NOWHERE)
    # Updates that keep the message (rectify, reseal) go through.
    assert await conn.execute("UPDATE recipients SET email = 'resealed'") == "UPDATE 2"
    assert await counts(conn, "msg_a") == (2, 2, 0)


async def test_deleting_messages_deletes_their_rows_and_figures_and_no_one_elses(
    store: Store, conn: asyncpg.Connection
) -> None:
    for message_id in ("msg_a", "msg_b", "msg_c"):
        await store.insert_message(message(message_id), recipients(message_id), records(message_id), [])
        await add_figures(conn, records(message_id)[0].id, message_id)

    assert await conn.execute("DELETE FROM messages WHERE id IN ('msg_a', 'msg_b')") == "DELETE 2"

    assert await counts(conn, "msg_a") == (0, 0, 0)
    assert await counts(conn, "msg_b") == (0, 0, 0)
    assert await counts(conn, "msg_c") == (2, 2, 1)


async def test_a_message_id_never_changes(store: Store, conn: asyncpg.Connection) -> None:
    await store.insert_message(message("msg_a"), recipients("msg_a"), [], [])
    await store.insert_message(message("msg_b"), [], [], [])  # no children: the key let this one change
    for message_id in ("msg_a", "msg_b"):
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=message_id):
            await conn.execute("UPDATE messages SET id = 'msg_new' WHERE id = $1", message_id)
    assert await conn.execute("UPDATE messages SET id = id, created_at = 1") == "UPDATE 2"  # same id: fine
    assert await counts(conn, "msg_a") == (2, 0, 0)


async def test_truncating_messages_alone_is_refused_while_children_exist(
    store: Store, conn: asyncpg.Connection
) -> None:
    await store.insert_message(message("msg_a"), recipients("msg_a"), [], [])
    for sql in ("TRUNCATE messages, links", "TRUNCATE messages CASCADE"):  # links keeps its own key
        with pytest.raises(asyncpg.FeatureNotSupportedError, match="recipients and records"):
            await conn.execute(sql)
    await conn.execute("TRUNCATE messages, links, recipients, records, record_figures")  # all together: fine
    assert await counts(conn, "msg_a") == (0, 0, 0)


async def waiting_for_a_lock(conn: asyncpg.Connection, pid: int) -> None:
    """Until the backend ``pid`` waits for a lock (polled: no timing assumption)."""
    for _ in range(1_500):  # PostgreSQL tells of no one's wait: ask (30 s at most, then the test fails)
        if await conn.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid) == "Lock":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited for a lock")


async def test_a_child_for_a_message_being_deleted_waits_and_then_is_refused(
    store: Store, conn: asyncpg.Connection, dsn: str
) -> None:
    await store.insert_message(message("msg_a"), [], [], [])
    deleter, inserter = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        deleting = deleter.transaction()
        await deleting.start()
        await deleter.execute("DELETE FROM messages WHERE id = 'msg_a'")
        inserting = asyncio.create_task(
            inserter.copy_records_to_table("recipients", records=recipients("msg_a"), columns=RecipientRow._fields)
        )
        await waiting_for_a_lock(conn, inserter.get_server_pid())
        assert not inserting.done()
        await deleting.commit()
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="recipients"):
            await inserting
    finally:
        await deleter.close()
        await inserter.close()
    assert await counts(conn, "msg_a") == (0, 0, 0)


async def test_a_delete_waits_for_children_being_inserted_and_deletes_them_too(
    store: Store, conn: asyncpg.Connection, dsn: str
) -> None:
    await store.insert_message(message("msg_a"), [], [], [])
    deleter, inserter = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        inserting = inserter.transaction()
        await inserting.start()
        await inserter.copy_records_to_table("records", records=records("msg_a", 3))
        deleting = asyncio.create_task(deleter.execute("DELETE FROM messages WHERE id = 'msg_a'"))
        await waiting_for_a_lock(conn, deleter.get_server_pid())
        assert not deleting.done()
        await inserting.commit()
        assert await deleting == "DELETE 1"
    finally:
        await deleter.close()
        await inserter.close()
    assert await counts(conn, "msg_a") == (0, 0, 0)  # no orphan: the trigger saw the committed rows


@pytest.fixture
async def app_dsn(store: Store, dsn: str) -> AsyncIterator[str]:
    """A role with what ``database_roles.ROLES_SQL`` gives the tracker's: USAGE on the schema and
    SELECT, INSERT, UPDATE, DELETE on the tables; no TRIGGER, REFERENCES, TRUNCATE or CREATE."""
    role = f"polite_test_app_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOINHERIT")
        await admin.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        await admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        base, _, database = dsn.rpartition("/")
        yield f"{base.replace('postgres@', f'{role}@')}/{database}"
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.close()
        server = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await server.execute(f"DROP ROLE IF EXISTS {role}")
        finally:
            await server.close()


async def test_the_triggers_work_for_the_app_role(app_dsn: str, conn: asyncpg.Connection) -> None:
    app = open_store(app_dsn)
    await app.connect()
    try:
        assert await app.fetch("SELECT current_user") != await conn.fetch("SELECT current_user")
        await app.insert_message(message("msg_a"), recipients("msg_a"), records("msg_a"), [])
        await add_figures(conn, records("msg_a")[0].id, "msg_a")
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="records"):
            await app.execute("INSERT INTO records (id, message_id) VALUES ('r', $1)", NOWHERE)
        assert await app.execute("DELETE FROM messages WHERE id = 'msg_a'") == 1  # as retention and erasure do
    finally:
        await app.close()
    assert await counts(conn, "msg_a") == (0, 0, 0)
