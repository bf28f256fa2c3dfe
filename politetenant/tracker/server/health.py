"""Liveness, readiness and Prometheus metrics: on the main port, or alone on the ops port (``--ops-port``).

Ready means "this worker can take hits": its keys are loaded and ingest accepts events. A database
outage is not a reason to leave the Service: the spool exists so that every link in mail already
sent keeps answering while the database is away. The database's state is reported in the body and
in ``polite_database_up``, for people and alerts, not acted on by the probe.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from politetenant.tracker.http.openapi import Operation
from politetenant.tracker.http.state import STATE, TrackerState

DATABASE_PING_SECONDS = 0.5  # within a probe's default timeout (1 s), whatever the database does

_STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
_READINESS = {
    "type": "object",
    "required": ["status", "checks", "database", "spool_bytes"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "database": {"type": "string", "enum": ["up", "down"]},
        "spool_bytes": {"type": "integer", "minimum": 0},
        "spool_full": {"type": "boolean"},
    },
}
_NOT_READY = {
    "description": "Not ready: keys not loaded, or ingest cannot keep events.",
    "content": {"application/json": {"schema": _READINESS}},
}
OPERATIONS = [
    Operation("GET", "/healthz", "Liveness", response=_STATUS),
    Operation("GET", "/readyz", "Readiness: keys loaded and ingest accepting. The database's state is in the body "
              "(database: up or down), not a reason to be unready: events wait on the spool meanwhile",
              response=_READINESS, extra_responses={503: _NOT_READY}),
    Operation("GET", "/metrics", "Prometheus metrics", response={"type": "string"}, content_type="text/plain"),
]  # fmt: skip


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
    router.add_get("/metrics", metrics)


def readiness(
    *, keys_loaded: bool, ingest_accepting: bool, database_up: bool, spool_bytes: int, spool_full: bool
) -> tuple[int, dict[str, Any]]:
    """The probe's answer (status, body). The database is reported, never a condition."""
    checks = {"keys": keys_loaded, "ingest": ingest_accepting}
    ready = all(checks.values())
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": checks,
        "database": "up" if database_up else "down",
        "spool_bytes": spool_bytes,
        "spool_full": spool_full,
    }
    return (200 if ready else 503), body


async def database_answers(state: TrackerState) -> bool:
    """Ask the database now (the flusher only notices an outage when it has events to write), briefly."""
    try:
        await asyncio.wait_for(state.store.ping(), timeout=DATABASE_PING_SECONDS)
    except Exception:
        up = False
    else:
        up = True
    state.metrics.database_up.set(1 if up else 0)
    return up


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Restarting would not help anything else."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    status, body = readiness(
        keys_loaded=bool(state.keyring.versions),
        ingest_accepting=state.ingest.accepting,
        database_up=await database_answers(state),
        spool_bytes=state.ingest.spool.size_bytes(),
        spool_full=state.ingest.spool_full,
    )
    return web.json_response(body, status=status)


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.metrics.events_buffered.set(state.ingest.buffered)
    return web.Response(body=state.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
