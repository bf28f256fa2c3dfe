"""The children's informers against the Kubernetes API emulator over HTTP: a list, then a watch, of
the selected objects only; a relist after 410 Expired that tells what changed in the gap; a kind the
API does not serve until its CRD is installed; events far longer than aiohttp's line limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from politetenant.operator.kube.client import KubeClient, KubeError
from politetenant.operator.kube.informer import Expired, Informer
from politetenant.operator.runtime.watched import WATCHED_KINDS, Children, WatchedKind
from tests.fakes.kube_emulator import declare_cnpg
from tests.fakes.kube_server import KubeApiHandle, running_kube_api

TENANT_LABEL = "polite.io/tenant"
CONFIGMAPS = "/api/v1/namespaces/polite-a/configmaps"


@dataclass
class Credentials:
    """The parts of kopf.ConnectionInfo the client reads."""

    server: str
    trust_env: bool = False
    proxy_url: str | None = None

    def as_http_headers(self) -> dict[str, str]:
        return {}


@pytest.fixture
def kube_api(request: pytest.FixtureRequest) -> Iterator[KubeApiHandle]:
    options = getattr(request, "param", {})
    with running_kube_api(**options) as handle:
        assert handle.request("POST", "/api/v1/namespaces", {"metadata": {"name": "polite-a"}}).status == 201
        yield handle


@pytest.fixture
async def client(kube_api: KubeApiHandle) -> AsyncIterator[KubeClient]:
    kube = KubeClient(lambda: Credentials(kube_api.url))  # type: ignore[arg-type,return-value]
    try:
        yield kube
    finally:
        await kube.close()


def configmap(name: str, *, labelled: bool = True, data: str = "x") -> dict[str, Any]:
    labels = {TENANT_LABEL: "a"} if labelled else {}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": data}}


def merge_patch(kube_api: KubeApiHandle, name: str, data: str) -> None:
    patched = kube_api.request(
        "PATCH", f"{CONFIGMAPS}/{name}", {"data": {"k": data}}, content_type="application/merge-patch+json"
    )
    assert patched.status == 200


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the informer never saw it"
        await asyncio.sleep(0.02)


def names(store: dict[tuple[str | None, str], dict[str, Any]]) -> set[str]:
    return {name for _, name in store}


async def test_an_informer_lists_then_watches_only_the_tenants_children(
    kube_api: KubeApiHandle, client: KubeClient
) -> None:
    kube_api.request("POST", CONFIGMAPS, configmap("before"))
    kube_api.request("POST", CONFIGMAPS, configmap("someone-elses", labelled=False))
    events: list[tuple[str, str]] = []
    informer = Informer(
        client, "v1", "ConfigMap", params={"labelSelector": TENANT_LABEL},
        on_event=lambda kind, obj: events.append((kind, obj["metadata"]["name"])),
    )  # fmt: skip
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        assert names(informer.store) == {"before"}
        assert informer.store["polite-a", "before"]["kind"] == "ConfigMap"
        assert events == []  # the first list is what is there, not news
        kube_api.request("POST", CONFIGMAPS, configmap("after"))
        kube_api.request("POST", CONFIGMAPS, configmap("not-ours", labelled=False))
        merge_patch(kube_api, "before", "y")
        assert kube_api.request("DELETE", f"{CONFIGMAPS}/before").status == 200
        await until(lambda: len(events) >= 3)
        await asyncio.sleep(0.1)
        assert events == [("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "before")]
        assert names(informer.store) == {"after"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("kube_api", [{"event_window": 3}], indirect=True)
async def test_a_watch_too_old_lists_again_and_tells_what_changed_in_the_gap(
    kube_api: KubeApiHandle, client: KubeClient
) -> None:
    for name in ("kept", "changed", "gone"):
        kube_api.request("POST", CONFIGMAPS, configmap(name))
    events: list[tuple[str, str]] = []
    deleted_versions: list[str] = []

    def on_event(kind: str, obj: dict[str, Any]) -> None:
        events.append((kind, obj["metadata"]["name"]))
        if kind == "DELETED":
            deleted_versions.append(obj["metadata"]["resourceVersion"])

    informer = Informer(client, "v1", "ConfigMap", params={"labelSelector": TENANT_LABEL}, on_event=on_event)
    version = await informer.relist()
    assert version and informer.synced.is_set() and events == []
    # While the operator was away more changed than the API server keeps: resuming is refused.
    merge_patch(kube_api, "changed", "y")
    kube_api.request("DELETE", f"{CONFIGMAPS}/gone")
    for index in range(4):
        kube_api.request("POST", CONFIGMAPS, configmap(f"unlabelled-{index}", labelled=False))
    kube_api.request("POST", CONFIGMAPS, configmap("new"))
    with pytest.raises(Expired):
        await informer.watch_once(version)
    relisted = await informer.relist()
    assert sorted(events) == [("ADDED", "new"), ("DELETED", "gone"), ("MODIFIED", "changed")]
    assert names(informer.store) == {"kept", "changed", "new"}
    # The deletion is dated by the list that found it, not by the object's last version: an operator's
    # write remembered from before the gap is outdated by it, so the object is made again.
    assert deleted_versions == [relisted] and int(relisted or 0) > int(version)


async def test_a_kind_not_served_is_empty_until_its_crd_is_installed(
    kube_api: KubeApiHandle, client: KubeClient
) -> None:
    seen: list[tuple[str, str, str]] = []
    children = Children(client, lambda kind, event, obj: seen.append((kind.kind, event, obj["metadata"]["name"])))
    clusters = next(kind for kind in WATCHED_KINDS if kind.kind == "Cluster")
    informer = children.informers[clusters]
    children.start()
    try:
        await asyncio.wait_for(children.synced(), 10)
        assert not informer.served and informer.store == {}
        kube_api.call(declare_cnpg)  # CloudNativePG installed: its CRD's event wakes the Cluster informer
        await until(lambda: informer.served, timeout=5)  # well before the next look (NOT_SERVED_SECONDS)
        assert ("CustomResourceDefinition", "ADDED", "clusters.postgresql.cnpg.io") in seen
    finally:
        await children.close()


async def test_an_event_longer_than_aiohttp_lines_arrives_whole(kube_api: KubeApiHandle, client: KubeClient) -> None:
    events: list[dict[str, Any]] = []
    informer = Informer(
        client, "v1", "ConfigMap", params={"labelSelector": TENANT_LABEL}, on_event=lambda _, obj: events.append(obj)
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        big = "0123456789abcdef" * 40_000  # 640 KB on one line of the watch stream
        kube_api.request("POST", CONFIGMAPS, configmap("big", data=big))
        kube_api.request("POST", CONFIGMAPS, configmap("small"))
        await until(lambda: len(events) >= 2)
        assert [obj["metadata"]["name"] for obj in events] == ["big", "small"]
        assert events[0]["data"]["k"] == big
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_watch_errors_are_refused_not_stored() -> None:
    informer = Informer(None, "v1", "ConfigMap")  # type: ignore[arg-type]
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}
    with pytest.raises(Expired):
        informer.apply(gone, "5")
    forbidden = {"type": "ERROR", "object": {"kind": "Status", "code": 403, "reason": "Forbidden", "message": "no"}}
    with pytest.raises(KubeError) as refused:
        informer.apply(forbidden, "5")
    assert (refused.value.status, refused.value.reason) == (403, "Forbidden")
    with pytest.raises(KubeError, match="an event of type 'SYNC'"):
        informer.apply({"type": "SYNC", "object": {"metadata": {"name": "x"}}}, "5")
    bookmark = {"type": "BOOKMARK", "object": {"kind": "ConfigMap", "metadata": {"resourceVersion": "9"}}}
    assert informer.apply(bookmark, "5") == "9" and informer.store == {}


def test_the_crd_kind_is_watched_by_name() -> None:
    crds = next(kind for kind in WATCHED_KINDS if not kind.labelled)
    assert isinstance(crds, WatchedKind) and crds.selection == {
        "fieldSelector": "metadata.name=clusters.postgresql.cnpg.io"
    }


async def test_a_watch_of_a_kind_no_longer_served_is_an_error_not_an_empty_stream(client: KubeClient) -> None:
    clusters = Informer(client, "postgresql.cnpg.io/v1", "Cluster")
    with pytest.raises(KubeError) as refused:
        await clusters.watch_once("1")
    assert refused.value.status == 404  # run() then lists again, finds it not served and waits


async def test_a_login_after_a_401_does_not_cut_the_watches_streaming(
    kube_api: KubeApiHandle, client: KubeClient
) -> None:
    events: list[str] = []
    informer = Informer(
        client, "v1", "ConfigMap", params={"labelSelector": TENANT_LABEL},
        on_event=lambda _, obj: events.append(obj["metadata"]["name"]),
    )  # fmt: skip
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        kube_api.request("POST", CONFIGMAPS, configmap("first"))
        await until(lambda: events == ["first"])
        watching = await client._connect()
        assert await client._connect(refused=watching) is not watching  # a request got a 401: logged in again
        kube_api.request("POST", CONFIGMAPS, configmap("second"))
        await until(lambda: events == ["first", "second"], timeout=5)  # the open watch still streams
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Pages:
    """A list answered in pages, its items without kind and apiVersion, as a real API server sends
    built-in kinds; every list refused when ``refuse`` is set."""

    def __init__(self, refuse: bool = False) -> None:
        self.asked: list[dict[str, str]] = []
        self.refuse = refuse

    async def list(self, api_version: str, kind: str, params: dict[str, str]) -> dict[str, Any]:
        self.asked.append(dict(params))
        if self.refuse:
            raise KubeError(403, "Forbidden", "configmaps is forbidden")
        page = 0 if "continue" not in params else int(params["continue"])
        items = [{"metadata": {"name": f"cm-{page}-{n}", "namespace": "polite-a"}} for n in range(2)]
        meta = {"resourceVersion": "42", **({"continue": str(page + 1)} if page < 2 else {})}
        return {"kind": "ConfigMapList", "metadata": meta, "items": items}


async def test_a_list_is_read_page_by_page_and_its_items_get_their_kind() -> None:
    pages = Pages()
    informer = Informer(pages, "v1", "ConfigMap", params={"labelSelector": TENANT_LABEL})  # type: ignore[arg-type]
    assert await informer.relist() == "42"
    assert [asked.get("continue") for asked in pages.asked] == [None, "1", "2"]
    assert all(asked["labelSelector"] == TENANT_LABEL and asked["limit"] == "500" for asked in pages.asked)
    assert len(informer.store) == 6
    assert {(obj["apiVersion"], obj["kind"]) for obj in informer.store.values()} == {("v1", "ConfigMap")}


async def test_a_kind_the_api_will_not_list_fails_the_reconcile_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("politetenant.operator.runtime.watched.SYNC_SECONDS", 0.3)
    children = Children(Pages(refuse=True), lambda *_: None)  # type: ignore[arg-type]
    children.start()
    try:
        with pytest.raises(KubeError, match="could not list Namespace, ServiceAccount, ConfigMap"):
            await children.synced()
    finally:
        await children.close()


async def test_a_watch_the_server_ends_is_resumed_without_listing_again(
    kube_api: KubeApiHandle, client: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("politetenant.operator.kube.informer.WATCH_SECONDS", 1)  # the server ends it after 1 s
    monkeypatch.setattr("politetenant.operator.kube.informer.QUICK_END_SECONDS", 0.1)
    events: list[str] = []
    informer = Informer(
        client, "v1", "ConfigMap", params={"labelSelector": TENANT_LABEL},
        on_event=lambda _, obj: events.append(obj["metadata"]["name"]),
    )  # fmt: skip
    mark = kube_api.request_count()
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        await asyncio.sleep(2.5)  # two watches ended by the server, each resumed
        kube_api.request("POST", CONFIGMAPS, configmap("later"))
        await until(lambda: events == ["later"])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    verbs = [r.verb for r in kube_api.requests_served(mark) if r.path == "/api/v1/configmaps"]
    assert verbs.count("list") == 1 and verbs.count("watch") >= 3
