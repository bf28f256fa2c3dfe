"""The operator runs under the chart's RBAC, and the chart's ClusterRole grants exactly what it uses.

An emulator that authorizes every request with RBAC (``running_kube_api(rbac=True)``) gets what
``helm template`` renders of the chart: its ServiceAccount, ClusterRole and ClusterRoleBinding, its
ValidatingAdmissionPolicies, its operator configuration and its ClusterKopfPeering. The operator then
runs as the chart runs it (in the peering, with the chart's configuration), authenticated as that
ServiceAccount, while one tenant lives a whole life through every code path that calls the API (and
a second one has the other database engine, CloudNativePG). Nothing it asks may be refused, by RBAC
or by the policies.

Then what the operator's user asked for (verb, API group, resource[/subresource], parsed from each
request's path) is compared with what the ClusterRole grants. Every request was authorized, so every
used grant exists; the other way round, a grant never used is a permission the operator holds for
nothing (least privilege, "Good practices" in https://kubernetes.io/docs/concepts/security/rbac-good-practices/)
and should leave ``charts/politetenant/templates/clusterrole.yaml``, unless ``NEEDED_UNCALLED`` says why
the code needs it without calling it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from politetenant.operator.keys.secret import ROTATE_ANNOTATION
from politetenant.operator.runtime.watched import WATCHED_KINDS
from tests.e2e.operator_process import start_operator
from tests.e2e.test_operator_e2e import (
    OPERATOR_NAMESPACE,
    PEERING,
    PEERING_CRD,
    TENANTS,
    Cluster,
    Operator,
    condition,
    legacy_tracker,
    operator_args,
    path,
    provisioned,
    unique,
    wait_ready,
    wait_started,
)
from tests.fakes.kube_emulator import POLITETENANT_CRD, ApiError, Attributes, PoliteKubernetesEmulator
from tests.fakes.kube_server import CHART, HELM, KubeApiHandle, install_chart_rbac, running_kube_api
from tests.support import free_port

pytestmark = pytest.mark.slow

RELEASE = "polite"
TIMEOUT = 30.0
Triple = tuple[str, str, str]  # API group, resource[/subresource], verb
# Grants the code needs though this life never sends the request they allow, and why.
NEEDED_UNCALLED: dict[Triple, str] = {
    # Children carry an owner reference with blockOwnerDeletion: the OwnerReferencesPermissionEnforcement
    # admission plugin lets only a user who may update the owner's finalizers set it
    # (https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/#ownerreferencespermissionenforcement).
    ("polite.io", "politetenants/finalizers", "update"): "OwnerReferencesPermissionEnforcement (blockOwnerDeletion)",
    # Creating the RoleBinding of the Secrets-only ClusterRole in a tenant namespace: RBAC lets a user
    # bind a role it does not hold only with `bind` on it (the escalation check, which the emulator does
    # not make; https://kubernetes.io/docs/reference/access-authn-authz/rbac/#restrictions-on-role-binding-creation-or-update).
    ("rbac.authorization.k8s.io", "clusterroles", "bind"): "RBAC escalation check (RoleBinding of its Secrets role)",
    # A watched kind is read from kopf's index; from the API only after a create of it was refused
    # AlreadyExists (runtime/watched.py, CachedKube.get). Its granted list reveals as much as get would.
    **{
        (kind.group, kind.plural, "get"): "read from the API after a create answered AlreadyExists"
        for kind in WATCHED_KINDS
    },
}
# One object of each kind a tenant's children have: a hand edit of each is restored with a patch.
EDITED = (
    ("Namespace", None),
    ("ResourceQuota", "tenant-quota"),
    ("NetworkPolicy", "default-deny"),
    ("ServiceAccount", "tracker"),
    ("ConfigMap", "tracker-settings"),
    ("Service", "tracker"),
    ("PodDisruptionBudget", "tracker"),
    ("CronJob", "retention"),
    ("Ingress", "tracker"),
    ("RoleBinding", "polite-operator-secrets"),
)
PART_OF = "app.kubernetes.io/part-of"  # a label every child carries


# -- what was asked, and what is granted ------------------------------------------------------------------


def api_resource(request_path: str) -> tuple[str, str] | None:
    """(API group, ``resource`` or ``resource/subresource``) of a resource request's path, None for any
    other (discovery, /version, /openapi), as the API server's RequestInfo resolves them
    (https://kubernetes.io/docs/reference/access-authn-authz/authorization/#review-your-request-attributes):
    ``/api/v1/...`` is the core group, ``/apis/<group>/<version>/...`` a named one; both may be under
    ``namespaces/<ns>/``; ``/api/v1/namespaces/<name>[/status|/finalize]`` is the namespaces resource."""
    parts = [part for part in request_path.split("/") if part]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
        rest = rest[2:]  # a namespaced resource, not the namespace itself
    return group, f"{rest[0]}/{rest[2]}" if len(rest) >= 3 else rest[0]


def used_triples(records: Iterable[Any], user: str) -> tuple[set[Triple], set[str]]:
    """What ``user`` asked: (group, resource, verb) of its resource requests, and its other paths."""
    used: set[Triple] = set()
    other: set[str] = set()
    for record in records:
        if record.user != user:
            continue
        found = api_resource(record.path)
        if found is None:
            other.add(f"{record.verb} {record.path}")
        else:
            used.add((*found, record.verb))
    return used, other


def granted_triples(role: Mapping[str, Any]) -> set[Triple]:
    """Every (group, resource, verb) a ClusterRole's rules name (a ``*`` stays a literal ``*``)."""
    return {
        (group, resource, verb)
        for rule in role.get("rules") or []
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
    }


def is_granted(triple: Triple, granted: set[Triple]) -> bool:
    group, resource, verb = triple
    return any(g in (group, "*") and r in (resource, "*") and v in (verb, "*") for g, r, v in granted)


def shown(triples: Iterable[Triple]) -> str:
    return "\n".join(f"  {verb:<8} {resource}.{group or 'core'}" for group, resource, verb in sorted(triples))


@pytest.mark.parametrize(
    ("request_path", "expected"),
    [
        ("/api/v1/namespaces", ("", "namespaces")),
        ("/api/v1/namespaces/polite-a/finalize", ("", "namespaces/finalize")),
        ("/api/v1/namespaces/polite-a/secrets/keys", ("", "secrets")),
        (
            "/api/v1/namespaces/polite-a/persistentvolumeclaims/data-postgres-0/status",
            ("", "persistentvolumeclaims/status"),
        ),
        ("/apis/apps/v1/statefulsets", ("apps", "statefulsets")),
        ("/apis/polite.io/v1alpha1/politetenants/acme/status", ("polite.io", "politetenants/status")),
        ("/apis/apps/v1", None),
        ("/version", None),
    ],
)
def test_api_resource_reads_group_and_resource_from_a_path(request_path: str, expected: tuple[str, str] | None) -> None:
    assert api_resource(request_path) == expected


# -- the chart, as helm renders it ------------------------------------------------------------------------


def helm_render(template: str, namespace: str) -> list[dict[str, Any]]:
    """One template of the chart as ``helm template --namespace NS --show-only T`` renders it."""
    args = [str(HELM), "template", RELEASE, str(CHART), "--namespace", namespace, "--show-only", template]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if isinstance(doc, dict)]


def watch_denials(handle: KubeApiHandle) -> list[str]:
    """Wrap the emulator's RBAC authorizer to note each refusal (the request log has no status codes)."""
    denials: list[str] = []

    def install(emulator: PoliteKubernetesEmulator) -> None:
        inner = emulator.authorizer
        assert inner is not None, "RBAC is not enabled"

        def authorize(attributes: Attributes, emulator: PoliteKubernetesEmulator) -> None:
            try:
                inner(attributes, emulator)
            except ApiError as exc:
                denials.append(f"{attributes.user.username}: {attributes.verb} {attributes.path}: {exc.message}")
                raise

        emulator.authorizer = authorize

    handle.call(install)
    return denials


# -- the test ------------------------------------------------------------------------------------------------


def test_operator_runs_under_the_charts_rbac_which_grants_exactly_what_it_uses(tmp_path: Path) -> None:
    with running_kube_api(rbac=True, cnpg=True, crds=(POLITETENANT_CRD, PEERING_CRD)) as handle:
        denials = watch_denials(handle)
        created = install_chart_rbac(handle, namespace=OPERATOR_NAMESPACE, release=RELEASE)
        (account,) = [o for o in created if o["kind"] == "ServiceAccount"]
        # The operator's ClusterRole, the Secrets-only one it binds in tenant namespaces, its namespace's Role.
        roles = [o for o in created if o["kind"] in ("ClusterRole", "Role")]
        user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{account['metadata']['name']}"
        cluster = Cluster(handle.kubeconfig_path, handle)
        for doc in helm_render("templates/peering.yaml", OPERATOR_NAMESPACE):
            assert doc["metadata"]["name"] == PEERING, "operator_args passes --peering PEERING"
            cluster.write("POST", "/apis/kopf.dev/v1/clusterkopfpeerings", doc, content_type="application/json")
        for doc in helm_render("templates/admissionpolicy.yaml", OPERATOR_NAMESPACE):  # as the chart installs
            plural = "validatingadmissionpolicies" if doc["kind"] == "ValidatingAdmissionPolicy" else ""
            plural = plural or "validatingadmissionpolicybindings"
            cluster.write(
                "POST", f"/apis/admissionregistration.k8s.io/v1/{plural}", doc, content_type="application/json"
            )
        (configmap,) = helm_render("templates/configmap.yaml", OPERATOR_NAMESPACE)
        config = tmp_path / "config.yaml"  # mounted from the ConfigMap in a cluster
        config.write_text(configmap["data"]["config.yaml"], encoding="utf-8")
        kubeconfig = handle.service_account_kubeconfig(OPERATOR_NAMESPACE, account["metadata"]["name"], tmp_path / "sa")
        liveness = free_port()
        args = operator_args(peering=True, extra=("--liveness", f"http://127.0.0.1:{liveness}/healthz"))
        env = {"POLITE_OPERATOR_CONFIG": str(config), "POD_ID": f"{RELEASE}-politetenant-0"}
        process = start_operator(kubeconfig, extra_args=args, env=env, log_path=tmp_path / "operator.log")
        operator = Operator(process, 0, liveness, config)
        try:
            wait_started(cluster, operator)
            live_a_whole_life(cluster, operator)
        except AssertionError as exc:  # a step that never came may have been refused: say so first
            refused = handle.call(lambda _: list(dict.fromkeys(denials)))
            raise AssertionError("refused by RBAC:\n" + "\n".join(refused) + f"\n{exc}" if refused else exc) from None
        finally:
            process.stop()
        records = handle.requests_served()
        refused = handle.call(lambda _: list(denials))
    logs = process.logs()
    used, other = used_triples(records, user)
    granted = set().union(*(granted_triples(role) for role in roles))
    print(f"\n{user} asked for ({len(used)}):\n{shown(used)}\nand, outside resources: {sorted(other)}")
    print(f"{', '.join(r['metadata']['name'] for r in roles)} grant ({len(granted)}):\n{shown(granted)}")
    mine = [denial for denial in refused if denial.startswith(f"{user}:")]
    assert mine == [], "the chart's RBAC refused the operator:\n" + "\n".join(mine)
    assert "Forbidden" not in logs, "the operator met a 403:\n" + "\n".join(
        line for line in logs.splitlines() if "Forbidden" in line
    )
    ungranted = {triple for triple in used if not is_granted(triple, granted)}
    assert not ungranted, f"used but not granted (RBAC should have refused them):\n{shown(ungranted)}"
    unused = granted - used - set(NEEDED_UNCALLED)
    assert not unused, (
        f"granted by the ClusterRole but never used by the operator; remove them from "
        f"charts/politetenant/templates/clusterrole.yaml (or say in NEEDED_UNCALLED why the code needs them):\n"
        f"{shown(unused)}"
    )


def live_a_whole_life(cluster: Cluster, operator: Operator) -> None:
    """One tenant through every path of the operator that calls the API, each outcome checked briefly;
    then a tenant of the CloudNativePG engine, whose Cluster only that engine writes."""
    name = unique("rbac")
    namespace = f"polite-{name}"
    api = {"host": f"api-{name}.example.com", "allowedSourceRanges": ["10.0.0.0/8"]}
    hosts = {"host": f"{name}.example.com", "api": api}
    database = {"engine": "statefulset", "storage": "1Gi"}
    uid = cluster.create_tenant(name, tracker=hosts, database=database, deletionPolicy="Delete")["metadata"]["uid"]
    provisioned(cluster, operator, name)

    # An earlier version's tracker Deployment serves until the StatefulSet does, then goes.
    deployment = path("Deployment", "tracker", namespace)
    cluster.write(
        "POST", path("Deployment", namespace=namespace), legacy_tracker(name), content_type="application/json"
    )
    wait_ready(cluster, operator, name)
    operator.wait_for(lambda: cluster.get(deployment) is None, "the legacy tracker Deployment retired", TIMEOUT)
    assert cluster.get(path("Ingress", "tracker-api", namespace)) is not None, "no Ingress for the API host"

    # A tracker StatefulSet deleted by hand is restored.
    before = cluster.get(path("StatefulSet", "tracker", namespace))
    assert before is not None
    cluster.write("DELETE", path("StatefulSet", "tracker", namespace))

    def restored() -> bool:
        again = cluster.get(path("StatefulSet", "tracker", namespace))
        return again is not None and again["metadata"]["uid"] != before["metadata"]["uid"]

    operator.wait_for(restored, "the tracker StatefulSet restored", TIMEOUT)
    edit_by_hand(cluster, operator, namespace, EDITED)
    wait_ready(cluster, operator, name)

    # The hosts removed from the spec: both Ingresses are pruned.
    cluster.patch_tenant(name, {"spec": {"tracker": {"host": None, "api": None}}})
    ingresses = [path("Ingress", ingress, namespace) for ingress in ("tracker", "tracker-api")]
    operator.wait_for(lambda: not any(map(cluster.get, ingresses)), "the Ingresses pruned", TIMEOUT)
    version = wait_ready(cluster, operator, name)["status"]["keys"]["version"]

    # A key rotation asked by annotation.
    cluster.patch_tenant(name, {"metadata": {"annotations": {ROTATE_ANNOTATION: "rbac-1"}}})

    def rotated() -> bool:
        keys = ((cluster.tenant(name) or {}).get("status") or {}).get("keys") or {}
        return bool(keys.get("version") == version + 1)

    operator.wait_for(rotated, "the keys rotated", TIMEOUT)

    # More database storage: the bound claim the StatefulSet controller made is grown.
    claim = bind_database_claim(cluster, namespace)
    cluster.patch_tenant(name, {"spec": {"database": {"storage": "2Gi"}}})

    def grown() -> bool:
        live = cluster.get(claim) or {}
        return bool(live.get("spec", {}).get("resources", {}).get("requests", {}).get("storage") == "2Gi")

    operator.wait_for(grown, "the database claim patched to 2Gi", TIMEOUT)

    # A legal hold: the deletion waits; lifted, deletionPolicy Delete removes the namespace and shreds the keys.
    cluster.patch_tenant(name, {"spec": {"legalHold": True}})

    def suspended() -> bool:
        return ((cluster.get(path("CronJob", "retention", namespace)) or {}).get("spec") or {}).get("suspend") is True

    operator.wait_for(suspended, "retention suspended by the hold", TIMEOUT)
    assert cluster.request("DELETE", f"{TENANTS}/{name}").status in (200, 202)

    def held() -> bool:
        tenant = cluster.tenant(name) or {}
        return condition(tenant, "Ready").get("reason") == "LegalHold"

    operator.wait_for(held, "the deletion held by the legal hold", TIMEOUT)
    assert cluster.get(path("Namespace", namespace)) is not None
    cluster.patch_tenant(name, {"spec": {"legalHold": False}})
    operator.wait_for(lambda: cluster.tenant(name) is None, "the tenant deleted once the hold is lifted", TIMEOUT)
    assert cluster.get(path("Namespace", namespace)) is None
    assert cluster.get(path("Secret", f"polite-{name}-keys", OPERATOR_NAMESPACE)) is None, "keys not shredded"
    assert "CryptoShredded" in cluster.reasons(name, uid)

    # The other database engine: a CloudNativePG Cluster, made and restored after a hand edit.
    other = unique("rbac-pg")
    cluster.create_tenant(other, database={"engine": "cnpg"})
    assert cluster.get(path("StatefulSet", "postgres", f"polite-{other}")) is None
    wait_ready(cluster, operator, other)
    edit_by_hand(cluster, operator, f"polite-{other}", (("Cluster", "postgres"),))


def edit_by_hand(
    cluster: Cluster, operator: Operator, namespace: str, objects: Iterable[tuple[str, str | None]]
) -> None:
    """Change a label of each object as a person would; the operator puts every one back."""
    paths = [path(kind, name or namespace, None if kind == "Namespace" else namespace) for kind, name in objects]
    for object_path in paths:
        cluster.write("PATCH", object_path, {"metadata": {"labels": {PART_OF: "edited-by-hand"}}})

    def restored() -> bool:
        return all(
            ((cluster.get(p) or {}).get("metadata", {}).get("labels") or {}).get(PART_OF) == "politetenant"
            for p in paths
        )

    operator.wait_for(restored, f"the hand edits restored: {paths}", TIMEOUT)


def bind_database_claim(cluster: Cluster, namespace: str) -> str:
    """Do what the StatefulSet controller and a provisioner would: claim ``data-postgres-0`` from the
    database StatefulSet's template, bound at its size, of a StorageClass that allows expansion."""
    statefulset = cluster.get(path("StatefulSet", "postgres", namespace))
    assert statefulset is not None
    (template,) = [t for t in statefulset["spec"]["volumeClaimTemplates"] if t["metadata"]["name"] == "data"]
    storage_class = template["spec"]["storageClassName"]
    classes = "/apis/storage.k8s.io/v1/storageclasses"
    expandable = {"metadata": {"name": storage_class}, "provisioner": "ebs.csi.aws.com", "allowVolumeExpansion": True}
    cluster.write("POST", classes, expandable, content_type="application/json")
    claims = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims"
    size = template["spec"]["resources"]["requests"]["storage"]
    labels = {**(template["metadata"].get("labels") or {}), **statefulset["spec"]["selector"]["matchLabels"]}
    claim = {"metadata": {"name": "data-postgres-0", "labels": labels}, "spec": template["spec"]}
    cluster.write("POST", claims, claim, content_type="application/json")
    bound = {"status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": size}}}
    cluster.write("PATCH", f"{claims}/data-postgres-0/status", bound)
    cluster.write("PATCH", f"{claims}/data-postgres-0", {"spec": {"volumeName": f"pv-{namespace}-data"}})
    return f"{claims}/data-postgres-0"
