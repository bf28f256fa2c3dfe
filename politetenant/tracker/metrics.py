"""Prometheus metrics of one tracker worker, in a registry of its own (tests run many apps).

With ``--workers N`` every worker is a process of its own, and a scrape reaches one of them. So the
supervisor gives the workers a directory (``share_between_processes``, prometheus_client's
multiprocess mode): each worker's values live in memory-mapped files there, and a scrape, whichever
worker takes it, adds up every worker's files. Counters of a worker that died stay in the sum, so
they never go backwards; the supervisor drops a dead worker's gauges (``forget_process``). A single
worker (``serve`` without ``--workers``, the demo, the tests) keeps plain in-memory values.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_shared_dir: str | None = None  # set in a worker process of a supervisor; None everywhere else


def new_shared_directory() -> str:
    """A fresh, private directory for the workers' metric files (the supervisor removes it at exit)."""
    return tempfile.mkdtemp(prefix="polite-metrics-")


def remove_shared_directory(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def share_between_processes(directory: str) -> None:
    """Make this process's metrics add up with its sibling workers' (call in the worker, before any
    ``Metrics`` is built). prometheus_client chooses file-backed values when it is imported and the
    variable is set; the supervisor imported it long before forking, so the choice is made again here."""
    global _shared_dir
    os.environ[_MULTIPROC_ENV] = directory
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _shared_dir = directory


def forget_process(directory: str, pid: int) -> None:
    """A worker died: drop its live gauges (buffered events, streams) from the sum; its counters stay."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


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
        self.audit_anchor_failures = Counter(
            "polite_audit_anchor_failures",
            "Audit entries stored but not appended to the anchor file (see the log)",
            registry=r,
        )
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
        self.spool_full_refusals = Counter(
            "polite_spool_full_refusals",
            "Hits answered 503 because the spool reached spool_max_bytes while the database took no events",
            registry=r,
        )
        self.events_buffered = Gauge(
            "polite_events_buffered", "Events waiting in memory", registry=r, multiprocess_mode="livesum"
        )
        # Every worker measures the whole spool directory, so the workers agree: the largest is the figure.
        self.spool_bytes = Gauge(
            "polite_spool_bytes", "Bytes waiting in spool files", registry=r, multiprocess_mode="livemax"
        )
        self.spool_full = Gauge(
            "polite_spool_full",
            "1 while the spool is at spool_max_bytes and the database takes no events (hits get 503)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.database_up = Gauge(
            "polite_database_up",
            "1 when the last database call succeeded (with several workers: in every one of them)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.flush_seconds = Histogram(
            "polite_flush_seconds",
            "Time to write one batch of events",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.read_streams = Gauge(
            "polite_read_streams", "Read-time beacons streaming now", registry=r, multiprocess_mode="livesum"
        )
        self._request_children: dict[tuple[str, int], Any] = {}
        self._shared_dir = _shared_dir

    def count_request(self, route: str, status: int) -> None:
        """Count one answered request by route and status class (``labels`` takes a lock: once per pair)."""
        key = (route, status // 100)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, f"{key[1]}xx")
        child.inc()

    def exposition(self) -> bytes:
        """The text a scrape gets: this worker's registry, or every worker's files added up."""
        if self._shared_dir is None:
            return generate_latest(self.registry)
        everyone = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(everyone, path=self._shared_dir)  # type: ignore[no-untyped-call]
        return generate_latest(everyone)
