"""Running the tracker: one worker per process, sharing the port with SO_REUSEPORT.

SIGTERM (or SIGINT) stops accepting, ends read-time streams with the time read so far, waits for
in-flight requests and writes every buffered event to the database or the spool before exiting.

With ``--workers N`` a small supervisor forks N workers and forwards signals. A worker that dies is
logged (a worker that raised logs its traceback itself and exits 1) and restarted after a pause that
doubles with each quick death, from 0.5 s up to 30 s, and is short again once a worker has served
for a minute (``next_restart``). A worker that dies before it ever served, several times in a row,
cannot start at all (unreadable keys, a spool directory it cannot use, a port taken): the supervisor
then stops the others and exits 1, so the container restarts where people see it instead of
respawning workers forever.

The workers' metrics add up (``metrics.share_between_processes``, one directory the supervisor owns),
and with ``--ops-port`` every worker also listens there (SO_REUSEPORT again): whichever worker takes a
scrape reports the whole tracker. Readiness is the answering worker's own; the workers share the
spool directory, the database and the keys, so what makes one unready makes them all unready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from politetenant.tracker import metrics
from politetenant.tracker.server.app import (
    RUNNER_OPTIONS,
    TrackerConfig,
    build_app,
    build_ops_app,
    build_state,
    tune_interpreter,
)
from politetenant.tracker.server.lean_server import LeanSite

log = logging.getLogger(__name__)

RESTART_DELAY_FIRST = 0.5
RESTART_DELAY_MAX = 30.0
STABLE_AFTER_SECONDS = 60.0  # a worker that served this long was healthy: its next restart is quick again
MAX_START_FAILURES = 5  # deaths in a row before serving: the worker cannot start, stop the tracker
EXIT_WORKER_FAILED = 1
_POLL_SECONDS = 0.1
_SERVING = b"s"
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


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
    ops_port = config.ops_port
    app = build_app(
        state, migrate=config.migrate, ops_routes=ops_port is None, bootstrap_tokens=config.bootstrap_tokens
    )
    runner = web.AppRunner(app, **RUNNER_OPTIONS)  # type: ignore[arg-type]
    ops_runner = None if ops_port is None else web.AppRunner(build_ops_app(state), **RUNNER_OPTIONS)  # type: ignore[arg-type]
    await runner.setup()
    try:
        site: web.TCPSite
        if config.lean_public_routes:
            site = LeanSite(runner, state, host, port, reuse_port=reuse_port, backlog=4096)
        else:
            site = web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=4096)
        await site.start()
        if ops_runner is not None:  # after the main port, so that a ready probe means hits are answered
            await ops_runner.setup()
            await web.TCPSite(ops_runner, host, ops_port, reuse_port=reuse_port).start()
    except BaseException:
        await runner.cleanup()  # the ingest started: what it holds is written out before failing
        if ops_runner is not None:
            await ops_runner.cleanup()
        raise
    tune_interpreter()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = site.port
    ops = f", ops on port {ops_port}" if ops_port is not None else ""
    log.info("worker %s serving on http://%s:%d%s (pid %d)", config.worker_tag, host, bound, ops, os.getpid())
    if ready is not None:
        ready(bound)
    await stop.wait()
    log.info("worker %s stopping: flushing events", config.worker_tag)
    await runner.cleanup()
    if ops_runner is not None:
        await ops_runner.cleanup()  # probes and scrapes are answered until the events are written
    log.info("worker %s stopped", config.worker_tag)


# -- the supervisor of --workers N ----------------------------------------------------------------------
@dataclass(frozen=True)
class Backoff:
    """A worker slot's restart history: the pause before its last restart, failed starts in a row."""

    delay: float = 0.0
    failed_starts: int = 0


def next_restart(backoff: Backoff, *, served: bool, ran_seconds: float) -> Backoff | None:
    """When to restart a worker that just died, or None: it cannot start, stop the tracker.

    Dying before serving is a failed start; MAX_START_FAILURES in a row give up. Otherwise the pause
    doubles from RESTART_DELAY_FIRST to RESTART_DELAY_MAX, and starts over once a worker has served
    for STABLE_AFTER_SECONDS.
    """
    failed = 0 if served else backoff.failed_starts + 1
    if failed >= MAX_START_FAILURES:
        return None
    if (served and ran_seconds >= STABLE_AFTER_SECONDS) or backoff.delay == 0:
        return Backoff(RESTART_DELAY_FIRST, failed)
    return Backoff(min(backoff.delay * 2, RESTART_DELAY_MAX), failed)


@dataclass
class _Worker:
    index: int
    started: float
    serving_fd: int  # read end of a pipe the worker writes one byte to once it serves


def _worker_process(config: TrackerConfig, host: str, port: int, serving_fd: int, metrics_dir: str) -> int:
    """The body of a forked worker; returns its exit code. An exception is logged here, with its
    traceback (messages never carry an address or a user agent), and makes the exit code 1."""
    try:
        metrics.share_between_processes(metrics_dir)

        def serving(_port: int) -> None:
            os.write(serving_fd, _SERVING)
            os.close(serving_fd)

        run(lambda: serve_worker(config, host, port, reuse_port=True, ready=serving))
        return 0
    except BaseException:
        log.exception("worker %s failed", config.worker_tag)
        return EXIT_WORKER_FAILED
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()


def _served(fd: int) -> bool:
    """Whether the worker behind ``fd`` said it was serving before it died (then closes ``fd``)."""
    try:
        return os.read(fd, 1) == _SERVING
    except OSError:
        return False
    finally:
        os.close(fd)


class Supervisor:
    """Forks the workers, restarts them with backoff, and stops the tracker when one cannot start."""

    def __init__(self, config: TrackerConfig, host: str, port: int, workers: int) -> None:
        self.config, self.host, self.port, self.count = config, host, port, workers
        self.children: dict[int, _Worker] = {}
        self.backoff: dict[int, Backoff] = {index: Backoff() for index in range(workers)}
        self.due: dict[int, float] = {}  # worker index -> when to restart it
        self.stopping = False
        self.exit_code = 0
        self.metrics_dir = metrics.new_shared_directory()

    def spawn(self, index: int) -> None:
        # Every worker migrates: migrations take a lock, and the bootstrap tokens it imports need them.
        worker = replace(self.config, worker_tag=str(index))
        serving_r, serving_w = os.pipe()
        # A signal between fork and the worker's own handlers must not run the supervisor's in the worker.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the worker
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            os.close(serving_r)
            for other in self.children.values():
                os.close(other.serving_fd)
            os._exit(_worker_process(worker, self.host, self.port, serving_w, self.metrics_dir))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        os.close(serving_w)
        os.set_blocking(serving_r, False)
        self.children[pid] = _Worker(index, time.monotonic(), serving_r)

    def stop(self, _signum: int = 0, _frame: object = None) -> None:
        self.stopping = True
        self.due.clear()
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def reap(self, pid: int, status: int) -> None:
        worker = self.children.pop(pid, None)
        if worker is None:
            return
        metrics.forget_process(self.metrics_dir, pid)
        code = os.waitstatus_to_exitcode(status)
        served = _served(worker.serving_fd)
        if self.stopping:
            if code not in (0, -signal.SIGTERM):
                self.exit_code = EXIT_WORKER_FAILED
            return
        ran = time.monotonic() - worker.started
        backoff = next_restart(self.backoff[worker.index], served=served, ran_seconds=ran)
        if backoff is None:
            log.error(
                "worker %d could not start %d times in a row (exit code %d); stopping the tracker",
                worker.index, MAX_START_FAILURES, code,
            )  # fmt: skip
            self.exit_code = EXIT_WORKER_FAILED
            self.stop()
            return
        self.backoff[worker.index] = backoff
        self.due[worker.index] = time.monotonic() + backoff.delay
        log.error(
            "worker %d exited with %d after %.1f s (%s); restarting it in %.1f s",
            worker.index, code, ran, "it had served" if served else "before serving", backoff.delay,
        )  # fmt: skip

    def run(self) -> int:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, self.stop)
        try:
            for index in range(self.count):
                self.spawn(index)
            while self.children or (self.due and not self.stopping):
                now = time.monotonic()
                for index, at in sorted(self.due.items()):
                    if at <= now and not self.stopping:
                        del self.due[index]
                        self.spawn(index)
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    pid = 0
                if pid:
                    self.reap(pid, status)
                else:
                    time.sleep(_POLL_SECONDS)
        finally:
            metrics.remove_shared_directory(self.metrics_dir)
        sys.stdout.flush()
        return self.exit_code


def serve(config: TrackerConfig, host: str, port: int, workers: int) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    if workers <= 1:
        run(lambda: serve_worker(config, host, port, reuse_port=False))
        return 0
    return Supervisor(config, host, port, workers).run()
