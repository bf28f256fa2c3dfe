"""A tenant whose children are all in place but whose workloads are still rolling out is looked at
again within seconds, not at the next drift timer tick; the re-checks grow, stay well below the
drift interval, and stop once they have waited one interval, when the timer takes over. Ready or
failed tenants are not re-checked early, the timer's own pass never retries, and the timer leaves
out a tenant reconciled moments ago."""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from politetenant.operator.model.reasons import Reason
from politetenant.operator.model.status import failed, passed, rolling_out
from politetenant.operator.runtime.handlers import _handle
from politetenant.operator.runtime.reconcile import Outcome, Runtime, reconcile
from politetenant.operator.runtime.retries import Reconciled, rollout_recheck
from tests.unit.operator.test_reconcile import FakeKube, make_available, run, tenant_body

RESYNC = 60.0


def test_a_rollout_is_rechecked_after_seconds_growing_and_capped_well_below_the_resync_interval() -> None:
    delays = [rollout_recheck(retry, resync_seconds=RESYNC) for retry in range(7)]
    assert delays == [2, 4, 8, 15, 15, 15, 15]
    assert [rollout_recheck(retry, resync_seconds=30.0) for retry in range(6)] == [2, 4, 7.5, 7.5, 7.5, 7.5]
    # a short drift interval (the end-to-end tests use 2 s) caps every wait at a quarter of it
    assert [rollout_recheck(retry, resync_seconds=2.0) for retry in range(4)] == [0.5] * 4


def test_quick_rechecks_stop_once_they_have_waited_a_whole_resync_interval() -> None:
    # 2 + 4 + 8 + 15 + 15 + 15 = 59 s waited before the 7th: it is the last
    assert rollout_recheck(6, resync_seconds=RESYNC) == 15
    assert rollout_recheck(7, resync_seconds=RESYNC) is None
    assert rollout_recheck(1000, resync_seconds=RESYNC) is None
    assert rollout_recheck(4, resync_seconds=2.0) is None  # 4 x 0.5 s
    assert rollout_recheck(0, resync_seconds=0.0) is None


def test_only_a_tenant_waiting_for_nothing_but_rollouts_is_rolling_out() -> None:
    starting = [
        passed("NamespaceReady", Reason.NAMESPACE_ACTIVE),
        failed("TrackerReady", Reason.TRACKER_STARTING, "0 of 1 tracker replicas available"),
        failed("DatabaseReady", Reason.DATABASE_STARTING, "StatefulSet postgres: 0 of 1 replicas ready"),
    ]
    assert rolling_out(starting) == (
        "TrackerReady: 0 of 1 tracker replicas available; DatabaseReady: StatefulSet postgres: 0 of 1 replicas ready"
    )
    assert rolling_out([passed("TrackerReady", Reason.TRACKER_AVAILABLE)]) is None
    refused = failed("DatabaseReady", Reason.DATABASE_ENGINE_UNAVAILABLE, "install CloudNativePG")
    assert rolling_out([starting[1], refused]) is None  # a rollout will not fix what needs a person
    assert rolling_out([starting[1], failed("RetentionReady", Reason.API_ERROR, "403")]) is None


async def test_a_fresh_tenant_is_rolling_out_and_a_ready_one_is_not(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    first = await run(body, rt)
    assert first.status is not None and first.status["phase"] == "Provisioning"
    assert first.rolling_out and not first.retry
    assert "TrackerReady" in first.why

    make_available(kube)
    second = await run(body, rt)
    assert second.status is not None and second.status["phase"] == "Ready"
    assert not second.rolling_out


async def test_a_tenant_failed_for_a_missing_cnpg_is_not_rechecked_early(rt: Runtime) -> None:
    outcome = await run(tenant_body(database={"engine": "cnpg"}), rt)
    assert outcome.status is not None and outcome.status["phase"] == "Failed"
    assert not outcome.rolling_out


# -- the handler: kopf is asked to look again soon, and only by a change handler ------------------------


def memo_for(rt: Runtime) -> Any:
    return SimpleNamespace(runtime=rt, locks={}, reconciled=Reconciled())


async def handle(body: dict[str, Any], rt: Runtime, retry: int | None, memo: Any = None) -> kopf.Patch:
    patch = kopf.Patch()
    await _handle(reconcile, kopf.Body(body), patch, memo or memo_for(rt), retry)
    return patch


async def test_the_change_handler_asks_kopf_to_look_again_within_seconds_while_rolling_out(rt: Runtime) -> None:
    rt.resync_seconds = RESYNC
    with pytest.raises(kopf.TemporaryError) as raised:
        await handle(tenant_body(), rt, retry=0)
    assert raised.value.delay == 2
    assert "waiting for the rollout" in str(raised.value)

    with pytest.raises(kopf.TemporaryError) as later:
        await handle(tenant_body(), rt, retry=3)
    assert later.value.delay == 15


async def test_the_status_is_still_written_when_kopf_is_asked_to_look_again(rt: Runtime) -> None:
    patch = kopf.Patch()
    with pytest.raises(kopf.TemporaryError):
        await _handle(reconcile, kopf.Body(tenant_body()), patch, memo_for(rt), 0)
    assert patch["status"]["phase"] == "Provisioning"


async def test_after_a_whole_interval_of_rechecks_the_drift_timer_takes_over(rt: Runtime) -> None:
    rt.resync_seconds = RESYNC
    patch = await handle(tenant_body(), rt, retry=7)
    assert patch["status"]["phase"] == "Provisioning"  # written, and no retry asked for


async def test_the_drift_timer_never_asks_for_an_early_look(rt: Runtime) -> None:
    patch = await handle(tenant_body(), rt, retry=None)
    assert patch["status"]["phase"] == "Provisioning"


async def test_a_ready_tenant_is_not_looked_at_before_the_next_resync(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    make_available(kube)
    patch = await handle(body, rt, retry=0)
    assert patch["status"]["phase"] == "Ready"


def test_a_tenant_is_fresh_for_half_a_resync_interval_after_its_reconcile() -> None:
    reconciled = Reconciled()
    assert not reconciled.fresh("acme", now=100.0, resync_seconds=RESYNC)
    reconciled.mark("acme", now=100.0)
    assert reconciled.fresh("acme", now=129.9, resync_seconds=RESYNC)
    assert not reconciled.fresh("acme", now=130.0, resync_seconds=RESYNC)
    assert not reconciled.fresh("other", now=100.0, resync_seconds=RESYNC)


async def test_the_drift_timer_leaves_out_a_tenant_its_change_handler_just_reconciled(rt: Runtime) -> None:
    rt.resync_seconds = RESYNC
    memo = memo_for(rt)
    steps: list[Mapping[str, Any]] = []

    async def counted(body: Mapping[str, Any], runtime: Runtime) -> Outcome:
        steps.append(body)
        return await reconcile(body, runtime)

    async def tick(retry: int | None) -> kopf.Patch:
        patch = kopf.Patch()
        await _handle(counted, kopf.Body(tenant_body()), patch, memo, retry)
        return patch

    with pytest.raises(kopf.TemporaryError):
        await tick(retry=0)  # the create handler
    assert await tick(retry=None) == {}  # a timer tick right after: left out
    assert len(steps) == 1

    memo.reconciled.mark("acme", time.monotonic() - RESYNC / 2)  # half an interval ago
    assert (await tick(retry=None))["status"]["phase"] == "Provisioning"
    assert len(steps) == 2
