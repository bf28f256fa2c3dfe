"""The generated CRD: structural, accepted by the official CRD schema, committed as generated, and in
agreement with the pydantic model on the example tenants (validation and defaults alike)."""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from politetenant.operator.model.crd import CRD_PATH, apply_defaults, crd_manifest, crd_yaml, openapi_schema
from politetenant.operator.model.tenant import PoliteTenant

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("tenant-*.yaml"))

# Keywords a CRD schema node may use; anything else (``$ref``, ``definitions``, ``allOf``, ``oneOf``,
# ``not``, ``uniqueItems``, ``patternProperties``, ...) is either refused by the API server or not
# something this CRD needs, so the checker reports it.
NODE_KEYWORDS = {
    "description",
    "type",
    "format",
    "enum",
    "default",
    "nullable",
    "minimum",
    "maximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
}
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
SCALARS = {"string", "integer", "number", "boolean"}


def crd_schema() -> dict[str, Any]:
    return crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (``.spec.tracker.tls``, ``.status.conditions[]``)."""
    yield path or ".", schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the API server would prune (silently, or with an error under kubectl's strict validation)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict) and "properties" in schema:
        found = [f"{path}.{k}" for k in value if k not in schema["properties"]]
        for key, child in value.items():
            if key in schema["properties"]:
                found += unknown_fields(child, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [f for i, item in enumerate(value) for f in unknown_fields(item, schema["items"], f"{path}[{i}]")]
    return []


def schema_errors(obj: Any, schema: dict[str, Any]) -> list[str]:
    """OpenAPI v3 validation as the API server does it (CEL aside): JSON Schema draft 4 keywords."""
    validator = jsonschema.Draft4Validator(schema)
    try:
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    except Exception as exc:  # e.g. a $ref the checker is meant to report anyway
        return [f"cannot validate: {exc}"]


def int_or_string_as_string(value: Any, schema: dict[str, Any]) -> Any:
    """The API server stores ``cpu: 1`` as the integer 1; the model reads it as the quantity "1"."""
    if schema.get("x-kubernetes-int-or-string") and isinstance(value, int):
        return str(value)
    if isinstance(value, dict) and "properties" in schema:
        return {k: int_or_string_as_string(v, schema["properties"].get(k, {})) for k, v in value.items()}
    return value


def structural_problems(root: dict[str, Any]) -> list[str]:
    """What the API server would refuse, or what would make this CRD quietly weaker than the model.

    Structural-schema rules (Kubernetes docs, "Specifying a structural schema"): every node is typed
    unless int-or-string or preserve-unknown; logical junctors only for the int-or-string pattern;
    no $ref; no additionalProperties at the root or beside properties; arrays have items; metadata
    restricts only name/generateName. CRD v1 rules: defaults are pruned and valid; set lists hold
    scalars; map lists' keys are required; CEL rules have one-line messages and real field paths.
    """
    problems: list[str] = []
    if root.get("type") != "object" or "additionalProperties" in root:
        problems.append(".: the root must be an object without additionalProperties")
    metadata = root.get("properties", {}).get("metadata")
    if metadata is not None and (
        set(metadata) - {"type", "properties"} or set(metadata.get("properties", {})) - {"name", "generateName"}
    ):
        problems.append(".metadata: only name and generateName may be specified")
    for path, node in walk(root):
        if extra := set(node) - NODE_KEYWORDS:
            problems.append(f"{path}: keywords not allowed here: {sorted(extra)}")
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        if "type" not in node and not int_or_string and not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: no type")
        if "anyOf" in node and not (int_or_string and node["anyOf"] == INT_OR_STRING and "type" not in node):
            problems.append(f"{path}: anyOf is only allowed as the int-or-string pattern")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            problems.append(f"{path}: an array needs one items schema")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties exclude each other")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties: false is not structural (pruning does that)")
        if missing := set(node.get("required", [])) - set(node.get("properties", {})):
            problems.append(f"{path}: required fields without a schema: {sorted(missing)}")
        if "pattern" in node and re.search(r"\(\?[=!<]|\\[1-9]", node["pattern"]):
            problems.append(f"{path}: RE2 (the API server's regex engine) has no look-around or back-references")
        if "default" in node:
            problems += [f"{path}: default invalid: {e}" for e in schema_errors(node["default"], node)]
            problems += [f"{path}: default not pruned: {f}" for f in unknown_fields(node["default"], node)]
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "set" and node["items"].get("type") not in SCALARS:
            problems.append(f"{path}: a set list must hold scalars")
        if list_type == "map":
            items = node["items"]
            for key in node.get("x-kubernetes-list-map-keys", []):
                if key not in items.get("required", []) and "default" not in items["properties"].get(key, {}):
                    problems.append(f"{path}: list map key {key} must be required or defaulted")
        for rule in node.get("x-kubernetes-validations", []):
            if "\n" in rule.get("message", "") or not rule.get("rule"):
                problems.append(f"{path}: a CEL rule needs a rule and a one-line message")
            field_path = rule.get("fieldPath")
            if field_path and not _names_a_field(node, field_path):
                problems.append(f"{path}: fieldPath {field_path} names no field")
    return problems


def _names_a_field(node: dict[str, Any], field_path: str) -> bool:
    """A fieldPath (``.a.b``, relative to the node with the rule) leads through properties to a field."""
    for name in field_path.lstrip(".").split("."):
        if name not in node.get("properties", {}):
            return False
        node = node["properties"][name]
    return True


def cost_problems(spec: dict[str, Any]) -> list[str]:
    """Unbounded strings and lists make the API server's CEL cost estimate refuse rules above them."""
    problems = []
    for path, node in walk(spec, ".spec"):
        if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
            problems.append(f"{path}: string without maxLength")
        if node.get("x-kubernetes-int-or-string") and "maxLength" not in node:
            problems.append(f"{path}: int-or-string without maxLength")
        if node.get("type") == "array" and "maxItems" not in node:
            problems.append(f"{path}: list without maxItems")
    return problems


# -- the generated schema ------------------------------------------------------------------------------


def test_crd_schema_is_structural() -> None:
    assert structural_problems(crd_schema()) == []


def test_structural_checker_catches_what_the_api_server_refuses() -> None:
    spec = crd_schema()["properties"]["spec"]["properties"]
    cases = {
        "a $ref": lambda s: s["tracker"].update({"$ref": "#/$defs/Tracker"}),
        "an optional field as anyOf null": lambda s: s["tracker"]["properties"].update(
            {"image": {"anyOf": [{"type": "string"}, {"type": "null"}]}}
        ),
        "a field with no type": lambda s: s["tracker"]["properties"]["replicas"].pop("type"),
        "additionalProperties false": lambda s: s["keys"].update({"additionalProperties": False}),
        "an invalid default": lambda s: s["tracker"]["properties"]["replicas"].update({"default": 0}),
        "an unpruned default": lambda s: s["tracking"].update({"default": {"bogus": 1}}),
        "a fieldPath to nowhere": lambda s: s["keys"]["x-kubernetes-validations"][0].update({"fieldPath": ".nope"}),
        "a title": lambda s: s["keys"].update({"title": "Keys"}),
    }
    for what, break_it in cases.items():
        schema = crd_schema()
        spec = schema["properties"]["spec"]["properties"]
        break_it(spec)
        assert structural_problems(schema), f"the checker missed {what}"
    metadata_with_labels = crd_schema()
    metadata_with_labels["properties"]["metadata"]["properties"]["labels"] = {"type": "object"}
    assert structural_problems(metadata_with_labels)


def test_strings_and_lists_are_bounded_for_the_cel_cost_estimate() -> None:
    assert cost_problems(crd_schema()["properties"]["spec"]) == []


def test_nothing_is_left_open_with_preserve_unknown_fields() -> None:
    assert [path for path, node in walk(crd_schema()) if "x-kubernetes-preserve-unknown-fields" in node] == []


def test_status_conditions_are_a_map_list_keyed_by_type() -> None:
    conditions = crd_schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "observedGeneration",
        "lastTransitionTime",
    }
    status = crd_schema()["properties"]["status"]["properties"]
    assert {"observedGeneration", "phase", "conditions", "namespace", "endpoint", "keys"} <= set(status)
    assert set(status["keys"]["properties"]) == {"version", "rotatedAt"}


def test_status_has_no_defaults_the_operator_did_not_write() -> None:
    assert [path for path, node in walk(crd_schema()["properties"]["status"], ".status") if "default" in node] == []


# -- the CRD object ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kubernetes_version", ["1.30", "1.37"])
def test_crd_validates_against_the_official_customresourcedefinition_schema(kubernetes_version: str) -> None:
    assert kubernetes_validate.validate(crd_manifest(), kubernetes_version, strict=True) == kubernetes_version


def test_official_schema_check_would_catch_a_misspelt_crd_field() -> None:
    crd = crd_manifest()
    crd["spec"]["versions"][0]["subresource"] = {"status": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(crd, "1.30", strict=True)


def test_names_scope_and_version() -> None:
    crd = crd_manifest()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "politetenants.polite.io"
    spec = crd["spec"]
    assert spec["group"] == "polite.io"
    assert spec["scope"] == "Cluster"
    assert spec["names"] == {
        "kind": "PoliteTenant",
        "listKind": "PoliteTenantList",
        "plural": "politetenants",
        "singular": "politetenant",
        "shortNames": ["ptenant"],
        "categories": ["polite"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns_read_region_mode_ready_phase_keys_age() -> None:
    columns = crd_manifest()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["jsonPath"], c["type"]) for c in columns] == [
        ("Region", ".spec.region", "string"),
        ("Mode", ".spec.tracking.defaultMode", "string"),
        ("Ready", '.status.conditions[?(@.type=="Ready")].status', "string"),
        ("Phase", ".status.phase", "string"),
        ("Keys", ".status.keys.version", "integer"),
        ("Age", ".metadata.creationTimestamp", "date"),
    ]


def test_printer_columns_point_at_fields_the_schema_has() -> None:
    schema = crd_schema()
    for column in crd_manifest()["spec"]["versions"][0]["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".metadata."):
            continue
        node = schema
        for part in re.sub(r"\[\?\(@\.[^)]*\)\]", "[]", column["jsonPath"]).lstrip(".").split("."):
            node = node["properties"][part.removesuffix("[]")]
            if part.endswith("[]"):  # a list filtered to one item: that item's field follows
                node = node["items"]
        assert node["type"] == column["type"], column


def test_spec_is_required_and_metadata_name_fits_a_namespace() -> None:
    schema = crd_schema()
    assert schema["required"] == ["spec"]
    name = schema["properties"]["metadata"]["properties"]["name"]
    assert name["maxLength"] == 63 - len("polite-")


def test_committed_crd_is_what_polite_operator_crd_generates() -> None:
    committed = (ROOT / CRD_PATH).read_text()
    assert committed == crd_yaml(), (
        f"{CRD_PATH} drifted from the model; regenerate it with: "
        f"polite-operator crd > {CRD_PATH}  (or .venv/bin/python -c "
        "\"from politetenant.operator.model.crd import crd_yaml; print(crd_yaml(), end='')\" > " + CRD_PATH + ")"
    )


def test_polite_operator_crd_prints_the_committed_crd() -> None:
    if importlib.util.find_spec("politetenant.operator.cli") is None:
        pytest.skip("politetenant.operator.cli (the polite-operator command) is not written yet")
    entry_point = "import sys; from politetenant.operator.cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", entry_point, "crd"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / CRD_PATH).read_text(), f"polite-operator crd must print {CRD_PATH} as committed"


def test_generated_yaml_is_stable_plain_and_says_it_is_generated() -> None:
    text = crd_yaml()
    assert text == crd_yaml()
    assert text.startswith("# Generated by `polite-operator crd`")
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text) == crd_manifest()


# -- example tenants -----------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "tenant-minimal.yaml",
        "tenant-eu-vault.yaml",
        "tenant-us-external-db.yaml",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_crd_schema_before_and_after_defaults(path: Path) -> None:
    tenant = load(path)
    schema = crd_schema()
    assert schema_errors(tenant, schema) == []
    assert schema_errors(apply_defaults(tenant, schema), schema) == []
    assert unknown_fields(tenant, schema) == [], "the API server would prune these"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_model(path: Path) -> None:
    tenant = PoliteTenant.model_validate(load(path))
    assert tenant.namespace == f"polite-{tenant.name}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_api_server_defaults_equal_the_model_defaults(path: Path) -> None:
    """What the API server stores after defaulting is what the operator reads through the model."""
    raw = load(path)
    schema = crd_schema()
    defaulted = int_or_string_as_string(apply_defaults(raw, schema), schema)["spec"]
    model = PoliteTenant.model_validate(raw).spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert defaulted == model


def test_minimal_tenant_gets_every_default_the_model_has() -> None:
    minimal = {"displayName": "Acme", "region": "us-west"}
    defaulted = apply_defaults(minimal, openapi_schema()["properties"]["spec"])
    assert defaulted["tracking"] == {
        "defaultMode": "anonymous",
        "allowedModes": ["individual", "anonymous", "aggregate"],
        "modeLocked": False,
        "minSegmentSize": 10,
        "segments": [],
    }
    assert defaulted["judging"] == {
        "applePrivacyNetworks": ["17.0.0.0/8"],
        "scannerNetworks": [],
        "earlyHitSeconds": 10,
        "burstSeconds": 10,
        "gatewayClickSeconds": 120,
    }
    assert defaulted["tracker"]["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    assert defaulted["keys"] == {"provider": "local"}
    assert defaulted["database"] == {"storage": "10Gi"}
    assert (defaulted["legalHold"], defaulted["deletionPolicy"]) == (False, "Retain")


def test_defaulting_drops_nulls_and_leaves_given_values_alone() -> None:
    spec = {"displayName": "A", "region": "us-west", "tracker": {"host": None, "replicas": 5}}
    defaulted = apply_defaults(spec, openapi_schema()["properties"]["spec"])
    assert "host" not in defaulted["tracker"]
    assert defaulted["tracker"]["replicas"] == 5
    assert spec["tracker"]["host"] is None, "apply_defaults must not change its argument"


def test_unknown_fields_are_found_where_the_api_server_would_prune_them() -> None:
    tenant = copy.deepcopy(load(ROOT / "examples" / "tenant-minimal.yaml"))
    tenant["spec"]["tracker"] = {"replica": 3}
    assert unknown_fields(tenant, crd_schema()) == [".spec.tracker.replica"]
