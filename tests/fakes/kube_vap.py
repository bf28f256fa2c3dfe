"""ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA in Kubernetes 1.30) for the API emulator.

https://kubernetes.io/docs/reference/access-authn-authz/validating-admission-policy/ and the API
reference https://kubernetes.io/docs/reference/kubernetes-api/policy-resources/validating-admission-policy-v1/ :
on every write, each live ValidatingAdmissionPolicy that has a ValidatingAdmissionPolicyBinding is
matched against the request (the policy's ``matchConstraints``, then the binding's ``matchResources``),
its ``paramRef`` resolved, its ``matchConditions`` and ``validations`` evaluated in CEL with
``object``, ``oldObject``, ``request``, ``namespaceObject``, ``params`` and ``variables``, and every
failed validation handled by the binding's ``validationActions``: Deny refuses the request, Warn adds a
Warning header, Audit records an audit annotation (``audit_records``). The first refusal is answered as
the API server answers it: ``<resource>.<group> "<name>" is forbidden: ValidatingAdmissionPolicy
'<policy>' with binding '<binding>' denied request: <message>``, with the validation's ``reason``
(Invalid when unset: 422) and that message as the one cause.

CEL runs in the ``cel`` module (the Rust ``cel`` crate), which evaluates dynamically: nothing is
type-checked when a policy is written, as the API server does (it refuses such a policy instead), and
Kubernetes' CEL libraries beyond the standard (``authorizer``, ``quantity``, ``url``, ``strings.join``,
optionals) are not there. Left out on purpose: ``auditAnnotations``, ``matchPolicy: Equivalent`` (the
emulator serves one version of each resource, so Exact and Equivalent agree), the runtime cost budget,
and ``request.options``. Policies and bindings are visited in name order, so "the first refusal" is
deterministic (the API server's order is its informers').
"""

from __future__ import annotations

import functools
import re
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cel
import kmock

from tests.fakes.kube_emulator import NAMESPACES, Admission, ApiError, Body, PoliteKubernetesEmulator, not_found
from tests.fakes.kube_pods import selects

VAP_DOC = "https://kubernetes.io/docs/reference/access-authn-authz/validating-admission-policy/"
GROUP = "admissionregistration.k8s.io"
POLICIES = kmock.resource(GROUP, "v1", "validatingadmissionpolicies")
BINDINGS = kmock.resource(GROUP, "v1", "validatingadmissionpolicybindings")
# Admission configuration itself is never subject to policies (so a bad policy cannot lock itself in).
_EXEMPT = frozenset({"validatingadmissionpolicies", "validatingadmissionpolicybindings", "mutatingadmissionpolicies",
                     "mutatingadmissionpolicybindings", "validatingwebhookconfigurations",
                     "mutatingwebhookconfigurations"})  # fmt: skip
# validations[].reason: "Unauthorized", "Forbidden", "Invalid", "RequestEntityTooLarge"; unset is Invalid.
_CODES = {"Unauthorized": 401, "Forbidden": 403, "RequestEntityTooLarge": 413, "Invalid": 422}
_MAX_MESSAGE_BYTES = 5 * 1024  # a longer messageExpression result is dropped for the static message
_VARIABLE_USE = re.compile(r"\bvariables\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
# namespaceObject keeps only these metadata fields (the API server strips managedFields, ownerReferences).
_NAMESPACE_META = ("name", "generateName", "namespace", "uid", "resourceVersion", "generation",
                   "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
                   "annotations", "finalizers")  # fmt: skip


@dataclass(frozen=True)
class AuditRecord:
    """One ``validation.policy.admission.k8s.io/validation_failure`` audit annotation, with its request."""

    policy: str
    binding: str
    expression_index: int
    message: str
    validation_actions: tuple[str, ...]
    operation: str
    resource: str
    namespace: str | None
    name: str


_AUDITS: dict[int, list[AuditRecord]] = {}


def audit_records(emulator: PoliteKubernetesEmulator) -> list[AuditRecord]:
    """The audit annotations Audit bindings wrote on this emulator's requests, oldest first."""
    key = id(emulator)
    if key not in _AUDITS:
        _AUDITS[key] = []
        weakref.finalize(emulator, _AUDITS.pop, key, None)
    return _AUDITS[key]


class CelFailure(Exception):
    """An expression that failed to compile or to evaluate; the text is the API server's."""


class _Misconfigured(Exception):
    """A policy or binding that cannot be applied to this request (its failurePolicy decides)."""


@dataclass(frozen=True)
class _Decision:
    index: int  # of the validation; -1 for a match condition or a configuration error
    message: str
    reason: str = "Invalid"


# --- CEL ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _compile(expression: str) -> cel.Program | str:
    """The compiled program (cached: policies are evaluated on every write), or the compilation error."""
    try:
        return cel.compile(expression)
    except Exception as exc:
        text = str(exc)
        return "compilation error: " + (text[text.index("ERROR:") :] if "ERROR:" in text else text)


def _runtime_message(exc: Exception) -> str:
    """cel-go's words for the failures the ``cel`` module reports in its own."""
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0]}"
    undeclared = re.match(r"Undefined variable or function: '([^']+)'", str(exc))
    if undeclared:
        return f"undeclared reference to '{undeclared[1]}'"
    if str(exc).startswith("No such overload"):
        return "no such overload"
    return str(exc)


def _run(expression: str, context: Mapping[str, Any]) -> Any:
    program = _compile(expression)
    if isinstance(program, str):
        raise CelFailure(program)
    try:
        return program.execute(dict(context))
    except Exception as exc:
        raise CelFailure(_runtime_message(exc)) from exc


class _Variables:
    """``spec.variables``, composed lazily: a variable is evaluated (once) only when an expression names
    it, and may name only the variables defined before it. A variable that fails is left out of the
    ``variables`` map, so an expression fails only if it reaches it, with the variable's error."""

    def __init__(self, definitions: list[Body], activation: Mapping[str, Any]) -> None:
        self._order = [str(d.get("name")) for d in definitions]
        self._expressions = {str(d.get("name")): str(d.get("expression")) for d in definitions}
        self._activation = activation
        self._values: dict[str, Any] = {}
        self._errors: dict[str, str] = {}

    def bound(self, expression: str, before: str | None = None) -> dict[str, Any]:
        visible = self._order[: self._order.index(before)] if before in self._order else self._order
        names = [name for name in dict.fromkeys(_VARIABLE_USE.findall(expression)) if name in visible]
        for name in names:
            self._resolve(name)
        return {name: self._values[name] for name in names if name in self._values}

    def _resolve(self, name: str) -> None:
        if name in self._values or name in self._errors:
            return
        expression = self._expressions[name]
        try:
            self._values[name] = _run(expression, {**self._activation, "variables": self.bound(expression, name)})
        except CelFailure as failure:
            text = str(failure)
            verb = "compile" if text.startswith("compilation error") else "evaluate"
            self._errors[name] = (
                f'composited variable "{name}" fails to {verb}: {text.removeprefix("compilation error: ")}'
            )

    def evaluate(self, expression: str) -> Any:
        """``expression`` with ``variables``; a failure reads as the API server's evaluation error."""
        try:
            return _run(expression, {**self._activation, "variables": self.bound(expression)})
        except CelFailure as failure:
            cause = failure.__cause__
            if isinstance(cause, KeyError) and cause.args and cause.args[0] in self._errors:
                raise CelFailure(
                    f"expression '{expression}' resulted in error: {self._errors[cause.args[0]]}"
                ) from None
            if str(failure).startswith("compilation error"):
                raise
            raise CelFailure(f"expression '{expression}' resulted in error: {failure}") from None


# --- the request as policies see it ---------------------------------------------------------------


class _Request:
    """One write as the policy plugin sees it: its attributes, and the ``request`` and ``namespaceObject``
    variables, built once and only when a binding matches."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        res = admission.res
        self.group, self.version, self.resource = str(res.group or ""), str(res.version), str(res.plural)
        self.is_namespace = res == NAMESPACES
        # The API server's request namespace: a Namespace's own name on its update and delete
        # (the URL /api/v1/namespaces/NAME), empty on create and for other cluster-scoped kinds.
        own_name = admission.name if admission.operation != "CREATE" else ""
        self.namespace = own_name if self.is_namespace else admission.namespace or ""

    @functools.cached_property
    def cel_request(self) -> Body:
        """``request``: the AdmissionRequest, empty fields left out as its JSON form leaves them."""
        a, user = self.admission, self.admission.user
        kind = {"group": self.group, "version": self.version, "kind": a.kind}
        resource = {"group": self.group, "version": self.version, "resource": self.resource}
        info: Body = {"username": user.username, **({"uid": user.uid} if user.uid else {})}
        info.update({"groups": list(user.groups)} if user.groups else {})
        body: Body = {"uid": str(uuid.uuid4()), "kind": kind, "resource": resource, "requestKind": kind,
                      "requestResource": resource, "operation": a.operation, "userInfo": info,
                      "dryRun": a.dry_run}  # fmt: skip
        if a.subresource:
            body["subResource"] = body["requestSubResource"] = a.subresource
        body.update({"name": a.name} if a.name else {})
        body.update({"namespace": self.namespace} if self.namespace else {})
        return body

    @functools.cached_property
    def namespace_object(self) -> Body | None:
        """``namespaceObject``: the request's Namespace (null for cluster-scoped kinds and Namespaces);
        a namespace that does not exist fails the request with 404, as the plugin returns its error."""
        if not self.namespace or self.is_namespace:
            return None
        stored = self.admission.read(NAMESPACES, self.namespace)
        if stored is None:
            raise not_found(NAMESPACES, self.namespace)
        meta = stored.get("metadata") or {}
        found: Body = {"apiVersion": "v1", "kind": "Namespace"}
        found["metadata"] = {k: meta[k] for k in _NAMESPACE_META if k in meta}
        return found | {k: stored[k] for k in ("spec", "status") if k in stored}


# --- matching -------------------------------------------------------------------------------------


def _labels(obj: Body | None) -> dict[str, Any] | None:
    return None if obj is None else dict((obj.get("metadata") or {}).get("labels") or {})


def _namespace_selected(selector: Body, req: _Request) -> bool:
    """Cluster-scoped requests (other than for Namespaces) always match; a Namespace being created or
    updated is judged by its new labels, anything else by its namespace's stored labels."""
    if not req.namespace and not req.is_namespace:
        return True
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return True
    a = req.admission
    if req.is_namespace and not a.subresource and a.operation in ("CREATE", "UPDATE"):
        labels = _labels(a.obj) or {}
    else:
        stored = a.read(NAMESPACES, req.namespace or a.name)
        if stored is None:
            raise _Misconfigured(f'namespaces "{req.namespace or a.name}" not found')
        labels = _labels(stored) or {}
    return selects(selector, labels)


def _object_selected(selector: Body, a: Admission) -> bool:
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return True
    return any(labels is not None and selects(selector, labels) for labels in (_labels(a.obj), _labels(a.old)))


def _rule_matches(rule: Body, req: _Request) -> bool:
    """One NamedRuleWithOperations: scope, operations, apiGroups, apiVersions, resources (``res/sub``,
    ``*``, ``*/*``, ``res/*``), resourceNames."""
    scope, cluster = rule.get("scope") or "*", req.is_namespace or not req.namespace
    if (scope == "Namespaced" and cluster) or (scope == "Cluster" and not cluster):
        return False
    wanted = (("operations", req.admission.operation), ("apiGroups", req.group), ("apiVersions", req.version))
    if any(not {"*", value} & set(rule.get(key) or []) for key, value in wanted):
        return False
    sub = req.admission.subresource or ""
    resources = [str(r).partition("/") for r in rule.get("resources") or []]
    if not any(res in ("*", req.resource) and part in ("*", sub) for res, _, part in resources):
        return False
    names = rule.get("resourceNames") or []
    return not names or req.admission.name in names


def _matches(constraints: Body, req: _Request, *, binding: bool) -> bool:
    if not _namespace_selected(constraints.get("namespaceSelector") or {}, req):
        return False
    if not _object_selected(constraints.get("objectSelector") or {}, req.admission):
        return False
    if any(_rule_matches(rule, req) for rule in constraints.get("excludeResourceRules") or []):
        return False
    if binding and constraints.get("resourceRules") is None:
        return True  # a binding without resourceRules narrows nothing by resource
    return any(_rule_matches(rule, req) for rule in constraints.get("resourceRules") or [])


# --- params ---------------------------------------------------------------------------------------


def _params(policy: Body, binding: Body, req: _Request) -> list[Body | None]:
    """The objects ``params`` takes, one evaluation each: [None] without paramKind or paramRef; by
    ``name`` or ``selector``, in the ref's namespace, else the request's (namespaced kinds); none found
    is allowed unless parameterNotFoundAction is Deny."""
    kind, ref = policy.get("paramKind"), binding.get("paramRef")
    if not kind or not ref:
        return [None]
    emulator = req.admission.emulator
    group, _, version = str(kind.get("apiVersion") or "").rpartition("/")
    found = [r for r in emulator.resources if (r.group or "", r.version) == (group, version)]
    res = next((r for r in found if emulator.resources[r].kind == kind.get("kind")), None)
    if res is None:
        raise _Misconfigured(
            f"paramKind kind `&ParamKind{{APIVersion:{kind.get('apiVersion')},Kind:{kind.get('kind')},}}` not known"
        )
    namespace = None
    if emulator.resources[res].namespaced:
        namespace = ref.get("namespace") or req.namespace
        if not namespace:
            raise _Misconfigured(
                "cannot use namespaced paramRef in policy binding that matches cluster-scoped resources"
            )
    elif ref.get("namespace"):
        raise _Misconfigured("paramRef.namespace must not be provided for a cluster-scoped `paramKind`")
    candidates = [o for o in req.admission.items(res) if (o.get("metadata") or {}).get("namespace") == namespace]
    if ref.get("name"):
        params: list[Body | None] = [o for o in candidates if o["metadata"].get("name") == ref["name"]]
    elif ref.get("selector") is not None:
        params = [o for o in candidates if selects(ref["selector"], _labels(o) or {})]
    else:
        raise _Misconfigured("one of name or selector must be provided")
    if not params and ref.get("parameterNotFoundAction") == "Deny":
        raise _Misconfigured("no params found for policy binding with `Deny` parameterNotFoundAction")
    return params


# --- evaluation -----------------------------------------------------------------------------------


def _message(validation: Body, variables: _Variables) -> str:
    """messageExpression when it yields a usable string (one line, at most 5 KiB, not blank), else
    message, else ``failed expression: <expression>``."""
    if validation.get("messageExpression"):
        try:
            text = variables.evaluate(str(validation["messageExpression"]))
        except CelFailure:
            text = None  # logged by the API server, never shown
        if isinstance(text, str) and (text := text.strip()) and "\n" not in text:
            if len(text.encode()) <= _MAX_MESSAGE_BYTES:
                return text
    if str(validation.get("message") or "").strip():
        return str(validation["message"]).strip()
    return f"failed expression: {str(validation.get('expression')).strip()}"


def _validate(spec: Body, activation: Body, fail: bool) -> list[_Decision]:
    """matchConditions (any false: skip; errors and no false: failurePolicy), then every validation:
    not true denies with its message and reason; an error denies (Fail) or admits (Ignore)."""
    errors: list[str] = []
    for condition in spec.get("matchConditions") or []:
        try:
            if _Variables([], activation).evaluate(str(condition.get("expression"))) is False:
                return []
        except CelFailure as failure:
            errors.append(str(failure))
    if errors:
        return [_Decision(-1, errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")] if fail else []
    variables = _Variables(list(spec.get("variables") or []), activation)
    decisions = []
    for index, validation in enumerate(spec.get("validations") or []):
        try:
            verdict = variables.evaluate(str(validation.get("expression")))
        except CelFailure as failure:
            decisions += [_Decision(index, str(failure))] if fail else []
            continue
        if verdict is not True:
            decisions.append(_Decision(index, _message(validation, variables), validation.get("reason") or "Invalid"))
    return decisions


def _refusal(req: _Request, text: str, reason: str) -> ApiError:
    """admission.NewForbidden's message and details, with the decision's reason and its code."""
    qualified = f"{req.resource}.{req.group}" if req.group else req.resource
    name = req.admission.name
    details: Body = {"name": name, **({"group": req.group} if req.group else {}), "kind": req.resource}
    details["causes"] = [{"message": text}]
    return ApiError(_CODES.get(reason, 422), reason, f'{qualified} "{name}" is forbidden: {text}', details)


def validating_admission_policies(admission: Admission) -> None:
    """The ValidatingAdmissionPolicy admission plugin (``VAP_DOC``) for one create, update or delete."""
    if admission.res.group == GROUP and admission.res.plural in _EXEMPT:
        return
    bindings = sorted(admission.items(BINDINGS), key=lambda b: str(b["metadata"]["name"]))
    if not bindings:
        return
    req = _Request(admission)
    denied: list[_Decision] = []
    for policy in sorted(admission.items(POLICIES), key=lambda p: str(p["metadata"]["name"])):
        own = [b for b in bindings if (b.get("spec") or {}).get("policyName") == policy["metadata"]["name"]]
        if own:  # a policy without a binding does nothing
            denied += _apply(policy, own, req)
    if denied:
        raise _refusal(req, denied[0].message, denied[0].reason)


def _apply(policy: Body, bindings: list[Body], req: _Request) -> list[_Decision]:
    """One policy with its bindings: Warn and Audit done here, the denials returned. A policy or
    binding that cannot be applied denies under failurePolicy Fail, whatever the validationActions."""
    policy_name, spec = str(policy["metadata"]["name"]), policy.get("spec") or {}
    fail = spec.get("failurePolicy") != "Ignore"
    try:
        if spec.get("matchConstraints") is None:
            raise _Misconfigured("policy contained no match constraints, a required field")
        if not _matches(spec["matchConstraints"], req, binding=False):
            return []
    except _Misconfigured as problem:
        text = f"ValidatingAdmissionPolicy '{policy_name}' denied request: failed to configure policy: {problem}"
        return [_Decision(-1, text)] if fail else []
    denied: list[_Decision] = []
    for binding in bindings:
        binding_name, binding_spec = str(binding["metadata"]["name"]), binding.get("spec") or {}
        prefix = f"ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}'"
        try:
            if not _matches(binding_spec.get("matchResources") or {}, req, binding=True):
                continue
            params = _params(spec, binding_spec, req)
        except _Misconfigured as problem:
            denied += (
                [_Decision(-1, f"{prefix} denied request: failed to configure binding: {problem}")] if fail else []
            )
            continue
        actions = tuple(str(a) for a in binding_spec.get("validationActions") or [])
        for param in params:
            activation = {"object": req.admission.obj, "oldObject": req.admission.old, "request": req.cel_request,
                          "namespaceObject": req.namespace_object, "params": param}  # fmt: skip
            for decision in _validate(spec, activation, fail):
                if "Deny" in actions:
                    denied.append(
                        _Decision(decision.index, f"{prefix} denied request: {decision.message}", decision.reason)
                    )
                if "Warn" in actions:
                    req.admission.warn(f"Validation failed for {prefix}: {decision.message}")
                if "Audit" in actions:
                    where = (req.admission.operation, req.resource, req.admission.namespace, req.admission.name)
                    record = AuditRecord(policy_name, binding_name, decision.index, decision.message, actions, *where)
                    audit_records(req.admission.emulator).append(record)
    return denied
