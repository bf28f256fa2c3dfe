"""A tenant whose children are all in place but whose workloads are still rolling out is not retried
by kopf: the workloads' own watch events reconcile it as they roll out (``runtime.drift``). Only what
failed is retried; the timer's own pass never retries, and the timer leaves out a tenant reconciled
moments ago."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from politetenant.operator.kube.client import KubeError
from politetenant.operator.model.reasons import Reason
from politetenant.operator.model.status import failed, passed, rolling_out
from politetenant.operator.runtime.handlers import CONCURRENT_RECONCILES, Watching, _handle
from politetenant.operator.runtime.reconcile import Outcome, Runtime, reconcile
from politetenant.operator.runtime.retries import Reconciled
from tests.unit.operator.test_reconcile import FakeKube, make_available, run, tenant_body

RESYNC = 60.0


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


# -- the handler: kopf retries failures only -----------------------------------------------------------


def memo_for(rt: Runtime) -> Any:
    slots = asyncio.Semaphore(CONCURRENT_RECONCILES)
    return SimpleNamespace(runtime=rt, locks={}, slots=slots, reconciled=Reconciled(), watch=Watching())


async def handle(body: dict[str, Any], rt: Runtime, retry: int | None, memo: Any = None) -> kopf.Patch:
    patch = kopf.Patch()
    await _handle(reconcile, kopf.Body(body), patch, memo or memo_for(rt), retry)
    return patch


async def test_the_change_handler_writes_the_status_and_leaves_the_rollout_to_the_watches(rt: Runtime) -> None:
    rt.resync_seconds = RESYNC
    patch = await handle(tenant_body(), rt, retry=0)  # no TemporaryError: nothing failed
    assert patch["status"]["phase"] == "Provisioning"


async def test_a_failure_is_still_retried_with_backoff(kube: FakeKube, rt: Runtime) -> None:
    kube.failures[("create", "CronJob", "retention")] = KubeError(500, "InternalError", "etcd is down")
    with pytest.raises(kopf.TemporaryError) as raised:
        await handle(tenant_body(), rt, retry=0)
    assert raised.value.delay == 5


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

    await tick(retry=0)  # the create handler
    assert await tick(retry=None) == {}  # a timer tick right after: left out
    assert len(steps) == 1

    memo.reconciled.mark("acme", time.monotonic() - RESYNC / 2)  # half an interval ago
    assert (await tick(retry=None))["status"]["phase"] == "Provisioning"
    assert len(steps) == 2
