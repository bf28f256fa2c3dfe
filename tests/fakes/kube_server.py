"""The Kubernetes API emulator on a loopback port, in a thread with its own event loop.

An operator under test runs as a subprocess with ``KUBECONFIG=handle.kubeconfig_path``; the test drives
the API from its own thread like ``kubectl`` would, with the synchronous ``kubernetes`` client
(``handle.api_client()``) or plain HTTP (``handle.request``, ``handle.watch``). Nothing blocking ever
runs on the emulator's loop, and the test's own loop (if any) is never the emulator's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kmock
import yaml

from tests.fakes.kube_emulator import (
    POLITETENANT_CRD,
    PoliteKubernetesEmulator,
    RequestRecord,
    declare_cnpg,
    load_crd,
)

T = TypeVar("T")
# Loopback only, never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class ApiResponse:
    """One answer of the API: HTTP status and the decoded JSON body (a Status object on failures)."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        return self.body.get("reason") if isinstance(self.body, dict) else None


@dataclass
class KubeApiHandle:
    """A running emulator: its URL, a kubeconfig pointing at it, and ways to reach it from the test thread."""

    url: str
    kubeconfig_path: Path
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread
    _stop: asyncio.Event
    _emulator: PoliteKubernetesEmulator
    _workdir: Path | None = None
    _stopped: bool = field(default=False, init=False)

    def stop(self, timeout: float = 15.0) -> None:
        """Close the watches, stop the server and its loop; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        if self._thread.is_alive():
            raise RuntimeError("the Kubernetes API emulator did not stop")

    def call(self, fn: Callable[[PoliteKubernetesEmulator], T], timeout: float = 10.0) -> T:
        """Run ``fn(emulator)`` on the emulator's loop (its state is only safe to touch there)."""

        async def run() -> T:
            return fn(self._emulator)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def requests_served(self, since: int = 0) -> list[RequestRecord]:
        """The requests the emulator parsed, in arrival order, from index ``since`` (``len`` of an
        earlier answer marks a point to count from)."""
        return self.call(lambda emulator: emulator.request_log[since:])

    def request_count(self) -> int:
        """How many requests the emulator has parsed so far: a mark for ``requests_served(since=...)``."""
        return self.call(lambda emulator: len(emulator.request_log))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str | None = None,
        accept: str = "application/json",
        timeout: float = 10.0,
    ) -> ApiResponse:
        """One HTTP request; JSON body unless it is already bytes; the answer whatever its status."""
        url = self.url.rstrip("/") + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"Accept": accept}
        if data is not None:
            headers["Content-Type"] = content_type or "application/json"
        req = urllib.request.Request(url, data=data, method=method.upper(), headers=headers)
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                status, raw, headers = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            status, raw, headers = exc.code, exc.read(), dict(exc.headers)
        return ApiResponse(status, json.loads(raw) if raw else None, headers)

    def watch(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        count: int | None = None,
        timeout: float = 5.0,
    ) -> list[dict[str, Any]]:
        """The events of one watch: until ``count`` arrived, the server ended the stream, or ``timeout``."""
        query = {"watch": "true", **(params or {})}
        url = self.url.rstrip("/") + path + "?" + urllib.parse.urlencode(query)
        events: list[dict[str, Any]] = []
        try:
            with _OPENER.open(urllib.request.Request(url), timeout=timeout) as resp:
                for line in resp:
                    if line.strip():
                        events.append(json.loads(line))
                    if count is not None and len(events) >= count:
                        break
        except TimeoutError:
            pass
        return events

    def api_client(self) -> Any:
        """A synchronous ``kubernetes.client.ApiClient`` configured from this handle's kubeconfig."""
        import kubernetes

        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig_path))  # type: ignore[no-untyped-call]


def write_kubeconfig(path: Path, url: str) -> Path:
    """A kubeconfig for the emulator: one cluster, an anonymous user, namespace default."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url.rstrip("/"), "insecure-skip-tls-verify": True}}],
        "users": [{"name": "anonymous", "user": {}}],
        "contexts": [
            {"name": "emulator", "context": {"cluster": "emulator", "user": "anonymous", "namespace": "default"}}
        ],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@contextlib.contextmanager
def running_kube_api(
    *,
    cnpg: bool = False,
    crds: Iterable[Path | Mapping[str, Any]] = (POLITETENANT_CRD,),
    workdir: Path | None = None,
    **emulator_options: Any,
) -> Iterator[KubeApiHandle]:
    """Run the emulator with the PoliteTenant CRD (and CloudNativePG's ``Cluster`` CRD when ``cnpg``).

    The kubeconfig goes to ``workdir`` (a temporary directory, removed on exit, when not given).
    ``emulator_options`` go to :class:`PoliteKubernetesEmulator` (e.g. ``event_window``).
    """
    own_dir = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="kube-api-")) if workdir is None else workdir
    started: concurrent.futures.Future[KubeApiHandle] = concurrent.futures.Future()
    loop = asyncio.new_event_loop()
    crd_list = list(crds)

    async def serve() -> None:
        stop = asyncio.Event()
        emulator = PoliteKubernetesEmulator(**emulator_options)
        for crd in crd_list:
            load_crd(emulator, crd)
        if cnpg:
            declare_cnpg(emulator)
        async with emulator, kmock.Server(emulator) as server:
            url = str(server.url).rstrip("/")
            kubeconfig = write_kubeconfig(directory / "kubeconfig", url)
            thread = threading.current_thread()
            handle = KubeApiHandle(url, kubeconfig, loop, thread, stop, emulator, directory if own_dir else None)
            started.set_result(handle)
            await stop.wait()
            emulator.close_watches()  # before the server waits for its open requests to finish
            await asyncio.sleep(0.05)

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # surface start-up failures to the caller
            if not started.done():
                started.set_exception(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="kube-api-emulator", daemon=True)
    thread.start()
    handle = started.result(timeout=30)
    try:
        yield handle
    finally:
        handle.stop()
