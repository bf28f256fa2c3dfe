"""The PoliteTenant model: wire names, refusals with field paths, and the same verdict as the CRD's
OpenAPI schema on bounds, enums, types and formats; the README's field reference generated from it."""

from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from politetenant.operator.model import docs
from politetenant.operator.model.crd import apply_defaults, openapi_schema
from politetenant.operator.model.patterns import CIDR_PATTERN, CRON_PATTERN
from politetenant.operator.model.spec_types import NOT_BLANK_PATTERN
from politetenant.operator.model.tenant import (
    PoliteTenant,
    PoliteTenantSpec,
    Tracker,
    check_update,
)
from politetenant.operator.model.tenant_status import PoliteTenantStatus

ROOT = Path(__file__).resolve().parents[3]
BASE: dict[str, Any] = {"displayName": "Acme Corp", "region": "eu-ireland"}


def tenant(spec: dict[str, Any], name: str = "acme") -> dict[str, Any]:
    return {"apiVersion": "polite.io/v1alpha1", "kind": "PoliteTenant", "metadata": {"name": name}, "spec": spec}


def with_value(path: str, value: Any) -> dict[str, Any]:
    """BASE with one field set (``tracker.tls.secretName``), plus what that field needs to be legal."""
    spec = copy.deepcopy(BASE)
    if path.startswith("tracker.tls"):
        spec["tracker"] = {"host": "track.acme.example"}
    if path.startswith("tracker.api."):
        spec["tracker"] = {"api": {"host": "api.acme.example", "allowedSourceRanges": ["203.0.113.0/24"]}}
    if path.startswith("keys.vault"):
        spec["keys"] = {"provider": "vault"}
    if path.startswith("database.externalSecretRef"):
        spec["database"] = {"engine": "external", "externalSecretRef": {"name": "acme-db"}}
    node = spec
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return spec


def crd_accepts(obj: dict[str, Any]) -> bool:
    schema = openapi_schema()
    validator = jsonschema.Draft4Validator(schema)
    return validator.is_valid(obj) and validator.is_valid(apply_defaults(obj, schema))


def model_accepts(obj: dict[str, Any]) -> bool:
    try:
        PoliteTenant.model_validate(obj)
    except ValidationError:
        return False
    return True


# (field, value, accepted) — the model and the CRD schema must agree on each.
FIELD_CASES: list[tuple[str, Any, bool]] = [
    # bounds
    ("tracking.minSegmentSize", 5, True),
    ("tracking.minSegmentSize", 4, False),
    ("tracking.minSegmentSize", 100_000, True),
    ("tracking.minSegmentSize", 100_001, False),
    ("tracker.replicas", 1, True),
    ("tracker.replicas", 50, True),
    ("tracker.replicas", 0, False),
    ("tracker.replicas", 51, False),
    ("retention.interactionDays", 1, True),
    ("retention.interactionDays", 0, False),
    ("retention.interactionDays", 3651, False),
    ("retention.messageDays", 3650, True),
    ("retention.messageDays", 0, False),
    ("displayName", "", False),
    ("displayName", "x" * 100, True),
    ("displayName", "x" * 101, False),
    ("tracker.image", "x" * 513, False),
    ("tracking.allowedModes", [], False),
    ("tracking.allowedModes", ["anonymous"], True),
    # types: the API server does not coerce, so neither does the model
    ("tracker.replicas", "2", False),
    ("tracker.replicas", 2.5, False),
    ("tracker.replicas", True, False),
    ("legalHold", "true", False),
    ("tracking.modeLocked", 1, False),
    ("displayName", 42, False),
    # enums
    ("region", "eu-germany", True),
    ("region", "eu-west", False),
    ("region", "EU-GERMANY", False),
    ("tracking.defaultMode", "tracked", False),
    ("tracking.allowedModes", ["anonymous", "everything"], False),
    ("deletionPolicy", "Delete", True),
    ("deletionPolicy", "delete", False),
    ("database.engine", "mysql", False),
    ("keys.provider", "aws-kms", False),
    ("tracker.tls.issuerRef", {"name": "le", "kind": "Certificate"}, False),
    # host names
    ("tracker.host", "track.example.com", True),
    ("tracker.host", "a.b", True),
    ("tracker.host", "x-1.mail.example.io", True),
    ("tracker.host", "Track.Example.com", False),
    ("tracker.host", "localhost", False),
    ("tracker.host", "-a.example.com", False),
    ("tracker.host", "a_b.example.com", False),
    ("tracker.host", "*.example.com", False),
    ("tracker.host", "example.com.", False),
    ("tracker.host", "https://track.example.com", False),
    ("tracker.host", "a." + "b" * 64 + ".com", False),
    # cron schedules
    ("retention.schedule", "17 3 * * *", True),
    ("retention.schedule", "*/15 * * * *", True),
    ("retention.schedule", "0 0 1,15 * 1-5", True),
    ("retention.schedule", "30 2 * 1-12/3 7", True),
    ("retention.schedule", "0 23 31 12 0", True),
    ("retention.schedule", "@daily", True),
    ("retention.schedule", "@midnight", True),
    ("retention.schedule", "60 * * * *", False),
    ("retention.schedule", "0 24 * * *", False),
    ("retention.schedule", "0 0 0 * *", False),
    ("retention.schedule", "0 0 32 * *", False),
    ("retention.schedule", "0 0 * 13 *", False),
    ("retention.schedule", "0 0 * * 8", False),
    ("retention.schedule", "* * * *", False),
    ("retention.schedule", "* * * * * *", False),
    ("retention.schedule", "*/0 * * * *", False),
    ("retention.schedule", "@every 1h", False),
    ("retention.schedule", "0 3 * * MON", False),
    ("retention.schedule", "١٧ 3 * * *", False),  # Arabic-Indic digits: RE2's [0-9] is ASCII only
    ("retention.schedule", "", False),
    # quantities
    ("database.storage", "10Gi", True),
    ("database.storage", "512Mi", True),
    ("database.storage", "1.5Gi", True),
    ("database.storage", "1e3", True),
    ("database.storage", 20, True),
    ("database.storage", "10 GB", False),
    ("database.storage", "10GB", False),
    ("database.storage", "-1Gi", False),
    ("database.storage", "", False),
    ("database.storage", 0.5, False),
    ("tracker.resources.limits.cpu", 1, True),
    ("tracker.resources.limits.cpu", "250m", True),
    ("tracker.resources.limits.cpu", "0.5", True),
    ("tracker.resources.limits.cpu", "half", False),
    ("tracker.resources.limits.cpu", True, False),
    # object names, secret keys, URLs
    ("tracker.tls.secretName", "acme-tls", True),
    ("tracker.tls.secretName", "track.acme.example-tls", True),
    ("tracker.tls.secretName", "Acme-TLS", False),
    ("tracker.tls.secretName", "acme_tls", False),
    ("tracker.tls.secretName", "", False),
    ("database.externalSecretRef.key", "DATABASE_URL", True),
    ("database.externalSecretRef.key", "a/b", False),
    ("database.externalSecretRef.name", "-db", False),
    ("keys.vault.address", "https://vault.example:8200", True),
    ("keys.vault.address", "http://vault", True),
    ("keys.vault.address", "vault:8200", False),
    ("keys.vault.address", "https://", False),
    ("keys.vault.address", "https://va ult", False),
    # Vault mounts go into request paths and policy text: plain path segments only
    ("keys.vault.transitMount", "transit", True),
    ("keys.vault.kubernetesAuthMount", "k8s/cluster-eu", True),
    ("keys.vault.kubernetesAuthMount", "kubernetes/role/polite-victim#", False),
    ("keys.vault.kubernetesAuthMount", "kubernetes?x=1", False),
    ("keys.vault.transitMount", 'transit/decrypt/polite-other" {}', False),
    ("keys.vault.transitMount", "transit/*", False),
    ("keys.vault.transitMount", "../sys", False),
    ("keys.vault.transitMount", "transit//keys", False),
    ("keys.vault.transitMount", "transit\npath", False),
    # the API host's allowed networks: CIDRs, IPv4 or IPv6, host bits allowed (as ingress controllers read them)
    ("tracker.api.allowedSourceRanges", ["203.0.113.0/24", "2001:db8::/32"], True),
    ("tracker.api.allowedSourceRanges", ["0.0.0.0/0", "::/0"], True),
    ("tracker.api.allowedSourceRanges", ["10.1.2.3/8", "::ffff:192.0.2.1/128"], True),
    ("tracker.api.allowedSourceRanges", ["2001:db8::1:2:3:4:5/128", "1:2::3:4:5:6:7/64"], True),  # :: for one 0
    ("tracker.api.allowedSourceRanges", ["10.0.0.0"], False),
    ("tracker.api.allowedSourceRanges", ["10.0.0.0/33"], False),
    ("tracker.api.allowedSourceRanges", ["256.0.0.0/8"], False),
    ("tracker.api.allowedSourceRanges", ["010.0.0.0/8"], False),
    ("tracker.api.allowedSourceRanges", ["2001:db8::/129"], False),
    ("tracker.api.allowedSourceRanges", ["1::2::3/64"], False),
    ("tracker.api.allowedSourceRanges", ["office"], False),
    ("tracker.api.allowedSourceRanges", ["10.0.0.0/8 "], False),
    ("tracker.api.allowedSourceRanges", [f"10.{i}.0.0/16" for i in range(65)], False),
    ("tracker.api.host", "api.acme.example", True),
    ("tracker.api.host", "API.acme.example", False),
    ("tracker.spoolStorage", "4Gi", True),
    ("tracker.spoolStorage", "4 GB", False),
    # report segments: recipient attribute names, as the tracker's settings take them
    ("tracking.segments", [], True),
    ("tracking.segments", ["department", "site_2", "a" * 40], True),
    ("tracking.segments", [f"attribute_{i}" for i in range(20)], True),
    ("tracking.segments", [f"attribute_{i}" for i in range(21)], False),
    ("tracking.segments", ["a" * 41], False),
    ("tracking.segments", ["Department"], False),
    ("tracking.segments", ["2nd_site"], False),
    ("tracking.segments", ["cost-centre"], False),
    ("tracking.segments", [""], False),
    ("tracking.segments", "department", False),
    # the recipients' notice (the rules between its fields are CEL: test_cel.py)
    ("tracking.notice", {"texts": {"en": "How we measure this message"}}, True),
    ("tracking.notice", {"texts": {"en": "x" * 1000}}, True),
    ("tracking.notice", {"texts": {"en": "Hi", "de": "Grüße", "pt-BR": "Olá"}, "defaultLanguage": "pt-BR"}, True),
    ("tracking.notice", {"texts": {"en": "x" * 1001}}, False),
    ("tracking.notice", {"texts": {"en": ""}}, False),
    ("tracking.notice", {"texts": {"en": " \t\n"}}, False),
    ("tracking.notice", {"texts": {"en": "\u00a0\u3000"}}, False),  # Unicode white space is blank too
    ("tracking.notice", {"texts": {"en": 7}}, False),
    ("tracking.notice", {"texts": {"en": "Hi"}, "defaultLanguage": "EN"}, False),
    ("tracking.notice", {"texts": {"en": "Hi"}, "defaultLanguage": "en-" + "x" * 33}, False),
    ("tracking.notice", {"defaultLanguage": "en"}, False),
    # judging: networks and time windows
    ("judging.applePrivacyNetworks", ["17.0.0.0/8", "2620:149::/32"], True),
    ("judging.applePrivacyNetworks", [], True),
    ("judging.gatewayNetworks", [], True),
    ("judging.gatewayNetworks", ["40.92.0.0/15", "2a01:111:f400::/48"], True),
    ("judging.gatewayNetworks", [f"10.{i // 256}.{i % 256}.0/24" for i in range(256)], True),
    ("judging.gatewayNetworks", [f"10.{i // 256}.{i % 256}.0/24" for i in range(257)], False),
    ("judging.scannerNetworks", ["198.51.100.7/32"], True),
    ("judging.scannerNetworks", ["198.51.100.7"], False),
    ("judging.scannerNetworks", ["scanner.example"], False),
    ("judging.applePrivacyNetworks", ["17.0.0.0/33"], False),
    ("judging.gatewayNetworks", "40.92.0.0/15", False),
    ("judging.earlyHitSeconds", 0, True),
    ("judging.earlyHitSeconds", 3600, True),
    ("judging.earlyHitSeconds", 3601, False),
    ("judging.earlyHitSeconds", -1, False),
    ("judging.earlyHitSeconds", "10", False),
    ("judging.earlyHitSeconds", 1.5, False),
    ("judging.burstSeconds", 3600, True),
    ("judging.burstSeconds", 3601, False),
    ("judging.gatewayClickSeconds", 86_400, True),
    ("judging.gatewayClickSeconds", 86_401, False),
    ("judging.gatewayClickSeconds", True, False),
]


@pytest.mark.parametrize(("path", "value", "accepted"), FIELD_CASES, ids=[f"{p}={v!r}"[:60] for p, v, _ in FIELD_CASES])
def test_model_and_crd_agree_on_every_field_check(path: str, value: Any, accepted: bool) -> None:
    obj = tenant(with_value(path, value))
    assert model_accepts(obj) is accepted, "model"
    assert crd_accepts(obj) is accepted, "CRD schema"


@st.composite
def ipv6_spellings(draw: st.DrawFn) -> str:
    """An IPv6 address as people write it: any run of zero groups (one too) as ``::``, groups with or
    without leading zeros, in either case, the last 32 bits perhaps dotted; sometimes one group too many
    or too few."""
    count = draw(st.sampled_from([8, 8, 8, 7, 9]))
    groups = draw(st.lists(st.sampled_from([0, 0, 1, 0xDB8, 0xFFFF, 0x2001]), min_size=count, max_size=count))
    texts = [draw(st.sampled_from([f"{g:x}", f"{g:04x}", f"{g:X}"])) for g in groups]
    if draw(st.booleans()) and count >= 2:
        last = groups[-2] << 16 | groups[-1]
        texts[-2:] = [".".join(str(last >> shift & 0xFF) for shift in (24, 16, 8, 0))]
    zeros = [i for i, g in enumerate(groups[: len(texts)]) if g == 0]
    if zeros and draw(st.booleans()):
        start = draw(st.sampled_from(zeros))
        end = start
        while end + 1 < len(texts) and groups[end + 1] == 0 and draw(st.booleans()):
            end += 1
        return ":".join(texts[:start]) + "::" + ":".join(texts[end + 1 :])
    return ":".join(texts)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.ip_addresses().flatmap(lambda ip: st.tuples(st.just(str(ip)), st.integers(0, ip.max_prefixlen + 2))),
        st.tuples(ipv6_spellings(), st.integers(0, 130)),
        st.tuples(st.text(alphabet="0123456789abcdef:./", min_size=1, max_size=24), st.integers(0, 130)),
    )
)
def test_cidr_pattern_accepts_exactly_the_networks_python_reads(case: tuple[str, int]) -> None:
    """The CRD's pattern and ipaddress agree on every address with every prefix, and on junk."""
    address, prefix = case
    text = f"{address}/{prefix}"
    try:
        ipaddress.ip_network(text, strict=False)
        networks = True
    except ValueError:
        networks = False
    assert (re.fullmatch(CIDR_PATTERN, text) is not None) is networks, text


def test_cron_pattern_is_anchored_as_a_whole() -> None:
    # A regex alternation without anchors on both sides would let junk through around a descriptor.
    assert CRON_PATTERN.startswith("^") and CRON_PATTERN.endswith("$")
    assert not model_accepts(tenant(with_value("retention.schedule", "@daily junk")))
    assert not model_accepts(tenant(with_value("retention.schedule", "junk 17 3 * * *")))


@pytest.mark.parametrize(
    ("name", "accepted"),
    [("acme", True), ("a" * 56, True), ("a" * 57, False), ("Acme", False), ("acme.corp", False), ("acme-", False)],
)
def test_tenant_name_must_make_a_valid_namespace_name(name: str, accepted: bool) -> None:
    obj = tenant(copy.deepcopy(BASE), name=name)
    assert model_accepts(obj) is accepted
    assert crd_accepts(obj) is accepted
    if accepted:
        namespace = PoliteTenant.model_validate(obj).namespace
        assert len(namespace) <= 63 and namespace == f"polite-{name}"


def test_wire_names_are_camel_case_and_python_names_snake_case() -> None:
    spec = PoliteTenantSpec.model_validate(
        {**BASE, "tracking": {"minSegmentSize": 12}, "legalHold": True, "deletionPolicy": "Retain"}
    )
    assert spec.display_name == "Acme Corp"
    assert spec.tracking.min_segment_size == 12
    assert spec.legal_hold is True
    by_name = PoliteTenantSpec(display_name="Acme Corp", region="eu-ireland")
    assert by_name.model_dump(by_alias=True)["displayName"] == "Acme Corp"


def _model_fields(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[str]:
    """Differences between a model's wire names and the CRD properties at the same place."""
    differences = []
    aliases = {field.alias or name: field for name, field in model.model_fields.items()}
    if set(aliases) != set(schema["properties"]):
        differences.append(f"{path}: model {sorted(aliases)} vs CRD {sorted(schema['properties'])}")
    for alias, field in aliases.items():
        nested = field.annotation
        candidates = [a for a in getattr(nested, "__args__", (nested,)) if isinstance(a, type)]
        for candidate in candidates:
            if issubclass(candidate, BaseModel) and alias in schema["properties"]:
                child = schema["properties"][alias]
                differences += _model_fields(candidate, child.get("items", child), f"{path}.{alias}")
    return differences


def test_every_model_field_is_in_the_crd_under_its_camel_case_name() -> None:
    root = openapi_schema()["properties"]
    assert _model_fields(PoliteTenantSpec, root["spec"], "spec") == []
    assert _model_fields(PoliteTenantStatus, root["status"], "status") == []


def test_every_spec_and_status_field_has_a_description() -> None:
    def undocumented(node: dict[str, Any], path: str) -> list[str]:
        missing = [] if node.get("description") else [path]
        for name, child in node.get("properties", {}).items():
            missing += undocumented(child, f"{path}.{name}")
        if "items" in node and "properties" in node["items"]:
            missing += [
                m for name, c in node["items"]["properties"].items() for m in undocumented(c, f"{path}[].{name}")
            ]
        return missing

    root = openapi_schema()["properties"]
    assert undocumented(root["spec"], "spec") + undocumented(root["status"], "status") == []


def test_unknown_field_is_refused_with_its_path() -> None:
    obj = tenant({**BASE, "tracker": {"replica": 3}})
    with pytest.raises(ValidationError) as caught:
        PoliteTenant.model_validate(obj)
    [error] = caught.value.errors()
    assert error["type"] == "extra_forbidden"
    assert error["loc"] == ("spec", "tracker", "replica")


def test_misspelt_top_level_spec_field_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        PoliteTenantSpec.model_validate({**BASE, "legalhold": True})
    assert [e["loc"] for e in caught.value.errors()] == [("legalhold",)]


def test_missing_required_fields_are_named() -> None:
    with pytest.raises(ValidationError) as caught:
        PoliteTenantSpec.model_validate({})
    assert sorted(e["loc"][0] for e in caught.value.errors()) == ["displayName", "region"]


def test_repeated_allowed_mode_is_refused_like_a_set_list() -> None:
    with pytest.raises(ValidationError, match="allowedModes must not repeat a mode"):
        PoliteTenantSpec.model_validate({**BASE, "tracking": {"allowedModes": ["anonymous", "anonymous"]}})
    allowed = openapi_schema()["properties"]["spec"]["properties"]["tracking"]["properties"]["allowedModes"]
    assert allowed["x-kubernetes-list-type"] == "set"


def test_repeated_source_range_is_refused_like_a_set_list() -> None:
    api = {"host": "api.acme.example", "allowedSourceRanges": ["10.0.0.0/8", "10.0.0.0/8"]}
    with pytest.raises(ValidationError, match="allowedSourceRanges must not repeat a range"):
        PoliteTenantSpec.model_validate({**BASE, "tracker": {"api": api}})
    tracker = openapi_schema()["properties"]["spec"]["properties"]["tracker"]["properties"]
    assert tracker["api"]["properties"]["allowedSourceRanges"]["x-kubernetes-list-type"] == "set"


@pytest.mark.parametrize(
    ("spec", "where", "message"),
    [
        (
            {"judging": {"scannerNetworks": ["198.51.100.0/24", "10.0.0.0"]}},
            ("spec", "judging", "scannerNetworks", 1),
            "'10.0.0.0' is not a network in CIDR notation, e.g. 203.0.113.0/24 or 2001:db8::/32",
        ),
        (
            {"judging": {"gatewayNetworks": ["40.92.0.0/15", "40.92.0.0/15"]}},
            ("spec", "judging", "gatewayNetworks"),
            "gatewayNetworks must not repeat a network",
        ),
        (
            {"tracking": {"segments": ["department", "Cost-Centre"]}},
            ("spec", "tracking", "segments", 1),
            "'Cost-Centre' is not an attribute name: up to 40 lower-case letters, digits or _, starting with a letter",
        ),
        (
            {"tracking": {"segments": ["site", "site"]}},
            ("spec", "tracking", "segments"),
            "segments must not repeat an attribute",
        ),
        (
            {"tracking": {"notice": {"texts": {"en": "   "}}}},
            ("spec", "tracking", "notice", "texts", "en"),
            "a notice must not be blank",
        ),
        (
            {"tracking": {"notice": {"texts": {"en": "Hi"}, "defaultLanguage": "English"}}},
            ("spec", "tracking", "notice", "defaultLanguage"),
            "'English' is not a language tag such as en, de or pt-BR",
        ),
    ],
    ids=["cidr", "repeated-network", "segment-name", "repeated-segment", "blank-notice", "language-tag"],
)
def test_judging_and_notice_mistakes_are_refused_in_words_at_their_field(
    spec: dict[str, Any], where: tuple[str | int, ...], message: str
) -> None:
    """The message says what was expected, not a regular expression, and points at the value to fix."""
    with pytest.raises(ValidationError) as caught:
        PoliteTenant.model_validate(tenant({**BASE, **spec}))
    assert [(e["loc"], e["msg"]) for e in caught.value.errors()] == [(where, message)]


def test_an_absent_gateway_list_is_not_an_empty_one() -> None:
    """Unset keeps the tracker's built-in gateways; an empty list says there are none."""
    assert PoliteTenantSpec.model_validate(BASE).judging.gateway_networks is None
    empty = PoliteTenantSpec.model_validate({**BASE, "judging": {"gatewayNetworks": []}})
    assert empty.judging.gateway_networks == []
    judging = openapi_schema()["properties"]["spec"]["properties"]["judging"]
    assert "default" not in judging["properties"]["gatewayNetworks"]
    assert apply_defaults({}, judging) == {
        "applePrivacyNetworks": ["17.0.0.0/8"],
        "scannerNetworks": [],
        "earlyHitSeconds": 10,
        "burstSeconds": 10,
        "gatewayClickSeconds": 120,
    }


def test_not_blank_pattern_refuses_exactly_what_the_tracker_strips() -> None:
    """A notice of white space alone is refused by model and CRD alike, whatever white space it is."""
    pattern = re.compile(NOT_BLANK_PATTERN)
    for code in range(0x3001):
        char = chr(code)
        assert (pattern.search(char) is None) is (char.strip() == ""), hex(code)
    assert not any(ord(c) > 0x3000 and c.isspace() for c in map(chr, range(0x3001, 0x110000)))


def test_integer_quantities_are_read_as_strings() -> None:
    tracker = Tracker.model_validate({"resources": {"limits": {"cpu": 2, "memory": "1Gi"}}})
    assert tracker.resources.limits.cpu == "2"
    assert tracker.resources.requests.cpu == "100m", "requests keep their default when only limits are given"


def test_defaults_of_an_empty_spec() -> None:
    spec = PoliteTenantSpec.model_validate(BASE)
    assert spec.tracking.default_mode == "anonymous"
    assert spec.tracking.min_segment_size == 10
    assert spec.tracker.replicas == 2 and spec.tracker.host is None and spec.tracker.tls is None
    assert spec.tracker.api is None and spec.tracker.spool_storage == "1Gi"
    assert spec.database.engine is None and spec.database.storage == "10Gi"
    assert spec.keys.provider == "local" and spec.keys.vault is None
    assert (spec.retention.interaction_days, spec.retention.message_days) == (395, 730)
    assert spec.legal_hold is False and spec.deletion_policy == "Retain"
    assert spec.tracking.segments == [] and spec.tracking.notice is None, "no segments and no notice by default"
    assert spec.judging.apple_privacy_networks == ["17.0.0.0/8"] and spec.judging.scanner_networks == []
    assert spec.judging.gateway_networks is None, "unset: the tracker's built-in gateway list"
    assert (spec.judging.early_hit_seconds, spec.judging.burst_seconds, spec.judging.gateway_click_seconds) == (
        10,
        10,
        120,
    )


def test_check_update_accepts_changes_other_than_region() -> None:
    old = PoliteTenantSpec.model_validate(BASE)
    new = PoliteTenantSpec.model_validate({**BASE, "displayName": "Acme", "tracker": {"replicas": 4}})
    assert check_update(old, new) == []


def test_status_reads_and_writes_camel_case_and_fits_the_crd() -> None:
    status = PoliteTenantStatus.model_validate(
        {
            "observedGeneration": 3,
            "phase": "Ready",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllChildrenReady",
                    "message": "every child is ready",
                    "observedGeneration": 3,
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                }
            ],
            "namespace": "polite-acme",
            "endpoint": "https://track.acme.example",
            "keys": {"version": 2, "rotatedAt": "2025-01-01T00:00:00Z"},
        }
    )
    assert status.conditions[0].observed_generation == 3
    assert status.keys is not None and status.keys.rotated_at == "2025-01-01T00:00:00Z"
    written = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    status_schema = openapi_schema()["properties"]["status"]
    assert jsonschema.Draft4Validator(status_schema).is_valid(written)


@pytest.mark.parametrize(
    "condition",
    [
        {"type": "Ready", "status": "Maybe", "reason": "Waiting"},
        {"type": "Ready", "status": "True", "reason": ""},
        {"type": "Ready", "status": "True", "reason": "has spaces"},
        {"type": "ready", "status": "True", "reason": "Waiting"},
    ],
)
def test_bad_condition_is_refused_by_model_and_crd(condition: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PoliteTenantStatus.model_validate({"conditions": [condition]})
    status_schema = openapi_schema()["properties"]["status"]
    assert not jsonschema.Draft4Validator(status_schema).is_valid({"conditions": [condition]})


# -- the README's field reference ----------------------------------------------------------------------


def test_readme_field_reference_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    section = docs.readme_section(readme)
    if section is None:
        pytest.fail(
            f"README.md has no field reference: add the lines {docs.START_MARKER} and {docs.END_MARKER} "
            "where it belongs, then run `python -m politetenant.operator.model.docs --update README.md` "
            "(or paste the output of `python -m politetenant.operator.model.docs` between them)"
        )
    assert section == docs.field_reference_markdown(), (
        "README.md's field reference is stale: run `python -m politetenant.operator.model.docs --update README.md`"
    )


def test_field_reference_lists_every_field_of_the_crd() -> None:
    def paths(node: dict[str, Any], path: str) -> list[str]:
        found = [path]
        for name, child in node.get("properties", {}).items():
            found += paths(child, f"{path}.{name}")
        if "items" in node:
            found += [
                p for name, c in node["items"].get("properties", {}).items() for p in paths(c, f"{path}[].{name}")
            ]
        return found

    root = openapi_schema()["properties"]
    expected = ["metadata.name"]
    for part in ("spec", "status"):
        expected += [p for name, c in root[part]["properties"].items() for p in paths(c, f"{part}.{name}")]
    table = docs.field_reference_markdown()
    listed = [line.split("|")[1].strip().strip("`") for line in table.splitlines() if line.startswith("| `")]
    assert listed == expected


def test_field_reference_says_constraints_in_words() -> None:
    table = docs.field_reference_markdown()
    row = {line.split("|")[1].strip().strip("`"): line for line in table.splitlines() if line.startswith("| `")}
    assert "From 5 to 100000" in row["spec.tracking.minSegmentSize"]
    assert "`eu-germany`" in row["spec.region"] and "immutable" in row["spec.region"]
    assert "Five numeric cron fields" in row["spec.retention.schedule"]
    assert "Rule:" not in row["spec.deletionPolicy"]  # a legal hold never needs the policy changed first
    assert "whatever deletionPolicy says" in row["spec.legalHold"]
    assert "Rule: defaultMode must be one of allowedModes." in row["spec.tracking.defaultMode"]
    assert "Rule: tls needs exactly one of" in row["spec.tracker.tls"]
    assert "`ClusterIssuer`" in row["spec.tracker.tls.issuerRef.kind"]
    assert "| required |" in row["spec.displayName"]
    assert "^" not in table, "every pattern should be said in words (add it to docs.PATTERN_WORDS)"


def test_update_readme_replaces_only_the_marked_section() -> None:
    readme = f"# Title\n\nBefore.\n\n{docs.START_MARKER}\nold table\n{docs.END_MARKER}\n\nAfter.\n"
    updated = docs.update_readme(readme)
    assert updated.startswith("# Title\n\nBefore.\n\n") and updated.endswith(f"{docs.END_MARKER}\n\nAfter.\n")
    assert docs.readme_section(updated) == docs.field_reference_markdown()
    assert docs.update_readme(updated) == updated
    with pytest.raises(ValueError, match="field-reference"):
        docs.update_readme("# no markers\n")
