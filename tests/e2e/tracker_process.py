"""Driving the real ``polite-tracker`` from the outside: a subprocess, its CLI and HTTP on loopback.

Nothing here stands in for product code: the server is ``python -m politetenant.tracker.cli.commands serve``,
the API token comes from ``polite-tracker token create``, the message is registered over HTTP, beacon
hits are real concurrent GETs and stored events are counted in the database itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support import UA_IPHONE_MAIL, free_port, message_body, write_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "politetenant.tracker.cli.commands"]


def cli_env() -> dict[str, str]:
    """The caller's environment, with the repository importable (after anything already on PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLITE_")}
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(REPO_ROOT)])
    return env


def tracker_settings_file(workdir: Path, **overrides: Any) -> Path:
    """A TrackerSettings YAML under ``workdir``; the spool lives in ``workdir/spool``."""
    values: dict[str, Any] = {
        "tenant_id": "acme",
        "public_base_url": "https://t.acme.example",
        "min_segment_size": 10,
        "scanner_window_seconds": 0,
        "spool_dir": str(workdir / "spool"),
    }
    values.update(overrides)
    return write_settings(workdir / "settings.yaml", **values)


def prepare_workdir(tmp_path: Path, db: str, **settings: object) -> tuple[Path, str, str]:
    """Settings and keys under tmp_path, and a sender token from the CLI (which also migrates the db)."""
    workdir = tmp_path / "tracker"
    workdir.mkdir()
    settings_path = tracker_settings_file(workdir, **settings)
    keys = f"local:{workdir / 'keys.json'}"
    return workdir, keys, create_token("sender", db, keys, settings_path)


def create_token(role: str, db: str, keys: str, settings: Path, *, timeout: float = 60) -> str:
    """``polite-tracker token create --role ROLE``: the token is the one line on stdout."""
    done = subprocess.run(
        [*CLI, "token", "create", "--role", role, "--db", db, "--keys", keys, "--settings", str(settings)],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=settings.parent,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"token create exited {done.returncode}: {done.stderr}")
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0], f"token create printed {done.stdout!r}"
    return lines[0]


@dataclass
class TrackerProcess:
    """One ``polite-tracker serve`` subprocess (one worker) and where its files are."""

    proc: subprocess.Popen[bytes]
    port: int
    db: str
    keys: str
    settings: Path
    spool_dir: Path
    stderr_path: Path
    ops_port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ops_url(self) -> str:
        """Where /healthz, /readyz and /metrics are: the ops port when there is one."""
        return f"http://127.0.0.1:{self.ops_port}" if self.ops_port is not None else self.base_url

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def sigterm(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> tuple[int, float]:
        """Wait for the process to exit; returns (exit code, seconds waited). Raises on timeout."""
        started = time.monotonic()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"tracker did not exit within {timeout} s of SIGTERM\n--- stderr ---\n{self.stderr_text()[-4000:]}"
            ) from exc
        return code, time.monotonic() - started

    def spool_bytes(self) -> int:
        total = 0
        for path in self.spool_dir.glob("*"):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def kill(self) -> None:
        """SIGKILL the tracker and every worker it forked (its own process group): a supervisor killed
        alone would leave its workers running, holding their ports, after the test."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def _get_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def start_tracker(
    workdir: Path,
    db: str,
    *,
    keys: str | None = None,
    startup_timeout: float = 30,
    extra_args: tuple[str, ...] = (),
    preexec_fn: Any = None,
    ops_port: bool = False,
    **settings: Any,
) -> TrackerProcess:
    """Start ``polite-tracker serve`` on a free loopback port and return once /healthz answers 200
    (on a second free port with ``ops_port``, where /healthz, /readyz and /metrics then are).

    Creates the settings file (``settings`` are TrackerSettings overrides) and the key file on the way.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    settings_path = tracker_settings_file(workdir, **settings)
    keys = keys or f"local:{workdir / 'keys.json'}"
    port = free_port()
    stderr_path = workdir / "tracker.stderr.log"
    command = [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--db", db, "--keys", keys]
    command += ["--settings", str(settings_path), *extra_args]
    ops = free_port() if ops_port else None
    if ops is not None:
        command += ["--ops-port", str(ops)]
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            env=cli_env(),
            cwd=workdir,
            preexec_fn=preexec_fn,  # only resource limits, applied before exec
            process_group=0,  # the tracker and its workers: one group, killed together
        )
    spool_dir = Path(str(settings.get("spool_dir", workdir / "spool")))
    tracker = TrackerProcess(proc, port, db, keys, settings_path, spool_dir, stderr_path, ops)
    deadline = time.monotonic() + startup_timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"tracker exited {proc.returncode} at start\n--- stderr ---\n{tracker.stderr_text()}")
        try:
            if _get_status(f"{tracker.ops_url}/healthz", timeout=1) == 200:
                return tracker
        except OSError:
            pass
        if time.monotonic() > deadline:
            tracker.kill()
            raise AssertionError(
                f"tracker did not answer /healthz within {startup_timeout} s\n--- stderr ---\n{tracker.stderr_text()}"
            )
        time.sleep(0.1)


@contextlib.contextmanager
def running_tracker(workdir: Path, db: str, **kwargs: Any) -> Iterator[TrackerProcess]:
    """``start_tracker`` that never leaves a process behind, whatever the test does."""
    tracker = start_tracker(workdir, db, **kwargs)
    try:
        yield tracker
    finally:
        tracker.kill()


async def http_status(url: str, timeout: float = 5.0) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async with session.get(url) as resp:
            await resp.read()
            return resp.status


async def readiness(tracker: TrackerProcess) -> tuple[int, str]:
    """/readyz as a probe sees it (the status) and what it says of the database ("up" or "down")."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(f"{tracker.ops_url}/readyz") as resp:
            return resp.status, str((await resp.json())["database"])


async def register_message(base_url: str, api_token: str, recipients: int) -> list[str]:
    """``POST /api/v1/messages`` with ``recipients`` recipients; returns their beacon tokens."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async with session.post(
            f"{base_url}/api/v1/messages",
            json=message_body(recipients),
            headers={"Authorization": f"Bearer {api_token}"},
        ) as resp:
            text = await resp.text()
            assert resp.status == 201, f"registration answered {resp.status}: {text}"
            out = await resp.json()
    tokens = [r["token"] for r in out["recipients"]]
    assert len(tokens) == recipients and all(tokens), out["recipients"]
    return tokens


@dataclass
class BurstResult:
    sent: int = 0
    accepted: int = 0  # answered 200: the tracker promised to keep the event
    accepted_at: list[float] = field(default_factory=list)  # time.monotonic() of each 200
    statuses: Counter[int] = field(default_factory=Counter)  # every other status
    errors: Counter[str] = field(default_factory=Counter)  # exception class -> count

    @property
    def done(self) -> int:
        return self.accepted + sum(self.statuses.values()) + sum(self.errors.values())

    def __str__(self) -> str:
        return (
            f"sent={self.sent} accepted={self.accepted} other_statuses={dict(self.statuses)} errors={dict(self.errors)}"
        )


class Burst:
    """``total`` open-beacon hits over ``connections`` keep-alive connections to 127.0.0.1.

    ``await burst.reached(n)`` returns once ``n`` requests have an outcome (200, other status or
    error), so a test can act (SIGTERM, stop the database) while the rest are in flight.
    """

    def __init__(self, base_url: str, tokens: list[str], total: int, *, connections: int = 50) -> None:
        assert base_url.startswith("http://127.0.0.1:"), "bursts are for loopback only"
        self.base_url = base_url
        self.tokens = tokens
        self.total = total
        self.connections = connections
        self.result = BurstResult()
        self._next = itertools.count()
        self._waiters: list[tuple[int, asyncio.Event]] = []

    async def reached(self, count: int, timeout: float = 60) -> None:
        if self.result.done >= count:
            return
        event = asyncio.Event()
        self._waiters.append((count, event))
        await asyncio.wait_for(event.wait(), timeout)

    def _progress(self) -> None:
        done = self.result.done
        for count, event in self._waiters:
            if done >= count:
                event.set()

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        headers = {"User-Agent": UA_IPHONE_MAIL}
        while (i := next(self._next)) < self.total:
            url = f"{self.base_url}/o/{self.tokens[i % len(self.tokens)]}.gif"
            self.result.sent += 1
            try:
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        self.result.accepted += 1
                        self.result.accepted_at.append(time.monotonic())
                    else:
                        self.result.statuses[resp.status] += 1
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.result.errors[type(exc).__name__] += 1
            self._progress()

    async def run(self) -> BurstResult:
        connector = aiohttp.TCPConnector(limit=self.connections, force_close=False)
        timeout = aiohttp.ClientTimeout(total=30, connect=5)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._worker(session) for _ in range(self.connections)))
        self._progress()
        return self.result


def _count_sqlite(path: str) -> int:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        conn.close()


async def count_events(db: str) -> int:
    """Rows in ``events``, read straight from the database the tracker writes to."""
    if db.startswith("sqlite:///"):
        return await asyncio.to_thread(_count_sqlite, db[len("sqlite:///") :])
    import asyncpg

    conn = await asyncpg.connect(db, timeout=10)
    try:
        return int(await conn.fetchval("SELECT COUNT(*) FROM events"))
    finally:
        await conn.close()
