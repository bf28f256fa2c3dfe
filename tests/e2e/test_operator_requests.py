"""What the real operator asks of the API to bring one tenant to Ready, and for a resync of it.

Counted by the Kubernetes API emulator per verb and path (``RequestRecord``), against the least any
operator must write: one create per object render gives, per owned Secret and for the master key
Secret, and one status patch (``bench/operator_scale.py`` measures the same at 500 tenants). Each
bound is one a user would notice: a read of what the watches already delivered, a second create, a
status patch per step, a resync that reads or writes anything for a tenant nothing happened to.
Events (core/v1, in the operator's namespace) are the operator's user-facing output and are counted
apart: one per kind of change.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from politetenant.operator.model.config import load_operator_config
from politetenant.operator.model.tenant import PoliteTenant
from politetenant.operator.render.tenant import render_tenant
from tests.e2e.operator_process import start_operator
from tests.e2e.test_operator_e2e import (
    OPERATOR_NAMESPACE,
    REAL,
    TENANTS,
    Cluster,
    Operator,
    by_verb,
    ensure_operator_namespace,
    reconciles,
    tenant_manifest,
    wait_ready,
    wait_started,
)
from tests.fakes.kube_emulator import RequestRecord
from tests.fakes.kube_server import running_kube_api
from tests.support import free_port

pytestmark = pytest.mark.skipif(REAL, reason="counts the emulator's requests")

RESYNC = 1.0  # --resync-seconds: short, so a few resyncs fit in the test
NAME = "counted"


@dataclass
class Brought:
    cluster: Cluster
    operator: Operator
    requests: list[RequestRecord]  # the operator's, from the tenant's creation until it showed Ready


@pytest.fixture(scope="module")
def brought(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brought]:
    with running_kube_api() as handle:
        cluster = Cluster(handle.kubeconfig_path, handle)
        ensure_operator_namespace(cluster)
        metrics_port = free_port()
        args = ["--standalone", "--all-namespaces", "--resync-seconds", f"{RESYNC:g}"]
        log = tmp_path_factory.mktemp("operator") / "operator.log"
        process = start_operator(
            cluster.kubeconfig, extra_args=[*args, "--metrics-port", str(metrics_port)], log_path=log
        )
        operator = Operator(process, metrics_port, 0, None)
        try:
            wait_started(cluster, operator)
            mark = cluster.mark()
            cluster.create_tenant(NAME)
            wait_ready(cluster, operator, NAME)
            yield Brought(cluster, operator, cluster.operator_requests(mark))
        finally:
            process.stop()


def least_writes() -> int:
    """One create per rendered object and owned Secret, the master key Secret, one status patch."""
    tenant = PoliteTenant.model_validate(tenant_manifest(NAME))
    rendered = render_tenant(tenant, load_operator_config(None, {}))
    return len(rendered.objects) + len(rendered.secrets) + 1 + 1


def _events(requests: list[RequestRecord]) -> list[RequestRecord]:
    return [r for r in requests if r.verb == "create" and r.path.endswith("/events")]


def test_one_tenant_to_ready_reads_nothing_the_watches_deliver_and_creates_each_child_once(brought: Brought) -> None:
    requests = brought.requests
    print(f"\none tenant to Ready: {len(requests)} requests {by_verb(requests)}")
    namespace = f"/namespaces/polite-{NAME}/"
    # Every child is watched, and a namespace made moments ago holds no Secret: nothing there is read.
    assert [r.path for r in requests if r.verb == "get" and namespace in r.path] == []
    assert [r.path for r in requests if r.verb == "get" and r.path.startswith(TENANTS)] == []
    creates = collections.Counter(r.path for r in requests if r.verb == "create" and r not in _events(requests))
    tenant = PoliteTenant.model_validate(tenant_manifest(NAME))
    rendered = render_tenant(tenant, load_operator_config(None, {}))
    assert sum(creates.values()) == len(rendered.objects) + len(rendered.secrets) + 1  # + the master key
    # The status: Reconciling on the first reconcile of the generation, then Ready; no patch per step.
    assert sum(1 for r in requests if r.verb == "patch" and r.path.endswith("/status")) <= 2
    # kopf's finalizer and its last-handled annotation; nothing of ours on the tenant object itself.
    assert sum(1 for r in requests if r.verb == "patch" and r.path == f"{TENANTS}/{NAME}") <= 2


def test_one_tenant_to_ready_costs_at_most_one_and_a_half_times_the_least_writes(brought: Brought) -> None:
    requests = [r for r in brought.requests if r.verb != "watch"]
    events = _events(requests)
    assert len(events) <= 4  # NamespaceCreated, ObjectsCreated, SecretCreated, KeysCreated
    assert all(f"/namespaces/{OPERATOR_NAMESPACE}/" in r.path for r in events)
    assert len(requests) <= 1.5 * least_writes(), by_verb(requests)


def test_a_resync_of_the_unchanged_tenant_sends_no_request(brought: Brought) -> None:
    cluster, operator = brought.cluster, brought.operator
    time.sleep(2 * RESYNC)  # the last status patch and its echo settle
    before = reconciles(operator, "resync")
    mark = cluster.mark()
    time.sleep(3 * RESYNC + 0.5)
    seen = [f"{r.verb} {r.path}" for r in cluster.operator_requests(mark) if r.verb != "watch"]
    assert reconciles(operator, "resync") - before >= 2, "the resync timer did not look at the tenant"
    assert seen == []
