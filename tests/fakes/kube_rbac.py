"""RBAC authorization for the API emulator, read from the live Role, ClusterRole, RoleBinding and
ClusterRoleBinding objects (rbac.authorization.k8s.io/v1, served from kmock's bundled resources).

https://kubernetes.io/docs/reference/access-authn-authz/rbac/ : a request is allowed when one rule of a
role bound to its user allows it, and refused otherwise (RBAC has no deny rules). A ClusterRoleBinding
grants its role everywhere; a RoleBinding grants its Role (of its own namespace) or ClusterRole in its
namespace only, so it never grants cluster-scoped requests nor non-resource URLs. Members of
``system:masters`` are allowed everything before RBAC is asked, as the API server's privileged-group
authorizer does ("User-facing roles", cluster-admin).

A refusal is the API server's 403: the message of ``forbiddenMessage`` (k8s.io/apiserver
pkg/endpoints/handlers/responsewriters/errors.go) wrapped by ``NewForbidden`` (k8s.io/apimachinery
pkg/api/errors), with ``RBAC: <errors>`` appended when a binding names a role that does not exist.

Left out: aggregated ClusterRoles (``aggregationRule`` is not resolved: such a role grants only the
rules stored in it), privilege-escalation prevention on writes of roles and bindings (``escalate``,
``bind``), impersonation, and the other authorizers a cluster runs (Node, webhooks).
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kmock

from tests.fakes.kube_emulator import NAMESPACES, ApiError, Attributes, PoliteKubernetesEmulator, UserInfo

Body = dict[str, Any]
Key = tuple[kmock.resource, str | None, str]

RBAC_DOC = "https://kubernetes.io/docs/reference/access-authn-authz/rbac/"
RBAC_GROUP = "rbac.authorization.k8s.io"
ROLES = kmock.resource(RBAC_GROUP, "v1", "roles")
CLUSTER_ROLES = kmock.resource(RBAC_GROUP, "v1", "clusterroles")
ROLE_BINDINGS = kmock.resource(RBAC_GROUP, "v1", "rolebindings")
CLUSTER_ROLE_BINDINGS = kmock.resource(RBAC_GROUP, "v1", "clusterrolebindings")
SERVICE_ACCOUNTS = kmock.resource("", "v1", "serviceaccounts")
_RBAC_RESOURCES = frozenset({ROLES, CLUSTER_ROLES, ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS})

# https://kubernetes.io/docs/reference/access-authn-authz/authentication/#users-in-kubernetes
SUPERUSER_GROUP = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ADMIN = UserInfo("kubernetes-admin", (SUPERUSER_GROUP, AUTHENTICATED))


# --- Who: users, tokens ----------------------------------------------------------------------------


def service_account_user(namespace: str, name: str, uid: str = "") -> UserInfo:
    """The user a ServiceAccount token authenticates as ("Service account tokens",
    https://kubernetes.io/docs/reference/access-authn-authz/authentication/#service-account-tokens):
    ``system:serviceaccount:<ns>:<name>`` in the groups of all accounts and of its namespace."""
    groups = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED)
    return UserInfo(f"system:serviceaccount:{namespace}:{name}", groups, uid)


def issue_token(emulator: PoliteKubernetesEmulator, user: UserInfo) -> str:
    """A new bearer token that authenticates as ``user`` (a static token file's line, in effect).

    Every authenticated user is also in ``system:authenticated``: the API server adds that group to
    whatever an authenticator answers ("Anonymous requests" and "Users in Kubernetes" in the
    authentication doc), so it is added here when missing. Call on the emulator's loop.
    """
    if AUTHENTICATED not in user.groups:
        user = UserInfo(user.username, (*user.groups, AUTHENTICATED), user.uid)
    token = secrets.token_urlsafe(32)
    emulator.tokens[token] = user
    return token


def issue_service_account_token(emulator: PoliteKubernetesEmulator, namespace: str, name: str) -> str:
    """A token for an existing ServiceAccount; a missing account is refused as TokenRequest refuses it
    (``POST .../serviceaccounts/<name>/token`` answers 404). The real API server also looks the account
    up on every request (``--service-account-lookup``); the emulator's tokens outlive a deleted account."""
    account = emulator.read_object(SERVICE_ACCOUNTS, name, namespace)
    if account is None:
        raise LookupError(f'serviceaccounts "{name}" not found in namespace "{namespace}"')
    uid = str((account.get("metadata") or {}).get("uid") or "")
    return issue_token(emulator, service_account_user(namespace, name, uid))


# --- Rules ------------------------------------------------------------------------------------------


def _listed(rule: Mapping[str, Any], key: str) -> list[str]:
    return [str(item) for item in rule.get(key) or []]


def rule_allows(attributes: Attributes, rule: Mapping[str, Any]) -> bool:
    """Whether one PolicyRule allows a request ("Role examples" and "Referring to resources" in
    ``RBAC_DOC``): its verbs (or ``*``), and for a resource request its apiGroups (or ``*``), resources
    (``*``, ``<resource>``, ``<resource>/<subresource>``, ``*/<subresource>``) and resourceNames (none:
    any name; some: only a request that names one, so never a create, or a list, watch or
    deletecollection without a name); for any other request its nonResourceURLs (``*``, the exact path,
    or a prefix ending with ``*``)."""
    verbs = _listed(rule, "verbs")
    if "*" not in verbs and attributes.verb not in verbs:
        return False
    if attributes.resource is None:
        return any(
            url == "*" or url == attributes.path or (url.endswith("*") and attributes.path.startswith(url.rstrip("*")))
            for url in _listed(rule, "nonResourceURLs")
        )
    groups = _listed(rule, "apiGroups")
    if "*" not in groups and (attributes.resource.group or "") not in groups:
        return False
    plural, sub = str(attributes.resource.plural), attributes.subresource or ""
    combined = f"{plural}/{sub}" if sub else plural
    if not any(
        resource in ("*", combined) or (sub and resource == f"*/{sub}") for resource in _listed(rule, "resources")
    ):
        return False
    names = _listed(rule, "resourceNames")
    return not names or (attributes.name or "") in names


def _applies(user: UserInfo, subject: Mapping[str, Any], namespace: str) -> bool:
    """Whether a binding's subject is the user ("Referring to subjects" in ``RBAC_DOC``). A
    ServiceAccount without a namespace is one of the binding's namespace (none for a ClusterRoleBinding)."""
    kind, name = subject.get("kind"), str(subject.get("name") or "")
    if kind == "User":
        return user.username == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        account_namespace = str(subject.get("namespace") or namespace)
        return bool(account_namespace) and user.username == f"system:serviceaccount:{account_namespace}:{name}"
    return False


@dataclass
class _Index:
    """The live RBAC objects of one emulator as of one revision of its store."""

    revision: int = -1
    objects: dict[Key, Body] = field(default_factory=dict)


_INDEXES: dict[int, tuple[weakref.ref[PoliteKubernetesEmulator], _Index]] = {}


def _rbac_objects(emulator: PoliteKubernetesEmulator) -> dict[Key, Body]:
    """The emulator's roles and bindings, live: one written a moment ago counts at once.

    Every request asks, so the store (thousands of objects in an end-to-end test) is not scanned each
    time: the index follows the emulator's change log (the one its watches replay) from the revision it
    last saw, and is rebuilt by a scan only when that log no longer reaches back so far."""
    entry = _INDEXES.get(id(emulator))
    index = entry[1] if entry is not None and entry[0]() is emulator else None
    if index is None:
        index = _Index()
        slot = id(emulator)
        _INDEXES[slot] = (weakref.ref(emulator, lambda _: _INDEXES.pop(slot, None)), index)
    revision = emulator._revision
    if index.revision == revision:
        return index.objects
    if index.revision < emulator._compacted:
        index.objects.clear()
        keys = {key for key in emulator.objects.keys() if key[0].group == RBAC_GROUP}
    else:
        keys = set()
        for change in reversed(emulator._changes):
            if change.revision <= index.revision:
                break
            if change.key[0] in _RBAC_RESOURCES:
                keys.add(change.key)
    for key in keys:
        res, namespace, name = key
        obj = emulator.read_object(res, name, namespace) if res in _RBAC_RESOURCES else None
        if obj is None:
            index.objects.pop(key, None)
        else:
            index.objects[key] = obj
    index.revision = revision
    return index.objects


def _role_rules(objects: Mapping[Key, Body], ref: Mapping[str, Any], namespace: str) -> list[Body]:
    """The rules of a binding's roleRef, or LookupError with the message the API server's listers give."""
    kind, name = ref.get("kind"), str(ref.get("name") or "")
    if kind == "Role":
        role = objects.get((ROLES, namespace, name)) if namespace else None
        if role is None:
            raise LookupError(f'role.{RBAC_GROUP} "{name}" not found')
    elif kind == "ClusterRole":
        role = objects.get((CLUSTER_ROLES, None, name))
        if role is None:
            raise LookupError(f'clusterrole.{RBAC_GROUP} "{name}" not found')
    else:
        raise LookupError(f'unsupported role reference kind: "{kind}"')
    return [rule for rule in role.get("rules") or [] if isinstance(rule, dict)]


def rules_for(
    emulator: PoliteKubernetesEmulator, user: UserInfo, namespace: str, errors: list[str] | None = None
) -> Iterator[Body]:
    """Every rule granted to ``user`` in ``namespace`` ("" for cluster scope): those of the
    ClusterRoleBindings, then those of the RoleBindings of that namespace. A binding whose role is
    missing grants nothing; its error goes to ``errors`` (the API server's denial reason)."""
    objects = _rbac_objects(emulator)
    by_name = sorted(objects.items(), key=lambda item: item[0][2])
    bindings = [(key, obj) for key, obj in by_name if key[0] == CLUSTER_ROLE_BINDINGS]
    if namespace:
        bindings += [(key, obj) for key, obj in by_name if key[0] == ROLE_BINDINGS and key[1] == namespace]
    for key, binding in bindings:
        scope = key[1] or ""
        if not any(_applies(user, s, scope) for s in binding.get("subjects") or [] if isinstance(s, dict)):
            continue
        try:
            yield from _role_rules(objects, binding.get("roleRef") or {}, scope)
        except LookupError as exc:
            if errors is not None:
                errors.append(str(exc.args[0]))


# --- The authorizer ---------------------------------------------------------------------------------


def request_namespace(attributes: Attributes) -> str:
    """The namespace the authorizer sees: a request for one Namespace object (``/api/v1/namespaces/<n>``
    and its subresources) is in that namespace, as the API server's RequestInfo resolves it, so a
    RoleBinding in ``<n>`` may grant reading ``<n>`` itself (the ``admin``/``view`` roles rely on it)."""
    if attributes.resource == NAMESPACES and attributes.name and not attributes.namespace:
        return attributes.name
    return attributes.namespace or ""


def forbidden(attributes: Attributes, reason: str = "") -> ApiError:
    """403 Forbidden as the API server writes it for a request its authorizers did not allow."""
    user = attributes.user.username
    if attributes.resource is None:
        text = f'User "{user}" cannot {attributes.verb} path "{attributes.path}"'
    else:
        resource = str(attributes.resource.plural)
        shown = f"{resource}/{attributes.subresource}" if attributes.subresource else resource
        group = attributes.resource.group or ""
        namespace = request_namespace(attributes)
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        text = f'User "{user}" cannot {attributes.verb} resource "{shown}" in API group "{group}" {scope}'
    if reason:
        text = f"{text}: {reason}"
    if attributes.resource is None:
        return ApiError(403, "Forbidden", f"forbidden: {text}")
    resource, group, name = str(attributes.resource.plural), attributes.resource.group or "", attributes.name or ""
    qualified = f"{resource}.{group}" if group else resource
    message = f'{qualified} "{name}" is forbidden: {text}' if name else f"{qualified} is forbidden: {text}"
    details: Body = {**({"name": name} if name else {}), **({"group": group} if group else {}), "kind": resource}
    return ApiError(403, "Forbidden", message, details)


def _aggregate(errors: Sequence[str]) -> str:
    # k8s.io/apimachinery/pkg/util/errors: one error as itself, several deduplicated in brackets.
    unique = list(dict.fromkeys(errors))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def rbac_authorizer(attributes: Attributes, emulator: PoliteKubernetesEmulator) -> None:
    """Allow (return) or refuse (raise 403) one request, as a cluster with ``--authorization-mode=RBAC``.

    ``system:masters`` is allowed everything. Otherwise the rules of the user's bindings are tried
    (``rules_for``, ``rule_allows``); none allowing is a 403 whose message names user, verb, resource
    (with subresource), API group and namespace or cluster scope, or the path of a non-resource request.
    """
    if SUPERUSER_GROUP in attributes.user.groups:
        return
    errors: list[str] = []
    namespace = request_namespace(attributes) if attributes.resource is not None else ""
    if any(rule_allows(attributes, rule) for rule in rules_for(emulator, attributes.user, namespace, errors)):
        return
    raise forbidden(attributes, f"RBAC: {_aggregate(errors)}" if errors else "")


# --- The bootstrap policy ---------------------------------------------------------------------------

_BOOTSTRAP_META: Body = {
    "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
    "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
}
# "Default roles and role bindings" and "API discovery roles" in RBAC_DOC (bootstrappolicy/policy.go).
_PUBLIC_INFO_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
_DISCOVERY_URLS = sorted(["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", *_PUBLIC_INFO_URLS])
_BOOTSTRAP_ROLES: dict[str, list[Body]] = {
    "cluster-admin": [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
        {"nonResourceURLs": ["*"], "verbs": ["*"]},
    ],
    "system:discovery": [{"nonResourceURLs": _DISCOVERY_URLS, "verbs": ["get"]}],
    "system:basic-user": [
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
            "verbs": ["create"],
        },
        {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
    ],
    "system:public-info-viewer": [{"nonResourceURLs": _PUBLIC_INFO_URLS, "verbs": ["get"]}],
}
_BOOTSTRAP_BINDINGS: dict[str, tuple[str, ...]] = {
    "cluster-admin": (SUPERUSER_GROUP,),
    "system:discovery": (AUTHENTICATED,),
    "system:basic-user": (AUTHENTICATED,),
    "system:public-info-viewer": (AUTHENTICATED, UNAUTHENTICATED),
}


def bootstrap_policy() -> list[tuple[kmock.resource, Body]]:
    """The default ClusterRoles and ClusterRoleBindings every RBAC cluster starts with that concern
    clients: cluster-admin (bound to ``system:masters``), the discovery roles (``system:discovery`` and
    ``system:basic-user`` for authenticated users, ``system:public-info-viewer`` for everyone). The
    roles of the control plane's own components and the aggregated admin/edit/view are left out."""
    objects: list[tuple[kmock.resource, Body]] = []
    for name, rules in _BOOTSTRAP_ROLES.items():
        meta = {"name": name, **_BOOTSTRAP_META}
        objects.append(
            (CLUSTER_ROLES, {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole", "metadata": meta, "rules": rules})
        )
    for name, groups in _BOOTSTRAP_BINDINGS.items():
        binding: Body = {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, **_BOOTSTRAP_META},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group} for group in groups],
        }
        objects.append((CLUSTER_ROLE_BINDINGS, binding))
    return objects


def enable_rbac(emulator: PoliteKubernetesEmulator) -> None:
    """Authorize every request of ``emulator`` with RBAC and create the bootstrap policy's objects
    (those already there are kept). Call before serving, or on the emulator's loop."""
    for res, body in bootstrap_policy():
        if emulator.read_object(res, body["metadata"]["name"]) is None:
            emulator.create_object(res, body)
    emulator.authorizer = rbac_authorizer
