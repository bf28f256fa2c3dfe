"""What of a tenant's tracker the Internet reaches: the Ingresses' hosts, paths, TLS and annotations.

The public host (``spec.tracker.host``) routes only the public routes: the beacons and links ``/o/``,
``/t/`` and ``/c/``, and the recipient page ``/p/`` (``GET /p/{token}``, ``POST /p/{token}/object``),
where whoever holds a copy's token sees what is recorded for that copy and may object to tracking
(the tenant's notice links there). The API (which answers privacy officers with personal data), the dashboard ``/ui/``,
``/readyz`` and ``/metrics`` stay off the host every recipient's mail client talks to. The API
and the dashboard reach the Internet only through their own host (``spec.tracker.api``), an Ingress
routing ``/api/`` and ``/ui/`` alone, with the allowed client networks in the ingress controller's
source-range annotation.
In-cluster callers use the Service. Neither Ingress can reach the ops port: the Service the Ingresses
name has only the ``http`` port.
"""

from __future__ import annotations

from typing import Any

from politetenant.operator.model import names
from politetenant.operator.model.config import OperatorConfig
from politetenant.operator.model.tenant import PoliteTenant, Tls

# Prefix paths match whole path segments, so /o/ admits /o/TOKEN.gif and never /other.
PUBLIC_PATHS = ("/o/", "/t/", "/c/", "/p/")
API_PATHS = ("/api/", "/ui/")


def _issuer(tls: Tls | None, config: OperatorConfig) -> tuple[str, str, str] | None:
    """The cert-manager issuer of a host: its own, else (no tls at all) the operator's default."""
    if tls is not None:
        ref = tls.issuer_ref
        return (ref.name, ref.kind, ref.group) if ref is not None else None
    default = config.cert_manager_issuer
    return (default.name, default.kind, default.group) if default is not None else None


def _cert_manager_annotations(name: str, kind: str, group: str) -> dict[str, str]:
    """cert-manager's ingress-shim annotations for an issuer (external issuers name kind and group)."""
    if group == "cert-manager.io":
        return {"cert-manager.io/cluster-issuer" if kind == "ClusterIssuer" else "cert-manager.io/issuer": name}
    return {"cert-manager.io/issuer": name, "cert-manager.io/issuer-kind": kind, "cert-manager.io/issuer-group": group}


def _ingress(
    name: str, host: str, tls: Tls | None, paths: tuple[str, ...], issued_secret: str, config: OperatorConfig
) -> dict[str, Any]:
    secret = tls.secret_name if tls is not None else None
    annotations: dict[str, str] = {}
    issuer = _issuer(tls, config)
    if secret is None and issuer is not None:
        annotations = _cert_manager_annotations(*issuer)
        secret = issued_secret
    return {
        "name": name,
        "host": host,
        "paths": list(paths),
        "class_name": config.ingress_class,
        "tls_secret": secret,
        "annotations": annotations,
    }


def ingresses(tenant: PoliteTenant, config: OperatorConfig) -> list[dict[str, Any]]:
    """Values of each Ingress the tenant asks for: the public host, then the API host."""
    tracker = tenant.spec.tracker
    found = []
    if tracker.host:
        found.append(_ingress(names.TRACKER, tracker.host, tracker.tls, PUBLIC_PATHS, names.INGRESS_TLS_SECRET, config))
    if tracker.api is not None:
        api = _ingress(
            names.TRACKER_API, tracker.api.host, tracker.api.tls, API_PATHS, names.API_INGRESS_TLS_SECRET, config
        )
        ranges = ",".join(tracker.api.allowed_source_ranges or ())
        api["annotations"] = {**api["annotations"], config.api_source_range_annotation: ranges}
        found.append(api)
    return found


def public_base_url(tenant: PoliteTenant, config: OperatorConfig, found: list[dict[str, Any]]) -> str:
    """Where beacons and links point: the public host, else the in-cluster Service."""
    for ingress in found:
        if ingress["name"] == names.TRACKER:
            return f"{'https' if ingress['tls_secret'] else 'http'}://{ingress['host']}"
    return f"http://{names.TRACKER}.{tenant.namespace}.svc.{config.cluster_domain}"
