"""The PodSecurity admission plugin of the emulator (tests/fakes/kube_pod_security.py), held to the messages of
the real plugin (kubernetes ``staging/src/k8s.io/pod-security-admission``), then applied to what the operator
renders: every pod template of a tenant must pass the ``restricted`` level its namespace enforces.

Most tests admit one write in-process (``admit``), as the emulator's ``_admit`` does; one goes over HTTP to see
the Warning header a client gets.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import pytest

from politetenant.operator.cli import load_tenant
from politetenant.operator.model.config import load_operator_config
from politetenant.operator.render.tenant import render_tenant
from tests.fakes.kube_emulator import NAMESPACES, PODS, SYSTEM, Admission, ApiError, PoliteKubernetesEmulator
from tests.fakes.kube_pod_security import enforce_pod_security, namespace_policy, pod_security_violations
from tests.fakes.kube_server import running_kube_api

Body = dict[str, Any]
ROOT = Path(__file__).parents[2]
TENANTS = sorted((ROOT / "examples").glob("*.yaml")) + sorted(
    (ROOT / "tests/unit/operator/data").glob("tenant-[fms]*.yaml")
)
LABEL = "pod-security.kubernetes.io/"
SECURE = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
BARE_RESTRICTED = (
    'allowPrivilegeEscalation != false (container "app" must set securityContext.allowPrivilegeEscalation=false), '
    'unrestricted capabilities (container "app" must set securityContext.capabilities.drop=["ALL"]), '
    'runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true), '
    'seccompProfile (pod or container "app" must set securityContext.seccompProfile.type to "RuntimeDefault" or '
    '"Localhost")'
)
NAMESPACE_LABELS = {
    "restricted": {LABEL + "enforce": "restricted"},
    "baseline": {LABEL + "enforce": "baseline"},
    "warned": {LABEL + "warn": "restricted"},
    "mixed": {LABEL + "enforce": "baseline", LABEL + "warn": "restricted"},
    "quiet": {LABEL + "enforce": "restricted", LABEL + "warn": "baseline"},
    "pinned": {LABEL + "enforce": "restricted", LABEL + "enforce-version": "v1.25"},
    "plain": {},
}


@dataclass
class Recorded(Admission):
    """An Admission that keeps its warnings (the emulator turns them into Warning headers)."""

    warnings: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        self.warnings.append(text)


@pytest.fixture(scope="module")
def k() -> PoliteKubernetesEmulator:
    emulator = PoliteKubernetesEmulator(strict=False, validators=[enforce_pod_security])
    for name, labels in NAMESPACE_LABELS.items():
        emulator.create_object(NAMESPACES, {"metadata": {"name": name, "labels": labels}})
    return emulator


def admit(k: PoliteKubernetesEmulator, obj: Body, *, res: kmock.resource = PODS, old: Body | None = None,
          subresource: str | None = None) -> list[str]:  # fmt: skip
    """Run the plugin on one write, as the emulator does after defaulting; the warnings it adds."""
    meta = obj["metadata"]
    admission = Recorded(
        "UPDATE" if old else "CREATE", res, str(obj.get("kind", "")), meta["name"], meta.get("namespace"), obj, old,
        SYSTEM, subresource, False, k,
    )  # fmt: skip
    enforce_pod_security(admission)
    return admission.warnings


def pod(namespace: str, spec: Body | None = None, *, name: str = "web", **metadata: Any) -> Body:
    spec = spec if spec is not None else {"containers": [{"name": "app", "image": "nginx"}]}
    return {"kind": "Pod", "metadata": {"name": name, "namespace": namespace, **metadata}, "spec": spec}


def secure(name: str = "app", **context: Any) -> Body:
    return {"name": name, "image": "nginx", "securityContext": {**copy.deepcopy(SECURE), **context}}


def refusal(k: PoliteKubernetesEmulator, obj: Body) -> ApiError:
    with pytest.raises(ApiError) as caught:
        admit(k, obj)
    return caught.value


# -- pods against the namespace's enforce and warn levels ----------------------------------------------------


def test_a_compliant_restricted_pod_is_admitted_silently(k: PoliteKubernetesEmulator) -> None:
    assert admit(k, pod("restricted", {"containers": [secure()], "initContainers": [secure("init")]})) == []


def test_a_pod_violating_enforce_is_forbidden_with_the_real_message_and_status(k: PoliteKubernetesEmulator) -> None:
    error = refusal(k, pod("restricted"))
    assert error.status == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": f'pods "web" is forbidden: violates PodSecurity "restricted:latest": {BARE_RESTRICTED}',
        "details": {"name": "web", "kind": "pods"},
    }  # fmt: skip
    with pytest.raises(ApiError, match="violates PodSecurity"):  # the whole emulator path: create refuses
        k.create_object(PODS, pod("restricted", name="created"))
    assert k.read_object(PODS, "created", "restricted") is None


def box(name: str = "a", **context: Any) -> Body:
    """A container with the given security context."""
    return {"name": name, "image": "nginx", "securityContext": context}


ARMOR = "container.apparmor.security.beta.kubernetes.io/"
BASELINE_CASES: list[tuple[str, Body, Body, str]] = [
    # (check, pod metadata, pod spec, "reason (detail)" the baseline level gives)
    ("hostProcess", {}, {"securityContext": {"windowsOptions": {"hostProcess": True}},
                         "containers": [box(windowsOptions={"hostProcess": True})]},
     'hostProcess (pod and container "a" must not set securityContext.windowsOptions.hostProcess=true)'),
    ("host namespaces", {}, {"hostNetwork": True, "hostIPC": True, "containers": [box()]},
     "host namespaces (hostNetwork=true, hostIPC=true)"),
    ("privileged", {}, {"initContainers": [box("i", privileged=True)], "containers": [box(privileged=True)]},
     'privileged (containers "i", "a" must not set securityContext.privileged=true)'),
    ("capabilities", {}, {"containers": [box(capabilities={"add": ["SYS_TIME", "CHOWN", "NET_RAW"]})]},
     'non-default capabilities (container "a" must not include "NET_RAW", "SYS_TIME" in '
     "securityContext.capabilities.add)"),
    ("hostPath", {}, {"volumes": [{"name": "root", "hostPath": {"path": "/"}}], "containers": [box()]},
     'hostPath volumes (volume "root")'),
    ("host ports", {}, {"containers": [{**box(), "ports": [{"containerPort": 80, "hostPort": 80}]},
                                       {**box("b"), "ports": [{"hostPort": 8080}, {"containerPort": 2}]}]},
     'hostPort (containers "a", "b" use hostPorts 80, 8080)'),
    ("AppArmor", {"annotations": {ARMOR + "a": "unconfined", ARMOR + "b": "localhost/x", ARMOR + "c": ""}},
     {"containers": [box(appArmorProfile={"type": "Unconfined"})]},
     'forbidden AppArmor profiles (container "a" and annotation must not set AppArmor profile type to "Unconfined", '
     f'"{ARMOR}a="unconfined"")'),
    ("SELinux", {}, {"securityContext": {"seLinuxOptions": {"type": "spc_t"}},
                     "containers": [box(seLinuxOptions={"user": "root", "role": "r", "type": "container_t"})]},
     'seLinuxOptions (pod and container "a" set forbidden securityContext.seLinuxOptions: type "spc_t"; '
     "user may not be set; role may not be set)"),
    ("/proc mount", {}, {"containers": [box(procMount="Unmasked")]},
     'procMount (container "a" must not set securityContext.procMount to "Unmasked")'),
    ("seccomp", {}, {"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [box()]},
     'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")'),
    ("sysctls", {}, {"securityContext": {"sysctls": [{"name": "kernel.msgmax"}, {"name": "net.ipv4.tcp_rmem"},
                                                     {"name": "vm.swappiness"}]}, "containers": [box()]},
     "forbidden sysctls (kernel.msgmax, vm.swappiness)"),
    ("probe host", {}, {"containers": [{**box(), "livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}},
                                        "lifecycle": {"preStop": {"tcpSocket": {"host": "db", "port": 5432}}}}]},
     'probe or lifecycle host (container "a" uses probe or lifecycle hosts "10.0.0.1", "db")'),
]  # fmt: skip


@pytest.mark.parametrize(
    ("metadata", "spec", "expected"), [c[1:] for c in BASELINE_CASES], ids=[c[0] for c in BASELINE_CASES]
)
def test_each_baseline_check_refuses_with_its_own_words(
    k: PoliteKubernetesEmulator, metadata: Body, spec: Body, expected: str
) -> None:
    error = refusal(k, pod("baseline", spec, **metadata))
    assert (error.code, error.message) == (
        403,
        f'pods "web" is forbidden: violates PodSecurity "baseline:latest": {expected}',
    )


def context_of(spec: Body, where: str = "containers") -> Body:
    context: Body = spec[where][0]["securityContext"]
    return context


RESTRICTED_CASES: list[tuple[str, Callable[[Body], None], str]] = [
    # (check, how a compliant spec is spoiled, "reason (detail)" the restricted level gives)
    ("privilege escalation", lambda s: context_of(s, "initContainers").pop("allowPrivilegeEscalation"),
     'allowPrivilegeEscalation != false (container "init" must set securityContext.allowPrivilegeEscalation=false)'),
    ("capabilities", lambda s: context_of(s).update(capabilities={"add": ["NET_BIND_SERVICE", "NET_ADMIN"]}),
     'unrestricted capabilities (container "app" must set securityContext.capabilities.drop=["ALL"]; '
     'container "app" must not include "NET_ADMIN" in securityContext.capabilities.add)'),
    ("volume types", lambda s: s.update(volumes=[{"name": "n", "nfs": {"server": "x", "path": "/"}},
                                                 {"name": "ok", "emptyDir": {}}, {"name": "h", "hostPath": {}}]),
     'restricted volume types (volumes "n", "h" use restricted volume types "hostPath", "nfs")'),
    ("non-root", lambda s: context_of(s).update(runAsNonRoot=False),
     'runAsNonRoot != true (container "app" must not set securityContext.runAsNonRoot=false)'),
    ("non-root user", lambda s: s.update(securityContext={"runAsUser": 0}),
     "runAsUser=0 (pod must not set runAsUser=0)"),
    ("seccomp", lambda s: context_of(s).pop("seccompProfile"),
     'seccompProfile (pod or container "app" must set securityContext.seccompProfile.type to "RuntimeDefault" or '
     '"Localhost")'),
    ("/proc mount", lambda s: s.update(hostUsers=False, containers=[secure(procMount="Unmasked")]),
     'procMount (container "app" must not set securityContext.procMount to "Unmasked")'),
]  # fmt: skip


@pytest.mark.parametrize(("spoil", "expected"), [c[1:] for c in RESTRICTED_CASES], ids=[c[0] for c in RESTRICTED_CASES])
def test_each_restricted_check_refuses_with_its_own_words(
    k: PoliteKubernetesEmulator, spoil: Callable[[Body], None], expected: str
) -> None:
    spec = {"initContainers": [secure("init")], "containers": [secure()]}
    spoil(spec)
    error = refusal(k, pod("restricted", spec))
    assert error.message == f'pods "web" is forbidden: violates PodSecurity "restricted:latest": {expected}'


def test_violations_are_joined_baseline_first_then_restricted_each_by_check_id() -> None:
    spec = {"hostPID": True, "securityContext": {"runAsUser": 0, "sysctls": [{"name": "kernel.sem"}]},
            "containers": [{**box(privileged=True), "ports": [{"hostPort": 9}]}],
            "volumes": [{"name": "v", "hostPath": {"path": "/"}}]}  # fmt: skip
    reasons = [part.split(" (")[0] for part in pod_security_violations("restricted", {}, spec).split("), ")]
    assert reasons == [
        "host namespaces", "hostPort", "privileged", "forbidden sysctls", "allowPrivilegeEscalation != false",
        "unrestricted capabilities", "restricted volume types", "runAsNonRoot != true", "runAsUser=0", "seccompProfile",
    ]  # fmt: skip
    baseline = pod_security_violations("baseline", {}, spec)  # hostPath volumes: replaced by volume types at restricted
    assert baseline.startswith('host namespaces (hostPID=true), hostPath volumes (volume "v"), hostPort (container')


def test_pod_level_settings_cover_containers_and_relaxations_follow_the_pod() -> None:
    covered = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "Localhost"}},
               "containers": [box(allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]})]}  # fmt: skip
    assert pod_security_violations("restricted", {}, covered) == ""
    windows = {"os": {"name": "windows"}, "containers": [box()]}  # no escalation, capabilities or seccomp there
    assert pod_security_violations("restricted", {}, windows) == (
        'runAsNonRoot != true (pod or container "a" must set securityContext.runAsNonRoot=true)'
    )
    user_ns = {"hostUsers": False, "securityContext": {"runAsUser": 0},
               "containers": [secure(runAsNonRoot=False, procMount="Unmasked")]}  # fmt: skip
    assert pod_security_violations("baseline", {}, user_ns) == ""  # a user namespace may unmask /proc at baseline
    assert pod_security_violations("restricted", {}, user_ns).startswith("procMount (")  # not at restricted


def test_a_baseline_namespace_admits_what_restricted_refuses(k: PoliteKubernetesEmulator) -> None:
    assert admit(k, pod("baseline")) == []
    assert refusal(k, pod("restricted")).code == 403


def test_warn_only_namespace_admits_with_a_warning_and_no_labels_admit_silently(k: PoliteKubernetesEmulator) -> None:
    assert admit(k, pod("warned")) == [f'would violate PodSecurity "restricted:latest": {BARE_RESTRICTED}']
    privileged = {"hostNetwork": True, "containers": [{"name": "app", "securityContext": {"privileged": True}}]}
    assert admit(k, pod("plain", privileged)) == []
    assert admit(k, pod("kube-system", privileged)) == []  # not special: no labels, no exemption configured


def test_enforce_refuses_without_warnings_and_warn_speaks_for_what_enforce_admits(k: PoliteKubernetesEmulator) -> None:
    assert admit(k, pod("mixed")) == [f'would violate PodSecurity "restricted:latest": {BARE_RESTRICTED}']
    assert "baseline:latest" in refusal(k, pod("mixed", {"hostIPC": True, "containers": [secure()]})).message


def test_a_version_label_is_named_in_the_message_but_the_latest_rules_apply(k: PoliteKubernetesEmulator) -> None:
    probe = {**secure(), "readinessProbe": {"tcpSocket": {"host": "db", "port": 1}}}  # a check of policy v1.34
    error = refusal(k, pod("pinned", {"containers": [probe]}))
    assert error.message.startswith('pods "web" is forbidden: violates PodSecurity "restricted:v1.25": probe or')


# -- pod updates ---------------------------------------------------------------------------------------------


def test_only_significant_pod_updates_are_checked(k: PoliteKubernetesEmulator) -> None:
    """A pod that predates the label: a relabelling or a status write passes; a new image is checked; so is an
    ephemeral container added to a compliant pod."""
    old = pod("restricted", uid="1")
    assert admit(k, pod("restricted", labels={"new": "label"}), old=old) == []
    assert admit(k, pod("restricted"), old=old, subresource="status") == []
    with pytest.raises(ApiError, match="violates PodSecurity"):
        admit(k, pod("restricted", {"containers": [{"name": "app", "image": "nginx:2"}]}), old=old)
    compliant = pod("restricted", {"containers": [secure()]})
    debug = pod("restricted", {"containers": [secure()], "ephemeralContainers": [secure("debug", privileged=True)]})
    with pytest.raises(ApiError, match=r'privileged \(container "debug" must not'):
        admit(k, debug, old=compliant, subresource="ephemeralcontainers")


# -- workloads and namespaces --------------------------------------------------------------------------------

TEMPLATE = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}}
WORKLOADS: dict[str, Body] = {
    "apps/v1/deployments": {"spec": {"template": TEMPLATE}},
    "apps/v1/statefulsets": {"spec": {"template": TEMPLATE}},
    "apps/v1/daemonsets": {"spec": {"template": TEMPLATE}},
    "apps/v1/replicasets": {"spec": {"template": TEMPLATE}},
    "batch/v1/jobs": {"spec": {"template": TEMPLATE}},
    "batch/v1/cronjobs": {"spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": TEMPLATE}}}},
    "v1/replicationcontrollers": {"spec": {"template": TEMPLATE}},
    "v1/podtemplates": {"template": TEMPLATE},
}


@pytest.mark.parametrize("resource", list(WORKLOADS))
def test_workloads_are_never_refused_only_warned(k: PoliteKubernetesEmulator, resource: str) -> None:
    obj = {"metadata": {"name": "web", "namespace": "restricted"}, **WORKLOADS[resource]}
    warnings = admit(k, obj, res=kmock.resource(resource))  # enforce=restricted: warn follows it
    assert warnings == [f'would violate PodSecurity "restricted:latest": {BARE_RESTRICTED}']
    assert admit(k, {**obj, "metadata": {"name": "web", "namespace": "quiet"}}, res=kmock.resource(resource)) == []
    assert admit(k, obj, res=kmock.resource(resource), old=obj, subresource="status") == []


def test_a_deployment_with_a_violating_template_is_created_with_a_warning_header() -> None:
    with running_kube_api(strict=False) as kube:
        kube.call(lambda e: e.validators.append(enforce_pod_security))
        labels = {LABEL + "enforce": "restricted"}
        assert kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": "t", "labels": labels}}).status == 201
        body = {
            "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE},
        }
        created = kube.request("POST", "/apis/apps/v1/namespaces/t/deployments", body)
        assert created.status == 201
        warning = f'would violate PodSecurity "restricted:latest": {BARE_RESTRICTED}'
        assert created.headers["Warning"] == f"299 - {json.dumps(warning)}"
        refused = kube.request(
            "POST", "/api/v1/namespaces/t/pods", {"metadata": {"name": "web"}, "spec": TEMPLATE["spec"]}
        )
        assert (refused.status, refused.body["reason"], refused.body["details"]) == (
            403,
            "Forbidden",
            {"name": "web", "kind": "pods"},
        )


def test_invalid_namespace_labels_are_invalid_and_warn_defaults_to_a_stricter_enforce(
    k: PoliteKubernetesEmulator,
) -> None:
    labels = {LABEL + "enforce": "strict", LABEL + "warn-version": "1.30"}
    with pytest.raises(ApiError) as caught:
        k.create_object(NAMESPACES, {"metadata": {"name": "typo", "labels": labels}})
    assert (caught.value.code, caught.value.message) == (422, (
        'Namespace "typo" is invalid: [metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "strict": '
        "must be one of privileged, baseline, restricted, metadata.labels[pod-security.kubernetes.io/warn-version]: "
        'Invalid value: "1.30": must be "latest" or "v1.x"]'))  # fmt: skip
    old: Body = {"kind": "Namespace", "metadata": {"name": "typo", "labels": labels}}
    annotated = {**old, "metadata": {**old["metadata"], "annotations": {"a": "b"}}}
    assert admit(k, annotated, res=NAMESPACES, old=old) == []  # the same errors as before: an update passes
    retyped = {**old, "metadata": {"name": "typo", "labels": {**labels, LABEL + "enforce": "strictest"}}}
    with pytest.raises(ApiError, match='Invalid value: "strictest"'):
        admit(k, retyped, res=NAMESPACES, old=old)
    policy, _ = namespace_policy(labels)  # an invalid enforce level fails closed
    assert (str(policy["enforce"]), str(policy["warn"])) == ("restricted:latest", "privileged:latest")
    policy, _ = namespace_policy({LABEL + "enforce": "baseline", LABEL + "enforce-version": "v1.30"})
    assert str(policy["warn"]) == "baseline:v1.30"


# -- what the operator renders -------------------------------------------------------------------------------


def rendered(path: Path, cnpg: bool) -> Iterator[Body]:
    result = render_tenant(load_tenant(str(path)), load_operator_config(None, {}), cnpg_available=cnpg)
    assert result.skipped_reason is None
    yield from result.objects


@pytest.mark.parametrize("cnpg", [False, True], ids=["statefulset-db", "cnpg"])
@pytest.mark.parametrize("path", TENANTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_pod_the_operator_renders_passes_restricted(path: Path, cnpg: bool) -> None:
    """The tenant namespace enforces restricted; each workload is admitted without a warning and each pod its
    template makes is admitted by enforce."""
    k = PoliteKubernetesEmulator(strict=False, validators=[enforce_pod_security])
    objects = list(rendered(path, cnpg))
    (namespace,) = [obj for obj in objects if obj["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"][LABEL + "enforce"] == "restricted"
    k.create_object(NAMESPACES, namespace)
    found: list[str] = []
    for obj in objects:
        spec = obj.get("spec") or {}
        template = (spec.get("jobTemplate") or {}).get("spec", {}).get("template") or spec.get("template")
        if obj["kind"] not in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob") or template is None:
            continue
        plural = {"CronJob": "batch/v1/cronjobs", "Job": "batch/v1/jobs"}.get(
            obj["kind"], f"apps/v1/{obj['kind'].lower()}s"
        )
        found += admit(k, obj, res=kmock.resource(plural))
        where = {"name": obj["metadata"]["name"], "namespace": namespace["metadata"]["name"]}
        made = {"kind": "Pod", "metadata": {**template.get("metadata", {}), **where}, "spec": template["spec"]}
        try:
            admit(k, made)
        except ApiError as error:
            found.append(error.message)
    assert found == [], f"{path.name}: the operator renders pods its own namespace refuses"
