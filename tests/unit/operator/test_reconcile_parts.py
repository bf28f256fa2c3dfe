"""The pure parts reconcile is built from: the apply decision, status and phase, API paths and Events,
generated Secret values, and the ``run`` command's refusal of a bad configuration."""

from __future__ import annotations

import re
from typing import Any

import pytest

from politetenant.operator import cli
from politetenant.operator.kube.apply import Create, Patch, Unchanged, contains, outlives_tenant, plan, with_owner
from politetenant.operator.kube.client import ObjectRef, event_body, object_path
from politetenant.operator.kube.secrets import TOKEN_PATTERN, generated_values
from politetenant.operator.model import names
from politetenant.operator.model.config import load_operator_config
from politetenant.operator.model.reasons import NEEDS_ACTION, EventType, Reason
from politetenant.operator.model.status import (
    Facts,
    conditions,
    failed,
    passed,
    phase,
    ready,
    status_body,
    status_patch,
)
from politetenant.operator.model.tenant import PoliteTenant
from politetenant.operator.model.tenant_status import CONDITION_REASON_PATTERN
from politetenant.operator.render.tenant import render_tenant
from politetenant.operator.render.wiring import OwnedSecret

TENANT = {
    "apiVersion": "polite.io/v1alpha1",
    "kind": "PoliteTenant",
    "metadata": {"name": "acme"},
    "spec": {"displayName": "Acme", "region": "eu-ireland"},
}


def obj(spec: dict[str, Any], hash_: str = "h1", **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "tracker",
            "namespace": "polite-acme",
            "annotations": {names.SPEC_HASH_ANNOTATION: hash_, **annotations},
        },
        "spec": spec,
    }


# -- apply ------------------------------------------------------------------------------------------


def test_plan_creates_what_is_missing_and_knows_a_restore_from_a_first_create() -> None:
    desired = obj({"replicas": 2})
    assert plan(desired, None, known=False) == Create(desired, restore=False)
    assert plan(desired, None, known=True) == Create(desired, restore=True)


def test_plan_leaves_an_object_with_the_same_hash_and_content_alone() -> None:
    live = obj({"replicas": 2, "revisionHistoryLimit": 10}, **{"deployment.kubernetes.io/revision": "3"})
    assert isinstance(plan(obj({"replicas": 2}), live, known=True), Unchanged)


def test_plan_patches_a_new_render_as_an_update_and_a_hand_edit_as_a_restore() -> None:
    assert plan(obj({"replicas": 3}, "h2"), obj({"replicas": 2}, "h1"), known=True) == Patch(
        obj({"replicas": 3}, "h2"), restore=False
    )
    assert plan(obj({"replicas": 2}), obj({"replicas": 9}), known=True) == Patch(obj({"replicas": 2}), restore=True)


@pytest.mark.parametrize(
    ("live", "desired", "holds"),
    [
        ({"a": 1, "b": 2}, {"a": 1}, True),
        ({"a": [{"x": 1, "y": 2}]}, {"a": [{"x": 1}]}, True),
        ({"a": [{"x": 1}, {"x": 2}]}, {"a": [{"x": 1}]}, False),  # a list is whole
        ({"a": 1}, {"a": True}, False),  # True is not 1 to Kubernetes
        ({"a": True}, {"a": True}, True),
        ({}, {"emptyDir": {}}, True),  # the API server may drop an empty object
        ({"limits": {"cpu": "1000m"}}, {"limits": {"cpu": "1"}}, True),
        ({"resources": {"requests": {"memory": "134217728"}}}, {"resources": {"requests": {"memory": "128Mi"}}}, True),
        ({"limits": {"cpu": "2"}}, {"limits": {"cpu": "1"}}, False),
        ({"env": [{"value": "1000m"}]}, {"env": [{"value": "1"}]}, False),  # not a quantity field
    ],
)
def test_contains_compares_only_what_was_rendered(live: Any, desired: Any, holds: bool) -> None:
    assert contains(live, desired) is holds


def test_objects_holding_data_get_no_owner() -> None:
    owner = {"uid": "u"}
    assert "ownerReferences" in with_owner(obj({}), owner)["metadata"]
    data = obj({}, **{names.HOLDS_DATA_ANNOTATION: "true"})
    assert "ownerReferences" not in with_owner(data, owner)["metadata"]
    fence = obj({}, **{names.GUARDS_DATA_ANNOTATION: "true"})
    assert "ownerReferences" not in with_owner(fence, owner)["metadata"]


def test_a_fence_an_earlier_version_made_owned_loses_its_owner_reference() -> None:
    """Else the garbage collector takes the NetworkPolicies and quota with a tenant deleted with Retain."""
    fence = obj({"podSelector": {}}, **{names.GUARDS_DATA_ANNOTATION: "true"})
    owned = {**fence, "metadata": {**fence["metadata"], "ownerReferences": [{"uid": "u"}]}}
    action = plan(fence, owned, known=True)
    assert isinstance(action, Patch) and action.desired["metadata"]["ownerReferences"] is None
    assert isinstance(plan(fence, fence, known=True), Unchanged)


def test_every_network_policy_and_the_quota_outlive_the_tenant() -> None:
    rendered = render_tenant(PoliteTenant.model_validate(TENANT), load_operator_config(None, {})).objects
    fence = [o for o in rendered if o["kind"] in ("NetworkPolicy", "ResourceQuota")]
    assert len(fence) >= 4
    assert all(outlives_tenant(o) for o in fence)
    assert not any(
        outlives_tenant(o)
        for o in rendered
        if o["kind"] in ("StatefulSet", "Service") and "tracker" in o["metadata"]["name"]
    )


# -- status -----------------------------------------------------------------------------------------

PARTS_OK = [
    passed("Placement", Reason.REGION_SERVED),
    passed("NamespaceReady", Reason.NAMESPACE_ACTIVE),
    passed("KeysReady", Reason.KEYS_AVAILABLE),
    passed("DatabaseReady", Reason.DATABASE_AVAILABLE),
    passed("TrackerReady", Reason.TRACKER_AVAILABLE),
    passed("RetentionReady", Reason.RETENTION_SCHEDULED),
]


def test_ready_is_the_first_failing_part_in_the_order_people_check() -> None:
    assert ready(PARTS_OK).ok
    tracker = failed("TrackerReady", Reason.TRACKER_STARTING, "0 of 2")
    keys = failed("KeysReady", Reason.KEYS_UNAVAILABLE, "down")
    verdict = ready([*PARTS_OK[:2], keys, PARTS_OK[3], tracker, PARTS_OK[5]])
    assert (verdict.status, verdict.reason, verdict.message) == ("False", Reason.KEYS_UNAVAILABLE, "KeysReady: down")


def test_transition_time_moves_only_with_the_status() -> None:
    first = conditions([], [passed("KeysReady", Reason.KEYS_AVAILABLE, "v1")], generation=1, now="T1")
    same = conditions(first, [passed("KeysReady", Reason.KEYS_ROTATED, "v2")], generation=2, now="T2")
    flipped = conditions(same, [failed("KeysReady", Reason.KEYS_UNAVAILABLE)], generation=2, now="T3")
    assert [c["lastTransitionTime"] for c in (first[0], same[0], flipped[0])] == ["T1", "T1", "T3"]
    assert same[0]["observedGeneration"] == 2


def test_phase_reads_the_conditions() -> None:
    ready_checks = [*PARTS_OK, ready(PARTS_OK)]
    assert phase(ready_checks, previous_phase=None) == "Ready"
    starting = [*PARTS_OK[:4], failed("TrackerReady", Reason.TRACKER_STARTING)]
    assert phase(starting, previous_phase=None) == "Provisioning"
    assert phase(starting, previous_phase="Ready") == "Degraded"
    engine = [*PARTS_OK[:3], failed("DatabaseReady", Reason.DATABASE_ENGINE_UNAVAILABLE)]
    assert phase(engine, previous_phase="Ready") == "Failed"
    assert phase([failed("Placement", Reason.REGION_NOT_SERVED)], previous_phase=None) == "Pending"
    assert phase(ready_checks, previous_phase="Ready", deleting=True) == "Deleting"


def test_status_body_and_its_patch() -> None:
    body = status_body(None, PARTS_OK, Facts("polite-acme", "http://x", 2, "T0"), generation=3, now="T1")
    assert body["phase"] == "Ready"
    assert body["keys"] == {"version": 2, "rotatedAt": "T0"}
    assert body["conditions"][0]["type"] == "Ready"
    assert status_patch(body, body) == {}
    smaller = status_body(body, PARTS_OK, Facts("polite-acme"), generation=4, now="T2")
    patch = status_patch(body, smaller)
    assert patch["observedGeneration"] == 4
    assert patch["endpoint"] is None and patch["keys"] is None  # merge patch removes them


def test_every_reason_is_a_valid_condition_reason() -> None:
    pattern = re.compile(CONDITION_REASON_PATTERN)
    assert all(pattern.match(reason.value) for reason in Reason)
    assert NEEDS_ACTION <= set(Reason)


# -- kube -------------------------------------------------------------------------------------------


def test_object_paths() -> None:
    assert object_path("v1", "Namespace", "polite-acme") == "/api/v1/namespaces/polite-acme"
    assert object_path("v1", "Secret", "k", "polite-acme") == "/api/v1/namespaces/polite-acme/secrets/k"
    assert object_path("apps/v1", "Deployment", None, "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert object_path("polite.io/v1alpha1", "PoliteTenant", "acme") == "/apis/polite.io/v1alpha1/politetenants/acme"
    with pytest.raises(ValueError, match="needs a namespace"):
        object_path("v1", "Secret", "k")
    with pytest.raises(ValueError, match="not a kind"):
        object_path("v1", "Pod", "p", "ns")


def test_event_body_is_about_the_tenant_in_the_operator_namespace() -> None:
    ref = ObjectRef("polite.io/v1alpha1", "PoliteTenant", "acme", "uid-1")
    event = event_body(
        ref, namespace="politetenant-system", type_=EventType.WARNING, reason=Reason.LEGAL_HOLD, message="x" * 5000,
        now="T", instance="pod-1",
    )  # fmt: skip
    assert event["metadata"] == {"generateName": "acme.", "namespace": "politetenant-system"}
    assert event["involvedObject"] == {
        "apiVersion": "polite.io/v1alpha1",
        "kind": "PoliteTenant",
        "name": "acme",
        "uid": "uid-1",
    }
    assert (event["type"], event["reason"]) == ("Warning", "LegalHold")
    assert len(event["message"]) == 1024


# -- secrets ----------------------------------------------------------------------------------------


def test_generated_values_fill_only_what_render_does_not_know() -> None:
    owned = OwnedSecret(
        "postgres-credentials",
        ("username", "password", "dbname", "host", "port", "uri"),
        "db",
        {"username": "polite", "dbname": "polite", "host": "postgres.ns.svc", "port": "5432"},
    )
    values = generated_values(owned)
    assert values["uri"] == f"postgresql://polite:{values['password']}@postgres.ns.svc:5432/polite"
    assert len(values["password"]) >= 40
    tokens = generated_values(OwnedSecret("t", ("sender", "analyst", "privacy"), "tokens"))
    assert all(re.match(TOKEN_PATTERN, token) for token in tokens.values())
    with pytest.raises(ValueError, match="no generator"):
        generated_values(OwnedSecret("x", ("mystery",), "?"))


# -- run --------------------------------------------------------------------------------------------


def test_run_refuses_a_bad_configuration_with_exit_2(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("served_regions: [mars]\n")
    assert cli.main(["run", "--config", str(bad)]) == 2
    assert "served_regions" in capsys.readouterr().err
    assert cli.main(["run", "--served-regions", "eu-ireland,mars"]) == 2
    assert "unknown region mars" in capsys.readouterr().err
