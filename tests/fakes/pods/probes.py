"""Container probes, from "Container probes" (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-probes)
and "Configure Liveness, Readiness and Startup Probes" (https://kubernetes.io/docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes/).

- ``httpGet``: a GET to the pod IP (or ``host``) on ``port`` (a number, or the name of one of the
  container's ports), ``path``, ``httpHeaders``, ``User-Agent: kube-probe/<version>``; 200 to 399 is
  success, redirects are not followed (a 3xx counts as success, as when the kubelet follows none).
  ``scheme: HTTPS`` skips certificate verification, as the kubelet does.
- ``tcpSocket``: the connection opens.
- ``exec``: the command exits 0 inside the container; killed at ``timeoutSeconds``.
- ``grpc``: not supported here; such a probe always fails and says so.

Counting (:class:`ProbeCounter`): ``successThreshold`` consecutive successes set the result, and
``failureThreshold`` consecutive failures clear it. Defaults: period 10 s, timeout 1 s, success 1,
failure 3, no initial delay. Readiness starts as failure; liveness as success; startup as failure, and
liveness and readiness only run once startup succeeded.

Time is scaled by the runner's ``time_scale`` (every period, delay and timeout multiplied by it), so a
probe of period 10 s runs every 0.5 s at scale 0.05; timeouts keep a floor (``timeout_floor``) so a
busy machine does not fail probes a real node would pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.pods.podspec import container_port
from tests.fakes.pods.sandbox import connect_in

PROBE_AGENT = "kube-probe/1.33"
Exec = Callable[[list[str], float], Awaitable[int]]  # (argv, timeout) -> exit code (-1: timed out)


@dataclass
class ProbeCounter:
    """Consecutive results, and the verdict they give."""

    kind: str  # startup, liveness, readiness
    success_threshold: int = 1
    failure_threshold: int = 3
    result: bool = field(init=False)
    successes: int = 0
    failures: int = 0
    last_message: str = ""

    def __post_init__(self) -> None:
        self.result = self.kind == "liveness"

    @classmethod
    def of(cls, kind: str, probe: Mapping[str, Any]) -> ProbeCounter:
        success = 1 if kind != "readiness" else int(probe.get("successThreshold") or 1)
        return cls(kind, success, int(probe.get("failureThreshold") or 3))

    def record(self, ok: bool, message: str = "") -> bool:
        """Count one result; True when the verdict changed."""
        before = self.result
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.success_threshold:
                self.result = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            self.last_message = message
            if self.failures >= self.failure_threshold:
                self.result = False
        return before != self.result


@dataclass(frozen=True)
class Timing:
    """A probe's times, in seconds of this runner's clock (already scaled)."""

    initial_delay: float
    period: float
    timeout: float


def timing(probe: Mapping[str, Any], scale: float, timeout_floor: float) -> Timing:
    return Timing(
        initial_delay=float(probe.get("initialDelaySeconds") or 0) * scale,
        period=float(probe.get("periodSeconds") or 10) * scale,
        timeout=max(float(probe.get("timeoutSeconds") or 1) * scale, timeout_floor),
    )


async def _http_get(
    netns: int | None, host: str, port: int, action: Mapping[str, Any], timeout: float
) -> tuple[bool, str]:
    reader, writer = await connect_in(netns, host, port, timeout=timeout)
    try:
        if str(action.get("scheme") or "HTTP").upper() == "HTTPS":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            await writer.start_tls(context)
        headers = {"Host": f"{host}:{port}", "User-Agent": PROBE_AGENT, "Accept": "*/*", "Connection": "close"}
        for header in action.get("httpHeaders") or []:
            headers[str(header.get("name"))] = str(header.get("value"))
        path = str(action.get("path") or "/")
        request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(request.encode("latin-1"))
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    parts = line.decode("latin-1").split()
    code = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}"


async def run_probe(
    probe: Mapping[str, Any],
    *,
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    netns: int | None,
    pod_ip: str,
    run_exec: Exec,
    timeout: float,
) -> tuple[bool, str]:
    """One probe: (success, the message a failure is reported with)."""
    try:
        if "exec" in probe:
            argv = [str(a) for a in (probe["exec"] or {}).get("command") or []]
            code = await run_exec(argv, timeout)
            if code == -1:
                return False, f"command {argv!r} timed out"
            return code == 0, f"command {argv!r} exited with {code}"
        for action_name in ("httpGet", "tcpSocket"):
            if action_name in probe:
                action = probe[action_name] or {}
                port = container_port(pod, action.get("port"), container)
                if port is None:
                    return False, f"port {action.get('port')!r} is not a port of container {container.get('name')}"
                host = str(action.get("host") or pod_ip)
                if action_name == "httpGet":
                    async with asyncio.timeout(timeout):
                        return await _http_get(netns, host, port, action, timeout)
                _, writer = await connect_in(netns, host, port, timeout=timeout)
                writer.close()
                return True, ""
        if "grpc" in probe:
            return False, "grpc probes are not supported by the pod runner"
        return False, "the probe names no handler"
    except (OSError, TimeoutError) as exc:
        return False, f"probe failed: {type(exc).__name__}: {exc}"
