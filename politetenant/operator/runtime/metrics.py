"""Prometheus metrics of the operator (port 9090): tenants by phase and region, each tenant's
conditions, reconcile durations, API errors, key rotations, Events by reason. Labels come from
``reasons`` like conditions and Events.

``polite_tenant_condition`` is what the chart's alerts read (templates/prometheusrules.yaml): one
series per tenant and condition type, valued 1, labelled with the condition's status and reason the
way kube-state-metrics shows a pod's conditions, so an alert names the tenant and says why.

A registry of its own, not the process-wide default, so tests and a second operator in one process
never share counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from politetenant.operator.model.reasons import EventType, Reason

RECONCILE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.tenants = Gauge(
            "polite_tenants", "PoliteTenants this operator handles, by phase and region.", ["phase", "region"],
            registry=self.registry,
        )  # fmt: skip
        self.reconcile_seconds = Histogram(
            "polite_reconcile_duration_seconds", "Time to reconcile one tenant.", ["trigger"],
            buckets=RECONCILE_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.api_errors = Counter(
            "polite_api_errors_total", "Failed calls to the Kubernetes API or the key service.", ["api", "reason"],
            registry=self.registry,
        )  # fmt: skip
        self.key_rotations = Counter(
            "polite_key_rotations_total", "Key rotations carried out, by region.", ["region"], registry=self.registry
        )
        self.events = Counter(
            "polite_events_total", "Events the operator posted, by type and reason.", ["type", "reason"],
            registry=self.registry,
        )  # fmt: skip
        self.conditions = Gauge(
            "polite_tenant_condition",
            "A tenant's status conditions: 1 for the status and reason each condition type shows now.",
            ["tenant", "region", "type", "status", "reason"], registry=self.registry,
        )  # fmt: skip
        self._phases: dict[str, tuple[str, str]] = {}
        self._conditions: dict[str, set[tuple[str, str, str, str, str]]] = {}

    def tenant(self, name: str, region: str, phase: str) -> None:
        """Record the phase a tenant is in now."""
        new = (phase, region)
        old = self._phases.get(name)
        if old == new:
            return
        if old is not None:
            self.tenants.labels(*old).dec()
        self.tenants.labels(*new).inc()
        self._phases[name] = new

    def tenant_conditions(self, name: str, region: str, conditions: Iterable[Mapping[str, Any]]) -> None:
        """Show the conditions a tenant's status holds now (``status.conditions``); a condition type
        it no longer has, or a status or reason it no longer shows, leaves no series behind."""
        shown = {
            (name, region, str(c.get("type")), str(c.get("status")), str(c.get("reason")))
            for c in conditions
            if isinstance(c, Mapping) and c.get("type")
        }
        for gone in self._conditions.get(name, set()) - shown:
            self.conditions.remove(*gone)
        for labels in shown:
            self.conditions.labels(*labels).set(1)
        self._conditions[name] = shown

    def forget(self, name: str) -> None:
        """The tenant is gone."""
        old = self._phases.pop(name, None)
        if old is not None:
            self.tenants.labels(*old).dec()
        for gone in self._conditions.pop(name, set()):
            self.conditions.remove(*gone)

    @property
    def tenant_count(self) -> int:
        return len(self._phases)

    def api_error(self, api: str, reason: str) -> None:
        self.api_errors.labels(api, reason).inc()

    def event(self, type_: EventType, reason: Reason) -> None:
        self.events.labels(type_.value, reason.value).inc()

    def rotated(self, region: str) -> None:
        self.key_rotations.labels(region).inc()

    def serve(self, port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a pod's own port
        """Expose /metrics on ``port`` in a background thread."""
        start_http_server(port, addr=address, registry=self.registry)
