"""Deleting a tenant: a legal hold blocks it visibly, Retain keeps and labels, Delete removes the
namespace, then shreds the keys, then lets the tenant go."""

from __future__ import annotations

from typing import Any

from politetenant.operator.model import names
from politetenant.operator.model.config import OperatorConfig
from politetenant.operator.runtime.deletion import offboard
from politetenant.operator.runtime.reconcile import ORPHANED_LABEL, Outcome, Runtime
from tests.unit.operator.test_reconcile import (
    FakeKeys,
    FakeKube,
    conditions,
    make_runtime,
    run,
    tenant_body,
)


async def provisioned(rt: Runtime, **spec: Any) -> dict[str, Any]:
    body = tenant_body(**spec)
    await run(body, rt)
    body["metadata"]["deletionTimestamp"] = "2030-05-02T00:00:00Z"
    body["metadata"]["finalizers"] = ["polite.io/finalizer"]
    return body


async def attempt(body: dict[str, Any], rt: Runtime) -> Outcome:
    outcome = await offboard(body, rt)
    if outcome.status is not None:
        body["status"] = outcome.status
    return outcome


async def test_a_legal_hold_blocks_deletion_visibly(kube: FakeKube, keys: FakeKeys, rt: Runtime) -> None:
    body = await provisioned(rt, legalHold=True)
    writes, events = len(kube.writes), len(kube.events)

    outcome = await attempt(body, rt)

    assert not outcome.done and outcome.retry and outcome.delay
    assert outcome.status is not None
    assert outcome.status["phase"] == "Deleting"
    assert conditions(outcome.status)["Ready"] == ("False", "LegalHold")
    assert conditions(outcome.status)["RetentionReady"] == ("True", "LegalHold")
    assert [e["reason"] for e in kube.events[events:]] == ["LegalHold"]
    assert kube.events[-1]["type"] == "Warning"
    assert kube.writes[writes:] == []
    assert keys.called("destroy") == 0

    await attempt(body, rt)  # still held: no second Event
    assert [e["reason"] for e in kube.events[events:]] == ["LegalHold"]


async def test_the_alerts_metric_follows_the_status_through_reconcile_and_a_held_deletion(
    kube: FakeKube, keys: FakeKeys, rt: Runtime
) -> None:
    def shown(condition: str) -> set[tuple[str, str]]:
        """(status, reason) of the condition as polite_tenant_condition shows it now (what the alerts read)."""
        return {
            (sample.labels["status"], sample.labels["reason"])
            for metric in rt.metrics.conditions.collect()
            for sample in metric.samples
            if sample.labels["tenant"] == "acme" and sample.labels["type"] == condition and sample.value == 1
        }

    body = await provisioned(rt, legalHold=True)
    assert shown("RetentionReady") == {("True", "LegalHold")}  # PoliteTenantLegalHold
    assert len(shown("Ready")) == 1  # one series per condition: the one the status holds now
    await attempt(body, rt)  # deletion held: Ready False, LegalHold (PoliteTenantNotReady leaves it out)
    assert shown("Ready") == {("False", "LegalHold")}


async def test_releasing_the_hold_lets_a_retained_tenant_go_with_its_data_kept(
    kube: FakeKube, keys: FakeKeys, rt: Runtime
) -> None:
    body = await provisioned(rt, legalHold=True)
    await attempt(body, rt)
    body["spec"]["legalHold"] = False

    outcome = await attempt(body, rt)

    assert outcome.done
    namespace = kube.find("Namespace", "polite-acme")
    assert namespace is not None and namespace["metadata"]["labels"][ORPHANED_LABEL] == "true"
    assert kube.find("Secret", names.KEYS_SECRET) is not None
    assert kube.find("StatefulSet", "postgres") is not None
    assert keys.called("destroy") == 0
    orphaned = [e for e in kube.events if e["reason"] == "Orphaned"]
    assert len(orphaned) == 1 and "polite-acme" in orphaned[0]["message"]


async def test_a_hold_placed_on_a_delete_tenant_during_deletion_wins_then_the_policy_follows(
    kube: FakeKube, keys: FakeKeys, rt: Runtime
) -> None:
    body = await provisioned(rt, deletionPolicy="Delete")
    body["spec"]["legalHold"] = True  # placed by an SRE after the delete began, policy untouched

    held = await attempt(body, rt)
    assert not held.done and held.status is not None
    assert conditions(held.status)["Ready"] == ("False", "LegalHold")
    assert ("delete", "Namespace polite-acme") not in kube.writes
    assert keys.called("destroy") == 0

    body["spec"]["legalHold"] = False
    await attempt(body, rt)
    assert ("delete", "Namespace polite-acme") in kube.writes
    kube.finish_deletions()
    assert (await attempt(body, rt)).done
    assert keys.calls[-1] == ("destroy", "polite-acme")


async def test_retain_is_the_default(kube: FakeKube, keys: FakeKeys, rt: Runtime) -> None:
    body = await provisioned(rt)
    outcome = await attempt(body, rt)
    assert outcome.done
    assert kube.find("Namespace", "polite-acme") is not None
    assert ("delete", "Namespace polite-acme") not in kube.writes
    assert keys.called("destroy") == 0


async def test_delete_removes_the_namespace_then_shreds_the_keys_then_releases(
    kube: FakeKube, keys: FakeKeys, rt: Runtime
) -> None:
    body = await provisioned(rt, deletionPolicy="Delete")
    kube.namespaces_linger = True

    first = await attempt(body, rt)
    assert not first.done
    assert ("delete", "Namespace polite-acme") in kube.writes
    assert keys.called("destroy") == 0  # never while the namespace (and its pods) are still there
    assert first.status is not None and first.status["phase"] == "Deleting"
    assert conditions(first.status)["Ready"] == ("False", "NamespaceDeleting")

    waiting = await attempt(body, rt)
    assert not waiting.done
    assert kube.writes.count(("delete", "Namespace polite-acme")) == 1

    kube.finish_deletions()
    done = await attempt(body, rt)
    assert done.done
    assert keys.calls[-1] == ("destroy", "polite-acme")
    reasons = [e["reason"] for e in kube.events]
    assert reasons.index("NamespaceDeleting") < reasons.index("CryptoShredded")
    assert "can no longer be read" in next(e["message"] for e in kube.events if e["reason"] == "CryptoShredded")


async def test_shredding_waits_for_an_unreachable_vault(kube: FakeKube, keys: FakeKeys, rt: Runtime) -> None:
    body = await provisioned(rt, deletionPolicy="Delete")
    await attempt(body, rt)  # the namespace goes at once in the fake
    keys.reachable = False

    outcome = await attempt(body, rt)
    assert not outcome.done and outcome.retry
    assert outcome.status is not None
    assert conditions(outcome.status)["KeysReady"] == ("False", "KeysUnavailable")
    assert "CryptoShredded" not in [e["reason"] for e in kube.events]

    keys.reachable = True
    assert (await attempt(body, rt)).done
    assert "CryptoShredded" in [e["reason"] for e in kube.events]


async def test_a_tenant_of_a_region_not_served_here_is_let_go_untouched(kube: FakeKube, keys: FakeKeys) -> None:
    rt = make_runtime(kube, keys, OperatorConfig(served_regions=("us-east",)))
    body = tenant_body(deletionPolicy="Delete")
    body["metadata"]["deletionTimestamp"] = "2030-05-02T00:00:00Z"
    outcome = await attempt(body, rt)
    assert outcome.done
    assert kube.writes == [] and keys.calls == []
