"""RBAC in the API emulator (tests/fakes/kube_rbac.py), checked over HTTP against the RBAC documentation.

Every rule kind is tried with one request it allows and one it refuses; refusals are compared with the
API server's exact 403 message. The last tests install the Helm chart's RBAC with the real helm and
run the kubernetes client, and a kopf operator process, as the operator's ServiceAccount.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import kubernetes
import pytest
import yaml

from tests.e2e.operator_process import kopf_command, start_operator
from tests.fakes.kube_emulator import ANONYMOUS, Attributes, UserInfo
from tests.fakes.kube_rbac import RBAC_GROUP, rule_allows
from tests.fakes.kube_server import ApiResponse, KubeApiHandle, install_chart_rbac, running_kube_api, write_kubeconfig

RBAC = f"/apis/{RBAC_GROUP}/v1"
TENANTS = "/apis/polite.io/v1alpha1/politetenants"
MERGE = "application/merge-patch+json"
ROLE, CLUSTER_ROLE = f"role.{RBAC_GROUP}", f"clusterrole.{RBAC_GROUP}"


@pytest.fixture(scope="module")
def api() -> Iterator[KubeApiHandle]:
    with running_kube_api(rbac=True) as handle:
        yield handle


_names = iter(range(1, 1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def created(answer: ApiResponse) -> dict[str, Any]:
    assert answer.status == 201, answer.body
    body: dict[str, Any] = answer.body
    return body


def namespace(api: KubeApiHandle) -> str:
    name = unique("ns")
    created(api.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}}))
    return name


def account(api: KubeApiHandle, ns: str, name: str = "app") -> str:
    """A ServiceAccount and a token of it."""
    created(api.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": name}}))
    return api.service_account_token(ns, name)


def role(api: KubeApiHandle, rules: list[dict[str, Any]], ns: str | None = None) -> str:
    """A Role in ``ns``, or a ClusterRole without it."""
    name = unique("role")
    path = f"{RBAC}/namespaces/{ns}/roles" if ns else f"{RBAC}/clusterroles"
    created(api.request("POST", path, {"metadata": {"name": name}, "rules": rules}))
    return name


def bind(
    api: KubeApiHandle, role_name: str, subjects: list[dict[str, Any]], *, ns: str | None = None, kind: str = ""
) -> None:
    """A RoleBinding in ``ns`` (to a Role unless ``kind`` says ClusterRole), or a ClusterRoleBinding."""
    ref = {"apiGroup": RBAC_GROUP, "kind": kind or ("Role" if ns else "ClusterRole"), "name": role_name}
    body = {"metadata": {"name": unique("binding")}, "roleRef": ref, "subjects": subjects}
    created(api.request("POST", f"{RBAC}/namespaces/{ns}/rolebindings" if ns else f"{RBAC}/clusterrolebindings", body))


def sa(ns: str, name: str = "app") -> dict[str, Any]:
    return {"kind": "ServiceAccount", "name": name, "namespace": ns}


def refused(answer: ApiResponse, message: str) -> dict[str, Any]:
    assert answer.status == 403, answer.body
    assert answer.body["reason"] == "Forbidden" and answer.body["code"] == 403
    assert answer.body["message"] == message
    details: dict[str, Any] = answer.body.get("details", {})
    return details


def tenant(name: str) -> dict[str, Any]:
    spec = {"displayName": "Acme Corp", "region": "eu-ireland"}
    return {"apiVersion": "polite.io/v1alpha1", "kind": "PoliteTenant", "metadata": {"name": name}, "spec": spec}


def metadata(api: KubeApiHandle, path: str) -> dict[str, Any]:
    found: dict[str, Any] = api.request("GET", path).body.get("metadata", {})
    return found


def configmap(api: KubeApiHandle, ns: str, name: str) -> None:
    created(api.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": name}}))


# --- authentication ---------------------------------------------------------------------------------


def test_an_unknown_token_is_401_and_no_token_is_the_anonymous_user(api: KubeApiHandle) -> None:
    unknown = api.request("GET", "/api/v1/namespaces", token="not-a-token")
    anonymous = api.request("GET", "/api/v1/namespaces", token="")

    assert unknown.status == 401 and unknown.body["reason"] == "Unauthorized"
    refused(
        anonymous,
        'namespaces is forbidden: User "system:anonymous" cannot list resource "namespaces" in API group "" '
        "at the cluster scope",
    )


def test_system_masters_is_allowed_everything_even_without_bindings() -> None:
    with running_kube_api(rbac=True) as api:
        assert api.request("DELETE", f"{RBAC}/clusterrolebindings/cluster-admin").status == 200
        master = api.issue_token("root-like", ["system:masters"])

        assert api.request("GET", "/api/v1/secrets", token=master).status == 200
        assert api.request("DELETE", f"{RBAC}/clusterroles/cluster-admin", token=master).status == 200
        assert api.request("GET", "/healthz/etcd", token=master).status == 404  # allowed; not served


def test_the_handle_and_its_kubeconfig_speak_as_kubernetes_admin(api: KubeApiHandle) -> None:
    core = kubernetes.client.CoreV1Api(api.api_client())
    mark = api.request_count()
    names = [n.metadata.name for n in core.list_namespace().items if n.metadata]
    api.request("GET", "/api/v1/namespaces/default")
    api.watch("/api/v1/namespaces", params={"timeoutSeconds": "1"}, count=1)

    assert "default" in names
    assert [(r.verb, r.user) for r in api.requests_served(mark)] == [
        ("list", "kubernetes-admin"),
        ("get", "kubernetes-admin"),
        ("watch", "kubernetes-admin"),
    ]


def test_a_service_account_token_needs_the_account() -> None:
    with running_kube_api(rbac=True) as api, pytest.raises(LookupError, match='serviceaccounts "ghost" not found'):
        api.service_account_token("default", "ghost")


def test_a_kubeconfig_carries_the_bearer_token(tmp_path: Path) -> None:
    config = yaml.safe_load(write_kubeconfig(tmp_path / "k", "http://127.0.0.1:1/", token="abc", user="me").read_text())
    anonymous = yaml.safe_load(write_kubeconfig(tmp_path / "a", "http://127.0.0.1:1").read_text())

    assert config["users"] == [{"name": "me", "user": {"token": "abc"}}]
    assert config["contexts"][0]["context"]["user"] == "me"
    assert anonymous["users"] == [{"name": "anonymous", "user": {}}]


# --- bindings and subjects ----------------------------------------------------------------------------


def test_a_role_grants_in_its_namespace_only(api: KubeApiHandle) -> None:
    home, other = namespace(api), namespace(api)
    token = account(api, home)
    bind(
        api,
        role(api, [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}], home),
        [sa(home)],
        ns=home,
    )
    configmap(api, other, "there")
    user = f"system:serviceaccount:{home}:app"

    assert api.request("GET", f"/api/v1/namespaces/{home}/configmaps", token=token).status == 200
    listed = api.request("GET", f"/api/v1/namespaces/{other}/configmaps", token=token)
    named = api.request("GET", f"/api/v1/namespaces/{other}/configmaps/there", token=token)
    everywhere = api.request("GET", "/api/v1/configmaps", token=token)

    in_other = f'in API group "" in the namespace "{other}"'
    assert refused(listed, f'configmaps is forbidden: User "{user}" cannot list resource "configmaps" {in_other}') == {
        "kind": "configmaps"
    }
    details = refused(
        named, f'configmaps "there" is forbidden: User "{user}" cannot get resource "configmaps" {in_other}'
    )
    assert details == {"name": "there", "kind": "configmaps"}
    refused(
        everywhere,
        f'configmaps is forbidden: User "{user}" cannot list resource "configmaps" in API group "" '
        "at the cluster scope",
    )


def test_a_service_account_subject_without_namespace_is_of_the_bindings_namespace(api: KubeApiHandle) -> None:
    home = namespace(api)
    token = account(api, home)
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]
    bind(api, role(api, rules, home), [{"kind": "ServiceAccount", "name": "app"}], ns=home)

    assert api.request("GET", f"/api/v1/namespaces/{home}/configmaps", token=token).status == 200


def test_a_rolebinding_to_a_clusterrole_grants_it_in_the_bindings_namespace(api: KubeApiHandle) -> None:
    home, other = namespace(api), namespace(api)
    token = account(api, home)
    reader = role(api, [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}])
    bind(api, reader, [sa(home)], ns=home, kind="ClusterRole")

    assert api.request("GET", f"/api/v1/namespaces/{home}/secrets/x", token=token).status == 404
    refused(
        api.request("GET", f"/api/v1/namespaces/{other}/secrets/x", token=token),
        f'secrets "x" is forbidden: User "system:serviceaccount:{home}:app" cannot get resource "secrets" '
        f'in API group "" in the namespace "{other}"',
    )


def test_a_clusterrolebinding_grants_everywhere_and_at_the_cluster_scope(api: KubeApiHandle) -> None:
    alice, bob = api.issue_token("alice"), api.issue_token("bob")
    bind(
        api,
        role(api, [{"apiGroups": [""], "resources": ["namespaces", "secrets"], "verbs": ["list"]}]),
        [{"kind": "User", "name": "alice"}],
    )

    assert api.request("GET", "/api/v1/namespaces", token=alice).status == 200
    assert api.request("GET", "/api/v1/secrets", token=alice).status == 200
    assert api.request("GET", f"/api/v1/namespaces/{namespace(api)}/secrets", token=alice).status == 200
    refused(
        api.request("GET", "/api/v1/namespaces", token=bob),
        'namespaces is forbidden: User "bob" cannot list resource "namespaces" in API group "" at the cluster scope',
    )


def test_group_subjects_include_the_service_account_groups(api: KubeApiHandle) -> None:
    home = namespace(api)
    auditor, outsider, robot = api.issue_token("carol", ["auditors"]), api.issue_token("dave"), account(api, home)
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    bind(
        api,
        role(api, rules),
        [{"kind": "Group", "name": "auditors"}, {"kind": "Group", "name": f"system:serviceaccounts:{home}"}],
    )

    assert api.request("GET", "/api/v1/pods", token=auditor).status == 200
    assert api.request("GET", "/api/v1/pods", token=robot).status == 200
    assert api.request("GET", "/api/v1/pods", token=outsider).status == 403


def test_a_binding_to_a_missing_role_is_named_in_the_refusal(api: KubeApiHandle) -> None:
    home = namespace(api)
    token = account(api, home)
    bind(api, "ghost", [sa(home)], ns=home)

    prefix = (
        f'pods is forbidden: User "system:serviceaccount:{home}:app" cannot list resource "pods" in API group "" '
        f'in the namespace "{home}": RBAC: '
    )
    refused(api.request("GET", f"/api/v1/namespaces/{home}/pods", token=token), prefix + f'{ROLE} "ghost" not found')
    bind(api, "phantom", [sa(home)], ns=home, kind="ClusterRole")
    both = api.request("GET", f"/api/v1/namespaces/{home}/pods", token=token).body["message"]
    assert both.startswith(prefix + "[") and both.endswith("]")  # several errors: aggregated in brackets
    assert sorted(both.removeprefix(prefix)[1:-1].split(", ")) == [
        f'{CLUSTER_ROLE} "phantom" not found',
        f'{ROLE} "ghost" not found',
    ]


def test_grants_and_revocations_count_from_the_next_request(api: KubeApiHandle) -> None:
    home = namespace(api)
    token = account(api, home)
    path = f"/api/v1/namespaces/{home}/services"
    rules = [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}]
    before = api.request("GET", path, token=token).status
    bind(api, role(api, rules, home), [sa(home)], ns=home)
    granted = api.request("GET", path, token=token).status
    [binding] = api.request("GET", f"{RBAC}/namespaces/{home}/rolebindings").body["items"]
    assert api.request("DELETE", f"{RBAC}/namespaces/{home}/rolebindings/{binding['metadata']['name']}").status == 200

    assert (before, granted, api.request("GET", path, token=token).status) == (403, 200, 403)


def test_bindings_hold_after_the_change_log_is_compacted() -> None:
    with running_kube_api(rbac=True, event_window=2) as api:
        alice = api.issue_token("alice")
        refused_first = api.request("GET", "/api/v1/namespaces", token=alice).status
        bind(
            api,
            role(api, [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}]),
            [{"kind": "User", "name": "alice"}],
        )
        for _ in range(4):
            namespace(api)  # more writes than the window keeps

        assert (refused_first, api.request("GET", "/api/v1/namespaces", token=alice).status) == (403, 200)


def test_a_namespace_object_is_read_in_its_own_namespace(api: KubeApiHandle) -> None:
    home, other = namespace(api), namespace(api)
    token = account(api, home)
    bind(
        api, role(api, [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}], home), [sa(home)], ns=home
    )

    assert api.request("GET", f"/api/v1/namespaces/{home}", token=token).status == 200
    details = refused(
        api.request("GET", f"/api/v1/namespaces/{other}", token=token),
        f'namespaces "{other}" is forbidden: User "system:serviceaccount:{home}:app" cannot get resource '
        f'"namespaces" in API group "" in the namespace "{other}"',
    )
    assert details == {"name": other, "kind": "namespaces"}


# --- rules ---------------------------------------------------------------------------------------------


def test_a_subresource_rule_grants_the_subresource_not_the_resource(api: KubeApiHandle) -> None:
    name = unique("tenant")
    created(api.request("POST", TENANTS, tenant(name)))
    writer, other = api.issue_token("status-writer"), api.issue_token("status-less")
    bind(
        api,
        role(api, [{"apiGroups": ["polite.io"], "resources": ["politetenants/status"], "verbs": ["patch"]}]),
        [{"kind": "User", "name": "status-writer"}],
    )
    patch = {"status": {"phase": "Ready"}}

    status = api.request("PATCH", f"{TENANTS}/{name}/status", patch, content_type=MERGE, token=writer)
    main = api.request("PATCH", f"{TENANTS}/{name}", patch, content_type=MERGE, token=writer)
    denied = api.request("PATCH", f"{TENANTS}/{name}/status", patch, content_type=MERGE, token=other)

    assert status.status == 200, status.body
    details = refused(
        main,
        f'politetenants.polite.io "{name}" is forbidden: User "status-writer" cannot patch resource "politetenants" '
        'in API group "polite.io" at the cluster scope',
    )
    assert details == {"name": name, "group": "polite.io", "kind": "politetenants"}
    refused(
        denied,
        f'politetenants.polite.io "{name}" is forbidden: User "status-less" cannot patch resource '
        '"politetenants/status" in API group "polite.io" at the cluster scope',
    )


def test_resource_names_restrict_named_requests_only(api: KubeApiHandle) -> None:
    home = namespace(api)
    token = account(api, home)
    configmap(api, home, "mine")
    configmap(api, home, "theirs")
    rules = [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["mine"],
            "verbs": ["get", "patch", "delete", "list", "create"],
        }
    ]
    bind(api, role(api, rules, home), [sa(home)], ns=home)
    base = f"/api/v1/namespaces/{home}/configmaps"

    assert api.request("GET", f"{base}/mine", token=token).status == 200
    assert api.request("PATCH", f"{base}/mine", {"data": {"a": "b"}}, content_type=MERGE, token=token).status == 200
    assert api.request("GET", f"{base}/theirs", token=token).status == 403
    assert api.request("DELETE", f"{base}/theirs", token=token).status == 403
    # No name in the request: a list, or a create (its name is not known to the authorizer).
    assert api.request("GET", base, token=token).status == 403
    assert api.request("POST", base, {"metadata": {"name": "mine-too"}}, token=token).status == 403
    assert api.request("DELETE", f"{base}/mine", token=token).status == 200


def test_resource_names_allow_a_list_or_watch_of_that_name_by_field_selector(api: KubeApiHandle) -> None:
    home = namespace(api)
    token = account(api, home)
    configmap(api, home, "mine")
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["mine"], "verbs": ["list", "watch"]}]
    bind(api, role(api, rules, home), [sa(home)], ns=home)
    base = f"/api/v1/namespaces/{home}/configmaps"

    def listed(selector: str) -> int:
        return api.request("GET", base, params={"fieldSelector": selector}, token=token).status

    assert (listed("metadata.name=mine"), listed("metadata.name==mine"), listed("metadata.name=theirs")) == (
        200,
        200,
        403,
    )
    assert listed("metadata.name!=theirs") == 403  # not an exact match of one name
    [event] = api.watch(base, params={"fieldSelector": "metadata.name=mine"}, token=token, count=1, timeout=2)
    assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "mine"


def test_watch_and_list_are_different_verbs(api: KubeApiHandle) -> None:
    home = namespace(api)
    lister, watcher = account(api, home, "lister"), account(api, home, "watcher")
    bind(
        api,
        role(api, [{"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}], home),
        [sa(home, "lister")],
        ns=home,
    )
    bind(
        api,
        role(api, [{"apiGroups": [""], "resources": ["events"], "verbs": ["watch"]}], home),
        [sa(home, "watcher")],
        ns=home,
    )
    path = f"/api/v1/namespaces/{home}/events"

    assert api.request("GET", path, token=lister).status == 200
    [event] = api.watch(path, token=lister, timeout=2)
    assert event["type"] == "ERROR" and event["object"]["message"] == (
        f'events is forbidden: User "system:serviceaccount:{home}:lister" cannot watch resource "events" '
        f'in API group "" in the namespace "{home}"'
    )
    assert api.request("GET", path, token=watcher).status == 403
    assert api.watch(path, token=watcher, timeout=0.5) == []  # open, and quiet


def test_wildcards_of_groups_resources_verbs_and_subresources(api: KubeApiHandle) -> None:
    everything = api.issue_token("wild")
    statuses = api.issue_token("statuses")
    bind(api, role(api, [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]), [{"kind": "User", "name": "wild"}])
    bind(
        api,
        role(api, [{"apiGroups": ["apps"], "resources": ["*/status"], "verbs": ["get"]}]),
        [{"kind": "User", "name": "statuses"}],
    )

    assert api.request("GET", f"{RBAC}/clusterroles", token=everything).status == 200
    assert api.request("GET", "/api/v1/namespaces/default/pods/p/status", token=everything).status == 404
    assert api.request("GET", "/apis/apps/v1/namespaces/default/deployments/d/status", token=statuses).status == 404
    assert api.request("GET", "/apis/apps/v1/namespaces/default/deployments/d", token=statuses).status == 403
    assert api.request("GET", "/api/v1/namespaces/default/pods/p/status", token=statuses).status == 403
    assert api.request("GET", "/metrics", token=everything).status == 403  # resources are not URLs


def test_rules_match_as_the_rbac_helpers_do() -> None:
    pods = kmock.resource("", "v1", "pods")
    attrs = Attributes(UserInfo("u"), "get", "/api/v1/namespaces/n/pods/p/log", pods, "log", "n", "p")

    assert rule_allows(attrs, {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]})
    assert rule_allows(attrs, {"apiGroups": [""], "resources": ["*/log"], "verbs": ["*"]})
    assert not rule_allows(attrs, {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})
    assert not rule_allows(attrs, {"apiGroups": [""], "resources": ["*/status"], "verbs": ["get"]})
    assert not rule_allows(attrs, {"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]})
    assert not rule_allows(
        attrs, {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"], "resourceNames": ["q"]}
    )
    path = Attributes(ANONYMOUS, "get", "/logs/kube.log")
    assert rule_allows(path, {"nonResourceURLs": ["/logs/*"], "verbs": ["get"]})
    assert not rule_allows(path, {"nonResourceURLs": ["/logs"], "verbs": ["get"]})
    assert not rule_allows(path, {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})


# --- non-resource URLs and the bootstrap policy ------------------------------------------------------------


def test_discovery_is_for_authenticated_users_and_public_info_for_everyone(api: KubeApiHandle) -> None:
    nobody = api.issue_token("nobody-in-particular")  # no bindings of its own

    for path in ("/api", "/api/v1", "/apis", "/apis/polite.io/v1alpha1", "/openapi/v3", "/version"):
        assert api.request("GET", path, token=nobody).status == 200, path
    assert api.request("GET", "/version", token="").status == 200
    for path in ("/api", "/apis", "/openapi/v3"):
        refused(api.request("GET", path, token=""), f'forbidden: User "system:anonymous" cannot get path "{path}"')
    refused(
        api.request("GET", "/metrics", token=nobody),
        'forbidden: User "nobody-in-particular" cannot get path "/metrics"',
    )


def test_a_non_resource_rule_with_a_star_suffix_grants_the_prefix(api: KubeApiHandle) -> None:
    metrics = api.issue_token("scraper")
    bind(api, role(api, [{"nonResourceURLs": ["/metrics*"], "verbs": ["get"]}]), [{"kind": "User", "name": "scraper"}])

    assert api.request("GET", "/metrics/cadvisor", token=metrics).status != 403
    assert api.request("GET", "/logs", token=metrics).status == 403


def test_the_bootstrap_roles_and_bindings_are_objects(api: KubeApiHandle) -> None:
    discovery = api.request("GET", f"{RBAC}/clusterroles/system:discovery").body
    public = api.request("GET", f"{RBAC}/clusterrolebindings/system:public-info-viewer").body
    admin = api.request("GET", f"{RBAC}/clusterrolebindings/cluster-admin").body

    assert discovery["metadata"]["labels"] == {"kubernetes.io/bootstrapping": "rbac-defaults"}
    assert set(discovery["rules"][0]["nonResourceURLs"]) >= {"/api", "/api/*", "/apis", "/apis/*", "/version"}
    assert [s["name"] for s in public["subjects"]] == ["system:authenticated", "system:unauthenticated"]
    assert admin["subjects"] == [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": "system:masters"}]


def test_rbac_object_names_are_path_segments(api: KubeApiHandle) -> None:
    colon = api.request("POST", f"{RBAC}/clusterroles", {"metadata": {"name": "polite:reader"}, "rules": []})
    slash = api.request("POST", f"{RBAC}/clusterroles", {"metadata": {"name": "polite/reader"}, "rules": []})

    assert colon.status == 201
    assert slash.status == 422
    assert slash.body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: \"polite/reader\": may not contain '/'",
            "field": "metadata.name",
        }
    ]


# --- the chart's RBAC, and real clients as the operator's ServiceAccount --------------------------------------


@pytest.fixture(scope="module")
def chart_rbac(api: KubeApiHandle) -> list[dict[str, Any]]:
    return install_chart_rbac(api, namespace="polite-system")


def operator_account(objects: list[dict[str, Any]]) -> str:
    [account_name] = [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"]
    return str(account_name)


def test_the_chart_rbac_lets_the_operator_list_tenants_but_not_secrets(
    api: KubeApiHandle, chart_rbac: list[dict[str, Any]], tmp_path: Path
) -> None:
    name = operator_account(chart_rbac)
    kubeconfig = api.service_account_kubeconfig("polite-system", name, tmp_path / "kubeconfig")
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]

    tenants: Any = kubernetes.client.CustomObjectsApi(client).list_cluster_custom_object(
        "polite.io", "v1alpha1", "politetenants"
    )
    with pytest.raises(kubernetes.client.ApiException) as secrets:
        kubernetes.client.CoreV1Api(client).list_namespaced_secret("default")

    assert {o["kind"] for o in chart_rbac} >= {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    assert isinstance(tenants["items"], list)
    assert secrets.value.status == 403
    assert yaml.safe_load(str(secrets.value.body))["message"] == (
        f'secrets is forbidden: User "system:serviceaccount:polite-system:{name}" cannot list resource "secrets" '
        'in API group "" in the namespace "default"'
    )


def test_chart_values_reach_the_rendered_rbac(api: KubeApiHandle) -> None:
    objects = install_chart_rbac(
        api, namespace=unique("chart"), release="other", values={"rbac": {"tokenRequest": True}}
    )
    roles = [o for o in objects if o["kind"] == "ClusterRole"]
    # The operator's own, and the Secrets-only one it binds in tenant namespaces.
    [cluster_role] = [o for o in roles if not o["metadata"]["name"].endswith("-tenant-secrets")]

    assert {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]} in cluster_role["rules"]


KOPF_SCRIPT = """
    import kopf


    @kopf.on.create("polite.io", "v1alpha1", "politetenants")
    def created(patch, **_):
        patch.metadata.annotations["test.polite.io/seen"] = "yes"
"""


@pytest.mark.slow
def test_kopf_sends_the_service_account_token_from_its_kubeconfig(
    api: KubeApiHandle, chart_rbac: list[dict[str, Any]], tmp_path: Path
) -> None:
    name = operator_account(chart_rbac)
    user = f"system:serviceaccount:polite-system:{name}"
    kubeconfig = api.service_account_kubeconfig("polite-system", name, tmp_path / "kubeconfig")
    script = tmp_path / "operator.py"
    script.write_text(textwrap.dedent(KOPF_SCRIPT), encoding="utf-8")
    mark = api.request_count()
    name_of_tenant = unique("kopf")
    operator = start_operator(kubeconfig, command=kopf_command(script), log_path=tmp_path / "operator.log")
    try:
        created(api.request("POST", TENANTS, tenant(name_of_tenant)))
        seen = f"{TENANTS}/{name_of_tenant}"
        operator.wait_for(lambda: "test.polite.io/seen" in metadata(api, seen).get("annotations", {}), 30, "the patch")
    finally:
        assert operator.stop() == 0, operator.logs()[-4000:]
    patched = [r for r in api.requests_served(mark) if r.verb == "patch" and name_of_tenant in r.path]
    assert patched and {r.user for r in patched} == {user}
    assert "Forbidden" not in operator.logs() and "permissions" not in operator.logs()  # kopf's own words


KUBECTL = Path(__file__).resolve().parents[2] / ".tools" / "kubectl"


@pytest.mark.slow
def test_kubectl_sends_the_token_to_an_https_server(tmp_path: Path) -> None:
    """client-go reads a kubeconfig's credentials only for an https server: ``tls=True`` gives it one."""
    if not (KUBECTL.is_file() and os.access(KUBECTL, os.X_OK)):
        pytest.fail(f"{KUBECTL} is missing: run `make venv`, or `scripts/fetch-kube-tools.sh .tools`", pytrace=False)
    with running_kube_api(rbac=True, tls=True) as api:
        token = account(api, "default", "viewer")
        bind(
            api,
            role(api, [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}], "default"),
            [sa("default", "viewer")],
            ns="default",
        )
        viewer = api.service_account_kubeconfig("default", "viewer", tmp_path / "viewer")

        def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}
            return subprocess.run(
                [str(KUBECTL), *args], capture_output=True, text=True, env=env, timeout=60, check=False
            )

        admin = kubectl(api.kubeconfig_path, "get", "namespaces", "-o", "name")
        listed = kubectl(viewer, "get", "configmaps", "-o", "name")
        secrets = kubectl(viewer, "get", "secrets")
        assert (
            api.url.startswith("https://")
            and api.request("GET", "/api/v1/namespaces/default/configmaps", token=token).status == 200
        )

    assert admin.returncode == 0 and "namespace/kube-system" in admin.stdout.split(), admin.stderr
    assert listed.returncode == 0, listed.stderr
    assert secrets.returncode != 0
    assert (
        'secrets is forbidden: User "system:serviceaccount:default:viewer" cannot list resource "secrets" '
        'in API group "" in the namespace "default"'
    ) in secrets.stderr
