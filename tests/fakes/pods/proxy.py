"""Services: addresses, names, EndpointSlices and forwarding (kube-proxy and the EndpointSlice controller).

From https://kubernetes.io/docs/concepts/services-networking/service/ and .../endpoint-slices/ :

- Every Service of a managed namespace gets a virtual address of 10.96.0.0/16 (its "cluster IP"; a
  headless Service too, see below) and its DNS names in every pod's /etc/hosts.
- A Service with a selector has as endpoints the pods of its namespace that match it and have an IP;
  ``targetPort`` by number, or by the name of a port the pod's containers declare. Only endpoints
  whose pod is Ready and not terminating receive connections (``publishNotReadyAddresses`` lifts the
  readiness rule), so a failing readiness probe takes a pod out of rotation. The EndpointSlice
  controller's slice (``<service>-<suffix>``, labels ``kubernetes.io/service-name`` and
  ``endpointslice.kubernetes.io/managed-by``, conditions ready/serving/terminating) is written to the
  API for anyone who looks.
- A Service without a selector uses the EndpointSlices someone else wrote for it; an address outside
  the pod network is reached from this machine's own network (how a test offers pods a server of its
  own, such as a PostgreSQL or a Vault stand-in on 127.0.0.1, under a cluster name: "Services without
  selectors").
- kube-proxy: each Service port listens on the Service address in the cluster network (so pods reach
  it through their default route) and on 127.0.0.1, a port of its own, for the test outside. Each
  connection goes to one ready endpoint, in turn; from a pod it is made from inside that pod's network
  namespace, so the endpoint sees the client pod's IP (kube-proxy keeps the client's address), from
  outside it comes from the node's address. With no ready endpoint a connection is reset at once.

Not emulated: headless Services answer DNS with the ready pods' IPs in Kubernetes; here their names
resolve to a forwarding address like any other Service's, which reaches only ready pods, so the
observable difference is a refused connection where the name would not resolve (the per-pod names of
a StatefulSet, ``<pod>.<service>.<ns>.svc.cluster.local``, do resolve to the pods). ExternalName
Services, UDP, session affinity, NodePorts and load balancers are not emulated.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tests.fakes.pods.api import ENDPOINTSLICES, PODS, SERVICES, Body, meta
from tests.fakes.pods.cluster import Cluster
from tests.fakes.pods.pod_status import is_ready
from tests.fakes.pods.podspec import container_port, generated_suffix, labels_match
from tests.fakes.pods.sandbox import ClusterNetwork, connect_in, listen_in

log = logging.getLogger(__name__)
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
ServiceKey = tuple[str, str]  # (namespace, name)
Sandboxes = Callable[[], dict[str, tuple[int, str, str]]]  # pod uid -> (netns pid, pod IP, namespace)
POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    in_cluster: bool  # a pod's address (reached through the cluster network), else this machine's
    ready: bool
    serving: bool
    terminating: bool
    pod: Body | None = None


@dataclass
class ServiceState:
    key: ServiceKey
    ip: str
    ports: list[Body]
    endpoints: dict[int, list[Endpoint]] = field(default_factory=dict)  # service port -> endpoints
    turn: itertools.count[int] = field(default_factory=itertools.count)


def _pod_ip(pod: Body, sandboxes: Mapping[str, tuple[int, str, str]]) -> str | None:
    """The pod's IP once its status shows it and its sandbox still runs."""
    found = sandboxes.get(str(meta(pod).get("uid")))
    if found is None or not (pod.get("status") or {}).get("podIP"):
        return None
    return found[1]


def selected_endpoints(
    service: Body, pods: list[Body], sandboxes: Mapping[str, tuple[int, str, str]]
) -> dict[int, list[Endpoint]]:
    """Endpoints of a Service with a selector, per Service port."""
    spec = service.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    found: dict[int, list[Endpoint]] = {}
    for port in spec.get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        entries = []
        for pod in pods:
            located = _pod_ip(pod, sandboxes)
            if located is None or not labels_match(
                {"matchLabels": spec.get("selector")}, meta(pod).get("labels") or {}
            ):
                continue
            number = container_port(pod, target)
            if number is None:
                continue
            terminating = bool(meta(pod).get("deletionTimestamp"))
            ready = (is_ready(pod) or publish) and not terminating
            entries.append(Endpoint(located, number, True, ready, is_ready(pod) or publish, terminating, pod))
        found[int(port["port"])] = entries
    return found


def sliced_endpoints(service: Body, slices: list[Body]) -> dict[int, list[Endpoint]]:
    """Endpoints of a Service without a selector: the slices others wrote, ports matched by name."""
    found: dict[int, list[Endpoint]] = {}
    for port in (service.get("spec") or {}).get("ports") or []:
        entries = []
        for item in slices:
            for slice_port in item.get("ports") or []:
                if (slice_port.get("name") or "") != (port.get("name") or ""):
                    continue
                for endpoint in item.get("endpoints") or []:
                    conditions = endpoint.get("conditions") or {}
                    ready = conditions.get("ready", True) is not False
                    for address in endpoint.get("addresses") or []:
                        inside = ipaddress.ip_address(str(address)) in POD_NETWORK
                        entries.append(Endpoint(str(address), int(slice_port["port"]), inside, ready, ready, False))
        found[int(port["port"])] = entries
    return found


def slice_body(service: Body, endpoints: Mapping[int, list[Endpoint]], name: str | None) -> Body:
    """The EndpointSlice the controller keeps for a Service with a selector."""
    info = meta(service)
    ports = (service.get("spec") or {}).get("ports") or []
    seen: dict[str, Body] = {}
    slice_ports = []
    for port in ports:
        entries = endpoints.get(int(port["port"])) or []
        number = entries[0].port if entries else None
        slice_ports.append({"name": port.get("name", ""), "protocol": port.get("protocol", "TCP"), "port": number})
        for entry in entries:
            if entry.pod is None or entry.address in seen:
                continue
            pod_meta = meta(entry.pod)
            seen[entry.address] = {
                "addresses": [entry.address],
                "conditions": {"ready": entry.ready, "serving": entry.serving, "terminating": entry.terminating},
                "nodeName": (entry.pod.get("spec") or {}).get("nodeName"),
                "targetRef": {
                    "kind": "Pod",
                    "namespace": pod_meta.get("namespace"),
                    "name": pod_meta.get("name"),
                    "uid": pod_meta.get("uid"),
                },
            }
    body: Body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": info.get("namespace"),
            "labels": {SERVICE_NAME_LABEL: info.get("name"), MANAGED_BY_LABEL: CONTROLLER},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": info.get("name"),
                    "uid": info.get("uid"),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "addressType": "IPv4",
        "endpoints": [seen[address] for address in sorted(seen)],
        "ports": slice_ports,
    }
    if name:
        body["metadata"]["name"] = name
    else:
        body["metadata"]["name"] = f"{info.get('name')}-{generated_suffix(str(info.get('uid')))}"
    return body


class ServiceProxy:
    """Every Service's address, names, endpoints and listeners."""

    def __init__(self, cluster: Cluster, network: ClusterNetwork, sandboxes: Sandboxes) -> None:
        self.cluster = cluster
        self.network = network
        self.sandboxes = sandboxes
        self._netns_of: dict[str, int] = {}  # pod IP -> its sandbox
        self._connections: set[asyncio.Task[None]] = set()
        self.services: dict[ServiceKey, ServiceState] = {}
        self.exposed: dict[tuple[str, str, int], tuple[str, int]] = {}
        self._servers: dict[tuple[str, ServiceKey, int], asyncio.base_events.Server] = {}  # (where, service, port)
        self._slices_written: dict[ServiceKey, Body] = {}

    # -- what pods see (ServiceView)

    def addresses(self) -> dict[tuple[str, str], str]:
        return {key: state.ip for key, state in self.services.items()}

    def cluster_ips(self, namespace: str) -> dict[str, str]:
        return {key[1]: state.ip for key, state in self.services.items() if key[0] == namespace}

    def pod_names(self) -> dict[tuple[str, str], str]:
        """(namespace, "<hostname>.<subdomain>") -> pod IP, for pods whose subdomain names a Service."""
        found = {}
        for pod in self.cluster.cache(PODS).items():
            spec, info = pod.get("spec") or {}, meta(pod)
            ip = (pod.get("status") or {}).get("podIP")
            key = (str(info.get("namespace")), str(spec.get("subdomain")))
            if ip and spec.get("subdomain") and key in self.services and not info.get("deletionTimestamp"):
                found[(key[0], f"{spec.get('hostname') or info.get('name')}.{key[1]}")] = str(ip)
        return found

    # -- keeping up with the API

    async def sync(self) -> bool:
        """Bring services, endpoints and listeners up to date; True when the set of names changed."""
        live = {
            (str(meta(s).get("namespace")), str(meta(s).get("name"))): s
            for s in self.cluster.cache(SERVICES).items()
            if self.cluster.managed(str(meta(s).get("namespace")))
            and (s.get("spec") or {}).get("type", "ClusterIP") in ("ClusterIP", "NodePort", "LoadBalancer")
        }
        names_changed = set(live) != set(self.services)
        for key in set(self.services) - set(live):
            del self.services[key]
            self._slices_written.pop(key, None)
        sandboxes = self.sandboxes()
        self._netns_of = {ip: pid for pid, ip, _ in sandboxes.values()}
        pods = list(self.cluster.cache(PODS).items())
        slices = list(self.cluster.cache(ENDPOINTSLICES).items())
        for key, service in live.items():
            state = self.services.get(key)
            ports = [p for p in (service.get("spec") or {}).get("ports") or [] if p.get("protocol", "TCP") == "TCP"]
            if state is None:
                state = self.services[key] = ServiceState(key, self.network.service_ip(), ports)
            state.ports = ports
            if (service.get("spec") or {}).get("selector"):
                namespace_pods = [p for p in pods if meta(p).get("namespace") == key[0]]
                state.endpoints = selected_endpoints(service, namespace_pods, sandboxes)
                self._write_slice(key, service, state.endpoints, slices)
            else:
                mine = [
                    s
                    for s in slices
                    if meta(s).get("namespace") == key[0]
                    and (meta(s).get("labels") or {}).get(SERVICE_NAME_LABEL) == key[1]
                    and (meta(s).get("labels") or {}).get(MANAGED_BY_LABEL) != CONTROLLER
                ]
                state.endpoints = sliced_endpoints(service, mine)
        await self._listen()
        return names_changed

    def _write_slice(
        self, key: ServiceKey, service: Body, endpoints: Mapping[int, list[Endpoint]], slices: list[Body]
    ) -> None:
        existing = next(
            (
                s
                for s in slices
                if meta(s).get("namespace") == key[0]
                and (meta(s).get("labels") or {}).get(SERVICE_NAME_LABEL) == key[1]
                and (meta(s).get("labels") or {}).get(MANAGED_BY_LABEL) == CONTROLLER
            ),
            None,
        )
        desired = slice_body(service, endpoints, meta(existing).get("name") if existing else None)
        comparable = {k: desired[k] for k in ("endpoints", "ports")}
        if self._slices_written.get(key) == comparable:
            return
        if existing is not None and {k: existing.get(k) for k in ("endpoints", "ports")} == comparable:
            self._slices_written[key] = comparable
            return
        self._slices_written[key] = comparable
        api = self.cluster.api
        if existing is None:
            self.cluster.background(
                self.cluster.write(ENDPOINTSLICES, api.create(ENDPOINTSLICES.path(key[0]), desired))
            )
        else:
            path = ENDPOINTSLICES.path(key[0], str(meta(existing).get("name")))
            patch = {"endpoints": desired["endpoints"], "ports": desired["ports"]}
            self.cluster.background(self.cluster.write(ENDPOINTSLICES, api.patch(path, patch)))

    async def _listen(self) -> None:
        wanted: dict[tuple[str, ServiceKey, int], tuple[int | None, str, int]] = {}
        for key, state in self.services.items():
            for port in state.ports:
                number = int(port["port"])
                wanted[("node", key, number)] = (None, "127.0.0.1", 0)
                wanted[("cluster", key, number)] = (self.network.pid, state.ip, number)
        for where in set(self._servers) - set(wanted):
            server = self._servers.pop(where)
            server.close()
            if where[0] == "node":
                self.exposed.pop((where[1][0], where[1][1], where[2]), None)
        for where, (netns, host, listen_port) in wanted.items():
            if where in self._servers:
                continue
            sock = listen_in(netns, host, listen_port)
            service, number = where[1], where[2]

            async def handle(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, service: ServiceKey = service,
                number: int = number,
            ) -> None:  # fmt: skip
                task = asyncio.current_task()
                assert task is not None
                self._connections.add(task)
                try:
                    await self._forward(service, number, reader, writer)
                except asyncio.CancelledError:  # the runner stops: end quietly (asyncio's server
                    writer.transport.abort()  # callback cannot take a cancelled handler in 3.11)
                finally:
                    self._connections.discard(task)

            self._servers[where] = await asyncio.start_server(handle, sock=sock)
            if netns is None:
                self.exposed[(service[0], service[1], number)] = ("127.0.0.1", sock.getsockname()[1])

    def _pick(self, service: ServiceKey, port: int) -> Endpoint | None:
        state = self.services.get(service)
        if state is None:
            return None
        ready = [e for e in state.endpoints.get(port) or [] if e.ready]
        if not ready:
            return None
        return ready[next(state.turn) % len(ready)]

    async def _forward(
        self, service: ServiceKey, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        endpoint = self._pick(service, port)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        if endpoint is not None:
            peer = writer.get_extra_info("peername")
            client = self._netns_of.get(str(peer[0])) if isinstance(peer, tuple) else None
            where = (client or self.network.pid) if endpoint.in_cluster else None
            with contextlib.suppress(OSError, TimeoutError):
                upstream = await connect_in(where, endpoint.address, endpoint.port, timeout=5)
        if upstream is None:
            _reset(writer)
            return
        await _pump_both(reader, writer, *upstream)

    async def close(self) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()
        self.exposed.clear()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST, as a connection to a Service with no ready endpoint is refused."""
    sock = writer.get_extra_info("socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pump(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(65536):
            target.write(chunk)
            await target.drain()
        if target.can_write_eof():
            target.write_eof()
    except (OSError, RuntimeError):
        target.transport.abort()


async def _pump_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    try:
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
    finally:
        for side in (writer, up_writer):
            side.transport.abort() if side.transport.is_closing() else side.close()
