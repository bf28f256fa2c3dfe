"""Prometheus metrics of the operator (port 9090): tenants by phase and region, reconcile durations,
API errors, key rotations, Events by reason. Labels come from ``reasons`` like conditions and Events.

A registry of its own, not the process-wide default, so tests and a second operator in one process
never share counters.
"""

from __future__ import annotations

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
        self._phases: dict[str, tuple[str, str]] = {}

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

    def forget(self, name: str) -> None:
        """The tenant is gone."""
        old = self._phases.pop(name, None)
        if old is not None:
            self.tenants.labels(*old).dec()

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
