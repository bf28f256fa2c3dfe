"""What Flux says about one PoliteTenant through its life, from the statuses the operator writes.

Flux's kustomize-controller waits on applied objects with kstatus (``tests/support_kstatus.py``, a
transcription of sigs.k8s.io/cli-utils pkg/kstatus/status), or, for a kind listed in
``spec.healthCheckExprs`` (Flux 2.5+), with CEL expressions evaluated as fluxcd/pkg
runtime/cel ``StatusEvaluator.Evaluate`` does: ``status.observedGeneration`` present and not
``metadata.generation`` -> InProgress; then ``inProgress``, ``failed``, ``current`` in that order, the
first true one wins; none -> InProgress; an evaluation error -> Unknown (cli-utils' generic status
reader), and Flux keeps waiting.

One tenant goes through the real reconcile and deletion steps over the in-memory API of the
reconcile tests: created, generation observed and rolling out, ready, spec changed, its rollout,
stalled, fixed, under legal hold, terminating with the hold blocking. At each step both readings are
asserted. They agree everywhere but two places, which is why the README gives the expressions: a
tenant the operator has not written a status for yet is Current to plain kstatus (no conditions, no
generation to compare), so Flux would pass its health check before anything exists; and a terminating
tenant, which CEL cannot call Terminating, reads InProgress.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import cel
import pytest
import yaml

from politetenant.operator.runtime.database_engine import CNPG_CRD
from politetenant.operator.runtime.deletion import offboard
from politetenant.operator.runtime.reconcile import Runtime
from tests.support_kstatus import CURRENT, FAILED, IN_PROGRESS, TERMINATING, compute_kstatus
from tests.unit.operator.test_reconcile import FakeKube, conditions, make_available, run, tenant_body

UNKNOWN = "Unknown"

# The README's Kustomization, verbatim: the expressions the tests evaluate are the ones users copy.
README_KUSTOMIZATION = """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: tenants
  namespace: flux-system
spec:
  interval: 10m
  timeout: 15m
  path: ./tenants
  prune: true
  wait: true
  sourceRef:
    kind: GitRepository
    name: platform
  healthCheckExprs:
    - apiVersion: polite.io/v1alpha1
      kind: PoliteTenant
      inProgress: >-
        has(metadata.deletionTimestamp) || !has(status.observedGeneration) ||
        (has(status.conditions) && status.conditions.exists(c, c.type == 'Reconciling' && c.status == 'True'))
      failed: >-
        has(status.conditions) && status.conditions.exists(c, c.type == 'Stalled' && c.status == 'True')
      current: >-
        has(status.conditions) && status.conditions.exists(c, c.type == 'Ready' && c.status == 'True'
        && c.observedGeneration == metadata.generation)
"""
EXPRS: dict[str, str] = yaml.safe_load(README_KUSTOMIZATION)["spec"]["healthCheckExprs"][0]


def flux_cel_status(obj: Mapping[str, Any], exprs: Mapping[str, str] = EXPRS) -> str:
    """Flux's verdict on ``obj`` with healthCheckExprs (fluxcd/pkg runtime/cel StatusEvaluator)."""
    observed = (obj.get("status") or {}).get("observedGeneration")
    generation = (obj.get("metadata") or {}).get("generation")
    if observed is not None and generation is not None and observed != generation:
        return IN_PROGRESS
    for key, verdict in (("inProgress", IN_PROGRESS), ("failed", FAILED), ("current", CURRENT)):
        if not exprs.get(key):
            continue
        try:
            result = cel.evaluate(exprs[key], dict(obj))
        except RuntimeError:  # an unbound field, as cel-go's "no such attribute"
            return UNKNOWN
        if result is True:
            return verdict
    return IN_PROGRESS


async def life(kube: FakeKube, rt: Runtime) -> list[tuple[str, dict[str, Any]]]:
    """The tenant at each step of its life, as the API server would hand it to Flux."""
    steps: list[tuple[str, dict[str, Any]]] = []

    def seen(step: str) -> None:
        steps.append((step, copy.deepcopy(body)))

    def edit(**spec: Any) -> None:
        body["spec"].update(spec)
        body["metadata"]["generation"] += 1

    body = tenant_body()
    seen("created, no status yet")
    await run(body, rt)
    seen("generation observed, rolling out")
    make_available(kube)
    await run(body, rt)
    seen("ready")

    edit(tracking={"defaultMode": "aggregate"})
    seen("spec changed, not yet observed")
    await run(body, rt)
    seen("spec change observed")
    make_available(kube)
    await run(body, rt)
    seen("ready again")

    kube.seed(
        {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": CNPG_CRD}}
    )
    edit(database={"engine": "cnpg"})  # provisioned on a StatefulSet: the engine change is refused
    await run(body, rt)
    seen("stalled: engine change refused")
    edit(database={"engine": "statefulset"})
    await run(body, rt)
    make_available(kube)
    await run(body, rt)
    seen("fixed")

    edit(legalHold=True)
    await run(body, rt)
    make_available(kube)
    await run(body, rt)
    seen("under legal hold")

    body["metadata"]["deletionTimestamp"] = "2030-05-02T00:00:00Z"
    seen("terminating, not yet seen by the operator")
    outcome = await offboard(body, rt)
    assert outcome.status is not None and not outcome.done
    body["status"] = outcome.status
    seen("terminating, deletion held by the legal hold")
    return steps


# step -> (kstatus, Flux with the README's healthCheckExprs)
EXPECTED = {
    "created, no status yet": (CURRENT, UNKNOWN),
    "generation observed, rolling out": (IN_PROGRESS, IN_PROGRESS),
    "ready": (CURRENT, CURRENT),
    "spec changed, not yet observed": (IN_PROGRESS, IN_PROGRESS),
    "spec change observed": (IN_PROGRESS, IN_PROGRESS),
    "ready again": (CURRENT, CURRENT),
    "stalled: engine change refused": (FAILED, FAILED),
    "fixed": (CURRENT, CURRENT),
    "under legal hold": (CURRENT, CURRENT),
    "terminating, not yet seen by the operator": (TERMINATING, IN_PROGRESS),
    "terminating, deletion held by the legal hold": (TERMINATING, IN_PROGRESS),
}


@pytest.fixture
async def steps(kube: FakeKube, rt: Runtime) -> dict[str, dict[str, Any]]:
    return dict(await life(kube, rt))


async def test_the_life_walks_every_step_flux_is_asked_about(kube: FakeKube, rt: Runtime) -> None:
    assert [step for step, _ in await life(kube, rt)] == list(EXPECTED)


@pytest.mark.parametrize("step", list(EXPECTED))
def test_flux_reads_each_step_of_a_tenants_life(steps: dict[str, dict[str, Any]], step: str) -> None:
    assert (compute_kstatus(steps[step])[0], flux_cel_status(steps[step])) == EXPECTED[step]


def test_the_steps_are_the_states_they_claim(steps: dict[str, dict[str, Any]]) -> None:
    """Guards the walk itself: each step's status is the one its name says the operator wrote."""
    assert "status" not in steps["created, no status yet"]
    assert conditions(steps["spec change observed"]["status"])["Reconciling"][0] == "True"
    assert conditions(steps["stalled: engine change refused"]["status"])["Stalled"] == (
        "True",
        "DatabaseEngineChangeRefused",
    )
    assert conditions(steps["under legal hold"]["status"])["RetentionReady"] == ("True", "LegalHold")
    held = steps["terminating, deletion held by the legal hold"]["status"]
    assert held["phase"] == "Deleting" and conditions(held)["Stalled"] == ("True", "LegalHold")


def test_kstatus_says_why_a_stalled_tenant_failed(steps: dict[str, dict[str, Any]]) -> None:
    verdict, message = compute_kstatus(steps["stalled: engine change refused"])
    assert verdict == FAILED and "DatabaseReady" in message


def test_a_generation_ahead_of_the_status_is_in_progress_before_any_expression_runs() -> None:
    body = tenant_body()
    body["metadata"]["generation"] = 3
    body["status"] = {"observedGeneration": 2, "conditions": [{"type": "Stalled", "status": "True"}]}
    assert flux_cel_status(body) == IN_PROGRESS
    assert compute_kstatus(body)[0] == IN_PROGRESS


def test_ready_for_an_older_generation_is_not_current_to_the_expressions() -> None:
    """The Ready condition carries its own observedGeneration: a status whose top-level generation was
    bumped without its conditions is not taken for the new spec's readiness."""
    body = tenant_body()
    ready = {"type": "Ready", "status": "True", "reason": "Ready", "message": "", "observedGeneration": 0}
    body["status"] = {"observedGeneration": 1, "conditions": [ready]}
    assert flux_cel_status(body) == IN_PROGRESS
