"""Faults under load: SIGKILL of a worker, and a spool disk that fills up.

SIGKILL skips every shutdown path, so what was only in memory is lost; the promise is that the loss
is bounded by one flush (a batch), and that whatever reached the spool is recovered by the next
start. When neither the database nor the spool disk can take events, the tracker must refuse hits
(503) rather than accept events it cannot keep.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.private_postgres import PrivatePostgres, started_private_postgres
from tests.e2e.tracker_process import (
    Burst,
    count_events,
    create_token,
    register_message,
    running_tracker,
    tracker_settings_file,
)

pytestmark = pytest.mark.slow
BATCH = 200
CONNECTIONS = 32
BUFFER_MAX = 600


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    with started_private_postgres() as server:
        yield server


def _prepare(tmp_path: Path, db: str, **settings: object) -> tuple[Path, str, str]:
    workdir = tmp_path / "tracker"
    workdir.mkdir()
    keys = f"local:{workdir / 'keys.json'}"
    return workdir, keys, create_token("sender", db, keys, tracker_settings_file(workdir, **settings))


async def _eventually_equal(db: str, expected: int, timeout: float = 30) -> int:
    stored = -1
    for _ in range(int(timeout / 0.2)):
        stored = await count_events(db)
        if stored == expected:
            return stored
        await asyncio.sleep(0.2)
    return stored


async def test_sigkill_loses_at_most_what_memory_may_hold(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/tracker.db"
    settings = {"flush_interval_seconds": 0.5, "flush_batch_size": BATCH, "buffer_max_events": BUFFER_MAX}
    workdir, keys, api_token = _prepare(tmp_path, db, **settings)
    with running_tracker(workdir, db, keys=keys, **settings) as tracker:
        tokens = await register_message(tracker.base_url, api_token, 50)
        burst = Burst(tracker.base_url, tokens, 4000, connections=CONNECTIONS)
        running = asyncio.create_task(burst.run())
        await burst.reached(2000)
        tracker.proc.send_signal(signal.SIGKILL)
        result = await running
        tracker.proc.wait(timeout=10)
    stored = await count_events(db)
    lost = result.accepted - stored
    print(f"SIGKILL: accepted {result.accepted}, stored {stored}, lost {lost} (memory cap {BUFFER_MAX}): {result}")
    assert result.accepted >= 200
    assert stored <= result.sent
    # Only memory is lost, and memory never holds more than buffer_max_events: beyond it hits get 503.
    assert 0 <= lost <= BUFFER_MAX, f"lost {lost} events, more than the buffer may hold"


async def test_what_reached_the_spool_survives_sigkill(private_pg: PrivatePostgres, tmp_path: Path) -> None:
    db = private_pg.dsn
    settings = {"flush_interval_seconds": 0.2, "flush_batch_size": BATCH}
    workdir, keys, api_token = _prepare(tmp_path, db, **settings)
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
    workdir, keys, api_token = _prepare(tmp_path, db, **settings)
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
