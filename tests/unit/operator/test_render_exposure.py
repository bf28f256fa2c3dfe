"""What of a tenant's tracker the Internet reaches: the public host serves beacons, links and the
recipient page only, the API only on its own host from allowed networks, health and metrics on an ops
port no Ingress routes and only the metrics scraper's namespace reaches."""

from __future__ import annotations

from typing import Any

import pytest

from politetenant.operator.model.config import ConfigError, load_operator_config
from politetenant.operator.render.summary import summarize
from tests.unit.operator.test_render import (
    DEFAULTS,
    make_config,
    make_tenant,
    of_kind,
    one,
    policy,
    render,
    tracker,
    tracker_container,
    tracker_env,
    validate,
)

HOST = "t.acme.example"
API_HOST = "api.acme.example"
OFFICE = ["203.0.113.0/24", "2001:db8::/32"]
WHITELIST = "nginx.ingress.kubernetes.io/whitelist-source-range"
# What must never be reachable on the Internet-facing host: health, metrics, personal data.
PRIVATE_PATHS = ("/", "/metrics", "/readyz", "/healthz", "/api/v1/subjects/access", "/api/v1/audit", "/ui/")
PUBLIC_REQUESTS = ("/o/TOKEN.gif", "/t/TOKEN.gif", "/c/TOKEN/3", "/p/TOKEN", "/p/TOKEN/object")


def prefix_matches(prefix: str, path: str) -> bool:
    """Ingress pathType Prefix as the Ingress API defines it: whole '/'-separated elements, a trailing
    '/' ignored (/o/ matches /o and /o/x, never /other)."""
    want = [part for part in prefix.split("/") if part]
    have = [part for part in path.split("/") if part]
    return have[: len(want)] == want


def routed(ingress: dict[str, Any], path: str) -> list[tuple[str, Any]]:
    """(service, port) every rule of the Ingress sends ``path`` to."""
    return [
        (p["backend"]["service"]["name"], p["backend"]["service"]["port"])
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
        if (p["pathType"] == "Prefix" and prefix_matches(p["path"], path))
        or (p["pathType"] == "Exact" and p["path"] == path)
    ]


def with_api(**api: Any) -> dict[str, Any]:
    return {"host": HOST, "api": {"host": API_HOST, "allowedSourceRanges": OFFICE, **api}}


def test_the_public_host_routes_beacons_links_and_the_recipient_page_and_nothing_else() -> None:
    ingress = one(render(make_tenant(tracker={"host": HOST})), "Ingress", "tracker")
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [
        ("/o/", "Prefix"),
        ("/t/", "Prefix"),
        ("/c/", "Prefix"),
        ("/p/", "Prefix"),
    ]
    for path in PUBLIC_REQUESTS:
        assert routed(ingress, path) == [("tracker", {"name": "http"})], path
    for path in PRIVATE_PATHS:
        assert routed(ingress, path) == [], path
    assert routed(ingress, "/other/x") == [], "a prefix matches whole path segments only"
    assert routed(ingress, "/page") == [] and routed(ingress, "/privacy") == []
    validate(ingress)


def test_a_recipient_reaches_their_page_from_the_link_in_the_notice_but_the_api_host_does_not_serve_it() -> None:
    """The notice links to {public_base_url}/p/TOKEN: that URL must be routed where the beacons are."""
    objects = render(make_tenant(tracker=with_api(), tracking={"notice": {"texts": {"en": "About this message"}}}))
    settings = one(objects, "ConfigMap", "tracker-settings")["data"]["settings.yaml"]
    assert f"public_base_url: http://{HOST}\n" in settings
    public, api = one(objects, "Ingress", "tracker"), one(objects, "Ingress", "tracker-api")
    for path in ("/p/TOKEN", "/p/TOKEN/object"):
        assert routed(public, path) == [("tracker", {"name": "http"})], path
        assert routed(api, path) == [], path


def test_without_an_api_host_the_api_has_no_ingress() -> None:
    objects = render(make_tenant(tracker={"host": HOST}))
    assert [i["metadata"]["name"] for i in of_kind(objects, "Ingress")] == ["tracker"]


def test_an_api_host_gets_an_ingress_for_the_api_and_dashboard_alone_from_the_allowed_networks() -> None:
    objects = render(make_tenant(tracker=with_api()))
    api = one(objects, "Ingress", "tracker-api")
    assert api["spec"]["rules"][0]["host"] == API_HOST
    paths = [(p["path"], p["pathType"]) for p in api["spec"]["rules"][0]["http"]["paths"]]
    assert paths == [("/api/", "Prefix"), ("/ui/", "Prefix")]
    assert routed(api, "/api/v1/messages") == [("tracker", {"name": "http"})]
    assert routed(api, "/ui/messages") == [("tracker", {"name": "http"})]
    for path in ("/", "/metrics", "/readyz", "/o/TOKEN.gif", "/p/TOKEN"):
        assert routed(api, path) == [], path
    assert api["metadata"]["annotations"][WHITELIST] == "203.0.113.0/24,2001:db8::/32"
    public = one(objects, "Ingress", "tracker")
    assert WHITELIST not in public["metadata"]["annotations"], "beacons come from anywhere"
    assert routed(public, "/api/v1/messages") == []
    validate(api)


def test_the_source_range_annotation_is_the_operator_configuration() -> None:
    config = make_config(api_source_range_annotation="haproxy.org/allow-list")
    api = one(render(make_tenant(tracker=with_api()), config), "Ingress", "tracker-api")
    assert api["metadata"]["annotations"]["haproxy.org/allow-list"] == "203.0.113.0/24,2001:db8::/32"
    assert WHITELIST not in api["metadata"]["annotations"]
    env = {"POLITE_OPERATOR_API_SOURCE_RANGE_ANNOTATION": "traefik.example/ips"}
    assert load_operator_config(None, env).api_source_range_annotation == "traefik.example/ips"


@pytest.mark.parametrize(
    ("api_tls", "config", "secret", "annotations"),
    [
        (None, {}, None, {}),
        ({"secretName": "api-cert"}, {}, "api-cert", {}),
        ({"issuerRef": {"name": "le"}}, {}, "tracker-api-tls", {"cert-manager.io/cluster-issuer": "le"}),
        (None, {"cert_manager_issuer": {"name": "ca"}}, "tracker-api-tls", {"cert-manager.io/cluster-issuer": "ca"}),
    ],
    ids=["plain", "secret", "issuer", "default-issuer"],
)
def test_the_api_host_has_tls_of_its_own(
    api_tls: dict[str, Any] | None, config: dict[str, Any], secret: str | None, annotations: dict[str, str]
) -> None:
    spec = with_api(**({"tls": api_tls} if api_tls else {}))
    api = one(render(make_tenant(tracker=spec), make_config(**config)), "Ingress", "tracker-api")
    if secret is None:
        assert "tls" not in api["spec"]
    else:
        assert api["spec"]["tls"] == [{"hosts": [API_HOST], "secretName": secret}]
    issued = {k: v for k, v in api["metadata"]["annotations"].items() if k.startswith("cert-manager.io/")}
    assert issued == annotations


def test_an_api_host_without_a_public_host_keeps_beacons_in_the_cluster() -> None:
    objects = render(make_tenant(tracker={"api": {"host": API_HOST, "allowedSourceRanges": ["10.0.0.0/8"]}}))
    assert [i["metadata"]["name"] for i in of_kind(objects, "Ingress")] == ["tracker-api"]
    settings = one(objects, "ConfigMap", "tracker-settings")["data"]["settings.yaml"]
    assert "public_base_url: http://tracker.polite-acme.svc.cluster.local" in settings


def test_health_and_metrics_are_on_the_ops_port_which_no_ingress_or_routed_service_reaches() -> None:
    objects = render(make_tenant(tracker=with_api()))
    container = tracker_container(objects)
    assert container["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "ops", "containerPort": 9090, "protocol": "TCP"},
    ]
    assert tracker_env(objects)["POLITE_OPS_PORT"] == "9090"
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "ops"}, probe
    routed_services = {
        p["backend"]["service"]["name"]
        for ingress in of_kind(objects, "Ingress")
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert routed_services == {"tracker"}
    assert one(objects, "Service", "tracker")["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    ops = one(objects, "Service", "tracker-ops")
    assert ops["spec"]["clusterIP"] == "None"  # per-pod addresses for the scraper, no load balancing
    assert ops["spec"]["ports"] == [{"name": "ops", "port": 9090, "targetPort": "ops", "protocol": "TCP"}]
    assert tracker(objects)["spec"]["serviceName"] == "tracker-ops"


def test_the_ops_port_admits_only_the_metrics_scraper_namespace() -> None:
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    ingress_nginx = {"kubernetes.io/metadata.name": "ingress-nginx"}
    config = make_config(ingress_namespace_selector=ingress_nginx, metrics_namespace_selector=monitoring)
    rules = policy(render(make_tenant(), config), "tracker-ingress")["ingress"]
    assert rules == [
        {"from": [{"namespaceSelector": {"matchLabels": ingress_nginx}}], "ports": [{"protocol": "TCP", "port": 8080}]},
        {"from": [{"namespaceSelector": {"matchLabels": monitoring}}], "ports": [{"protocol": "TCP", "port": 9090}]},
    ]
    # No scraper configured: no namespace at all reaches the ops port (kubelet probes come from the node).
    unscraped = policy(render(make_tenant()), "tracker-ingress")["ingress"]
    assert all(port["port"] != 9090 for rule in unscraped for port in rule["ports"])


def test_the_summary_shows_what_each_ingress_routes() -> None:
    objects = render(make_tenant(tracker=with_api()))
    lines = {o["metadata"]["name"]: summarize(o) for o in of_kind(objects, "Ingress")}
    assert "host=t.acme.example paths=/o/,/t/,/c/,/p/" in lines["tracker"]
    assert "host=api.acme.example paths=/api/" in lines["tracker-api"]


def test_an_empty_source_range_annotation_is_refused_by_the_configuration() -> None:
    with pytest.raises(ConfigError, match="api_source_range_annotation"):
        load_operator_config(None, {"POLITE_OPERATOR_API_SOURCE_RANGE_ANNOTATION": ""})
    assert DEFAULTS.api_source_range_annotation == WHITELIST
