"""Prometheus metrics of one tracker worker, in a registry of its own (tests run many apps)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "polite_requests", "HTTP requests by route and outcome", ["route", "outcome"], registry=r
        )
        self.rejected_tokens = Counter(
            "polite_rejected_tokens",
            "Tracking tokens that did not verify (forged, altered, foreign)",
            registry=r,
        )
        self.events_accepted = Counter("polite_events_accepted", "Events accepted into the buffer", registry=r)
        self.events_stored = Counter("polite_events_stored", "Events written to the database", registry=r)
        self.events_spooled = Counter(
            "polite_events_spooled",
            "Events written to the spool while the database was unavailable",
            registry=r,
        )
        self.events_spilled = Counter(
            "polite_events_spilled",
            "Events spooled because they waited longer than a flush interval (the database lags behind)",
            registry=r,
        )
        self.events_refused = Counter(
            "polite_events_refused", "Hits answered 503 because the event could not be kept", registry=r
        )
        self.events_buffered = Gauge("polite_events_buffered", "Events waiting in memory", registry=r)
        self.spool_bytes = Gauge("polite_spool_bytes", "Bytes waiting in spool files", registry=r)
        self.database_up = Gauge("polite_database_up", "1 when the last database call succeeded", registry=r)
        self.flush_seconds = Histogram(
            "polite_flush_seconds",
            "Time to write one batch of events",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.read_streams = Gauge("polite_read_streams", "Read-time beacons streaming now", registry=r)
        self._request_children: dict[tuple[str, int], Any] = {}

    def count_request(self, route: str, status: int) -> None:
        """Count one answered request by route and status class (``labels`` takes a lock: once per pair)."""
        key = (route, status // 100)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, f"{key[1]}xx")
        child.inc()
