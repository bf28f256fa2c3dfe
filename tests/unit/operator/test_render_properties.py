"""Any valid tenant renders objects the Kubernetes API accepts (Hypothesis over the spec space)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from politetenant.operator.model.config import load_operator_config
from politetenant.operator.model.tenant import PoliteTenant
from politetenant.operator.render.tenant import render_tenant
from politetenant.regions import REGION_NAMES, REGIONS
from tests.unit.operator.test_render import check_cnpg_cluster, validate

MODES = ["individual", "anonymous", "aggregate"]
CONFIG = load_operator_config(None, {})
_text = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() == s and s)


@st.composite
def tenants(draw: st.DrawFn) -> dict[str, Any]:
    allowed = draw(st.lists(st.sampled_from(MODES), min_size=1, max_size=3, unique=True))
    engine = draw(st.sampled_from([None, "cnpg", "statefulset", "external"]))
    provider = draw(st.sampled_from(["local", "vault"]))
    legal_hold = draw(st.booleans())
    spec: dict[str, Any] = {
        "displayName": draw(_text),
        "region": draw(st.sampled_from(REGION_NAMES)),
        "tracking": {
            "allowedModes": allowed,
            "defaultMode": draw(st.sampled_from(allowed)),
            "minSegmentSize": draw(st.integers(5, 1000)),
            "modeLocked": draw(st.booleans()),
        },
        "tracker": {"replicas": draw(st.integers(1, 12))},
        "database": {"storage": draw(st.sampled_from(["1Gi", "10Gi", "500Gi", "2Ti"]))},
        "retention": {
            "interactionDays": draw(st.integers(1, 3650)),
            "messageDays": draw(st.integers(1, 3650)),
            "schedule": draw(st.sampled_from(["17 3 * * *", "0 */6 * * *", "@daily", "5 4 * * 1-5"])),
        },
        "legalHold": legal_hold,
        "deletionPolicy": "Retain" if legal_hold else draw(st.sampled_from(["Retain", "Delete"])),
        "keys": {"provider": provider},
    }
    if engine is not None:
        spec["database"]["engine"] = engine
    if engine == "external":
        spec["database"]["externalSecretRef"] = {"name": "customer-dsn"}
    if provider == "vault":
        spec["keys"]["vault"] = {"address": "https://vault.example:8200"}
    if draw(st.booleans()):
        spec["tracker"]["host"] = draw(st.sampled_from(["t.acme.example", "insights.customer.example.com"]))
        tls = draw(st.sampled_from([None, {"secretName": "tracker-tls"}, {"issuerRef": {"name": "letsencrypt"}}]))
        if tls is not None:
            spec["tracker"]["tls"] = tls
    name = draw(st.from_regex(r"[a-z][a-z0-9]{0,20}", fullmatch=True))
    return {"apiVersion": "polite.io/v1alpha1", "kind": "PoliteTenant", "metadata": {"name": name}, "spec": spec}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tenants(), st.booleans())
def test_any_valid_tenant_renders_schema_valid_objects(document: dict[str, Any], cnpg: bool) -> None:
    tenant = PoliteTenant.model_validate(document)
    result = render_tenant(tenant, CONFIG, cnpg_available=cnpg)
    assert result.skipped_reason is None
    kinds = [obj["kind"] for obj in result.objects]
    assert kinds[0] == "Namespace" and "StatefulSet" in kinds
    for obj in result.objects:
        if obj["apiVersion"] == "postgresql.cnpg.io/v1":  # not in the Kubernetes schemas: checked field by field
            region = REGIONS[document["spec"]["region"]]
            storage_class = region.storage_class[CONFIG.cloud]
            check_cnpg_cluster(
                obj, region.cloud_region(CONFIG.cloud), storage_class, document["spec"]["database"]["storage"]
            )
            continue
        validate(obj)
