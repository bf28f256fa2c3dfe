"""The chart's scrape configuration and dashboards (monitoring.serviceMonitor, monitoring.grafanaDashboards):
rendered by the real helm, with and without the Prometheus Operator's API, and checked against what
they must find: the operator's metrics Service, and the tracker pods and NetworkPolicies the operator
renders for a tenant. A monitor whose selector or port name is off by one character scrapes nothing
and says nothing, so the selectors are checked against the objects themselves.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from politetenant.operator.model.config import OperatorConfig
from politetenant.operator.model.tenant import PoliteTenant
from politetenant.operator.render.tenant import render_tenant
from tests.unit.test_helm_chart import CHART, KUBE_VERSIONS, NAMESPACE, RELEASE, helm, values_file

MONITORING_API = "monitoring.coreos.com/v1"
MONITOR_KINDS = {"ServiceMonitor", "PodMonitor"}
ENABLED: dict[str, Any] = {
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}, "interval": "15s"},
        "grafanaDashboards": {"enabled": True, "labels": {"grafana_dashboard": "1", "team": "sre"}},
    }
}

# The fields of monitoring.coreos.com/v1 ServiceMonitor and PodMonitor this chart writes, with their
# types, from the Prometheus Operator's CRDs (v0.93, example/prometheus-operator-crd/); unknown fields
# are refused, as a strict API server would. The rendered objects were checked once against the full
# upstream CRDs too.
_STRINGS = {"type": "array", "items": {"type": "string"}}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_SELECTOR = {"type": "object", "additionalProperties": False, "properties": {"matchLabels": _LABELS}}
_RELABELING = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "labelmap", "LabelMap"]},
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "regex": {"type": "string"},
        "targetLabel": {"type": "string"},
    },
}
_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                                                  "(([0-9]+)s)?(([0-9]+)ms)?)$"},
        "relabelings": {"type": "array", "items": _RELABELING},
    },
}  # fmt: skip
_NAMESPACES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"any": {"type": "boolean"}, "matchNames": _STRINGS},
}
MONITOR_SCHEMAS: dict[str, dict[str, Any]] = {
    kind: {
        "type": "object",
        "required": ["spec"],
        "additionalProperties": False,
        "properties": {
            "spec": {
                "type": "object",
                "required": ["selector", endpoints],
                "additionalProperties": False,
                "properties": {
                    "namespaceSelector": _NAMESPACES,
                    "selector": _SELECTOR,
                    endpoints: {"type": "array", "minItems": 1, "items": _ENDPOINT},
                },
            }
        },
    }
    for kind, endpoints in (("ServiceMonitor", "endpoints"), ("PodMonitor", "podMetricsEndpoints"))
}


@pytest.fixture(scope="module", autouse=True)
def schemas_read_once() -> Iterator[None]:
    """kubernetes-validate reads a schema file per call; read each once (validation is unchanged)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            kubernetes_validate.utils, "schema_contents", functools.cache(kubernetes_validate.utils.schema_contents)
        )
        yield


def render(directory: Path, values: dict[str, Any] | None = None, *, monitoring_api: bool) -> list[dict[str, Any]]:
    """`helm template` as against a cluster that serves the Prometheus Operator's API, or one that does not."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        args += ["--values", str(values_file(directory, values))]
    if monitoring_api:
        args += ["--api-versions", MONITORING_API]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {o["kind"] for o in objects}


def one(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    return found


def validate_monitor(obj: dict[str, Any]) -> None:
    assert obj["apiVersion"] == MONITORING_API
    assert obj["metadata"]["namespace"] == NAMESPACE
    jsonschema.Draft7Validator(MONITOR_SCHEMAS[obj["kind"]]).validate(
        {key: value for key, value in obj.items() if key not in ("apiVersion", "kind", "metadata")}
    )


@pytest.fixture(scope="module")
def enabled_with_api(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(tmp_path_factory.mktemp("with-api"), ENABLED, monitoring_api=True)


@pytest.fixture(scope="module")
def tenant_objects() -> list[dict[str, Any]]:
    """What the operator renders for a tenant whose scraper lives in namespace "monitoring"."""
    tenant = PoliteTenant.model_validate(
        {"apiVersion": "polite.io/v1alpha1", "kind": "PoliteTenant", "metadata": {"name": "acme"},
         "spec": {"displayName": "Acme Corp", "region": "eu-ireland"}}
    )  # fmt: skip
    config = OperatorConfig.model_validate(
        {"metrics_namespace_selector": {"kubernetes.io/metadata.name": "monitoring"}}
    )
    result = render_tenant(tenant, config)
    assert result.skipped_reason is None
    return result.objects


# --- when the monitors and the dashboards are rendered ------------------------------------------------


def test_monitors_render_only_where_the_cluster_serves_the_monitoring_api(
    tmp_path: Path, enabled_with_api: list[dict[str, Any]]
) -> None:
    assert MONITOR_KINDS <= kinds(enabled_with_api)
    without_api = render(tmp_path, ENABLED, monitoring_api=False)
    assert not MONITOR_KINDS & kinds(without_api), "an install on a cluster without the API would fail"


def test_nothing_for_monitoring_is_rendered_by_default(tmp_path: Path) -> None:
    objects = render(tmp_path, monitoring_api=True)
    assert not MONITOR_KINDS & kinds(objects)
    assert not [o for o in objects if o["metadata"]["name"].endswith("-dashboards")]


def test_without_operator_metrics_only_the_trackers_are_scraped(tmp_path: Path) -> None:
    objects = render(tmp_path, {**ENABLED, "metrics": {"enabled": False}}, monitoring_api=True)
    assert "PodMonitor" in kinds(objects)
    assert "ServiceMonitor" not in kinds(objects), "no metrics Service to select"


def test_monitors_carry_the_labels_prometheus_selects_them_by(enabled_with_api: list[dict[str, Any]]) -> None:
    for kind in MONITOR_KINDS:
        monitor = one(enabled_with_api, kind)
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        endpoints = monitor["spec"]["endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"]
        assert [e["interval"] for e in endpoints] == ["15s"]


# --- what the monitors find ------------------------------------------------------------------------


def test_servicemonitor_finds_the_operator_metrics_port(enabled_with_api: list[dict[str, Any]]) -> None:
    monitor = one(enabled_with_api, "ServiceMonitor")
    service = one(enabled_with_api, "Service", "-metrics")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()
    others = [o for o in enabled_with_api if o["kind"] == "Service" and o is not service]
    assert not [o for o in others if selected.items() <= o["metadata"].get("labels", {}).items()]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_podmonitor_finds_the_tracker_pods_the_operator_renders(
    enabled_with_api: list[dict[str, Any]], tenant_objects: list[dict[str, Any]]
) -> None:
    monitor = one(enabled_with_api, "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    selected = monitor["spec"]["selector"]["matchLabels"]
    pods = {o["metadata"]["name"]: o["spec"]["template"] for o in tenant_objects if "template" in o.get("spec", {})}
    scraped = [name for name, pod in pods.items() if selected.items() <= pod["metadata"]["labels"].items()]
    assert scraped == ["tracker"], f"the PodMonitor selects {scraped} of {sorted(pods)}"
    tracker = pods["tracker"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (container,) = tracker["spec"]["containers"]
    assert endpoint["port"] in {port["name"] for port in container["ports"]}
    assert endpoint["path"] == "/metrics"


def test_podmonitor_keeps_tenant_namespaces_and_labels_series_with_the_tenant(
    enabled_with_api: list[dict[str, Any]], tenant_objects: list[dict[str, Any]]
) -> None:
    (endpoint,) = one(enabled_with_api, "PodMonitor")["spec"]["podMetricsEndpoints"]
    keep, *copies = endpoint["relabelings"]
    assert keep["action"] == "keep" and keep["sourceLabels"] == ["__meta_kubernetes_namespace"]
    tracker = one(tenant_objects, "StatefulSet", "tracker")
    assert re.fullmatch(keep["regex"], tracker["metadata"]["namespace"])
    assert not re.fullmatch(keep["regex"], "kube-system") and not re.fullmatch(keep["regex"], "polite-")
    # Prometheus names a pod label __meta_kubernetes_pod_label_<name, non-alphanumerics as _>.
    meta = {
        "__meta_kubernetes_pod_label_" + re.sub(r"\W", "_", k)
        for k in tracker["spec"]["template"]["metadata"]["labels"]
    }
    assert {(c["sourceLabels"][0], c["targetLabel"]) for c in copies} == {
        ("__meta_kubernetes_pod_label_polite_io_tenant", "tenant"),
        ("__meta_kubernetes_pod_label_polite_io_region", "region"),
    }
    assert {c["sourceLabels"][0] for c in copies} <= meta


def test_tenant_network_policy_admits_the_scrape_from_the_configured_namespace(
    enabled_with_api: list[dict[str, Any]], tenant_objects: list[dict[str, Any]]
) -> None:
    (endpoint,) = one(enabled_with_api, "PodMonitor")["spec"]["podMetricsEndpoints"]
    (container,) = one(tenant_objects, "StatefulSet", "tracker")["spec"]["template"]["spec"]["containers"]
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == endpoint["port"]]
    policy = one(tenant_objects, "NetworkPolicy", "tracker-ingress")
    admitted = [
        rule["from"] for rule in policy["spec"]["ingress"] if {"protocol": "TCP", "port": port} in rule["ports"]
    ]
    assert admitted == [[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]]


# --- the dashboards' ConfigMap --------------------------------------------------------------------------


def test_dashboards_configmap_carries_the_sidecar_label_and_both_dashboards(
    enabled_with_api: list[dict[str, Any]],
) -> None:
    config_map = one(enabled_with_api, "ConfigMap", "-dashboards")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["labels"]["team"] == "sre"
    shipped = {
        f"politetenant-{path.name}": json.loads(path.read_text()) for path in (CHART / "dashboards").glob("*.json")
    }
    assert {key: json.loads(text) for key, text in config_map["data"].items()} == shipped
    assert len(shipped) == 2


def test_dashboards_do_not_need_the_monitoring_api(tmp_path: Path) -> None:
    only_dashboards = {"monitoring": {"grafanaDashboards": {"enabled": True}}}
    objects = render(tmp_path, only_dashboards, monitoring_api=False)
    config_map = one(objects, "ConfigMap", "-dashboards")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert not MONITOR_KINDS & kinds(objects)


# --- everything rendered is a valid object ----------------------------------------------------------


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_monitoring_object_is_valid(enabled_with_api: list[dict[str, Any]], kube_version: str) -> None:
    monitoring = [
        o for o in enabled_with_api if o["kind"] in MONITOR_KINDS or o["metadata"]["name"].endswith("-dashboards")
    ]
    assert len(monitoring) == 3
    for obj in monitoring:
        if obj["kind"] in MONITOR_KINDS:
            validate_monitor(obj)
        else:
            kubernetes_validate.validate(obj, kube_version, strict=True)


def test_monitor_validation_would_catch_a_misspelt_field(enabled_with_api: list[dict[str, Any]]) -> None:
    monitor = copy.deepcopy(one(enabled_with_api, "PodMonitor"))
    monitor["spec"]["podMetricEndpoints"] = monitor["spec"].pop("podMetricsEndpoints")
    with pytest.raises(jsonschema.ValidationError):
        validate_monitor(monitor)
