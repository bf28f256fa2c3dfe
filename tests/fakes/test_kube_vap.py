"""The emulator's ValidatingAdmissionPolicy plugin (tests/fakes/kube_vap.py), rule by rule.

Each test writes a small policy and binding into an in-process emulator and hands one request to
``validating_admission_policies`` as the emulator would (an ``Admission``); the last tests send real
HTTP requests to an emulator that runs the plugin on every write. Behaviours and messages follow
https://kubernetes.io/docs/reference/access-authn-authz/validating-admission-policy/ .
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import kmock
import pytest

from tests.fakes.kube_emulator import NAMESPACES, Admission, ApiError, PoliteKubernetesEmulator, UserInfo
from tests.fakes.kube_server import running_kube_api
from tests.fakes.kube_vap import BINDINGS, POLICIES, audit_records, validating_admission_policies

Body = dict[str, Any]
CONFIGMAPS = kmock.resource("", "v1", "configmaps")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
ALICE = UserInfo("alice", ("team-a", "system:authenticated"), uid="u-1")
BOB = UserInfo("bob", ("system:authenticated",))
DENIED = "ValidatingAdmissionPolicy 'p' with binding 'p-binding' denied request: "


@dataclass
class Request(Admission):
    """An Admission that keeps its own warnings (the emulator turns them into Warning headers)."""

    warnings: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        self.warnings.append(text)


def cluster() -> PoliteKubernetesEmulator:
    """An emulator with two namespaces; the plugin is called directly, so fixtures are never judged."""
    k = PoliteKubernetesEmulator(strict=False)
    k.create_object(NAMESPACES, {"metadata": {"name": "team-a", "labels": {"env": "prod"}}})
    k.create_object(NAMESPACES, {"metadata": {"name": "team-b", "labels": {"env": "dev"}}})
    return k


def rule(resources: tuple[str, ...] = ("configmaps",), groups: tuple[str, ...] = ("",), **more: Any) -> Body:
    return {"apiGroups": list(groups), "apiVersions": ["*"], "resources": list(resources),
            "operations": more.pop("operations", ["*"]), **more}  # fmt: skip


def bind(k: PoliteKubernetesEmulator, name: str = "p", *, match: Body | None = None,
         actions: tuple[str, ...] = ("Deny",), binding: Body | None = None, **spec: Any) -> None:  # fmt: skip
    """A policy ``name`` (matching every configmap write unless ``match``) and its binding ``name-binding``."""
    body = {"matchConstraints": match if match is not None else {"resourceRules": [rule()]}, **spec}
    k.create_object(POLICIES, {"metadata": {"name": name}, "spec": body})
    binding_spec = {"policyName": name, "validationActions": list(actions), **(binding or {})}
    k.create_object(BINDINGS, {"metadata": {"name": f"{name}-binding"}, "spec": binding_spec})


def deny_binding(k: PoliteKubernetesEmulator, name: str, policy: str) -> None:
    k.create_object(
        BINDINGS, {"metadata": {"name": name}, "spec": {"policyName": policy, "validationActions": ["Deny"]}}
    )


def check(expression: str, **more: Any) -> Body:
    return {"expression": expression, **more}


def configmap(name: str = "c", namespace: str = "team-a", labels: Body | None = None, **data: str) -> Body:
    meta = {"name": name, "namespace": namespace, **({"labels": labels} if labels else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def write(k: PoliteKubernetesEmulator, obj: Body | None, *, op: str = "CREATE", old: Body | None = None,
          res: kmock.resource = CONFIGMAPS, user: UserInfo = ALICE, sub: str | None = None,
          dry_run: bool = False) -> Request:  # fmt: skip
    """One request through the plugin, as the emulator builds it; admitted unless it raises."""
    body = obj if obj is not None else old
    assert body is not None
    meta = body["metadata"]
    request = Request(op, res, body["kind"], meta["name"], meta.get("namespace"), obj, old, user, sub, dry_run, k)
    validating_admission_policies(request)
    return request


def refused(k: PoliteKubernetesEmulator, obj: Body | None, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        write(k, obj, **kwargs)
    return caught.value


# --- the refusal ----------------------------------------------------------------------------------


def test_a_failed_validation_is_refused_as_the_api_server_words_it_invalid_by_default() -> None:
    k = cluster()
    bind(k, validations=[check("object.data.size == 'small'")])

    error = refused(k, configmap(size="large"))

    inner = DENIED + "failed expression: object.data.size == 'small'"
    assert (error.code, error.reason) == (422, "Invalid")
    assert error.message == f'configmaps "c" is forbidden: {inner}'
    assert error.details == {"name": "c", "kind": "configmaps", "causes": [{"message": inner}]}
    write(k, configmap(size="small"))


def test_reason_sets_the_status_and_code_and_the_group_is_named() -> None:
    k = cluster()
    match = {"resourceRules": [rule(("deployments",), ("apps",))]}
    bind(k, match=match, validations=[check("false", reason="Forbidden", message="no deployments")])
    deployment = {"kind": "Deployment", "metadata": {"name": "web", "namespace": "team-a"}, "spec": {}}

    error = refused(k, deployment, res=DEPLOYMENTS)

    assert (error.code, error.reason) == (403, "Forbidden")
    assert error.message == f'deployments.apps "web" is forbidden: {DENIED}no deployments'
    assert error.details["group"] == "apps"


@pytest.mark.parametrize(
    ("message_expression", "shown"),
    [
        ("'size ' + object.data.size + ' is too big'", "size large is too big"),
        ("object.nope", "too big"),  # an error
        ("'two\\nlines'", "too big"),  # more than one line
        ("'   '", "too big"),  # blank
        ("42", "too big"),  # not a string
    ],
)
def test_message_expression_wins_over_message_unless_unusable(message_expression: str, shown: str) -> None:
    k = cluster()
    validation = check("object.data.size == 'small'", message="too big", messageExpression=message_expression)
    bind(k, validations=[validation])
    assert refused(k, configmap(size="large")).message.endswith(DENIED + shown)


def test_only_the_first_refusal_is_reported() -> None:
    k = cluster()
    bind(k, "p", validations=[check("false", message="first"), check("false", message="second")])
    bind(k, "q", validations=[check("false", message="third")])

    error = refused(k, configmap())

    assert error.message.endswith(DENIED + "first") and len(error.details["causes"]) == 1


def test_a_policy_without_binding_or_a_binding_without_policy_does_nothing() -> None:
    k = cluster()
    lonely = {"matchConstraints": {"resourceRules": [rule()]}, "validations": [check("false")]}
    k.create_object(POLICIES, {"metadata": {"name": "lonely"}, "spec": lonely})
    deny_binding(k, "orphan", "absent")
    write(k, configmap())


def test_admission_configuration_itself_is_never_judged() -> None:
    k = cluster()
    bind(k, match={"resourceRules": [rule(("*",), ("*",))]}, validations=[check("false")])
    policy = {"kind": "ValidatingAdmissionPolicy", "metadata": {"name": "other"}, "spec": {}}
    write(k, policy, res=POLICIES)
    refused(k, configmap())


# --- matching -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "sub", "matched"),
    [
        (("configmaps",), None, True),
        (("*",), None, True),
        (("secrets",), None, False),
        (("configmaps",), "status", False),
        (("configmaps/status",), "status", True),
        (("configmaps/*",), "status", True),
        (("*/*",), "status", True),
        (("*/*",), None, True),  # all resources and all their subresources
    ],
)
def test_resource_rules_match_resources_and_subresources(resources: tuple[str, ...], sub: str | None,
                                                         matched: bool) -> None:  # fmt: skip
    k = cluster()
    bind(k, match={"resourceRules": [rule(resources)]}, validations=[check("false")])
    if matched:
        refused(k, configmap(), sub=sub)
    else:
        write(k, configmap(), sub=sub)


def test_rules_match_group_version_operation_and_resource_name() -> None:
    k = cluster()
    bind(k, "p", match={"resourceRules": [rule(groups=("apps",))]}, validations=[check("false")])
    bind(k, "q", match={"resourceRules": [rule(operations=["UPDATE"])]}, validations=[check("false")])
    bind(k, "r", match={"resourceRules": [{**rule(), "apiVersions": ["v2"]}]}, validations=[check("false")])
    bind(k, "s", match={"resourceRules": [rule(resourceNames=["special"])]}, validations=[check("false")])
    write(k, configmap())
    write(k, None, op="DELETE", old=configmap())
    assert "'q'" in refused(k, configmap(), op="UPDATE", old=configmap()).message
    assert "'s'" in refused(k, configmap("special")).message


def test_scope_counts_a_namespace_object_as_cluster_scoped() -> None:
    k = cluster()
    namespaced = {"resourceRules": [rule(("*",), scope="Namespaced")]}
    bind(k, "p", match=namespaced, validations=[check("false", message="namespaced")])
    cluster_scoped = {"resourceRules": [rule(("*",), scope="Cluster")]}
    bind(k, "q", match=cluster_scoped, validations=[check("false", message="cluster")])
    namespace = {"kind": "Namespace", "metadata": {"name": "team-a"}}

    assert refused(k, configmap()).message.endswith("namespaced")
    assert refused(k, namespace, op="UPDATE", old=namespace, res=NAMESPACES).message.endswith("cluster")


def test_exclude_resource_rules_win() -> None:
    k = cluster()
    match = {"resourceRules": [rule(("*",))], "excludeResourceRules": [rule(resourceNames=["allowed"])]}
    bind(k, match=match, validations=[check("false")])
    write(k, configmap("allowed"))
    refused(k, configmap("other"))


def test_namespace_selector_reads_the_namespace_labels_and_passes_cluster_scoped_kinds() -> None:
    k = cluster()
    match = {"resourceRules": [rule(("*",))], "namespaceSelector": {"matchLabels": {"env": "prod"}}}
    bind(k, match=match, validations=[check("false")])
    refused(k, configmap(namespace="team-a"))
    write(k, configmap(namespace="team-b"))
    refused(k, {"kind": "Node", "metadata": {"name": "n1"}}, res=kmock.resource("", "v1", "nodes"))


def test_namespace_selector_judges_a_namespace_being_written_by_its_new_labels() -> None:
    k = cluster()
    match = {"resourceRules": [rule(("namespaces",))], "namespaceSelector": {"matchLabels": {"env": "prod"}}}
    bind(k, match=match, validations=[check("false")])
    refused(k, {"kind": "Namespace", "metadata": {"name": "new", "labels": {"env": "prod"}}}, res=NAMESPACES)
    write(k, {"kind": "Namespace", "metadata": {"name": "new2", "labels": {"env": "dev"}}}, res=NAMESPACES)


def test_object_selector_reads_new_or_old_labels() -> None:
    k = cluster()
    match = {
        "resourceRules": [rule()],
        "objectSelector": {"matchExpressions": [{"key": "guarded", "operator": "Exists"}]},
    }
    bind(k, match=match, validations=[check("false")])
    write(k, configmap())
    refused(k, configmap(labels={"guarded": "yes"}))
    refused(k, None, op="DELETE", old=configmap(labels={"guarded": "yes"}))


def test_a_binding_narrows_the_policy_with_its_match_resources() -> None:
    k = cluster()
    bind(
        k,
        validations=[check("false")],
        binding={"matchResources": {"namespaceSelector": {"matchLabels": {"env": "dev"}}}},
    )
    write(k, configmap(namespace="team-a"))
    refused(k, configmap(namespace="team-b"))


def test_match_conditions_all_true_to_apply_any_false_skips() -> None:
    k = cluster()
    conditions = [{"name": "alice", "expression": "request.userInfo.username == 'alice'"},
                  {"name": "not-dry", "expression": "!request.dryRun"}]  # fmt: skip
    bind(k, validations=[check("false")], matchConditions=conditions)
    refused(k, configmap(), user=ALICE)
    write(k, configmap(), user=BOB)
    write(k, configmap(), dry_run=True)


@pytest.mark.parametrize(("policy", "denied"), [("Fail", True), ("Ignore", False)])
def test_a_match_condition_error_follows_the_failure_policy(policy: str, denied: bool) -> None:
    k = cluster()
    conditions = [{"name": "broken", "expression": "object.missing == 1"}]
    bind(k, validations=[check("false", message="validated")], matchConditions=conditions, failurePolicy=policy)
    if denied:
        assert refused(k, configmap()).message.endswith(
            DENIED + "expression 'object.missing == 1' resulted in error: no such key: missing"
        )
    else:
        write(k, configmap())


def test_a_false_match_condition_skips_even_when_another_errs() -> None:
    k = cluster()
    conditions = [{"name": "broken", "expression": "object.missing == 1"}, {"name": "no", "expression": "false"}]
    bind(k, validations=[check("false")], matchConditions=conditions)
    write(k, configmap())


# --- evaluation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "denied"), [(None, True), ("Fail", True), ("Ignore", False)])
def test_an_erroring_validation_follows_the_failure_policy_fail_by_default(policy: str | None, denied: bool) -> None:
    k = cluster()
    extra: Body = {"failurePolicy": policy} if policy else {}
    bind(k, validations=[check("object.data.missing == 'x'")], **extra)
    if denied:
        error = refused(k, configmap())
        assert error.message.endswith(
            DENIED + "expression 'object.data.missing == 'x'' resulted in error: no such key: missing"
        )
        assert error.code == 422
    else:
        write(k, configmap())


def test_a_validation_that_does_not_compile_denies_under_fail() -> None:
    k = cluster()
    bind(k, validations=[check("object.data +")])
    assert "denied request: compilation error: ERROR: <input>:1:14: Syntax error" in refused(k, configmap()).message


def test_variables_compose_and_are_evaluated_only_when_used() -> None:
    k = cluster()
    variables = [{"name": "size", "expression": "object.data.size"},
                 {"name": "big", "expression": "variables.size == 'large'"},
                 {"name": "broken", "expression": "object.data.missing"}]  # fmt: skip
    bind(k, variables=variables, validations=[check("!variables.big", messageExpression="variables.size + ' is big'")])
    write(k, configmap(size="small"))
    assert refused(k, configmap(size="large")).message.endswith(DENIED + "large is big")


def test_a_failing_variable_fails_the_expression_that_reaches_it() -> None:
    k = cluster()
    variables = [{"name": "broken", "expression": "object.data.missing"}]
    bind(k, variables=variables, validations=[check("object.data.size == 'small' || variables.broken == 'x'")])
    write(k, configmap(size="small"))
    assert refused(k, configmap(size="large")).message.endswith(
        'resulted in error: composited variable "broken" fails to evaluate: no such key: missing'
    )


def test_old_object_is_the_stored_object_on_update_and_null_on_create_object_null_on_delete() -> None:
    k = cluster()
    grows = "oldObject == null || object == null || object.data.size >= oldObject.data.size"
    validations = [
        check(grows, message="may only grow"),
        check("request.operation != 'CREATE' || oldObject == null"),
        check("request.operation != 'DELETE' || (object == null && oldObject.data.size == '1')"),
    ]
    bind(k, validations=validations)
    write(k, configmap(size="1"))
    write(k, configmap(size="2"), op="UPDATE", old=configmap(size="1"))
    assert refused(k, configmap(size="1"), op="UPDATE", old=configmap(size="2")).message.endswith("may only grow")
    write(k, None, op="DELETE", old=configmap(size="1"))


def test_request_carries_who_what_and_where() -> None:
    k = cluster()
    expected = {
        "request.userInfo.username": "'alice'",
        "request.userInfo.groups": "['team-a', 'system:authenticated']",
        "request.userInfo.uid": "'u-1'",
        "request.operation": "'UPDATE'",
        "request.namespace": "'team-a'",
        "request.name": "'c'",
        "request.kind": "{'group': '', 'version': 'v1', 'kind': 'ConfigMap'}",
        "request.resource": "{'group': '', 'version': 'v1', 'resource': 'configmaps'}",
        "request.subResource": "'status'",
        "request.dryRun": "true",
    }
    bind(k, match={"resourceRules": [rule(("configmaps/status",))]},
         validations=[check(f"{path} == {value}", message=path) for path, value in expected.items()])  # fmt: skip
    write(k, configmap(), op="UPDATE", old=configmap(), sub="status", dry_run=True)


def test_namespace_object_is_the_request_namespace_and_null_when_cluster_scoped() -> None:
    k = cluster()
    match = {"resourceRules": [rule(("*",), ("*",))]}
    bind(
        k, match=match, validations=[check("namespaceObject == null || namespaceObject.metadata.labels.env == 'prod'")]
    )
    write(k, configmap(namespace="team-a"))
    refused(k, configmap(namespace="team-b"))
    write(k, {"kind": "Namespace", "metadata": {"name": "team-b"}}, op="UPDATE", res=NAMESPACES,
          old={"kind": "Namespace", "metadata": {"name": "team-b"}})  # fmt: skip


def test_warn_and_audit_actions_admit_and_report() -> None:
    k = cluster()
    bind(k, actions=("Warn", "Audit"), validations=[check("true"), check("false", message="careful")])

    request = write(k, configmap())

    assert request.warnings == ["Validation failed for ValidatingAdmissionPolicy 'p' with binding 'p-binding': careful"]
    (record,) = audit_records(k)
    assert (record.policy, record.binding, record.expression_index, record.message) == ("p", "p-binding", 1, "careful")
    assert record.validation_actions == ("Warn", "Audit") and (record.operation, record.name) == ("CREATE", "c")


def test_params_come_from_the_referenced_object() -> None:
    k = cluster()
    k.create_object(CONFIGMAPS, configmap("limits", "team-a", labels={"role": "limits"}, max="small"))
    params: Body = {"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"}}
    bind(k, "p", validations=[check("object.data.size == params.data.max")], binding={"paramRef": {"name": "limits"}},
         **params)  # fmt: skip
    selector = {"selector": {"matchLabels": {"role": "limits"}}, "namespace": "team-a"}
    bind(k, "q", validations=[check("object.data.size == params.data.max", message="q")],
         binding={"paramRef": selector}, **params)  # fmt: skip
    write(k, configmap(size="small"))
    assert refused(k, configmap(size="large")).message.endswith(
        DENIED + "failed expression: object.data.size == params.data.max"
    )


@pytest.mark.parametrize(("action", "denied"), [("Deny", True), ("Allow", False)])
def test_missing_params_follow_parameter_not_found_action(action: str, denied: bool) -> None:
    k = cluster()
    ref = {"name": "absent", "parameterNotFoundAction": action}
    bind(
        k, validations=[check("false")], binding={"paramRef": ref}, paramKind={"apiVersion": "v1", "kind": "ConfigMap"}
    )
    if denied:
        assert refused(k, configmap()).message.endswith(
            DENIED
            + "failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"
        )
    else:
        write(k, configmap())


def test_a_policy_without_match_constraints_is_a_configuration_error() -> None:
    k = cluster()
    k.create_object(POLICIES, {"metadata": {"name": "broken"}, "spec": {"validations": [check("true")]}})
    deny_binding(k, "broken-binding", "broken")
    assert refused(k, configmap()).message.endswith(
        "ValidatingAdmissionPolicy 'broken' denied request: failed to configure policy: "
        "policy contained no match constraints, a required field"
    )


# --- over HTTP: the emulator runs the plugin on every write ----------------------------------------


def test_the_emulator_refuses_and_warns_over_http() -> None:
    with running_kube_api(crds=(), strict=False, validators=[validating_admission_policies]) as kube:
        for name, actions in (("deny", ["Deny"]), ("warn", ["Warn"])):
            spec = {"matchConstraints": {"resourceRules": [rule()]},
                    "validations": [check(f"object.metadata.name != '{name}-me'", message=f"no {name}")]}  # fmt: skip
            path = "/apis/admissionregistration.k8s.io/v1/"
            assert (
                kube.request(
                    "POST", path + "validatingadmissionpolicies", {"metadata": {"name": name}, "spec": spec}
                ).status
                == 201
            )
            binding = {"metadata": {"name": name}, "spec": {"policyName": name, "validationActions": actions}}
            assert kube.request("POST", path + "validatingadmissionpolicybindings", binding).status == 201

        refused_answer = kube.request(
            "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "deny-me"}}
        )
        warned = kube.request("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "warn-me"}})

    assert refused_answer.status == 422 and refused_answer.body["reason"] == "Invalid"
    assert refused_answer.body["message"] == (
        'configmaps "deny-me" is forbidden: '
        "ValidatingAdmissionPolicy 'deny' with binding 'deny' denied request: no deny"
    )
    assert warned.status == 201
    assert warned.headers["Warning"] == (
        "299 - \"Validation failed for ValidatingAdmissionPolicy 'warn' with binding 'warn': no warn\""
    )
