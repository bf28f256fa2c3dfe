"""Fields an update may not change (tests/fakes/kube_immutable.py): each rule refuses with the server's
message, and the changes the rule allows still pass.

Requests go over HTTP to an emulator with ``strict=False`` and only these checks, so every refusal is
this module's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.kube_immutable import RESIZE_MESSAGE, admit_pvc_resize, check_immutable, semantic
from tests.fakes.kube_server import ApiResponse, KubeApiHandle, running_kube_api

Body = dict[str, Any]
MERGE = "application/merge-patch+json"
APPS = "/apis/apps/v1/namespaces/default"
CORE = "/api/v1/namespaces/default"
JOBS = "/apis/batch/v1/namespaces/default/jobs"
CLASSES = "/apis/storage.k8s.io/v1/storageclasses"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApiHandle]:
    with running_kube_api(strict=False) as handle:
        handle.call(lambda emulator: emulator.validators.extend([check_immutable, admit_pvc_resize]))
        for name, expandable in (("expandable", True), ("fixed", False)):
            body = {"metadata": {"name": name}, "provisioner": "example.com/disk", "allowVolumeExpansion": expandable}
            assert handle.request("POST", CLASSES, body).status == 201
        yield handle


_names = iter(range(1, 1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def create(kube: KubeApiHandle, path: str, body: Body) -> Body:
    answer = kube.request("POST", path, body)
    assert answer.status == 201, answer.body
    created: Body = answer.body
    return created


def patch(kube: KubeApiHandle, path: str, body: Body) -> ApiResponse:
    return kube.request("PATCH", path, body, content_type=MERGE)


def put(kube: KubeApiHandle, path: str, body: Body) -> ApiResponse:
    return kube.request("PUT", path, body)


def causes(answer: ApiResponse) -> list[tuple[str, str]]:
    assert (answer.status, answer.reason) == (422, "Invalid"), answer.body
    return [(c["field"], c["message"]) for c in answer.body["details"]["causes"]]


def template(app: str, image: str = "nginx:1.27") -> Body:
    return {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "web", "image": image}]}}


def workload(kind: str, name: str, **spec: Any) -> Body:
    base = {"selector": {"matchLabels": {"app": name}}, "template": template(name)}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": {**base, **spec}}


def claim_template(storage: str) -> Body:
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}}
    return {"metadata": {"name": "data"}, "spec": spec}


# --- apps ----------------------------------------------------------------------------------------------


def test_a_statefulset_spec_changes_only_in_the_fields_the_server_allows(kube: KubeApiHandle) -> None:
    name = unique("db")
    path = f"{APPS}/statefulsets/{name}"
    body = workload("StatefulSet", name, serviceName=name, replicas=1, volumeClaimTemplates=[claim_template("1Gi")])
    create(kube, f"{APPS}/statefulsets", body)
    allowed = {
        "replicas": 3,
        "template": template(name, "nginx:1.28"),
        "updateStrategy": {"type": "OnDelete"},
        "minReadySeconds": 5,
        "ordinals": {"start": 1},
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"},
        "podManagementPolicy": "OrderedReady",  # the default, stated: no change
        "volumeClaimTemplates": [claim_template("1024Mi")],  # the same quantity
    }

    assert patch(kube, path, {"spec": allowed}).status == 200
    for change in ({"serviceName": "other"}, {"volumeClaimTemplates": [claim_template("2Gi")]}):
        refused = patch(kube, path, {"spec": change})
        assert causes(refused) == [
            (
                "spec",
                "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
                "'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            )
        ]
        assert refused.body["message"].startswith(f'StatefulSet.apps "{name}" is invalid: spec: Forbidden: ')


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "DaemonSet"])
def test_a_workload_selector_is_immutable_and_its_template_is_not(kube: KubeApiHandle, kind: str) -> None:
    name = unique(kind.lower())
    path = f"{APPS}/{kind.lower()}s/{name}"
    create(kube, f"{APPS}/{kind.lower()}s", workload(kind, name))
    new_template = template(name, "nginx:1.28")
    new_template["metadata"]["labels"]["tier"] = "web"

    assert patch(kube, path, {"spec": {"template": new_template}}).status == 200
    refused = patch(kube, path, {"spec": {"selector": {"matchLabels": {"app": name, "tier": "web"}}}})
    shown = f'{{"matchLabels":{{"app":"{name}","tier":"web"}}}}'
    assert causes(refused) == [("spec.selector", f"Invalid value: {shown}: field is immutable")]


# --- batch -----------------------------------------------------------------------------------------------


def job(name: str, *, suspend: bool = False) -> Body:
    spec = {
        "suspend": suspend,
        "template": {**template(name), "spec": {**template(name)["spec"], "restartPolicy": "Never"}},
    }
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def test_a_job_template_and_selector_are_immutable(kube: KubeApiHandle) -> None:
    name = unique("job")
    created = create(kube, JOBS, job(name))
    changed = copy.deepcopy(created["spec"]["template"])
    changed["spec"]["nodeSelector"] = {"disk": "ssd"}

    template_refused = patch(kube, f"{JOBS}/{name}", {"spec": {"template": changed}})
    selector_refused = patch(kube, f"{JOBS}/{name}", {"spec": {"selector": {"matchLabels": {"a": "b"}}}})

    assert [f for f, _ in causes(template_refused)] == ["spec.template"]
    assert causes(template_refused)[0][1].endswith(": field is immutable")
    assert causes(selector_refused) == [
        ("spec.selector", 'Invalid value: {"matchLabels":{"a":"b"}}: field is immutable')
    ]
    assert patch(kube, f"{JOBS}/{name}", {"spec": {"suspend": True}}).status == 200


def test_a_suspended_job_that_never_ran_may_change_its_scheduling_directives_only(kube: KubeApiHandle) -> None:
    name = unique("queued")
    path = f"{JOBS}/{name}"
    created = create(kube, JOBS, job(name, suspend=True))
    scheduled = copy.deepcopy(created["spec"]["template"])
    scheduled["metadata"]["annotations"] = {"queue": "gpu"}
    scheduled["spec"]["nodeSelector"] = {"disk": "ssd"}
    scheduled["spec"]["tolerations"] = [{"key": "gpu", "operator": "Exists"}]
    scheduled["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": None}}
    other = copy.deepcopy(scheduled)
    other["spec"]["containers"][0]["image"] = "nginx:1.28"

    assert patch(kube, path, {"spec": {"template": scheduled}}).status == 200
    assert [f for f, _ in causes(patch(kube, path, {"spec": {"template": other}}))] == ["spec.template"]
    started = kube.request(
        "PATCH", f"{path}/status", {"status": {"startTime": "2025-01-01T00:00:00Z"}}, content_type=MERGE
    )
    assert started.status == 200
    scheduled["spec"]["nodeSelector"] = {"disk": "hdd"}
    assert [f for f, _ in causes(patch(kube, path, {"spec": {"template": scheduled}}))] == ["spec.template"]


# --- core: services ---------------------------------------------------------------------------------------


def service(name: str, cluster_ip: str | None = None, **spec: Any) -> Body:
    body: Body = {"metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}}
    if cluster_ip is not None:
        body["spec"]["clusterIP"] = cluster_ip
    return body


def test_a_cluster_ip_may_not_change_once_set(kube: KubeApiHandle) -> None:
    name = unique("svc")
    create(kube, f"{CORE}/services", service(name, "10.96.0.10"))

    for new_ip in ("10.96.0.11", "None"):
        refused = patch(kube, f"{CORE}/services/{name}", {"spec": {"clusterIP": new_ip}})
        assert causes(refused) == [("spec.clusterIPs[0]", f'Invalid value: ["{new_ip}"]: may not change once set')]
        assert refused.body["message"].startswith(f'Service "{name}" is invalid: spec.clusterIPs[0]: Invalid value')


def test_an_update_without_the_cluster_ip_keeps_the_allocated_one(kube: KubeApiHandle) -> None:
    name = unique("kept")
    create(kube, f"{CORE}/services", service(name, "10.96.0.20"))

    replaced = put(kube, f"{CORE}/services/{name}", service(name, ports=[{"port": 8080}]))
    nulled = patch(kube, f"{CORE}/services/{name}", {"spec": {"clusterIP": None}})

    assert replaced.status == 200 and replaced.body["spec"]["clusterIP"] == "10.96.0.20"
    assert nulled.status == 200 and nulled.body["spec"]["clusterIP"] == "10.96.0.20"


def test_headless_and_external_name_services_and_a_first_address_pass(kube: KubeApiHandle) -> None:
    headless, external, unset = unique("headless"), unique("external"), unique("unset")
    create(kube, f"{CORE}/services", service(headless, "None"))
    create(
        kube,
        f"{CORE}/services",
        {"metadata": {"name": external}, "spec": {"type": "ExternalName", "externalName": "a.example"}},
    )
    create(kube, f"{CORE}/services", service(unset))

    assert patch(kube, f"{CORE}/services/{headless}", {"spec": {"ports": [{"port": 81}]}}).status == 200
    assert (
        patch(kube, f"{CORE}/services/{external}", {"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.30"}}).status
        == 200
    )
    assert patch(kube, f"{CORE}/services/{unset}", {"spec": {"clusterIP": "10.96.0.31"}}).status == 200


# --- core: persistent volume claims ---------------------------------------------------------------------


def bound_claim(kube: KubeApiHandle, storage_class: str | None, storage: str = "1Gi") -> str:
    name = unique("claim")
    spec: Body = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    create(kube, f"{CORE}/persistentvolumeclaims", {"metadata": {"name": name}, "spec": spec})
    status = {"status": {"phase": "Bound", "capacity": {"storage": storage}}}
    path = f"{CORE}/persistentvolumeclaims/{name}"
    assert kube.request("PATCH", f"{path}/status", status, content_type=MERGE).status == 200
    assert patch(kube, path, {"spec": {"volumeName": f"pv-{name}"}}).status == 200  # binding sets it once
    return path


def storage(size: str) -> Body:
    return {"spec": {"resources": {"requests": {"storage": size}}}}


def test_a_bound_claim_grows_when_its_storage_class_allows_expansion(kube: KubeApiHandle) -> None:
    path = bound_claim(kube, "expandable")

    assert patch(kube, path, storage("2Gi")).status == 200
    assert patch(kube, path, storage("2048Mi")).status == 200  # the same size: no change


@pytest.mark.parametrize("storage_class", ["fixed", None, "missing"])
def test_a_claim_cannot_grow_without_an_expandable_storage_class(
    kube: KubeApiHandle, storage_class: str | None
) -> None:
    path = bound_claim(kube, storage_class)

    refused = patch(kube, path, storage("2Gi"))

    name = path.rsplit("/", 1)[1]
    assert (refused.status, refused.reason) == (403, "Forbidden")
    assert refused.body["message"] == f'persistentvolumeclaims "{name}" is forbidden: {RESIZE_MESSAGE}'
    assert RESIZE_MESSAGE.startswith("only dynamically provisioned pvc can be resized and the storageclass")


def test_a_claim_request_may_shrink_only_while_above_its_capacity(kube: KubeApiHandle) -> None:
    path = bound_claim(kube, "expandable", "1Gi")
    assert patch(kube, path, storage("3Gi")).status == 200  # expansion asked, capacity still 1Gi

    assert patch(kube, path, storage("2Gi")).status == 200  # recovering from a failed expansion
    refused = patch(kube, path, storage("1Gi"))

    assert causes(refused) == [
        ("spec.resources.requests.storage", "Forbidden: field can not be less than status.capacity")
    ]


def test_the_rest_of_a_claim_spec_is_immutable(kube: KubeApiHandle) -> None:
    path = bound_claim(kube, "expandable")

    refused = patch(kube, path, {"spec": {"accessModes": ["ReadWriteMany"], "volumeName": "another"}})

    ((field, message),) = causes(refused)
    assert field == "spec"
    assert message.startswith(
        "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName "
        "for bound claims\n"
    )


def test_an_unbound_claim_may_not_change_its_request(kube: KubeApiHandle) -> None:
    name = unique("pending")
    spec = {"accessModes": ["ReadWriteOnce"], "storageClassName": "expandable", **storage("1Gi")["spec"]}
    create(kube, f"{CORE}/persistentvolumeclaims", {"metadata": {"name": name}, "spec": spec})

    refused = patch(kube, f"{CORE}/persistentvolumeclaims/{name}", storage("2Gi"))

    assert [f for f, _ in causes(refused)] == ["spec"]


# --- core: immutable config maps and secrets -------------------------------------------------------------


def test_an_immutable_config_map_keeps_its_data(kube: KubeApiHandle) -> None:
    name = unique("frozen")
    path = f"{CORE}/configmaps/{name}"
    create(kube, f"{CORE}/configmaps", {"metadata": {"name": name}, "data": {"k": "v"}, "immutable": True})
    message = "Forbidden: field is immutable when `immutable` is set"

    assert patch(kube, path, {"metadata": {"labels": {"a": "b"}}}).status == 200
    assert causes(patch(kube, path, {"data": {"k": "w"}, "binaryData": {"b": "AA=="}})) == [
        ("data", message),
        ("binaryData", message),
    ]
    assert causes(patch(kube, path, {"immutable": False})) == [("immutable", message)]


def test_a_mutable_config_map_changes_freely(kube: KubeApiHandle) -> None:
    name = unique("open")
    create(kube, f"{CORE}/configmaps", {"metadata": {"name": name}, "data": {"k": "v"}})

    assert patch(kube, f"{CORE}/configmaps/{name}", {"data": {"k": "w"}, "immutable": True}).status == 200


def test_an_immutable_secret_keeps_its_data_and_every_secret_its_type(kube: KubeApiHandle) -> None:
    frozen, typed = unique("frozen"), unique("typed")
    create(kube, f"{CORE}/secrets", {"metadata": {"name": frozen}, "data": {"k": "dg=="}, "immutable": True})
    create(kube, f"{CORE}/secrets", {"metadata": {"name": typed}, "stringData": {"k": "v"}})
    message = "Forbidden: field is immutable when `immutable` is set"

    assert causes(patch(kube, f"{CORE}/secrets/{frozen}", {"stringData": {"k": "w"}})) == [("data", message)]
    assert patch(kube, f"{CORE}/secrets/{frozen}", {"stringData": {"k": "v"}}).status == 200  # the same data
    assert causes(patch(kube, f"{CORE}/secrets/{typed}", {"type": "kubernetes.io/tls"})) == [
        ("type", 'Invalid value: "kubernetes.io/tls": field is immutable')
    ]
    assert patch(kube, f"{CORE}/secrets/{typed}", {"type": "Opaque", "stringData": {"k": "w"}}).status == 200


# --- custom resource definitions and what is not checked --------------------------------------------------


def test_an_established_crd_keeps_its_scope_and_names(kube: KubeApiHandle) -> None:
    plural = unique("widgets").replace("-", "")
    name = f"{plural}.example.com"
    names = {"kind": "Widget", "plural": plural, "singular": plural[:-1]}
    version = {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {"type": "object"}}}
    spec = {"group": "example.com", "names": names, "scope": "Namespaced", "versions": [version]}
    create(kube, CRDS, {"metadata": {"name": name}, "spec": spec})

    refused = patch(kube, f"{CRDS}/{name}", {"spec": {"scope": "Cluster"}})

    assert causes(refused) == [("spec.scope", 'Invalid value: "Cluster": field is immutable')]
    assert refused.body["message"].startswith(f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid')
    assert patch(kube, f"{CRDS}/{name}", {"spec": {"versions": [{**version, "served": False}]}}).status == 200


def test_status_writes_are_not_checked(kube: KubeApiHandle) -> None:
    name = unique("status")
    create(kube, f"{APPS}/deployments", workload("Deployment", name))

    answer = kube.request("PATCH", f"{APPS}/deployments/{name}/status", {"status": {"replicas": 1}}, content_type=MERGE)

    assert answer.status == 200


def test_semantic_equality_treats_empty_as_absent_and_quantities_by_value() -> None:
    assert semantic({"a": [], "b": {}, "c": None}) is None
    assert semantic({"requests": {"storage": "1Gi"}}) == semantic({"requests": {"storage": "1024Mi"}})
    assert semantic({"requests": {"storage": "1Gi"}}) != semantic({"requests": {"storage": "1G"}})
