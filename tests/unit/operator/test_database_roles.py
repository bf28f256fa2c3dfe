"""The owner and app roles of a StatefulSet database, made by the database pod's ``roles`` container.

Rendered: the sidecar, its ConfigMap and its Secrets. Then for real, on a private PostgreSQL server
(roles are cluster-wide, so never the shared one) with password authentication on TCP as the official
image has it: the container's script is run as the pod runs it, on a new database and on one made
before the roles existed; the tracker's migrations run as the owner, the tracker's own operations as
the app role; and the app role is shown to be refused what it must never do.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from politetenant.operator.render.database_roles import (
    ROLES_DIR,
    ROLES_SCRIPT,
    ROLES_SQL,
    STATE_DIR,
    roles_hash,
)
from politetenant.tracker.reports.report_data import EVENTS_OF_MESSAGE
from politetenant.tracker.storage.postgres import PostgresStore
from politetenant.tracker.storage.rows import Event, LinkRow, MessageRow, RecipientRow, RecordRow
from politetenant.tracker.storage.schema import LATEST
from tests.e2e.private_postgres import PrivatePostgres, started_private_postgres
from tests.unit.operator.test_render import make_tenant, one, render, validate

SUPERUSER = "postgres"  # plays the image's POSTGRES_USER
DATABASE = "polite"


# -- rendered -------------------------------------------------------------------------------------------


def test_the_database_pod_runs_the_roles_script_beside_postgres_and_is_ready_only_after_it() -> None:
    objects = render(make_tenant(database={"engine": "statefulset"}))
    configmap = one(objects, "ConfigMap", "postgres-roles")
    assert configmap["data"] == {"roles.sql": ROLES_SQL, "roles.sh": ROLES_SCRIPT}
    database = one(objects, "StatefulSet", "postgres")
    pod = database["spec"]["template"]
    assert pod["metadata"]["annotations"]["polite.io/roles-hash"] == roles_hash()
    postgres, roles = pod["spec"]["containers"]
    assert postgres["name"] == "postgres" and roles["name"] == "roles"
    assert roles["image"] == postgres["image"]  # psql and pg_isready of the same version
    assert roles["command"] == ["sh", f"{ROLES_DIR}/roles.sh"]
    assert roles["readinessProbe"]["exec"]["command"] == ["test", "-f", f"{STATE_DIR}/applied"]
    env = {v["name"]: v.get("value", v.get("valueFrom")) for v in roles["env"]}
    assert env == {
        "PGUSER": {"secretKeyRef": {"name": "postgres-credentials", "key": "username"}},
        "PGPASSWORD": {"secretKeyRef": {"name": "postgres-credentials", "key": "password"}},
        "PGDATABASE": "polite",
        "POLITE_OWNER_PASSWORD": {"secretKeyRef": {"name": "postgres-owner-credentials", "key": "password"}},
        "POLITE_APP_PASSWORD": {"secretKeyRef": {"name": "postgres-app-credentials", "key": "password"}},
    }
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["roles"]["configMap"]["name"] == "postgres-roles"
    validate(database)
    validate(configmap)


def test_other_engines_get_no_roles_sidecar() -> None:
    for engine in ("cnpg", "external"):
        database: dict[str, Any] = {"engine": engine}
        if engine == "external":
            database["externalSecretRef"] = {"name": "db"}
        objects = render(make_tenant(database=database))
        assert not [o for o in objects if o["metadata"]["name"] == "postgres-roles"], engine


# -- for real ---------------------------------------------------------------------------------------------


@dataclass
class Server:
    pg: PrivatePostgres
    superuser_password: str

    def dsn(self, user: str, password: str, database: str = DATABASE) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.pg.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> None:
        env = {**os.environ, "PGPASSWORD": self.superuser_password}
        done = subprocess.run(
            ["psql", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", SUPERUSER,
             "-d", database, "-c", sql],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """A private server with the official image's authentication: trust on the socket, SCRAM on TCP."""
    with started_private_postgres() as pg:
        password = secrets.token_urlsafe(24)
        subprocess.run(
            [*pg._as_user, str(pg.bin_dir / "psql"), "-h", str(pg.socket_dir), "-p", str(pg.port), "-U", SUPERUSER,
             "-d", "postgres", "-c", f"ALTER ROLE {SUPERUSER} PASSWORD '{password}'"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        hba = pg.data_dir / "pg_hba.conf"
        hba.write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        pg.stop()
        pg.start()
        yield Server(pg, password)


def run_roles_container(server: Server, tmp: Path, database: str, owner: str, app: str) -> str:
    """The roles container as the pod runs it: its script and SQL from the ConfigMap, its environment
    from the Secrets; returns its output once it says it is done (and is left running, like the pod)."""
    roles_dir, state_dir = tmp / "roles", tmp / "state"
    roles_dir.mkdir(exist_ok=True)
    state_dir.mkdir(exist_ok=True)
    (state_dir / "applied").unlink(missing_ok=True)
    script = ROLES_SCRIPT.replace(ROLES_DIR, str(roles_dir)).replace(STATE_DIR, str(state_dir))
    script = script.replace("-p 5432", f"-p {server.pg.port}")
    (roles_dir / "roles.sh").write_text(script)
    (roles_dir / "roles.sql").write_text(ROLES_SQL)
    env = {
        "PATH": os.environ["PATH"],
        "PGUSER": SUPERUSER,
        "PGPASSWORD": server.superuser_password,
        "PGDATABASE": database,
        "POLITE_OWNER_PASSWORD": owner,
        "POLITE_APP_PASSWORD": app,
    }
    process = subprocess.Popen(
        ["sh", str(roles_dir / "roles.sh")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not (state_dir / "applied").exists():
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                pytest.fail(f"the roles container exited {process.returncode}: {output}")
            assert time.monotonic() < deadline, "the roles container did not finish"
            time.sleep(0.05)
        assert process.poll() is None, "the container stays up once done, as a pod's containers do"
    finally:
        process.terminate()  # the pod going: it leaves at once, not after the grace period
        output, _ = process.communicate(timeout=5)
    assert process.returncode == 0, output
    return output


async def refused(dsn: str, sql: str) -> asyncpg.PostgresError:
    """The error PostgreSQL answers ``sql`` with, as ``dsn``'s role (fails the test if it is accepted)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    except asyncpg.PostgresError as exc:
        return exc
    finally:
        await conn.close()
    raise AssertionError(f"{sql!r} was accepted")


def message(message_id: str) -> tuple[MessageRow, list[RecipientRow], list[RecordRow], list[LinkRow]]:
    """A registered message of one recipient and one link (plus the honeypot), as sealed rows."""
    row = MessageRow(message_id, 1_000, "anonymous", b"s", b"f", b"e", b"l", 1, 1, 10, None, 1, "sender")
    recipients = [RecipientRow(message_id, secrets.token_bytes(32), b"sealed-email", None, None)]
    records = [RecordRow(secrets.token_bytes(12), message_id, None, None)]
    links = [LinkRow(message_id, 1, b"sealed-url", None), LinkRow(message_id, 0, None, None)]
    return row, recipients, records, links


def event(record_id: bytes, occurred_at: int) -> Event:
    """A judged click: the IP address and user agent were dropped before this."""
    return Event(
        secrets.token_bytes(16), record_id, 3, 1, occurred_at, "IE", None, None, "Linux", "pc", "Firefox", 0, None
    )


async def work_as_the_app(dsn: str, message_id: str) -> None:
    """What the tracker does at run time, as the app role: register, COPY events, look up clicks,
    report, object, audit (with its table lock), import a token (with its lock), rectify and reseal
    (UPDATE), purge and erase (DELETE)."""
    store = PostgresStore(dsn)
    await store.connect()
    try:
        row, recipients, records, links = message(message_id)
        await store.insert_message(row, recipients, records, links)
        record_id = records[0].id
        await store.insert_events([event(record_id, 2_000), event(record_id, 3_000)])  # COPY
        await store.insert_events([event(record_id, 4_000)])
        targets = await store.click_targets([(record_id, 1)])
        assert targets[(record_id, 1)].url == b"sealed-url"
        assert len(await store.fetch(EVENTS_OF_MESSAGE, message_id)) == 3
        await store.add_objection(secrets.token_bytes(32), 5_000)
        columns = ("at", "token_id", "role", "action", "subject_index", "outcome", "detail", "key_version")
        values = [6_000, "cli", "system", "report.read", None, "ok", "", 1]
        assert await store.append_chained("audit", columns, values, lambda prev: b"h" * 32) > 0
        assert await store.execute("UPDATE messages SET subject = $1 WHERE id = $2", b"resealed", message_id) == 1
        assert await store.execute("DELETE FROM events WHERE occurred_at < $1", 3_500) == 2
        assert await store.execute("DELETE FROM recipients WHERE message_id = $1", message_id) == 1
    finally:
        await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():  # the bootstrap token import's lock
            await conn.execute("LOCK TABLE api_tokens IN SHARE ROW EXCLUSIVE MODE")
            await conn.execute(
                "INSERT INTO api_tokens (id, role, secret_hash, created_at) VALUES ($1, 'sender', $2, 1)",
                secrets.token_hex(6), b"hash",
            )  # fmt: skip
    finally:
        await conn.close()


async def assert_confined(server: Server, database: str, app: str, owner: str) -> None:
    """Neither role can make roles or databases; the app role cannot change the schema at all."""
    app_dsn, owner_dsn = server.dsn("polite_app", app, database), server.dsn("polite_owner", owner, database)
    for sql in (
        "CREATE ROLE intruder LOGIN SUPERUSER",
        "CREATE ROLE intruder",
        "CREATE DATABASE other",
        "DROP TABLE events",
        "TRUNCATE audit",
        "ALTER TABLE events ADD COLUMN ip TEXT",
        "CREATE TABLE loot (x TEXT)",
        "CREATE TEMPORARY TABLE loot (x TEXT)",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "GRANT polite_owner TO polite_app",
        "ALTER ROLE polite_app SUPERUSER",
        "COPY events TO PROGRAM 'id'",
    ):
        error = await refused(app_dsn, sql)
        assert isinstance(error, asyncpg.InsufficientPrivilegeError), (sql, error)
    for sql in ("CREATE ROLE intruder", "CREATE DATABASE other", "ALTER ROLE polite_owner SUPERUSER"):
        error = await refused(owner_dsn, sql)
        assert isinstance(error, asyncpg.InsufficientPrivilegeError), (sql, error)
    conn = await asyncpg.connect(owner_dsn)
    try:
        flags = await conn.fetch(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles"
            " WHERE rolname IN ('polite_owner', 'polite_app')"
        )
        assert {r["rolname"]: any(tuple(r)[1:]) for r in flags} == {"polite_owner": False, "polite_app": False}
    finally:
        await conn.close()


async def owners(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S')"
            " UNION ALL SELECT p.proname || '()', pg_get_userbyid(p.proowner) FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
        )
        return {r["relname"]: r["owner"] for r in rows}
    finally:
        await conn.close()


def test_a_new_database_gets_both_roles_the_owner_migrates_the_app_works(server: Server, tmp_path: Path) -> None:
    database = "fresh"
    server.psql(f"CREATE DATABASE {database}")  # what the image's first start does with POSTGRES_DB
    owner, app = secrets.token_urlsafe(32), secrets.token_urlsafe(32)

    output = run_roles_container(server, tmp_path, database, owner, app)

    assert "roles polite_owner and polite_app are in place" in output
    assert owner not in output and app not in output
    owner_dsn, app_dsn = server.dsn("polite_owner", owner, database), server.dsn("polite_app", app, database)

    async def scenario() -> None:
        migrator = PostgresStore(owner_dsn)  # the tracker pod's migrate init container
        await migrator.connect()
        try:
            assert await migrator.migrate() == list(range(1, LATEST + 1))
        finally:
            await migrator.close()
        purger = PostgresStore(app_dsn)  # the retention job's purge and `token create` migrate first
        await purger.connect()
        try:
            assert await purger.migrate() == []  # nothing pending: no DDL, so the app role may
        finally:
            await purger.close()
        assert set((await owners(owner_dsn)).values()) == {"polite_owner"}
        await work_as_the_app(app_dsn, "m-fresh")
        await assert_confined(server, database, app, owner)
        wrong = server.dsn("polite_app", "not-the-password", database)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(wrong)

    asyncio.run(scenario())


def test_a_database_made_before_the_roles_is_taken_over_and_keeps_its_rows(server: Server, tmp_path: Path) -> None:
    database = "legacy"
    server.psql(f"CREATE DATABASE {database}")
    superuser_dsn = server.dsn(SUPERUSER, server.superuser_password, database)

    async def before() -> None:
        """A tenant of an earlier version: the tracker migrated and worked as the image's superuser."""
        store = PostgresStore(superuser_dsn)
        await store.connect()
        try:
            await store.migrate()
        finally:
            await store.close()
        await work_as_the_app(superuser_dsn, "m-old")

    asyncio.run(before())
    owner, app = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    run_roles_container(server, tmp_path, database, owner, app)
    # A restart runs it again: idempotent, and a rotated Secret's password takes effect.
    app = secrets.token_urlsafe(32)
    run_roles_container(server, tmp_path, database, owner, app)
    owner_dsn, app_dsn = server.dsn("polite_owner", owner, database), server.dsn("polite_app", app, database)

    async def after() -> None:
        tables = await owners(owner_dsn)
        assert {"events", "audit", "api_tokens", "schema_migrations", "message_children_delete()"} <= set(tables)
        assert set(tables.values()) == {"polite_owner"}, tables
        conn = await asyncpg.connect(app_dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM messages WHERE id = 'm-old'") == 1
        finally:
            await conn.close()
        await work_as_the_app(app_dsn, "m-new")
        # A later migration, made by the owner, is the app's to use too (default privileges).
        conn = await asyncpg.connect(owner_dsn)
        try:
            await conn.execute("CREATE TABLE later (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, x TEXT)")
        finally:
            await conn.close()
        conn = await asyncpg.connect(app_dsn)
        try:
            await conn.execute("INSERT INTO later (x) VALUES ('y')")
            assert await conn.fetchval("DELETE FROM later RETURNING x") == "y"
        finally:
            await conn.close()
        await assert_confined(server, database, app, owner)

    asyncio.run(after())
