"""Assembling one tracker worker: state from configuration, routes, middleware, lifecycle."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from dataclasses import dataclass

from aiohttp import web

from politetenant.crypto import Keyring, provider_from_url
from politetenant.settings import TrackerSettings
from politetenant.tracker.http.auth import BootstrapToken
from politetenant.tracker.http.errors import Handler, error_middleware, redact_server_log
from politetenant.tracker.http.openapi import DOCUMENT_OPERATION, Operation, openapi_handler
from politetenant.tracker.http.state import STATE, TrackerState
from politetenant.tracker.ingest.buffer import Ingest
from politetenant.tracker.ingest.spool import Spool
from politetenant.tracker.judging.client_ip import parse_cidrs
from politetenant.tracker.judging.geoip import GeoLocator
from politetenant.tracker.judging.judge import Judge
from politetenant.tracker.judging.networks import gateway_networks
from politetenant.tracker.judging.useragent import UserAgentClassifier
from politetenant.tracker.messages import api_messages
from politetenant.tracker.metrics import Metrics
from politetenant.tracker.privacy import api_audit, api_subjects, audit, recipient_page
from politetenant.tracker.privacy.api_tokens import import_bootstrap_tokens
from politetenant.tracker.public import beacons
from politetenant.tracker.reports import api_reports, figures
from politetenant.tracker.server import health
from politetenant.tracker.storage import open_store
from politetenant.tracker.storage.erased import keep_refreshed
from politetenant.tracker.ui import routes as ui_routes

log = logging.getLogger(__name__)
FOLDING = web.AppKey("folding", asyncio.Task[None])  # the timer folding events into report figures
ERASURES = web.AppKey("erasures", asyncio.Task[None])  # the timer learning other workers' erasures

# aiohttp's access log writes the client address and user agent of every request: never enabled.
RUNNER_OPTIONS: dict[str, object] = {"access_log": None, "handle_signals": False, "shutdown_timeout": 15}

DEFAULT_DB = "sqlite:///./polite-data/tracker.db"
DEFAULT_KEYS = "local:./polite-data/keys.json"


@dataclass(frozen=True)
class TrackerConfig:
    """What the command line adds to TrackerSettings: where things are, not how the tenant behaves."""

    settings: TrackerSettings
    db: str = DEFAULT_DB
    keys: str = DEFAULT_KEYS
    geoip: str | None = None
    trusted_proxies: str = ""
    worker_tag: str = "0"
    migrate: bool = True
    lean_public_routes: bool = True  # beacons and clicks off the socket (lean_server), not the router
    ops_port: int | None = None  # /healthz, /readyz, /metrics on a listener of their own, not the main port
    bootstrap_tokens: tuple[BootstrapToken, ...] = ()  # from --api-tokens-dir: ids and hashes only


def _metrics_middleware(metrics: Metrics) -> object:
    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        resource = request.match_info.route.resource
        metrics.count_request(resource.canonical if resource is not None else "unmatched", response.status)
        return response

    return count


def api_operations(*, ops_routes: bool = True) -> list[Operation]:
    """Every route the main port serves, for the OpenAPI document (each module lists its own); the
    health and metrics routes only when they are not on an ops port of their own."""
    return [
        *beacons.OPERATIONS,
        *recipient_page.OPERATIONS,
        *api_messages.OPERATIONS,
        *api_reports.OPERATIONS,
        *api_subjects.OPERATIONS,
        *api_audit.OPERATIONS,
        *(health.OPERATIONS if ops_routes else ()),
        DOCUMENT_OPERATION,
    ]


def build_app(
    state: TrackerState,
    *,
    migrate: bool = True,
    ops_routes: bool = True,
    bootstrap_tokens: tuple[BootstrapToken, ...] = (),
) -> web.Application:
    """The aiohttp application of one worker; ``state`` is fully built but not started. Without
    ``ops_routes`` (an ops port serves them, ``build_ops_app``) /healthz, /readyz and /metrics are 404."""
    redact_server_log()
    app = web.Application(
        middlewares=[_metrics_middleware(state.metrics), error_middleware],  # type: ignore[list-item]
        client_max_size=state.settings.max_body_bytes,
    )
    app[STATE] = state
    app.router.add_get("/o/{token}.gif", beacons.open_beacon)
    app.router.add_get("/t/{token}.gif", beacons.read_beacon)
    app.router.add_get("/c/{token}/{link}", beacons.click)
    recipient_page.add_routes(app.router)
    app.router.add_post("/api/v1/messages", api_messages.register_message)
    api_reports.add_routes(app.router)
    if ops_routes:
        health.add_routes(app.router)
    api_subjects.add_routes(app.router)
    api_audit.add_routes(app.router)
    app.router.add_get("/api/v1/openapi.json", openapi_handler(api_operations(ops_routes=ops_routes)))
    ui_routes.add_routes(app.router)  # the dashboard: HTML pages, so not in the OpenAPI document

    async def prepare_database() -> None:
        await state.store.connect()
        if migrate:
            await state.store.migrate()
        await state.erased.refresh(state.store)  # before the first hit: erased records store nothing
        if bootstrap_tokens:  # here, not before: also when the database only answers after the start
            try:
                await import_bootstrap_tokens(state.store, state.keyring, bootstrap_tokens)
            except Exception as exc:  # never hold up ingest for it; the next start imports them
                log.error("api tokens: not imported (%s); they are imported at the next start", type(exc).__name__)

    async def start(app: web.Application) -> None:
        try:
            await prepare_database()
        except Exception as exc:  # the ingest loop retries (on_recovered); events spool meanwhile
            log.warning("database not ready at start (%s); serving and spooling", exc.__class__.__name__)
            state.ingest.on_recovered = prepare_database
        await state.ingest.start()
        if figures.enabled(state.store):
            app[FOLDING] = asyncio.create_task(figures.keep_folded(state.store, state.stopping))
        app[ERASURES] = asyncio.create_task(keep_refreshed(state.erased, state.store, state.stopping))

    async def shutdown(app: web.Application) -> None:
        state.stopping.set()  # ends read-time streams now, with the time read so far

    async def cleanup(app: web.Application) -> None:
        for key in (FOLDING, ERASURES):
            task = app.get(key)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await state.ingest.stop()
        state.ingest.spool.close()
        await state.store.close()

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    return app


# How long a thread may hold the GIL while another waits for it. Threads that hand work to the
# database (SQLite's writers, the spool, the builder of a message's rows) want it back after every
# statement; at Python's default of 5 ms each one idles that long while the loop or another builder
# computes. At 0.5 ms, registering 100,000 recipients on SQLite waits 0.06 s for its writer instead of
# 0.28 s. A lone thread (the event loop serving beacons) is never asked to switch, whatever the interval.
SWITCH_INTERVAL_S = 0.0005


def tune_interpreter() -> None:
    """Set up a worker's interpreter once the worker has started (``serve`` and the demo do; so do the
    benchmarks, to measure what they run).

    Everything alive then (modules, schemas, the state) lives as long as the worker: frozen out of the
    collector's sight, a full collection walks only what requests made since (for a registration of
    100,000 recipients, two full collections cost 0.07 s instead of 0.001 s). Only cyclic garbage among
    the frozen objects is never collected: there is none worth the name after the ``collect``."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()


def build_ops_app(state: TrackerState) -> web.Application:
    """/healthz, /readyz and /metrics alone, for the ops port: probes and the scraper reach the worker
    there, and no Ingress routes it. Shares the worker's state; the main app starts and stops it."""
    app = web.Application(middlewares=[error_middleware])
    app[STATE] = state
    health.add_routes(app.router)
    return app


def load_keyring(keys_url: str, tenant_id: str) -> Keyring:
    return Keyring(tenant_id, provider_from_url(keys_url).load())


def build_state(config: TrackerConfig) -> TrackerState:
    """Open everything a worker needs; raises ValueError/KeyMaterialError with a readable message."""
    settings = config.settings
    store = open_store(config.db)
    keyring = load_keyring(config.keys, settings.tenant_id)
    metrics = Metrics()
    audit.use_anchor(settings.audit_anchor_path, on_failure=metrics.audit_anchor_failures.inc)
    spool = Spool(settings.spool_dir, f"{config.worker_tag}-{os.getpid()}", max_bytes=settings.spool_max_bytes)
    ingest = Ingest(
        store,
        spool,
        metrics,
        batch_size=settings.flush_batch_size,
        flush_interval=settings.flush_interval_seconds,
        max_buffered=settings.buffer_max_events,
    )
    agents = UserAgentClassifier()
    # Build ua-parser's matchers now (hundreds of regexes): the first hit must not pay for it.
    agents.classify("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36")
    judge = Judge(
        GeoLocator(config.geoip),
        agents,
        scanner_networks=parse_cidrs(settings.scanner_networks),
        extra_scanner_agents=settings.scanner_user_agents,
        apple_privacy_networks=parse_cidrs(settings.apple_privacy_networks),
        gateway_networks=gateway_networks(settings.gateway_networks),
    )
    return TrackerState(
        settings=settings,
        keyring=keyring,
        store=store,
        ingest=ingest,
        judge=judge,
        metrics=metrics,
        trusted_proxies=parse_cidrs(config.trusted_proxies),
    )
