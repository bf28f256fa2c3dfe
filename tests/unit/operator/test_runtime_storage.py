"""The operator's kopf storages give exactly kopf's essences (what decides whether a tenant changed),
and ``json_copy`` (the tenants' index, the essences) shares nothing with the event's body."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from politetenant.operator.runtime.settings import STORAGE_PREFIX
from politetenant.operator.runtime.storage import DiffBaseStorage, ProgressStorage, json_copy

KEY = "last-handled-configuration"


def _body() -> dict[str, Any]:
    return {
        "apiVersion": "polite.io/v1alpha1",
        "kind": "PoliteTenant",
        "metadata": {
            "name": "acme",
            "uid": "u-1",
            "resourceVersion": "7",
            "labels": {"team": "mail"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                f"{STORAGE_PREFIX}/{KEY}": '{"spec": {"region": "eu-ireland"}}',
                f"{STORAGE_PREFIX}/reconcile": '{"retries": 1}',
                "other.io/kopf-managed": "yes",
                "polite.io/rotate-keys": "r1",
            },
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"region": "eu-ireland", "tracker": {"replicas": 2}},
        "status": {"phase": "Ready", "conditions": [{"type": "Ready"}]},
    }


@pytest.mark.parametrize("extra_fields", [None, [("status", "phase")]])
def test_the_essences_are_kopfs(extra_fields: list[tuple[str, ...]] | None) -> None:
    body = kopf.Body(_body())  # type: ignore[arg-type]
    ours_diff = DiffBaseStorage(prefix=STORAGE_PREFIX, key=KEY)
    kopfs_diff = kopf.AnnotationsDiffBaseStorage(prefix=STORAGE_PREFIX, key=KEY)
    ours = ours_diff.build(body=body, extra_fields=extra_fields)
    assert ours == kopfs_diff.build(body=body, extra_fields=extra_fields)
    assert ours["spec"] == {"region": "eu-ireland", "tracker": {"replicas": 2}}
    cleared = ProgressStorage(prefix=STORAGE_PREFIX).clear(essence=ours)
    assert cleared == kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX).clear(essence=ours)
    assert not any(key.startswith(STORAGE_PREFIX) for key in cleared["metadata"]["annotations"])


def test_the_essence_shares_nothing_with_the_body() -> None:
    raw = _body()
    before = copy.deepcopy(raw)
    essence = DiffBaseStorage(prefix=STORAGE_PREFIX, key=KEY).build(body=kopf.Body(raw))  # type: ignore[arg-type]
    cleared = ProgressStorage(prefix=STORAGE_PREFIX).clear(essence=essence)
    cleared["spec"]["tracker"]["replicas"] = 9
    cleared["metadata"]["labels"]["team"] = "x"
    assert raw == before


def test_the_copy_equals_the_body_and_shares_nothing_with_it() -> None:
    body: dict[str, Any] = {
        "metadata": {"name": "tracker", "labels": {"polite.io/tenant": "acme"}},
        "spec": {"ports": [{"port": 80}]},
    }
    copied = json_copy(body)
    assert copied == body
    body["spec"]["ports"][0]["port"] = 81
    body["metadata"]["labels"]["x"] = "y"
    assert copied["spec"]["ports"][0]["port"] == 80
    assert "x" not in copied["metadata"]["labels"]


def test_a_body_json_cannot_carry_is_still_copied() -> None:
    body = {"metadata": {"name": "odd"}, "data": {b"raw": {1, 2}}}
    copied = json_copy(body)
    assert copied == body
    assert copied["data"] is not body["data"]
