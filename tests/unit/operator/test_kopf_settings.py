"""The operator's own kopf settings: what a run applies, and how kopf's log lines read to an SRE."""

from __future__ import annotations

import logging

import kopf
import pytest

from politetenant.operator.runtime import settings


def test_configure_sets_our_finalizer_storage_timeouts_and_quiet_events() -> None:
    operator_settings = kopf.OperatorSettings()
    settings.configure(operator_settings, instance="polite-operator-0")
    assert operator_settings.persistence.finalizer == "polite.io/finalizer"
    assert operator_settings.watching.server_timeout == settings.WATCH_SERVER_TIMEOUT
    assert operator_settings.posting.level == logging.CRITICAL
    assert operator_settings.posting.reporting_instance == "polite-operator-0"


def _kopf_line(message: str) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    "why",
    [
        "waiting for the rollout: TrackerReady: 0 of 2 tracker pods ready; looking again in 2 s",
        "deletion held: legal hold",
        "waiting for namespace polite-acme to go",
    ],
)
def test_a_retry_that_is_an_expected_wait_is_logged_at_info(why: str) -> None:
    record = _kopf_line(f"Handler 'reconcile_tenant' failed temporarily: {why}")
    assert settings.ExpectedWaitsAreInfo().filter(record)
    assert (record.levelno, record.levelname) == (logging.INFO, "INFO")


def test_a_real_temporary_failure_stays_an_error() -> None:
    record = _kopf_line("Handler 'reconcile_tenant' failed temporarily: Kubernetes API: 503 Service Unavailable")
    assert settings.ExpectedWaitsAreInfo().filter(record)
    assert record.levelno == logging.ERROR


def test_configure_installs_the_filter_once_on_kopfs_object_logger() -> None:
    for _ in range(2):
        settings.configure(kopf.OperatorSettings(), instance="x")
    filters = [f for f in logging.getLogger("kopf.objects").filters if isinstance(f, settings.ExpectedWaitsAreInfo)]
    assert len(filters) == 1


def _kopf_info(message: str) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, message, None, None)


@pytest.mark.parametrize("message", ["Handler 'drift.watched.services.core' succeeded.", "Timer 'resync' succeeded."])
def test_routine_successes_of_every_child_event_and_resync_are_debug(message: str) -> None:
    record = _kopf_info(message)
    logger = logging.getLogger("kopf.objects")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert not settings.RoutineSuccessesAreDebug().filter(record)  # dropped at INFO
    finally:
        logger.setLevel(level)
    assert record.levelno == logging.DEBUG


@pytest.mark.parametrize(
    "message", ["Handler 'reconcile' succeeded.", "Handler 'drift.watched.services.core' failed with an exception."]
)
def test_the_reconcile_and_failures_stay_as_kopf_says(message: str) -> None:
    record = _kopf_info(message)
    assert settings.RoutineSuccessesAreDebug().filter(record)
    assert record.levelno == logging.INFO
