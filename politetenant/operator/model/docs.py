"""The README's field reference of PoliteTenant, generated from the model.

It reads the CRD schema built from the model (``crd.openapi_schema``), so types, defaults, bounds,
patterns and CEL rules in the table are exactly what the API server enforces. The README holds the
output between ``<!-- field-reference:start -->`` and ``<!-- field-reference:end -->``; a test fails
when they differ. ``python -m politetenant.operator.model.docs`` prints the table;
``python -m politetenant.operator.model.docs --update README.md`` rewrites that section in place.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from politetenant.crypto.vault import MOUNT_PATTERN
from politetenant.operator.model import patterns, spec_types, tenant_status
from politetenant.operator.model.crd import openapi_schema

START_MARKER = "<!-- field-reference:start -->"
END_MARKER = "<!-- field-reference:end -->"
REGENERATE = "python -m politetenant.operator.model.docs --update README.md"
SOURCE = "politetenant/operator/model/tenant.py"

# What each pattern of the model means, for people who do not read regular expressions.
PATTERN_WORDS = {
    patterns.QUANTITY_PATTERN: "A Kubernetes quantity: an integer or a string such as `250m`, `1.5`, `512Mi`, `10Gi`.",
    patterns.DNS_LABEL_PATTERN: "A DNS label: lower-case letters, digits and `-`, starting and ending with a letter "
    "or digit.",
    patterns.DNS_SUBDOMAIN_PATTERN: "A Kubernetes object name: DNS labels joined by `.`.",
    patterns.HOSTNAME_PATTERN: "A lower-case DNS host name with at least one dot, e.g. `track.example.com`; "
    "no wildcards.",
    patterns.SECRET_KEY_PATTERN: "Letters, digits, `-`, `_` and `.`.",
    patterns.HTTP_URL_PATTERN: "An `http://` or `https://` URL.",
    patterns.CRON_PATTERN: "Five numeric cron fields (minute, hour, day of month, month, day of week), each `*`, a "
    "value, a range `a-b`, a step `/n` or a list `a,b`, within the fields' ranges; or one of `@hourly`, `@daily`, "
    "`@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`.",
    tenant_status.CONDITION_TYPE_PATTERN: "A CamelCase word.",
    tenant_status.CONDITION_REASON_PATTERN: "A CamelCase word (letters, digits, `_`, `,` and `:` allowed).",
    patterns.CIDR_PATTERN: "An IPv4 or IPv6 network in CIDR notation, e.g. `203.0.113.0/24` or `2001:db8::/32`.",
    spec_types.SEGMENT_PATTERN: "An attribute name: a lower-case letter, then lower-case letters, digits or `_`.",
    spec_types.LANGUAGE_TAG_PATTERN: "A language tag such as `en`, `de` or `pt-BR`.",
    spec_types.NOT_BLANK_PATTERN: "Not blank: at least one character that is not white space.",
    MOUNT_PATTERN: "A Vault mount path: letters, digits, `-` and `_` in segments joined by single `/`, e.g. "
    "`transit` or `k8s/cluster-eu`.",
}


def _code(text: str) -> str:
    return f"`{text}`"


def _type_name(schema: dict[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "quantity" if schema.get("pattern") == patterns.QUANTITY_PATTERN else "integer or string"
    if schema.get("type") == "array":
        return f"list of {_type_name(schema['items'])}"
    if isinstance(schema.get("additionalProperties"), dict):
        return f"map of string to {_type_name(schema['additionalProperties'])}"
    return str(schema.get("type", "any"))


def _flow(value: Any) -> str:
    """A default as a person would write it in the tenant YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return str(value)


def _default(schema: dict[str, Any], required: bool) -> str:
    if required:
        return "required"
    default = schema.get("default")
    if default is None or default == {}:  # an empty object: its fields' own defaults apply
        return "—"
    return _code(_flow(default))


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "?", "!")) else f"{text}."


def _range(low: Any, high: Any, unit: str = "") -> str | None:
    suffix = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return f"From {low} to {high}{suffix}."
    if low is not None:
        return f"At least {low}{suffix}."
    if high is not None:
        return f"At most {high}{suffix}."
    return None


def _constraints(schema: dict[str, Any]) -> list[str]:
    """Every check the API server makes on this field, in words."""
    said: list[str | None] = []
    if "enum" in schema:
        said.append("One of " + ", ".join(_code(str(v)) for v in schema["enum"]) + ".")
    if schema.get("type") == "array" and "enum" in schema["items"]:
        said.append("Each one of " + ", ".join(_code(str(v)) for v in schema["items"]["enum"]) + ".")
    said.append(_range(schema.get("minimum"), schema.get("maximum")))
    min_length = schema.get("minLength")
    said.append(_range(None if min_length in (None, 0) else min_length, schema.get("maxLength"), "characters"))
    items = _range(schema.get("minItems"), schema.get("maxItems"), "items")
    if schema.get("x-kubernetes-list-type") == "set":
        items = (items or "").removesuffix(".") + (", no repeats." if items else "No repeats.")
    said.append(items)
    if "pattern" in schema:
        said.append(PATTERN_WORDS.get(schema["pattern"], f"Matches {_code(schema['pattern'])}."))
    if "format" in schema:
        said.append({"date-time": "An RFC 3339 time."}.get(schema["format"], f"Format {schema['format']}."))
    items = schema.get("items") if schema.get("type") == "array" else None
    if isinstance(items, dict) and "enum" not in items and (of_items := _constraints(items)):
        said.append("Each item: " + " ".join(of_items))
    values = schema.get("additionalProperties")
    if isinstance(values, dict) and (of_values := _constraints(values)):
        said.append("Each value: " + " ".join(of_values))
    return [s for s in said if s]


def _rules_by_field(schema: dict[str, Any]) -> dict[str | None, list[str]]:
    """A node's CEL rule messages keyed by the field they point at (None: the node itself)."""
    rules: dict[str | None, list[str]] = {}
    for rule in schema.get("x-kubernetes-validations", []):
        field = rule.get("fieldPath", "").lstrip(".") or None
        rules.setdefault(field, []).append(f"Rule: {_sentence(rule['message'])}")
    return rules


def _rows(
    schema: dict[str, Any], path: str, required: bool, rules: Sequence[str] = ()
) -> Iterator[tuple[str, str, str, str]]:
    own_rules = _rules_by_field(schema)
    said = [_sentence(schema.get("description", "")), *_constraints(schema), *own_rules.pop(None, []), *rules]
    yield path, _type_name(schema), _default(schema, required), " ".join(said).strip()
    children = schema.get("properties") or schema.get("items", {}).get("properties", {})
    item_marker = "[]" if schema.get("type") == "array" else ""
    needed = set(schema.get("required") or schema.get("items", {}).get("required", []))
    for name, child in children.items():
        yield from _rows(child, f"{path}{item_marker}.{name}", name in needed, own_rules.get(name, []))


def _top_rows(schema: dict[str, Any], prefix: str) -> Iterator[tuple[str, str, str, str]]:
    """Rows of spec's or status's fields; their own rules must point at a field to be listed."""
    rules = _rules_by_field(schema)
    if None in rules:
        raise ValueError(f"{prefix} has a CEL rule without fieldPath; the field reference has no row for it")
    for name, child in schema["properties"].items():
        yield from _rows(child, f"{prefix}.{name}", name in schema.get("required", []), rules.get(name, []))


def _cell(text: str) -> str:
    """Table-cell text: pipes escaped, and ``<``/``>`` outside code spans too (``polite-<name>`` would
    otherwise be read as an HTML tag and vanish)."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def field_reference_markdown() -> str:
    """The Markdown table of every PoliteTenant field: path, type, default, description and checks."""
    root = openapi_schema()["properties"]
    lines = [
        f"<!-- Generated from {SOURCE}; edit the descriptions there, then run {REGENERATE} -->",
        "",
        "| Field | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    rows = [
        *_rows(root["metadata"]["properties"]["name"], "metadata.name", True),
        *_top_rows(root["spec"], "spec"),
        *_top_rows(root["status"], "status"),
    ]
    for path, type_name, default, text in rows:
        lines.append(f"| {_code(path)} | {_cell(type_name)} | {_cell(default)} | {_cell(text)} |")
    return "\n".join(lines) + "\n"


def readme_section(readme: str) -> str | None:
    """The text between the README's field-reference markers, or None when they are missing."""
    start, end = readme.find(START_MARKER), readme.find(END_MARKER)
    if start < 0 or end < start:
        return None
    return readme[start + len(START_MARKER) : end].strip("\n") + "\n"


def update_readme(readme: str) -> str:
    """The README with the field-reference section replaced by the generated table."""
    if readme_section(readme) is None:
        raise ValueError(f"no {START_MARKER} ... {END_MARKER} section")
    start, end = readme.find(START_MARKER) + len(START_MARKER), readme.find(END_MARKER)
    return readme[:start] + "\n" + field_reference_markdown() + readme[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m politetenant.operator.model.docs", description=__doc__)
    parser.add_argument("--update", metavar="README", type=Path, help="rewrite the marked section of this file")
    args = parser.parse_args(argv)
    if args.update is None:
        sys.stdout.write(field_reference_markdown())
        return 0
    try:
        args.update.write_text(update_readme(args.update.read_text()))
    except OSError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"{args.update}: {exc}; add the two markers where the table belongs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
