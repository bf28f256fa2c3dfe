"""CRD validation rules (CEL) and string formats in the emulator (tests/fakes/kube_cel.py), each behaviour
against the CRD documentation it cites: small CRDs written here, then the real PoliteTenant and
CloudNativePG CRDs. Creates run in-process; updates go over HTTP, by PUT and each patch type."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from tests.fakes.kube_cel import check_crd_rules, validate_custom_resource
from tests.fakes.kube_emulator import (
    POLITETENANT_CRD,
    SYSTEM,
    Admission,
    ApiError,
    PoliteKubernetesEmulator,
    load_crd,
)
from tests.fakes.kube_formats import format_valid
from tests.fakes.kube_server import KubeApiHandle, running_kube_api

Body = dict[str, Any]
TENANTS = "/apis/polite.io/v1alpha1/politetenants"
WIDGETS = "/apis/cel.example.com/v1/namespaces/default/widgets"
# CloudNativePG's own Cluster CRD, from the project's reference data (read-only, not in the repository).
CNPG_CRD = Path("/work/shared/data/cnpg/postgresql.cnpg.io_clusters.yaml")
needs_cnpg = pytest.mark.skipif(not CNPG_CRD.exists(), reason=f"{CNPG_CRD} is not on this machine")
MERGE, JSON_PATCH, APPLY = "application/merge-patch+json", "application/json-patch+json", "application/apply-patch+yaml"


def crd(spec: Body, kind: str = "Widget", status: Body | None = None) -> Body:
    """A namespaced CRD of group cel.example.com whose spec (and status) follow the given schemas."""
    properties = {"spec": spec, **({"status": status} if status else {})}
    schema = {"type": "object", "properties": properties}
    version = {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
    if status:
        version["subresources"] = {"status": {}}
    plural = kind.lower() + "s"
    names = {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"}
    body = {"group": "cel.example.com", "names": names, "scope": "Namespaced", "versions": [version]}
    meta = {"name": f"{plural}.cel.example.com"}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": meta, "spec": body}


def obj(name: str, spec: Body, kind: str = "Widget") -> Body:
    return {"apiVersion": "cel.example.com/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def strings(**properties: Body) -> Body:
    return {"type": "object", "properties": {name: {"type": "string", **p} for name, p in properties.items()}}


def loaded(*crds: Body) -> tuple[PoliteKubernetesEmulator, list[kmock.resource]]:
    emulator = PoliteKubernetesEmulator(strict=False, validators=[validate_custom_resource])
    resources = [load_crd(emulator, each)[0] for each in crds]
    for each in crds:
        assert check_crd_rules(each) == []
    return emulator, resources


def create(emulator: PoliteKubernetesEmulator, res: kmock.resource, body: Body) -> Body:
    return emulator.create_object(res, body, namespace="default")


def refusal(action: Callable[[], object]) -> Body:
    with pytest.raises(ApiError) as caught:
        action()
    status: Body = caught.value.status
    assert (status["code"], status["reason"]) == (422, "Invalid")
    return status


def causes(status: Body) -> list[tuple[str, str, str]]:
    return [(c["field"], c["reason"], c["message"]) for c in status["details"]["causes"]]


RANGE = {
    "type": "object",
    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
    "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}],
}


def test_a_rule_accepts_a_valid_object_and_refuses_an_invalid_one_with_its_message() -> None:
    emulator, (res,) = loaded(crd(RANGE))
    create(emulator, res, obj("ok", {"min": 1, "max": 2}))
    status = refusal(lambda: create(emulator, res, obj("bad", {"min": 3, "max": 2})))
    message = 'spec: Invalid value: "object": min must not exceed max'
    assert status["message"] == f'Widget.cel.example.com "bad" is invalid: {message}'
    assert causes(status) == [("spec", "FieldValueInvalid", 'Invalid value: "object": min must not exceed max')]
    assert [status["details"][k] for k in ("name", "group", "kind")] == ["bad", "cel.example.com", "Widget"]


def test_rules_run_on_each_list_item_and_map_value_under_their_own_path() -> None:
    port = {"type": "integer", "x-kubernetes-validations": [{"rule": "self > 0", "message": "positive"}]}
    lists = {"ports": {"type": "array", "items": port}, "weights": {"type": "object", "additionalProperties": port}}
    emulator, (res,) = loaded(crd({"type": "object", "properties": lists}))
    body = {"ports": [80, 0, -1], "weights": {"a": 1, "b": 0}}
    status = refusal(lambda: create(emulator, res, obj("w", body)))
    fields = [field for field, _, _ in causes(status)]
    assert fields == ["spec.ports[1]", "spec.ports[2]", "spec.weights[b]"]
    assert causes(status)[0][2] == 'Invalid value: "integer": positive'


def test_the_message_comes_from_message_expression_else_message_else_the_rule() -> None:
    rules = [
        {"rule": "self.min <= self.max", "messageExpression": "'min ' + string(self.min) + ' exceeds max'"},
        {"rule": "self.min < 100", "message": "min too big", "messageExpression": "self.nothing"},  # fails
        {"rule": "self.max > 5"},
    ]
    emulator, (res,) = loaded(crd({**RANGE, "x-kubernetes-validations": rules}))
    status = refusal(lambda: create(emulator, res, obj("bad", {"min": 300, "max": 2})))
    details = ["min 300 exceeds max", "min too big", "failed rule: self.max > 5"]
    assert [m for _, _, m in causes(status)] == [f'Invalid value: "object": {detail}' for detail in details]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("FieldValueForbidden", "Forbidden: max is out of range"),
        ("FieldValueRequired", "Required value: max is out of range"),
        ("FieldValueDuplicate", 'Duplicate value: "object"'),  # field.Duplicate carries no detail
        (None, 'Invalid value: "object": max is out of range'),
    ],
)
def test_reason_and_field_path_shape_the_cause(reason: str | None, expected: str) -> None:
    rule = {"rule": "self.max < 10", "message": "max is out of range", "fieldPath": ".max"}
    emulator, (res,) = loaded(
        crd({**RANGE, "x-kubernetes-validations": [rule | ({"reason": reason} if reason else {})]})
    )
    status = refusal(lambda: create(emulator, res, obj("bad", {"min": 1, "max": 20})))
    assert causes(status) == [("spec.max", reason or "FieldValueInvalid", expected)]


IMMUTABLE = strings(size={"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "size is immutable"}]})


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApiHandle]:
    crds: list[Path | Body] = [POLITETENANT_CRD, crd(IMMUTABLE)]
    with running_kube_api(crds=crds, strict=False, validators=[validate_custom_resource]) as handle:
        yield handle


@pytest.mark.parametrize("how", ["put", "merge", "json", "apply"])
def test_a_transition_rule_refuses_a_change_by_any_update_but_not_a_create(kube: KubeApiHandle, how: str) -> None:
    name = f"w-{how}"
    created = kube.request("POST", WIDGETS, obj(name, {"size": "small"}))
    assert created.status == 201, created.body
    change = {
        "put": ("PUT", None, created.body | {"spec": {"size": "large"}}),
        "merge": ("PATCH", MERGE, {"spec": {"size": "large"}}),
        "json": ("PATCH", JSON_PATCH, [{"op": "replace", "path": "/spec/size", "value": "large"}]),
        "apply": ("PATCH", APPLY, obj(name, {"size": "large"})),
    }
    method, content_type, body = change[how]
    params = {"fieldManager": "test"} if how == "apply" else None
    answer = kube.request(method, f"{WIDGETS}/{name}", body, content_type=content_type, params=params)
    immutable = 'spec.size: Invalid value: "string": size is immutable'
    assert (answer.status, answer.body["message"]) == (422, f'Widget.cel.example.com "{name}" is invalid: {immutable}')
    unchanged = kube.request("PATCH", f"{WIDGETS}/{name}", {"metadata": {"labels": {"a": "b"}}}, content_type=MERGE)
    assert unchanged.status == 200, unchanged.body


def test_a_transition_rule_lets_a_value_absent_before_be_set(kube: KubeApiHandle) -> None:
    path = f"{WIDGETS}/late"
    assert kube.request("POST", WIDGETS, obj("late", {})).status == 201
    assert kube.request("PATCH", path, {"spec": {"size": "small"}}, content_type=MERGE).status == 200
    assert kube.request("PATCH", path, {"spec": {"size": "large"}}, content_type=MERGE).status == 422


def admit(
    emulator: PoliteKubernetesEmulator, res: kmock.resource, new: Body, old: Body | None = None, sub: str | None = None
) -> None:
    """One admission, as the emulator builds it, given straight to the validator."""
    operation, name = "CREATE" if old is None else "UPDATE", new["metadata"]["name"]
    validate_custom_resource(
        Admission(operation, res, "Widget", name, "default", new, old, SYSTEM, sub, False, emulator)
    )


def test_optional_old_self_runs_the_rule_on_create_with_an_empty_old_self() -> None:
    rule = {"rule": "oldSelf.hasValue() ? self >= oldSelf.value() : self == 'a'", "optionalOldSelf": True}
    emulator, (res,) = loaded(crd(strings(level={"x-kubernetes-validations": [rule]})))
    admit(emulator, res, obj("w", {"level": "a"}))
    refusal(lambda: admit(emulator, res, obj("w", {"level": "b"})))
    admit(emulator, res, obj("w", {"level": "c"}), obj("w", {"level": "b"}))
    refusal(lambda: admit(emulator, res, obj("w", {"level": "a"}), obj("w", {"level": "b"})))


def test_ratcheting_turns_an_error_on_an_unchanged_value_into_a_warning() -> None:
    spec = strings(
        name={"x-kubernetes-validations": [{"rule": "self.size() < 4", "message": "too long"}]}, when={"format": "date"}
    )
    emulator, (res,) = loaded(crd(spec))
    old = obj("w", {"name": "longer", "when": "someday"})
    admit(emulator, res, obj("w", {"name": "longer", "when": "someday"}), old)
    assert emulator._warnings == ['spec.name: Invalid value: "string": too long']
    status = refusal(lambda: admit(emulator, res, obj("w", {"name": "longest", "when": "someday"}), old))
    assert [field for field, _, _ in causes(status)] == ["spec.name"]
    status = refusal(lambda: admit(emulator, res, obj("w", {"name": "longer", "when": "tomorrow"}), old))
    assert [field for field, _, _ in causes(status)] == ["spec.when", "<nil>"]  # a bad format blocks the rules


def test_a_status_write_checks_formats_under_status_only_and_the_rules_everywhere() -> None:
    status_schema = strings(seen={"format": "date-time"}, phase={"x-kubernetes-validations": [{"rule": "self != ''"}]})
    emulator, (res,) = loaded(crd(strings(when={"format": "date"}), status=status_schema))
    stored = obj("w", {"when": "someday"})
    odd = obj("w", {"when": "otherday"})  # a spec /status cannot change: only the status is format-checked
    admit(emulator, res, odd | {"status": {"seen": "2024-05-01T10:00:00Z"}}, stored, sub="status")
    refusal(lambda: admit(emulator, res, odd, stored))
    bad = stored | {"status": {"seen": "yesterday"}}
    status = refusal(lambda: admit(emulator, res, bad, stored, sub="status"))
    assert [field for field, _, _ in causes(status)] == ["status.seen", "<nil>"]
    status = refusal(lambda: admit(emulator, res, stored | {"status": {"phase": ""}}, stored, sub="status"))
    assert causes(status)[0][:2] == ("status.phase", "FieldValueInvalid")


FORMAT_CASES = {
    "date-time": (["2024-05-01T10:00:00Z", "2024-05-01t10:00:00.5+02:00"], ["abc", "2024-02-30T10:00:00Z"]),
    "date": (["2024-02-29"], ["2023-02-29", "2024-5-01"]),
    "byte": (["aGVsbG8="], ["aGVsbG8", ""]),
    "uuid": (["123e4567-e89b-12d3-a456-426614174000", "123E4567E89B12D3A456426614174000"], ["not-a-uuid"]),
    "uuid3": (["a3bb189e-8bf9-3888-9912-ace4e6543002"], ["123e4567-e89b-42d3-a456-426614174000"]),
    "uuid4": (["123e4567-e89b-42d3-a456-426614174000"], ["123e4567-e89b-42d3-c456-426614174000"]),
    "uuid5": (["886313e1-3b8a-5372-9b90-0c9aee199e5d"], ["886313e1-3b8a-4372-9b90-0c9aee199e5d"]),
    "ipv4": (["192.168.1.1", "192.168.1.01", "::ffff:1.2.3.4"], ["198.168.254.2.2", "256.0.0.1", "::1"]),
    "ipv6": (["::1", "2001:db8::1", "::ffff:1.2.3.4"], ["127.0.0.1", "fe80::1%eth0", "1::2::3", "00000::1"]),
    "cidr": (["192.0.2.1/24", "192.0.02.1/24", "2001:db8::1/32"], ["198.168.254.2", "10.0.0.0/33"]),
    "hostname": (
        ["x-y", "www.example-hyphenated.org", "ex$ample", "www.詹姆斯.london"],
        ["www-", "a.b.c.d", "1.1.1.1"],
    ),
    "email": (['"Fred Bloggs"@example.com', "Bob <bob@example.com>", "root@localhost"], ["a..b@c.com", "a@b@c"]),
    "uri": (["http://somewhere.com", "/path", "mailto:a@b.c"], ["somewhere.com", "http://h/%zz", "http://ex ample/"]),
    "duration": (["1h30m", "-1.5s", "0", "3 days", "2 weeks"], ["abc", "1x", "h"]),
    "mac": (["01:02:03:04:05:06", "0000.5e00.5301"], ["01:02:03:04:05", "01:02-03:04:05:06"]),
    "isbn": (["0321751043", "978-0321751041"], ["836217463"]),
    "creditcard": (["4111-1111-1111-1111"], ["9999-9999-9999-999"]),
    "ssn": (["111-11-1111", "999 99 9999"], ["999 99 999"]),
    "hexcolor": (["#FFFFFF", "fff"], ["#fffffffz"]),
    "rgbcolor": (["rgb(255,255,255)"], ["rgb(300,0,0)"]),
    "bsonobjectid": (["507f1f77bcf86cd799439011"], ["507f1f77bcf86cd79943901z"]),
    "k8s-short-name": (["my-name"], ["My-name"]),
}


@pytest.mark.parametrize("form", sorted(FORMAT_CASES))
def test_each_format_accepts_and_refuses_as_the_server_does(form: str) -> None:
    valid, invalid = FORMAT_CASES[form]
    assert [format_valid(form, value) for value in valid] == [True] * len(valid)
    assert [format_valid(form, value) for value in invalid] == [False] * len(invalid)


def test_a_bad_format_is_refused_with_the_server_message_and_blocks_the_rules() -> None:
    spec = strings(x={"format": "date-time"}, y={"format": "no-such-format"})
    emulator, (res, ruled) = loaded(crd(spec), crd({**spec, "x-kubernetes-validations": [{"rule": "false"}]}, "Ruled"))
    create(emulator, res, obj("ok", {"x": "2024-05-01T10:00:00Z", "y": "anything"}))
    status = refusal(lambda: create(emulator, res, obj("bad", {"x": "abc"})))
    typed = ("spec.x", "FieldValueTypeInvalid", 'Invalid value: "abc": spec.x in body must be of type date-time: "abc"')
    assert causes(status) == [typed]
    assert status["message"] == f'Widget.cel.example.com "bad" is invalid: spec.x: {typed[2]}'
    status = refusal(lambda: create(emulator, ruled, obj("bad", {"x": "abc"}, kind="Ruled")))
    not_checked = "some validation rules were not checked because the object was invalid; correct the existing errors"
    assert causes(status) == [
        typed,
        ("<nil>", "FieldValueInvalid", f'Invalid value: "null": {not_checked} to complete validation'),
    ]


def test_formatted_strings_reach_rules_as_cel_types() -> None:
    spec = strings(
        timeout={"format": "duration", "x-kubernetes-validations": [{"rule": "self <= duration('1h')"}]},
        since={
            "format": "date-time",
            "x-kubernetes-validations": [{"rule": "self > timestamp('2020-01-01T00:00:00Z')"}],
        },
    )
    emulator, (res,) = loaded(crd(spec))
    admit(emulator, res, obj("w", {"timeout": "30m", "since": "2024-05-01T10:00:00Z"}))
    status = refusal(lambda: admit(emulator, res, obj("w", {"timeout": "2h", "since": "2019-05-01T10:00:00Z"})))
    assert [field for field, _, _ in causes(status)] == ["spec.timeout", "spec.since"]


def test_names_are_escaped_and_the_root_sees_only_the_name_of_its_metadata() -> None:
    spec = strings(**{"x-y": {}, "namespace": {}})
    spec["x-kubernetes-validations"] = [{"rule": "self.x__dash__y == self.__namespace__"}]
    root = [{"rule": "self.metadata.name.startsWith('w') && !has(self.metadata.labels)", "message": "root"}]
    body = crd(spec)
    body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"] = root
    emulator, (res,) = loaded(body)
    labelled = obj("w", {"x-y": "a", "namespace": "a"}) | {"metadata": {"name": "w", "labels": {"k": "v"}}}
    admit(emulator, res, labelled)
    status = refusal(lambda: admit(emulator, res, obj("v", {"x-y": "a", "namespace": "b"})))
    assert [field for field, _, _ in causes(status)] == ["<nil>", "spec"]


def test_a_runtime_error_refuses_with_the_server_wording() -> None:
    emulator, (res,) = loaded(crd({**RANGE, "x-kubernetes-validations": [{"rule": "self.min <= self.max"}]}))
    status = refusal(lambda: admit(emulator, res, obj("w", {"min": 1})))
    assert causes(status)[0][2] == 'Invalid value: "object": no such key: max evaluating rule: self.min <= self.max'


def test_what_the_engine_cannot_evaluate_is_refused_never_passed() -> None:
    spec = strings(site={"x-kubernetes-validations": [{"rule": "url(self).getHost() != ''"}]})
    spec["properties"]["name"] = {"type": "string", "x-kubernetes-validations": [{"rule": "self.size() <= 5"}]}
    body = crd(spec)
    assert [problem.split(": ")[-1] for problem in check_crd_rules(body)] == [
        "the emulator's CEL engine lacks getHost, url"
    ]
    emulator = PoliteKubernetesEmulator(strict=False, validators=[validate_custom_resource])
    (res,) = load_crd(emulator, body)
    status = refusal(lambda: admit(emulator, res, obj("w", {"site": "https://example.com"})))
    lacking = 'Invalid value: "string": rule could not be evaluated: the emulator\'s CEL engine lacks getHost, url'
    assert causes(status) == [("spec.site", "FieldValueInvalid", lacking)]
    admit(emulator, res, obj("w", {"name": "plain"}))
    status = refusal(lambda: admit(emulator, res, obj("w", {"name": "héllo"})))
    assert "counts size() of non-ASCII text in bytes" in causes(status)[0][2]


def test_the_strings_extension_is_there() -> None:
    rule = {"rule": "self.lowerAscii() == self && self.split('-').size() == 2"}
    emulator, (res,) = loaded(crd(strings(slug={"x-kubernetes-validations": [rule]})))
    admit(emulator, res, obj("w", {"slug": "a-b"}))
    refusal(lambda: admit(emulator, res, obj("w", {"slug": "A-b"})))


# --- the real CRDs ---------------------------------------------------------------------------------------


@functools.cache
def cnpg_crd() -> Body:
    body: Body = yaml.load(CNPG_CRD.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return body


def test_every_rule_of_the_politetenant_crd_is_enforced() -> None:
    assert check_crd_rules(yaml.safe_load(POLITETENANT_CRD.read_text(encoding="utf-8"))) == []


@needs_cnpg
def test_every_rule_of_the_cloudnativepg_crd_is_enforced() -> None:
    assert check_crd_rules(cnpg_crd()) == []


def tenant(name: str, **spec: Any) -> Body:
    body = {"displayName": "Acme", "region": "eu-ireland", **spec}
    return {"apiVersion": "polite.io/v1alpha1", "kind": "PoliteTenant", "metadata": {"name": name}, "spec": body}


def test_a_tenant_keeps_its_region_and_its_engine_once_set(kube: KubeApiHandle) -> None:
    assert kube.request("POST", TENANTS, tenant("acme")).status == 201
    moved = kube.request("PATCH", f"{TENANTS}/acme", {"spec": {"region": "us-east"}}, content_type=MERGE)
    region = 'spec.region: Invalid value: "string": region is immutable: data stays where the customer chose'
    assert (moved.status, moved.body["message"]) == (422, f'PoliteTenant.polite.io "acme" is invalid: {region}')
    engine = {"spec": {"database": {"engine": "cnpg"}}}
    assert kube.request("PATCH", f"{TENANTS}/acme", engine, content_type=MERGE).status == 200
    switched = {"spec": {"database": {"engine": "statefulset"}}}
    answer = kube.request("PATCH", f"{TENANTS}/acme", switched, content_type=MERGE)
    assert answer.status == 422
    assert answer.body["details"]["causes"][0]["field"] == "spec.database.engine"
    assert "engine is immutable once set" in answer.body["message"]


@needs_cnpg
def test_a_cloudnativepg_cluster_is_held_to_its_crd_rules() -> None:
    body = copy.deepcopy(cnpg_crd())
    # The emulator's schema check leaves metadata out of the object but not out of ``required``.
    body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["required"] = ["spec"]
    emulator, (res,) = loaded(body)
    cluster = {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "db"}}
    create(emulator, res, cluster | {"spec": {"instances": 1, "imageName": "pg:16"}})
    both = {
        "instances": 1,
        "imageName": "pg:16",
        "imageCatalogRef": {"apiGroup": "postgresql.cnpg.io", "kind": "ImageCatalog", "name": "c", "major": 16},
    }
    status = refusal(lambda: create(emulator, res, cluster | {"metadata": {"name": "x"}, "spec": both}))
    assert causes(status) == [
        ("spec", "FieldValueInvalid", 'Invalid value: "object": imageName and imageCatalogRef are mutually exclusive')
    ]
