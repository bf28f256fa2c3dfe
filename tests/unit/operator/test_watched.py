"""Reads from the watched state, and reconciles started by a child's events."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from politetenant.operator.kube.client import KubeError
from politetenant.operator.runtime.drift import DriftTrigger
from politetenant.operator.runtime.watched import (
    WATCHED_KINDS,
    CachedKube,
    WatchedKind,
    Written,
    key_of,
    store_lookup,
)


def configmap(name: str, rv: str, data: str = "x") -> dict[str, Any]:
    meta = {"name": name, "namespace": "polite-a", "resourceVersion": rv, "labels": {"polite.io/tenant": "a"}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": data}}


class Api:
    """The API behind the cache: counts what reaches it."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[str] = []
        self.revision = 100

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self.calls.append(f"get {kind} {name}")
        return self.objects.get((kind, name))

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(f"create {obj['kind']} {obj['metadata']['name']}")
        if (obj["kind"], obj["metadata"]["name"]) in self.objects:
            raise KubeError(409, "AlreadyExists", "exists")
        self.revision += 1
        stored = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.revision)}}
        self.objects[obj["kind"], obj["metadata"]["name"]] = stored
        return stored

    async def patch(
        self, api_version: str, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        self.calls.append(f"patch {kind} {name}")
        self.revision += 1
        stored = {**self.objects[kind, name], **patch}
        stored["metadata"] = {**stored["metadata"], "resourceVersion": str(self.revision)}
        self.objects[kind, name] = stored
        return stored

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        self.calls.append(f"delete {kind} {name}")
        return self.objects.pop((kind, name), None) is not None

    async def post_event(self, event: Mapping[str, Any]) -> None:
        self.calls.append("event")


Index = dict[tuple[str | None, str], dict[str, Any]]  # a kind's store: (namespace, name) -> object


CONFIGMAPS = next(kind for kind in WATCHED_KINDS if kind.kind == "ConfigMap")


def cache(api: Api, index: Index, written: Written | None = None) -> CachedKube:
    return CachedKube(api, store_lookup({CONFIGMAPS: index}), written or Written())


async def test_a_watched_kind_is_read_from_the_index_without_a_request() -> None:
    api, index = Api(), Index()
    index["polite-a", "settings"] = configmap("settings", "5")
    kube = cache(api, index)
    assert (await kube.get("v1", "ConfigMap", "settings", "polite-a") or {})["metadata"]["resourceVersion"] == "5"
    assert await kube.get("v1", "ConfigMap", "other", "polite-a") is None  # not in the index: does not exist
    assert api.calls == []


NAMESPACES = next(kind for kind in WATCHED_KINDS if kind.kind == "Namespace")


async def test_secrets_are_not_watched_and_go_to_the_api_unless_their_namespace_does_not_exist() -> None:
    api, namespaces = Api(), Index()
    namespaces[None, "polite-a"] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "polite-a"}}
    kube = CachedKube(api, store_lookup({CONFIGMAPS: {}, NAMESPACES: namespaces}), Written())
    await kube.get("v1", "Secret", "polite-keys", "polite-a")
    await kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "other.example.com")
    # No namespace, no Secret in it: nothing to ask (the operator could not: its access is bound there).
    assert await kube.get("v1", "Secret", "polite-keys", "polite-missing") is None
    assert api.calls == ["get Secret polite-keys", "get CustomResourceDefinition other.example.com"]


async def test_an_own_write_is_answered_until_the_watch_shows_it() -> None:
    api, index, written = Api(), Index(), Written()
    kube = cache(api, index, written)
    created = await kube.create(configmap("settings", ""))
    # The watch has not delivered the ADDED event yet: the index is empty, the write is remembered.
    assert await kube.get("v1", "ConfigMap", "settings", "polite-a") == created
    key = key_of("v1", "ConfigMap", "settings", "polite-a")
    written.observed(key, configmap("settings", "50"), deleted=False)  # an older event: keep our write
    assert await kube.get("v1", "ConfigMap", "settings", "polite-a") == created
    index["polite-a", "settings"] = created
    written.observed(key, created, deleted=False)  # the event of our own write: the index has caught up
    assert await kube.get("v1", "ConfigMap", "settings", "polite-a") == created
    assert api.calls == ["create ConfigMap settings"]


async def test_a_deleted_object_is_there_until_the_watch_says_it_is_gone() -> None:
    api, index, written = Api(), Index(), Written()
    index["polite-a", "old"] = configmap("old", "7")
    api.objects["ConfigMap", "old"] = configmap("old", "7")
    kube = cache(api, index, written)
    await kube.delete("v1", "ConfigMap", "old", "polite-a")
    # A deletion may wait for finalizers (a namespace empties itself first): still there until seen gone.
    assert await kube.get("v1", "ConfigMap", "old", "polite-a") is not None
    del index["polite-a", "old"]
    assert await kube.get("v1", "ConfigMap", "old", "polite-a") is None


async def test_a_create_refused_as_existing_reads_the_api_next_time() -> None:
    api, index = Api(), Index()
    api.objects["ConfigMap", "settings"] = configmap("settings", "9")  # made, but not yet seen by the watch
    kube = cache(api, index)
    with pytest.raises(KubeError):
        await kube.create(configmap("settings", ""))
    found = await kube.get("v1", "ConfigMap", "settings", "polite-a")
    assert found is not None and found["metadata"]["resourceVersion"] == "9"
    assert api.calls == ["create ConfigMap settings", "get ConfigMap settings"]


def test_every_watched_kind_is_watched_once_and_only_crds_go_unlabelled() -> None:
    kinds = [(kind.group, kind.kind) for kind in WATCHED_KINDS]
    assert len(kinds) == len(set(kinds))
    assert {kind.kind for kind in WATCHED_KINDS if not kind.labelled} == {"CustomResourceDefinition"}
    # The API server sends the tenants' children only, and of the CRDs only CloudNativePG's.
    assert {str(kind.selection) for kind in WATCHED_KINDS if kind.labelled} == {"{'labelSelector': 'polite.io/tenant'}"}
    crds = next(kind for kind in WATCHED_KINDS if not kind.labelled)
    assert crds.selection == {"fieldSelector": "metadata.name=clusters.postgresql.cnpg.io"}
    assert "Secret" not in {kind.kind for kind in WATCHED_KINDS}
    assert WatchedKind("apps", "v1", "statefulsets", "StatefulSet").api_version == "apps/v1"


async def test_pokes_within_the_delay_make_one_reconcile_and_a_failing_one_runs_again() -> None:
    runs: list[str] = []
    again = {"a": 0.01}

    async def run(name: str) -> float | None:
        runs.append(name)
        return again.pop(name, None)

    trigger = DriftTrigger(run, delay=0.05)
    for _ in range(5):
        trigger.poke("a")
    trigger.poke("b")
    await asyncio.sleep(0.3)
    assert sorted(runs) == ["a", "a", "b"]  # five pokes of a: one run, then the retry it asked for
    assert trigger.pending == 0
    await trigger.close()


async def test_a_poke_during_a_reconcile_schedules_another() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[str] = []

    async def run(name: str) -> float | None:
        runs.append(name)
        started.set()
        await release.wait()
        return None

    trigger = DriftTrigger(run, delay=0.01)
    trigger.poke("a")
    await started.wait()
    trigger.poke("a")  # the child changed again while the reconcile ran: it must be looked at again
    release.set()
    await asyncio.sleep(0.1)
    assert runs == ["a", "a"]
    await trigger.close()


async def test_the_event_of_an_own_write_pokes_nothing_but_anyone_elses_change_does() -> None:
    api, index, written = Api(), Index(), Written()
    kube = cache(api, index, written)
    created = await kube.create(configmap("settings", ""))
    key = key_of("v1", "ConfigMap", "settings", "polite-a")
    assert not written.observed(key, configmap("settings", "50"), deleted=False)  # from before our write
    assert written.observed(key, created, deleted=False)  # our create coming back: nothing to reconcile
    edited = configmap("settings", str(int(created["metadata"]["resourceVersion"]) + 1), data="by hand")
    assert not written.observed(key, edited, deleted=False)  # someone's edit after it: reconcile
    patched = await kube.patch("v1", "ConfigMap", "settings", {"data": {"k": "x"}}, "polite-a")
    assert not written.observed(key, {**patched, "metadata": {**patched["metadata"]}}, deleted=True)  # deleted
