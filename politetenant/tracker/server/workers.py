"""Running the tracker: one worker per process, sharing the port with SO_REUSEPORT.

SIGTERM (or SIGINT) stops accepting, ends read-time streams with the time read so far, waits for
in-flight requests and writes every buffered event to the database or the spool before exiting.
With ``--workers N`` a small supervisor forks N workers, forwards signals and restarts a worker
that dies unexpectedly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from politetenant.tracker.server.app import RUNNER_OPTIONS, TrackerConfig, build_app, build_state
from politetenant.tracker.server.lean_server import LeanSite

log = logging.getLogger(__name__)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on uvloop where it is installed (it is, with the tracker extra on Linux)."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


async def serve_worker(
    config: TrackerConfig,
    host: str,
    port: int,
    *,
    reuse_port: bool,
    ready: Callable[[int], None] | None = None,
) -> None:
    state = build_state(config)
    app = build_app(state, migrate=config.migrate)
    runner = web.AppRunner(app, **RUNNER_OPTIONS)  # type: ignore[arg-type]
    await runner.setup()
    site: web.TCPSite
    if config.lean_public_routes:
        site = LeanSite(runner, state, host, port, reuse_port=reuse_port, backlog=4096)
    else:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=4096)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = site.port
    log.info("worker %s serving on http://%s:%d (pid %d)", config.worker_tag, host, bound, os.getpid())
    if ready is not None:
        ready(bound)
    await stop.wait()
    log.info("worker %s stopping: flushing events", config.worker_tag)
    await runner.cleanup()
    log.info("worker %s stopped", config.worker_tag)


def _worker_main(config: TrackerConfig, host: str, port: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    run(lambda: serve_worker(config, host, port, reuse_port=True))


def serve(config: TrackerConfig, host: str, port: int, workers: int) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    if workers <= 1:
        run(lambda: serve_worker(config, host, port, reuse_port=False))
        return 0
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def spawn(index: int) -> None:
        worker = TrackerConfig(
            **{**config.__dict__, "worker_tag": str(index), "migrate": config.migrate and index == 0}
        )
        pid = os.fork()
        if pid == 0:  # child
            try:
                _worker_main(worker, host, port)
            finally:
                os._exit(0)
        children[pid] = index

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(workers):
        spawn(index)
    exit_code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if not stopping:
            log.error("worker %d exited with %d; restarting it", index, code)
            time.sleep(0.5)
            spawn(index)
        elif code not in (0, -signal.SIGTERM):
            exit_code = 1
    sys.stdout.flush()
    return exit_code
