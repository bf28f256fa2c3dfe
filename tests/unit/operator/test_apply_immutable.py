"""apply leaves immutable fields alone: a storage change is no 422 at every reconcile, nor drift restored
at every resync, and what the cluster keeps from an earlier render is named for the status.

The pure decision (``plan``, ``contains``, ``mutable_fields``, ``immutable_differences``) is driven
with the objects render makes; ``apply_object`` against a fake API that refuses what the real one
refuses (https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/: a StatefulSet's spec
changes only in replicas, ordinals, template, updateStrategy, persistentVolumeClaimRetentionPolicy and
minReadySeconds).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from politetenant.operator.kube.apply import (
    IMMUTABLE,
    Patch,
    Unchanged,
    apply_object,
    contains,
    immutable_differences,
    mutable_fields,
    plan,
)
from politetenant.operator.kube.client import KubeError
from politetenant.operator.model import names
from politetenant.operator.model.config import load_operator_config
from politetenant.operator.model.tenant import PoliteTenant
from politetenant.operator.render.tenant import render_tenant
from tests.unit.operator.test_reconcile import FakeKube, merge_patch

STATEFULSET_MUTABLE = {
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
}
STORAGE_PATH = "spec.volumeClaimTemplates[0].spec.resources.requests.storage"


def rendered(**spec: Any) -> list[dict[str, Any]]:
    body = {
        "apiVersion": "polite.io/v1alpha1",
        "kind": "PoliteTenant",
        "metadata": {"name": "acme"},
        "spec": {"displayName": "Acme", "region": "eu-ireland", **spec},
    }
    return render_tenant(PoliteTenant.model_validate(body), load_operator_config(None, {})).objects


def database(storage: str) -> dict[str, Any]:
    return next(
        o
        for o in rendered(database={"storage": storage})
        if o["kind"] == "StatefulSet" and o["metadata"]["name"] == names.DATABASE
    )


def stored(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as the API server returns it: defaults and status added."""
    live = copy.deepcopy(dict(obj))
    live["metadata"] = {**live["metadata"], "uid": "u1", "resourceVersion": "7", "generation": 1}
    spec = live["spec"]
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    for claim in spec["volumeClaimTemplates"]:
        claim.update(apiVersion="v1", kind="PersistentVolumeClaim", status={"phase": "Pending"})
        claim["spec"]["volumeMode"] = "Filesystem"
    live["status"] = {"replicas": 1, "readyReplicas": 1}
    return live


# -- the decision ------------------------------------------------------------------------------------


def test_a_storage_change_patches_the_statefulset_without_its_claim_templates() -> None:
    live = stored(database("10Gi"))
    desired = database("20Gi")

    action = plan(desired, live, known=True)

    assert isinstance(action, Patch) and not action.restore  # a new render, not a hand edit
    assert set(action.desired["spec"]) <= STATEFULSET_MUTABLE
    assert "volumeClaimTemplates" not in action.desired["spec"]
    assert action.desired["spec"]["template"] == desired["spec"]["template"]
    hash_ = names.SPEC_HASH_ANNOTATION
    assert action.desired["metadata"]["annotations"][hash_] == desired["metadata"]["annotations"][hash_]


def test_after_that_patch_a_resync_restores_nothing() -> None:
    """The claim templates keep 10Gi for good: calling that drift would patch (and fail) forever."""
    desired = database("20Gi")
    first = plan(desired, stored(database("10Gi")), known=True)
    assert isinstance(first, Patch)
    live = merge_patch(stored(database("10Gi")), first.desired)

    assert contains(live, desired)
    assert isinstance(plan(desired, live, known=True), Unchanged)
    assert immutable_differences(desired, live) == [STORAGE_PATH]


def test_mutable_fields_of_a_statefulset_are_still_restored() -> None:
    desired = database("20Gi")
    live = merge_patch(stored(database("10Gi")), mutable_fields(desired))
    live["spec"]["replicas"] = 3
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "postgres:edited"

    action = plan(desired, live, known=True)

    assert isinstance(action, Patch) and action.restore
    assert action.desired["spec"]["replicas"] == 1
    assert action.desired["spec"]["template"] == desired["spec"]["template"]
    assert "volumeClaimTemplates" not in action.desired["spec"]


def test_every_rendered_statefulset_patch_touches_only_the_fields_the_api_server_lets_change() -> None:
    for obj in rendered(tracker={"replicas": 2}):
        if obj["kind"] != "StatefulSet":
            continue
        patch = mutable_fields(obj)
        assert set(patch["spec"]) <= STATEFULSET_MUTABLE, obj["metadata"]["name"]
        fixed = {"serviceName", "selector", "volumeClaimTemplates", "podManagementPolicy", "revisionHistoryLimit"}
        assert not fixed & set(patch["spec"])


def test_a_difference_in_an_immutable_field_alone_with_the_same_hash_is_no_drift() -> None:
    desired = database("10Gi")
    live = stored(desired)
    live["spec"]["serviceName"] = "someone-else"  # only possible if made so: it cannot be edited
    assert isinstance(plan(desired, live, known=True), Unchanged)
    assert immutable_differences(desired, live) == ["spec.serviceName"]


def test_immutable_differences_is_empty_when_the_fixed_fields_match_or_nothing_exists() -> None:
    desired = database("10Gi")
    assert immutable_differences(desired, stored(desired)) == []
    assert immutable_differences(desired, None) == []
    # The API server stores quantities canonically: the same size spelled otherwise is no difference.
    live = stored(desired)
    live["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = "10240Mi"
    assert immutable_differences(desired, live) == []


def obj(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": "x", "namespace": "polite-acme", "annotations": {names.SPEC_HASH_ANNOTATION: "h1"}}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec}


@pytest.mark.parametrize(
    ("api_version", "kind", "spec", "kept", "left_out"),
    [
        ("apps/v1", "Deployment", {"replicas": 2, "selector": {"matchLabels": {"a": "b"}}}, "replicas", "selector"),
        ("apps/v1", "ReplicaSet", {"replicas": 2, "selector": {"matchLabels": {"a": "b"}}}, "replicas", "selector"),
        (
            "batch/v1",
            "Job",
            {"parallelism": 2, "template": {"spec": {"restartPolicy": "Never"}}},
            "parallelism",
            "template",
        ),
        ("v1", "Service", {"clusterIP": "None", "ports": [{"port": 80}]}, "ports", "clusterIP"),
        ("v1", "Service", {"clusterIPs": ["None"], "ports": [{"port": 80}]}, "ports", "clusterIPs"),
        (
            "v1",
            "PersistentVolumeClaim",
            {"resources": {"requests": {"storage": "2Gi"}, "limits": {"storage": "4Gi"}}, "storageClassName": "gp3"},
            "resources",
            "storageClassName",
        ),
    ],
)
def test_immutable_fields_of_each_kind_are_left_out_of_patches(
    api_version: str, kind: str, spec: dict[str, Any], kept: str, left_out: str
) -> None:
    desired = obj(api_version, kind, spec)
    patch = mutable_fields(desired)
    assert kept in patch["spec"] and left_out not in patch["spec"]
    live = copy.deepcopy(desired)
    live["spec"][left_out] = "changed" if isinstance(spec[left_out], str) else {"changed": True}
    assert contains(live, desired)
    assert immutable_differences(desired, live) != []


def test_a_claim_patch_keeps_only_its_requests_and_volume_attributes_class() -> None:
    spec = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "2Gi"}, "limits": {"storage": "4Gi"}},
        "volumeAttributesClassName": "fast",
    }
    patch = mutable_fields(obj("v1", "PersistentVolumeClaim", spec))
    assert patch["spec"] == {"resources": {"requests": {"storage": "2Gi"}}, "volumeAttributesClassName": "fast"}


def test_a_cronjob_job_template_is_mutable_and_still_patched() -> None:
    assert ("batch", "CronJob") not in IMMUTABLE
    cronjob = next(o for o in rendered() if o["kind"] == "CronJob")
    assert mutable_fields(cronjob) == cronjob


def test_render_sets_no_service_cluster_ip_but_none_for_headless_services() -> None:
    """An allocated clusterIP is the API server's: absent from the render, it is never compared."""
    services = [o for o in rendered() if o["kind"] == "Service"]
    assert services
    assert all(o["spec"].get("clusterIP") in (None, "None") for o in services)
    assert not any("clusterIPs" in o["spec"] for o in services)


def test_a_fence_losing_its_owner_reference_is_patched_without_immutable_fields() -> None:
    desired = obj("v1", "Service", {"clusterIP": "None", "ports": [{"port": 80}]})
    desired["metadata"]["annotations"][names.GUARDS_DATA_ANNOTATION] = "true"
    live = copy.deepcopy(desired)
    live["metadata"]["ownerReferences"] = [{"uid": "u"}]
    action = plan(desired, live, known=True)
    assert isinstance(action, Patch) and action.desired["metadata"]["ownerReferences"] is None
    assert "clusterIP" not in action.desired["spec"]


# -- apply against an API that refuses immutable changes ----------------------------------------------


class StrictKube(FakeKube):
    """FakeKube whose StatefulSets refuse a spec change outside the mutable fields, as the API server
    does (422 Invalid, the message of its ValidateStatefulSetUpdate)."""

    async def patch(
        self, api_version: str, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        if kind == "StatefulSet":
            old = self.find(kind, name, namespace)
            assert old is not None
            new = merge_patch(old, dict(patch))
            fixed = {k for k in set(old["spec"]) | set(new["spec"]) if k not in STATEFULSET_MUTABLE}
            if any(old["spec"].get(k) != new["spec"].get(k) for k in fixed):
                message = (
                    f'StatefulSet.apps "{name}" is invalid: spec: Forbidden: updates to statefulset spec for '
                    "fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', "
                    "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
                )
                raise KubeError(422, "Invalid", message)
        return await super().patch(api_version, kind, name, patch, namespace)


async def test_a_storage_change_applies_without_a_refusal_and_the_next_resync_writes_nothing() -> None:
    kube = StrictKube()
    kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "polite-acme"}})
    first = await apply_object(kube, database("10Gi"), known=False)
    assert first.error is None

    changed = await apply_object(kube, database("20Gi"), known=True)
    writes = len(kube.writes)
    again = await apply_object(kube, database("20Gi"), known=True)

    assert changed.error is None and changed.wrote and not changed.restored
    assert isinstance(again.action, Unchanged) and kube.writes[writes:] == []
    live = kube.find("StatefulSet", names.DATABASE, "polite-acme")
    assert live is not None
    assert live["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert immutable_differences(database("20Gi"), live) == [STORAGE_PATH]
