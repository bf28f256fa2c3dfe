"""The peers and ports of a tenant's NetworkPolicies (laid out in ``networkpolicies.yaml.j2``).

Everything in a tenant namespace starts denied both ways. Then, exactly:
- tracker pods accept their http port (8080: public routes and the API) from the ingress controller's
  namespace (``ingress_namespace_selector``; unset: from any namespace, since a cluster without that
  setting has said nothing narrower), and their ops port (9090: health and metrics) only from the
  metrics scraper's namespace (``metrics_namespace_selector``; unset: from no namespace);
- tracker and retention pods reach their database, Vault (provider vault only: purge seals its
  audit entry too) and cluster DNS; nothing else leaves either;
- database pods accept PostgreSQL from tracker and retention pods only. A CloudNativePG instance
  also needs its peers (replication), CNPG's operator (instance status on 8000), DNS and the
  Kubernetes API; a StatefulSet database needs no egress at all.
NetworkPolicies cannot name hosts, so Vault, an external database and the API server are CIDRs from
the operator configuration (an in-cluster Vault may be named by its namespace's labels instead);
where none is configured the rule allows that one port to any address. Kubelet probes come from the
node itself, which common CNIs admit whatever the policies say.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from politetenant.operator.model.config import OperatorConfig
from politetenant.operator.model.names import DATABASE_PORT, OPS_PORT, TRACKER_PORT
from politetenant.operator.model.tenant import DatabaseEngine

CNPG_STATUS_PORT = 8000  # the instance manager's status endpoint, called by CNPG's operator
API_SERVER_PORTS = (443, 6443)  # the kubernetes Service, and the endpoints behind it


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _pods(selector: dict[str, str]) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": selector}}


def _namespace(selector: dict[str, str] | None) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": selector} if selector else {}}


def _to_cidrs(cidrs: list[str], ports: list[dict[str, Any]], namespace: dict[str, str] | None = None) -> dict[str, Any]:
    """An egress rule to these CIDRs (or that namespace) on these ports; neither: these ports anywhere."""
    rule: dict[str, Any] = {"ports": ports}
    peers = [{"ipBlock": {"cidr": cidr}} for cidr in cidrs] + ([_namespace(namespace)] if namespace else [])
    if peers:
        rule["to"] = peers
    return rule


def vault_port(address: str) -> int:
    parts = urlsplit(address)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _vault_rule(address: str, config: OperatorConfig) -> dict[str, Any]:
    return _to_cidrs(config.vault.cidrs, _tcp(vault_port(address)), config.vault.namespace_selector)


def dns_rule(config: OperatorConfig) -> dict[str, Any]:
    peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": config.dns.namespace}},
        "podSelector": {"matchLabels": dict(config.dns.pod_labels)},
    }
    return {"to": [peer], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def network_values(
    *,
    engine: DatabaseEngine,
    selectors: dict[str, dict[str, str]],
    vault_address: str | None,
    config: OperatorConfig,
) -> dict[str, Any]:
    """Rules for ``networkpolicies.yaml.j2``: ``selectors`` has tracker, retention and database pods."""
    if engine is DatabaseEngine.EXTERNAL:
        database = _to_cidrs(config.external_db_cidrs, _tcp(config.external_db_port))
    else:
        database = {"to": [_pods(selectors["database"])], "ports": _tcp(DATABASE_PORT)}
    clients = [_pods(selectors["tracker"]), _pods(selectors["retention"])]
    database_ingress: list[dict[str, Any]] = []
    database_egress: list[dict[str, Any]] = []
    if engine is not DatabaseEngine.EXTERNAL:
        database_ingress.append({"from": clients, "ports": _tcp(DATABASE_PORT)})
    if engine is DatabaseEngine.CNPG:
        database_ingress += [
            {"from": [_pods(selectors["database"])], "ports": _tcp(DATABASE_PORT)},
            {"from": [_namespace({"kubernetes.io/metadata.name": config.cnpg_namespace})],
             "ports": _tcp(CNPG_STATUS_PORT)},
        ]  # fmt: skip
        database_egress = [
            {"to": [_pods(selectors["database"])], "ports": _tcp(DATABASE_PORT)},
            dns_rule(config),
            _to_cidrs(config.api_server_cidrs, _tcp(*API_SERVER_PORTS)),
        ]
    return {
        "tracker_port": TRACKER_PORT,
        "ops_port": OPS_PORT,
        "ingress_from": [_namespace(config.ingress_namespace_selector)],
        "metrics_from": [_namespace(config.metrics_namespace_selector)] if config.metrics_namespace_selector else [],
        "database": database,
        "vault": _vault_rule(vault_address, config) if vault_address else None,
        "dns": dns_rule(config),
        "database_ingress": database_ingress,
        "database_egress": database_egress,
    }
