"""A kubelet, kube-proxy and the workload controllers for the Kubernetes API emulator: the pods the
operator renders run here for real, as local processes, against real PostgreSQL.

    labels = {"topology.kubernetes.io/region": "eu-west-1"}        # the node's region (node affinity)
    with running_kube_api() as api, PodRunner(api, time_scale=0.2, node_labels=labels) as runner:
        ...  # apply objects through the API; Deployments, StatefulSets, Jobs get pods that run
        host, port = runner.service("polite-acme", "tracker")      # the Service, from the test
        runner.logs("polite-acme", "tracker-0", "tracker")          # kubectl logs [-c] [--previous]
        runner.exec("polite-acme", "tracker-0", ["polite-tracker", "token", "create", "--role", "sender"])
        runner.stop_database("polite-acme"); runner.start_database("polite-acme")
        run = runner.create_job_from_cronjob("polite-acme", "retention")   # kubectl create job --from
        runner.delete_pod(...); runner.evict(...); runner.drain(); runner.uncordon()

A test's Vault stand-in can issue the pods' projected service-account tokens, so its Kubernetes auth
accepts them: ``PodRunner(api, token_issuer=lambda ns, sa, aud, secs: vault.issue_service_account_token(ns, sa, aud))``.

How it runs a pod (each part's module, under ``tests/fakes/pods/``, cites the Kubernetes page it follows):

- **Isolation: namespaces, not path rewriting.** The tests run as root, so each pod gets network and
  UTS namespaces of its own (``sandbox.py``) and each container a mount and PID namespace with a root of
  its own: an overlay of the machine's file system with a throwaway upper layer, volumes bind-mounted at
  the pod's own paths (``/etc/polite``, ``/var/run/polite/keys``, ``/var/lib/postgresql/data``),
  ``readOnlyRootFilesystem`` honoured, the container's user, groups and no_new_privs
  (``container_init.py``). Rewriting paths would have to reach into every file a pod reads (a settings
  file naming its spool directory, a DSN naming a socket), and would let a container write where a real
  one cannot; with namespaces the product's own paths and permissions are what it meets, and nothing
  touches the machine's own files.
- **Networking: a network namespace per pod, joined by a private router.** Two replicas both listen on
  0.0.0.0:8080 and 127.0.0.1 is the pod itself, with nothing rewritten (the tracker binds what
  ``POLITE_HOST`` says). Each pod's ``eth0`` has a pod IP of 10.244.0.0/16 (also given through the
  downward API, ``status.podIP``) and routes through a router namespace of the runner's own, which holds
  the Services' addresses (10.96.0.0/16) where the Service proxy listens and forwards to Ready pods
  (``sandbox.py``, ``proxy.py``); Service names are in every pod's /etc/hosts. The machine's own network
  is never touched. From the test, every Service port listens on 127.0.0.1 (:meth:`PodRunner.service`).
  A pod cannot reach this machine's 127.0.0.1: a server of the test's own (a PostgreSQL for
  ``engine: external``, a Vault stand-in) is offered to pods as a Service without selector
  (:meth:`PodRunner.expose_host_port`), as a cluster offers an outside server.
- **Images** are configurations (``images.py``): the Dockerfile's targets (``tracker``, ``operator``) with
  the repository's virtualenv as ``/opt/venv``, the official postgres image's entrypoint rewritten
  (``postgres-entrypoint.sh``: initdb from POSTGRES_USER/PASSWORD/DB, init scripts, scram passwords)
  running the machine's PostgreSQL binaries, and a bare image for small test pods.
- **Time** is scaled by ``time_scale``: every period, delay, back-off, grace period and deadline of a
  pod spec is multiplied by it (probe timeouts and grace periods never below ``timeout_floor`` seconds).
  At the default 0.1, a readiness probe of period 5 s runs every 0.5 s. Processes do not get faster:
  a liveness budget (initialDelaySeconds + periodSeconds x failureThreshold) shrinks too, so a scale
  too small kills a slow starter (PostgreSQL's initdb) as a too-tight probe would on a real node.
- **Refused as a kubelet refuses:** a missing Secret or key in ``env`` (``CreateContainerConfigError``),
  a missing ConfigMap or Secret volume (stays ``ContainerCreating``), an image the table lacks
  (``ErrImagePull``), ``runAsNonRoot`` with a root (or unverifiable) image user, pods whose node affinity
  does not match the node's labels (Pending, Unschedulable).
- **Not emulated:** resource limits and requests (no cgroups; quotas are not enforced), NetworkPolicies,
  Ingresses, DNS beyond /etc/hosts (headless Services resolve to a forwarding address, see ``proxy.py``),
  capabilities and seccomp, image pulls, the CronJob schedule (run its Job on demand), CloudNativePG
  beyond what ``cnpg.py`` lists.

Stopping the runner kills every process it started (all of them die with its thread anyway: each is
bound to it with PR_SET_PDEATHSIG, and each container's processes live in a PID namespace of its own).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.fakes.kube_server import KubeApiHandle
from tests.fakes.pods.api import CRONJOBS, ENDPOINTSLICES, JOBS, NODES, PODS, SERVICES, ApiError, meta
from tests.fakes.pods.images import Image, ImageTable, default_images
from tests.fakes.pods.jobs import finished, job_from_cronjob
from tests.fakes.pods.podspec import ConfigError
from tests.fakes.pods.runner import Node, NodeOptions, remove_state
from tests.fakes.pods.tokens import TokenSigner

T = TypeVar("T")
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")


class RunnerError(RuntimeError):
    """The runner cannot do what it was asked (a pod that is not there, a refusal of the API, ...)."""


@dataclass(frozen=True)
class JobRun:
    """A finished Job: whether it succeeded, each pod's exit code and the pods' logs, in order."""

    name: str
    succeeded: bool
    exit_codes: dict[str, int | None]
    logs: str
    job: dict[str, Any] = field(repr=False)


class PodRunner:
    """The pods of the emulator's workloads, run on this machine (see the module docstring)."""

    def __init__(
        self,
        api: KubeApiHandle | str,
        *,
        images: ImageTable | Mapping[str, Image] | None = None,
        time_scale: float = 0.1,
        timeout_floor: float = 1.0,
        node_labels: Mapping[str, str] | None = None,
        namespaces: Callable[[str], bool] | None = None,
        token_issuer: Callable[[str, str, str, int], str] | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.api_url = api.url if isinstance(api, KubeApiHandle) else api
        table = images if isinstance(images, ImageTable) else default_images().with_images(dict(images or {}))
        self._own_state = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="pod-runner-", dir="/tmp"))
        self.options = NodeOptions(
            images=table,
            state_dir=self.state_dir,
            issue_token=token_issuer or TokenSigner(),
            managed=namespaces or (lambda namespace: namespace not in SYSTEM_NAMESPACES),
            time_scale=time_scale,
            timeout_floor=timeout_floor,
            node_labels=dict(node_labels or {}),
            api_token=api.admin_token if isinstance(api, KubeApiHandle) else None,
            api_ca=str(api.ca_path) if isinstance(api, KubeApiHandle) and api.ca_path else None,
        )
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._node: Node | None = None
        self._done: concurrent.futures.Future[None] = concurrent.futures.Future()

    # -- lifecycle

    def start(self) -> PodRunner:
        if os.geteuid() != 0:
            raise RunnerError(
                "the pod runner needs root: pods get network, mount and PID namespaces of their own "
                "(run the tests as root, as CI does)"
            )
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        node = self._node = Node(self.api_url, self.options)

        async def main() -> None:
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(node.run(ready))
            try:
                await ready
                started.set_result(None)
            except BaseException as exc:
                started.set_exception(exc)
            await task

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(main())
                self._done.set_result(None)
            except BaseException as exc:  # a failed start is raised by start(), a later one by stop()
                self._done.set_exception(exc)
                if not started.done():
                    started.set_exception(exc)
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="pod-runner", daemon=True)
        self._thread.start()
        started.result(timeout=60)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every pod's processes (SIGKILL, no grace), every server and the loop; idempotent. Each
        step is bounded, and whatever is left dies with the runner's thread (PR_SET_PDEATHSIG)."""
        if self._thread is None:
            return
        if self._node is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._node.stop)
        self._thread.join(timeout)
        self._thread = None
        if self._own_state:
            remove_state(self.state_dir)
        with contextlib.suppress(concurrent.futures.CancelledError):
            self._done.result(timeout=1)

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def node(self) -> Node:
        if self._node is None:
            raise RunnerError("the runner has not started")
        return self._node

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions the runner's passes raised (each pass carries on): a test may insist on none."""
        return list(self.node.errors)

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _on_loop(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        async def call() -> T:
            return fn()

        return self._run(call(), timeout)

    # -- reading

    def wait_for(self, predicate: Callable[[], T], timeout: float = 60.0, what: str = "the condition") -> T:
        """Poll ``predicate`` until it returns something truthy; fail with the runner's errors if time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; runner errors: {self.errors}")
            time.sleep(0.05)

    def get(self, kind_path: str) -> dict[str, Any] | None:
        """GET an API path (an object, or a list), None when it is not there."""
        return self._run(self.node.cluster_or_fail().api.get(kind_path))

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(PODS.path(namespace, name))

    def pods(self, namespace: str, selector: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Pods of the namespace (whose labels include ``selector``), by name."""
        found = (self.get(PODS.path(namespace)) or {}).get("items") or []
        wanted = dict(selector or {})
        chosen = [p for p in found if all((meta(p).get("labels") or {}).get(k) == v for k, v in wanted.items())]
        return sorted(chosen, key=lambda p: str(meta(p).get("name")))

    def service(self, namespace: str, name: str, port: int | None = None) -> tuple[str, int]:
        """Where the test reaches a Service port (the first port when ``port`` is None)."""

        def find() -> tuple[str, int] | None:
            proxy = self.node.proxy
            if proxy is None:
                return None
            for (ns, svc, number), address in proxy.exposed.items():
                if (ns, svc) == (namespace, name) and (port is None or number == port):
                    return address
            return None

        found = self.wait_for(lambda: self._on_loop(find), 30, f"Service {namespace}/{name} to listen")
        assert found is not None
        return found

    def services(self) -> dict[tuple[str, str, int], tuple[str, int]]:
        """Every Service port the test can reach: (namespace, name, port) -> (host, port) on 127.0.0.1."""
        return self._on_loop(lambda: dict(self.node.proxy.exposed) if self.node.proxy is not None else {})

    def url(self, namespace: str, name: str, port: int | None = None, scheme: str = "http") -> str:
        host, number = self.service(namespace, name, port)
        return f"{scheme}://{host}:{number}"

    def logs(self, namespace: str, pod: str, container: str | None = None, *, previous: bool = False) -> str:
        """``kubectl logs [-c CONTAINER] [--previous]``."""

        def read() -> str:
            kubelet = self.node.kubelet
            if kubelet is None:
                raise RunnerError("the kubelet has not started")
            return kubelet.logs(namespace, pod, container, previous=previous)

        try:
            return self._on_loop(read)
        except (ConfigError, KeyError) as exc:
            raise RunnerError(str(exc)) from None

    def exec(
        self, namespace: str, pod: str, argv: list[str], container: str | None = None, timeout: float = 60.0
    ) -> tuple[int, str]:
        """``kubectl exec``: exit code and output (stdout and stderr together)."""

        async def run() -> tuple[int, bytes]:
            kubelet = self.node.kubelet
            assert kubelet is not None
            return await kubelet.container(namespace, pod, container).exec(argv, timeout)

        try:
            code, output = self._run(run(), timeout + 10)
        except (ConfigError, KeyError) as exc:
            raise RunnerError(str(exc)) from None
        return code, output.decode(errors="replace")

    # -- acting as kubectl would

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> None:
        """``kubectl delete pod [--grace-period]`` (returns at once, like ``--wait=false``)."""
        options = {} if grace_seconds is None else {"gracePeriodSeconds": grace_seconds}
        self._run(self.node.cluster_or_fail().api.delete(PODS.path(namespace, name), options))

    def evict(self, namespace: str, name: str) -> bool:
        """The Eviction API (``kubectl drain`` per pod): True when evicted, False when a budget refused."""
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
        status, answer = self._run(
            self.node.cluster_or_fail().api.request("POST", PODS.path(namespace, name, "eviction"), body)
        )
        if status == 429:
            return False
        if status >= 300:
            raise RunnerError(f"eviction of {namespace}/{name}: {status} {answer}")
        return True

    def cordon(self, unschedulable: bool = True) -> None:
        api = self.node.cluster_or_fail()
        self._run(api.api.patch(NODES.path(name=api.node_name), {"spec": {"unschedulable": unschedulable}}))

    def uncordon(self) -> None:
        self.cordon(False)

    def drain(self, timeout: float = 60.0) -> None:
        """``kubectl drain``: cordon, then evict every pod on the node, retrying while budgets refuse,
        until none is left (pods of finished Jobs excepted). There is one node: a budget that only a
        replacement elsewhere could satisfy (``maxUnavailable: 1`` over two replicas) refuses the last
        evictions for good, and the drain times out, as ``kubectl drain`` would keep retrying."""
        self.cordon()

        def left() -> list[tuple[str, str]]:
            found = (self.get(PODS.path()) or {}).get("items") or []
            return [
                (str(meta(p)["namespace"]), str(meta(p)["name"]))
                for p in found
                if (p.get("spec") or {}).get("nodeName") == self.node.cluster_or_fail().node_name
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            ]

        def drained() -> bool:
            pending = left()
            for namespace, name in pending:
                pod = self.pod(namespace, name)
                if pod is not None and not meta(pod).get("deletionTimestamp"):
                    self.evict(namespace, name)
            return not pending

        self.wait_for(drained, timeout, "the node to drain")

    def stop_container(self, namespace: str, pod: str, container: str | None = None) -> None:
        """Stop a container (its image's stop signal, then SIGKILL after the pod's grace period) and
        keep it stopped, as a node problem would, until :meth:`start_container`; the pod stays, not Ready."""

        async def hold() -> None:
            kubelet = self.node.kubelet
            assert kubelet is not None
            run = kubelet.container(namespace, pod, container)
            grace = float(
                (kubelet.worker(namespace, pod).pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            )
            await run.hold(max(grace * self.options.time_scale, self.options.timeout_floor))

        self._run(hold(), 120)

    def start_container(self, namespace: str, pod: str, container: str | None = None) -> None:
        def release() -> None:
            kubelet = self.node.kubelet
            assert kubelet is not None
            kubelet.container(namespace, pod, container).release()

        self._on_loop(release)

    def _database_container(self, namespace: str, name: str) -> tuple[str, str]:
        """The pod and container of a database: a StatefulSet's first pod or CloudNativePG's primary,
        and its container named ``postgres`` (else its first one: sidecars such as ``roles`` stay up)."""
        for candidate in (f"{name}-0", f"{name}-1"):
            pod = self.pod(namespace, candidate)
            if pod is not None:
                containers = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
                return candidate, "postgres" if "postgres" in containers else containers[0]
        raise RunnerError(f"no pod {name}-0 or {name}-1 in {namespace}: is the database running?")

    def stop_database(self, namespace: str, name: str = "postgres") -> None:
        """Stop the tenant's PostgreSQL (SIGINT, the image's fast shutdown: clients are disconnected) and
        keep it down; the pod stays, not Ready."""
        self.stop_container(namespace, *self._database_container(namespace, name))

    def start_database(self, namespace: str, name: str = "postgres") -> None:
        self.start_container(namespace, *self._database_container(namespace, name))

    def create_job_from_cronjob(
        self, namespace: str, name: str, job_name: str | None = None, timeout: float = 120.0
    ) -> JobRun:
        """``kubectl create job JOB --from=cronjob/NAME``, then wait until the Job finished."""
        cluster = self.node.cluster_or_fail()
        cronjob = self.get(CRONJOBS.path(namespace, name))
        if cronjob is None:
            raise RunnerError(f'cronjobs.batch "{name}" not found')
        try:
            job = self._run(cluster.api.create(JOBS.path(namespace), job_from_cronjob(cronjob, job_name)))
        except ApiError as exc:
            raise RunnerError(str(exc)) from None
        job_name = str(meta(job)["name"])

        def finished_job() -> dict[str, Any] | None:
            found = self.get(JOBS.path(namespace, str(job_name)))
            return found if found is not None and finished(found) else None

        done = self.wait_for(finished_job, timeout, f"job {namespace}/{job_name} to finish")
        assert done is not None
        pods = [p for p in self.pods(namespace, {"batch.kubernetes.io/job-name": job_name})]
        codes: dict[str, int | None] = {}
        logs = []
        for pod in sorted(pods, key=lambda p: str(meta(p).get("creationTimestamp"))):
            pod_name = str(meta(pod)["name"])
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            terminated = [(s.get("state") or {}).get("terminated") for s in statuses]
            codes[pod_name] = next((int(t["exitCode"]) for t in terminated if t), None)
            for status in statuses:
                with contextlib.suppress(RunnerError):
                    logs.append(self.logs(namespace, pod_name, str(status.get("name"))))
        return JobRun(job_name, finished(done) == "Complete", codes, "".join(logs), done)

    def expose_host_port(
        self, namespace: str, name: str, port: int, host: str = "127.0.0.1", host_port: int | None = None
    ) -> None:
        """Offer a server of this machine to pods as Service ``name`` (port ``port``): a Service without
        selector and an EndpointSlice pointing at ``host:host_port``."""
        cluster = self.node.cluster_or_fail()
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "port", "port": port, "protocol": "TCP"}]},
        }
        endpoints = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-host",
                "namespace": namespace,
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "pod-runner-test",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [host], "conditions": {"ready": True}}],
            "ports": [{"name": "port", "port": host_port or port, "protocol": "TCP"}],
        }
        self._run(cluster.api.create(SERVICES.path(namespace), service))
        self._run(cluster.api.create(ENDPOINTSLICES.path(namespace), endpoints))


@contextlib.contextmanager
def running_pods(api: KubeApiHandle | str, **options: Any) -> Iterator[PodRunner]:
    """A started :class:`PodRunner` for the ``with`` block (options as its constructor's)."""
    runner = PodRunner(api, **options)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()
