"""Helpers shared by the test suites (not stand-ins: those live in tests/fakes/)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from politetenant.tracker.storage import open_store
from politetenant.tracker.storage.base import Store

PG_ADMIN_DSN = os.environ.get("POLITE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

# Documentation addresses from the generated GeoIP sample, and real user agents.
IP_DUBLIN = "192.0.2.10"
UA_IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
)
UA_OUTLOOK = (
    "Mozilla/4.0 (compatible; ms-office; MSOffice 16; Windows NT 10.0; Win64; x64; Microsoft Outlook 16.0.17029)"
)
UA_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
UA_SCANNER = "Barracuda Sentinel (EE)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def admin_dsn_for(database: str) -> str:
    base, _, _ = PG_ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh database on the shared server, dropped afterwards."""
    name = f"polite_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_dsn_for(name)
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@asynccontextmanager
async def emptied_store(dsn: str) -> AsyncIterator[Store]:
    """A store on a scratch database, migrated, with no message, event or figure left by a test before."""
    made = open_store(dsn)
    await made.connect()
    try:
        await made.migrate()
        await made.execute(
            "TRUNCATE events, records, recipients, links, messages, record_figures, figures_stale, erased_records"
            " RESTART IDENTITY"
        )
        await made.execute("UPDATE figures_folded SET seq = 0")
        yield made
    finally:
        await made.close()


def message_body(recipients: int, *, mode: str | None = None, departments: int = 3, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": "Quarterly all-hands: new parental leave policy",
        "from_name": "Dana Whitfield",
        "from_email": "dana.whitfield@example.com",
        "list_name": "All staff Dublin",
        "html": (
            "<html><body><h1>All-hands</h1><p>Read the <a href='https://intranet.example.com/policy?id=7&amp;v=2'>"
            'new policy</a> and <a href="https://hr.example.com/faq">the FAQ</a>. Questions: '
            "<a href='mailto:hr@example.com'>HR</a>.</p></body></html>"
        ),
        "recipients": [
            {
                "email": f"person{i:06d}@example.com",
                "name": f"Person Number{i}",
                "attributes": {"department": ["Finance", "Engineering", "Sales"][i % departments]},
            }
            for i in range(recipients)
        ],
    }
    if mode is not None:
        body["mode"] = mode
    body.update(extra)
    return body


def write_settings(path: Path, **values: Any) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(values))
    return path
