"""The node: informers, scheduler, kubelet, Service proxy and controllers, on one event loop.

Every change an informer sees (and a tick, for what time alone changes: availability, back-offs,
deadlines) runs one pass: scheduler, Services, kubelet, then each controller; a pass only reads caches
and writes through the API, so passes are level-triggered, like the controllers they stand in for.
A pass that raises is recorded in ``errors`` (a test can assert there are none) and the next one runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tests.fakes.pods.api import (
    CNPG_CLUSTERS,
    CONFIGMAPS,
    CRONJOBS,
    DEPLOYMENTS,
    ENDPOINTSLICES,
    JOBS,
    NODES,
    PDBS,
    PODS,
    PVCS,
    REPLICASETS,
    REVISIONS,
    SECRETS,
    SERVICES,
    STATEFULSETS,
    Informer,
    Kind,
    KubeApi,
    informers,
    meta,
)
from tests.fakes.pods.cluster import Cluster
from tests.fakes.pods.cnpg import CloudNativePG
from tests.fakes.pods.deployments import DeploymentController
from tests.fakes.pods.disruption import DisruptionController
from tests.fakes.pods.images import ImageTable
from tests.fakes.pods.jobs import JobController
from tests.fakes.pods.kubelet import Kubelet
from tests.fakes.pods.proxy import ServiceProxy
from tests.fakes.pods.sandbox import ClusterNetwork
from tests.fakes.pods.scheduler import Scheduler, node_body
from tests.fakes.pods.statefulsets import StatefulSetController
from tests.fakes.pods.volumes import TokenIssuer, reclaim

log = logging.getLogger(__name__)
WATCHED = [
    NODES, PODS, SERVICES, ENDPOINTSLICES, SECRETS, CONFIGMAPS, PVCS, DEPLOYMENTS, REPLICASETS, STATEFULSETS,
    REVISIONS, JOBS, CRONJOBS, PDBS, CNPG_CLUSTERS,
]  # fmt: skip
TICK = 0.25
SHUTDOWN_STEP = 10.0


class Controller(Protocol):
    """One pass of a controller over the caches."""

    async def sync(self) -> None: ...


@dataclass
class NodeOptions:
    images: ImageTable
    state_dir: Path
    issue_token: TokenIssuer
    managed: Callable[[str], bool]
    time_scale: float
    timeout_floor: float
    node_labels: dict[str, str] = field(default_factory=dict)
    api_token: str | None = None  # the emulator's admin token, when it authorizes with RBAC
    api_ca: str | None = None  # the emulator's certificate, when it serves https


class Node:
    """The runner's machinery; ``run`` lives as long as the runner."""

    def __init__(self, url: str, options: NodeOptions) -> None:
        self.url = url
        self.options = options
        self.errors: list[BaseException] = []
        self.cluster: Cluster | None = None
        self.kubelet: Kubelet | None = None
        self.proxy: ServiceProxy | None = None
        self.cnpg: CloudNativePG | None = None
        self.network: ClusterNetwork | None = None
        self._dirty = asyncio.Event()
        self._changed: set[Kind] = set()
        self._stopping = asyncio.Event()
        self.passes = 0

    def _mark(self, kind: Kind) -> None:
        self._changed.add(kind)
        self._dirty.set()

    async def run(self, started: asyncio.Future[None]) -> None:
        try:
            api_client = KubeApi(self.url, self.options.api_token, self.options.api_ca)
            async with api_client as api, informers(api, WATCHED, self._mark) as caches:
                await self._serve(api, caches, started)
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    async def _serve(self, api: KubeApi, caches: dict[Kind, Informer], started: asyncio.Future[None]) -> None:
        o = self.options
        cluster = Cluster(api, caches, o.images, o.state_dir, o.issue_token, o.managed, o.time_scale, o.timeout_floor)
        self.cluster = cluster
        await self._register_node(api, cluster)
        network = self.network = ClusterNetwork(o.state_dir / "network")
        await network.start()
        kubelet = self.kubelet = Kubelet(cluster, network)
        proxy = self.proxy = ServiceProxy(cluster, network, self._sandboxes)
        cluster.services = proxy
        scheduler = Scheduler(cluster)
        self.cnpg = CloudNativePG(cluster)
        controllers: list[Controller] = [
            DeploymentController(cluster),
            StatefulSetController(cluster),
            JobController(cluster),
            DisruptionController(cluster),
            self.cnpg,
        ]
        started.set_result(None)
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK):
                        await self._dirty.wait()
                self._dirty.clear()
                changed, self._changed = self._changed, set()
                try:
                    scheduler.sync()
                    names_changed = await proxy.sync()
                    objects_changed = bool(changed & {SECRETS, CONFIGMAPS, PVCS})
                    kubelet.sync(objects_changed=objects_changed, services_changed=names_changed)
                    for controller in controllers:
                        await controller.sync()
                    await proxy.sync()
                    if PVCS in changed:
                        self._reclaim(cluster, kubelet)
                    self.errors.extend(kubelet.errors)
                    kubelet.errors.clear()
                except Exception as exc:
                    log.exception("pod runner pass failed")
                    self.errors.append(exc)
                self.passes += 1
        finally:  # every step bounded: stopping must not hang on a stuck process or request
            for step in (kubelet.shutdown(), proxy.close(), network.stop(), cluster.settle()):
                try:
                    async with asyncio.timeout(SHUTDOWN_STEP):
                        await step
                except TimeoutError:
                    log.error("pod runner: a shutdown step took over %s s", SHUTDOWN_STEP)
            await asyncio.sleep(0.05)  # let the pipes of ended processes close before the loop does

    async def _register_node(self, api: KubeApi, cluster: Cluster) -> None:
        body = node_body(cluster.node_name, self.options.node_labels, cluster.host_ip)
        existing = await api.get(NODES.path(name=cluster.node_name))
        if existing is None:
            created = await api.create(NODES.path(), body)
            await api.patch(NODES.path(name=cluster.node_name, sub="status"), {"status": body["status"]})
            cluster.cache(NODES).put(created)
        else:
            await cluster.write(NODES, api.patch(NODES.path(name=cluster.node_name), {"metadata": body["metadata"]}))

    def _reclaim(self, cluster: Cluster, kubelet: Kubelet) -> None:
        live = {
            (str(meta(c).get("namespace")), str(meta(c).get("name")), str(meta(c).get("uid")))
            for c in cluster.cache(PVCS).items()
        }
        in_use = {v.path for w in kubelet.workers.values() for v in w.volumes.values()}
        reclaim(cluster.state_dir / "claims", live, in_use)

    def _sandboxes(self) -> dict[str, tuple[int, str, str]]:
        if self.kubelet is None:
            return {}
        found = {}
        for uid, worker in self.kubelet.workers.items():
            if worker.sandbox_ready and worker.sandbox.alive:
                found[uid] = (worker.sandbox.pid, worker.sandbox.ip, worker.namespace)
        return found

    def cluster_or_fail(self) -> Cluster:
        if self.cluster is None:
            raise RuntimeError("the runner has not started")
        return self.cluster

    def stop(self) -> None:
        self._stopping.set()
        self._dirty.set()


def remove_state(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
