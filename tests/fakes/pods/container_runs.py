"""One container of a pod over its whole life: start, probe, end, restart, as the kubelet runs it.

"Pod Lifecycle" (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/): ``restartPolicy``
Always restarts whatever the exit code, OnFailure only after a non-zero exit, Never not at all (init
containers restart only after a failure, and not at all under Never; an init container with its own
``restartPolicy: Always`` is a sidecar: it keeps running and counts as initialised once started). A
restart waits the kubelet's exponential back-off: none the first time, then 10 s, 20 s, 40 s ... up to
5 minutes (``CrashLoopBackOff`` meanwhile), reset once a container ran 10 minutes; times scaled by the
runner's ``time_scale``. A liveness failure (or a startup probe that never succeeds) kills the container
with the pod's grace period (or the probe's ``terminationGracePeriodSeconds``) and then the restart
policy decides. A container that cannot be configured (missing Secret key, ...) waits in
``CreateContainerConfigError`` and an image the table lacks in ``ErrImagePull``/``ImagePullBackOff``,
both retried when the objects change.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tests.fakes.pods.containers import ContainerProcess, exec_in, launch_spec
from tests.fakes.pods.images import Image, ImageTable
from tests.fakes.pods.pod_status import ContainerView, now
from tests.fakes.pods.podspec import ConfigError, command_line, identity, process_env
from tests.fakes.pods.probes import ProbeCounter, run_probe, timing
from tests.fakes.pods.sandbox import Sandbox
from tests.fakes.pods.volumes import HostVolume

PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
BACKOFF_START, BACKOFF_MAX, BACKOFF_RESET = 10.0, 300.0, 600.0


class PodContext(Protocol):
    """What a container needs from its pod's worker."""

    pod: dict[str, Any]
    sandbox: Sandbox
    volumes: dict[str, HostVolume]
    images: ImageTable
    scale: float
    timeout_floor: float

    def env_for(self, container: Mapping[str, Any]) -> dict[str, str]: ...
    def touch(self) -> None: ...
    def event(self, kind: str, reason: str, message: str) -> None: ...
    async def changed(self) -> None: ...
    def log_path(self, container: str, restart: int) -> Path: ...
    def run_dir(self, container: str, restart: int) -> Path: ...


@dataclass
class Backoff:
    """The kubelet's crash-loop back-off (seconds before the scale)."""

    next_delay: float = 0.0

    def after_exit(self, ran_for: float, scale: float) -> float:
        if ran_for >= BACKOFF_RESET * scale:
            self.next_delay = 0.0
        delay = self.next_delay
        self.next_delay = min(BACKOFF_MAX, max(BACKOFF_START, self.next_delay * 2))
        return delay * scale


class ContainerRun:
    """The supervisor of one container: its runs one after the other, and what the status shows."""

    def __init__(self, pod: PodContext, container: Mapping[str, Any], *, init: bool) -> None:
        self.pod = pod
        self.container = dict(container)
        self.init = init
        self.sidecar = init and container.get("restartPolicy") == "Always"
        self.view = ContainerView(str(container.get("name")), str(container.get("image")), sidecar=self.sidecar)
        self.process: ContainerProcess | None = None
        self.image: Image | None = None
        self.started = asyncio.Event()
        self.held = False
        self._release = asyncio.Event()
        self._kill: asyncio.Future[str] | None = None
        self._backoff = Backoff()
        self.readiness: ProbeCounter | None = None
        self._ran_for = 0.0
        self.runs_started = 0  # runs of this container so far; each has its own directory and log file
        self._probing: object | None = None  # the token of the run whose probes may go on

    @property
    def name(self) -> str:
        return self.view.name

    def policy(self) -> str:
        pod_policy = str((self.pod.pod.get("spec") or {}).get("restartPolicy") or "Always")
        if self.sidecar:
            return "Always"
        if self.init:
            return "Never" if pod_policy == "Never" else "OnFailure"
        return pod_policy

    async def supervise(self) -> None:
        """Run until the container will not run again (returns), or the pod stops it (cancelled)."""
        while True:
            code = await self._run_once()
            if code is None:
                continue
            if self.held:
                await self._release.wait()
                self.view.restart_count += 1
                continue
            policy = self.policy()
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                self.view.done = True
                self.pod.touch()
                return
            self.view.restart_count += 1
            delay = self._backoff.after_exit(self._ran_for, self.pod.scale)
            if delay > 0:
                message = f"back-off {_seconds(delay / self.pod.scale)} restarting failed container={self.name} "
                message += f"pod={(self.pod.pod.get('metadata') or {}).get('name')}"
                self.view.last_state, self.view.state = (
                    self.view.state,
                    {"waiting": {"reason": "CrashLoopBackOff", "message": message}},
                )
                self.pod.touch()
                self.pod.event("Warning", "BackOff", "Back-off restarting failed container " + self.name)
                await asyncio.sleep(delay)

    async def _configure(self) -> dict[str, Any] | None:
        """The launch spec, or None after showing why it cannot be made (then waits for a change)."""
        pod, reference = self.pod.pod, str(self.container.get("image"))
        image = self.pod.images.resolve(reference)
        if image is None:
            message = f'Failed to pull image "{reference}": not in the pod runner\'s image table'
            self._waiting("ErrImagePull", message)
            self.pod.event("Warning", "Failed", message)
            await asyncio.sleep(BACKOFF_START * self.pod.scale)
            self._waiting("ImagePullBackOff", f'Back-off pulling image "{reference}"')
            await self.pod.changed()
            return None
        try:
            env = self.pod.env_for(self.container)
            who = identity(pod, self.container, image)
            argv = command_line(image, self.container, env)
            hostname = str((pod.get("spec") or {}).get("hostname") or (pod.get("metadata") or {}).get("name"))
            full_env = process_env(image, env, hostname, who.home)
            spec = launch_spec(
                pod=pod,
                container=self.container,
                image=image,
                who=who,
                argv=argv,
                env=full_env,
                volumes=self.pod.volumes,
                sandbox=self.pod.sandbox,
                directory=self.pod.run_dir(self.name, self.runs_started),
            )
        except ConfigError as exc:
            self._waiting("CreateContainerConfigError", str(exc))
            self.pod.event("Warning", "Failed", f"Error: {exc}")
            await self.pod.changed()
            return None
        self.image = image
        return spec

    def _waiting(self, reason: str, message: str) -> None:
        if "terminated" in self.view.state:
            self.view.last_state = self.view.state
        self.view.state = {"waiting": {"reason": reason, "message": message}}
        self.pod.touch()

    async def _run_once(self) -> int | None:
        spec = await self._configure()
        if spec is None or self.image is None:
            return None
        run = self.runs_started
        self.runs_started += 1
        process = ContainerProcess(
            self.pod.run_dir(self.name, run), self.pod.log_path(self.name, run), self.image.stop_signal
        )
        self.process = process
        self._kill = asyncio.get_running_loop().create_future()
        started_at, began = now(), time.monotonic()
        await process.start(spec)
        if "terminated" in self.view.state:
            self.view.last_state = self.view.state
        self.view.container_id = f"containerd://{secrets.token_hex(32)}"
        self.view.state = {"running": {"startedAt": started_at}}
        self.view.ever_created = True
        self.started.clear()
        has_startup = "startupProbe" in self.container
        self._set_started(not has_startup)
        self.readiness = (
            ProbeCounter.of("readiness", self.container["readinessProbe"])
            if "readinessProbe" in self.container
            else None
        )
        self._update_ready()
        probed = [kind for kind in PROBES if kind in self.container] if not self.init or self.sidecar else []
        token = self._probing = object()
        probes = [asyncio.create_task(self._probe(kind, token)) for kind in probed]
        waiter: asyncio.Future[Any] = asyncio.ensure_future(process.wait())
        kill: asyncio.Future[Any] = self._kill
        try:
            await asyncio.wait([waiter, kill], return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                code = await process.stop(self._grace_for_kill())
            else:
                code = waiter.result()
        finally:
            self._probing = None
            for task in probes:
                task.cancel()
            await asyncio.gather(*probes, return_exceptions=True)
        self._ran_for = time.monotonic() - began
        failed = code != 0
        message = process.termination_message(self.container, failed)
        reason = (
            "Completed"
            if code == 0
            else "StartError"
            if code == 128 and message.startswith("container init")
            else "Error"
        )
        terminated: dict[str, Any] = {"exitCode": code, "reason": reason, "startedAt": started_at, "finishedAt": now()}
        terminated["containerID"] = self.view.container_id
        if code > 128 and code - 128 < 65:
            terminated["signal"] = code - 128
        if message:
            terminated["message"] = message
        self.view.state = {"terminated": terminated}
        self._set_started(False)
        self._update_ready()
        return code

    def _grace_for_kill(self) -> float:
        seconds = (self.pod.pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        reason = self._kill.result() if self._kill is not None and self._kill.done() else ""
        probe = self.container.get("livenessProbe" if reason == "liveness" else "startupProbe") or {}
        if probe.get("terminationGracePeriodSeconds") is not None:
            seconds = probe["terminationGracePeriodSeconds"]
        return max(float(30 if seconds is None else seconds) * self.pod.scale, self.pod.timeout_floor)

    def _set_started(self, value: bool) -> None:
        self.view.started = value
        if value:
            self.started.set()
        self.pod.touch()

    def _update_ready(self) -> None:
        ready = self.view.running and self.view.started and (self.readiness is None or self.readiness.result)
        if self.init and not self.sidecar:
            ready = False
        if ready != self.view.ready:
            self.view.ready = ready
            self.pod.touch()

    async def _probe(self, field_name: str, token: object) -> None:
        """One probe of the current run, until the run ends (checked after every wait as well: a
        cancellation can be lost by asyncio in Python 3.11 when it meets a finishing operation)."""
        probe = self.container[field_name] or {}
        kind = field_name.removesuffix("Probe")
        counter = self.readiness if kind == "readiness" and self.readiness is not None else ProbeCounter.of(kind, probe)
        times = timing(probe, self.pod.scale, self.pod.timeout_floor)
        if kind != "startup":
            await self.started.wait()
        await asyncio.sleep(times.initial_delay)
        while self._probing is token:
            ok, message = await run_probe(
                probe,
                pod=self.pod.pod,
                container=self.container,
                netns=self.pod.sandbox.pid,
                pod_ip=self.pod.sandbox.ip,
                run_exec=self._exec_probe,
                timeout=times.timeout,
            )
            if counter.record(ok, message) and not ok:
                self.pod.event("Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {message}")
            if kind == "startup" and counter.result:
                self._set_started(True)
                self._update_ready()
                return
            failed_for_good = not counter.result and counter.failures >= counter.failure_threshold
            if kind in ("startup", "liveness") and failed_for_good:
                self.pod.event("Normal", "Killing", f"Container {self.name} failed {kind} probe, will be restarted")
                if self._kill is not None and not self._kill.done():
                    self._kill.set_result(kind)
                return
            if kind == "readiness":
                self._update_ready()
            await asyncio.sleep(times.period)

    async def _exec_probe(self, argv: list[str], timeout: float) -> int:
        code, _ = await self.exec(argv, timeout)
        return code

    async def exec(self, argv: list[str], timeout: float | None) -> tuple[int, bytes]:
        """``kubectl exec``: the command in this container, as its user, with its environment."""
        process = self.process
        for _ in range(100):
            if process is None or not process.running or process.pid1() is not None:
                break
            await asyncio.sleep(0.01)
        if process is None or not process.running or process.pid1() is None:
            raise ConfigError(f"container {self.name} is not running")
        return await exec_in(process.pid1() or 0, process.spec, argv, timeout=timeout)

    async def stop(self, grace: float) -> None:
        """Stop the running process (preStop hook first), leaving the supervisor to see it end."""
        process = self.process
        if process is None or not process.running:
            return
        began = time.monotonic()
        hook = ((self.container.get("lifecycle") or {}).get("preStop") or {}).get("exec")
        if hook:
            with contextlib.suppress(ConfigError, OSError, TimeoutError):
                async with asyncio.timeout(grace):
                    await self.exec([str(a) for a in hook.get("command") or []], grace)
        await process.stop(max(grace - (time.monotonic() - began), 0.0))

    async def hold(self, grace: float) -> None:
        """Stop the container and keep it stopped (a test's ``docker stop``) until :meth:`release`."""
        self.held = True
        self._release.clear()
        await self.stop(grace)

    def release(self) -> None:
        self.held = False
        self._release.set()


def _seconds(value: float) -> str:
    whole = int(value)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"
