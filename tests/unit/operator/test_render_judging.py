"""The seam between a tenant's spec and its tracker: segments, the recipients' notice and the judging
options written into the settings ConfigMap, read back by the tracker's own ``load_settings`` with the
environment its pod gets, and the audit anchor placed where it outlives the pod."""

from __future__ import annotations

import fnmatch
import ipaddress
import posixpath
import unicodedata
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from politetenant.operator.model import names
from politetenant.operator.model.tenant import PoliteTenant
from politetenant.operator.render.tracker_settings import _legible_yaml
from politetenant.settings import TrackerSettings, load_settings
from politetenant.tracker.ingest.spool import PATTERNS
from tests.unit.operator.test_render import make_tenant, one, render, tracker, tracker_container, validate

NOTICE: dict[str, Any] = {
    "texts": {
        "en": "How we measure this message, and how to opt out",
        "de": "Wie wir diese Nachricht messen – und wie Sie widersprechen",
        "ja": "このメッセージの計測について",
    },
    "defaultLanguage": "de",
}
JUDGING: dict[str, Any] = {
    "applePrivacyNetworks": ["17.0.0.0/8", "2620:149::/32"],
    "gatewayNetworks": ["40.92.0.0/15"],
    "scannerNetworks": ["198.51.100.0/24", "2001:db8:5::/48"],
    "earlyHitSeconds": 30,
    "burstSeconds": 5,
    "gatewayClickSeconds": 600,
}


def tracker_settings(tenant: PoliteTenant, directory: Path) -> TrackerSettings:
    """What the tenant's tracker reads: the ConfigMap's file, overlaid with its container's plain env."""
    objects = render(tenant)
    configmap = one(objects, "ConfigMap", names.SETTINGS_CONFIGMAP)
    path = directory / names.SETTINGS_FILE
    path.write_text(configmap["data"][names.SETTINGS_FILE], encoding="utf-8")
    environ = {var["name"]: var["value"] for var in tracker_container(objects)["env"] if "value" in var}
    return load_settings(path, environ=environ)


def test_the_tracker_reads_the_tenant_segments_notice_and_judging(tmp_path: Path) -> None:
    tenant = make_tenant(tracking={"segments": ["department", "site"], "notice": NOTICE}, judging=JUDGING)
    got = tracker_settings(tenant, tmp_path)
    assert got.segment_attributes == ("department", "site")
    assert got.notice_texts == NOTICE["texts"]
    assert got.notice_default_language == "de"
    assert got.apple_privacy_networks == ("17.0.0.0/8", "2620:149::/32")
    assert got.gateway_networks == ("40.92.0.0/15",)
    assert got.scanner_networks == ("198.51.100.0/24", "2001:db8:5::/48")
    assert (got.scanner_window_seconds, got.burst_seconds, got.gateway_click_seconds) == (30, 5, 600)


def test_a_tenant_that_says_nothing_gets_no_segments_no_notice_and_the_tracker_defaults(tmp_path: Path) -> None:
    got = tracker_settings(make_tenant(), tmp_path)
    defaults = TrackerSettings()
    assert got.segment_attributes == () and got.notice_texts == {}, "off by default"
    assert got.gateway_networks is None, "the tracker's built-in gateway list"
    for field in ("apple_privacy_networks", "scanner_networks", "scanner_window_seconds", "burst_seconds",
                  "gateway_click_seconds", "notice_default_language"):  # fmt: skip
        assert getattr(got, field) == getattr(defaults, field), field


def test_an_empty_gateway_list_turns_the_built_in_gateways_off(tmp_path: Path) -> None:
    settings_map = one(render(make_tenant(judging={"gatewayNetworks": []})), "ConfigMap", names.SETTINGS_CONFIGMAP)
    text = settings_map["data"][names.SETTINGS_FILE]
    assert "gateway_networks: []" in text
    assert tracker_settings(make_tenant(judging={"gatewayNetworks": []}), tmp_path).gateway_networks == ()
    unset = one(render(make_tenant()), "ConfigMap", names.SETTINGS_CONFIGMAP)["data"][names.SETTINGS_FILE]
    assert "gateway_networks" not in unset, "unset is left to the tracker, not written as null"


def test_the_notice_reaches_the_tracker_exactly_as_written(tmp_path: Path) -> None:
    """Any script, and characters YAML reads as line breaks (NEL, LS, PS), arrive unchanged."""
    texts = {**NOTICE["texts"], "fr": "Mesuré\u0085ligne\u2028suivante\u2029fin", "es": "  medido  "}
    tenant = make_tenant(tracking={"notice": {"texts": texts}})
    assert tracker_settings(tenant, tmp_path).notice_texts == texts
    validate(one(render(tenant), "ConfigMap", names.SETTINGS_CONFIGMAP))


def test_settings_yaml_reads_back_every_kind_of_character_exactly() -> None:
    """The settings are written legibly (notices in their own script) and read back only when they
    hold a U+0085: every other character must survive PyYAML's unicode output as written, alone, in a
    word and in a sentence (each a plain scalar, where PyYAML writes characters as themselves). Tried:
    every code point below U+0800, every separator, control and format character, a stride of the
    rest."""
    code_points = [
        c
        for c in range(0x110000)
        if not 0xD800 <= c <= 0xDFFF
        and (c < 0x800 or c % 509 == 0 or unicodedata.category(chr(c)) in ("Zs", "Zl", "Zp", "Cc", "Cf"))
    ]
    for start in range(0, len(code_points), 8192):
        data = {
            f"k{c}{chr(c)}": {"alone": chr(c), "word": f"a{chr(c)}b", "sentence": f"Hallo {chr(c)} Welt"}
            for c in code_points[start : start + 8192]
        }
        assert yaml.safe_load(_legible_yaml(data)) == data


def test_a_judging_change_rolls_the_tracker_pods() -> None:
    """The tracker reads its settings at start: a changed window must restart it to take effect."""

    def config_hash(tenant: PoliteTenant) -> str:
        return str(tracker(render(tenant))["spec"]["template"]["metadata"]["annotations"]["polite.io/config-hash"])

    base = config_hash(make_tenant())
    assert config_hash(make_tenant(judging={"burstSeconds": 11})) != base
    assert config_hash(make_tenant(tracking={"segments": ["department"]})) != base
    assert config_hash(make_tenant(tracking={"notice": {"texts": {"en": "Measured"}}})) != base


def test_the_audit_anchor_is_on_the_tracker_spool_volume_beside_not_among_the_spool_files(tmp_path: Path) -> None:
    """The root filesystem is read-only and emptyDirs die with the pod: the anchor must be on the
    StatefulSet's claim, where the tracker (its fsGroup) can write, and never read back as events."""
    objects = render(make_tenant())
    anchor = tracker_settings(make_tenant(), tmp_path).audit_anchor_path
    assert anchor is not None and posixpath.isabs(anchor)
    container = tracker_container(objects)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    holding = [path for path in mounts if posixpath.commonpath([path, anchor]) == path]
    assert len(holding) == 1, f"{anchor} is on no mounted volume (or on several): {sorted(mounts)}"
    mount = mounts[holding[0]]
    assert not mount.get("readOnly")
    claims = [c["metadata"]["name"] for c in tracker(objects)["spec"]["volumeClaimTemplates"]]
    assert mount["name"] in claims, "on a volume claim, so it survives the pod"
    assert posixpath.normpath(anchor) == anchor, "no .. out of the volume"
    assert not any(fnmatch.fnmatch(posixpath.basename(anchor), p) for p in PATTERNS), "the spool would replay it"


_TAGS = st.from_regex(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}", fullmatch=True)
_TEXTS = st.text(min_size=1, max_size=60).filter(lambda text: text.strip() != "")
_NETWORKS = st.ip_addresses().flatmap(
    lambda ip: st.integers(0, ip.max_prefixlen).map(
        lambda bits: str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))
    )
)


@st.composite
def options(draw: st.DrawFn) -> dict[str, Any]:
    """Any tracking and judging section the model admits (networks from ipaddress itself)."""
    texts = draw(st.dictionaries(_TAGS, _TEXTS, min_size=1, max_size=5))
    networks = st.lists(_NETWORKS, max_size=4, unique=True)
    return {
        "tracking": {
            "segments": draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,39}", fullmatch=True), max_size=5, unique=True)),
            "notice": {"texts": texts, "defaultLanguage": draw(st.sampled_from(sorted(texts)))},
        },
        "judging": {
            "applePrivacyNetworks": draw(networks),
            "gatewayNetworks": draw(st.one_of(st.none(), networks)),
            "scannerNetworks": draw(networks),
            "earlyHitSeconds": draw(st.integers(0, 3600)),
            "burstSeconds": draw(st.integers(0, 3600)),
            "gatewayClickSeconds": draw(st.integers(0, 86_400)),
        },
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options())
def test_whatever_the_model_admits_the_tracker_loads_unchanged(tmp_path: Path, spec: dict[str, Any]) -> None:
    judging = {k: v for k, v in spec["judging"].items() if v is not None}
    got = tracker_settings(make_tenant(tracking=spec["tracking"], judging=judging), tmp_path)
    notice = spec["tracking"]["notice"]
    assert (got.notice_texts, got.notice_default_language) == (notice["texts"], notice["defaultLanguage"])
    assert got.segment_attributes == tuple(spec["tracking"]["segments"])
    assert got.scanner_networks == tuple(judging["scannerNetworks"])
    assert got.gateway_networks == (None if "gatewayNetworks" not in judging else tuple(judging["gatewayNetworks"]))
    assert got.scanner_window_seconds == judging["earlyHitSeconds"]
