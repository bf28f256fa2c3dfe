"""Container processes: what the container runtime does with one container of a pod.

``launch_spec`` turns a container (its image, user, volumes and the pod's sandbox) into what
``container_init.py run`` needs; :class:`ContainerProcess` starts it, signals it and reports its end
as the kubelet does: exit code, 128 + signal when a signal ended it, the termination message
(``terminationMessagePath``, default /dev/termination-log; with ``FallbackToLogsOnError``, the end of the
log when the file is empty and the container failed), and its log file (stdout and stderr together,
one file per run, as ``kubectl logs`` and ``kubectl logs --previous`` read them).
https://kubernetes.io/docs/tasks/debug/debug-application/determine-reason-pod-failure/
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.fakes.pods.images import Image
from tests.fakes.pods.podspec import ConfigError, Identity
from tests.fakes.pods.sandbox import INIT, Sandbox
from tests.fakes.pods.volumes import API_ACCESS_MOUNT, HostVolume

HIDDEN = (("/tmp", "1777"), ("/var/tmp", "1777"), ("/run", "755"))  # the machine's, not the image's
MESSAGE_LIMIT = 4096
LOG_FALLBACK_LINES = 80


def _mounts(container: Mapping[str, Any], volumes: Mapping[str, HostVolume], automount: bool) -> list[list[Any]]:
    mounts = list(container.get("volumeMounts") or [])
    if automount and not any(m.get("mountPath") == API_ACCESS_MOUNT["mountPath"] for m in mounts):
        mounts.append(API_ACCESS_MOUNT)
    binds = []
    for mount in mounts:
        volume = volumes.get(str(mount.get("name")))
        if volume is None:
            raise ConfigError(
                f'cannot find volume "{mount.get("name")}" to mount into container "{container.get("name")}"'
            )
        source = volume.path
        sub_path = str(mount.get("subPath") or "")
        if sub_path:
            if sub_path.startswith("/") or ".." in sub_path.split("/"):
                raise ConfigError(f"subPath {sub_path!r} must be a relative path without '..'")
            source = volume.path / sub_path
            if not source.exists() and not volume.read_only:
                source.mkdir(parents=True)
        read_only = bool(mount.get("readOnly")) or volume.read_only
        binds.append([str(source), str(mount.get("mountPath")), read_only, source.is_file()])
    return binds


def launch_spec(
    *,
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    image: Image,
    who: Identity,
    argv: Sequence[str],
    env: Mapping[str, str],
    volumes: Mapping[str, HostVolume],
    sandbox: Sandbox,
    directory: Path,
) -> dict[str, Any]:
    """Everything ``container_init.py run`` does for this container, as JSON."""
    spec = pod.get("spec") or {}
    automount = spec.get("automountServiceAccountToken", True) is not False
    message_path = str(container.get("terminationMessagePath") or "/dev/termination-log")
    directory.mkdir(parents=True, exist_ok=True)
    termination_log = directory / "termination-log"
    termination_log.write_text("", encoding="utf-8")
    os.chmod(termination_log, 0o666)
    binds = [[host, target, True, Path(host).is_file()] for target, host in image.binds]
    binds += _mounts(container, volumes, automount)
    binds += [
        [str(sandbox.hosts_path), "/etc/hosts", False, True],
        [str(sandbox.resolv_path), "/etc/resolv.conf", False, True],
        [str(sandbox.hostname_path), "/etc/hostname", False, True],
        [str(termination_log), message_path, False, True],
    ]
    binds.sort(key=lambda bind: len([p for p in str(bind[1]).split("/") if p]))
    (directory / "root").mkdir(exist_ok=True)
    (directory / "layer").mkdir(exist_ok=True)
    return {
        "pause_pid": sandbox.pid,
        "root": str(directory / "root"),
        "layer": str(directory / "layer"),
        "hide": [list(h) for h in HIDDEN],
        "users": list(image.users),
        "groups": list(image.groups),
        "traverse": list(image.traverse),
        "workdir": str(container.get("workingDir") or image.workdir or "/"),
        "binds": binds,
        "readonly_root": who.read_only_root,
        "uid": who.uid,
        "gid": who.gid,
        "supplemental_groups": list(who.groups),
        "no_new_privs": who.no_new_privs,
        "argv": list(argv),
        "env": dict(env),
        "termination_log": str(termination_log),
        "pid_file": str(directory / "pid"),
    }


def exit_code(returncode: int) -> int:
    """The exit code as the kubelet reports it: a signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class ContainerProcess:
    """One run of one container."""

    def __init__(self, directory: Path, log_path: Path, stop_signal: int) -> None:
        self.directory = directory
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.process: asyncio.subprocess.Process | None = None
        self.spec: dict[str, Any] = {}

    async def start(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "pid").unlink(missing_ok=True)
        spec_path = self.directory / "spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", str(INIT), "run", str(spec_path),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def pid1(self) -> int | None:
        """The container's PID 1, as this machine numbers it (for exec)."""
        try:
            return int((self.directory / "pid").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    async def wait(self) -> int:
        assert self.process is not None
        return exit_code(await self.process.wait())

    def signal(self, number: int) -> None:
        if self.running and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(number)

    async def stop(self, grace: float) -> int:
        """The image's stop signal, then SIGKILL once ``grace`` seconds passed (everything in the
        container's PID namespace dies with its PID 1)."""
        if self.process is None:
            return 0
        if self.running:
            self.signal(self.stop_signal)
            try:
                async with asyncio.timeout(max(grace, 0.0)):
                    await asyncio.shield(self.process.wait())
            except TimeoutError:
                self.signal(signal.SIGKILL)
        return await self.wait()

    def termination_message(self, container: Mapping[str, Any], failed: bool) -> str:
        path = Path(str(self.spec.get("termination_log", "")))
        message = ""
        with contextlib.suppress(OSError):
            message = path.read_text(encoding="utf-8", errors="replace")[:MESSAGE_LIMIT]
        if not message and failed and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            with contextlib.suppress(OSError):
                lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
                message = "\n".join(lines[-LOG_FALLBACK_LINES:])[-2048:]
        return message


async def exec_in(
    pid1: int,
    spec: Mapping[str, Any],
    argv: Sequence[str],
    *,
    timeout: float | None,
    env: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """Run ``argv`` in a running container (its namespaces, root, user and environment): exit code and
    output; the process is killed at ``timeout`` (exit code -1 then, as a probe that timed out)."""
    request = {
        "pid": pid1,
        "root": spec["root"],
        "workdir": spec["workdir"],
        "uid": spec["uid"],
        "gid": spec["gid"],
        "supplemental_groups": spec["supplemental_groups"],
        "no_new_privs": spec["no_new_privs"],
        "argv": list(argv),
        "env": dict(env if env is not None else spec["env"]),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", str(INIT), "exec", json.dumps(request),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.shield(process.wait())
        if isinstance(exc, asyncio.CancelledError):
            raise
        return -1, b""
    return exit_code(process.returncode or 0), output
