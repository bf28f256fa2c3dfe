"""CRD validation rules (CEL, ``x-kubernetes-validations``) and string ``format`` for custom resources.

What the API server checks on each write of a custom resource beyond the OpenAPI keywords the emulator
already applies (``CRD_DOC``, "Validation rules" and "Format"; the rules' source of truth is
kubernetes/kubernetes staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel/validation.go
and kube-openapi pkg/validation/strfmt, whose messages are quoted here):

- every ``x-kubernetes-validations`` rule runs with ``self`` bound to the value at its node (the resource
  root sees only ``metadata.name``/``generateName``); ``items`` and ``additionalProperties`` recurse per
  element; null values are not validated. A transition rule (one naming ``oldSelf``) runs on UPDATE only
  where the old value correlates (same key of an object, same keys of an ``x-kubernetes-list-type: map``
  item), unless ``optionalOldSelf`` makes ``oldSelf`` an optional. ``message`` (default ``failed rule:
  <rule>``), ``messageExpression`` (falling back to the message when it fails), ``reason`` and
  ``fieldPath`` shape the cause, with the server's value placeholder (the schema type, ``"object"``).
- validation ratcheting (``CRD_DOC`` "Validation ratcheting", GA in 1.33): on UPDATE an error of a
  non-transition rule or a format on a value equal to its old value becomes a Warning (formats: dropped).
- ``format`` of strings, whether a value is valid being ``kube_formats.format_valid`` (strfmt's checks,
  as Go implements them; unknown formats ignored):
  ``spec.x: Invalid value: "abc": spec.x in body must be of type date-time: "abc"`` (FieldValueTypeInvalid).
  That error blocks the rules, as the server's ``hasBlockingErr`` does. A /status write checks formats
  under ``status`` only and the rules on the whole object, like the status strategy.

The engine is the ``cel`` module (Rust ``cel`` crate). It does not type-check, so a rule the server would
refuse when the CRD is created may run here; and it lacks Kubernetes' CEL libraries (lists, regex ``find``,
``url``, ``quantity``, ``ip``/``cidr``, sets, ``format``, semver) and the ``.?`` optional syntax. The
cel-go strings extension (``lowerAscii``, ``split``, ...) comes from ``cel.stdlib``. A rule naming a
function the engine lacks is refused at write time ("rule could not be evaluated: ...") and listed by
``check_crd_rules``, which the tests run on each CRD they load; ``size()`` of a non-ASCII string (the crate
counts bytes) is refused the same way. Not emulated: cost limits, ``allOf``/``anyOf`` subschemas.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import cel
from cel import stdlib

from tests.fakes.kube_emulator import CRD_DOC, Admission, invalid
from tests.fakes.kube_formats import duration_ns, format_valid

RULES_DOC = CRD_DOC + "#validation-rules"
RATCHETING_DOC = CRD_DOC + "#validation-ratcheting"
Cause = tuple[str, str, str]  # field, reason, message (as ``invalid()`` takes them)

# What the crate evaluates itself (operators aside), and cel-go's strings extension from cel.stdlib.
_NATIVE = frozenset(
    "size matches contains startsWith endsWith int uint double string bytes dyn type duration timestamp getFullYear"
    " getMonth getDate getDayOfMonth getDayOfWeek getDayOfYear getHours getMinutes getSeconds getMilliseconds"
    " hasValue value orValue of none".split()
)
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "charAt": stdlib.char_at,
    "indexOf": stdlib.index_of,
    "lastIndexOf": stdlib.last_index_of,
    "lowerAscii": stdlib.lower_ascii,
    "upperAscii": stdlib.upper_ascii,
    "replace": stdlib.replace,
    "split": stdlib.split,
    "substring": stdlib.substring,
    "trim": stdlib.trim,
    "join": stdlib.join,
}
_KEYWORDS = frozenset(
    "true false null in as break const continue else for function if import let loop package namespace return var"
    " void while".split()
)
_BLOCKED = (
    'Invalid value: "null": some validation rules were not checked because the object was invalid; correct the'
    " existing errors to complete validation"
)
_ABSENT: Any = object()  # no old value correlates
_PRESERVE, _EMBEDDED = "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource"
_SIZE_IN_BYTES = "rule could not be evaluated: the CEL engine counts size() of non-ASCII text in bytes"
_CONCERNS: dict[int, tuple[Mapping[str, Any], bool, bool]] = {}  # by id; holding the node keeps the id its own


@dataclass(frozen=True)
class _Compiled:
    program: cel.Program | None
    problem: str | None = None
    old_self: bool = False  # a transition rule
    sizes: bool = False  # calls size(), which the crate counts in UTF-8 bytes
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict)  # of ``_FUNCTIONS``, those it calls


@functools.cache
def _compile(expression: str) -> _Compiled:
    """Each expression is compiled once: the rules are few, the writes many."""
    try:
        program = cel.compile(expression)
    except Exception as exc:
        return _Compiled(None, f"rule compile error: compilation failed: {exc}")
    functions = set(program.functions())
    lacking = sorted(f for f in functions - _NATIVE - _FUNCTIONS.keys() if f[0] not in "_@!-")
    if lacking:
        return _Compiled(None, f"rule could not be evaluated: the emulator's CEL engine lacks {', '.join(lacking)}")
    called = {name: _FUNCTIONS[name] for name in functions & _FUNCTIONS.keys()}
    return _Compiled(program, None, "oldSelf" in program.variables(), "size" in functions, called)


def _rule_sites(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for rule in schema.get("x-kubernetes-validations") or []:
        yield path, rule
    for name, child in (schema.get("properties") or {}).items():
        yield from _rule_sites(child, f"{path}.properties[{name}]")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), Mapping):
            yield from _rule_sites(schema[key], f"{path}.{key}")


def check_crd_rules(crd: Mapping[str, Any]) -> list[str]:
    """The rules and messageExpressions of a CRD the emulator cannot evaluate, each with where it is: empty
    when every rule is enforced. A test loading a CRD asserts it, so a gap fails loudly, not silently."""
    problems = []
    for version in crd["spec"]["versions"]:
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
        for path, rule in _rule_sites(schema, f"{version['name']}: openAPIV3Schema"):
            for key in ("rule", "messageExpression"):
                problem = _compile(str(rule[key])).problem if rule.get(key) else None
                if problem:
                    problems.append(f"{path}.x-kubernetes-validations {key} {rule[key]!r}: {problem}")
    return problems


@functools.cache
def _escape(name: str) -> str | None:
    """A property's name in CEL (``RULES_DOC``, "Escaping"); None when no name reaches it."""
    if not re.fullmatch(r"[a-zA-Z_.\-/][a-zA-Z0-9_.\-/]*", name):
        return None
    if name in _KEYWORDS:
        return f"__{name}__"
    for text, escaped in (("__", "__underscores__"), (".", "__dot__"), ("-", "__dash__"), ("/", "__slash__")):
        name = name.replace(text, escaped)
    return name


def _typed(value: str, form: str) -> Any:
    """A formatted string as CEL types it (``RULES_DOC``, type table); left a string if it does not parse."""
    try:
        if form == "byte":
            return base64.b64decode(value, validate=True)
        if form == "duration":
            nanoseconds = duration_ns(value)
            return value if nanoseconds is None else datetime.timedelta(microseconds=nanoseconds / 1000)
        parsed = datetime.datetime.fromisoformat(value.upper())
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
    except (ValueError, binascii.Error, OverflowError):
        return value


def _to_cel(value: Any, schema: Mapping[str, Any], resource: bool = False) -> Any:
    """The value a rule sees: declared properties under their escaped names, the formats typed, numbers as
    doubles; of a resource's metadata (the root, an embedded resource) only name and generateName."""
    if isinstance(value, dict):
        properties, extra = schema.get("properties"), schema.get("additionalProperties")
        if properties is None and not resource:
            if isinstance(extra, Mapping):
                return {k: _to_cel(v, extra, bool(extra.get(_EMBEDDED))) for k, v in value.items()}
            return value
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub, name = (properties or {}).get(key), _escape(key)
            if resource and key == "metadata" and isinstance(item, dict):
                out[key] = {k: v for k, v in item.items() if k in ("name", "generateName")}
            elif sub is not None and name is not None:
                out[name] = _to_cel(item, sub, bool(sub.get(_EMBEDDED)))
            elif name is not None and ((resource and key in ("apiVersion", "kind")) or schema.get(_PRESERVE)):
                out[name] = item
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        items = schema["items"]
        return [_to_cel(item, items, bool(items.get(_EMBEDDED))) for item in value]
    form = str(schema.get("format") or "").replace("-", "")
    if isinstance(value, str) and form in ("date", "datetime", "duration", "byte"):
        return _typed(value, form)
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _same(a: Any, b: Any) -> bool:
    """reflect.DeepEqual on JSON values: types count (1 is not 1.0, nor True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _non_ascii(value: Any) -> bool:
    if isinstance(value, str):
        return not value.isascii()
    if isinstance(value, dict):
        return any(_non_ascii(k) or _non_ascii(v) for k, v in value.items())
    return isinstance(value, list) and any(_non_ascii(item) for item in value)


def _run(compiled: _Compiled, context: cel.Context) -> tuple[Any, str | None]:
    """The verdict, or the error as the server words it (``no such key: x``); an error of the engine's own
    is said to be one."""
    assert compiled.program is not None
    try:
        return compiled.program.execute(context), None
    except KeyError as exc:
        return None, f"no such key: {exc.args[0] if exc.args else ''}"
    except ZeroDivisionError as exc:
        return None, "modulus by zero" if "modul" in str(exc) else "division by zero"
    except OverflowError:
        return None, "integer overflow"
    except Exception as exc:
        return None, f"rule could not be evaluated: {type(exc).__name__}: {exc}"


def _message(rule: Mapping[str, Any], context: cel.Context) -> str | None:
    """messageExpression's text, or None when it fails (the server then logs it and uses the message)."""
    compiled = _compile(str(rule.get("messageExpression") or "")) if rule.get("messageExpression") else None
    if compiled is None or compiled.program is None:
        return None
    result, error = _run(compiled, context)
    text = result.strip() if isinstance(result, str) and error is None else ""
    return text if text and "\n" not in text and len(text.encode()) <= 5 * 1024 else None


def _field_path(schema: Mapping[str, Any], path: Any) -> str:
    """A rule's fieldPath as the server normalizes it: ``.a['b.c']`` is ``a.b.c``; a map key is ``[key]``."""
    out = ""
    for name, quoted in re.findall(r"\.([^.\[\]']+)|\['((?:[^'\\]|\\.)*)'\]", str(path or "")):
        key = name or re.sub(r"\\(.)", r"\1", quoted)
        if schema.get("properties") is None and isinstance(schema.get("additionalProperties"), Mapping):
            out, schema = f"{out}[{key}]", schema["additionalProperties"]
        else:
            out, schema = (f"{out}.{key}" if out else key), (schema.get("properties") or {}).get(key) or {}
    return out


def _quote(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass
class _Check:
    """One write's walk, in the server's order: formats (with the schema), then the rules."""

    update: bool
    formats: list[Cause] = field(default_factory=list)
    rules: list[Cause] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def ratchets(self, anchor: tuple[Any, Any] | None) -> bool:
        """``RATCHETING_DOC``: the nearest value correlated with an old one (itself, else an ancestor) is unchanged."""
        return self.update and anchor is not None and _same(*anchor)

    def walk(
        self, value: Any, schema: Mapping[str, Any], path: str, fpath: str, old: Any, rold: Any,
        anchor: tuple[Any, Any] | None, resource: bool, formats: bool,
    ) -> None:  # fmt: skip
        """``path`` as field errors name it (``a.b[0][key]``), ``fpath`` as kube-openapi does (``a.b[0].key``);
        ``old`` is what oldSelf correlates to (None: nothing), ``rold`` what ratcheting does (``_ABSENT``)."""
        if value is None or not any(_concerns(schema)):
            return
        anchor = (value, rold) if rold is not _ABSENT else anchor
        form = schema.get("format")
        if formats and isinstance(value, str) and form and schema.get("type") in (None, "string"):
            if format_valid(str(form), value) is False and not self.ratchets(anchor):
                shown = _quote(value)
                message = f"Invalid value: {shown}: {fpath} in body must be of type {form}: {shown}"
                self.formats.append((fpath, "FieldValueTypeInvalid", message))
        if schema.get("x-kubernetes-validations"):
            self.evaluate(value, schema, path, old, anchor, resource)
        if isinstance(value, dict):
            properties, extra = schema.get("properties") or {}, schema.get("additionalProperties")
            for key, item in value.items():
                sub = properties.get(key) if properties else extra if isinstance(extra, Mapping) else None
                if sub is None or (resource and key == "metadata"):
                    continue
                child = (f"{path}.{key}" if path else key) if properties else f"{path}[{key}]"
                self.walk(
                    item, sub, child, f"{fpath}.{key}" if fpath else key,
                    old.get(key) if isinstance(old, dict) else None,
                    rold.get(key, _ABSENT) if isinstance(rold, dict) else _ABSENT,
                    anchor, bool(sub.get(_EMBEDDED)), formats or (not path and key == "status"),
                )  # fmt: skip
        elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
            items, kind = schema["items"], schema.get("x-kubernetes-list-type")
            keys = schema.get("x-kubernetes-list-map-keys") or []
            for i, item in enumerate(value):
                child_old = _keyed(old, item, keys) if kind == "map" else None
                if kind == "map":
                    child_rold = _keyed(rold, item, keys)
                elif kind in ("set", "atomic") or not isinstance(rold, list) or i >= len(rold):
                    child_rold = None
                else:
                    child_rold = rold[i]
                child_rold = _ABSENT if child_rold is None else child_rold
                here, there = f"{path}[{i}]", f"{fpath}[{i}]"
                self.walk(item, items, here, there, child_old, child_rold, anchor, bool(items.get(_EMBEDDED)), formats)

    def evaluate(
        self, value: Any, schema: Mapping[str, Any], path: str, old: Any, anchor: tuple[Any, Any] | None,
        resource: bool,
    ) -> None:  # fmt: skip
        """The node's rules, as ``Validator.validateExpressions`` runs them (``RULES_DOC``)."""
        kind, here = _quote(str(schema.get("type") or "")), path or "<nil>"
        rules: list[Mapping[str, Any]] = schema["x-kubernetes-validations"]
        compiled_rules = [_compile(str(rule.get("rule") or "").strip()) for rule in rules]
        functions: dict[str, Callable[..., Any]] = {}
        for rule, compiled in zip(rules, compiled_rules, strict=True):
            expression = _compile(str(rule["messageExpression"])) if rule.get("messageExpression") else compiled
            functions.update({**compiled.functions, **expression.functions})
        # Converting values to CEL is what costs: once per node, for all its rules. oldSelf is bound when a
        # rule of the node names it (``validationActivationWithOldSelf``).
        variables: dict[str, Any] = {}
        contexts: dict[bool, cel.Context] = {}

        def context(optional: bool) -> cel.Context:
            if optional not in contexts:
                if not variables:
                    variables["self"] = _to_cel(value, schema, resource)
                    if old is not None and any(each.old_self for each in compiled_rules):
                        variables["oldSelf"] = _to_cel(old, schema, resource)
                bound = dict(variables)
                if optional:  # ``optionalOldSelf``: oldSelf is an optional, none without an old value
                    none = cel.OptionalValue.none()
                    bound["oldSelf"] = cel.OptionalValue.of(variables["oldSelf"]) if "oldSelf" in variables else none
                contexts[optional] = cel.Context(bound, functions)
            return contexts[optional]

        for rule, compiled in zip(rules, compiled_rules, strict=True):
            text = str(rule.get("rule") or "").strip()
            shown = str(rule.get("message") or "").strip() or text
            optional = bool(rule.get("optionalOldSelf"))
            if compiled.program is None:
                self.rules.append((here, "FieldValueInvalid", f"Invalid value: {kind}: {compiled.problem}"))
                continue
            if compiled.old_self and old is None and not optional:
                continue  # a transition rule needs an old value
            verdict, error = (None, _SIZE_IN_BYTES) if compiled.sizes and _non_ascii([value, old]) else (None, None)
            if error is None:
                verdict, error = _run(compiled, context(optional))
            if error is not None or not isinstance(verdict, bool):
                failure = error or f"rule could not be evaluated: it gave {verdict!r}, not a bool"
                message = f"Invalid value: {kind}: {failure} evaluating rule: {shown}"
                self.rules.append((here, "FieldValueInvalid", message))
                continue
            if verdict:
                continue
            subpath = _field_path(schema, rule.get("fieldPath"))
            where = (f"{path}.{subpath}" if path else subpath) if subpath else here
            detail = _message(rule, context(False)) or str(rule.get("message") or "").strip() or f"failed rule: {text}"
            reason = str(rule.get("reason") or "FieldValueInvalid")
            bodies = {
                "FieldValueForbidden": f"Forbidden: {detail}",
                "FieldValueRequired": f"Required value: {detail}",
                "FieldValueDuplicate": f"Duplicate value: {kind}",
            }
            reason = reason if reason in bodies else "FieldValueInvalid"
            body = bodies.get(reason, f"Invalid value: {kind}: {detail}")
            if not compiled.old_self and self.ratchets(anchor):
                self.warnings.append(f"{where}: {body}")
            else:
                self.rules.append((where, reason, body))


def _keyed(old: Any, item: Any, keys: list[str]) -> Any:
    """The old item of an ``x-kubernetes-list-type: map`` list with the same map keys (None: none)."""
    if not isinstance(old, list) or not isinstance(item, dict):
        return None
    wanted = [item.get(key) for key in keys]
    return next((o for o in old if isinstance(o, dict) and [o.get(key) for key in keys] == wanted), None)


def _concerns(schema: Mapping[str, Any]) -> tuple[bool, bool]:
    """Whether rules, and formats, are at or below a schema node: the walk skips subtrees with neither."""
    cached = _CONCERNS.get(id(schema))
    if cached is None or cached[0] is not schema:
        rules, formats = bool(schema.get("x-kubernetes-validations")), bool(schema.get("format"))
        below = [schema.get(key) for key in ("items", "additionalProperties")]
        for child in [*(schema.get("properties") or {}).values(), *below]:
            if isinstance(child, Mapping):
                child_rules, child_formats = _concerns(child)
                rules, formats = rules or child_rules, formats or child_formats
        cached = _CONCERNS[id(schema)] = (schema, rules, formats)
    return cached[1], cached[2]


def validate_custom_resource(admission: Admission) -> None:
    """A validator (``PoliteKubernetesEmulator.validators``) enforcing a custom resource's CEL rules and
    string formats on CREATE and UPDATE (``RULES_DOC``, ``kube_formats.FORMAT_DOC``, ``RATCHETING_DOC``):
    422 Invalid with one cause per failure; errors the ratcheting forgives become Warning headers."""
    schema = admission.schema
    if admission.operation == "DELETE" or not admission.custom or admission.obj is None or not schema:
        return
    update = admission.operation == "UPDATE" and admission.old is not None
    old = admission.old if update else None
    check = _Check(update)
    status_only = admission.subresource == "status"
    check.walk(admission.obj, schema, "", "", old, old if update else _ABSENT, None, True, not status_only)
    if check.formats:
        # Only a version with rules says they were skipped (``hasBlockingErr`` runs where a CEL validator is).
        blocked = [("<nil>", "FieldValueInvalid", _BLOCKED)] if _concerns(schema)[0] else []
        raise invalid(admission.res, admission.kind, admission.name, check.formats + blocked)
    for warning in check.warnings:
        admission.warn(warning)
    if check.rules:
        raise invalid(admission.res, admission.kind, admission.name, check.rules)
