"""The API server refuses bad judging, segment and notice settings at ``kubectl apply``: the generated
CRD loaded into the Kubernetes emulator (OpenAPI, then CEL through ``tests/fakes/kube_cel.py``), and
a tenant created through it, as the API server stores and refuses it."""

from __future__ import annotations

from typing import Any

import kmock
import pytest

from politetenant.operator.model.crd import crd_manifest
from politetenant.operator.model.tracking import NOTICE_DEFAULT_HAS_TEXT, NOTICE_LANGUAGE_TAGS
from tests.fakes.kube_cel import check_crd_rules, validate_custom_resource
from tests.fakes.kube_emulator import ApiError, PoliteKubernetesEmulator, load_crd

Body = dict[str, Any]
OBJECT = 'Invalid value: "object"'


@pytest.fixture
def cluster() -> tuple[PoliteKubernetesEmulator, kmock.resource]:
    emulator = PoliteKubernetesEmulator(strict=False, validators=[validate_custom_resource])
    (resource,) = load_crd(emulator, crd_manifest())
    return emulator, resource


def tenant(name: str, **spec: Any) -> Body:
    body = {"displayName": "Acme", "region": "eu-germany", **spec}
    return {"apiVersion": "polite.io/v1alpha1", "kind": "PoliteTenant", "metadata": {"name": name}, "spec": body}


def causes(cluster: tuple[PoliteKubernetesEmulator, kmock.resource], body: Body) -> list[tuple[str, str]]:
    """(field, message) of each cause of the 422 the API server answers ``body`` with."""
    emulator, resource = cluster
    with pytest.raises(ApiError) as caught:
        emulator.create_object(resource, body)
    status = caught.value.status
    assert (status["code"], status["reason"]) == (422, "Invalid"), status
    return [(c["field"], c["message"]) for c in status["details"]["causes"]]


def test_the_emulator_enforces_every_rule_of_the_crd() -> None:
    """No rule of the generated CRD names a function the emulator's CEL engine lacks (so none is skipped)."""
    assert check_crd_rules(crd_manifest()) == []


def test_a_tenant_with_segments_notice_and_judging_is_stored_with_the_defaults_filled_in(
    cluster: tuple[PoliteKubernetesEmulator, kmock.resource],
) -> None:
    emulator, resource = cluster
    notice = {
        "texts": {"en": "About this message", "de": "Über diese Nachricht", "ja": "このメッセージについて"},
        "defaultLanguage": "de",
    }
    body = tenant(
        "acme",
        tracking={"segments": ["department", "site"], "notice": notice},
        judging={"scannerNetworks": ["198.51.100.0/24"], "gatewayNetworks": []},
    )
    stored = emulator.create_object(resource, body)["spec"]
    assert stored["tracking"]["notice"] == notice
    assert stored["tracking"]["segments"] == ["department", "site"]
    assert stored["judging"] == {
        "applePrivacyNetworks": ["17.0.0.0/8"],
        "gatewayNetworks": [],  # kept: an empty list means no gateways, not the built-in ones
        "scannerNetworks": ["198.51.100.0/24"],
        "earlyHitSeconds": 10,
        "burstSeconds": 10,
        "gatewayClickSeconds": 120,
    }
    plain = emulator.create_object(resource, tenant("plain"))["spec"]
    assert "notice" not in plain["tracking"] and "gatewayNetworks" not in plain["judging"]


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (
            {"tracking": {"notice": {"texts": {"de": "Zu dieser Nachricht"}}}},
            "spec.tracking.notice.defaultLanguage",
            f"{OBJECT}: {NOTICE_DEFAULT_HAS_TEXT.message}",
        ),
        (
            {"tracking": {"notice": {"texts": {"en": "About", "English": "About"}}}},
            "spec.tracking.notice.texts",
            f"{OBJECT}: {NOTICE_LANGUAGE_TAGS.message}",
        ),
        (
            {"tracking": {"notice": {"texts": {f"l{a}{b}": "x" for a in "abc" for b in "abcdefg"} | {"en": "x"}}}},
            "spec.tracking.notice.texts",
            "Too many: 22: must have at most 20 items",
        ),
        (
            {"tracking": {"notice": {"texts": {"en": "x" * 1001}}}},
            "spec.tracking.notice.texts.en",
            "Too long: may not be more than 1000 bytes",
        ),
        (
            {"tracking": {"notice": {"texts": {"en": "   "}}}},
            "spec.tracking.notice.texts.en",
            None,
        ),
        ({"tracking": {"segments": ["Department"]}}, "spec.tracking.segments[0]", None),
        ({"judging": {"scannerNetworks": ["10.0.0.0"]}}, "spec.judging.scannerNetworks[0]", None),
        ({"judging": {"applePrivacyNetworks": ["17.0.0.0/33"]}}, "spec.judging.applePrivacyNetworks[0]", None),
        (
            {"judging": {"earlyHitSeconds": 3601}},
            "spec.judging.earlyHitSeconds",
            "Invalid value: 3601: spec.judging.earlyHitSeconds in body should be less than or equal to 3600",
        ),
        (
            {"judging": {"gatewayClickSeconds": "120"}},
            "spec.judging.gatewayClickSeconds",
            'Invalid value: "120": spec.judging.gatewayClickSeconds in body must be of type integer',
        ),
    ],
    ids=[
        "default-language-without-text",
        "key-not-a-language-tag",
        "too-many-languages",
        "notice-too-long",
        "blank-notice",
        "segment-name",
        "address-not-network",
        "prefix-too-long",
        "early-window-too-long",
        "seconds-as-string",
    ],
)
def test_a_bad_tenant_is_refused_at_the_field_to_fix(
    cluster: tuple[PoliteKubernetesEmulator, kmock.resource], spec: Body, field: str, message: str | None
) -> None:
    [(where, said)] = causes(cluster, tenant("bad", **spec))
    assert where == field
    if message is None:  # an OpenAPI pattern: the API server quotes it
        assert "should match" in said, said
    else:
        assert said == message
