"""Built-in objects decoded against their schema (tests/fakes/kube_builtin.py): what the real API server's
decoder refuses (400), drops (unknown fields, nulls) and its validation requires (422).

Requests go over HTTP to an emulator with ``strict=False`` and only this validator, so each refusal is
this module's; a few checks call the functions directly.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.kube_builtin import compiled, dns_label_errors, port_name_errors, validate_builtin
from tests.fakes.kube_emulator import (
    PODS,
    POLITETENANT_CRD,
    SYSTEM,
    Admission,
    ApiError,
    PoliteKubernetesEmulator,
    declare_cnpg,
    load_crd,
)
from tests.fakes.kube_server import ApiResponse, KubeApiHandle, running_kube_api

Body = dict[str, Any]
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
STATEFULSETS = "/apis/apps/v1/namespaces/default/statefulsets"
PODS_PATH = "/api/v1/namespaces/default/pods"
SECRETS = "/api/v1/namespaces/default/secrets"
MERGE = "application/merge-patch+json"


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApiHandle]:
    with running_kube_api(strict=False) as handle:
        handle.call(lambda emulator: emulator.validators.append(validate_builtin))
        yield handle


_names = iter(range(1, 1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def container(**extra: Any) -> Body:
    return {"name": "web", "image": "nginx:1.27", **extra}


def deployment(name: str, **spec: Any) -> Body:
    template = {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container()]}}
    base = {"replicas": 2, "selector": {"matchLabels": {"app": name}}, "template": template}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {**base, **spec}}


def statefulset(name: str) -> Body:
    body = deployment(name)
    body["kind"] = "StatefulSet"
    body["spec"]["serviceName"] = name
    claim_spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    body["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": claim_spec}]
    return body


def pod(name: str, **spec: Any) -> Body:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container()], **spec},
    }


def assert_refused(answer: ApiResponse, code: int, reason: str, message: str) -> None:
    assert (answer.status, answer.reason) == (code, reason), answer.body
    assert answer.body["message"] == message


# --- decoding: the wrong JSON type is 400 -----------------------------------------------------------


def test_a_value_of_the_wrong_type_is_a_decoding_error(kube: KubeApiHandle) -> None:
    answer = kube.request("POST", DEPLOYMENTS, deployment(unique("typed"), replicas="two"))

    message = (
        'Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal string into Go '
        "struct field DeploymentSpec.spec.replicas of type int32"
    )
    assert_refused(answer, 400, "BadRequest", message)


def test_the_decoder_names_the_field_path_without_list_indices(kube: KubeApiHandle) -> None:
    body = deployment(unique("ports"))
    body["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": "80"}]

    answer = kube.request("POST", DEPLOYMENTS, body)

    assert answer.status == 400
    assert answer.body["message"].endswith(
        "json: cannot unmarshal string into Go struct field ContainerPort.spec.template.spec.containers.ports"
        ".containerPort of type int32"
    )


def test_a_fraction_in_an_integer_field_and_a_list_given_as_an_object_are_decoding_errors(kube: KubeApiHandle) -> None:
    fraction = kube.request("POST", DEPLOYMENTS, deployment(unique("frac"), minReadySeconds=1.5))
    not_a_list = kube.request("POST", PODS_PATH, pod(unique("list"), containers={"name": "web"}))

    assert fraction.body["message"].endswith(
        "json: cannot unmarshal number 1.5 into Go struct field DeploymentSpec.spec.minReadySeconds of type int32"
    )
    assert not_a_list.body["message"].endswith(
        "json: cannot unmarshal object into Go struct field PodSpec.spec.containers of type []v1.Container"
    )


def test_quantities_int_or_strings_and_base64_decode_with_their_own_rules(kube: KubeApiHandle) -> None:
    quantity = pod(unique("qty"), containers=[container(resources={"limits": {"memory": "1GB"}})])
    probe = {"httpGet": {"path": "/", "port": True}}
    int_or_string = pod(unique("port"), containers=[container(readinessProbe=probe)])
    secret = {"metadata": {"name": unique("b64")}, "data": {"key": "not base64!"}}

    answers = [kube.request("POST", path, body) for path, body in ((PODS_PATH, quantity), (PODS_PATH, int_or_string))]
    answers.append(kube.request("POST", SECRETS, secret))

    assert [a.status for a in answers] == [400, 400, 400]
    pattern = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
    assert answers[0].body["message"].endswith(f"quantities must match the regular expression '{pattern}'")
    assert answers[1].body["message"].endswith("json: cannot unmarshal bool into Go value of type int32")
    assert answers[2].body["message"] == (
        'Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 3'
    )


def test_well_typed_quantities_and_named_ports_pass(kube: KubeApiHandle) -> None:
    resources = {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": 1, "memory": "1e9"}}
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5}
    ports = [{"name": "http", "containerPort": 8080}]
    body = pod(unique("fine"), containers=[container(resources=resources, readinessProbe=probe, ports=ports)])

    answer = kube.request("POST", PODS_PATH, body)

    assert answer.status == 201, answer.body
    assert answer.body["spec"]["containers"][0]["resources"] == resources


# --- unknown fields and nulls -------------------------------------------------------------------------


def test_unknown_fields_are_refused_when_strict(kube: KubeApiHandle) -> None:
    body = deployment(unique("strict"), junk=1)
    body["spec"]["template"]["spec"]["containers"][0]["colour"] = "red"

    answer = kube.request("POST", DEPLOYMENTS, body, params={"fieldValidation": "Strict"})

    message = (  # in the order of the document, as the decoder meets them
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field '
        '"spec.template.spec.containers[0].colour", unknown field "spec.junk"'
    )
    assert_refused(answer, 400, "BadRequest", message)


def test_unknown_fields_are_dropped_with_a_warning_by_default(kube: KubeApiHandle) -> None:
    answer = kube.request("POST", DEPLOYMENTS, deployment(unique("warn"), junk=1))

    assert answer.status == 201 and "junk" not in answer.body["spec"]
    assert answer.headers["Warning"] == '299 - "unknown field \\"spec.junk\\""'


def test_unknown_fields_are_dropped_silently_when_ignored(kube: KubeApiHandle) -> None:
    name = unique("ignore")
    created = kube.request("POST", DEPLOYMENTS, deployment(name))
    patched = kube.request(
        "PATCH",
        f"{DEPLOYMENTS}/{name}",
        {"spec": {"junk": 1}},
        content_type=MERGE,
        params={"fieldValidation": "Ignore"},
    )

    assert created.status == 201 and patched.status == 200
    assert "junk" not in patched.body["spec"] and "Warning" not in patched.headers


def test_a_null_field_decodes_to_nothing_and_is_dropped(kube: KubeApiHandle) -> None:
    body = deployment(unique("nulls"), paused=None)
    body["spec"]["template"]["metadata"]["creationTimestamp"] = None

    answer = kube.request("POST", DEPLOYMENTS, body)

    assert answer.status == 201
    assert "paused" not in answer.body["spec"]
    assert "creationTimestamp" not in answer.body["spec"]["template"]["metadata"]


# --- validation: required fields and names, 422 ---------------------------------------------------------


def test_a_missing_required_field_is_invalid(kube: KubeApiHandle) -> None:
    body = deployment(unique("noselector"))
    del body["spec"]["selector"]
    body["spec"]["template"]["spec"]["containers"] = [{"image": "nginx"}]

    answer = kube.request("POST", DEPLOYMENTS, body)

    assert (answer.status, answer.reason) == (422, "Invalid")
    assert answer.body["message"] == (
        f'Deployment.apps "{body["metadata"]["name"]}" is invalid: '
        "[spec.selector: Required value, spec.template.spec.containers[0].name: Required value]"
    )
    causes = answer.body["details"]["causes"]
    assert causes[0] == {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.selector"}


def test_status_written_by_controllers_needs_none_of_its_go_fields(kube: KubeApiHandle) -> None:
    name = unique("status")
    assert kube.request("POST", STATEFULSETS, statefulset(name)).status == 201
    statuses = {"name": "web", "ready": False, "image": "nginx:1.27"}  # no imageID nor restartCount
    assert kube.request("POST", PODS_PATH, pod(name)).status == 201

    set_status = kube.request(
        "PATCH", f"{STATEFULSETS}/{name}/status", {"status": {"availableReplicas": 0}}, content_type=MERGE
    )
    pod_status = kube.request(
        "PATCH", f"{PODS_PATH}/{name}/status", {"status": {"containerStatuses": [statuses]}}, content_type=MERGE
    )

    assert set_status.status == 200, set_status.body  # StatefulSetStatus lists replicas as required
    assert pod_status.status == 200, pod_status.body


def test_container_volume_and_port_names_are_checked_as_the_core_validation_does(kube: KubeApiHandle) -> None:
    ports = [{"name": "HTTP--web-interface", "containerPort": 80}]
    volumes = [{"name": "Data", "emptyDir": {}}]
    body = pod(unique("names"), containers=[container(name="Web.1", ports=ports)], volumes=volumes)

    answer = kube.request("POST", PODS_PATH, body)

    assert answer.status == 422
    fields = [(c["field"], c["message"]) for c in answer.body["details"]["causes"]]
    label = dns_label_errors("Web.1")[0]
    assert fields[:1] + fields[-1:] == [
        ("spec.containers[0].name", f'Invalid value: "Web.1": {label}'),
        ("spec.volumes[0].name", f'Invalid value: "Data": {label}'),
    ]
    assert fields[1:-1] == [
        ("spec.containers[0].ports[0].name", f'Invalid value: "HTTP--web-interface": {m}')
        for m in port_name_errors("HTTP--web-interface")
    ]
    assert label.startswith("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'")


def test_name_rules_follow_apimachinery() -> None:
    assert dns_label_errors("web-1") == [] and port_name_errors("http-alt") == []
    assert dns_label_errors("a.b") == ["must not contain dots"]
    assert port_name_errors("8080") == ["must contain at least one letter (a-z)"]
    assert port_name_errors("-a") == ["must not begin or end with a hyphen"]
    assert port_name_errors("a" * 16) == ["must be no more than 15 characters"]


# --- what passes unchecked, and the cache ------------------------------------------------------------


def test_the_project_crds_and_a_full_statefulset_pass(kube: KubeApiHandle) -> None:
    emulator = PoliteKubernetesEmulator(strict=False, validators=[validate_builtin])

    load_crd(emulator, POLITETENANT_CRD)
    declare_cnpg(emulator)
    answer = kube.request("POST", STATEFULSETS, statefulset(unique("db")))

    assert answer.status == 201, answer.body


def direct(obj: Body, operation: str = "CREATE") -> Admission:
    emulator = PoliteKubernetesEmulator(strict=False, builtins=True)
    name = obj["metadata"]["name"]
    return Admission(operation, PODS, "Pod", name, "default", obj, None, SYSTEM, None, False, emulator, "Warn")


def test_deletes_and_kinds_without_a_schema_pass_unchecked() -> None:
    broken = pod("broken", containers="nope")
    validate_builtin(direct(copy.deepcopy(broken), "DELETE"))
    unknown = direct(copy.deepcopy(broken))
    unknown.kind = "NoSuchKind"
    validate_builtin(unknown)
    with pytest.raises(ApiError) as refused:
        validate_builtin(direct(broken))

    assert refused.value.code == 400
    assert compiled("", "v1", "NoSuchKind") is None


def test_each_kind_is_compiled_once() -> None:
    assert compiled("", "v1", "Pod") is compiled("", "v1", "Pod")
    assert compiled("apps", "v1", "StatefulSet") is not None
