"""expand_claims: a raised storage size grows the StatefulSet's claims when their class allows it, and
says plainly when it does not, when the spec asks less than the claims hold, or when there is nothing
to grow yet.

The StatefulSets are the ones render makes; the API is a small fake that serves claims and
StorageClasses by name and records every call, so a test can say which calls were made and which not.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from politetenant.operator.kube.client import KubeError
from politetenant.operator.model import names
from politetenant.operator.model.config import load_operator_config
from politetenant.operator.model.reasons import Reason
from politetenant.operator.model.tenant import PoliteTenant
from politetenant.operator.render.tenant import render_tenant
from politetenant.operator.runtime.volumes import (
    BETA_CLASS_ANNOTATION,
    EXPANDING,
    REFUSED,
    Storage,
    VolumeOutcome,
    claim_names,
    expand_claims,
)
from tests.unit.operator.test_reconcile import merge_patch

NAMESPACE = "polite-acme"
GROW = {"spec": {"resources": {"requests": {"storage": "20Gi"}}}}


class Api:
    """The ``KubeApi`` calls expand_claims makes, over a dict keyed by (kind, name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []  # (verb, kind, name)
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.refuse_patch: KubeError | None = None

    def add(self, obj: dict[str, Any]) -> None:
        self.objects[(obj["kind"], obj["metadata"]["name"])] = copy.deepcopy(obj)

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        assert (api_version, namespace) in {("v1", NAMESPACE), ("storage.k8s.io/v1", None)}
        self.calls.append(("get", kind, name))
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found is not None else None

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError("expand_claims creates nothing")

    async def patch(
        self, api_version: str, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        assert (api_version, kind, namespace) == ("v1", "PersistentVolumeClaim", NAMESPACE)
        self.calls.append(("patch", kind, name))
        if self.refuse_patch is not None:
            raise self.refuse_patch
        self.patches.append((name, dict(patch)))
        self.objects[(kind, name)] = merge_patch(self.objects[(kind, name)], dict(patch))
        return copy.deepcopy(self.objects[(kind, name)])

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        raise AssertionError("expand_claims deletes nothing")

    async def post_event(self, event: Mapping[str, Any]) -> None:
        raise AssertionError("expand_claims posts no Event")

    def verbs(self, kind: str) -> list[str]:
        return [verb for verb, k, _ in self.calls if k == kind]


def statefulset(name: str, storage: str, **spec: Any) -> dict[str, Any]:
    tenant = {"displayName": "Acme", "region": "eu-ireland", "database": {"storage": storage}}
    if name == names.TRACKER:
        tenant["tracker"] = {"spoolStorage": storage, "replicas": 2}
    body = {"apiVersion": "polite.io/v1alpha1", "kind": "PoliteTenant", "metadata": {"name": "acme"}, "spec": tenant}
    objects = render_tenant(PoliteTenant.model_validate(body), load_operator_config(None, {})).objects
    found = next(o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == name)
    found["spec"].update(spec)
    return found


def claim(name: str, storage: str, *, capacity: str | None = None, class_name: str | None = "gp3") -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}}
    if class_name is not None:
        spec["storageClassName"] = class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
        "status": {"phase": "Bound", "capacity": {"storage": capacity or storage}},
    }


def storage_class(name: str, *, expandable: bool | None, default: bool = False) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "ebs.csi.aws.com",
    }
    if default:
        obj["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    if expandable is not None:
        obj["allowVolumeExpansion"] = expandable
    return obj


@pytest.fixture
def api() -> Api:
    api = Api()
    api.add(claim("data-postgres-0", "10Gi"))
    api.add(storage_class("gp3", expandable=True))
    return api


async def grow_database(api: Api, to: str = "20Gi") -> VolumeOutcome:
    return await expand_claims(api, statefulset(names.DATABASE, to), statefulset(names.DATABASE, "10Gi"))


# -- growing -----------------------------------------------------------------------------------------


async def test_claims_grow_when_their_class_allows_expansion(api: Api) -> None:
    outcome = await grow_database(api)

    assert outcome.state is Storage.EXPANDING and outcome.patched == ("data-postgres-0",)
    assert api.patches == [("data-postgres-0", GROW)]
    assert outcome.check is not None and not outcome.check.ok
    assert outcome.check.type == "DatabaseReady" and outcome.check.reason is EXPANDING["DatabaseReady"]
    assert outcome.check.message == "spec.database.storage: asked 20Gi; claims at 10Gi are being expanded"


async def test_a_claim_asked_to_grow_is_expanding_until_its_capacity_follows_then_done(api: Api) -> None:
    api.add(claim("data-postgres-0", "20Gi", capacity="10Gi"))
    waiting = await grow_database(api)
    assert waiting.state is Storage.EXPANDING and waiting.patched == ()
    assert waiting.check is not None and "claims at 10Gi are being expanded" in waiting.check.message

    api.add(claim("data-postgres-0", "20Gi"))
    done = await grow_database(api)
    assert done.state is Storage.EXPANDED and done.check is None
    assert api.verbs("PersistentVolumeClaim").count("patch") == 0


async def test_every_replica_claim_grows_from_the_first_ordinal(api: Api) -> None:
    live = statefulset(names.TRACKER, "1Gi", replicas=2, ordinals={"start": 3})
    assert claim_names(live, names.SPOOL_VOLUME) == ["spool-tracker-3", "spool-tracker-4"]
    for name in claim_names(live, names.SPOOL_VOLUME):
        api.add(claim(name, "1Gi"))

    outcome = await expand_claims(api, statefulset(names.TRACKER, "2Gi"), live)

    assert outcome.patched == ("spool-tracker-3", "spool-tracker-4")
    assert outcome.check is not None and outcome.check.type == "TrackerReady"
    assert outcome.check.message == "spec.tracker.spoolStorage: asked 2Gi; claims at 1Gi are being expanded"
    assert api.verbs("StorageClass") == ["get"]  # one class, read once


async def test_a_template_naming_no_class_uses_the_default_class_the_claim_was_given(api: Api) -> None:
    """The DefaultStorageClass admission plugin wrote the default class into the claim at creation."""
    desired, live = statefulset(names.DATABASE, "20Gi"), statefulset(names.DATABASE, "10Gi")
    for obj in (desired, live):
        del obj["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"]
    api.add(claim("data-postgres-0", "10Gi", class_name="standard"))
    api.add(storage_class("standard", expandable=True, default=True))

    outcome = await expand_claims(api, desired, live)

    assert outcome.state is Storage.EXPANDING and api.patches == [("data-postgres-0", GROW)]
    assert ("get", "StorageClass", "standard") in api.calls


async def test_the_beta_class_annotation_wins_over_the_spec_field_as_for_the_api_server(api: Api) -> None:
    old = claim("data-postgres-0", "10Gi", class_name=None)
    old["metadata"]["annotations"] = {BETA_CLASS_ANNOTATION: "legacy"}
    api.add(old)
    api.add(storage_class("legacy", expandable=False))

    outcome = await grow_database(api)

    assert outcome.state is Storage.CANNOT_EXPAND and api.patches == []
    assert ("get", "StorageClass", "legacy") in api.calls


# -- refused -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("expandable", [False, None])
async def test_a_class_that_does_not_allow_expansion_leaves_the_claims_alone(api: Api, expandable: bool | None) -> None:
    api.add(claim("data-postgres-0", "10Gi", class_name="standard"))
    api.add(storage_class("standard", expandable=expandable))

    outcome = await grow_database(api)

    assert outcome.state is Storage.CANNOT_EXPAND and api.verbs("PersistentVolumeClaim") == ["get"]
    assert outcome.check is not None and outcome.check.reason is REFUSED
    assert outcome.check.message == (
        "spec.database.storage: storage class standard does not allow volume expansion; claims stay at 10Gi "
        "(the StatefulSet keeps its original template)"
    )


async def test_a_claim_without_a_class_cannot_grow(api: Api) -> None:
    api.add(claim("data-postgres-0", "10Gi", class_name=None))
    outcome = await grow_database(api)
    assert outcome.state is Storage.CANNOT_EXPAND and api.patches == []
    assert api.verbs("StorageClass") == []
    assert outcome.check is not None and "claim data-postgres-0 has no storage class" in outcome.check.message


async def test_a_missing_class_is_said(api: Api) -> None:
    api.add(claim("data-postgres-0", "10Gi", class_name="gone"))
    outcome = await grow_database(api)
    assert outcome.state is Storage.CANNOT_EXPAND and api.patches == []
    assert outcome.check is not None and "storage class gone of claim data-postgres-0 does not exist" in (
        outcome.check.message
    )


async def test_asking_less_than_the_template_is_refused_without_a_call(api: Api) -> None:
    outcome = await grow_database(api, to="5Gi")
    assert outcome.state is Storage.CANNOT_SHRINK and api.calls == []
    assert outcome.check is not None and outcome.check.reason is REFUSED
    assert outcome.check.message == (
        "spec.database.storage: asked 5Gi is less than the claims' 10Gi; volumes cannot shrink"
    )


async def test_asking_less_than_a_claim_already_grown_to_is_refused(api: Api) -> None:
    api.add(claim("data-postgres-0", "30Gi"))
    outcome = await grow_database(api)
    assert outcome.state is Storage.CANNOT_SHRINK and api.patches == []
    assert outcome.check is not None and "asked 20Gi is less than the claims' 30Gi" in outcome.check.message


async def test_a_refused_patch_is_an_api_error_of_the_part(api: Api) -> None:
    message = 'persistentvolumeclaims "data-postgres-0" is forbidden: only dynamically provisioned pvc can be resized'
    api.refuse_patch = KubeError(403, "Forbidden", message)
    outcome = await grow_database(api)
    assert outcome.state is Storage.FAILED and outcome.error is api.refuse_patch
    assert outcome.check is not None and outcome.check.reason is Reason.API_ERROR
    assert "PersistentVolumeClaim polite-acme/data-postgres-0: 403 Forbidden" in outcome.check.message


# -- nothing to do -----------------------------------------------------------------------------------


async def test_nothing_is_read_when_no_template_size_changed(api: Api) -> None:
    same = statefulset(names.DATABASE, "10Gi")
    respelled = statefulset(names.DATABASE, "10240Mi")
    assert (await expand_claims(api, same, same)).state is Storage.SAME
    assert (await expand_claims(api, respelled, same)).state is Storage.SAME
    assert (await expand_claims(api, same, None)).state is Storage.SAME
    assert api.calls == []


async def test_a_claim_not_made_yet_is_nothing_to_do_yet(api: Api) -> None:
    del api.objects[("PersistentVolumeClaim", "data-postgres-0")]
    outcome = await grow_database(api)
    assert outcome == VolumeOutcome(Storage.WAITING)
    assert api.verbs("StorageClass") == [] and api.patches == []


async def test_a_claim_not_bound_yet_is_grown_once_bound(api: Api) -> None:
    pending = claim("data-postgres-0", "10Gi")
    pending["status"] = {"phase": "Pending"}
    api.add(pending)
    outcome = await grow_database(api)
    assert outcome == VolumeOutcome(Storage.WAITING)
    assert api.patches == []
