"""Faults under load: SIGKILL of a worker, and a spool disk that fills up.

SIGKILL skips every shutdown path, so what was only in memory is lost; the promise is that the loss
is bounded by time (the hits of the last two flush intervals, plus the batch being written), and
that whatever reached the spool is recovered by the next start. When neither the database nor the
spool disk can take events, the tracker must refuse hits (503) rather than accept events it cannot
keep.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from politetenant.tracker.ingest.buffer import SPILL_AFTER_INTERVALS
from tests.e2e.private_postgres import PrivatePostgres
from tests.e2e.tracker_process import (
    CLI,
    Burst,
    cli_env,
    count_events,
    prepare_workdir,
    readiness,
    register_message,
    running_tracker,
    tracker_settings_file,
)
from tests.support import free_port

pytestmark = pytest.mark.slow
BATCH = 200
CONNECTIONS = 32
FLUSH_INTERVAL = 0.1
WRITE_SLACK = 1.0  # one batch being written when the kill comes (SQLite's thread shares the GIL)


async def _eventually_stable(db: str, timeout: float = 30) -> int:
    """The event count once it stops growing (the spool replayed)."""
    previous, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = await count_events(db)
        if stored != previous:
            previous, stable_since = stored, time.monotonic()
        elif time.monotonic() - stable_since > 1.5:
            return stored
        await asyncio.sleep(0.2)
    return previous


async def _eventually_equal(db: str, expected: int, timeout: float = 30) -> int:
    stored = -1
    for _ in range(int(timeout / 0.2)):
        stored = await count_events(db)
        if stored == expected:
            return stored
        await asyncio.sleep(0.2)
    return stored


async def test_sigkill_loses_only_the_hits_of_the_last_flush_intervals(tmp_path: Path) -> None:
    """SQLite behind a saturated worker falls behind; what waited longer than two flush intervals
    is on the spool by then, so a SIGKILL loses at most the hits of that window (plus the batch
    being written), however far behind the database is. The default memory cap (50,000) applies."""
    db = f"sqlite:///{tmp_path}/tracker.db"
    settings = {"flush_interval_seconds": FLUSH_INTERVAL, "flush_batch_size": BATCH}
    workdir, keys, api_token = prepare_workdir(tmp_path, db, **settings)
    with running_tracker(workdir, db, keys=keys, **settings) as tracker:
        tokens = await register_message(tracker.base_url, api_token, 50)
        burst = Burst(tracker.base_url, tokens, 20_000, connections=CONNECTIONS)
        running = asyncio.create_task(burst.run())
        await burst.reached(15_000)  # several seconds of hits: far more than the window below
        killed_at = time.monotonic()
        tracker.proc.send_signal(signal.SIGKILL)
        result = await running
        tracker.proc.wait(timeout=10)
        spooled = tracker.spool_bytes()
    with running_tracker(workdir, db, keys=keys, **settings):  # adopts the dead worker's spool
        stored = await _eventually_stable(db)
    lost = result.accepted - stored
    window = SPILL_AFTER_INTERVALS * FLUSH_INTERVAL + WRITE_SLACK
    recent = sum(1 for at in result.accepted_at if at > killed_at - window)
    print(
        f"SIGKILL: accepted {result.accepted}, stored {stored}, lost {lost}; accepted in the last {window:.1f} s "
        f"before the kill: {recent}; spool at the kill: {spooled} bytes; {result}"
    )
    assert result.accepted >= 10_000 and stored <= result.sent
    assert 0 <= lost <= recent, f"lost {lost} events, more than the {recent} accepted in the last {window:.1f} s"


async def test_what_reached_the_spool_survives_sigkill(private_pg: PrivatePostgres, tmp_path: Path) -> None:
    db = private_pg.dsn
    settings = {"flush_interval_seconds": 0.2, "flush_batch_size": BATCH}
    workdir, keys, api_token = prepare_workdir(tmp_path, db, **settings)
    with running_tracker(workdir, db, keys=keys, **settings) as tracker:
        tokens = await register_message(tracker.base_url, api_token, 50)
        await asyncio.to_thread(private_pg.stop, "fast")
        result = await Burst(tracker.base_url, tokens, 1500, connections=CONNECTIONS).run()
        await asyncio.sleep(1.0)  # a few flush intervals: everything accepted is on the spool now
        spooled_bytes = tracker.spool_bytes()
        tracker.proc.send_signal(signal.SIGKILL)
        tracker.proc.wait(timeout=10)
    assert result.accepted == 1500 and spooled_bytes > 0
    await asyncio.to_thread(private_pg.start)
    with running_tracker(workdir, db, keys=keys, **settings):  # adopts the dead worker's spool
        stored = await _eventually_equal(db, result.accepted)
    assert stored == result.accepted, f"spooled events lost across SIGKILL: {stored} of {result.accepted}"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # loopback only
        return str(resp.read().decode())


def _small_files() -> None:
    """The tracker may write files of at most 64 KiB (the spool fills up), and gets EFBIG, not killed."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


async def test_full_spool_disk_refuses_hits_loudly_and_loses_nothing(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    db = private_pg.dsn
    settings = {"flush_interval_seconds": 0.2, "flush_batch_size": 100, "buffer_max_events": 300}
    workdir, keys, api_token = prepare_workdir(tmp_path, db, **settings)
    with running_tracker(workdir, db, keys=keys, preexec_fn=_small_files, **settings) as tracker:
        tokens = await register_message(tracker.base_url, api_token, 50)
        await asyncio.to_thread(private_pg.stop, "fast")
        result = await Burst(tracker.base_url, tokens, 3000, connections=CONNECTIONS).run()
        assert result.statuses[503] > 0, f"the tracker kept accepting with nowhere to keep events: {result}"
        metrics = await asyncio.to_thread(_get, f"{tracker.base_url}/metrics")
        refused = next(line for line in metrics.splitlines() if line.startswith("polite_events_refused_total"))
        assert float(refused.split()[-1]) == result.statuses[503]
        await asyncio.to_thread(private_pg.start)
        stored = await _eventually_equal(db, result.accepted)
        log = tracker.stderr_text()
    assert "cannot write the spool" in log
    assert stored == result.accepted, f"accepted {result.accepted}, stored {stored}: {result}"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _load_until(stop: asyncio.Event, base_url: str, tokens: list[str], counts: dict[str, int]) -> None:
    """Hits from 16 connections until ``stop`` is set (loopback, bounded by the test's duration)."""
    import aiohttp

    async def worker(session: aiohttp.ClientSession, offset: int) -> None:
        i = offset
        while not stop.is_set():
            i += 16
            try:
                async with session.get(f"{base_url}/o/{tokens[i % len(tokens)]}.gif") as resp:
                    await resp.read()
                    counts["accepted" if resp.status == 200 else "other"] += 1
            except (aiohttp.ClientError, OSError):
                counts["error"] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
        await asyncio.gather(*(worker(session, k) for k in range(16)))


async def test_twenty_second_postgres_outage_under_load(private_pg: PrivatePostgres, tmp_path: Path) -> None:
    db = private_pg.dsn
    settings = {"flush_interval_seconds": 0.2, "flush_batch_size": 500}
    workdir, keys, api_token = prepare_workdir(tmp_path, db, **settings)
    with running_tracker(workdir, db, keys=keys, **settings) as tracker:
        tokens = await register_message(tracker.base_url, api_token, 50)
        counts = {"accepted": 0, "other": 0, "error": 0}
        stop = asyncio.Event()
        load = asyncio.create_task(_load_until(stop, tracker.base_url, tokens, counts))
        await asyncio.sleep(2)
        await asyncio.to_thread(private_pg.stop, "fast")
        await asyncio.sleep(1)
        rss_start = _rss_kib(tracker.proc.pid)
        ready_during = await readiness(tracker)
        await asyncio.sleep(19)
        rss_end = _rss_kib(tracker.proc.pid)
        spool_during = tracker.spool_bytes()
        accepted_during = counts["accepted"]
        await asyncio.to_thread(private_pg.start)
        await asyncio.sleep(2)
        stop.set()
        await load
        stored = await _eventually_equal(db, counts["accepted"], timeout=60)
        ready_after = await readiness(tracker)
        spool_after = tracker.spool_bytes()
    growth_mib = (rss_end - rss_start) / 1024
    print(
        f"20 s outage: {counts}, accepted by the end of the outage {accepted_during}, spool {spool_during} bytes, "
        f"RSS {rss_start / 1024:.0f} -> {rss_end / 1024:.0f} MiB, stored {stored}"
    )
    assert ready_during == (200, "down") and ready_after == (200, "up")  # in the Service throughout
    assert counts["other"] == 0 and counts["accepted"] > 1000
    assert spool_during > 0 and spool_after == 0
    # Events wait on disk, not in memory: 20 s of load grows the worker by far less than it spooled.
    assert growth_mib < 64 and growth_mib * 1024 * 1024 < max(spool_during, 1) * 4
    assert stored == counts["accepted"]


def test_a_worker_that_cannot_start_makes_serve_exit_non_zero_saying_why(tmp_path: Path) -> None:
    """Every worker fails the same way at start (its spool directory is a file): the supervisor
    logs each failure with its cause, backs off, and gives up after a few tries with exit 1, so
    Kubernetes sees a crash-looping container instead of a pod that respawns workers forever."""
    workdir = tmp_path / "tracker"
    workdir.mkdir()
    not_a_directory = workdir / "spool-is-a-file"
    not_a_directory.write_text("")
    settings = tracker_settings_file(workdir, spool_dir=str(not_a_directory))
    db, keys = f"sqlite:///{workdir}/tracker.db", f"local:{workdir / 'keys.json'}"
    command = [*CLI, "serve", "--workers", "2", "--port", str(free_port()), "--db", db, "--keys", keys]
    try:
        done = subprocess.run(
            [*command, "--settings", str(settings)], capture_output=True, text=True, env=cli_env(),
            cwd=workdir, timeout=90,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        raise AssertionError(f"serve kept respawning workers that cannot start\n{(stderr or '')[-3000:]}") from None
    assert done.returncode == 1, done.stderr[-3000:]
    assert "FileExistsError" in done.stderr  # the cause, from the worker's own traceback
    assert "could not start" in done.stderr
    assert done.stderr.count("Traceback") <= 2 * 5  # a bounded number of tries, not a loop


def _children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


async def test_a_worker_that_dies_after_serving_is_restarted_and_the_others_keep_serving(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/tracker.db"
    workdir, keys, api_token = prepare_workdir(tmp_path, db)
    with running_tracker(workdir, db, keys=keys, extra_args=("--workers", "2"), ops_port=True) as tracker:
        tokens = await register_message(tracker.base_url, api_token, 20)
        before = _children(tracker.proc.pid)
        assert len(before) == 2
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        for _ in range(100):  # bounded: the first restart comes after RESTART_DELAY_FIRST
            now = _children(tracker.proc.pid)
            if len(now) == 2 and victim not in now:
                break
            await asyncio.sleep(0.1)
        assert len(now) == 2 and victim not in now, now
        result = await Burst(tracker.base_url, tokens, 300, connections=8).run()
        tracker.sigterm()
        code, _ = await asyncio.to_thread(tracker.wait_exit, 30)
        log = tracker.stderr_text()
    assert result.accepted == 300, result
    assert f"exited with -{int(signal.SIGKILL)} after" in log and "restarting it in 0.5 s" in log
    assert code == 0, log[-3000:]
    assert await count_events(db) == 300
