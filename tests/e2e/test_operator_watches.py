"""The operator reacts to its children's changes within moments, not at the next resync.

An operator with a resync interval of ten minutes: a tenant still reaches Ready as its workloads
roll out (their status events reconcile it), and a tracker StatefulSet deleted by hand is re-created
from the watch event. The time from the deletion to the new StatefulSet is printed (the goal is
under 2 s; asserted only to be far below the resync interval, so a slow machine cannot fail it).
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.operator_process import start_operator
from tests.e2e.test_operator_e2e import (
    WAIT,
    Cluster,
    Operator,
    emulator_only,
    ensure_operator_namespace,
    path,
    roll_out,
    wait_started,
)
from tests.fakes.kube_server import running_kube_api

LONG_RESYNC = 600.0


@emulator_only
def test_a_deleted_tracker_is_restored_from_its_watch_event(tmp_path: Path) -> None:
    with running_kube_api() as handle:
        cluster = Cluster(handle.kubeconfig_path, handle)
        ensure_operator_namespace(cluster)
        args = ["--standalone", "--all-namespaces", "--resync-seconds", str(LONG_RESYNC), "--metrics-port", "0"]
        process = start_operator(cluster.kubeconfig, extra_args=args, log_path=tmp_path / "operator.log")
        operator = Operator(process, 0, 0, None)
        try:
            wait_started(cluster, operator)
            name = f"watch-{int(time.time()) % 100000}"
            cluster.create_tenant(name)
            namespace = f"polite-{name}"

            def ready() -> bool:
                status = (cluster.tenant(name) or {}).get("status") or {}
                if status.get("namespace"):
                    roll_out(cluster, namespace)
                return status.get("phase") == "Ready"

            operator.wait_for(ready, "the tenant Ready with a 10-minute resync", timeout=WAIT)
            before = cluster.get(path("StatefulSet", "tracker", namespace))
            assert before is not None
            deleted = time.monotonic()
            cluster.write("DELETE", path("StatefulSet", "tracker", namespace))

            def recreated() -> bool:
                again = cluster.get(path("StatefulSet", "tracker", namespace))
                return again is not None and again["metadata"]["uid"] != before["metadata"]["uid"]

            operator.wait_for(recreated, "the tracker StatefulSet re-created", timeout=30.0)
            took = time.monotonic() - deleted
        finally:
            process.stop()
    print(f"\nhand-deleted tracker StatefulSet re-created after {took:.2f} s (resync interval {LONG_RESYNC:g} s)")
    assert took < LONG_RESYNC / 10
