"""Click targets looked up together (one query per loop turn), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from politetenant.crypto import link_row
from politetenant.tracker.storage.base import StorageUnavailable
from politetenant.tracker.storage.click_lookups import ClickLookups
from tests.conftest import Tracker
from tests.integration.test_beacons_and_report import hit, register


async def record_ids(tracker: Tracker, tokens: list[str]) -> list[bytes]:
    ids = []
    for token in tokens:
        verified = tracker.state.tokens.verify(token)
        assert verified is not None
        ids.append(verified.record_id)
    return ids


class CountingStore:
    """The tracker's real store, counting ``click_targets`` calls and the keys in each."""

    def __init__(self, inner: Any) -> None:
        self._lookup = inner.click_targets  # bound now: the test may patch the store afterwards
        self.batches: list[int] = []
        self.fail = False

    async def click_targets(self, keys: list[tuple[bytes, int]]) -> Any:
        self.batches.append(len(keys))
        if self.fail:
            raise StorageUnavailable("PostgreSQL: ConnectionRefusedError")
        return await self._lookup(keys)


async def test_store_finds_every_known_link_in_one_call_and_leaves_unknown_ones_out(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    ids = await record_ids(tracker, [r["token"] for r in out["recipients"]])
    keys = [(ids[0], 1), (ids[0], 2), (ids[1], 1), (ids[2], 0), (ids[3], 99), (b"\x00" * 12, 1)]
    found = await tracker.state.store.click_targets(keys)
    assert set(found) == {(ids[0], 1), (ids[0], 2), (ids[1], 1), (ids[2], 0)}
    assert found[(ids[2], 0)].url is None  # the honeypot link: no URL
    sealer = tracker.state.sealer
    opened = {
        key: sealer.open_text("link.url", target.url, row=link_row(target.message_id, key[1]))
        for key, target in found.items()
        if target.url
    }
    assert opened[(ids[0], 1)] == opened[(ids[1], 1)] == "https://intranet.example.com/policy?id=7&v=2"
    assert opened[(ids[0], 2)] == "https://hr.example.com/faq"
    assert {target.message_id for target in found.values()} == {out["id"]}
    assert await tracker.state.store.click_targets([]) == {}


async def test_lookups_asked_in_one_loop_turn_become_one_query(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    ids = await record_ids(tracker, [r["token"] for r in out["recipients"]])
    store = CountingStore(tracker.state.store)
    lookups = ClickLookups(store)  # type: ignore[arg-type]
    asked = [(record_id, link) for record_id in ids for link in (1, 2)] + [(ids[0], 1), (ids[5], 77)]
    targets = await asyncio.gather(*(lookups.get(*key) for key in asked))
    assert store.batches == [25]  # 26 asks, 25 distinct keys, one query
    assert all(target is not None for target in targets[:25]) and targets[25] is None
    assert targets[0] == targets[24]  # the same link asked twice shares one answer


async def test_a_failed_batch_fails_each_of_its_lookups_and_the_next_batch_tries_again(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    ids = await record_ids(tracker, [r["token"] for r in out["recipients"]])
    store = CountingStore(tracker.state.store)
    lookups = ClickLookups(store)  # type: ignore[arg-type]
    store.fail = True
    results = await asyncio.gather(*(lookups.get(record_id, 1) for record_id in ids[:3]), return_exceptions=True)
    assert all(isinstance(result, StorageUnavailable) for result in results)
    store.fail = False
    assert await lookups.get(ids[0], 1) is not None
    assert store.batches == [3, 1]


async def test_a_requester_that_gives_up_does_not_cancel_the_others(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    ids = await record_ids(tracker, [r["token"] for r in out["recipients"]])
    lookups = ClickLookups(tracker.state.store)
    impatient = asyncio.create_task(lookups.get(ids[0], 1))
    patient = asyncio.create_task(lookups.get(ids[0], 1))
    await asyncio.sleep(0)
    impatient.cancel()
    assert (await patient) is not None
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_a_burst_of_first_clicks_over_http_costs_a_few_queries(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = await register(tracker, 40)
    tokens = [r["token"] for r in out["recipients"]]
    tracker.state.click_cache.clear()  # as on a worker that did not register the message
    store = CountingStore(tracker.state.store)
    monkeypatch.setattr(tracker.state.store, "click_targets", store.click_targets)
    responses = await asyncio.gather(*(hit(tracker, f"/c/{token}/1") for token in tokens))
    assert [r.status for r in responses] == [302] * 40
    assert sum(store.batches) == 40 and len(store.batches) < 40
