"""Pod sandboxes and the cluster network: each pod's network namespace, and how pods reach each other.

A pod gets network and UTS namespaces of its own, held by a "pause" process (``container_init.py
pause``), as the container runtime's sandbox does (https://kubernetes.io/docs/concepts/workloads/pods/#pod-networking):
its loopback is its own, so two replicas both listen on 0.0.0.0:8080 and 127.0.0.1 inside a pod is
that pod. The cluster network is one more namespace, a router of the runner's own (:class:`ClusterNetwork`):
each pod is joined to it by a veth pair, with a pod IP of 10.244.0.0/16 on its ``eth0`` and a default
route through the router (10.244.0.1, also the node's address); the router forwards between pods and
holds the Service addresses (10.96.0.0/16, all local to it), where the Service proxy listens. Like a
CNI plugin's bridge, but nothing of it is in the machine's own network namespace: the machine's
interfaces, routes and ports are never touched. This process reaches into a namespace by opening a
socket there (``setns`` on one thread, for one system call).

DNS is the pod's ``/etc/hosts`` (bind-mounted by ``container_init.py``): the kubelet's managed entries
(localhost, the pod's own name), then one line per Service, mapping ``<svc>`` (same namespace),
``<svc>.<ns>``, ``<svc>.<ns>.svc`` and ``<svc>.<ns>.svc.cluster.local`` to the Service's address, and the
names of pods with a hostname and subdomain (StatefulSet pods: ``<pod>.<svc>.<ns>.svc.cluster.local``).
The file is rewritten in place (same inode) when Services come and go, so running pods see new names.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

INIT = Path(__file__).resolve().parent / "container_init.py"
CLONE_NEWNET = 0x40000000
CLUSTER_DOMAIN = "cluster.local"
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


class SandboxError(RuntimeError):
    """A pod sandbox that cannot be made (``FailedCreatePodSandBox``)."""


def _setns(handle: int) -> None:
    if _libc.setns(handle, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def socket_in(pid: int | None) -> socket.socket:
    """A TCP socket in the network namespace of process ``pid`` (this process's own when None)."""
    if pid is None:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def listen_in(pid: int | None, host: str, port: int) -> socket.socket:
    sock = socket_in(pid)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def connect_in(
    pid: int | None, host: str, port: int, *, source: str | None = None, timeout: float = 5.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection made from inside the namespace of ``pid``, from address ``source`` if given (so the
    server sees the client's pod IP, as behind kube-proxy)."""
    sock = socket_in(pid)
    try:
        sock.setblocking(False)
        if source is not None:
            sock.bind((source, 0))
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def _pause(hostname: str, directory: Path) -> asyncio.subprocess.Process:
    """A pause process: new network, UTS and IPC namespaces, loopback up, ``hostname``; it waits. Its
    "ready" and any error go to files (no pipes stay open for the life of the pod)."""
    directory.mkdir(parents=True, exist_ok=True)
    ready, errors = directory / "pause.ready", directory / "pause.log"
    ready.unlink(missing_ok=True)
    with open(errors, "wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", str(INIT), "pause", hostname, str(ready),
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
    for _ in range(1000):
        if ready.exists() or process.returncode is not None:
            break
        await asyncio.sleep(0.01)
    if not ready.exists():
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        error = errors.read_text(errors="replace").strip()
        raise SandboxError(f"failed to create pod sandbox: {error or 'no answer'}")
    return process


async def _ip(pid: int, commands: list[str]) -> None:
    """``ip -batch`` inside the network namespace of ``pid``."""
    process = await asyncio.create_subprocess_exec(
        "nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-batch", "-",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate("\n".join(commands).encode() + b"\n")
    if process.returncode != 0:
        raise SandboxError(f"network setup failed: {output.decode(errors='replace').strip()}")


class ClusterNetwork:
    """The router namespace that joins every pod, and the address plans of pods and Services."""

    GATEWAY = "10.244.0.1"
    SERVICE_RANGE = "10.96.0.0/16"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process: asyncio.subprocess.Process | None = None
        self._next_pod = 2
        self._next_service = 10

    @property
    def pid(self) -> int:
        if self.process is None:
            raise SandboxError("the cluster network is not up")
        return self.process.pid

    async def start(self) -> None:
        self.process = await _pause("cluster-network", self.directory)
        await _ip(self.pid, [f"route add local {self.SERVICE_RANGE} dev lo"])
        process = await asyncio.create_subprocess_exec(
            "nsenter", f"--net=/proc/{self.pid}/ns/net", "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"
        )
        if await process.wait() != 0:
            raise SandboxError("cannot enable IPv4 forwarding in the cluster network")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()

    def pod_ip(self) -> tuple[str, int]:
        number = self._next_pod
        self._next_pod += 1
        return f"10.244.{number // 250}.{number % 250 + 2}", number

    def service_ip(self) -> str:
        number = self._next_service
        self._next_service += 1
        return f"10.96.{number // 250}.{number % 250 + 1}"

    async def attach(self, pod_pid: int, ip: str, number: int) -> None:
        """A veth pair: ``eth0`` with ``ip`` in the pod, ``vp<number>`` in the router, routes both ways."""
        link = f"vp{number}"
        await _ip(
            self.pid,
            [
                f"link add {link} type veth peer name eth0 netns {pod_pid}",
                f"addr add {self.GATEWAY}/32 dev {link}",
                f"link set {link} up",
                f"route add {ip}/32 dev {link}",
            ],
        )
        await _ip(
            pod_pid,
            [
                f"addr add {ip}/32 dev eth0",
                "link set eth0 up",
                f"route add {self.GATEWAY} dev eth0",
                f"route add default via {self.GATEWAY} dev eth0",
            ],
        )


class Sandbox:
    """One pod's sandbox: the pause process, the pod IP, and the pod's hosts and resolv.conf files."""

    def __init__(self, directory: Path, network: ClusterNetwork, hostname: str) -> None:
        self.directory = directory
        self.network = network
        self.ip, self._number = network.pod_ip()
        self.hostname = hostname
        self.process: asyncio.subprocess.Process | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.hosts_path = directory / "etc-hosts"
        self.resolv_path = directory / "resolv.conf"
        self.hostname_path = directory / "hostname"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise SandboxError("the sandbox is not running")
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self.process = await _pause(self.hostname, self.directory)
        try:
            await self.network.attach(self.process.pid, self.ip, self._number)
        except SandboxError:
            await self.stop()
            raise
        self.hostname_path.write_text(self.hostname + "\n", encoding="utf-8")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()

    def write_dns(self, hosts: str, search: Iterable[str]) -> None:
        _rewrite(self.hosts_path, hosts)
        _rewrite(self.resolv_path, resolv_conf(search))


def _rewrite(path: Path, text: str) -> None:
    """Replace the content in place: a bind mount of the file keeps pointing at the same inode."""
    with open(path, "a+", encoding="utf-8") as handle:
        handle.seek(0)
        if handle.read() == text:
            return
        handle.seek(0)
        handle.truncate()
        handle.write(text)


def resolv_conf(search: Iterable[str]) -> str:
    """ClusterFirst DNS: the cluster's search path and ndots 5; the machine's name servers for the rest."""
    servers = []
    with contextlib.suppress(OSError):
        servers = [line for line in Path("/etc/resolv.conf").read_text().splitlines() if line.startswith("nameserver")]
    return "\n".join([f"search {' '.join(search)}", *servers, "options ndots:5", ""])


def hosts_file(
    pod: Mapping[str, Any],
    ip: str,
    services: Mapping[tuple[str, str], str],
    pods: Mapping[tuple[str, str], str],
    aliases: Iterable[Mapping[str, Any]],
) -> str:
    """The kubelet-managed /etc/hosts, the Services' names ((namespace, name) -> address), and the
    names of pods with a subdomain ((namespace, "<hostname>.<subdomain>") -> pod IP)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    hostname = str(spec.get("hostname") or name)
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if spec.get("subdomain"):
        lines.append(f"{ip}\t{hostname}.{spec['subdomain']}.{namespace}.svc.{CLUSTER_DOMAIN}\t{hostname}")
    else:
        lines.append(f"{ip}\t{hostname}")
    if aliases:
        lines += ["", "# Entries added by HostAliases."]
        lines += [f"{a.get('ip')}\t" + "\t".join(str(n) for n in a.get("hostnames") or []) for a in aliases]
    lines += ["", "# Services and pods of the cluster (cluster DNS, as the pod runner provides it)."]
    for (service_namespace, service), address in sorted(services.items()):
        names = [f"{service}.{service_namespace}", f"{service}.{service_namespace}.svc"]
        names.append(f"{service}.{service_namespace}.svc.{CLUSTER_DOMAIN}")
        if service_namespace == namespace:
            names.insert(0, service)
        lines.append(f"{address}\t{' '.join(names)}")
    for (pod_namespace, pod_name), address in sorted(pods.items()):
        names = [f"{pod_name}.{pod_namespace}.svc.{CLUSTER_DOMAIN}"]
        if pod_namespace == namespace:
            names.append(pod_name)
        lines.append(f"{address}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


def search_path(namespace: str) -> list[str]:
    return [f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
