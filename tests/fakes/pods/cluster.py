"""What the runner's parts share: the API, the informers' caches, the node, the clock, the images.

One instance per runner, used only on the runner's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.fakes.pods.api import (
    CONFIGMAPS,
    EVENTS,
    SECRETS,
    ApiError,
    Body,
    Informer,
    Kind,
    KubeApi,
    meta,
)
from tests.fakes.pods.images import ImageTable
from tests.fakes.pods.pod_status import now
from tests.fakes.pods.volumes import TokenIssuer, configmap_data, decoded_secret

log = logging.getLogger(__name__)


class ServiceView(Protocol):
    """What pods learn from the Service proxy: names to resolve, and Service variables."""

    def addresses(self) -> dict[tuple[str, str], str]: ...
    def pod_names(self) -> dict[tuple[str, str], str]: ...
    def cluster_ips(self, namespace: str) -> dict[str, str]: ...


@dataclass
class Cluster:
    api: KubeApi
    caches: dict[Kind, Informer]
    images: ImageTable
    state_dir: Path
    issue_token: TokenIssuer
    managed: Callable[[str], bool]
    scale: float
    timeout_floor: float
    node_name: str = "pod-runner"
    host_ip: str = "10.244.0.1"  # the node's address: the cluster network's router
    services: ServiceView | None = None
    _background: set[asyncio.Task[Any]] = field(default_factory=set)

    def cache(self, kind: Kind) -> Informer:
        return self.caches[kind]

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self.caches[SECRETS].get(namespace, name)
        return None if found is None else decoded_secret(found)

    def configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self.caches[CONFIGMAPS].get(namespace, name)
        return None if found is None else configmap_data(found)

    def background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Fire and forget (a failure is logged, never raised)."""

        async def guarded() -> None:
            try:
                await coroutine
            except (TimeoutError, ApiError, OSError) as exc:
                log.debug("background write failed: %s", exc)

        task = asyncio.ensure_future(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self) -> None:
        """Wait for the writes in flight (cancelled if the caller's timeout cancels this)."""
        try:
            while self._background:
                await asyncio.gather(*list(self._background), return_exceptions=True)
        finally:
            for task in list(self._background):
                task.cancel()

    def event(self, about: Mapping[str, Any], kind: str, reason: str, message: str, component: str) -> None:
        """An Event about ``about`` (core/v1 Event, as ``kubectl describe`` lists them)."""
        info = meta(about)
        namespace = str(info.get("namespace") or "default")
        body: Body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{info.get('name')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": about.get("apiVersion"),
                "kind": about.get("kind"),
                "name": info.get("name"),
                "namespace": namespace,
                "uid": info.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": component, "host": self.node_name},
            "reportingComponent": component,
            "reportingInstance": self.node_name,
            "firstTimestamp": now(),
            "lastTimestamp": now(),
            "count": 1,
        }
        self.background(self.api.create(EVENTS.path(namespace), body))

    async def write(self, kind: Kind, coroutine: Coroutine[Any, Any, Body | None]) -> Body | None:
        """A write whose answer goes into the cache of ``kind`` at once (None when refused as stale)."""
        try:
            answer = await coroutine
        except ApiError as exc:
            # What a controller meets and retries on its next pass: a namespace being deleted (403), an
            # object gone or changed meanwhile (404, 409), a precondition that no longer holds (422).
            if exc.status in (403, 404, 409, 422):
                log.debug("write to %s refused: %s", kind.plural, exc)
                return None
            raise
        if answer is not None and answer.get("kind") not in (None, "Status") and kind in self.caches:
            self.caches[kind].put(answer)
        return answer

    async def delete(self, kind: Kind, path: str, options: Body | None = None) -> None:
        """Delete; the cache drops the object at once when it is gone, or holds it as terminating."""
        try:
            status, answer = await self.api.delete(path, options)
        except ApiError as exc:
            if exc.status in (404, 409):
                return
            raise
        if answer is None or answer.get("kind") == "Status" or kind not in self.caches:
            return
        if status == 202:
            self.caches[kind].put(answer)
        else:
            self.caches[kind].drop(answer)
