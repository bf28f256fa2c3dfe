"""A Kubernetes API server stand-in for end-to-end tests: kmock's emulator with the API server's semantics.

``kmock.KubernetesEmulator`` keeps objects and serves CRUD, lists and watches. A real operator process
needs more of the API server than that; :class:`PoliteKubernetesEmulator` adds it. Each behaviour is
written from the Kubernetes documentation its docstring names (never tuned to make our code pass) and
is pinned by ``tests/fakes/test_kube_emulator.py``.

Added: resourceVersion (one revision counter), uid, creationTimestamp, generation; lists and watches
that honour resourceVersion, label and field selectors, ``limit``/``continue`` and ``sendInitialEvents``;
PUT, generateName, dry-run, the four patch types; 409 AlreadyExists/Conflict, 404/410/415/422 Status
bodies; the status subresource; finalizers; namespace lifecycle and deletion; owner-reference garbage
collection; CRDs (served from their objects, defaulted, pruned and validated); pods deleted gracefully
(held until their kubelet lets go) and the Eviction API against PodDisruptionBudgets
(``tests/fakes/kube_pods.py``); and what ``kubectl`` reads besides: discovery with proper subresources,
OpenAPI v3 paths, Tables of printer columns.

Every state change happens synchronously between two awaits of the server's event loop, so each write
is atomic and a watch subscribes at the very instant it takes its snapshot: no event falls between.
Served requests are forgotten (kmock checks each new request against its whole history), and the
reaction answering a request is chosen with its filters seeing that request alone, not every watch
still open (``tests/fakes/kube_reactions.py``); what a test may count of them (verb, path, User-Agent)
stays in ``request_log``.

Approximated, and said so where it is done: strategic merge patch (the common merge keys only),
server-side apply (create-or-merge, no field ownership), a list's continue token (pages come from the
current state, not a snapshot). CRD validation here covers the OpenAPI keywords; what else a strict
server checks on a write is in the modules ``tests/fakes/kube_admission.py`` lists (CEL rules and
formats, built-in schemas, immutable fields, Pod Security, PVC resize, ValidatingAdmissionPolicy), and
RBAC is ``tests/fakes/kube_rbac.py`` (``running_kube_api(rbac=True)``). Not there: protobuf bodies
(415; kubectl's imperative ``create <kind>`` sends them), admission webhooks, mutating admission,
Tables for built-in kinds, BOOKMARK events other than the end of initial events.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import copy
import datetime
import functools
import hashlib
import json
import random
import re
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml

# kmock exports Response at runtime but not in __all__; StreamingError wraps failures inside a stream.
from kmock._internal.rendering import Response, StreamingError

from tests.fakes.kube_pods import GRACEFUL_HOLD, Allowed, deletion_grace, held_by_grace, judge_eviction
from tests.fakes.kube_reactions import ReactionChooser

Body = dict[str, Any]
_J = TypeVar("_J")
Key = tuple[kmock.resource, str | None, str]

API_CONCEPTS = "https://kubernetes.io/docs/reference/using-api/api-concepts/"
OBJECT_META = "https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/object-meta/"
CRD_DOC = "https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/"

NAMESPACES = kmock.resource("", "v1", "namespaces")
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
PODS = kmock.resource("", "v1", "pods")
PDBS = kmock.resource("policy", "v1", "poddisruptionbudgets")
POLITETENANT_CRD = Path(__file__).resolve().parents[2] / "crds" / "politetenants.polite.io.yaml"
# The namespaces every cluster starts with.
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
CRD_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAMESPACE_PATH = re.compile(r"/api/v1/namespaces(?:/(?P<name>[^/]+)(?:/(?P<sub>status|finalize))?)?/?")
# Deliberately the generator alphabet of the API server: no vowels, no look-alike digits.
_GENERATED_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


# --- Errors: the Status object -------------------------------------------------------------------


class ApiError(Exception):
    """A failure answered with a ``Status`` object: kind Status, status Failure, reason and code.

    https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/status/ ; reasons and codes
    from the API conventions, "HTTP Status codes" and "Response Status Kind".
    """

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    @property
    def status(self) -> Body:
        body: Body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        body.update(message=self.message, reason=self.reason, code=self.code)
        if self.details:
            body["details"] = self.details
        return body


def _qualified(res: kmock.resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else str(res.plural)


def _details(res: kmock.resource, name: str, kind: str | None = None) -> Body:
    details: Body = {"name": name}
    if res.group:
        details["group"] = res.group
    details["kind"] = kind or res.plural
    return details


def not_found(res: kmock.resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_qualified(res)} "{name}" not found', _details(res, name))


def unknown_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(res: kmock.resource, name: str, *, deleting: bool = False) -> ApiError:
    prefix = "object is being deleted: " if deleting else ""
    return ApiError(409, "AlreadyExists", f'{prefix}{_qualified(res)} "{name}" already exists', _details(res, name))


def conflict(res: kmock.resource, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    message = f'Operation cannot be fulfilled on {_qualified(res)} "{name}": {why}'
    return ApiError(409, "Conflict", message, _details(res, name))


def invalid(res: kmock.resource, kind: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid, one cause per field, shaped like the API server's field errors."""
    what = f"{kind}.{res.group}" if res.group else kind
    texts = [f"{path}: {message}" for path, _, message in causes]
    listed = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = _details(res, name, kind)
    details["causes"] = [{"reason": reason, "message": message, "field": path} for path, reason, message in causes]
    return ApiError(422, "Invalid", f'{what} "{name}" is invalid: {listed}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _patch_rejected(message: str) -> ApiError:
    return ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {message}")


# --- Patches ---------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """JSON merge patch, RFC 7386 section 2: objects merge recursively, null removes a key, the rest replaces."""
    if not isinstance(patch, dict):
        return _copy_json(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Body, operations: Any) -> Body:
    """JSON patch, RFC 6902; a failed ``test`` or a missing path is 422, as the API server answers it."""
    if not isinstance(operations, list):
        raise bad_request("a JSON patch must be a list of operations")
    try:
        result = jsonpatch.apply_patch(_copy_json(target), operations, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError, TypeError) as exc:
        raise _patch_rejected(str(exc)) from None
    if not isinstance(result, dict):
        raise _patch_rejected("the patch replaced the whole object")
    return result


# patchMergeKey of the list fields with patchStrategy "merge", from the API reference. ``ports`` merges
# on containerPort in a container and on port in a Service; the key present in the patch tells which.
_SMP_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "imagePullSecrets": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "ports": ("containerPort", "port"),
    "ownerReferences": ("uid",),
    "conditions": ("type",),
    "hostAliases": ("ip",),
}
_SMP_PRIMITIVE_SETS = frozenset({"finalizers"})


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch for built-in kinds, the common subset.

    Maps merge as in a merge patch; ``$patch: replace|delete`` directives apply; the lists of
    ``_SMP_MERGE_KEYS`` merge item by item on their patchMergeKey and ``finalizers`` merges as a set;
    every other list is replaced. Source: "Update API Objects in Place Using kubectl patch"
    (https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/) and
    sig-api-machinery's strategic-merge-patch.md. ``$setElementOrder`` and ``$retainKeys`` are ignored.
    """
    if not isinstance(patch, dict):
        return _copy_json(patch)
    if patch.get("$patch") == "replace":
        return {k: _copy_json(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [item for item in result.get(name) or [] if item not in value]
        elif key.startswith("$"):
            continue
        elif value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_list(name: str, current: list[Any], patch: list[Any]) -> list[Any]:
    if name in _SMP_PRIMITIVE_SETS:
        return list(current) + [item for item in patch if item not in current]
    keys = [k for k in _SMP_MERGE_KEYS.get(name, ()) if all(isinstance(i, dict) and k in i for i in patch)]
    if not keys:
        return _copy_json(patch)
    key = keys[0]
    merged = list(current)
    for item in patch:
        index = next((i for i, old in enumerate(merged) if isinstance(old, dict) and old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(strategic_merge_patch({}, item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return merged


# --- Selectors -------------------------------------------------------------------------------------

Predicate = Callable[[Mapping[str, Any]], bool]


def _split_requirements(text: str) -> Iterator[str]:
    depth, start = 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            yield text[start:i].strip()
            start = i + 1
    yield text[start:].strip()


def label_selector(text: str) -> Predicate:
    """A predicate on an object's labels from a label selector, equality- and set-based.

    https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors :
    requirements are ANDed; ``!=`` and ``notin`` also select objects without the key; ``key`` and
    ``!key`` test presence.
    """
    tests: list[Predicate] = []
    for part in _split_requirements(text):
        if not part:
            continue
        if m := re.fullmatch(r"([^\s=!(),]+)\s+(in|notin)\s+\(([^()]*)\)", part):
            values = frozenset(v.strip() for v in m[3].split(",") if v.strip())
            tests.append(_label_test(m[1], values, wanted=m[2] == "in"))
        elif m := re.fullmatch(r"([^\s=!(),]+)\s*(==|=|!=)\s*([^\s=!(),]*)", part):
            tests.append(_label_test(m[1], frozenset({m[3]}), wanted=m[2] != "!="))
        elif m := re.fullmatch(r"!\s*([^\s=!(),]+)", part):
            tests.append(_label_test(m[1], None, wanted=False))
        elif re.fullmatch(r"[^\s=!(),]+", part):
            tests.append(_label_test(part, None, wanted=True))
        else:
            raise bad_request(f"unable to parse requirement: {part!r}")
    return lambda labels: all(test(labels) for test in tests)


def _label_test(key: str, values: frozenset[str] | None, *, wanted: bool) -> Predicate:
    """Is the label's value among ``values`` (``None``: is the label there), or not when ``wanted`` is False."""

    def test(labels: Mapping[str, Any]) -> bool:
        found = key in labels if values is None else labels.get(key) in values
        return found == wanted

    return test


# Fields each kind supports in a field selector beyond metadata.name and metadata.namespace.
_SELECTABLE_FIELDS: dict[tuple[str, str], frozenset[str]] = {
    ("", "namespaces"): frozenset({"status.phase"}),
    ("", "secrets"): frozenset({"type"}),
    ("", "pods"): frozenset({"spec.nodeName", "spec.serviceAccountName", "status.phase", "status.podIP"}),
    ("", "events"): frozenset(
        {"involvedObject.kind", "involvedObject.name", "involvedObject.namespace", "involvedObject.uid"}
        | {"reason", "type", "reportingComponent"}
    ),
}


def field_selector(res: kmock.resource, text: str) -> Predicate:
    """A predicate on an object from a field selector with ``=``, ``==`` and ``!=``, requirements ANDed.

    https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/ : every kind
    supports metadata.name and metadata.namespace; an unsupported field is an error (400).
    """
    tests: list[Predicate] = []
    allowed = {"metadata.name", "metadata.namespace"} | _SELECTABLE_FIELDS.get((str(res.group), str(res.plural)), set())
    for part in _split_requirements(text):
        if not part:
            continue
        m = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(\S*)", part)
        if m is None:
            raise bad_request(f"invalid selector: {part!r}")
        path, op, value = m[1], m[2], m[3]
        if path not in allowed:
            raise bad_request(f'field label not supported: "{path}"')
        tests.append(_field_test(path.split("."), op, value))
    return lambda obj: all(test(obj) for test in tests)


def _field_test(path: list[str], op: str, value: str) -> Predicate:
    return lambda obj: (_dig(obj, path) == value) != (op == "!=")


def _dig(obj: Any, path: list[str]) -> str:
    for part in path:
        obj = obj.get(part) if isinstance(obj, dict) else None
    return "" if obj is None else str(obj)


@dataclass(frozen=True)
class Selection:
    """Which objects a list or a watch asks for: its namespace, name, label and field selectors."""

    resource: kmock.resource
    namespace: str | None = None
    name: str | None = None
    labels: Predicate | None = None
    fields: Predicate | None = None

    def __call__(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        if self.name is not None and meta.get("name") != self.name:
            return False
        if self.labels is not None and not self.labels(meta.get("labels") or {}):
            return False
        return self.fields is None or self.fields(obj)


# --- CRD structural schemas --------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def default_and_prune(
    value: Any, schema: Mapping[str, Any], *, root: bool = False, path: str = "", dropped: list[str] | None = None
) -> Any:
    """Prune unknown fields, drop non-nullable nulls, then apply defaults, as for a structural schema.

    CRD doc, "Field pruning" and "Defaulting" (``CRD_DOC``): unknown fields go unless
    ``x-kubernetes-preserve-unknown-fields``; a null without ``nullable`` is pruned before defaulting;
    defaults fill missing fields of objects that exist. apiVersion, kind and metadata are never pruned.
    The paths of pruned unknown fields are added to ``dropped``.
    """
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [
            default_and_prune(item, schema["items"], path=f"{path}[{i}]", dropped=dropped)
            for i, item in enumerate(value)
        ]
    if not isinstance(value, dict):
        return value
    properties: Mapping[str, Any] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    keep_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields")) or additional is True
    result: Body = {}
    for key, item in value.items():
        if root and key in ("apiVersion", "kind", "metadata"):
            result[key] = item
        elif key in properties:
            if item is None and not properties[key].get("nullable"):
                continue
            result[key] = default_and_prune(item, properties[key], path=_join(path, key), dropped=dropped)
        elif isinstance(additional, dict):
            result[key] = default_and_prune(item, additional, path=_join(path, key), dropped=dropped)
        elif keep_unknown:
            result[key] = item
        elif dropped is not None:
            dropped.append(_join(path, key))
    for key, sub in properties.items():
        if key not in result and "default" in sub and not (root and key == "metadata"):
            result[key] = default_and_prune(_copy_json(sub["default"]), sub)
    return result


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def schema_errors(value: Any, schema: Mapping[str, Any], path: str) -> list[tuple[str, str, str]]:
    """Field errors of a value against an OpenAPI v3 schema: type, enum, bounds, pattern, required.

    CRD doc, "Validation" (``CRD_DOC``). Not evaluated here: ``x-kubernetes-validations`` (CEL),
    ``format`` and list-type uniqueness; each answer is (field path, reason, message).
    """
    if value is None:
        return [] if schema.get("nullable") else [(path, "FieldValueRequired", "Required value")]
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, int | str) and not isinstance(value, bool)
        return (
            []
            if ok
            else [(path, "FieldValueTypeInvalid", f"Invalid value: {json.dumps(value)}: must be int or string")]
        )
    kind = schema.get("type")
    if kind in _TYPES and not _TYPES[kind](value):
        message = f"Invalid value: {json.dumps(value)}: {path} in body must be of type {kind}"
        return [(path, "FieldValueTypeInvalid", message)]
    errors: list[tuple[str, str, str]] = []
    shown = json.dumps(value)
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(json.dumps(e) for e in schema["enum"])
        errors.append((path, "FieldValueNotSupported", f"Unsupported value: {shown}: supported values: {supported}"))
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append((path, "FieldValueTooLong", f"Too long: may not be more than {schema['maxLength']} bytes"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            message = f"Invalid value: {shown}: {path} in body should be at least {schema['minLength']} chars long"
            errors.append((path, "FieldValueInvalid", message))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            message = f"Invalid value: {shown}: {path} in body should match '{schema['pattern']}'"
            errors.append((path, "FieldValueInvalid", message))
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            message = f"Invalid value: {shown}: {path} in body should be greater than or equal to {schema['minimum']}"
            errors.append((path, "FieldValueInvalid", message))
        if "maximum" in schema and value > schema["maximum"]:
            message = f"Invalid value: {shown}: {path} in body should be less than or equal to {schema['maximum']}"
            errors.append((path, "FieldValueInvalid", message))
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(
                (path, "FieldValueTooMany", f"Too many: {len(value)}: must have at most {schema['maxItems']} items")
            )
        if "minItems" in schema and len(value) < schema["minItems"]:
            message = f"Invalid value: {len(value)}: {path} in body should have at least {schema['minItems']} items"
            errors.append((path, "FieldValueInvalid", message))
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items") or {}, f"{path}[{i}]")
    if isinstance(value, dict):
        # kube-openapi's TooManyProperties / TooFewProperties, as the API server words them
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            errors.append(
                (
                    path,
                    "FieldValueTooMany",
                    f"Too many: {len(value)}: must have at most {schema['maxProperties']} items",
                )
            )
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            message = (
                f"Invalid value: {len(value)}: {path} in body should have at least {schema['minProperties']} properties"
            )
            errors.append((path, "FieldValueInvalid", message))
        for key in schema.get("required") or ():
            if key not in value:
                errors.append((_join(path, key), "FieldValueRequired", "Required value"))
        for key, item in value.items():
            sub = (schema.get("properties") or {}).get(key)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                errors += schema_errors(item, sub, _join(path, key))
    if schema.get("anyOf") and all(schema_errors(value, branch, path) for branch in schema["anyOf"]):
        errors.append(
            (path, "FieldValueInvalid", f"Invalid value: {shown}: {path} in body must match a schema in anyOf")
        )
    return errors


# --- The emulator -----------------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Mapping[str, Any]) -> Body:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _api_version(res: kmock.resource) -> str:
    return f"{res.group}/{res.version}" if res.group else str(res.version)


def _without_version(obj: Mapping[str, Any]) -> Body:
    return {**obj, "metadata": {k: v for k, v in _meta(obj).items() if k != "resourceVersion"}}


def _header(request: kmock.Request, name: str) -> str:
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), "")


# Discovery of subresources: kind ("" for the parent's) and verbs, as the API server lists them.
_SUBRESOURCES: dict[str, tuple[str, list[str]]] = {
    "status": ("", ["get", "patch", "update"]),
    "scale": ("Scale", ["get", "patch", "update"]),
    "finalize": ("", ["update"]),
}


# Verbs that change state, as the API server's authorizer names them.
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class RequestRecord:
    """One request as it arrived, for counting: its Kubernetes verb, its path, and who sent it.

    The verb is the authorizer's, "Request verbs" in
    https://kubernetes.io/docs/reference/access-authn-authz/authorization/#determine-the-request-verb :
    GET is get, list or watch (``?watch=true``), POST create, PUT update, PATCH patch, DELETE delete
    (deletecollection without a name); a request outside resources (discovery, OpenAPI) is a get.
    ``agent`` is the User-Agent header (kopf sends ``kopf/<version>``, clients their own).
    """

    verb: str
    path: str
    agent: str
    user: str = ""  # the authenticated user name (system:anonymous without credentials)

    @property
    def write(self) -> bool:
        return self.verb in WRITE_VERBS


def request_verb(method: str, *, resource: bool, name: str | None, params: Mapping[str, str]) -> str:
    """The authorizer's verb of a request (see ``RequestRecord``)."""
    method = method.upper()
    if method == "GET":
        if not resource:
            return "get"
        return "watch" if params.get("watch") in ("true", "1") else "get" if name else "list"
    if method == "DELETE":
        return "delete" if name or not resource else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


@dataclass(frozen=True)
class Change:
    """One committed write, as every watcher sees it: the object after and before."""

    revision: int
    key: Key
    type: str  # ADDED, MODIFIED, DELETED
    object: Body
    previous: Body | None


@dataclass(eq=False)
class _Watcher:
    selection: Selection
    since: int
    # The events it is to stream, decided as each change commits (None: the stream ends).
    queue: asyncio.Queue[Body | None] = field(default_factory=asyncio.Queue)

    def offer(self, change: Change) -> None:
        """Queue the change's event if this watcher sees one: a change it does not see never wakes it."""
        if (event := self.event(change)) is not None:
            self.queue.put_nowait(event)

    def event(self, change: Change) -> Body | None:
        """The event this watcher sees for a change, or None: selection transitions become ADDED/DELETED.

        API concepts, "Efficient detection of changes": a watch with a selector reports an object that
        starts matching as ADDED and one that stops matching as DELETED.
        """
        if change.key[0] != self.selection.resource or change.revision <= self.since:
            return None
        now, before = self.selection(change.object), self.selection(change.previous)
        kind = change.type
        if kind == "MODIFIED" and now != before:
            kind = "ADDED" if now else "DELETED"
        elif not now:
            return None
        return {"type": kind, "object": change.object}


@dataclass(frozen=True)
class UserInfo:
    """Who sent a request, as authentication says (https://kubernetes.io/docs/reference/access-authn-authz/authentication/#users-in-kubernetes)."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""


# A request with no credentials (anonymous-auth), and the emulator's own writes (initial namespaces, tests).
ANONYMOUS = UserInfo("system:anonymous", ("system:unauthenticated",))
SYSTEM = UserInfo("system:apiserver", ("system:masters", "system:authenticated"))


@dataclass(frozen=True)
class Attributes:
    """The authorizer's view of one request ("Review your request attributes",
    https://kubernetes.io/docs/reference/access-authn-authz/authorization/#review-your-request-attributes):
    a resource request names group, resource, subresource, namespace and name; any other request its path."""

    user: UserInfo
    verb: str
    path: str
    resource: kmock.resource | None = None  # None: a non-resource request (discovery, /version, /openapi)
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None


@dataclass
class Admission:
    """One write as admission sees it (https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/):
    the operation (CREATE, UPDATE, DELETE), the object after defaulting and pruning and the stored one
    before, who asks. A validator raises ``ApiError`` to refuse and calls ``warn`` to add a Warning header.
    """

    operation: str
    res: kmock.resource
    kind: str
    name: str
    namespace: str | None
    obj: Body | None  # None on DELETE
    old: Body | None  # None on CREATE
    user: UserInfo
    subresource: str | None
    dry_run: bool
    emulator: PoliteKubernetesEmulator
    field_validation: str = "Ignore"  # the request's fieldValidation (Strict, Warn, Ignore)

    @property
    def custom(self) -> bool:
        """A custom resource (served from a CRD), not a built-in kind."""
        return self.res in self.emulator._custom

    @property
    def schema(self) -> Body | None:
        """The CRD's structural schema (openAPIV3Schema) of a custom resource."""
        return self.emulator._schemas.get(self.res)

    def warn(self, text: str) -> None:
        self.emulator._warnings.append(text)

    def read(self, res: kmock.resource | str, name: str, namespace: str | None = None) -> Body | None:
        return self.emulator.read_object(res, name, namespace)

    def items(self, res: kmock.resource | str) -> list[Body]:
        """Every live object of one resource (bindings, policies, storage classes)."""
        return self.emulator.live_of(res)


# An authorizer answers None (allowed) or raises ApiError (403); a validator checks one Admission.
Authorizer = Callable[[Attributes, "PoliteKubernetesEmulator"], None]
Validator = Callable[[Admission], None]


@attrs.define(kw_only=True)
class PoliteKubernetesEmulator(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with the API server behaviour an operator process relies on.

    Start it as kmock's: ``async with PoliteKubernetesEmulator() as k, kmock.Server(k): ...`` (or with
    ``tests.fakes.kube_server.running_kube_api`` in a thread of its own). Objects stay inspectable as
    ``k.objects[resource, namespace, name]``; reactions fed with ``k[...] << ...`` still take priority over
    the emulated reads and responses, and state changes happen before them, as in kmock.
    """

    builtins: bool = True  # declare kmock's bundled built-in resources and the initial namespaces
    keep_requests: bool = False  # kmock matches each request against all past ones: history costs O(n²)
    event_window: int = 10_000  # changes kept for watches resuming from a resourceVersion
    # Validate and admit writes as an API server does (tests/fakes/kube_admission.py); False: accept any.
    strict: bool = True

    controller_errors: list[BaseException] = attrs.field(factory=list, init=False)
    # Every parsed request, in arrival order (three short fields each: cheap, unlike kmock's history).
    request_log: list[RequestRecord] = attrs.field(factory=list, init=False)
    _revision: int = attrs.field(default=0, init=False)
    _compacted: int = attrs.field(default=0, init=False)
    _changes: collections.deque[Change] = attrs.field(factory=collections.deque, init=False)
    # Open watches by resource: a write wakes only the watches of its resource that see it.
    _watchers: dict[kmock.resource, set[_Watcher]] = attrs.field(factory=dict, init=False)
    _schemas: dict[kmock.resource, Body] = attrs.field(factory=dict, init=False)
    _custom: set[kmock.resource] = attrs.field(factory=set, init=False)
    _outcomes: dict[int, Response] = attrs.field(factory=dict, init=False)
    _dirty: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _uids: set[str] = attrs.field(factory=set, init=False)  # live uids, as of the last pass and the commits since
    _controller: asyncio.Task[None] | None = attrs.field(default=None, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _served: int = attrs.field(default=0, init=False)
    _field_validation: str = attrs.field(default="Ignore", init=False)
    _warnings: list[str] = attrs.field(factory=list, init=False)
    _columns: dict[kmock.resource, list[Body]] = attrs.field(factory=dict, init=False)
    _by_resource: dict[kmock.resource, set[Key]] = attrs.field(factory=dict, init=False)
    # Authentication: bearer tokens and who they are; without a token a request is ANONYMOUS.
    tokens: dict[str, UserInfo] = attrs.field(factory=dict)
    # Authorization (None: every request allowed, the emulator's historical default).
    authorizer: Authorizer | None = None
    # Validation and admission of writes, in order (strategy validation first, then admission plugins).
    validators: list[Validator] = attrs.field(factory=list)
    _user: UserInfo = attrs.field(default=SYSTEM, init=False)
    _reactions: ReactionChooser = attrs.field(factory=ReactionChooser, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock guesses no action for PUT and for a DELETE without a name (deletecollection).
        self.fallback[kmock.method.PUT] << self._serve_update
        self.fallback[kmock.method.DELETE] << self._serve_delete
        self.fallback["get /openapi/v3"] << self._serve_openapi_index
        self.fallback["get", re.compile(r"/openapi/v3/.+")] << self._serve_openapi
        self.fallback["post", re.compile(r"/api/v1/namespaces/[^/]+/pods/[^/]+/eviction")] << self._serve_outcome
        if self.strict:
            # Imported here: the checks build on this module's types (Admission, ApiError).
            from tests.fakes.kube_admission import standard_validators

            self.validators[:0] = standard_validators()
        if self.builtins:
            with warnings.catch_warnings():  # kmock 0.8 reads its bundle with a deprecated importlib call
                warnings.simplefilter("ignore", DeprecationWarning)
                self.resources.load_bundled()
            for name in INITIAL_NAMESPACES:
                self.create_object(NAMESPACES, {"metadata": {"name": name}})

    # --- lifecycle

    async def __aenter__(self) -> PoliteKubernetesEmulator:
        await super().__aenter__()
        self._closing = False
        if self._controller is None:
            self._controller = asyncio.create_task(self._run_controllers())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._entered <= 1:
            self.close_watches()
            if self._controller is not None:
                self._controller.cancel()
                await asyncio.gather(self._controller, return_exceptions=True)
                self._controller = None
        await super().__aexit__(*exc_info)

    def close_watches(self) -> None:
        """End every open watch, as an API server does when it shuts down; new ones end at once."""
        self._closing = True
        for watchers in list(self._watchers.values()):
            for watcher in list(watchers):
                watcher.queue.put_nowait(None)

    # --- requests

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's RawHandler.__call__, plus: namespace paths parse, API errors answer with a Status,
        # and served requests are forgotten unless keep_requests (kmock matches each new request
        # against the whole history: 200 objects took minutes).
        await raw_request.read()
        raw_response: aiohttp.web.StreamResponse | None = None
        request: kmock.Request | None = None
        try:
            request = await self._parse_request(raw_request)
            self._requests.append(request)
            user = self._authenticate(request)
            self._log_request(request, user)
            self._user = user  # read synchronously by _handle before its first await
            try:
                return await self._handle(request)
            except StreamingError as exc:
                raw_response = exc.args[0]
                raise exc.__cause__ or exc from None
        except (ApiError, kmock.KubernetesError) as exc:
            error = exc if isinstance(exc, ApiError) else unknown_path()
            if raw_response is None or not raw_response.prepared:
                return aiohttp.web.json_response(error.status, status=error.code)
            await raw_response.write(json.dumps({"type": "ERROR", "object": error.status}).encode() + b"\n")
            await raw_response.write_eof()
            return raw_response
        except Exception as exc:
            if not self._errors:
                raise
            self._errors[-1].append(exc)
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(exc)
            await self._stream_error(exc, raw_response)
            await raw_response.write_eof()
            return raw_response
        finally:
            self._user = SYSTEM
            if request is not None and not self.keep_requests:
                self._forget(request)

    async def _parse_request(self, raw_request: aiohttp.web.BaseRequest) -> kmock.Request:
        """kmock's parsing, except for /api/v1/namespaces[/NAME[/status|finalize]] which it cannot parse."""
        self._served += 1
        match = _NAMESPACE_PATH.fullmatch(raw_request.path)
        if match is None:
            request: kmock.Request = await kmock.Request._parse(raw_request, id=self._served)
            return request
        body = await raw_request.read()
        text = body.decode("utf-8", errors="replace")
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        params = dict(raw_request.query)
        name = match["name"]
        method = raw_request.method.upper()
        action: kmock.action | None = None
        if method == "GET":
            is_watch = params.get("watch") in ("true", "1")
            action = kmock.action.WATCH if is_watch else kmock.action.LIST if name is None else kmock.action.FETCH
        elif method == "POST" and name is None:
            action = kmock.action.CREATE
        elif method in ("PATCH", "DELETE") and name is not None:
            action = kmock.action.UPDATE if method == "PATCH" else kmock.action.DELETE
        return kmock.Request(
            id=self._served,
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=params,
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=text,
            data=data,
            action=action,
            resource=NAMESPACES,
            namespace=None,
            name=name,
            subresource=match["sub"],
        )

    def _log_request(self, request: kmock.Request, user: UserInfo) -> None:
        res = request.resource
        verb = request_verb(
            str(getattr(request.method, "value", request.method)),
            resource=res is not None and res.plural is not None,
            name=request.name,
            params=request.params,
        )
        record = RequestRecord(verb, request.url.path, _header(request, "User-Agent"), user.username)
        self.request_log.append(record)

    def _forget(self, request: kmock.Request) -> None:
        self._requests[:] = [r for r in self._requests if r is not request]
        for reaction in self._payloads:  # each reaction also keeps the requests it served
            reaction._requests[:] = [r for r in reaction._requests if r is not request]

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # State changes first (as kmock does), then kmock's reactions (chosen as kmock chooses them, at a
        # cost independent of the open watches); the emulated fallbacks below answer with the outcome.
        # kmock.KubernetesEmulator's own state handling is skipped.
        res = request.resource
        self._authorize(request)
        if res is not None and res.plural is not None and self._serves(res):
            self._check_served(request)
            self._field_validation = request.params.get("fieldValidation") or "Warn"
            self._warnings = []
            try:
                outcome = self._write(request)
            finally:
                self._field_validation = "Ignore"  # the server's own writes
                self._warnings = []
                self._user = SYSTEM
            if outcome is not None:
                self._outcomes[id(request)] = outcome
        try:
            return await self._reactions.react(self, request, alone=not self.keep_requests)
        finally:
            self._outcomes.pop(id(request), None)

    def _authenticate(self, request: kmock.Request) -> UserInfo:
        """Bearer tokens (https://kubernetes.io/docs/reference/access-authn-authz/authentication/#putting-a-bearer-token-in-a-request):
        a known token is its user, an unknown one 401 Unauthorized, none at all the anonymous user."""
        header = _header(request, "Authorization")
        if not header:
            return ANONYMOUS
        scheme, _, token = header.partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return user

    def _authorize(self, request: kmock.Request) -> None:
        if self.authorizer is None:
            return
        res = request.resource
        resource = res is not None and res.plural is not None
        verb = request_verb(
            str(getattr(request.method, "value", request.method)), resource=resource, name=request.name,
            params=request.params,
        )  # fmt: skip
        name = request.name
        if resource and name is None and verb in ("list", "watch"):
            # RBAC doc, resourceNames: a list or watch names one object with fieldSelector metadata.name=<name>.
            selector = request.params.get("fieldSelector") or ""
            exact = [t.split("=")[-1] for t in selector.split(",") if re.fullmatch(r"metadata\.name==?[^=,]+", t)]
            name = exact[0] if exact and exact[0] not in (".", "..") and not {"/", "%"} & set(exact[0]) else None
        attributes = Attributes(
            self._user, verb, request.url.path, res if resource else None, request.subresource,
            request.namespace if resource else None, name if resource else None,
        )  # fmt: skip
        self.authorizer(attributes, self)

    def _serves(self, res: kmock.resource) -> bool:
        return res in self.resources or res in self._get_resources()

    def _check_served(self, request: kmock.Request) -> None:
        """404 for resources, scopes and subresources the server does not have (unknown resources reach
        kmock's reactions first, so a test can still answer them with ``k[...] << ...``)."""
        res = request.resource
        if res is None or not self._serves(res):
            raise unknown_path()
        info = self.resources[res]
        if info.namespaced is False and request.namespace is not None:
            raise unknown_path()
        if request.subresource is not None and request.subresource not in info.subresources:
            raise unknown_path()

    def _write(self, request: kmock.Request) -> Response | None:
        method, name = request.method, request.name
        if method == kmock.method.POST and request.subresource == "eviction" and request.resource == PODS:
            return self._http_evict(request)
        if method == kmock.method.POST and name is None:
            return self._http_create(request)
        if method == kmock.method.PUT and name is not None:
            return self._http_replace(request)
        if method == kmock.method.PATCH and name is not None:
            return self._http_patch(request)
        if method == kmock.method.DELETE:
            return self._http_delete(request) if name is not None else self._http_delete_collection(request)
        return None

    # The fallbacks kmock registered (and PUT/deletecollection, registered above).

    async def _serve_version(self, request: kmock.Request) -> Body:
        """Discovery of one group version (``APIResourceList``), with subresources listed as the API server
        lists them: no short names or categories, their own verbs (kmock copies the parent's)."""
        assert request.resource is not None
        found = [r for r in self._get_resources() if request.resource.check(r) and r.plural]
        if not found and request.resource.group != "":
            raise unknown_path()
        entries: list[Body] = []
        for res in sorted(found, key=lambda r: str(r.plural)):
            info = self.resources[res]
            kind = info.kind or str(res.plural).capitalize()
            entries.append(
                {
                    "name": res.plural,
                    "singularName": info.singular or str(res.plural),
                    "namespaced": bool(info.namespaced),
                    "kind": kind,
                    "verbs": sorted(info.verbs),
                    **({"shortNames": sorted(info.shortnames)} if info.shortnames else {}),
                    **({"categories": sorted(info.categories)} if info.categories else {}),
                }
            )
            for sub in sorted(info.subresources):
                sub_kind, verbs = _SUBRESOURCES.get(sub, (kind, ["get", "patch", "update"]))
                entry = {"name": f"{res.plural}/{sub}", "singularName": "", "namespaced": bool(info.namespaced)}
                entries.append({**entry, "kind": sub_kind or kind, "verbs": verbs})
        group, version = request.resource.group, request.resource.version
        group_version = f"{group}/{version}" if group else str(version)
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}

    def _answer(self, status: int, body: Body) -> Response:
        # kmock merges a returned Response's headers into its reaction for good: always name Warning.
        warning = ", ".join(f"299 - {json.dumps(w)}" for w in self._warnings) or None
        return Response(status=status, payload=body, headers={"Warning": warning})

    async def _serve_outcome(self, request: kmock.Request) -> Response:
        outcome = self._outcomes.get(id(request))
        if outcome is None:
            raise unknown_path()
        return outcome

    _serve_create = _serve_update = _serve_delete = _serve_outcome

    async def _serve_fetch(self, request: kmock.Request) -> Response:
        self._check_served(request)
        assert request.resource is not None and request.name is not None
        obj = self._live((request.resource, request.namespace, request.name))
        if obj is None:
            raise not_found(request.resource, request.name)
        if self._wants_table(request):
            return self._answer(200, self._table(request.resource, [obj], str(self._revision)))
        return self._answer(200, obj)

    async def _serve_list(self, request: kmock.Request) -> Response:
        """A list: every selected object, sorted by namespace and name, with the list's resourceVersion.

        API concepts, "Retrieving large results sets in chunks": ``limit`` cuts a page and ``continue``
        resumes after it (here from the current state, where the API server pins the first page's
        revision). ``resourceVersion`` of a list is only a lower bound, and this state is always newest.
        """
        self._check_served(request)
        res = request.resource
        assert res is not None
        selection = self._selection(request)
        found = sorted(
            ((key, obj) for key, obj in self._live_items_of(res) if selection(obj)),
            key=lambda item: (item[0][1] or "", item[0][2]),
        )
        meta: Body = {"resourceVersion": str(self._revision)}
        if token := request.params.get("continue"):
            after = self._decode_continue(token)
            found = [(key, obj) for key, obj in found if [key[1] or "", key[2]] > after]
        limit = int(request.params.get("limit") or 0)
        if 0 < limit < len(found):
            last = found[limit - 1][0]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps([last[1] or "", last[2]]).encode()).decode()
            meta["remainingItemCount"] = len(found) - limit
            found = found[:limit]
        if self._wants_table(request):
            table = self._table(res, [o for _, o in found], meta["resourceVersion"])
            table["metadata"] = meta
            return self._answer(200, table)
        kind = self.resources[res].kind or str(res.plural).capitalize()
        items = [o for _, o in found]
        if res not in self._custom:
            # A built-in kind's list is typed on the real server: its items carry no apiVersion or kind
            # (a custom resource's list is unstructured, each item whole). Clients must not rely on them.
            items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for o in items]
        body = {"apiVersion": _api_version(res), "kind": f"{kind}List", "metadata": meta, "items": items}
        return self._answer(200, body)

    async def _serve_openapi_index(self, request: kmock.Request) -> Body:
        """``/openapi/v3``: one document per group version, as kubectl reads it to learn whether the
        server validates fields itself (API concepts, "Field validation"; "OpenAPI V3" discovery)."""
        paths = {}
        for group_version in sorted({_api_version(r) for r in self._get_resources() if r.plural}):
            prefix = "api/v1" if group_version == "v1" else f"apis/{group_version}"
            digest = hashlib.sha256(json.dumps(self._openapi_document(prefix), sort_keys=True).encode()).hexdigest()
            paths[prefix] = {"serverRelativeURL": f"/openapi/v3/{prefix}?hash={digest[:32].upper()}"}
        return {"paths": paths}

    async def _serve_openapi(self, request: kmock.Request) -> Body:
        document = self._openapi_document(request.url.path.removeprefix("/openapi/v3/"))
        if not document["paths"]:
            raise unknown_path()
        return document

    def _openapi_document(self, prefix: str) -> Body:
        """The OpenAPI v3 document of one group version: each resource's PATCH with its
        x-kubernetes-group-version-kind and the query parameters the emulator honours (dryRun,
        fieldManager, fieldValidation), and the schemas of custom resources."""
        paths: Body = {}
        schemas: Body = {}
        parameters = [
            {"name": n, "in": "query", "schema": {"type": "string"}}
            for n in ("dryRun", "fieldManager", "fieldValidation", "force")
        ]
        for res in sorted(self._get_resources(), key=lambda r: str(r.plural)):
            base = "api/v1" if _api_version(res) == "v1" else f"apis/{_api_version(res)}"
            info = self.resources[res]
            if base != prefix or not res.plural or not info.kind:
                continue
            gvk = {"group": res.group, "version": res.version, "kind": info.kind}
            scope = f"/{base}/namespaces/{{namespace}}" if info.namespaced else f"/{base}"
            patch = {
                "x-kubernetes-group-version-kind": gvk,
                "parameters": parameters,
                "responses": {"200": {"description": "OK"}},
            }
            paths[f"{scope}/{res.plural}/{{name}}"] = {"patch": patch}
            if res in self._schemas:
                reversed_group = ".".join(reversed(str(res.group).split(".")))
                schemas[f"{reversed_group}.{res.version}.{info.kind}"] = {
                    **self._schemas[res],
                    "x-kubernetes-group-version-kind": [gvk],
                }
        info_block = {"title": "Kubernetes", "version": "unversioned"}
        return {"openapi": "3.0.0", "info": info_block, "paths": paths, "components": {"schemas": schemas}}

    def _wants_table(self, request: kmock.Request) -> bool:
        # Tables only for custom resources, whose columns the CRD defines; built-in kinds have printers
        # of their own in the API server, which are not emulated: clients then print the plain list.
        return request.resource in self._custom and "as=Table" in _header(request, "Accept")

    def _table(self, res: kmock.resource, objects: list[Body], revision: str) -> Body:
        """A ``meta.k8s.io/v1`` Table from the CRD's additionalPrinterColumns (API concepts, "Receiving
        resources as Tables"; CRD doc, "Additional printer columns"): Name first, an Age when the CRD
        defines no columns, dates as the time since, each row with the object's metadata."""
        columns = self._columns.get(res) or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
        definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        definitions += [
            {k: c.get(k, "" if k != "priority" else 0) for k in ("name", "type", "format", "description", "priority")}
            for c in columns
        ]
        rows = []
        for obj in objects:
            cells: list[Any] = [_meta(obj).get("name")]
            for column in columns:
                value = _json_path(obj, str(column.get("jsonPath", "")))
                cells.append(_since(value) if column.get("type") == "date" and isinstance(value, str) else value)
            partial = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": _meta(obj)}
            rows.append({"cells": cells, "object": partial})
        meta = {"resourceVersion": revision}
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "columnDefinitions": definitions,
            "rows": rows,
        }

    @staticmethod
    def _decode_continue(token: str) -> list[str]:
        try:
            after = json.loads(base64.urlsafe_b64decode(token.encode()))
        except (ValueError, binascii.Error):
            raise bad_request("continue key is not valid") from None
        if not (isinstance(after, list) and len(after) == 2 and all(isinstance(p, str) for p in after)):
            raise bad_request("continue key is not valid")
        return after

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        """A watch, following API concepts, "Semantics for watch" and "Streaming lists".

        No resourceVersion (or "0"): ADDED for every selected object, then changes. A resourceVersion:
        only changes after it, or one ERROR 410 Expired when it is older than the kept history.
        ``sendInitialEvents=true``: the ADDED events end with a BOOKMARK annotated
        ``k8s.io/initial-events-end``. ``timeoutSeconds`` ends the stream. Up to the first yield this
        runs without awaiting, so the subscription and the snapshot are taken at the same instant.
        """
        self._check_served(request)
        res = request.resource
        assert res is not None
        params = request.params
        selection = self._selection(request)
        since = self._revision
        backlog: list[Body] = []
        version = params.get("resourceVersion") or ""
        initial = params.get("sendInitialEvents") == "true"
        if initial or version in ("", "0"):
            found = sorted(
                ((k, o) for k, o in self._live_items_of(res) if selection(o)),
                key=lambda item: (item[0][1] or "", item[0][2]),
            )
            backlog = [{"type": "ADDED", "object": obj} for _, obj in found]
            if initial:
                bookmark_meta = {"resourceVersion": str(since), "annotations": {"k8s.io/initial-events-end": "true"}}
                kind = self.resources[res].kind
                backlog.append(
                    {
                        "type": "BOOKMARK",
                        "object": {"kind": kind, "apiVersion": _api_version(res), "metadata": bookmark_meta},
                    }
                )
        elif not version.isdigit():
            backlog = [{"type": "ERROR", "object": bad_request(f"invalid resource version: {version!r}").status}]
        elif int(version) < self._compacted:
            error = ApiError(410, "Expired", f"too old resource version: {version} ({self._compacted})")
            backlog = [{"type": "ERROR", "object": error.status}]
        else:
            since = int(version)
            probe = _Watcher(selection, since)
            backlog = [e for c in self._changes if (e := probe.event(c)) is not None]
        watcher = _Watcher(selection, since)
        if self._closing or (backlog and backlog[-1]["type"] == "ERROR"):
            watcher.queue.put_nowait(None)
        self._watchers.setdefault(res, set()).add(watcher)
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        deadline = asyncio.get_running_loop().time() + timeout if timeout else None
        try:
            yield b""  # the headers go out now, even if nothing happens for a while
            for event in backlog:
                yield event
            while True:
                if deadline is None:
                    live_event = await watcher.queue.get()
                else:
                    remaining = deadline - asyncio.get_running_loop().time()
                    try:
                        live_event = await asyncio.wait_for(watcher.queue.get(), max(remaining, 0))
                    except TimeoutError:
                        return
                if live_event is None:
                    return
                yield live_event
        finally:
            self._watchers.get(res, set()).discard(watcher)

    def _selection(self, request: kmock.Request) -> Selection:
        assert request.resource is not None
        labels = request.params.get("labelSelector")
        fields = request.params.get("fieldSelector")
        return Selection(
            resource=request.resource,
            namespace=request.namespace,
            name=request.name,
            labels=label_selector(labels) if labels else None,
            fields=field_selector(request.resource, fields) if fields else None,
        )

    # --- writes over HTTP

    def _body(self, request: kmock.Request) -> Body:
        """The JSON object of a create or replace. Other media types (protobuf, CBOR) are 415, as for a
        kind that does not support them (API concepts, "Alternate representations of resources")."""
        content_type = _header(request, "Content-Type").split(";")[0].strip().lower()
        if content_type not in ("", "application/json"):
            message = (
                "the body of the request was in an unknown format - accepted media types include: application/json"
            )
            raise ApiError(415, "UnsupportedMediaType", message)
        return self._json_object(request)

    def _json_object(self, request: kmock.Request) -> Body:
        if not isinstance(request.data, dict):
            raise bad_request("the body of the request is not a JSON object")
        return request.data

    def _http_create(self, request: kmock.Request) -> Response:
        res = request.resource
        assert res is not None
        if self.resources[res].namespaced and request.namespace is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        obj = self._create(res, request.namespace, self._body(request), dry_run=_dry_run(request))
        return self._answer(201, obj)

    def _http_replace(self, request: kmock.Request) -> Response:
        """PUT replaces the object; a stale resourceVersion is 409, a missing one is 422 for custom resources.

        API concepts, "Resource versions" and the API conventions' "Concurrency Control and Consistency";
        custom resources do not allow unconditional updates.
        """
        res, name = request.resource, request.name
        assert res is not None and name is not None
        body = self._body(request)
        if _meta(body).get("name") not in (None, name):
            raise bad_request(
                f"the name of the object ({_meta(body)['name']}) does not match the name on the URL ({name})"
            )
        key = (res, request.namespace, name)
        current = self._live(key)
        if current is None:
            raise not_found(res, name)
        if res in self._custom and not _meta(body).get("resourceVersion"):
            cause = (
                "metadata.resourceVersion",
                "FieldValueInvalid",
                "Invalid value: 0x0: must be specified for an update",
            )
            raise invalid(res, str(current.get("kind")), name, [cause])
        obj = self._update(key, body, subresource=request.subresource, dry_run=_dry_run(request))
        return self._answer(200, obj)

    def _http_patch(self, request: kmock.Request) -> Response:
        """PATCH by its content type, API concepts "Patch" (json-patch, merge-patch, strategic-merge-patch, apply).

        Strategic merge is refused for custom resources (415), as documented. Server-side apply here
        creates a missing object and otherwise merges the applied configuration; field ownership (and so
        removal of fields a manager stopped applying, and apply conflicts) is not emulated.
        """
        res, name = request.resource, request.name
        assert res is not None and name is not None
        key = (res, request.namespace, name)
        current = self._live(key)
        content_type = _header(request, "Content-Type").split(";")[0].strip().lower()
        dry_run = _dry_run(request)
        if content_type == APPLY_PATCH:
            if not request.params.get("fieldManager"):
                cause = ("fieldManager", "FieldValueRequired", "Required value: is required for apply patch")
                raise ApiError(422, "Invalid", f'PatchOptions.meta.k8s.io "" is invalid: {cause[0]}: {cause[2]}')
            try:
                applied = yaml.safe_load(request.text)
            except yaml.YAMLError:
                raise bad_request("error decoding YAML") from None
            if not isinstance(applied, dict):
                raise bad_request("the body of an apply patch must be an object")
            if current is None:
                if request.subresource is not None:
                    raise not_found(res, name)
                applied.setdefault("metadata", {})["name"] = name
                return self._answer(201, self._create(res, request.namespace, applied, dry_run=dry_run))
            candidate = merge_patch(current, _drop_nulls(applied))
        elif current is None:
            raise not_found(res, name)
        elif content_type == JSON_PATCH:
            candidate = json_patch(current, request.data)
        elif content_type == MERGE_PATCH:
            candidate = merge_patch(current, self._json_object(request))
        elif content_type == STRATEGIC_MERGE_PATCH and res not in self._custom:
            candidate = strategic_merge_patch(current, self._json_object(request))
        else:
            accepted = f"{JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}" + (
                "" if res in self._custom else f", {STRATEGIC_MERGE_PATCH}"
            )
            message = f"the body of the request was in an unknown format - accepted media types include: {accepted}"
            raise ApiError(415, "UnsupportedMediaType", message)
        obj = self._update(key, candidate, subresource=request.subresource, dry_run=dry_run)
        return self._answer(200, obj)

    def _http_delete(self, request: kmock.Request) -> Response:
        """DELETE answers 200 with the object when it is gone and 202 while finalizers hold it."""
        assert request.resource is not None and request.name is not None
        options = dict(request.data) if isinstance(request.data, dict) else {}
        for param in ("propagationPolicy", "gracePeriodSeconds"):
            if param in request.params:
                options[param] = request.params[param]
        key = (request.resource, request.namespace, request.name)
        current = self._live(key)
        if current is not None:
            self._admit_delete(key, current, dry_run=_dry_run(request))
        obj, gone = self._delete(key, options, dry_run=_dry_run(request))
        return self._answer(200 if gone else 202, obj)

    def _http_delete_collection(self, request: kmock.Request) -> Response:
        res = request.resource
        assert res is not None
        selection = self._selection(request)
        deleted = []
        for key, obj in list(self._live_items()):
            if key[0] == res and selection(obj):
                self._admit_delete(key, obj, dry_run=_dry_run(request))
                deleted.append(self._delete(key, {}, dry_run=_dry_run(request))[0])
        kind = self.resources[res].kind or "Object"
        meta = {"resourceVersion": str(self._revision)}
        return self._answer(
            200, {"apiVersion": _api_version(res), "kind": f"{kind}List", "metadata": meta, "items": deleted}
        )

    def _http_evict(self, request: kmock.Request) -> Response:
        """POST pods/NAME/eviction, the Eviction API (``tests/fakes/kube_pods.py``, ``judge_eviction``):
        201 and the pod deleted (its ``deleteOptions`` honoured), or the budget's refusal (429)."""
        assert request.name is not None
        key = (PODS, request.namespace, request.name)
        pod = self._live(key)
        if pod is None:
            raise not_found(PODS, request.name)
        body = request.data if isinstance(request.data, dict) else {}
        budgets = [obj for k, obj in self._live_items() if k[0] == PDBS and k[1] == request.namespace]
        verdict = judge_eviction(pod, budgets)
        if not isinstance(verdict, Allowed):
            details = {"name": request.name, "kind": "pods", "causes": verdict.causes} if verdict.causes else {}
            raise ApiError(verdict.code, verdict.reason, verdict.message, details)
        if not _dry_run(request):
            if verdict.budget is not None:
                budget_key = (PDBS, request.namespace, str(_meta(verdict.budget)["name"]))

                def spend(obj: Body) -> None:
                    status = obj.setdefault("status", {})
                    status["disruptionsAllowed"] = max(int(status.get("disruptionsAllowed") or 0) - 1, 0)
                    status.setdefault("disruptedPods", {})[request.name] = _now()

                self._system_update(budget_key, spend, subresource="status")
            self._delete(key, dict(body.get("deleteOptions") or {}))
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
        return self._answer(201, status)

    # --- the store

    def _live(self, key: Key) -> Body | None:
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else obj.raw

    def _live_items(self) -> Iterator[tuple[Key, Body]]:
        for key, obj in list(self.objects.items()):
            if not obj.deleted:
                yield key, obj.raw

    def _live_items_of(self, res: kmock.resource) -> list[tuple[Key, Body]]:
        """The live objects of one resource, from its index (a list or a watch of one resource must not
        walk every object of every resource: the bench lists its tenants twice a second)."""
        found = ((key, self._live(key)) for key in list(self._by_resource.get(res, ())))
        return [(key, obj) for key, obj in found if obj is not None]

    def live_of(self, res: kmock.resource | str) -> list[Body]:
        """Every live object of one resource, without walking the whole store (admission reads
        bindings, policies and classes on every write)."""
        wanted = kmock.resource(res)
        found = (self._live(key) for key in sorted(self._by_resource.get(wanted, ()), key=str))
        return [obj for obj in found if obj is not None]

    def read_object(self, res: kmock.resource | str, name: str, namespace: str | None = None) -> Body | None:
        """The live object, or None: for tests reading the state from the server's own thread."""
        return self._live((kmock.resource(res), namespace, name))

    def create_object(
        self, res: kmock.resource | str, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> Body:
        """Create an object as a POST would (validation, uid, resourceVersion, watch event)."""
        reference = kmock.resource(res)
        return self._create(reference, namespace or _meta(body).get("namespace"), dict(body))

    def _commit(self, key: Key, kind: str, obj: Body, previous: Body | None) -> Body:
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)
        if kind == "ADDED" and key not in self.objects:
            self.objects[key] = obj
        else:
            self.objects[key].history.append(obj)
            if kind == "DELETED":
                self.objects[key].delete()
        if kind == "DELETED":
            self._by_resource.get(key[0], set()).discard(key)
        else:
            self._by_resource.setdefault(key[0], set()).add(key)
        change = Change(self._revision, key, kind, obj, previous)
        self._changes.append(change)
        while len(self._changes) > self.event_window:
            self._compacted = self._changes.popleft().revision
        for watcher in list(self._watchers.get(key[0], ())):
            watcher.offer(change)
        if key[0] == CRDS:
            self._serve_crd(obj, removed=kind == "DELETED")
        if kind == "DELETED":
            self._uids.discard(str(_meta(obj).get("uid")))
        else:
            self._uids.add(str(_meta(obj).get("uid")))
        if self._gives_controllers_work(key, kind, obj, previous):
            self._dirty.set()
        return obj

    def _gives_controllers_work(self, key: Key, kind: str, obj: Body, previous: Body | None) -> bool:
        """Whether a change can give the namespace controller or the garbage collector something to do:
        a deletion, an object being deleted, a CRD (its removal takes its objects), owner references that
        changed, or a new object owned by a uid not seen. Any other write leaves their work as it was, so
        a pass (a scan of every object) after each one would only make the emulator O(n²) in writes."""
        meta = _meta(obj)
        if kind == "DELETED" or meta.get("deletionTimestamp") or key[0] == CRDS:
            return True
        refs = meta.get("ownerReferences") or []
        if previous is not None:
            return bool(refs != (_meta(previous).get("ownerReferences") or []))
        return any(str(ref.get("uid")) not in self._uids for ref in refs)

    def _create(self, res: kmock.resource, namespace: str | None, body: Body, *, dry_run: bool = False) -> Body:
        """Create, following the object-metadata reference (``OBJECT_META``) and the API conventions.

        The server sets uid, creationTimestamp, resourceVersion and (for kinds that track it)
        generation 1, and completes a ``generateName``. An existing name is 409 AlreadyExists. A
        namespaced object needs its namespace to exist and not be terminating (admission plugin
        NamespaceLifecycle). With a status subresource, the status of a new object is ignored.
        """
        obj = _copy_json(body)
        self._check_type_meta(res, obj)
        if not isinstance(obj.setdefault("metadata", {}), dict):
            raise bad_request("metadata must be an object")
        meta = obj["metadata"]
        declared = self.resources[res].namespaced
        namespaced = declared if declared is not None else namespace is not None
        if namespaced:
            if meta.get("namespace") not in (None, "", namespace) and namespace is not None:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or meta.get("namespace") or "default"
            meta["namespace"] = namespace
        else:
            namespace = None
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generate_name(res, namespace, str(meta["generateName"]))
        name = meta.get("name")
        if not name:
            raise invalid(
                res,
                str(obj["kind"]),
                "",
                [("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")],
            )
        self._check_name(res, str(obj["kind"]), name)
        if namespace is not None:
            self._admit_namespace(res, namespace)
        current = self._live((res, namespace, name))
        if current is not None:
            raise already_exists(res, name, deleting=bool(_meta(current).get("deletionTimestamp")))
        if "status" in self.resources[res].subresources:
            obj.pop("status", None)
        for system in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
        ):
            meta.pop(system, None)
        obj = self._admit(res, None, obj, dry_run=dry_run)
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if self._tracks_generation(res, obj):
            meta["generation"] = 1
        if dry_run:
            return obj
        return self._commit((res, namespace, name), "ADDED", obj, None)

    def _generate_name(self, res: kmock.resource, namespace: str | None, prefix: str) -> str:
        """ObjectMeta.generateName: the prefix (cut to leave room) and five random characters."""
        prefix = prefix[:58]
        while True:
            name = prefix + "".join(random.choice(_GENERATED_ALPHABET) for _ in range(5))
            if self._live((res, namespace, name)) is None:
                return name

    def _check_type_meta(self, res: kmock.resource, obj: Body) -> None:
        expected_version, expected_kind = _api_version(res), self.resources[res].kind
        if obj.get("apiVersion") not in (None, expected_version):
            given = obj["apiVersion"]
            raise bad_request(
                f"the API version in the data ({given}) does not match the expected API version ({expected_version})"
            )
        if obj.get("kind") not in (None, expected_kind) and expected_kind:
            raise bad_request(
                f"the kind in the data ({obj['kind']}) does not match the expected kind ({expected_kind})"
            )
        obj["apiVersion"] = expected_version
        obj["kind"] = obj.get("kind") or expected_kind or str(res.plural).capitalize()

    def _check_name(self, res: kmock.resource, kind: str, name: str) -> None:
        """Object names, https://kubernetes.io/docs/concepts/overview/working-with-objects/names/ :
        namespaces are RFC 1123 labels (63), most other kinds RFC 1123 subdomains (253), RBAC's kinds
        path segment names (not "." or "..", no "/" or "%"; ``system:discovery`` is one)."""
        if res.group == "rbac.authorization.k8s.io":
            bad = (
                [f"may not be '{name}'"]
                if name in (".", "..")
                else [f"may not contain '{c}'" for c in "/%" if c in name]
            )
            causes = [("metadata.name", "FieldValueInvalid", f"Invalid value: {json.dumps(name)}: {b}") for b in bad]
            if causes:
                raise invalid(res, kind, name, causes)
            return
        label = res == NAMESPACES
        pattern, limit = (_DNS_LABEL, 63) if label else (_DNS_SUBDOMAIN, 253)
        if len(name) > limit or not pattern.fullmatch(name):
            what = "RFC 1123 label" if label else "RFC 1123 subdomain"
            message = f"Invalid value: {json.dumps(name)}: a lowercase {what} must consist of lower case alphanumeric"
            message += " characters, '-' or '.'"
            raise invalid(res, kind, name, [("metadata.name", "FieldValueInvalid", message)])

    def _admit_namespace(self, res: kmock.resource, namespace: str) -> None:
        """Admission plugin NamespaceLifecycle: no objects in missing or terminating namespaces.

        https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/#namespacelifecycle
        """
        if NAMESPACES not in self.resources:
            return
        found = self._live((NAMESPACES, None, namespace))
        if found is None:
            raise not_found(NAMESPACES, namespace)
        if _meta(found).get("deletionTimestamp"):
            message = f"unable to create new content in namespace {namespace} because it is being terminated"
            raise ApiError(403, "Forbidden", message, _details(res, "", None))

    def _tracks_generation(self, res: kmock.resource, obj: Body) -> bool:
        """metadata.generation (``OBJECT_META``): custom resources and CRDs, and built-in kinds outside
        the core group that have a spec (Deployments, Jobs, ...); ConfigMaps, Services and the like have none."""
        return res in self._custom or res == CRDS or (bool(res.group) and "spec" in obj)

    def _generation_content(self, res: kmock.resource, obj: Body) -> Body:
        # CRD doc, "Status subresource": generation counts every change except .metadata and .status.
        skip = {"metadata", "status"} if "status" in self.resources[res].subresources else {"metadata"}
        return {k: v for k, v in obj.items() if k not in skip}

    def _admit(
        self, res: kmock.resource, current: Body | None, obj: Body, *, subresource: str | None = None,
        dry_run: bool = False,
    ) -> Body:  # fmt: skip
        """What the server itself adds or checks per kind, on create (``current`` None) and update; then
        the validators (``validators``: strategy validation, then admission) see the result."""
        if res == NAMESPACES:
            # Namespaces: the "kubernetes" finalizer, phase Active and the immutable name label
            # (https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/).
            meta = obj["metadata"]
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            if current is None:
                finalizers = list((obj.get("spec") or {}).get("finalizers") or [])
                if "kubernetes" not in finalizers:
                    finalizers.append("kubernetes")
                obj["spec"] = {**(obj.get("spec") or {}), "finalizers": finalizers}
                obj["status"] = {"phase": "Active"}
        elif res == CRDS:
            spec = obj.get("spec") or {}
            conditions = [
                {"type": kind, "status": "True", "reason": reason, "lastTransitionTime": _now()}
                for kind, reason in (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))
            ]
            stored = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
            obj["status"] = {
                "acceptedNames": spec.get("names") or {},
                "conditions": conditions,
                "storedVersions": stored,
            }
        schema = self._schemas.get(res)
        if schema is not None:
            dropped: list[str] = []
            obj = default_and_prune(obj, schema, root=True, dropped=dropped)
            self._validate_fields(res, obj, dropped)
            # metadata is checked apart (its name below); a CRD may still list it as required.
            body_schema = {**schema, "required": [r for r in schema.get("required") or [] if r != "metadata"]}
            errors = schema_errors({k: v for k, v in obj.items() if k != "metadata"}, body_schema, "")
            name_schema = ((schema.get("properties") or {}).get("metadata") or {}).get("properties", {}).get("name")
            if name_schema:
                errors += schema_errors(_meta(obj).get("name"), name_schema, "metadata.name")
            if errors:
                raise invalid(res, str(obj.get("kind")), str(_meta(obj).get("name")), errors)
        meta = _meta(obj)
        operation = "CREATE" if current is None else "UPDATE"
        self._run_validators(
            Admission(
                operation, res, str(obj.get("kind")), str(meta.get("name")), meta.get("namespace"), obj, current,
                self._user, subresource, dry_run, self, self._field_validation,
            )
        )  # fmt: skip
        return obj

    def _run_validators(self, admission: Admission) -> None:
        for validator in self.validators:
            validator(admission)

    def _admit_delete(self, key: Key, current: Body, *, dry_run: bool) -> None:
        """Admission of a DELETE a client asked for (the garbage collector's and the namespace
        controller's own deletions are the server's)."""
        res, namespace, name = key
        admission = Admission(
            "DELETE", res, str(current.get("kind")), name, namespace, None, current, self._user, None, dry_run, self
        )
        self._run_validators(admission)

    def _validate_fields(self, res: kmock.resource, obj: Body, dropped: list[str]) -> None:
        """Unknown fields, API concepts "Field validation": ``fieldValidation=Strict`` refuses them (400),
        ``Warn`` (the default) drops them with a Warning header, ``Ignore`` drops them silently."""
        if not dropped or self._field_validation == "Ignore":
            return
        unknown = ", ".join(f'unknown field "{path}"' for path in dropped)
        if self._field_validation == "Strict":
            kind = obj.get("kind")
            message = (
                f'{kind} in version "{res.version}" cannot be handled as a {kind}: strict decoding error: {unknown}'
            )
            raise bad_request(message)
        self._warnings += [f'unknown field "{path}"' for path in dropped]

    def _update(
        self, key: Key, candidate: Body, *, subresource: str | None = None, dry_run: bool = False, system: bool = False
    ) -> Body:
        """Update one object (PUT, every PATCH, and the controllers' own writes).

        - resourceVersion in the new object is a precondition: stale is 409 Conflict (API concepts).
        - uid, creationTimestamp, deletionTimestamp and generation are the server's (``OBJECT_META``).
        - Status subresource (CRD doc, "Status subresource"): the main resource ignores .status, /status
          changes nothing but .status; generation grows only when something else than metadata/status does.
        - No new finalizers on an object being deleted; removing the last one deletes it
          (https://kubernetes.io/docs/concepts/overview/working-with-objects/finalizers/).
        - An update that changes nothing writes nothing: no new resourceVersion, no watch event.
        """
        res, _, name = key
        current = self._live(key)
        if current is None:
            raise not_found(res, name)
        if not isinstance(candidate.get("metadata", {}), dict):
            raise bad_request("metadata must be an object")
        if _meta(candidate).get("namespace") not in (None, "", _meta(current).get("namespace")):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        wanted = _meta(candidate).get("resourceVersion")
        if wanted and wanted != _meta(current).get("resourceVersion"):
            raise conflict(res, name)
        new = self._merge_subresource(res, current, candidate, subresource)
        meta = new.setdefault("metadata", {})
        for system_field in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
            "name",
            "namespace",
        ):
            if system_field in _meta(current):
                meta[system_field] = _meta(current)[system_field]
            else:
                meta.pop(system_field, None)
        for type_field in ("apiVersion", "kind"):
            if type_field in current:
                new[type_field] = current[type_field]
        deleting = bool(meta.get("deletionTimestamp"))
        if (
            deleting
            and not system
            and not set(meta.get("finalizers") or []) <= set(_meta(current).get("finalizers") or [])
        ):
            cause = (
                "metadata.finalizers",
                "FieldValueForbidden",
                "Forbidden: no new finalizers can be added if the object is being deleted",
            )
            raise invalid(res, str(current.get("kind")), name, [cause])
        if not system:
            new = self._admit(res, current, new, subresource=subresource, dry_run=dry_run)
        if _without_version(new) == _without_version(current):
            return current
        if "generation" in meta and self._generation_content(res, new) != self._generation_content(res, current):
            new["metadata"]["generation"] = int(meta["generation"]) + 1
        if dry_run:
            return new
        if deleting and not self._finalizers(res, new):
            return self._commit(key, "DELETED", new, current)
        return self._commit(key, "MODIFIED", new, current)

    def _merge_subresource(self, res: kmock.resource, current: Body, candidate: Body, subresource: str | None) -> Body:
        if subresource == "status":
            new = _copy_json(current)
            if "status" in candidate:
                new["status"] = _copy_json(candidate["status"])
            else:
                new.pop("status", None)
            return new
        if subresource == "finalize" and res == NAMESPACES:
            new = _copy_json(current)
            new.setdefault("spec", {})["finalizers"] = list((candidate.get("spec") or {}).get("finalizers") or [])
            return new
        if subresource is not None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        new = _copy_json(candidate)
        if "status" in self.resources[res].subresources:
            if "status" in current:
                new["status"] = _copy_json(current["status"])
            else:
                new.pop("status", None)
        if res == NAMESPACES:  # spec.finalizers change only through /finalize
            new["spec"] = {**(new.get("spec") or {}), "finalizers": (current.get("spec") or {}).get("finalizers", [])}
        return new

    def _finalizers(self, res: kmock.resource, obj: Body) -> list[str]:
        found = list(_meta(obj).get("finalizers") or [])
        if res == NAMESPACES:
            found += (obj.get("spec") or {}).get("finalizers") or []
        if res == PODS and held_by_grace(obj):
            found.append(GRACEFUL_HOLD)
        return found

    def _delete(self, key: Key, options: Mapping[str, Any], *, dry_run: bool = False) -> tuple[Body, bool]:
        """Delete; answer the object and whether it is gone.

        Preconditions (uid, resourceVersion) that fail are 409. With finalizers the object only gets
        deletionTimestamp and stays until they are removed (finalizers doc). propagationPolicy Foreground
        adds the ``foregroundDeletion`` finalizer and Orphan the ``orphan`` one, for the garbage collector
        (https://kubernetes.io/docs/concepts/architecture/garbage-collection/). A namespace turns
        Terminating and waits for its "kubernetes" finalizer. A pod running on a node is deleted gracefully
        (``tests/fakes/kube_pods.py``, ``deletion_grace``): it keeps deletionTimestamp and
        deletionGracePeriodSeconds until its kubelet deletes it again with grace 0; a later deletion may
        shorten the grace period, never lengthen it.
        """
        res, _, name = key
        current = self._live(key)
        if current is None:
            raise not_found(res, name)
        meta = _meta(current)
        preconditions = options.get("preconditions") or {}
        for field_name in ("uid", "resourceVersion"):
            wanted = preconditions.get(field_name)
            if wanted and wanted != meta.get(field_name):
                why = f"Precondition failed: {field_name} in precondition: {wanted}, "
                why += f"{field_name} in object meta: {meta.get(field_name)}"
                raise conflict(res, name, why)
        policy = options.get("propagationPolicy") or ("Orphan" if options.get("orphanDependents") else "Background")
        if policy not in ("Background", "Foreground", "Orphan"):
            raise bad_request(f"propagationPolicy must be Background, Foreground or Orphan, not {policy!r}")
        grace = deletion_grace(current, options) if res == PODS else 0
        if meta.get("deletionTimestamp"):
            if res != PODS or grace >= int(meta.get("deletionGracePeriodSeconds") or 0):
                return current, False
            shorter = _copy_json(current)
            shorter["metadata"]["deletionGracePeriodSeconds"] = grace
            if dry_run:
                return shorter, False
            if not self._finalizers(res, shorter):
                return self._commit(key, "DELETED", shorter, current), True
            return self._commit(key, "MODIFIED", shorter, current), False
        new = _copy_json(current)
        finalizers = list(_meta(new).get("finalizers") or [])
        extra = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(policy)
        if extra and extra not in finalizers:
            finalizers.append(extra)
        if finalizers:
            new["metadata"]["finalizers"] = finalizers
        if res == NAMESPACES:
            new.setdefault("status", {})["phase"] = "Terminating"
        if grace > 0 or self._finalizers(res, new):
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = grace
            return (new, False) if dry_run else (self._commit(key, "MODIFIED", new, current), False)
        return (current, True) if dry_run else (self._commit(key, "DELETED", _copy_json(current), current), True)

    # --- controllers: namespace lifecycle and garbage collection

    async def _run_controllers(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await asyncio.sleep(0)  # as in a cluster, controllers act after the write has been answered
            try:
                self.reconcile()
            except Exception as exc:
                self.controller_errors.append(exc)

    def reconcile(self) -> None:
        """One pass of the namespace controller and the garbage collector (they also run by themselves).

        Namespace deletion (https://kubernetes.io/docs/tasks/administer-cluster/namespaces/#deleting-a-namespace):
        every object in a terminating namespace is deleted, finalizers respected; when none is left the
        "kubernetes" finalizer goes and the namespace with it (once its metadata.finalizers are gone too).
        Garbage collection (https://kubernetes.io/docs/concepts/overview/working-with-objects/owners-dependents/):
        a dependent whose owners are all gone is deleted, dangling owner references are dropped, an owner
        with ``orphan`` has its dependents released, one with ``foregroundDeletion`` waits for the
        dependents that block owner deletion.
        """
        live = dict(self._live_items())
        uids = {str(_meta(obj).get("uid")) for obj in live.values()}
        self._uids = set(uids)
        dependents: dict[str, list[Key]] = collections.defaultdict(list)
        for key, obj in live.items():
            for ref in _meta(obj).get("ownerReferences") or []:
                dependents[str(ref.get("uid"))].append(key)
        for key, obj in live.items():
            meta = _meta(obj)
            if meta.get("deletionTimestamp"):
                if key[0] == NAMESPACES:
                    self._finish_namespace(key, [k for k in live if k[1] == key[2]])
                if "orphan" in (meta.get("finalizers") or []):
                    self._orphan(key, dependents[str(meta.get("uid"))])
                if "foregroundDeletion" in (meta.get("finalizers") or []):
                    self._delete_in_foreground(key, dependents[str(meta.get("uid"))])
            refs = meta.get("ownerReferences") or []
            alive = [ref for ref in refs if str(ref.get("uid")) in uids]
            if refs and not alive and not meta.get("deletionTimestamp"):
                self._quietly(self._delete, key, {"propagationPolicy": "Background"})
            elif len(alive) < len(refs):
                self._quietly(self._system_update, key, functools.partial(_set_owners, refs=alive))

    def _quietly(self, action: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        try:
            action(*args, **kwargs)
        except ApiError:  # the object changed or went meanwhile; the next pass sees the new state
            pass

    def _system_update(self, key: Key, change: Callable[[Body], object], subresource: str | None = None) -> None:
        current = self._live(key)
        if current is not None:
            new = _copy_json(current)
            change(new)
            self._update(key, new, subresource=subresource, system=True)

    def _finish_namespace(self, key: Key, children: list[Key]) -> None:
        for child in children:
            found = self._live(child)
            if found is not None and not _meta(found).get("deletionTimestamp"):
                self._quietly(self._delete, child, {})
        if any(self._live(child) is not None for child in children):
            return

        def drop_kubernetes(obj: Body) -> None:
            obj["spec"]["finalizers"] = [f for f in obj["spec"].get("finalizers", []) if f != "kubernetes"]

        self._quietly(self._system_update, key, drop_kubernetes, subresource="finalize")

    def _orphan(self, key: Key, dependents: list[Key]) -> None:
        owner = self._live(key)
        uid = _meta(owner or {}).get("uid")
        for dependent in dependents:
            found = self._live(dependent)
            if found is not None:
                refs = [r for r in _meta(found).get("ownerReferences") or [] if r.get("uid") != uid]
                self._quietly(self._system_update, dependent, functools.partial(_set_owners, refs=refs))
        self._quietly(self._system_update, key, functools.partial(_remove_finalizer, finalizer="orphan"))

    def _delete_in_foreground(self, key: Key, dependents: list[Key]) -> None:
        owner = self._live(key)
        uid = _meta(owner or {}).get("uid")
        blocking = False
        for dependent in dependents:
            found = self._live(dependent)
            if found is None:
                continue
            if not _meta(found).get("deletionTimestamp"):
                self._quietly(self._delete, dependent, {"propagationPolicy": "Foreground"})
            still = self._live(dependent)
            refs = _meta(still or {}).get("ownerReferences") or []
            blocking = blocking or any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in refs)
        if not blocking:
            self._quietly(
                self._system_update, key, functools.partial(_remove_finalizer, finalizer="foregroundDeletion")
            )

    # --- custom resource definitions

    def _serve_crd(self, crd: Body, *, removed: bool) -> None:
        """Serve (or stop serving) the resources a CustomResourceDefinition declares, as the API server
        does once the CRD is Established (CRD doc, "Create a CustomResourceDefinition"); deleting the CRD
        deletes its objects."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            res = kmock.resource(spec.get("group"), version.get("name"), names.get("plural"))
            if removed or not version.get("served", True):
                for key in [k for k, _ in self._live_items() if k[0] == res]:
                    self.objects[key].delete()
                self.resources.pop(res, None)
                self._schemas.pop(res, None)
                self._columns.pop(res, None)
                self._custom.discard(res)
                continue
            self.resources[res] = kmock.ResourceInfo(
                kind=names.get("kind"),
                singular=names.get("singular") or str(names.get("kind", "")).lower(),
                namespaced=spec.get("scope") == "Namespaced",
                shortnames=names.get("shortNames") or (),
                categories=names.get("categories") or (),
                verbs=CRD_VERBS,
                subresources=set(version.get("subresources") or {}),
            )
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if schema:
                self._schemas[res] = schema
            self._columns[res] = list(version.get("additionalPrinterColumns") or [])
            self._custom.add(res)


def _copy_json(value: _J) -> _J:
    """A deep copy of JSON data (plain dicts, lists, scalars), several times faster than ``copy.deepcopy``,
    which every write spends on the object; anything else (subclasses too) goes to ``copy.deepcopy``."""
    copied: Any
    kind = type(value)
    if kind is dict:
        copied = {key: _copy_json(item) for key, item in value.items()}  # type: ignore[attr-defined]
    elif kind is list:
        copied = [_copy_json(item) for item in value]  # type: ignore[attr-defined]
    elif value is None or kind in (str, int, float, bool):
        return value
    else:
        return copy.deepcopy(value)
    return cast(_J, copied)


def _set_owners(obj: Body, refs: list[Any]) -> None:
    _meta(obj)["ownerReferences"] = refs


def _json_path(obj: Any, path: str) -> Any:
    """The value at a printer column's JSONPath: ``.a.b``, ``[0]`` and ``[?(@.key=="value")]`` steps."""
    for step in re.findall(r"\.([^.\[]+)|\[(\d+)\]|\[\?\(@\.([^=]+)==[\"']([^\"']*)[\"']\)\]", path):
        name, index, key, wanted = step
        if name:
            obj = obj.get(name) if isinstance(obj, dict) else None
        elif index:
            obj = obj[int(index)] if isinstance(obj, list) and int(index) < len(obj) else None
        else:
            obj = (
                next((i for i in obj if isinstance(i, dict) and str(i.get(key)) == wanted), None)
                if isinstance(obj, list)
                else None
            )
    return obj


def _since(timestamp: str) -> str:
    """How long ago, the way kubectl shows an age: 42s, 5m, 3h, 2d."""
    try:
        then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return timestamp
    seconds = max(int((datetime.datetime.now(datetime.UTC) - then).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _remove_finalizer(obj: Body, finalizer: str) -> None:
    _meta(obj)["finalizers"] = [f for f in _meta(obj).get("finalizers") or [] if f != finalizer]


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def _dry_run(request: kmock.Request) -> bool:
    """``?dryRun=All``: the request is checked and answered, nothing is stored (API concepts, "Dry-run")."""
    return request.params.get("dryRun") == "All"


# --- CRDs to load ----------------------------------------------------------------------------------


def load_crd(
    emulator: PoliteKubernetesEmulator, source: Path | str | Mapping[str, Any] = POLITETENANT_CRD
) -> list[kmock.resource]:
    """Store a CustomResourceDefinition (a file or a dict) and serve its resources, as ``kubectl apply`` would."""
    body = dict(source) if isinstance(source, Mapping) else yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    crd = emulator.create_object(CRDS, body)
    spec = crd["spec"]
    return [
        kmock.resource(spec["group"], v["name"], spec["names"]["plural"])
        for v in spec["versions"]
        if v.get("served", True)
    ]


def cnpg_crd() -> Body:
    """The CloudNativePG ``Cluster`` CRD, reduced to what discovery and storage need (schema open)."""
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "clusters.postgresql.cnpg.io"},
        "spec": {
            "group": "postgresql.cnpg.io",
            "names": {"kind": "Cluster", "listKind": "ClusterList", "plural": "clusters", "singular": "cluster"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {
                        "status": {},
                        "scale": {"specReplicasPath": ".spec.instances", "statusReplicasPath": ".status.instances"},
                    },
                }
            ],
        },
    }


def declare_cnpg(emulator: PoliteKubernetesEmulator) -> kmock.resource:
    """Make the CloudNativePG CRD present: its CRD object and ``postgresql.cnpg.io/v1`` ``clusters``."""
    (resource,) = load_crd(emulator, cnpg_crd())
    return resource
