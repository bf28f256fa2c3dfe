"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from politetenant.tracker.http.openapi import Operation
from politetenant.tracker.http.state import STATE

_STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
_NOT_READY = {"description": "Not ready.", "content": {"application/json": {"schema": _STATUS}}}
OPERATIONS = [
    Operation("GET", "/healthz", "Liveness", response=_STATUS),
    Operation("GET", "/readyz", "Readiness: keys loaded, database reachable, ingest accepting", response=_STATUS,
              extra_responses={503: _NOT_READY}),
    Operation("GET", "/metrics", "Prometheus metrics", response={"type": "string"}, content_type="text/plain"),
    Operation("GET", "/api/v1/openapi.json", "This document", response={"type": "object"}),
]  # fmt: skip


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Restarting would not help anything else."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: keys loaded and the database reachable; otherwise 503 so traffic goes elsewhere."""
    state = request.app[STATE]
    checks = {"keys": bool(state.keyring.versions), "database": False, "ingest": state.ingest.accepting}
    # Ask the database every time: the flusher only notices an outage when it has events to write.
    try:
        await asyncio.wait_for(state.store.ping(), timeout=2)
        checks["database"] = True
    except Exception:
        checks["database"] = False
    ok = all(checks.values())
    body = {
        "status": "ready" if ok else "not_ready",
        "checks": checks,
        "spool_bytes": state.ingest.spool.size_bytes(),
    }
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.metrics.events_buffered.set(state.ingest.buffered)
    return web.Response(body=generate_latest(state.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
