"""What a worker remembers to answer public routes: where clicks go (the same redirect as the database
gives, each link opened once, never a redirect to a deleted message once its time in memory is up)
and which tokens verified (a forged one is refused every time)."""

from __future__ import annotations

import time

import pytest

from politetenant.tracker.http.auth import Role
from politetenant.tracker.privacy.retention import DAY_MS, purge
from politetenant.tracker.public import beacons
from politetenant.tracker.storage.click_cache import ClickCache
from tests.conftest import Tracker
from tests.integration.test_beacons_and_report import hit, register
from tests.integration.test_lean_server import beacon, lean_port, one


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache_with(tracker: Tracker, clock: Clock, **limits: int) -> ClickCache:
    cache = tracker.state.click_cache = ClickCache(clock=clock, ttl_seconds=600, **limits)
    return cache


async def test_a_remembered_link_redirects_where_the_database_says_on_both_paths(tracker: Tracker) -> None:
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    tracker.state.click_cache.clear()
    looked_up = await one(lean_port(tracker), beacon(f"/c/{tokens[0]}/1"))  # from the database
    assert len(tracker.state.click_cache) == 1
    remembered = await one(lean_port(tracker), beacon(f"/c/{tokens[0]}/1"))
    via_router = await hit(tracker, f"/c/{tokens[0]}/1")
    assert looked_up[0] == remembered[0] == via_router.status == 302
    assert looked_up[1]["location"] == remembered[1]["location"] == via_router.headers["Location"]
    assert looked_up[1]["location"] == "https://intranet.example.com/policy?id=7&v=2"
    tracker.state.click_cache.clear()
    assert (await hit(tracker, f"/c/{tokens[1]}/0")).status == 200  # the honeypot, looked up
    assert (await hit(tracker, f"/c/{tokens[1]}/0")).status == 200  # and remembered: still no redirect


async def test_a_link_is_opened_once_however_many_recipients_click_it(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    tracker.state.click_cache.clear()
    sealer, opened = tracker.state.sealer, []
    open_text = sealer.open_text

    def counting(field: str, *args: object, **kw: object) -> str:
        opened.append(field)
        return open_text(field, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sealer, "open_text", counting)
    for token in tokens[:6]:
        for _ in range(2):
            response = await hit(tracker, f"/c/{token}/2")
            assert response.headers["Location"] == "https://hr.example.com/faq"
    assert opened == ["link.url"]


async def test_a_purged_message_stops_redirecting_once_its_entries_expire(tracker: Tracker) -> None:
    clock = Clock()
    cache_with(tracker, clock)
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    assert (await hit(tracker, f"/c/{tokens[0]}/1")).status == 302  # now remembered
    state = tracker.state
    later = int(time.time() * 1000) + (state.settings.retention_message_days + 1) * DAY_MS
    result = await purge(state.store, state.settings, state.keyring, now_ms=later)
    assert result.messages >= 1 and result.links > 0
    clock.now += 601  # past the time a fact is kept without asking the database again
    gone = await hit(tracker, f"/c/{tokens[0]}/1")
    assert gone.status == 404 and "Location" not in gone.headers
    assert (await hit(tracker, f"/c/{tokens[1]}/1")).status == 404  # no other recipient's either


async def test_an_erased_records_links_still_lead_where_they_did_from_cache_and_database(tracker: Tracker) -> None:
    out = await register(tracker, 12, mode="individual")
    token = out["recipients"][0]["token"]
    first = await hit(tracker, f"/c/{token}/1")
    assert first.status == 302
    resp = await tracker.client.post(
        "/api/v1/subjects/erase", json={"email": out["recipients"][0]["email"]}, headers=tracker.auth(Role.PRIVACY)
    )
    assert resp.status == 200, await resp.text()
    cached = await hit(tracker, f"/c/{token}/1")  # this worker's cache still knows the message
    tracker.state.click_cache.clear()
    looked_up = await hit(tracker, f"/c/{token}/1")  # the record is gone: found through erased_records
    assert cached.status == looked_up.status == 302
    assert cached.headers["Location"] == looked_up.headers["Location"] == first.headers["Location"]
    assert (await hit(tracker, f"/c/{out['recipients'][1]['token']}/1")).status == 302  # others unaffected


async def test_the_cache_stays_within_its_bounds_under_many_clicks(tracker: Tracker) -> None:
    cache = cache_with(tracker, Clock(), max_records=5, max_links=2)
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    cache.clear()
    for token in tokens:
        for link in (1, 2, 0):
            assert (await hit(tracker, f"/c/{token}/{link}")).status in (200, 302)
    assert len(cache) == 5 and cache.link_count == 2


async def test_a_message_this_worker_registered_is_clicked_without_a_database_read(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    asked: list[object] = []

    async def counting(keys: list[tuple[bytes, int]]) -> dict[object, object]:
        asked.append(keys)
        return {}

    monkeypatch.setattr(tracker.state.store, "click_targets", counting)
    for token in tokens:
        response = await hit(tracker, f"/c/{token}/1")
        assert response.headers["Location"] == "https://intranet.example.com/policy?id=7&v=2"
    assert asked == []


async def test_remembered_tokens_answer_alike_and_a_forged_one_is_refused_every_time(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(beacons, "_VERIFIED_TOKENS_MAX", 3)
    tokens = [r["token"] for r in (await register(tracker, 12))["recipients"]]
    forged = tokens[0][:-2] + ("AA" if not tokens[0].endswith("AA") else "BA")
    for token in tokens + tokens[:2]:
        assert (await hit(tracker, f"/o/{token}.gif")).status == 200
    assert len(tracker.state.verified_tokens) == 3
    rejected = tracker.state.metrics.rejected_tokens
    before = rejected._value.get()
    for _ in range(2):
        assert (await hit(tracker, f"/o/{forged}.gif")).status == 404
        assert (await hit(tracker, f"/c/{forged}/1")).status == 404
    assert rejected._value.get() == before + 4 and forged not in tracker.state.verified_tokens
