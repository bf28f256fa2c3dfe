"""The chart's ValidatingAdmissionPolicies (templates/admissionpolicy.yaml) confine the operator, and only it.

The policies and bindings come from a real `helm template` of the chart; the API emulator's
ValidatingAdmissionPolicy plugin (tests/fakes/kube_vap.py) judges each write as the API server would,
written by the operator's ServiceAccount or by a cluster admin. What the product renders for the
example tenants must pass; workloads with another ServiceAccount, privileged settings, or outside the
polite-* namespaces must not, each with the policy's message.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock
import pytest

from politetenant.operator.cli import load_tenant
from politetenant.operator.model.config import OperatorConfig
from politetenant.operator.render.tenant import render_tenant
from tests.fakes.kube_emulator import NAMESPACES, Admission, ApiError, PoliteKubernetesEmulator, UserInfo, declare_cnpg
from tests.fakes.kube_vap import BINDINGS, POLICIES, validating_admission_policies
from tests.unit.test_helm_chart import CUSTOM_VALUES, NAMESPACE, ROOT, render

Body = dict[str, Any]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SERVICE_ACCOUNT = "polite-politetenant"  # the release's full name, the chart's default account name
OPERATOR = UserInfo(
    f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}",
    ("system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"),
)
ADMIN = UserInfo("kubernetes-admin", ("kubeadm:cluster-admins", "system:authenticated"))
PODS_POLICY = "ValidatingAdmissionPolicy 'polite-politetenant-pods' with binding 'polite-politetenant-pods'"
NAMESPACES_POLICY = (
    "ValidatingAdmissionPolicy 'polite-politetenant-namespaces' with binding 'polite-politetenant-namespaces'"
)
TEMPLATE = "spec.template.spec"
ACCOUNT = "serviceAccountName must be tracker (the tenant ServiceAccount), not"


@pytest.fixture(scope="module")
def admission_objects(tmp_path_factory: pytest.TempPathFactory) -> list[Body]:
    objects = render(tmp_path_factory.mktemp("admission"))
    return [obj for obj in objects if obj["kind"].startswith("ValidatingAdmissionPolicy")]


def cluster(policies: list[Body], *namespaces: str) -> PoliteKubernetesEmulator:
    """An emulator holding the chart's policies, the release namespace, a foreign one and ``namespaces``."""
    k = PoliteKubernetesEmulator(strict=False)
    declare_cnpg(k)
    for name in (NAMESPACE, "team-a", *namespaces):
        k.create_object(NAMESPACES, {"metadata": {"name": name}})
    for obj in policies:
        k.create_object(POLICIES if obj["kind"] == "ValidatingAdmissionPolicy" else BINDINGS, obj)
    return k


def resource_of(k: PoliteKubernetesEmulator, obj: Body) -> kmock.resource:
    group, _, version = obj["apiVersion"].rpartition("/")
    found = [r for r in k.resources if (r.group or "", r.version) == (group, version)]
    return next(r for r in found if k.resources[r].kind == obj["kind"])


def write(k: PoliteKubernetesEmulator, obj: Body, *, user: UserInfo = OPERATOR, op: str = "CREATE") -> None:
    """Admission of one write (the stored object is the old one on UPDATE and DELETE); raises ApiError."""
    meta = obj["metadata"]
    res = resource_of(k, obj)
    old = k.read_object(res, meta["name"], meta.get("namespace")) if op != "CREATE" else None
    new = None if op == "DELETE" else obj
    admission = Admission(op, res, obj["kind"], meta["name"], meta.get("namespace"), new, old, user, None, False, k)
    validating_admission_policies(admission)


def refusal(k: PoliteKubernetesEmulator, obj: Body, **kwargs: Any) -> str:
    with pytest.raises(ApiError) as caught:
        write(k, obj, **kwargs)
    assert (caught.value.code, caught.value.reason) == (403, "Forbidden")
    return caught.value.message


def statefulset(namespace: str = "polite-acme", **pod_spec: Any) -> Body:
    """A StatefulSet as the operator renders the tracker's: account tracker, one hardened container."""
    container = {
        "name": "tracker",
        "image": "registry.example/tracker:1",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    spec = {"serviceAccountName": "tracker", "containers": [container], **pod_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "tracker", "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": "t"}}, "template": {"spec": spec}},
    }


def pod_spec(workload: Body) -> Body:
    spec: Body = workload["spec"]["template"]["spec"]
    return spec


def namespace(name: str) -> Body:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


# --- the chart ships them -------------------------------------------------------------------------


def test_the_chart_binds_each_policy_to_deny_and_fail_for_the_operator_account_only(
    admission_objects: list[Body], tmp_path: Path
) -> None:
    policies = [o for o in admission_objects if o["kind"] == "ValidatingAdmissionPolicy"]
    bindings = [o for o in admission_objects if o["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert sorted(p["metadata"]["name"] for p in policies) == [
        f"{SERVICE_ACCOUNT}-bindings",
        f"{SERVICE_ACCOUNT}-namespaces",
        f"{SERVICE_ACCOUNT}-pods",
    ]
    assert {b["spec"]["policyName"]: b["spec"]["validationActions"] for b in bindings} == {
        p["metadata"]["name"]: ["Deny"] for p in policies
    }
    for policy in policies:
        assert policy["spec"]["failurePolicy"] == "Fail"
        (condition,) = policy["spec"]["matchConditions"]
        assert condition["expression"] == f'request.userInfo.username == "{OPERATOR.username}"'
    custom = render(tmp_path, CUSTOM_VALUES)
    conditions = {
        c["expression"] for o in custom if "matchConditions" in o.get("spec", {}) for c in o["spec"]["matchConditions"]
    }
    assert conditions == {f'request.userInfo.username == "system:serviceaccount:{NAMESPACE}:polite-operator"'}


def test_the_policies_can_be_left_out(tmp_path: Path) -> None:
    objects = render(tmp_path, {"admissionPolicy": {"enabled": False}})
    assert not [o for o in objects if o["kind"].startswith("ValidatingAdmissionPolicy")]


# --- the product passes ---------------------------------------------------------------------------


@pytest.mark.parametrize("cnpg", [False, True], ids=["without-cnpg", "with-cnpg"])
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_everything_rendered_for_an_example_tenant_is_admitted_from_the_operator(
    admission_objects: list[Body], example: Path, cnpg: bool
) -> None:
    k = cluster(admission_objects)
    tenant = load_tenant(str(example))
    # The operator as the chart configures it: its account and the Secrets role it binds.
    config = OperatorConfig(
        namespace=NAMESPACE, service_account=SERVICE_ACCOUNT, tenant_secrets_role=f"{SERVICE_ACCOUNT}-tenant-secrets"
    )
    result = render_tenant(tenant, config, cnpg_available=cnpg)
    secrets = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": s.name, "namespace": tenant.namespace}}
               for s in result.secrets]  # fmt: skip
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "acme.1", "namespace": NAMESPACE}}
    refused: list[tuple[Body, str]] = []
    for op in ("CREATE", "UPDATE"):
        for obj in [*result.objects, *secrets, event]:
            try:
                write(k, obj, op=op)
            except ApiError as error:
                refused.append((obj, error.message))
            if op == "CREATE":
                k.create_object(resource_of(k, obj), obj)  # applied in order: the namespace exists for the rest
    assert [message for _, message in refused] == []


# --- the operator is fenced; an admin is not ------------------------------------------------------


def with_init_container(**security: Any) -> Body:
    init = {"name": "setup", "image": "registry.example/setup:1", "securityContext": security}
    return statefulset(initContainers=[init])


def with_capabilities(*added: str) -> Body:
    obj = statefulset()
    obj["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = list(added)
    return obj


def with_host_port() -> Body:
    obj = statefulset()
    obj["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 80}]
    return obj


def as_cronjob(**pod_spec: Any) -> Body:
    template = statefulset(**pod_spec)["spec"]["template"]
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "retention", "namespace": "polite-acme"},
            "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}}}  # fmt: skip


def pod_without_account() -> Body:
    spec = pod_spec(statefulset())
    del spec["serviceAccountName"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "polite-acme"}, "spec": spec}


FORBIDDEN: list[tuple[str, Callable[[], Body], str]] = [
    ("account-default", lambda: statefulset(serviceAccountName="default"),
     f"{PODS_POLICY} denied request: {TEMPLATE}.{ACCOUNT} default"),
    ("account-admin", lambda: statefulset(serviceAccountName="admin"),
     f"{PODS_POLICY} denied request: {TEMPLATE}.{ACCOUNT} admin"),
    ("account-alias", lambda: statefulset(serviceAccount="admin"), "not admin"),
    ("pod-account-unset", pod_without_account,
     f"{PODS_POLICY} denied request: spec.{ACCOUNT} default"),
    ("cronjob-account", lambda: as_cronjob(serviceAccountName="admin"),
     f"spec.jobTemplate.spec.template.spec.{ACCOUNT} admin"),
    ("host-network", lambda: statefulset(hostNetwork=True), f"{TEMPLATE}.hostNetwork must not be true"),
    ("host-pid", lambda: statefulset(hostPID=True), f"{TEMPLATE}.hostPID must not be true"),
    ("host-ipc", lambda: statefulset(hostIPC=True), f"{TEMPLATE}.hostIPC must not be true"),
    ("privileged-init", lambda: with_init_container(privileged=True),
     f"{TEMPLATE}: container setup must not set securityContext.privileged to true"),
    ("escalation", lambda: with_init_container(allowPrivilegeEscalation=True),
     f"{TEMPLATE}: container setup must not set securityContext.allowPrivilegeEscalation to true"),
    ("capability", lambda: with_capabilities("NET_BIND_SERVICE", "SYS_ADMIN"),
     f"{TEMPLATE}: container tracker may add no capability but NET_BIND_SERVICE "
     "(securityContext.capabilities.add)"),
    ("host-port", with_host_port, f"{TEMPLATE}: container tracker must not set ports[].hostPort"),
    ("host-path", lambda: statefulset(volumes=[{"name": "root", "hostPath": {"path": "/"}}]),
     f"{TEMPLATE}.volumes: root must not be a hostPath volume"),
    ("kube-system", lambda: statefulset(namespace="kube-system"),
     f"{NAMESPACES_POLICY} denied request: the PoliteTenant operator may write only in namespaces named polite-* "
     f"and in {NAMESPACE}, not in kube-system"),
    ("namespace-kube-foo", lambda: namespace("kube-foo"),
     f"{NAMESPACES_POLICY} denied request: the PoliteTenant operator may write only Namespaces named "
     "polite-*, not kube-foo"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "message"), [case[1:] for case in FORBIDDEN], ids=[case[0] for case in FORBIDDEN])
def test_the_operator_is_refused_with_the_policy_message(
    admission_objects: list[Body], make: Callable[[], Body], message: str
) -> None:
    k = cluster(admission_objects, "polite-acme")
    assert refusal(k, make()).endswith(message)


@pytest.mark.parametrize("make", [case[1] for case in FORBIDDEN], ids=[case[0] for case in FORBIDDEN])
def test_an_admin_writes_the_same_objects(admission_objects: list[Body], make: Callable[[], Body]) -> None:
    k = cluster(admission_objects, "polite-acme")
    write(k, make(), user=ADMIN)


def test_the_operator_may_add_net_bind_service_and_write_in_its_own_namespace(admission_objects: list[Body]) -> None:
    k = cluster(admission_objects, "polite-acme")
    write(k, with_capabilities("NET_BIND_SERVICE"))
    write(k, statefulset(namespace=NAMESPACE))


def test_the_operator_changes_and_deletes_only_polite_namespaces_and_what_is_in_them(
    admission_objects: list[Body],
) -> None:
    k = cluster(admission_objects, "polite-acme")
    relabelled = {**namespace("polite-acme"), "metadata": {"name": "polite-acme", "labels": {"x": "y"}}}
    write(k, relabelled, op="UPDATE")
    write(k, namespace("polite-acme"), op="DELETE")
    for name in ("team-a", "kube-system"):
        assert refusal(k, namespace(name), op="UPDATE").endswith(
            f"may write only Namespaces named polite-*, not {name}"
        )
        assert refusal(k, namespace(name), op="DELETE").endswith(f"not {name}")
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "team-a"}}
    k.create_object(resource_of(k, config_map), copy.deepcopy(config_map))
    assert refusal(k, config_map, op="DELETE").endswith("not in team-a")
    write(k, config_map, op="DELETE", user=ADMIN)
