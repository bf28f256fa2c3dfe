"""The operator's own kopf settings, written once at startup: nothing is left to kopf's defaults that
decides how tenants are stored, watched, or reported.
"""

from __future__ import annotations

import logging
import os
import random
import socket

import kopf

from politetenant.operator.runtime import storage

# Our own finalizer name, so `kubectl get ptenant -o yaml` says whose it is, and a tenant's deletion
# is visibly held by the PoliteTenant operator (not by "kopf.zalando.org/KopfFinalizerMarker").
FINALIZER = "polite.io/finalizer"
# kopf's handler progress and last-handled spec live in annotations under this prefix. Annotations,
# not status: the CRD's status schema is structural and the API server prunes a `status.kopf` it
# does not describe, so progress kept there would vanish and retries would start over.
STORAGE_PREFIX = "kopf.polite.io"
# Watch timeouts. Without them a watch whose connection silently died (a NAT or load-balancer
# timeout) never ends, and the operator stops seeing changes. The server ends each watch after
# SERVER_TIMEOUT; the client gives up a little later if even that end never arrives.
WATCH_SERVER_TIMEOUT = 300
WATCH_CLIENT_TIMEOUT = 330
WATCH_CONNECT_TIMEOUT = 30
REQUEST_TIMEOUT = 60
# kopf's own log lines do not become Events (only a framework failure would): the operator posts its
# own, with reasons from one list (``reasons``), once per change. kopf's would carry reason "Logging",
# repeat "handler succeeded" on every resync and "failed temporarily" on every retry of a legal hold
# that may last months. Unexpected handler errors still become an Event (OperatorError, handlers).
EVENT_LEVEL = logging.CRITICAL
# Peering priorities are drawn from this range; two replicas drawing the same would both pause.
PRIORITY_RANGE = (1, 2**30)


# What a tenant waits for by design (workloads rolling out, a legal hold, a namespace going away):
# kopf logs every delayed retry as "failed temporarily" at ERROR; these are not failures.
EXPECTED_WAITS = ("waiting for the rollout", "deletion held: legal hold", "waiting for namespace")


class ExpectedWaitsAreInfo(logging.Filter):
    """Log kopf's "failed temporarily" lines of an expected wait at INFO, so ERROR means a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR:
            message = record.getMessage()
            if "failed temporarily: " in message and any(wait in message for wait in EXPECTED_WAITS):
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_EXPECTED_WAITS_FILTER = ExpectedWaitsAreInfo()

# What kopf says at INFO on every watch event of every child ("Handler 'drift.watched.services.core'
# succeeded.") and on every resync tick: 20 lines per tenant brought up, one per tenant per resync, and
# nothing an SRE acts on; the reconcile's own lines stay at INFO.
ROUTINE_SUCCESSES = ("Handler 'drift.", "Timer 'resync' succeeded")


class RoutineSuccessesAreDebug(logging.Filter):
    """Log kopf's success lines of the drift handlers and of the resync timer at DEBUG (dropped unless
    the logger shows DEBUG): at 500 tenants they were most of the log and a share of the CPU."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not record.getMessage().startswith(ROUTINE_SUCCESSES):
            return True
        if not record.getMessage().rstrip(".").endswith("succeeded"):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_ROUTINE_SUCCESSES_FILTER = RoutineSuccessesAreDebug()


def instance_name() -> str:
    """Who this replica is in Events and the peering object: the pod name (POD_ID), else the host."""
    return os.environ.get("POD_ID") or socket.gethostname()


def peering_priority() -> int:
    """A random priority per replica, so exactly one replica of the chart's two is active: kopf pauses
    every replica that sees a live peer with a higher priority, and all of them on a tie."""
    return random.SystemRandom().randint(*PRIORITY_RANGE)


def configure(settings: kopf.OperatorSettings, *, instance: str) -> None:
    """Apply the operator's settings (called from the startup handler)."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = storage.ProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = storage.DiffBaseStorage(
        prefix=STORAGE_PREFIX, key="last-handled-configuration"
    )
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = WATCH_CONNECT_TIMEOUT
    settings.networking.request_timeout = REQUEST_TIMEOUT
    settings.posting.level = EVENT_LEVEL
    settings.posting.reporting_component = "polite-operator"
    settings.posting.reporting_instance = instance
    settings.posting.event_name_prefix = "polite-operator-"
    objects_log = logging.getLogger("kopf.objects")
    for installed in (_EXPECTED_WAITS_FILTER, _ROUTINE_SUCCESSES_FILTER):
        if installed not in objects_log.filters:
            objects_log.addFilter(installed)
