"""Nothing accepted with a 2xx is lost: SIGTERM during a burst, and PostgreSQL going away during one.

Both tests drive the real ``polite-tracker serve`` process over loopback and count rows in the
database it writes to. The PostgreSQL outage test stops and starts a private server of its own; the
machine's shared server is only used (never stopped) by the SIGTERM test's PostgreSQL variant.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.private_postgres import PrivatePostgres
from tests.e2e.tracker_process import (
    Burst,
    BurstResult,
    TrackerProcess,
    count_events,
    prepare_workdir,
    readiness,
    register_message,
    running_tracker,
)
from tests.support import scratch_database

pytestmark = pytest.mark.slow

RECIPIENTS = 50
CONNECTIONS = 50
EXIT_WITHIN_SECONDS = 20


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def burst_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/tracker.db"
    else:
        with scratch_database() as dsn:  # on the shared server, which this test never stops
            yield dsn


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.2)


async def _sigterm_and_wait(tracker: TrackerProcess) -> None:
    tracker.sigterm()
    code, waited = await asyncio.to_thread(tracker.wait_exit, EXIT_WITHIN_SECONDS + 10)
    log = tracker.stderr_text()[-4000:]
    assert code == 0, f"tracker exited {code} after SIGTERM\n--- stderr ---\n{log}"
    assert waited < EXIT_WITHIN_SECONDS, f"tracker took {waited:.1f} s to exit after SIGTERM\n{log}"


async def test_sigterm_during_burst_loses_no_accepted_event(burst_db: str, tmp_path: Path) -> None:
    total = 6000
    # Nothing is written before SIGTERM unless stop flushes: a long interval and a batch larger than
    # the burst keep every accepted event in memory, so a shutdown that drops the buffer fails here.
    settings = {"flush_interval_seconds": 30, "flush_batch_size": 100_000, "buffer_max_events": 100_000}
    workdir, keys, api_token = prepare_workdir(tmp_path, burst_db, **settings)
    with running_tracker(workdir, burst_db, keys=keys, **settings) as tracker:
        tokens = await register_message(tracker.base_url, api_token, RECIPIENTS)
        burst = Burst(tracker.base_url, tokens, total, connections=CONNECTIONS)
        running = asyncio.create_task(burst.run())
        await burst.reached(total // 3)
        accepted_before = burst.result.accepted
        stored_before = await count_events(burst_db)
        tracker.sigterm()
        result = await running
        code, waited = await asyncio.to_thread(tracker.wait_exit, EXIT_WITHIN_SECONDS + 10)
        log = tracker.stderr_text()[-4000:]
    stored = await count_events(burst_db)
    figures = f"{result}; accepted before SIGTERM={accepted_before} stored before={stored_before} stored={stored}"
    print(figures)
    assert code == 0, f"exit code {code}; {figures}\n--- stderr ---\n{log}"
    assert waited < EXIT_WITHIN_SECONDS, f"took {waited:.1f} s to exit; {figures}"
    assert accepted_before - stored_before >= 200, f"too few events were only in memory at SIGTERM: {figures}"
    assert result.accepted > 200, figures
    assert result.accepted < result.sent, f"SIGTERM came after the burst, not during it: {figures}"
    assert stored >= result.accepted, f"accepted events were lost: {figures}\n--- stderr ---\n{log}"
    assert stored <= result.sent, f"more events than requests: {figures}"


def _mostly_accepted(result: BurstResult, what: str) -> None:
    assert result.accepted >= 0.99 * result.sent, f"{what}: beacons did not keep answering 200: {result}"


async def test_postgres_outage_during_burst_loses_nothing(private_pg: PrivatePostgres, tmp_path: Path) -> None:
    db = private_pg.dsn
    settings = {"flush_interval_seconds": 0.2, "flush_batch_size": 500}
    workdir, keys, api_token = prepare_workdir(tmp_path, db, **settings)
    with running_tracker(workdir, db, keys=keys, **settings) as tracker:
        base = tracker.base_url
        tokens = await register_message(base, api_token, RECIPIENTS)
        assert await readiness(tracker) == (200, "up")

        # Part 1: the database goes away while the burst is running.
        burst = Burst(base, tokens, 4000, connections=CONNECTIONS)
        running = asyncio.create_task(burst.run())
        await burst.reached(1000)
        await asyncio.to_thread(private_pg.stop, "fast")
        in_flight_at_stop = burst.total - burst.result.done

        async def database_down() -> bool:
            return await readiness(tracker) == (200, "down")

        # Still ready (the spool takes the events, so links in sent mail keep working), and says why.
        await _eventually(database_down, 5, "/readyz answering 200 with database down during the outage")
        part1 = await running
        _mostly_accepted(part1, "burst across the stop")

        # Part 2: entirely during the outage; the flusher must spool it to disk.
        part2 = await Burst(base, tokens, 1500, connections=CONNECTIONS).run()
        _mostly_accepted(part2, "burst during the outage")

        async def spooled() -> bool:
            return tracker.spool_bytes() > 0

        await _eventually(spooled, 10, f"events spooled to disk under {tracker.spool_dir}")
        spool_bytes = tracker.spool_bytes()
        assert await readiness(tracker) == (200, "down")

        # Part 3: the database comes back (same port, same data) while hits keep coming.
        await asyncio.to_thread(private_pg.start)
        part3 = await Burst(base, tokens, 1500, connections=CONNECTIONS).run()
        _mostly_accepted(part3, "burst during recovery")
        accepted = part1.accepted + part2.accepted + part3.accepted
        stored = 0

        async def all_stored() -> bool:
            nonlocal stored
            try:
                stored = await count_events(db)
            except (OSError, asyncpg.PostgresError):
                return False
            return stored >= accepted

        figures = lambda: (  # noqa: E731
            f"part1 {part1} (in flight at stop: {in_flight_at_stop}); part2 {part2}; part3 {part3}; "
            f"accepted={accepted} stored={stored} spool bytes at peak={spool_bytes} now={tracker.spool_bytes()}"
        )
        try:
            await _eventually(all_stored, 30, "every accepted event in the database")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {figures()}\n--- stderr ---\n{tracker.stderr_text()[-4000:]}") from None
        await asyncio.sleep(0.5)  # anything else still arriving would be a duplicate
        stored = await count_events(db)
        print(figures())
        assert stored == accepted, figures()
        assert tracker.spool_bytes() == 0, f"the spool did not drain: {figures()}"
        assert await readiness(tracker) == (200, "up")
        await _sigterm_and_wait(tracker)
    assert await count_events(db) == accepted


async def test_two_workers_share_the_port_and_both_flush_on_sigterm(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/tracker.db"
    settings = {"flush_interval_seconds": 30, "flush_batch_size": 100_000}
    workdir, keys, api_token = prepare_workdir(tmp_path, db, **settings)
    with running_tracker(workdir, db, keys=keys, extra_args=("--workers", "2"), **settings) as tracker:
        tokens = await register_message(tracker.base_url, api_token, RECIPIENTS)
        result = await Burst(tracker.base_url, tokens, 2000, connections=CONNECTIONS).run()
        assert result.accepted == 2000, result
        await _sigterm_and_wait(tracker)
        log = tracker.stderr_text()
    assert "worker 0 serving" in log and "worker 1 serving" in log
    assert "worker 0 stopped" in log and "worker 1 stopped" in log
    assert await count_events(db) == 2000


async def test_tracker_started_while_postgres_is_down_accepts_and_catches_up(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    db = private_pg.dsn
    settings = {"flush_interval_seconds": 0.2, "flush_batch_size": 500}
    workdir, keys, api_token = prepare_workdir(tmp_path, db, **settings)
    with running_tracker(workdir, db, keys=keys, **settings) as first:
        tokens = await register_message(first.base_url, api_token, RECIPIENTS)
        await _sigterm_and_wait(first)
    await asyncio.to_thread(private_pg.stop, "fast")
    with running_tracker(workdir, db, keys=keys, **settings) as tracker:
        assert await readiness(tracker) == (200, "down")
        result = await Burst(tracker.base_url, tokens, 1500, connections=CONNECTIONS).run()
        _mostly_accepted(result, "database down since start")
        await asyncio.to_thread(private_pg.start)

        async def caught_up() -> bool:
            try:
                return await count_events(db) == result.accepted
            except (OSError, asyncpg.PostgresError):
                return False

        await _eventually(caught_up, 30, f"{result.accepted} events stored after PostgreSQL came up")
        assert await readiness(tracker) == (200, "up")
        await _sigterm_and_wait(tracker)
