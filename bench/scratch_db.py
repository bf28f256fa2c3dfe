"""A throw-away PostgreSQL database for a benchmark: the one helper every benchmark shares (and
outside any benchmark module, so ``python -m bench`` runs each module fresh)."""

from __future__ import annotations

import asyncio


def scratch_pg(admin_dsn: str, *, create: bool, dsn: str = "") -> str:
    """Create (or drop) a throw-away database on the server, never touching existing ones."""
    import uuid

    import asyncpg

    name = f"polite_bench_{uuid.uuid4().hex[:8]}" if create else dsn.rsplit("/", 1)[1]
    sql = f'CREATE DATABASE "{name}"' if create else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'

    async def run() -> None:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(sql)
        await conn.close()

    asyncio.run(run())
    return admin_dsn.rsplit("/", 1)[0] + "/" + name
