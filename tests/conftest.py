"""Fixtures: a tracker app on SQLite and on the machine's real PostgreSQL, same tests for both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from politetenant.settings import TrackerSettings
from politetenant.tracker.cli.geoip_sample import write_sample
from politetenant.tracker.http.auth import BootstrapToken, Role, create_api_token
from politetenant.tracker.http.state import TrackerState
from politetenant.tracker.server.app import RUNNER_OPTIONS, TrackerConfig, build_app, build_state
from politetenant.tracker.server.lean_server import LeanSite
from tests.support import scratch_database


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One scratch database on 127.0.0.1:5432 for the session; tables are emptied per test."""
    with scratch_database() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def geoip_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("geoip") / "sample-city.mmdb"
    write_sample(path)
    return str(path)


async def _empty_pg(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.events') IS NOT NULL")
        if exists:
            await conn.execute(
                "TRUNCATE events, links, records, recipients, messages, objections, api_tokens, audit, ui_sessions,"
                " record_figures, figures_stale RESTART IDENTITY"
            )
            await conn.execute("UPDATE figures_folded SET seq = 0")  # events.seq starts again at 1
        if await conn.fetchval("SELECT to_regclass('public.erased_records') IS NOT NULL"):
            await conn.execute("TRUNCATE erased_records")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tracker.db"
    dsn: str = request.getfixturevalue("pg_database")
    asyncio.run(_empty_pg(dsn))
    return dsn


@dataclass
class Tracker:
    """A running tracker app with a test client and one API token per role."""

    client: TestClient[Any, Any]
    state: TrackerState
    tokens: dict[Role, str] = field(default_factory=dict)

    def auth(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def flush(self) -> None:
        """Push buffered events to the database now (tests only; the flusher does this on a timer)."""
        await self.state.ingest._flush(final=True)


def tracker_settings(tmp_path: Path, **overrides: Any) -> TrackerSettings:
    values: dict[str, Any] = {
        "tenant_id": "acme",
        "public_base_url": "https://t.acme.example",
        "min_segment_size": 10,
        "scanner_window_seconds": 0,
        "spool_dir": str(tmp_path / "spool"),
        "scanner_networks": ("203.0.113.128/25",),
        "read_frame_seconds": 0.2,
    }
    values.update(overrides)
    return TrackerSettings.model_validate(values)


class LeanTestServer(TestServer):
    """aiohttp's test server, listening through the production site (``LeanSite``): beacons and
    clicks take the lean path, everything else is handed to aiohttp, as ``polite-tracker serve`` does."""

    def __init__(self, app: web.Application, state: TrackerState) -> None:
        super().__init__(app)
        self.state = state

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        if self.runner:
            return
        self.runner = await self._make_runner(**kwargs)
        await self.runner.setup()
        site = LeanSite(self.runner, self.state, self.host, 0)
        await site.start()
        self.port, self.scheme = site.port, "http"
        self._root = URL(f"http://{self.host}:{self.port}")


async def start_tracker(
    tmp_path: Path,
    db_url: str,
    geoip_path: str,
    *,
    keys: str | None = None,
    bootstrap_tokens: tuple[BootstrapToken, ...] = (),
    **overrides: Any,
) -> tuple[TestClient[Any, Any], TrackerState]:
    config = TrackerConfig(
        settings=tracker_settings(tmp_path, **overrides),
        db=db_url,
        keys=keys or f"local:{tmp_path}/keys.json",
        geoip=geoip_path,
        trusted_proxies="127.0.0.1/32",
    )
    state = build_state(config)
    server = LeanTestServer(build_app(state, bootstrap_tokens=bootstrap_tokens), state)
    await server.start_server(**RUNNER_OPTIONS)  # the runner options production uses: no access log
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    return client, state


@pytest.fixture
async def tracker(
    tmp_path: Path, db_url: str, geoip_path: str, request: pytest.FixtureRequest
) -> AsyncIterator[Tracker]:
    marker = request.node.get_closest_marker("settings")
    overrides = marker.kwargs if marker else {}
    client, state = await start_tracker(tmp_path, db_url, geoip_path, **overrides)
    t = Tracker(client=client, state=state)
    for role in Role:
        t.tokens[role] = await create_api_token(state.store, role)
    try:
        yield t
    finally:
        await client.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "settings(**values): TrackerSettings overrides for the tracker fixture")
