"""The kubelet of the runner's one node: every pod bound to it, from sandbox to deletion.

For each pod (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/): the sandbox (its
network namespace and pod IP), the volumes (the pod waits in ContainerCreating while one cannot be set
up), the init containers one after the other, each to completion, then every container at once, each
supervised by a :class:`ContainerRun`; the status written whenever something a user could see
changed. Deletion ("Termination of Pods"): once the pod has a deletionTimestamp, preStop hooks, the
image's stop signal, SIGKILL at the end of the grace period, then the pod object is deleted for good
(grace 0). Container logs are files, one per run of a container, read by ``logs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.fakes.pods.api import PODS, PVCS, SERVICES, meta
from tests.fakes.pods.cluster import Cluster
from tests.fakes.pods.container_runs import ContainerRun
from tests.fakes.pods.images import ImageTable
from tests.fakes.pods.pod_status import now, pod_status
from tests.fakes.pods.podspec import ConfigError, container_env, grace_seconds, service_env
from tests.fakes.pods.sandbox import ClusterNetwork, Sandbox, hosts_file, search_path
from tests.fakes.pods.volumes import HostVolume, PodVolumes, VolumeNotReady

log = logging.getLogger(__name__)
MIN_KILL_GRACE = 2.0  # the kubelet's floor when a pod vanished (force deletion)


class PodWorker:
    """One pod on this node."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        self.kubelet = kubelet
        self.cluster = kubelet.cluster
        self.pod = pod
        info = meta(pod)
        self.uid = str(info.get("uid"))
        self.namespace, self.name = str(info.get("namespace")), str(info.get("name"))
        self.directory = self.cluster.state_dir / "pods" / self.uid
        self.log_dir = self.cluster.state_dir / "logs" / f"{self.namespace}_{self.name}_{self.uid}"
        hostname = str((pod.get("spec") or {}).get("hostname") or self.name)
        self.sandbox = Sandbox(self.directory / "sandbox", kubelet.network, hostname)
        self.sandbox_ready = False
        self.start_time: str | None = None
        self.volumes: dict[str, HostVolume] = {}
        self.images: ImageTable = self.cluster.images
        self.scale, self.timeout_floor = self.cluster.scale, self.cluster.timeout_floor
        spec = pod.get("spec") or {}
        self.init_runs = [ContainerRun(self, c, init=True) for c in spec.get("initContainers") or []]
        self.runs = [ContainerRun(self, c, init=False) for c in spec.get("containers") or []]
        self._volumes = PodVolumes(
            self.directory,
            self.cluster.state_dir / "claims",
            secrets=self.cluster.secret,
            configmaps=self.cluster.configmap,
            claim=lambda ns, name: self.cluster.cache(PVCS).get(ns, name),
            issue_token=self.cluster.issue_token,
        )
        self._changed = asyncio.Event()
        self._dirty = asyncio.Event()
        self._written: dict[str, Any] | None = None
        self.lifecycle: asyncio.Task[None] | None = None
        self.terminating: asyncio.Task[None] | None = None
        self.gone = asyncio.Event()
        self._sidecars: list[asyncio.Task[None]] = []
        self._writer = asyncio.ensure_future(self._write_status())

    # -- what ContainerRun asks of its pod

    def env_for(self, container: Mapping[str, Any]) -> dict[str, str]:
        services = self.cluster.services
        links = (self.pod.get("spec") or {}).get("enableServiceLinks", True) is not False
        variables = (
            service_env(self._namespace_services(), services.cluster_ips(self.namespace)) if services and links else {}
        )
        return container_env(
            self.known_pod(),
            container,
            secrets=self.cluster.secret,
            configmaps=self.cluster.configmap,
            services=variables,
        )

    def known_pod(self) -> dict[str, Any]:
        """The pod with what this kubelet knows before the API shows it: its IPs (for the downward API)."""
        status = dict(self.pod.get("status") or {})
        status.update(podIP=self.sandbox.ip, podIPs=[{"ip": self.sandbox.ip}], hostIP=self.cluster.host_ip)
        status["hostIPs"] = [{"ip": self.cluster.host_ip}]
        return {**self.pod, "status": status}

    def _namespace_services(self) -> list[Mapping[str, Any]]:
        return list(self.cluster.cache(SERVICES).items(self.namespace))

    def touch(self) -> None:
        self._dirty.set()

    def event(self, kind: str, reason: str, message: str) -> None:
        self.cluster.event(self.pod, kind, reason, message, "kubelet")

    async def changed(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def log_path(self, container: str, restart: int) -> Path:
        return self.log_dir / container / f"{restart}.log"

    def run_dir(self, container: str, restart: int) -> Path:
        return self.directory / "containers" / f"{container}-{restart}"

    # -- lifecycle

    def start(self) -> None:
        self.lifecycle = asyncio.ensure_future(self._live())
        self.lifecycle.add_done_callback(self._failed)

    def _failed(self, task: asyncio.Task[None]) -> None:
        """A pod's worker must not fail silently: the error goes to the runner's errors."""
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            assert error is not None
            log.error("pod %s/%s: %r", self.namespace, self.name, error, exc_info=error)
            self.kubelet.errors.append(error)

    def notify(self, pod: dict[str, Any] | None, *, objects_changed: bool) -> None:
        """A newer version of the pod (None: it is gone from the API), or other objects changed."""
        if pod is not None:
            fresh = meta(pod).get("resourceVersion") != meta(self.pod).get("resourceVersion")
            self.pod = pod
            if fresh or objects_changed:
                self._changed.set()
        else:
            self._changed.set()
        if objects_changed and self.sandbox_ready and self.terminating is None:
            with contextlib.suppress(VolumeNotReady, OSError):
                self.volumes = self._volumes.prepare(self.known_pod(), refresh=True)
        if self.terminating is None and (pod is None or meta(pod).get("deletionTimestamp")):
            grace = grace_seconds(self.pod)
            if pod is None:
                grace = max(grace, MIN_KILL_GRACE)
            self.terminating = asyncio.ensure_future(self._terminate(grace * self.scale, delete=pod is not None))

    def refresh_dns(self) -> None:
        services = self.cluster.services
        if services is None:
            return
        aliases = (self.pod.get("spec") or {}).get("hostAliases") or []
        hosts = hosts_file(self.pod, self.sandbox.ip, services.addresses(), services.pod_names(), aliases)
        self.sandbox.write_dns(hosts, search_path(self.namespace))

    async def _live(self) -> None:
        self.start_time = now()
        self.touch()
        await self.sandbox.start()
        self.refresh_dns()
        self.sandbox_ready = True
        self.touch()
        while True:
            try:
                self.volumes = self._volumes.prepare(self.known_pod())
                break
            except VolumeNotReady as exc:
                self.event("Warning", "FailedMount", str(exc))
                await self.changed()
        try:
            await self._containers()
        finally:
            for task in self._sidecars:
                task.cancel()

    async def _containers(self) -> None:
        for run in self.init_runs:
            if run.sidecar:
                self._sidecars.append(asyncio.ensure_future(run.supervise()))
                await run.started.wait()
                continue
            await run.supervise()
            if run.view.exit_code != 0:
                await self.sandbox.stop()
                return
        await asyncio.gather(*(run.supervise() for run in self.runs))
        for run in self.init_runs:  # sidecars end with the pod's main containers
            await run.stop(0)
        await self.sandbox.stop()  # every container finished: the kubelet tears the sandbox down

    async def _stop_lifecycle(self) -> None:
        """Cancel the pod's lifecycle and wait for it a bounded time: stopping the processes must never
        depend on every await of it honouring the cancellation."""
        tasks = {t for t in (self.lifecycle, *self._sidecars) if t is not None and not t.done()}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _terminate(self, grace: float, *, delete: bool) -> None:
        await self._stop_lifecycle()
        await asyncio.gather(*(run.stop(grace) for run in self.runs))
        await asyncio.gather(*(run.stop(grace) for run in reversed(self.init_runs)))
        for run in [*self.runs, *self.init_runs]:
            if run.process is not None and run.view.running:
                code = await run.process.wait()
                run.view.state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}
            run.view.ready = False
        await self.sandbox.stop()
        self.touch()
        await asyncio.sleep(0)
        if delete:
            options = {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
            await self.cluster.delete(PODS, PODS.path(self.namespace, self.name), options)
        self._writer.cancel()
        self._volumes.cleanup()
        shutil.rmtree(self.directory / "containers", ignore_errors=True)
        self.gone.set()

    async def shutdown(self) -> None:
        """The runner stops: kill everything now, write nothing more."""
        await self._stop_lifecycle()
        if self.terminating is not None and not self.terminating.done():
            self.terminating.cancel()
            await asyncio.gather(self.terminating, return_exceptions=True)
        for run in [*self.runs, *self.init_runs]:
            if run.process is not None:
                with contextlib.suppress(ProcessLookupError, AssertionError):
                    await run.process.stop(0)
        await self.sandbox.stop()
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)

    # -- status

    def status(self) -> dict[str, Any]:
        return pod_status(
            self.pod,
            sandbox_ready=self.sandbox_ready,
            pod_ip=self.sandbox.ip if self.sandbox_ready else None,
            host_ip=self.cluster.host_ip,
            start_time=self.start_time,
            init=[run.view for run in self.init_runs],
            containers=[run.view for run in self.runs],
            image_ids={run.name: _image_id(run.view.image) for run in [*self.init_runs, *self.runs]},
        )

    async def _write_status(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            status = self.status()
            comparable = _without_times(status)
            if comparable == self._written:
                continue
            patch = [
                {"op": "test", "path": "/metadata/uid", "value": self.uid},
                {"op": "replace", "path": "/status", "value": status},
            ]
            path = PODS.path(self.namespace, self.name, "status")
            try:
                answer = await self.cluster.write(
                    PODS, self.cluster.api.patch(path, patch, content_type="application/json-patch+json")
                )
            except Exception as exc:
                log.debug("status of %s/%s: %s", self.namespace, self.name, exc)
                answer = None
            if answer is not None:
                self.pod = answer
                self._written = comparable


def _without_times(status: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k != "startTime"}


def _image_id(image: str) -> str:
    import hashlib

    return f"{image.split(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


class Kubelet:
    """Every pod bound to this node, by uid."""

    def __init__(self, cluster: Cluster, network: ClusterNetwork) -> None:
        self.cluster = cluster
        self.network = network
        self.workers: dict[str, PodWorker] = {}
        self.finished: dict[tuple[str, str], PodWorker] = {}  # the last worker of each pod name, for logs
        self.errors: list[BaseException] = []

    def sync(self, *, objects_changed: bool, services_changed: bool) -> None:
        seen = set()
        for pod in self.cluster.cache(PODS).items():
            info = meta(pod)
            if (pod.get("spec") or {}).get("nodeName") != self.cluster.node_name:
                continue
            uid = str(info.get("uid"))
            seen.add(uid)
            worker = self.workers.get(uid)
            if worker is None:
                if info.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    if info.get("deletionTimestamp"):
                        self.cluster.background(self._delete_now(pod))
                    continue
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                self.finished[(worker.namespace, worker.name)] = worker
                worker.start()
            worker.notify(pod, objects_changed=objects_changed)
            if services_changed and worker.sandbox_ready:
                worker.refresh_dns()
        for uid, worker in list(self.workers.items()):
            if uid not in seen:
                worker.notify(None, objects_changed=False)
            if worker.gone.is_set():
                del self.workers[uid]

    async def _delete_now(self, pod: Mapping[str, Any]) -> None:
        info = meta(pod)
        options = {"gracePeriodSeconds": 0, "preconditions": {"uid": info.get("uid")}}
        await self.cluster.delete(PODS, PODS.path(str(info["namespace"]), str(info["name"])), options)

    def worker(self, namespace: str, name: str) -> PodWorker:
        for worker in self.workers.values():
            if (worker.namespace, worker.name) == (namespace, name) and worker.terminating is None:
                return worker
        found = self.finished.get((namespace, name))
        if found is None:
            raise KeyError(f"no pod {namespace}/{name} ran on this node")
        return found

    def container(self, namespace: str, pod: str, container: str | None) -> ContainerRun:
        worker = self.worker(namespace, pod)
        runs = [*worker.runs, *worker.init_runs]
        if container is None:
            if len(worker.runs) != 1:
                names = " ".join(run.name for run in worker.runs)
                raise ConfigError(f"a container name must be specified for pod {pod}, choose one of: [{names}]")
            return worker.runs[0]
        for run in runs:
            if run.name == container:
                return run
        raise ConfigError(f"container {container} is not valid for pod {pod}")

    def logs(self, namespace: str, pod: str, container: str | None = None, *, previous: bool = False) -> str:
        """``kubectl logs [--previous]``: the output of the container's latest run (running, or the last
        one that ended), or of the run before the current one."""
        run = self.container(namespace, pod, container)
        worker = self.worker(namespace, pod)
        latest = run.runs_started - 1
        if previous and not ("waiting" in run.view.state and run.view.last_state):
            latest -= 1
        path = worker.log_path(run.name, latest)
        if latest < 0 or not path.exists():
            which = "previous terminated" if previous else "current"
            raise ConfigError(f'{which} container "{run.name}" in pod "{pod}" not found')
        return path.read_text(encoding="utf-8", errors="replace")

    async def shutdown(self) -> None:
        await asyncio.gather(*(worker.shutdown() for worker in self.workers.values()), return_exceptions=True)
        self.workers.clear()
