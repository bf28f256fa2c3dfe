"""The worker's memory of where clicks go: bounded, least recently used first out, each fact for a while."""

from __future__ import annotations

from politetenant.tracker.storage.click_cache import ClickCache
from politetenant.tracker.storage.rows import ClickTarget, LinkRow


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def record(n: int) -> bytes:
    return n.to_bytes(16, "big")


def links(message_id: str) -> list[LinkRow]:
    return [
        LinkRow(message_id, 0, None, None),
        LinkRow(message_id, 1, b"sealed-1", b"t"),
        LinkRow(message_id, 2, b"sealed-2", b"t"),
    ]


def test_a_registered_message_is_known_for_each_of_its_records_and_links() -> None:
    cache = ClickCache(clock=Clock())
    cache.remember_message("msg_a", [record(1), record(2)], links("msg_a"))
    target = cache.get(record(2), 1)
    assert target is not None and (target.message_id, target.sealed_url) == ("msg_a", b"sealed-1")
    honeypot = cache.get(record(1), 0)
    assert honeypot is not None and honeypot.sealed_url is None
    assert cache.get(record(1), 3) is None  # no such link: the database is asked (and says 404)
    assert cache.get(record(3), 1) is None


def test_records_beyond_the_bound_push_out_the_least_recently_used() -> None:
    cache = ClickCache(clock=Clock(), max_records=3, max_links=2)
    cache.remember_message("msg_a", [record(n) for n in range(3)], links("msg_a")[1:])
    assert cache.get(record(0), 1) is not None  # record 0 is now the most recently used
    cache.learn(record(9), 1, ClickTarget("msg_a", b"sealed-1"))
    assert len(cache) == 3 and cache.link_count == 2
    assert cache.get(record(1), 1) is None  # the least recently used went
    assert cache.get(record(0), 1) is not None and cache.get(record(9), 1) is not None
    cache.remember_message("msg_b", [record(20)], links("msg_b"))
    assert cache.link_count == 2 and cache.get(record(0), 1) is None  # msg_a's links made way for msg_b's


def test_a_fact_expires_after_its_time_to_live_even_when_used() -> None:
    clock = Clock()
    cache = ClickCache(clock=clock, ttl_seconds=60)
    cache.learn(record(1), 1, ClickTarget("msg_a", b"sealed-1"))
    clock.now += 59
    assert cache.get(record(1), 1) is not None
    clock.now += 1
    assert cache.get(record(1), 1) is None and len(cache) == 0


def test_a_link_whose_sealed_url_changed_in_the_database_is_opened_again() -> None:
    cache = ClickCache(clock=Clock())
    first = cache.learn(record(1), 1, ClickTarget("msg_a", b"old"))
    first.location = "https://example.com/old"
    assert cache.learn(record(2), 1, ClickTarget("msg_a", b"old")) is first  # same link: opened once
    resealed = cache.learn(record(3), 1, ClickTarget("msg_a", b"new"))
    assert resealed.location is None and resealed.sealed_url == b"new"
    cache.forget_link("msg_a", 1)
    assert cache.get(record(1), 1) is None
    cache.clear()
    assert len(cache) == 0 and cache.link_count == 0
