"""Every kopf handler of the operator, and nothing else: each one is a few lines that call the module
named for its concern (``reconcile``, ``deletion``, ``retries``, ``settings``, ``kube``, ``metrics``).

``build_registry`` registers them for one run: the drift timer's interval is a run option, so the
handlers are bound to it rather than to kopf's global registry at import time.

Handlers (PoliteTenant, cluster-wide):
- create / update / resume: reconcile the tenant; retried with backoff while something is pending,
  and looked at again within seconds while only its workloads are rolling out (``retries``);
- timer (every ``resync_seconds``): the same reconcile, which restores children changed by hand
  (a tenant reconciled moments ago by a change handler is left out of that tick);
- delete: legal hold, Retain or Delete (``deletion.offboard``), holding the finalizer until done;
- startup / login / cleanup / probe: settings, credentials, metrics server, ``/healthz``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from politetenant.operator.keys.lifecycle import KeyBackend
from politetenant.operator.keys.services import standard_keys
from politetenant.operator.kube import client as kube
from politetenant.operator.model.config import OperatorConfig
from politetenant.operator.model.reasons import EventType, Reason
from politetenant.operator.model.status import status_patch
from politetenant.operator.model.tenant import GROUP, PLURAL, VERSION
from politetenant.operator.runtime import settings as operator_settings
from politetenant.operator.runtime.deletion import offboard
from politetenant.operator.runtime.metrics import Metrics
from politetenant.operator.runtime.reconcile import Outcome, Runtime, announce, reconcile, tenant_ref
from politetenant.operator.runtime.retries import Reconciled, backoff, rollout_recheck

KeyBackendFactory = Callable[[kube.KubeApi, OperatorConfig, asyncio.AbstractEventLoop], KeyBackend]


@dataclass(frozen=True, slots=True)
class RunOptions:
    config: OperatorConfig
    metrics_port: int = 9090
    resync_seconds: float = 60.0
    instance: str = field(default_factory=operator_settings.instance_name)
    key_backend: KeyBackendFactory = standard_keys


def _lock(memo: Any, body: Mapping[str, Any]) -> asyncio.Lock:
    """One lock per tenant: the drift timer and a change handler never reconcile it at once."""
    locks: dict[str, asyncio.Lock] = memo.locks
    return locks.setdefault(_name(body), asyncio.Lock())


def _name(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["name"])


async def _handle(
    step: Callable[[Mapping[str, Any], Runtime], Awaitable[Outcome]],
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,
    retry: int | None,
) -> None:
    """Run a step under the tenant's lock, write the status it asks for, and ask kopf to retry when
    it says so, or to look again soon while workloads roll out (``retry`` None: the drift timer, whose
    next tick is the retry, and which leaves out a tenant reconciled moments ago)."""
    runtime: Runtime = memo.runtime
    reconciled: Reconciled = memo.reconciled
    name = _name(body)
    async with _lock(memo, body):
        if retry is None and reconciled.fresh(name, time.monotonic(), runtime.resync_seconds):
            return  # a change handler or a rollout re-check just did the same reconcile
        try:
            outcome = await step(dict(body), runtime)
        except kube.KubeError as exc:
            if retry is None:
                return
            raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=backoff(retry)) from None
        except Exception as exc:  # a bug: say so where SREs look, then let kopf log and retry it
            message = f"internal error ({type(exc).__name__}); see the operator's log"
            await announce(runtime, tenant_ref(body), EventType.WARNING, Reason.OPERATOR_ERROR, message)
            raise
        reconciled.mark(name, time.monotonic())
    if outcome.status is not None:
        for key, value in status_patch(body.get("status"), outcome.status).items():
            patch.status[key] = value
    if retry is not None:
        _ask_again(outcome, retry, runtime.resync_seconds)


def _ask_again(outcome: Outcome, retry: int, resync_seconds: float) -> None:
    """After a change handler's step: ask kopf to retry what failed (backoff), or to look again soon
    while only workloads roll out."""
    if outcome.retry or not outcome.done:
        delay = outcome.delay or backoff(retry, needs_action=outcome.needs_action)
        raise kopf.TemporaryError(outcome.why or "not done yet", delay=delay)
    recheck = rollout_recheck(retry, resync_seconds=resync_seconds) if outcome.rolling_out else None
    if recheck is not None:
        raise kopf.TemporaryError(f"{outcome.why}; looking again in {recheck:g} s", delay=recheck)


def build_registry(options: RunOptions) -> kopf.OperatorRegistry:
    """The operator's handlers, registered for one run."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(id="configure", registry=registry)
    async def start(settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **_: Any) -> None:
        operator_settings.configure(settings, instance=options.instance)
        metrics = Metrics()
        client = kube.KubeClient(
            lambda: kube.login(settings=settings, logger=logger, namespace=options.config.namespace),
            on_error=lambda error: metrics.api_error("kubernetes", error.reason),
        )
        keys = options.key_backend(client, options.config, asyncio.get_running_loop())
        memo.runtime = Runtime(
            client, keys, options.config, metrics, instance=options.instance, resync_seconds=options.resync_seconds
        )
        memo.locks = {}
        memo.reconciled = Reconciled()
        if options.metrics_port:
            metrics.serve(options.metrics_port)

    @kopf.on.login(id="credentials", registry=registry)
    def credentials(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> kopf.ConnectionInfo:
        return kube.login(settings=settings, logger=logger, namespace=options.config.namespace)

    @kopf.on.cleanup(id="close", registry=registry)
    async def stop(memo: Any, **_: Any) -> None:
        await memo.runtime.kube.close()

    @kopf.on.probe(id="tenants", registry=registry)
    def tenants(memo: Any, **_: Any) -> int:
        return int(memo.runtime.metrics.tenant_count)

    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    async def reconcile_tenant(body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, **_: Any) -> None:
        await _handle(reconcile, body, patch, memo, retry)

    @kopf.timer(
        GROUP, VERSION, PLURAL, id="resync", interval=options.resync_seconds, initial_delay=options.resync_seconds,
        registry=registry,
    )  # fmt: skip
    async def resync(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        await _handle(_resync, body, patch, memo, retry=None)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="offboard", registry=registry)
    async def delete_tenant(body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, **_: Any) -> None:
        await _handle(offboard, body, patch, memo, retry)

    return registry


async def _resync(body: Mapping[str, Any], runtime: Runtime) -> Outcome:
    return await reconcile(body, runtime, trigger="resync")
