"""When the supervisor of ``serve --workers N`` restarts a worker that died, and when it gives up."""

from __future__ import annotations

from politetenant.tracker.server.workers import (
    MAX_START_FAILURES,
    RESTART_DELAY_FIRST,
    RESTART_DELAY_MAX,
    STABLE_AFTER_SECONDS,
    Backoff,
    next_restart,
)


def deaths(count: int, *, served: bool, ran_seconds: float = 1.0) -> list[Backoff | None]:
    backoff: Backoff | None = Backoff()
    seen = []
    for _ in range(count):
        assert backoff is not None
        backoff = next_restart(backoff, served=served, ran_seconds=ran_seconds)
        seen.append(backoff)
    return seen


def test_a_worker_that_keeps_dying_quickly_waits_twice_as_long_each_time_up_to_the_cap() -> None:
    delays = [b.delay for b in deaths(10, served=True) if b is not None]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert delays[0] == RESTART_DELAY_FIRST and max(delays) == RESTART_DELAY_MAX


def test_a_worker_that_served_for_a_while_is_restarted_quickly_again() -> None:
    slow = Backoff(delay=RESTART_DELAY_MAX)
    assert next_restart(slow, served=True, ran_seconds=STABLE_AFTER_SECONDS) == Backoff(RESTART_DELAY_FIRST, 0)
    assert next_restart(slow, served=True, ran_seconds=STABLE_AFTER_SECONDS - 1) == Backoff(RESTART_DELAY_MAX, 0)


def test_a_worker_that_never_serves_stops_the_tracker_after_a_few_tries() -> None:
    outcomes = deaths(MAX_START_FAILURES, served=False, ran_seconds=0.1)
    assert all(b is not None for b in outcomes[:-1]) and outcomes[-1] is None
    assert [b.failed_starts for b in outcomes[:-1] if b is not None] == list(range(1, MAX_START_FAILURES))


def test_serving_once_clears_the_failed_starts() -> None:
    almost = Backoff(delay=4.0, failed_starts=MAX_START_FAILURES - 1)
    after = next_restart(almost, served=True, ran_seconds=5)
    assert after == Backoff(8.0, 0)
    assert next_restart(after, served=False, ran_seconds=0.1) is not None
