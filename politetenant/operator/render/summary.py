"""One line per rendered object, with the facts a reviewer checks first (placement, size, schedule)."""

from __future__ import annotations

from typing import Any

REGION_LABEL = "topology.kubernetes.io/region"


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet"):
        return dict(spec.get("template", {}).get("spec", {}))
    if obj["kind"] == "CronJob":
        return dict(spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {}))
    return None


def _regions(affinity: dict[str, Any]) -> list[str]:
    required = affinity.get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", {})
    return [
        value
        for term in required.get("nodeSelectorTerms", [])
        for expr in term.get("matchExpressions", [])
        if expr.get("key") == REGION_LABEL
        for value in expr.get("values", [])
    ]


def _facts(obj: dict[str, Any]) -> list[str]:
    kind, spec = obj["kind"], obj.get("spec", {})
    facts: list[str] = []
    if kind == "Namespace":
        labels = obj["metadata"].get("labels", {})
        facts.append(f"pod-security={labels.get('pod-security.kubernetes.io/enforce', '-')}")
    if kind in ("Deployment", "StatefulSet"):
        facts.append(f"replicas={spec.get('replicas')}")
    pod = _pod_spec(obj)
    if pod is not None:
        regions = _regions(pod.get("affinity", {}))
        facts.append(f"pinned to {','.join(regions) or 'nowhere'}")
        facts.append("image=" + ",".join(dict.fromkeys(c.get("image", "?") for c in pod.get("containers", []))))
    for claim in spec.get("volumeClaimTemplates", []):
        claim_spec = claim.get("spec", {})
        size = claim_spec.get("resources", {}).get("requests", {}).get("storage")
        facts.append(f"volume {size} on {claim_spec.get('storageClassName')}")
    if kind == "Cluster":
        storage = spec.get("storage", {})
        facts.append(f"instances={spec.get('instances')} volume {storage.get('size')} on {storage.get('storageClass')}")
        facts.append(f"pinned to {','.join(_regions(spec.get('affinity', {}))) or 'see affinity'}")
    if kind == "CronJob":
        facts.append(f"schedule '{spec.get('schedule')}'" + (" SUSPENDED (legal hold)" if spec.get("suspend") else ""))
    if kind == "Ingress":
        rules = spec.get("rules", [])
        paths = [p.get("path") for rule in rules for p in rule.get("http", {}).get("paths", [])]
        hosts = ",".join(rule.get("host") for rule in rules)
        facts.append(f"host={hosts} paths={','.join(paths)} tls={'yes' if spec.get('tls') else 'no'}")
    if kind == "NetworkPolicy":
        facts.append("types=" + ",".join(spec.get("policyTypes", [])))
    if kind == "ConfigMap":
        facts.append("keys=" + ",".join(sorted(obj.get("data", {}))))
    if kind == "Service":
        facts.append("ports=" + ",".join(str(p.get("port")) for p in spec.get("ports", [])))
    if kind == "PodDisruptionBudget":
        facts.append(f"minAvailable={spec.get('minAvailable', '-')} maxUnavailable={spec.get('maxUnavailable', '-')}")
    if kind == "ResourceQuota":
        hard = spec.get("hard", {})
        facts.append(f"pods={hard.get('pods')} requests.cpu={hard.get('requests.cpu')}")
    return facts


def summarize(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    where = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
    return f"{obj['kind']:<22} {where:<40} {'; '.join(_facts(obj))}".rstrip()


def tracker_settings_yaml(objects: list[dict[str, Any]]) -> str:
    """The TrackerSettings the tenant's tracker will read (the rendered ConfigMap's settings.yaml)."""
    for obj in objects:
        if obj["kind"] == "ConfigMap" and "settings.yaml" in obj.get("data", {}):
            return str(obj["data"]["settings.yaml"])
    raise ValueError("no ConfigMap with settings.yaml among the rendered objects")
