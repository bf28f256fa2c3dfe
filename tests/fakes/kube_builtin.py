"""Built-in kinds decoded and checked against their OpenAPI schema, as the API server's decoder and
validation see them.

A real API server decodes a built-in object into its Go struct before anything else looks at it; the
emulator keeps JSON, so :func:`validate_builtin` replays what that decoding would say, from the official
schema of each kind (the ``kubernetes-validate`` package, ``SCHEMA_VERSION``; its "strict" variant, where
every struct has ``additionalProperties: false``):

- A value of the wrong JSON type (a string for ``replicas``) fails decoding: 400 BadRequest,
  ``Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal string into Go
  struct field DeploymentSpec.spec.replicas of type int32`` (encoding/json's ``UnmarshalTypeError``; the
  field path has no list indices). Quantities, ``IntOrString``, timestamps and ``[]byte`` (base64) decode
  with their own rules and messages (``quantities must match the regular expression ...``).
- Unknown fields (API concepts, "Field validation",
  https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation): ``fieldValidation=Strict``
  refuses them (400 ``strict decoding error: unknown field "spec.foo"``); ``Warn`` (a request's default)
  drops them with a Warning; ``Ignore`` drops them silently. Dropping mutates ``admission.obj``, as the Go
  struct would lose them. A ``null`` field is dropped too (it decodes to the zero value, omitted again).
- A field the schema lists as required (the API reference marks them, https://kubernetes.io/docs/reference/kubernetes-api/)
  that is missing is 422 Invalid, ``spec.selector: Required value``.
  The schema marks as required every Go field without ``omitempty``; the server's validation refuses
  most such zero values in a spec, but status is written by controllers and its validation does not
  require them (``ContainerStatus.imageID`` may be empty), so nothing under ``status`` is required here.
- From pkg/apis/core/validation (cheap, and not in the schema): container, volume and Service port names
  are RFC 1123 labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/names/#dns-label-names),
  container port names IANA_SVC_NAMEs (``IsValidPortName``; the ``name`` of ContainerPort in the API reference).

Not checked: the object's own ``metadata`` (the emulator checks names; the rest is out of scope),
``apiVersion``/``kind`` (the emulator checks them), every other rule of the server's validation code
(formats, ranges, cross-field rules). Custom resources are the emulator's (their CRD schema); kinds the
package has no schema for pass unchecked. Precision: a type error inside a patch is reported like one
in a create (the server words patch decoding errors differently); a timestamp that is not RFC 3339 gets
Go's message up to the layout, not its position detail.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.resources
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.kube_emulator import Admission, bad_request, invalid

Body = dict[str, Any]
Cause = tuple[str, str, str]
SCHEMA_VERSION = "1.33"  # the newest Kubernetes the package has schemas for, up to this one
FIELD_VALIDATION_DOC = "https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation"
_ROOT_SKIPPED = frozenset({"apiVersion", "kind", "metadata"})
_INT_BITS = {"int32": 31, "int64": 63}


class _DecodeError(Exception):
    """The decoder's first error: the request is 400 BadRequest with this text."""


@dataclass
class _Walk:
    """What one decode found besides a fatal error: field errors, unknown fields and nulls to drop."""

    causes: list[Cause] = field(default_factory=list)
    unknown: list[tuple[Body, str, str]] = field(default_factory=list)  # (container, key, path)
    nulls: list[tuple[Body, str]] = field(default_factory=list)


# check(value, walk, path, field, owner): ``path`` is the API field path (with indices), ``field`` the Go
# decoder's path (without), ``owner`` the Go struct holding the field (both only for error messages).
Check = Callable[[Any, _Walk, str, str, str], None]


def _json_kind(value: Any, *, integer: bool = False) -> str:
    """encoding/json's name of a JSON value in an UnmarshalTypeError; a number that does not fit an
    integer field is named with its text ("number 1.5")."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {json.dumps(value)}" if integer else "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type_error(value: Any, field_path: str, owner: str, go_type: str, *, integer: bool = False) -> _DecodeError:
    what = _json_kind(value, integer=integer)
    if owner or field_path:
        where = f"{owner}.{field_path}"
        return _DecodeError(f"json: cannot unmarshal {what} into Go struct field {where} of type {go_type}")
    return _DecodeError(f"json: cannot unmarshal {what} into Go value of type {go_type}")


# --- Leaves -----------------------------------------------------------------------------------------


def _any(value: Any, walk: _Walk, path: str, field_path: str, owner: str) -> None:
    """Free-form JSON (RawExtension, apiextensions JSON, structs without fields): anything decodes."""


def _scalar(kind: str, fmt: str | None) -> tuple[Check, str]:
    if kind == "integer":
        go_type = fmt if fmt in _INT_BITS else "int64"
        bits = _INT_BITS.get(go_type, 63)

        def check_int(value: Any, walk: _Walk, path: str, field_path: str, owner: str) -> None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _type_error(value, field_path, owner, go_type, integer=isinstance(value, float))
            if not -(2**bits) <= value < 2**bits:
                raise _type_error(value, field_path, owner, go_type, integer=True)

        return check_int, go_type
    if kind == "number":

        def check_number(value: Any, walk: _Walk, path: str, field_path: str, owner: str) -> None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _type_error(value, field_path, owner, "float64")

        return check_number, "float64"
    if kind == "boolean":

        def check_bool(value: Any, walk: _Walk, path: str, field_path: str, owner: str) -> None:
            if not isinstance(value, bool):
                raise _type_error(value, field_path, owner, "bool")

        return check_bool, "bool"
    if fmt == "byte":
        return _check_bytes, "[]uint8"

    def check_string(value: Any, walk: _Walk, path: str, field_path: str, owner: str) -> None:
        if not isinstance(value, str):
            raise _type_error(value, field_path, owner, "string")

    return check_string, "string"


def _check_bytes(value: Any, walk: _Walk, path: str, field_path: str, owner: str) -> None:
    """``[]byte`` is standard base64 in JSON; Go's decoder names the first bad input byte."""
    if not isinstance(value, str):
        raise _type_error(value, field_path, owner, "[]uint8")
    try:
        base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        alphabet = re.compile(r"[^A-Za-z0-9+/=\r\n]")
        bad = alphabet.search(value)
        position = bad.start() if bad else len(value.rstrip("=")) // 4 * 4
        raise _DecodeError(f"illegal base64 data at input byte {position}") from None


_QUANTITY_FORMAT = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_QUANTITY = re.compile(_QUANTITY_FORMAT)
_QUANTITY_SUFFIX = re.compile(r"(|[numkMGTPE]|[KMGTPE]i|[eE][-+]?[0-9]+)")


def _check_quantity(value: Any, walk: _Walk, path: str, field_path: str, owner: str) -> None:
    """resource.Quantity's UnmarshalJSON: a string or a number, parsed by ParseQuantity (its three errors)."""
    text = (value if isinstance(value, str) else json.dumps(value)).strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise _DecodeError(f"quantities must match the regular expression '{_QUANTITY_FORMAT}'")
    if match.group(1).lstrip("+-").count(".") > 1 or match.group(1).lstrip("+-") == ".":
        raise _DecodeError("unable to parse numeric part of quantity")
    if not _QUANTITY_SUFFIX.fullmatch(match.group(2)):
        raise _DecodeError("unable to parse quantity's suffix")


def _check_int_or_string(value: Any, walk: _Walk, path: str, field_path: str, owner: str) -> None:
    """intstr.IntOrString's UnmarshalJSON: a quoted value is a string, anything else goes to an int32."""
    if isinstance(value, str):
        return
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise _type_error(value, "", "", "int32", integer=isinstance(value, int | float))


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def _check_time(value: Any, walk: _Walk, path: str, field_path: str, owner: str) -> None:
    """metav1.Time / MicroTime: a JSON string parsed as RFC 3339 (time.Parse; its detail approximated)."""
    if not isinstance(value, str):
        raise _type_error(value, "", "", "string")
    if not _RFC3339.fullmatch(value):
        shown = json.dumps(value)
        raise _DecodeError(f'parsing time {shown} as "2006-01-02T15:04:05Z07:00": cannot parse {shown} as "2006"')


_SPECIAL: dict[str, tuple[Check, str]] = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": (_check_quantity, "resource.Quantity"),
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": (_check_int_or_string, "intstr.IntOrString"),
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": (_check_time, "v1.Time"),
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime": (_check_time, "v1.MicroTime"),
}


# --- Names the core validation checks (pkg/apis/core/validation, apimachinery util/validation) ---------

_DNS_LABEL_FORMAT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_LABEL = re.compile(_DNS_LABEL_FORMAT)
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL_FORMAT}(\.{_DNS_LABEL_FORMAT})*")
_DNS_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    f"end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    f"'{_DNS_LABEL_FORMAT}')"
)


def dns_label_errors(value: str) -> list[str]:
    """IsDNS1123Label: at most 63 characters, lower case alphanumerics and '-' (dots named apart)."""
    errors = ["must be no more than 63 characters"] if len(value) > 63 else []
    if not _DNS_LABEL.fullmatch(value):
        errors.append("must not contain dots" if _DNS_SUBDOMAIN.fullmatch(value) else _DNS_LABEL_MESSAGE)
    return errors


def port_name_errors(value: str) -> list[str]:
    """IsValidPortName (an IANA_SVC_NAME): 15 characters at most, [-a-z0-9] with a letter, no '--',
    no hyphen at either end."""
    errors = ["must be no more than 15 characters"] if len(value) > 15 else []
    if not re.fullmatch(r"[-a-z0-9]+", value):
        errors.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search(r"[a-z]", value):
        errors.append("must contain at least one letter (a-z)")
    if "--" in value:
        errors.append("must not contain consecutive hyphens")
    if value[:1] == "-" or value[-1:] == "-":
        errors.append("must not begin or end with a hyphen")
    return errors


def _name_rule(rule: Callable[[str], list[str]], *, required: bool) -> Callable[[Body, _Walk, str], None]:
    def check(value: Body, walk: _Walk, path: str) -> None:
        name = value.get("name")
        where = f"{path}.name"
        if not isinstance(name, str) or not name:
            if required:
                walk.causes.append((where, "FieldValueRequired", "Required value"))
            return
        for message in rule(name):
            walk.causes.append((where, "FieldValueInvalid", f"Invalid value: {json.dumps(name)}: {message}"))

    return check


# Per definition, a check of the decoded struct (validateContainers, validateVolumes,
# validateContainerPorts, validateServicePort).
_STRUCT_RULES: dict[str, Callable[[Body, _Walk, str], None]] = {
    "io.k8s.api.core.v1.Container": _name_rule(dns_label_errors, required=True),
    "io.k8s.api.core.v1.EphemeralContainer": _name_rule(dns_label_errors, required=True),
    "io.k8s.api.core.v1.Volume": _name_rule(dns_label_errors, required=True),
    "io.k8s.api.core.v1.ContainerPort": _name_rule(port_name_errors, required=False),
    "io.k8s.api.core.v1.ServicePort": _name_rule(dns_label_errors, required=False),
}


# --- Compiling the schema -------------------------------------------------------------------------


def _schema_directory() -> Any:
    """The package's strict schemas for the newest Kubernetes version up to ``SCHEMA_VERSION``."""
    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"

    def minor(name: str) -> tuple[int, int]:
        major, minor_, *_ = name[1:].split("-")[0].split(".")
        return int(major), int(minor_)

    wanted = minor("v" + SCHEMA_VERSION)
    names = [p.name for p in root.iterdir() if p.name.startswith("v") and p.name.endswith("-local-strict")]
    return root / max((n for n in names if minor(n) <= wanted), key=minor)


@functools.cache
def _definitions() -> dict[str, Body]:
    found: dict[str, Body] = json.loads((_schema_directory() / "_definitions.json").read_text("utf-8"))["$defs"]
    return found


@functools.cache
def _kinds() -> dict[tuple[str, str, str], str]:
    """(group, version, kind) of each top-level kind -> its definition."""
    return {
        (gvk["group"], gvk["version"], gvk["kind"]): name
        for name, schema in _definitions().items()
        for gvk in schema.get("x-kubernetes-group-version-kind") or ()
    }


class _Compiler:
    """Turns schema definitions into checks, once per (definition, whether fields may be required)."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, bool], tuple[Check, str]] = {}

    def ref(self, name: str, required: bool) -> tuple[Check, str]:
        if name in _SPECIAL:
            return _SPECIAL[name]
        key = (name, required)
        if key not in self._done:
            slot: list[Check] = []  # recursive definitions (JSONSchemaProps) call through the slot

            def late(value: Any, walk: _Walk, path: str, field_path: str, owner: str) -> None:
                slot[0](value, walk, path, field_path, owner)

            go_type = ".".join(name.split(".")[-2:])
            self._done[key] = (late, go_type)
            check, go_type = self.schema(_definitions()[name], required, name)
            slot.append(check)
            self._done[key] = (check, go_type)
        return self._done[key]

    def schema(self, schema: Body, required: bool, name: str = "") -> tuple[Check, str]:
        if "$ref" in schema:
            return self.ref(str(schema["$ref"]).rsplit("/", 1)[-1], required)
        kinds = schema.get("type")
        kind = next((k for k in kinds if k != "null"), None) if isinstance(kinds, list) else kinds
        if kind == "array":
            return self._array(schema, required)
        if kind == "object" and ("properties" in schema or isinstance(schema.get("additionalProperties"), dict)):
            return self._object(schema, required, name)
        if kind in ("string", "integer", "number", "boolean"):
            return _scalar(kind, schema.get("format"))
        return _any, ".".join(name.split(".")[-2:]) or "interface {}"

    def _array(self, schema: Body, required: bool) -> tuple[Check, str]:
        item, item_type = self.schema(schema.get("items") or {}, required)
        go_type = f"[]{item_type}"

        def check_array(value: Any, walk: _Walk, path: str, field_path: str, owner: str) -> None:
            if not isinstance(value, list):
                raise _type_error(value, field_path, owner, go_type)
            for i, element in enumerate(value):
                if element is not None:
                    item(element, walk, f"{path}[{i}]", field_path, owner)

        return check_array, go_type

    def _object(self, schema: Body, required: bool, name: str) -> tuple[Check, str]:
        additional = schema.get("additionalProperties")
        if "properties" not in schema:  # a map
            entry, entry_type = self.schema(additional if isinstance(additional, dict) else {}, required)
            go_type = f"map[string]{entry_type}"

            def check_map(value: Any, walk: _Walk, path: str, field_path: str, owner: str) -> None:
                if not isinstance(value, dict):
                    raise _type_error(value, field_path, owner, go_type)
                for key, item in value.items():
                    if item is not None:
                        entry(item, walk, f"{path}[{key}]", field_path, owner)

            return check_map, go_type
        return self._struct(schema, required, name)

    def _struct(self, schema: Body, required: bool, name: str) -> tuple[Check, str]:
        struct = name.rsplit(".", 1)[-1]
        go_type = ".".join(name.split(".")[-2:])
        root = "x-kubernetes-group-version-kind" in schema
        fields: dict[str, Check] = {}
        for key, sub in schema["properties"].items():
            if root and key in _ROOT_SKIPPED:
                fields[key] = _any
            else:
                fields[key] = self.schema(sub, required and not (root and key == "status"))[0]
        needed = tuple(k for k in schema.get("required") or () if k not in _ROOT_SKIPPED) if required else ()
        closed = schema.get("additionalProperties") is False
        rule = _STRUCT_RULES.get(name)

        def check_struct(value: Any, walk: _Walk, path: str, field_path: str, owner: str) -> None:
            if not isinstance(value, dict):
                raise _type_error(value, field_path, owner, go_type)
            for key in needed:  # validation looks at a struct's own fields before those of its parts
                if value.get(key) is None:
                    walk.causes.append((f"{path}.{key}" if path else key, "FieldValueRequired", "Required value"))
            if rule is not None:
                rule(value, walk, path)
            for key, item in value.items():
                where = f"{path}.{key}" if path else key
                if item is None:
                    walk.nulls.append((value, key))
                elif key in fields:
                    fields[key](item, walk, where, f"{field_path}.{key}" if field_path else key, struct)
                elif closed:
                    walk.unknown.append((value, key, where))

        return check_struct, go_type


_COMPILER = _Compiler()


@functools.cache
def compiled(group: str, version: str, kind: str) -> Check | None:
    """The check of one built-in kind, compiled once; None when the package has no schema for it."""
    name = _kinds().get((group, version, kind))
    return None if name is None else _COMPILER.ref(name, True)[0]


def validate_builtin(admission: Admission) -> None:
    """Decode-and-validate a built-in object on CREATE and UPDATE as the module docstring says: 400 for
    what the decoder refuses (a type error; unknown fields under ``Strict``), unknown fields and nulls
    dropped (with a Warning under ``Warn``), then 422 Invalid for required fields and names."""
    obj = admission.obj
    if admission.operation == "DELETE" or obj is None or admission.custom:
        return
    res, kind = admission.res, admission.kind
    check = compiled(str(res.group or ""), str(res.version), kind)
    if check is None:
        return
    walk = _Walk()
    cannot = f'{kind} in version "{res.version}" cannot be handled as a {kind}'
    try:
        check(obj, walk, "", "", "")
    except _DecodeError as exc:
        raise bad_request(f"{cannot}: {exc}") from None
    if walk.unknown and admission.field_validation == "Strict":
        unknown = ", ".join(f'unknown field "{path}"' for _, _, path in walk.unknown)
        raise bad_request(f"{cannot}: strict decoding error: {unknown}")
    for container, key, path in walk.unknown:
        container.pop(key, None)
        if admission.field_validation == "Warn":
            admission.warn(f'unknown field "{path}"')
    for container, key in walk.nulls:
        container.pop(key, None)
    if walk.causes:  # the server reports a repeated error once (ErrorList.ToAggregate)
        raise invalid(res, kind, admission.name, list(dict.fromkeys(walk.causes)))
