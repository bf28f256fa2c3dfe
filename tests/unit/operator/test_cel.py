"""Every CEL rule of the generated CRD, run with a real CEL engine the way the API server runs it:
on the defaulted object, at the node that carries the rule, transition rules on updates only with
``oldSelf`` bound to the stored value. The pydantic validators must give the same verdict and the
same message, so ``polite-operator render`` refuses what ``kubectl apply`` would.

The engine is the ``cel`` module (package common-expression-language, the Rust ``cel`` crate). It
evaluates dynamically: it does not type-check a rule against the schema as the API server does when
the CRD is created, so a rule comparing a string field with an integer would only show up here as a
wrong verdict. The verdict tests below catch that for these rules.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import cel
import pytest
from pydantic import ValidationError

from politetenant.operator.model.crd import apply_defaults, openapi_schema
from politetenant.operator.model.spec_types import CelRule
from politetenant.operator.model.tenant import (
    API_HOST_DIFFERS,
    API_NEEDS_SOURCE_RANGES,
    ENGINE_IMMUTABLE,
    EXTERNAL_DB_NEEDS_SECRET,
    REGION_IMMUTABLE,
    SPOOL_STORAGE_IMMUTABLE,
    TLS_NEEDS_HOST,
    TLS_ONE_SOURCE,
    VAULT_NEEDS_SETTINGS,
    PoliteTenantSpec,
    check_update,
)
from politetenant.operator.model.tracking import (
    DEFAULT_MODE_ALLOWED,
    NOTICE_DEFAULT_HAS_TEXT,
    NOTICE_LANGUAGE_TAGS,
)

Path = tuple[str, ...]


def schema() -> dict[str, Any]:
    return openapi_schema()


def rule_sites(node: dict[str, Any], path: Path = ()) -> Iterator[tuple[Path, dict[str, str]]]:
    """Each x-kubernetes-validations entry with the schema path of the node that carries it."""
    for rule in node.get("x-kubernetes-validations", []):
        yield path, rule
    for name, child in node.get("properties", {}).items():
        yield from rule_sites(child, (*path, name))
    if isinstance(node.get("items"), dict):
        yield from rule_sites(node["items"], (*path, "[]"))


def nodes_at(value: Any, path: Path) -> Iterator[Any]:
    """The values at a schema path; none when a field on the way is absent (the rule does not run)."""
    if not path:
        yield value
        return
    head, rest = path[0], path[1:]
    if head == "[]" and isinstance(value, list):
        for item in value:
            yield from nodes_at(item, rest)
    elif isinstance(value, dict) and head in value:
        yield from nodes_at(value[head], rest)


def evaluate(rule: dict[str, str], variables: dict[str, Any], where: Path) -> bool:
    try:
        verdict = cel.evaluate(rule["rule"], variables)
    except Exception as exc:  # a missing field, a type error: the API server would reject the request too
        raise AssertionError(f"rule {rule['rule']!r} at {'.'.join(where)} did not evaluate: {exc!r}") from exc
    assert isinstance(verdict, bool), f"rule {rule['rule']!r} returned {verdict!r}, not a bool"
    return verdict


def admission_errors(tenant: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Messages of the CEL rules the API server would report for a create (old None) or an update."""
    root = schema()
    new_object = apply_defaults(tenant, root)
    old_object = apply_defaults(old, root) if old is not None else None
    failed = []
    for where, rule in rule_sites(root):
        transition = "oldSelf" in rule["rule"]
        if transition:
            assert "[]" not in where, "transition rules inside lists need old/new pairing by key"
            if old_object is None:
                continue  # transition rules run on updates only
            olds = list(nodes_at(old_object, where))
            for value in nodes_at(new_object, where):
                if olds and not evaluate(rule, {"self": value, "oldSelf": olds[0]}, where):
                    failed.append(rule["message"])
        else:
            for value in nodes_at(new_object, where):
                if not evaluate(rule, {"self": value}, where):
                    failed.append(rule["message"])
    return failed


def model_errors(spec: dict[str, Any]) -> list[str]:
    try:
        PoliteTenantSpec.model_validate(spec)
    except ValidationError as exc:
        return [error["msg"] for error in exc.errors()]
    return []


def tenant(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "polite.io/v1alpha1", "kind": "PoliteTenant", "metadata": {"name": "acme"}, "spec": spec}


BASE: dict[str, Any] = {"displayName": "Acme Corp", "region": "eu-ireland"}


def spec_with(**parts: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    spec.update(copy.deepcopy(parts))
    return spec


HOST = "track.acme.example"
API_HOST = "api.acme.example"
ISSUER = {"name": "letsencrypt", "kind": "ClusterIssuer"}
OFFICE = ["203.0.113.0/24", "2001:db8::/32"]
# Twenty language tags (en among them) and one more.


def notice(texts: dict[str, str], **more: str) -> dict[str, Any]:
    return spec_with(tracking={"notice": {"texts": texts, **more}})


# For every rule on create: specs it accepts and specs it refuses (each refused by that rule alone).
CASES: dict[CelRule, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    DEFAULT_MODE_ALLOWED: (
        [
            spec_with(),
            spec_with(tracking={"defaultMode": "aggregate", "allowedModes": ["aggregate"], "modeLocked": True}),
            spec_with(tracking={"defaultMode": "individual"}),
        ],
        [
            spec_with(tracking={"allowedModes": ["individual"]}),  # default anonymous not allowed
            spec_with(tracking={"defaultMode": "individual", "allowedModes": ["anonymous", "aggregate"]}),
        ],
    ),
    TLS_ONE_SOURCE: (
        [
            spec_with(tracker={"host": HOST, "tls": {"secretName": "acme-tls"}}),
            spec_with(tracker={"host": HOST, "tls": {"issuerRef": ISSUER}}),
        ],
        [
            spec_with(tracker={"host": HOST, "tls": {}}),
            spec_with(tracker={"host": HOST, "tls": {"secretName": "acme-tls", "issuerRef": ISSUER}}),
            spec_with(tracker={"api": {"host": API_HOST, "allowedSourceRanges": OFFICE, "tls": {}}}),
        ],
    ),
    API_HOST_DIFFERS: (
        [
            spec_with(tracker={"host": HOST, "api": {"host": API_HOST, "allowedSourceRanges": OFFICE}}),
            spec_with(tracker={"api": {"host": API_HOST, "allowedSourceRanges": OFFICE}}),  # in-cluster beacons
            spec_with(tracker={"host": HOST}),
        ],
        [spec_with(tracker={"host": HOST, "api": {"host": HOST, "allowedSourceRanges": OFFICE}})],
    ),
    API_NEEDS_SOURCE_RANGES: (
        [
            spec_with(tracker={"api": {"host": API_HOST, "allowedSourceRanges": ["10.0.0.0/8"]}}),
            spec_with(tracker={"api": {"host": API_HOST, "allowedSourceRanges": ["0.0.0.0/0", "::/0"]}}),
        ],
        [
            spec_with(tracker={"host": HOST, "api": {"host": API_HOST}}),  # forgotten: not open to the world
            spec_with(tracker={"api": {"host": API_HOST, "allowedSourceRanges": []}}),
        ],
    ),
    TLS_NEEDS_HOST: (
        [spec_with(tracker={"host": HOST}), spec_with(tracker={"replicas": 3})],
        [spec_with(tracker={"tls": {"secretName": "acme-tls"}})],
    ),
    EXTERNAL_DB_NEEDS_SECRET: (
        [
            spec_with(database={"engine": "external", "externalSecretRef": {"name": "acme-db"}}),
            spec_with(database={"engine": "cnpg"}),
            spec_with(database={"engine": "statefulset", "storage": "20Gi"}),
            spec_with(database={}),
        ],
        [
            spec_with(database={"engine": "external"}),
            spec_with(database={"externalSecretRef": {"name": "acme-db"}}),
            spec_with(database={"engine": "cnpg", "externalSecretRef": {"name": "acme-db"}}),
        ],
    ),
    VAULT_NEEDS_SETTINGS: (
        [
            spec_with(keys={"provider": "vault", "vault": {}}),
            spec_with(keys={"provider": "vault", "vault": {"address": "https://vault:8200"}}),
            spec_with(keys={"provider": "local"}),
            spec_with(keys={}),
        ],
        [
            spec_with(keys={"provider": "vault"}),
            spec_with(keys={"provider": "local", "vault": {}}),
            spec_with(keys={"vault": {"address": "https://vault:8200"}}),  # provider defaults to local
        ],
    ),
    NOTICE_LANGUAGE_TAGS: (
        [
            notice({"en": "Measured", "de-AT": "Gemessen", "zh-Hant-TW": "x"}),
            notice({"en": "Measured", "pt-BR": "Medido", "gsw": "x"}),
        ],
        [
            notice({"en": "Measured", "English": "Measured"}),
            notice({"en": "Measured", "en_US": "Measured"}),
            notice({"en": "Measured", "": "Measured"}),
        ],
    ),
    NOTICE_DEFAULT_HAS_TEXT: (
        [
            notice({"en": "Measured"}),
            notice({"de": "Grüße, gemessen", "fr": "Mesuré"}, defaultLanguage="de"),
            spec_with(tracking={"segments": ["department"]}),  # no notice at all: the rules do not run
        ],
        [
            notice({"de": "Gemessen"}),  # defaultLanguage defaults to en
            notice({"en": "Measured"}, defaultLanguage="fr"),
            notice({}),
        ],
    ),
}
TRANSITIONS: dict[
    CelRule, tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[tuple[dict[str, Any], dict[str, Any]]]]
] = {
    REGION_IMMUTABLE: (
        [
            (spec_with(), spec_with()),
            (spec_with(), spec_with(displayName="Acme Corporation", legalHold=True)),
        ],
        [
            (spec_with(), spec_with(region="us-east")),
            (spec_with(region="eu-germany"), spec_with(region="eu-ireland")),
        ],
    ),
    ENGINE_IMMUTABLE: (
        [
            (spec_with(), spec_with(database={"engine": "statefulset"})),  # unset -> set: checked by the operator
            (spec_with(database={"engine": "cnpg"}), spec_with(database={"engine": "cnpg", "storage": "20Gi"})),
            (spec_with(database={"engine": "cnpg"}), spec_with()),  # unset again: the recorded engine stays
        ],
        [
            (spec_with(database={"engine": "statefulset"}), spec_with(database={"engine": "cnpg"})),
            (spec_with(database={"engine": "cnpg"}), spec_with(database={"engine": "statefulset"})),
        ],
    ),
    SPOOL_STORAGE_IMMUTABLE: (
        [
            (spec_with(), spec_with(tracker={"spoolStorage": "1Gi"})),  # the default, now written out
            (spec_with(tracker={"spoolStorage": "4Gi"}), spec_with(tracker={"spoolStorage": "4Gi", "replicas": 5})),
        ],
        [
            (spec_with(), spec_with(tracker={"spoolStorage": "2Gi"})),
            (spec_with(tracker={"spoolStorage": "4Gi"}), spec_with(tracker={"spoolStorage": "1Gi"})),
        ],
    ),
}
ALL_RULES = [*CASES, *TRANSITIONS]


def case_ids(rules: list[CelRule]) -> list[str]:
    return [re.sub(r"\W+", "-", r.message)[:40] for r in rules]


def test_transition_rules_are_exactly_those_reading_old_self() -> None:
    assert all(rule.is_transition for rule in TRANSITIONS)
    assert not any(rule.is_transition for rule in CASES)


def test_every_rule_in_the_crd_is_tested_here_and_nothing_else() -> None:
    # A rule may sit at several places (tls under tracker and under tracker.api): tested once.
    in_crd = {(r["rule"], r["message"]) for _, r in rule_sites(schema())}
    tested = {(r.rule, r.message) for r in ALL_RULES}
    assert in_crd == tested


def test_rules_compile_and_read_only_self_and_old_self() -> None:
    for _, rule in rule_sites(schema()):
        # A macro's iteration variable (self.texts.all(language, ...)) is bound by the rule itself.
        bound = set(re.findall(r"\.(?:all|exists|exists_one|map|filter)\(\s*(\w+)\s*,", rule["rule"]))
        variables = set(cel.compile(rule["rule"]).variables()) - bound
        assert variables <= {"self", "oldSelf"}, rule
        assert ("oldSelf" in variables) == ("oldSelf" in rule["rule"])


def _always_present(node: dict[str, Any]) -> set[str]:
    properties = node.get("properties", {})
    return set(node.get("required", [])) | {k for k, v in properties.items() if "default" in v}


def test_rules_use_has_exactly_for_fields_without_a_default() -> None:
    """The API server defaults before it runs CEL: a defaulted field is always there, so has() on it
    is noise, and reading a field that has neither default nor has() would fail at run time."""
    root = schema()
    for where, rule in rule_sites(root):
        node = root
        for part in where:
            node = node["items"] if part == "[]" else node["properties"][part]
        present = _always_present(node)
        guarded = set(re.findall(r"has\(self\.(\w+)\)", rule["rule"]))
        read = set(re.findall(r"(?<!has\()self\.(\w+)", rule["rule"]))
        assert not (guarded & present), f"{rule['rule']}: has() on always-present {guarded & present}"
        assert read <= present | guarded, f"{rule['rule']}: reads {read - present - guarded} unguarded"


@pytest.mark.parametrize("rule", list(CASES), ids=case_ids(list(CASES)))
def test_rule_accepts_good_tenants_in_cel_and_in_the_model(rule: CelRule) -> None:
    good, _ = CASES[rule]
    for spec in good:
        assert admission_errors(tenant(spec)) == [], spec
        assert model_errors(spec) == [], spec


@pytest.mark.parametrize("rule", list(CASES), ids=case_ids(list(CASES)))
def test_rule_refuses_bad_tenants_with_its_message_in_cel_and_in_the_model(rule: CelRule) -> None:
    _, bad = CASES[rule]
    assert bad, "every rule must refuse at least one tenant"
    for spec in bad:
        assert admission_errors(tenant(spec)) == [rule.message], spec
        assert model_errors(spec) == [rule.message], spec


@pytest.mark.parametrize("rule", list(TRANSITIONS), ids=case_ids(list(TRANSITIONS)))
def test_transition_rule_on_update_in_cel_and_in_check_update(rule: CelRule) -> None:
    good, bad = TRANSITIONS[rule]
    assert bad, "every rule must refuse at least one update"
    for old, new in good:
        assert admission_errors(tenant(new), old=tenant(old)) == [], (old, new)
        assert check_update(PoliteTenantSpec.model_validate(old), PoliteTenantSpec.model_validate(new)) == []
    for old, new in bad:
        assert admission_errors(tenant(new), old=tenant(old)) == [rule.message], (old, new)
        old_spec, new_spec = PoliteTenantSpec.model_validate(old), PoliteTenantSpec.model_validate(new)
        assert check_update(old_spec, new_spec) == [rule.message]


def test_region_change_is_refused_and_an_unchanged_region_accepted() -> None:
    old = tenant(spec_with(region="eu-germany"))
    assert admission_errors(tenant(spec_with(region="us-east")), old=old) == [REGION_IMMUTABLE.message]
    assert admission_errors(tenant(spec_with(region="eu-germany", legalHold=True)), old=old) == []


def test_transition_rules_do_not_run_on_create() -> None:
    assert admission_errors(tenant(spec_with(region="us-east"))) == []


def test_a_legal_hold_is_admitted_whatever_the_deletion_policy() -> None:
    """The hold wins: placing one never needs deletionPolicy changed first (deletion waits for it)."""
    assert admission_errors(tenant(spec_with(legalHold=True, deletionPolicy="Delete"))) == []
    assert admission_errors(tenant(spec_with(legalHold=True, deletionPolicy="Retain"))) == []
    old = tenant(spec_with(deletionPolicy="Delete"))
    assert admission_errors(tenant(spec_with(deletionPolicy="Delete", legalHold=True)), old=old) == []


def test_rule_field_paths_point_the_error_at_the_field_to_change() -> None:
    paths = {r["message"]: r.get("fieldPath") for _, r in rule_sites(schema())}
    assert paths[EXTERNAL_DB_NEEDS_SECRET.message] == ".externalSecretRef"
    assert paths[VAULT_NEEDS_SETTINGS.message] == ".vault"
    assert paths[DEFAULT_MODE_ALLOWED.message] == ".defaultMode"
    assert paths[API_HOST_DIFFERS.message] == ".api.host"
    assert paths[API_NEEDS_SOURCE_RANGES.message] == ".allowedSourceRanges"
    assert paths[NOTICE_DEFAULT_HAS_TEXT.message] == ".defaultLanguage"
    assert paths[NOTICE_LANGUAGE_TAGS.message] == ".texts"


def test_several_broken_rules_are_all_reported() -> None:
    spec = spec_with(database={"engine": "external"}, keys={"provider": "vault"})
    assert sorted(admission_errors(tenant(spec))) == sorted(
        [EXTERNAL_DB_NEEDS_SECRET.message, VAULT_NEEDS_SETTINGS.message]
    )
