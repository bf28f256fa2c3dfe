"""The operator at scale, against the Kubernetes API emulator the end-to-end tests use.

Applies ``--tenants`` PoliteTenants (500 by default) to a fresh emulator with the real operator
(``polite-operator run --standalone --all-namespaces``) as a subprocess, stands in for the StatefulSet
controllers the emulator lacks (``roll_out`` of the end-to-end tests), and measures:

- the seconds until every tenant is Ready, and each tenant's time from its creation to Ready;
- the operator's requests until then, by verb (the emulator counts them by User-Agent);
- the baseline measured from the same tenant in the same run: the least any operator must write to
  bring it up, one create per object ``render_tenant`` gives, per owned Secret and for the master key
  Secret, plus one status patch; requests and writes per tenant are printed as ratios to it (Events,
  the operator's output to users, are among the requests, and a ratio without them is shown too);
- a full resync of the unchanged tenants (every tenant's drift timer fired once, counted by the
  operator's own ``polite_reconcile_duration_seconds_count{trigger="resync"}``): its requests (reads
  included) and writes, whose goal is zero: the resync compares with the watched state;
- the CPU seconds the operator, and this process (the emulator's thread and the bench's), spent
  until all were Ready: which of them limits the time to Ready.

Prints a table, writes JSON to bench/results/operator_scale.json. Helpers come from the end-to-end
tests (``tests/e2e/test_operator_e2e.py``), so the bench drives the API exactly as they do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from politetenant.operator.model.config import load_operator_config
from politetenant.operator.model.tenant import KeyProviderName, PoliteTenant
from politetenant.operator.render.tenant import render_tenant
from tests.e2e.operator_process import start_operator, wait_for
from tests.e2e.test_operator_e2e import (
    TENANTS,
    WORKLOADS,
    Cluster,
    Operator,
    by_verb,
    ensure_operator_namespace,
    reconciles,
    roll_out,
    tenant_manifest,
    wait_started,
    writes_by_resource,
)
from tests.fakes.kube_emulator import RequestRecord
from tests.fakes.kube_server import running_kube_api
from tests.support import free_port

RESULTS = Path(__file__).resolve().parent / "results"
# How often the bench looks at the API: each look lists every tenant, and the emulator shares this
# process (and its GIL) with the bench, so looking more often slows what is measured.
SWEEP_SECONDS = 0.5
# A tenant rolled out but still not Ready this long after is rolled out again (its workloads' spec
# may have changed since), as the controllers would.
ROLL_OUT_AGAIN_SECONDS = 10.0
# The emulator here has no CloudNativePG: the databases are StatefulSets, and a read of a Cluster (a
# resource the emulator does not serve) costs it a scan of every object before its 404.
BENCH_WORKLOADS = tuple((kind, name) for kind, name in WORKLOADS if kind != "Cluster")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def minimum_per_tenant() -> dict[str, int]:
    """The least a tenant costs: a create per rendered object, per owned Secret and for the master key
    Secret (local keys), and one status patch; no reads at all (an operator that only writes)."""
    tenant = PoliteTenant.model_validate(tenant_manifest("bench-minimum"))
    rendered = render_tenant(tenant, load_operator_config(None, {}))
    master_key = 1 if tenant.spec.keys.provider is KeyProviderName.LOCAL else 0
    creates = len(rendered.objects) + len(rendered.secrets) + master_key
    return {
        "rendered_objects": len(rendered.objects),
        "owned_secrets": len(rendered.secrets),
        "master_key_secrets": master_key,
        "status_patches": 1,
        "requests": creates + 1,
    }


def ready(tenant: dict[str, Any]) -> bool:
    status = tenant.get("status") or {}
    current = status.get("observedGeneration") == (tenant.get("metadata") or {}).get("generation")
    return status.get("phase") == "Ready" and current


def bring_up(cluster: Cluster, operator: Operator, names: list[str], timeout: float) -> dict[str, float]:
    """Create the tenants and roll their workloads out until all are Ready; seconds each took.

    The workloads of a tenant are rolled out once its status names its namespace (its children are
    there by then), not on every sweep: the controllers this stands in for act on changes, and a read
    of every workload of every tenant twice a second would load the emulator more than the operator.
    """
    created: dict[str, float] = {}
    for name in names:
        cluster.create_tenant(name)
        created[name] = time.monotonic()
    applied = time.monotonic() - created[names[0]] if names else 0.0
    print(f"applied {len(names)} tenants in {applied:.1f} s", file=sys.stderr, flush=True)
    took: dict[str, float] = {}
    rolled: dict[str, float] = {}  # tenant -> when its workloads were last rolled out

    def all_ready() -> bool:
        for tenant in cluster.items(TENANTS):  # one list per sweep, not a read per tenant
            name = tenant["metadata"]["name"]
            if name in took or name not in created:
                continue
            namespace = (tenant.get("status") or {}).get("namespace")
            now = time.monotonic()
            lately = name in rolled and now - rolled[name] < ROLL_OUT_AGAIN_SECONDS
            if ready(tenant):
                took[name] = now - created[name]
            elif namespace and not lately:
                roll_out(cluster, namespace, BENCH_WORKLOADS)
                rolled[name] = now
        return len(took) == len(names)

    try:
        what = f"{len(names)} tenants Ready"
        wait_for(all_ready, timeout, interval=SWEEP_SECONDS, what=what, operator=operator.process)
    except AssertionError as exc:  # report how far it got rather than nothing
        print(f"only {len(took)}/{len(names)} Ready: {str(exc)[:200]}", file=sys.stderr)
    return took


def wait_quiet(cluster: Cluster, seconds: float, timeout: float) -> None:
    """Until the operator has written nothing for ``seconds`` (the last status patches landed)."""
    deadline = time.monotonic() + timeout
    mark = cluster.mark()
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = cluster.mark()
        if any(r.write for r in cluster.operator_requests(mark)):
            quiet_since = time.monotonic()
        mark = now
        if time.monotonic() - quiet_since >= seconds:
            return


def full_resync(
    cluster: Cluster, operator: Operator, names: list[str], resync: float
) -> tuple[list[RequestRecord], int]:
    """The operator's requests while every tenant's drift timer fires once (its metrics count them)."""
    before = reconciles(operator, "resync")
    mark = cluster.mark()

    def every_tenant_resynced() -> bool:
        return reconciles(operator, "resync") - before >= len(names)

    try:
        wait_for(
            every_tenant_resynced, 3 * resync + 60, interval=SWEEP_SECONDS, what="every tenant resynced",
            operator=operator.process,
        )  # fmt: skip
    except AssertionError as exc:
        print(f"not every tenant was resynced: {str(exc)[:200]}", file=sys.stderr)
    time.sleep(1.0)  # what the last reconciles would write lands
    return cluster.operator_requests(mark), int(reconciles(operator, "resync") - before)


def requests_by_resource(requests: list[RequestRecord]) -> dict[str, int]:
    """Every request as ``verb resource`` (reads too: ``get secrets``), to see where they go."""
    counted: dict[str, int] = {}
    for request in requests:
        parts = request.path.split("?")[0].strip("/").split("/")
        named = request.verb not in ("create", "list", "watch", "deletecollection")
        resource = parts[-2] if named and len(parts) > 1 else parts[-1]
        if parts[-1] == "status" and len(parts) > 2:
            resource = parts[-3] + "/status"
        key = f"{request.verb} {resource}"
        counted[key] = counted.get(key, 0) + 1
    return dict(sorted(counted.items()))


def run(tenants: int, resync: float, timeout: float) -> dict[str, Any]:
    minimum = minimum_per_tenant()
    workdir = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    started = time.monotonic()
    with running_kube_api() as handle:
        cluster = Cluster(handle.kubeconfig_path, handle)
        ensure_operator_namespace(cluster)
        metrics_port = free_port()
        args = ["--standalone", "--all-namespaces", "--resync-seconds", f"{resync:g}"]
        args += ["--metrics-port", str(metrics_port)]
        process = start_operator(cluster.kubeconfig, extra_args=args, log_path=workdir / "operator.log")
        operator = Operator(process, metrics_port, 0, None)
        try:
            wait_started(cluster, operator)
            names = [f"scale-{i:04d}" for i in range(tenants)]
            mark = cluster.mark()
            begin = time.monotonic()
            cpu_before = cpu_seconds(process.process.pid), cpu_seconds(os.getpid())
            took = bring_up(cluster, operator, names, timeout)
            to_ready_seconds = time.monotonic() - begin
            cpu = cpu_seconds(process.process.pid) - cpu_before[0], cpu_seconds(os.getpid()) - cpu_before[1]
            to_ready = cluster.operator_requests(mark)
            others = len(handle.requests_served(mark)) - len(to_ready)
            wait_quiet(cluster, 2.0, timeout=resync)
            settled = cluster.operator_requests(mark)
            resyncs, resynced = full_resync(cluster, operator, names, resync)
        finally:
            process.stop()
    times = sorted(took.values()) or [float("nan")]
    writes = sum(1 for r in to_ready if r.write)
    # Events (core/v1) are the operator's output to users, one per kind of change: counted among the
    # requests, and shown apart so a ratio without them can be read too.
    events = sum(1 for r in to_ready if r.verb == "create" and r.path.endswith("/events"))
    settled_writes = sum(1 for r in settled if r.write)
    resync_writes = [f"{r.verb} {r.path}" for r in resyncs if r.write]
    return {
        "tenants": tenants,
        "tenants_ready": len(took),
        "resync_seconds": resync,
        "seconds_to_all_ready": round(to_ready_seconds, 2),
        "seconds_to_ready_per_tenant": {
            "median": round(statistics.median(times), 2),
            "p95": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2),
            "max": round(times[-1], 2),
        },
        "requests_to_ready": len(to_ready),
        "requests_to_ready_by_verb": by_verb(to_ready),
        "writes_to_ready_by_resource": writes_by_resource(to_ready),
        "requests_to_ready_by_resource": requests_by_resource(to_ready),
        "first_tenant_requests": [f"{r.verb} {r.path}" for r in to_ready if "scale-0000" in r.path],
        "events_per_tenant": round(events / tenants, 2),
        "requests_per_tenant": round(len(to_ready) / tenants, 2),
        "requests_per_tenant_by_verb": {verb: round(count / tenants, 2) for verb, count in by_verb(to_ready).items()},
        "bench_requests_to_ready": others,  # the bench's own: its tenant lists and the stand-in controllers
        "cpu_seconds_to_ready": {"operator": round(cpu[0], 1), "emulator_and_bench": round(cpu[1], 1)},
        "writes_per_tenant": round(writes / tenants, 2),
        # the status patches that land just after the last tenant showed Ready, counted too
        "writes_per_tenant_settled": round(settled_writes / tenants, 2),
        "minimum_per_tenant": minimum,
        "ratio_requests_to_minimum": round(len(to_ready) / tenants / minimum["requests"], 2),
        "ratio_requests_without_events_to_minimum": round((len(to_ready) - events) / tenants / minimum["requests"], 2),
        "ratio_writes_to_minimum": round(settled_writes / tenants / minimum["requests"], 2),
        "resync": {
            "tenants_resynced": resynced,
            "requests": len(resyncs),
            "requests_by_verb": by_verb(resyncs),
            "requests_per_tenant": round(len(resyncs) / tenants, 2),
            "writes": len(resync_writes),
            "first_writes": resync_writes[:20],
        },
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def table(result: dict[str, Any]) -> str:
    minimum = result["minimum_per_tenant"]
    per = result["seconds_to_ready_per_tenant"]
    resync = result["resync"]
    cpu = result["cpu_seconds_to_ready"]
    rows = [
        ("tenants (Ready)", f"{result['tenants']} ({result['tenants_ready']})"),
        ("operator --resync-seconds", f"{result['resync_seconds']:g}"),
        ("seconds to all Ready", f"{result['seconds_to_all_ready']:.1f}"),
        ("seconds to Ready per tenant", f"median {per['median']:.1f}, p95 {per['p95']:.1f}, max {per['max']:.1f}"),
        ("requests to Ready by verb", json.dumps(result["requests_to_ready_by_verb"])),
        (
            "requests per tenant",
            f"{result['requests_per_tenant']:.1f} {json.dumps(result['requests_per_tenant_by_verb'])}",
        ),
        ("writes per tenant (settled)", f"{result['writes_per_tenant_settled']:.1f}"),
        (
            "minimum per tenant",
            f"{minimum['requests']} ({minimum['rendered_objects']} objects + {minimum['owned_secrets']} "
            f"owned Secrets + {minimum['master_key_secrets']} master key + 1 status patch)",
        ),
        (
            "ratio requests / minimum",
            f"{result['ratio_requests_to_minimum']:.2f}x ({result['ratio_requests_without_events_to_minimum']:.2f}x "
            f"without the {result['events_per_tenant']:g} Events per tenant)",
        ),
        ("ratio writes / minimum", f"{result['ratio_writes_to_minimum']:.2f}x"),
        (
            "full resync of unchanged tenants",
            f"{resync['tenants_resynced']}/{result['tenants']} resynced, {resync['requests']} requests "
            f"({resync['requests_per_tenant']:.1f}/tenant) {json.dumps(resync['requests_by_verb'])}",
        ),
        ("writes during the resync (goal 0)", str(resync["writes"])),
        (
            "CPU seconds to all Ready",
            f"operator {cpu['operator']:.0f}, emulator + bench {cpu['emulator_and_bench']:.0f} "
            f"(bench's own requests: {result['bench_requests_to_ready']})",
        ),
        ("wall seconds", f"{result['wall_seconds']:.0f}"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tenants", type=int, default=500, help="tenants to apply at once")
    parser.add_argument("--resync-seconds", type=float, default=30.0, help="the operator's drift timer interval")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds allowed to reach all Ready")
    args = parser.parse_args(argv)
    result = run(args.tenants, args.resync_seconds, args.timeout)
    print(table(result), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "operator_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    if result["resync"]["writes"]:
        print(f"first resync writes: {result['resync']['first_writes']}", file=sys.stderr)


if __name__ == "__main__":
    main()
