"""The tenant's status read the way GitOps tools read it: kstatus (``tests/support_kstatus.py``, a
transcription of sigs.k8s.io/cli-utils pkg/kstatus/status) over the statuses the operator writes
through a tenant's life, and the Ready printer column ``kubectl get`` shows.

The statuses come from the real reconcile and deletion steps over the in-memory API of
``test_reconcile`` (no kopf, no cluster); the printer column from the API emulator's Tables and the
pinned ``kubectl``.
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from politetenant.operator.kube.client import KubeError
from politetenant.operator.model.config import OperatorConfig
from politetenant.operator.model.crd import crd_manifest
from politetenant.operator.model.reasons import Reason
from politetenant.operator.model.status import PARTS, Facts, failed, passed, ready, status_body, status_patch
from politetenant.operator.runtime.database_engine import CNPG_CRD
from politetenant.operator.runtime.deletion import offboard
from politetenant.operator.runtime.reconcile import Runtime
from tests.fakes.kube_server import running_kube_api
from tests.support_kstatus import compute_kstatus
from tests.unit.operator.test_reconcile import (
    FakeKeys,
    FakeKube,
    conditions,
    make_available,
    make_runtime,
    run,
    tenant_body,
)

NOW = "2030-05-01T12:00:00Z"
TENANTS = "/apis/polite.io/v1alpha1/politetenants"
KUBECTL = Path(__file__).resolve().parents[3] / ".tools" / "kubectl"


def kstatus(body: dict[str, Any]) -> str:
    """kstatus's verdict, after checking the rules every status must keep: Reconciling and Stalled
    never both True, and Reconciling False exactly when Ready is True or the tenant is Stalled."""
    found = conditions(body["status"])
    reconciling, stalled, ready_ = found["Reconciling"][0], found["Stalled"][0], found["Ready"][0]
    assert (reconciling, stalled) != ("True", "True")
    assert (reconciling == "False") == (ready_ == "True" or stalled == "True"), found
    assert all(c["observedGeneration"] == body["status"]["observedGeneration"] for c in body["status"]["conditions"])
    return compute_kstatus(body)[0]


# -- a tenant's life, as kstatus reads it -------------------------------------------------------------


async def test_first_reconcile_while_rolling_out_is_in_progress_with_ready_unknown(rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)

    assert body["status"]["observedGeneration"] == 1
    assert conditions(body["status"])["Ready"] == ("Unknown", "DatabaseStarting")
    assert conditions(body["status"])["Reconciling"] == ("True", "Progressing")
    assert conditions(body["status"])["Stalled"] == ("False", "Progressing")
    assert kstatus(body) == "InProgress"
    assert compute_kstatus(body)[1].startswith("DatabaseReady: StatefulSet postgres: 0 of 1 replicas ready")


async def test_a_ready_tenant_is_current(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    make_available(kube)
    await run(body, rt)

    assert conditions(body["status"])["Ready"] == ("True", "Ready")
    assert conditions(body["status"])["Reconciling"] == ("False", "Ready")
    assert conditions(body["status"])["Stalled"] == ("False", "Ready")
    assert kstatus(body) == "Current"
    assert compute_kstatus(body) == ("Current", "Resource is Ready")


async def test_an_edited_spec_is_in_progress_until_its_generation_is_rolled_out(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    make_available(kube)
    await run(body, rt)

    body["spec"]["tracker"] = {"replicas": 3}
    body["metadata"]["generation"] = 2  # the API server's doing; the status still describes 1
    assert compute_kstatus(body) == ("InProgress", "PoliteTenant generation is 2, but latest observed generation is 1")

    await run(body, rt)  # the first reconcile of generation 2: applied, the StatefulSet not rolled yet
    assert body["status"]["observedGeneration"] == 2
    assert conditions(body["status"])["Ready"] == ("Unknown", "TrackerStarting")
    assert conditions(body["status"])["Reconciling"] == ("True", "Progressing")
    assert kstatus(body) == "InProgress"

    make_available(kube)
    await run(body, rt)
    assert kstatus(body) == "Current"


async def test_a_changed_database_statefulset_is_not_ready_before_its_rollout(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    make_available(kube)
    await run(body, rt)
    database = kube.find("StatefulSet", "postgres")
    assert database is not None
    database["metadata"]["generation"] += 1  # its spec changed; its controller has not looked yet

    await run(body, rt)
    assert conditions(body["status"])["DatabaseReady"] == ("False", "DatabaseStarting")
    assert kstatus(body) == "InProgress"


async def test_an_invalid_spec_is_failed(rt: Runtime) -> None:
    body = tenant_body(keys={"provider": "vault", "vault": {}})  # no address, and the operator has none
    await run(body, rt)

    assert conditions(body["status"])["Stalled"] == ("True", "InvalidSpec")
    assert conditions(body["status"])["Reconciling"] == ("False", "InvalidSpec")
    assert kstatus(body) == "Failed"


async def test_a_spec_the_model_cannot_read_is_failed(rt: Runtime) -> None:
    body = tenant_body(tracker={"replicas": "many"})
    await run(body, rt)

    assert conditions(body["status"])["Ready"] == ("False", "InvalidSpec")
    assert kstatus(body) == "Failed"


async def test_a_region_not_served_is_failed(kube: FakeKube, keys: FakeKeys) -> None:
    rt = make_runtime(kube, keys, OperatorConfig(served_regions=("us-east",)))
    body = tenant_body(region="eu-ireland")
    await run(body, rt)

    assert conditions(body["status"])["Stalled"] == ("True", "RegionNotServed")
    assert body["status"]["phase"] == "Pending"
    assert kstatus(body) == "Failed"
    assert "us-east" in compute_kstatus(body)[1]


@pytest.mark.parametrize("engine_change", [False, True])
async def test_a_database_engine_that_cannot_be_had_is_failed(kube: FakeKube, rt: Runtime, engine_change: bool) -> None:
    body = tenant_body(database={"engine": "cnpg"}) if not engine_change else tenant_body()
    await run(body, rt)
    if engine_change:  # provisioned on a StatefulSet; the spec now names CloudNativePG
        kube.seed(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": CNPG_CRD},
            }
        )
        body["spec"]["database"] = {"engine": "cnpg"}
        body["metadata"]["generation"] = 2
        await run(body, rt)

    reason = "DatabaseEngineChangeRefused" if engine_change else "DatabaseEngineUnavailable"
    assert conditions(body["status"])["Stalled"] == ("True", reason)
    assert kstatus(body) == "Failed"


async def test_an_unreachable_vault_is_in_progress_retrying_with_ready_false(keys: FakeKeys, rt: Runtime) -> None:
    keys.reachable = False
    body = tenant_body()
    await run(body, rt)

    assert conditions(body["status"])["Ready"] == ("False", "KeysUnavailable")
    assert conditions(body["status"])["Reconciling"] == ("True", "ProgressingWithRetry")
    assert conditions(body["status"])["Stalled"] == ("False", "ProgressingWithRetry")
    assert kstatus(body) == "InProgress"


async def test_a_vault_that_refuses_is_failed(keys: FakeKeys, rt: Runtime) -> None:
    keys.refusing = True
    body = tenant_body()
    await run(body, rt)

    assert conditions(body["status"])["Stalled"] == ("True", "VaultRefused")
    assert kstatus(body) == "Failed"


async def test_a_transient_api_error_is_in_progress_retrying(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    make_available(kube)
    await run(body, rt)
    kube.failures[("get", "CustomResourceDefinition", CNPG_CRD)] = KubeError(0, "Unreachable", "GET: timeout")

    await run(body, rt)
    assert conditions(body["status"])["Ready"] == ("False", "ApiError")
    assert conditions(body["status"])["Reconciling"] == ("True", "ProgressingWithRetry")
    assert kstatus(body) == "InProgress"


async def test_a_tenant_being_deleted_is_terminating_and_reconciling(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body(deletionPolicy="Delete")
    await run(body, rt)
    make_available(kube)
    await run(body, rt)
    body["metadata"]["deletionTimestamp"] = "2030-05-02T00:00:00Z"
    kube.namespaces_linger = True

    outcome = await offboard(body, rt)
    assert outcome.status is not None
    body["status"] = outcome.status
    assert conditions(body["status"])["Reconciling"] == ("True", "Deleting")
    assert kstatus(body) == "Terminating"


async def test_a_legal_hold_blocking_deletion_is_stalled(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body(legalHold=True)
    await run(body, rt)
    body["metadata"]["deletionTimestamp"] = "2030-05-02T00:00:00Z"

    outcome = await offboard(body, rt)
    assert outcome.status is not None
    body["status"] = outcome.status
    assert conditions(body["status"])["Stalled"] == ("True", "LegalHold")
    assert kstatus(body) == "Terminating"  # kstatus looks at the deletionTimestamp first


# -- the derivation itself ------------------------------------------------------------------------------


def test_ready_is_false_for_a_failure_even_behind_a_part_still_rolling_out() -> None:
    checks = [
        failed("TrackerReady", Reason.TRACKER_STARTING, "0 of 1"),
        failed("RetentionReady", Reason.API_ERROR, "forbidden"),
    ]
    assert ready(checks) == failed("Ready", Reason.API_ERROR, "RetentionReady: forbidden")


def test_ready_is_unknown_while_parts_are_not_judged_yet() -> None:
    summary = ready([passed("Placement", Reason.REGION_SERVED)])
    assert (summary.status, summary.reason) == ("Unknown", Reason.PROVISIONING)


def test_reconciling_and_stalled_passed_in_are_recomputed_not_kept() -> None:
    stale = [failed("Stalled", Reason.INVALID_SPEC), passed("Reconciling", Reason.PROGRESSING)]
    checks = [passed("Placement", Reason.REGION_SERVED), *stale]
    body = status_body(None, checks, Facts(), generation=1, now=NOW)
    found = {c["type"]: (c["status"], c["reason"]) for c in body["conditions"]}
    assert found["Stalled"] == ("False", "Progressing")
    assert found["Reconciling"] == ("True", "Progressing")


def test_the_same_checks_later_give_the_same_status_so_nothing_is_written() -> None:
    rolling = [failed("TrackerReady", Reason.TRACKER_STARTING, "0 of 1")]
    first = status_body(None, rolling, Facts(), generation=1, now=NOW)
    again = status_body(first, rolling, Facts(), generation=1, now="2030-05-01T12:05:00Z")
    assert again == first


def test_a_step_judging_from_an_older_copy_writes_nothing_when_no_status_changed() -> None:
    rolling = [failed("TrackerReady", Reason.TRACKER_STARTING, "0 of 1")]
    older = status_body(None, rolling, Facts(), generation=1, now=NOW)
    stored = status_body(None, rolling, Facts(), generation=1, now="2030-05-01T12:00:07Z")  # written meanwhile
    assert status_patch(stored, older) == {}

    done = [passed(part, Reason.READY) for part in PARTS]
    patch = status_patch(stored, status_body(older, done, Facts(), generation=1, now="2030-05-01T12:09:00Z"))
    times = {c["type"]: c["lastTransitionTime"] for c in patch["conditions"]}
    assert times["Ready"] == "2030-05-01T12:09:00Z"  # its status changed
    assert times["Stalled"] == "2030-05-01T12:00:07Z"  # False before and after: the stored time stays


# -- compute_kstatus follows cli-utils, not our operator ------------------------------------------------


def resource(generation: int | None = 1, observed: int | None = 1, *conditions_: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x"} if generation is None else {"name": "x", "generation": generation}
    status: dict[str, Any] = {"conditions": list(conditions_)}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta, "status": status}


def cond(type_: str, status: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": "R", "message": message}


def test_kstatus_deletion_comes_before_everything() -> None:
    obj = resource(2, 1, cond("Stalled", "True"))
    obj["metadata"]["deletionTimestamp"] = NOW
    assert compute_kstatus(obj) == ("Terminating", "Resource scheduled for deletion")


def test_kstatus_generation_is_compared_only_when_both_are_there() -> None:
    assert compute_kstatus(resource(3, 2))[0] == "InProgress"
    assert compute_kstatus(resource(3, 4))[0] == "InProgress"  # not equal, in either direction
    assert compute_kstatus(resource(3, None)) == ("Current", "Resource is current")
    assert compute_kstatus(resource(None, 2)) == ("Current", "Resource is current")


def test_kstatus_takes_the_first_of_reconciling_and_stalled_in_list_order() -> None:
    both = (cond("Stalled", "True", "stuck"), cond("Reconciling", "True", "busy"))
    assert compute_kstatus(resource(1, 1, *both)) == ("Failed", "stuck")
    assert compute_kstatus(resource(1, 1, *reversed(both))) == ("InProgress", "busy")


def test_kstatus_reads_ready_last() -> None:
    assert compute_kstatus(resource(1, 1, cond("Ready", "False", "no"))) == ("InProgress", "no")
    assert compute_kstatus(resource(1, 1, cond("Ready", "Unknown", "?"))) == ("InProgress", "?")
    assert compute_kstatus(resource(1, 1, cond("Ready", "Maybe"), cond("Ready", "True"))) == (
        "Current",
        "Resource is Ready",
    )
    assert compute_kstatus(resource(1, 1, cond("Reconciling", "False"), cond("Stalled", "False")))[0] == "Current"


def test_kstatus_refuses_built_in_kinds_and_wrong_types() -> None:
    with pytest.raises(ValueError, match="built-in"):
        compute_kstatus({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {}})
    with pytest.raises(ValueError, match="not an integer"):
        compute_kstatus(resource(1, "1"))  # type: ignore[arg-type]


# -- the Ready printer column -------------------------------------------------------------------------


def test_the_ready_column_reads_the_ready_condition() -> None:
    columns = crd_manifest()["spec"]["versions"][0]["additionalPrinterColumns"]
    ready_column = next(c for c in columns if c["name"] == "Ready")
    assert ready_column["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert [c["name"] for c in columns].index("Ready") == [c["name"] for c in columns].index("Phase") - 1


async def tenant_statuses(kube: FakeKube, keys: FakeKeys) -> dict[str, dict[str, Any]]:
    """A rolling-out and a ready tenant's status, as the operator writes them."""
    rt = make_runtime(kube, keys)
    body = tenant_body()
    await run(body, rt)
    rolling = copy.deepcopy(body["status"])
    make_available(kube)
    await run(body, rt)
    return {"rolling": rolling, "ready": body["status"]}


def store_tenants(kube_api: Any, statuses: dict[str, dict[str, Any]]) -> None:
    """Create one tenant per status and write it through the status subresource (schema-checked)."""
    for name, status in statuses.items():
        created = kube_api.request("POST", TENANTS, {**tenant_body(name), "metadata": {"name": name}})
        assert created.status == 201, created.body
        written = kube_api.request(
            "PATCH", f"{TENANTS}/{name}/status", {"status": status}, content_type="application/merge-patch+json"
        )
        assert written.status == 200, written.body


async def test_a_table_of_tenants_shows_ready_unknown_then_true(kube: FakeKube, keys: FakeKeys) -> None:
    statuses = await tenant_statuses(kube, keys)
    with running_kube_api(crds=(crd_manifest(),)) as api:
        store_tenants(api, statuses)
        table = api.request("GET", TENANTS, accept="application/json;as=Table;v=v1;g=meta.k8s.io").body

    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Region", "Mode", "Ready", "Phase", "Keys", "Age"]
    cells = {row["cells"][0]: row["cells"][3:5] for row in table["rows"]}
    assert cells == {"rolling": ["Unknown", "Provisioning"], "ready": ["True", "Ready"]}


@pytest.mark.slow
async def test_kubectl_get_shows_the_ready_column(kube: FakeKube, keys: FakeKeys) -> None:
    if not (KUBECTL.is_file() and os.access(KUBECTL, os.X_OK)):
        pytest.fail(f"{KUBECTL} is missing: run `make venv` (scripts/fetch-kube-tools.sh .tools)", pytrace=False)
    statuses = await tenant_statuses(kube, keys)
    with running_kube_api(crds=(crd_manifest(),)) as api:
        store_tenants(api, statuses)
        env = {**os.environ, "KUBECONFIG": str(api.kubeconfig_path), "HOME": str(api.kubeconfig_path.parent)}
        listed = subprocess.run(
            [str(KUBECTL), "get", "ptenant"], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NAME", "REGION", "MODE", "READY", "PHASE", "KEYS", "AGE"]
    assert {row[0]: row[3] for row in rows[1:]} == {"ready": "True", "rolling": "Unknown"}
