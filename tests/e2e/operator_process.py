"""Driving an operator process from the outside: a subprocess with ``KUBECONFIG``, stopped with SIGTERM.

By default the process is the real ``python -m politetenant.operator.cli run``; ``command`` runs any
other operator (``kopf_command(script)`` for a kopf script run standalone over all namespaces). Its
stderr goes to a file, so a failed wait shows what the operator said.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

from tests.fakes.kube_server import KubeApiHandle, install_chart_rbac

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATOR_CLI = (sys.executable, "-m", "politetenant.operator.cli", "run")

T = TypeVar("T")


def kopf_command(script: Path | str, *extra: str) -> list[str]:
    """``python -m kopf run SCRIPT --standalone --all-namespaces``: a kopf operator with no peering."""
    return [sys.executable, "-m", "kopf", "run", str(script), "--standalone", "--all-namespaces", *extra]


def operator_env(kubeconfig: Path | str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment pointed at ``kubeconfig`` only: no in-cluster config, no proxy for loopback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLITE_", "KUBERNETES_SERVICE_"))}
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(REPO_ROOT)])
    env["KUBECONFIG"] = str(kubeconfig)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class OperatorProcess:
    """One running operator and the file its stderr goes to."""

    process: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def logs(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait (SIGKILL after ``timeout``); the exit code."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode

    def wait_for(self, predicate: Callable[[], T], timeout: float = 20.0, what: str = "the condition") -> T:
        """Poll ``predicate`` until it is truthy; fail with the operator's log if it dies or time runs out."""
        return wait_for(predicate, timeout, what=what, operator=self)


def start_operator(
    kubeconfig: Path | str,
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
    cwd: Path | str | None = None,
    log_path: Path | None = None,
) -> OperatorProcess:
    """Start ``command`` (the PoliteTenant operator by default) against the API that ``kubeconfig`` names.

    Its stdout and stderr go to ``log_path`` (a new temporary file when not given).
    """
    argv = [*(command or OPERATOR_CLI), *extra_args]
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="operator-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    stderr_path = log_path
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            env=operator_env(kubeconfig, env),
            cwd=cwd or REPO_ROOT,
        )
    return OperatorProcess(process, stderr_path)


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 20.0,
    *,
    interval: float = 0.1,
    what: str = "the condition",
    operator: OperatorProcess | None = None,
) -> T:
    """Poll ``predicate`` (usually a read of the API) until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if operator is not None and not operator.alive:
            raise AssertionError(
                f"the operator exited ({operator.process.returncode}) before {what}:\n{operator.logs()[-4000:]}"
            )
        if time.monotonic() > deadline:
            tail = f"\noperator log:\n{operator.logs()[-4000:]}" if operator is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")
        time.sleep(interval)


def as_the_chart_runs_it(handle: KubeApiHandle, namespace: str, directory: Path) -> tuple[Path, Path]:
    """Install the chart's RBAC (``install_chart_rbac``) and give the operator what the chart gives it:
    a kubeconfig of its ServiceAccount, and a configuration naming its namespace, that account and the
    Secrets role it binds in tenant namespaces (what the chart's ConfigMap adds). (kubeconfig, config)."""
    created = install_chart_rbac(handle, namespace=namespace)
    (account,) = [o["metadata"]["name"] for o in created if o["kind"] == "ServiceAccount"]
    (secrets_role,) = [o["metadata"]["name"] for o in created if o["metadata"]["name"].endswith("-tenant-secrets")]
    config = directory / "operator-config.yaml"
    own = {"namespace": namespace, "service_account": account, "tenant_secrets_role": secrets_role}
    config.write_text(yaml.safe_dump(own), encoding="utf-8")
    return handle.service_account_kubeconfig(namespace, account, directory / "sa"), config
