"""Every kopf handler of the operator, and nothing else: each one is a few lines that call the module
named for its concern (``reconcile``, ``deletion``, ``retries``, ``settings``, ``kube``, ``metrics``).

``build_registry`` registers them for one run: the drift timer's interval is a run option, so the
handlers are bound to it rather than to kopf's global registry at import time.

Handlers (PoliteTenant, cluster-wide):
- create / update / resume: reconcile the tenant, at most ``CONCURRENT_RECONCILES`` at once; retried
  with backoff while something is pending (``retries``);
- the children (``watched.WATCHED_KINDS``, label-selected) are not kopf's: an informer per kind
  (``watched.Children``) keeps them, the reconcile reads them from there once every first list is in,
  and a child's event reconciles its tenant within a moment (``drift``): a hand-deleted workload is
  restored, a finished rollout shows in the status; the event of the operator's own write reconciles
  nothing (``Written.observed``). kopf's per-event machinery cost more than the events' handling;
- timer (every ``resync_seconds``): the same reconcile against the watched state, which costs no
  request for an unchanged tenant (one reconciled moments ago is left out of that tick);
- delete: legal hold, Retain or Delete (``deletion.offboard``), holding the finalizer until done;
- startup / login / cleanup / probe: settings, credentials, metrics server, ``/healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from politetenant.operator.keys.lifecycle import KeyBackend
from politetenant.operator.keys.services import standard_keys
from politetenant.operator.kube import client as kube
from politetenant.operator.kube.informer import store_key
from politetenant.operator.model.config import OperatorConfig
from politetenant.operator.model.reasons import EventType, Reason
from politetenant.operator.model.status import status_patch
from politetenant.operator.model.tenant import API_VERSION, GROUP, KIND, PLURAL, VERSION
from politetenant.operator.runtime import settings as operator_settings
from politetenant.operator.runtime.deletion import offboard
from politetenant.operator.runtime.drift import DriftTrigger
from politetenant.operator.runtime.events import announce
from politetenant.operator.runtime.metrics import Metrics
from politetenant.operator.runtime.reconcile import Outcome, Runtime, reconcile, tenant_ref
from politetenant.operator.runtime.retries import Reconciled, backoff
from politetenant.operator.runtime.storage import json_copy
from politetenant.operator.runtime.watched import CachedKube, Children, WatchedKind, Written, key_of, tenant_of

TENANTS_INDEX = "tenants"
# Reconciles of a change running at once. 500 tenants applied together each make ~30 requests in
# sequence: all of them interleaved, every tenant is Ready only when the last is; a few at a time, in
# the order they came, the first are Ready within seconds and the API server's (and the key service's)
# load is the same. Waiting reconciles hold nothing but their tenant's lock.
CONCURRENT_RECONCILES = 16

KeyBackendFactory = Callable[[kube.KubeApi, OperatorConfig, asyncio.AbstractEventLoop], KeyBackend]


@dataclass(frozen=True, slots=True)
class RunOptions:
    config: OperatorConfig
    metrics_port: int = 9090
    resync_seconds: float = 60.0
    instance: str = field(default_factory=operator_settings.instance_name)
    key_backend: KeyBackendFactory = standard_keys


@dataclass
class Watching:
    """What the watches share across handlers: kopf's index of tenants, the children's informers, our
    unseen writes, and the trigger that reconciles a tenant after a child's event."""

    indices: dict[str, Any] | None = None
    children: Children | None = None
    written: Written = field(default_factory=Written)
    drift: DriftTrigger | None = None
    # The status each tenant was last given: the tenants' index lags while a tenant's handler runs,
    # and a reconcile after a child's event must start from what was written, not from that lag.
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)


def _lock(memo: Any, body: Mapping[str, Any]) -> asyncio.Lock:
    """One lock per tenant: the drift timer and a change handler never reconcile it at once."""
    locks: dict[str, asyncio.Lock] = memo.locks
    return locks.setdefault(_name(body), asyncio.Lock())


def _name(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["name"])


async def _watching(memo: Any, runtime: Runtime) -> Runtime:
    """The runtime whose reads of children come from the watches, once every kind's first list is in."""
    watch: Watching = memo.watch
    if watch.children is None:
        return runtime
    await watch.children.synced()
    return dataclasses.replace(runtime, kube=CachedKube(runtime.kube, watch.children.lookup, watch.written))


async def _step(
    step: Callable[[Mapping[str, Any], Runtime], Awaitable[Outcome]],
    body: Mapping[str, Any],
    memo: Any,
    *,
    timer: bool,
) -> Outcome | None:
    """Run a step under the tenant's lock (None: the timer left out a tenant reconciled moments ago)."""
    runtime: Runtime = memo.runtime
    reconciled: Reconciled = memo.reconciled
    name = _name(body)
    # Only a change waits for a slot: a drift or resync reconcile reads the watched state and is quick,
    # and the one that shows a tenant Ready must not queue behind the first reconciles of the rest.
    async with _lock(memo, body), memo.slots if step is reconcile else contextlib.nullcontext():
        if timer and reconciled.fresh(name, time.monotonic(), runtime.resync_seconds):
            return None
        try:
            # Offboarding decides on what the API says now (a namespace still terminating), not a watch.
            outcome = await step(dict(body), runtime if step is offboard else await _watching(memo, runtime))
        except kube.KubeError:
            raise
        except Exception as exc:  # a bug: say so where SREs look, then let kopf log and retry it
            message = f"internal error ({type(exc).__name__}); see the operator's log"
            await announce(runtime, tenant_ref(body), EventType.WARNING, Reason.OPERATOR_ERROR, message)
            raise
        reconciled.mark(name, time.monotonic())
    return outcome


async def _handle(
    step: Callable[[Mapping[str, Any], Runtime], Awaitable[Outcome]],
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,
    retry: int | None,
) -> None:
    """Run a step, write the status it asks for, and ask kopf to retry when it says so (``retry``
    None: the drift timer, whose next tick is the retry)."""
    try:
        outcome = await _step(step, body, memo, timer=retry is None)
    except kube.KubeError as exc:
        if retry is None:
            return
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=backoff(retry)) from None
    if outcome is None:
        return
    if outcome.status is not None:
        for key, value in status_patch(body.get("status"), outcome.status).items():
            patch.status[key] = value
        memo.watch.statuses[_name(body)] = outcome.status
    if retry is not None and (outcome.retry or not outcome.done):
        delay = outcome.delay or backoff(retry, needs_action=outcome.needs_action)
        raise kopf.TemporaryError(outcome.why or "not done yet", delay=delay)


async def _after_drift(memo: Any, name: str) -> float | None:
    """Reconcile a tenant whose child changed, and write its status; when to look again, if failing."""
    index = (memo.watch.indices or {}).get(TENANTS_INDEX)
    body = next(iter(index.get(name, ())), None) if index is not None else None
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        memo.watch.statuses.pop(name, None)
        return None
    written = memo.watch.statuses.get(name)
    if written is not None:
        body = {**body, "status": written}
    runtime: Runtime = memo.runtime
    try:
        outcome = await _step(_on_drift, body, memo, timer=False)
    except kube.KubeError as exc:
        return backoff(0) if exc.status else None
    if outcome is None:
        return None
    changed = status_patch(body.get("status"), outcome.status) if outcome.status is not None else {}
    if changed and isinstance(runtime.kube, kube.KubeClient):
        await runtime.kube.patch_status(API_VERSION, KIND, name, changed)
    if outcome.status is not None:
        memo.watch.statuses[name] = outcome.status
    return (outcome.delay or backoff(0, needs_action=outcome.needs_action)) if outcome.retry else None


def _child_changed(memo: Any, kind: WatchedKind, event_type: str, body: dict[str, Any]) -> None:
    """A child's event (after the first list): poke its tenant, unless it is our own write coming back."""
    namespace, name = store_key(body)
    key = key_of(kind.api_version, kind.kind, name, namespace)
    watch: Watching = memo.watch
    if watch.written.observed(key, body, deleted=event_type == "DELETED"):
        return  # the operator's own write coming back: nothing to reconcile
    tenant = tenant_of(body)
    if tenant is not None and watch.drift is not None:
        watch.drift.poke(tenant)


def _attach(memo: Any, kwargs: Mapping[str, Any]) -> None:
    """Keep kopf's index of tenants (a live object, the same for the whole run) for reads outside handlers."""
    watch: Watching = memo.watch
    if watch.indices is None and TENANTS_INDEX in kwargs:
        watch.indices = {TENANTS_INDEX: kwargs[TENANTS_INDEX]}


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
        memo.slots = asyncio.Semaphore(CONCURRENT_RECONCILES)
        memo.reconciled = Reconciled()
        memo.watch = Watching()  # one object: kopf gives each tenant a shallow copy of this memo
        memo.watch.drift = DriftTrigger(lambda name: _after_drift(memo, name))
        memo.watch.children = Children(
            client, lambda kind, event_type, body: _child_changed(memo, kind, event_type, body)
        )
        memo.watch.children.start()
        if options.metrics_port:
            metrics.serve(options.metrics_port)

    @kopf.on.login(id="credentials", registry=registry)
    def credentials(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> kopf.ConnectionInfo:
        return kube.login(settings=settings, logger=logger, namespace=options.config.namespace)

    @kopf.on.cleanup(id="close", registry=registry)
    async def stop(memo: Any, **_: Any) -> None:
        if memo.watch.children is not None:
            await memo.watch.children.close()
        if memo.watch.drift is not None:
            await memo.watch.drift.close()
        await memo.runtime.kube.close()

    @kopf.on.probe(id="tenants", registry=registry)
    async def tenants(memo: Any, **_: Any) -> int:
        return int(memo.runtime.metrics.tenant_count)

    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    async def reconcile_tenant(body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, **kwargs: Any) -> None:
        _attach(memo, kwargs)
        await _handle(reconcile, body, patch, memo, retry)

    @kopf.index(GROUP, VERSION, PLURAL, id=TENANTS_INDEX, registry=registry)
    async def tenants_index(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
        return {_name(body): json_copy(body)}

    @kopf.timer(
        GROUP, VERSION, PLURAL, id="resync", interval=options.resync_seconds, initial_delay=options.resync_seconds,
        registry=registry,
    )  # fmt: skip
    async def resync(body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
        _attach(memo, kwargs)
        await _handle(_resync, body, patch, memo, retry=None)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="offboard", registry=registry)
    async def delete_tenant(body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, **kwargs: Any) -> None:
        _attach(memo, kwargs)
        await _handle(offboard, body, patch, memo, retry)

    return registry


async def _resync(body: Mapping[str, Any], runtime: Runtime) -> Outcome:
    return await reconcile(body, runtime, trigger="resync")


async def _on_drift(body: Mapping[str, Any], runtime: Runtime) -> Outcome:
    return await reconcile(body, runtime, trigger="drift")
