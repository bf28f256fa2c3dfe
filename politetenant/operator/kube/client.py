"""A small async client of the Kubernetes API: get, create, merge-patch and delete by kind, post Events.

The reconcile, keys and deletion steps talk to ``KubeApi`` (a Protocol), so unit tests give them an
in-memory fake. ``KubeClient`` is the real one: aiohttp with the credentials kopf resolves
(``kopf.login_via_client``: in-cluster ServiceAccount, else KUBECONFIG), so both speak to the API
with the same identity. Writes are JSON merge patches of whole objects, never PUT and never
server-side apply: the ClusterRole grants ``patch``, and the end-to-end emulator has no apply.
Only the kinds the operator manages are known (no discovery): an unknown kind is a programming error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp

from politetenant.operator.model.reasons import EventType, Reason

if TYPE_CHECKING:
    import kopf

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
REQUEST_SECONDS = 30.0
# A session replaced after a 401 is closed this long after: longer than a watch lasts (the informers'
# timeoutSeconds, 300 s), so no watch streaming on it is cut.
RETIRE_SECONDS = 360.0
COMPONENT = "polite-operator"
# Events refuse messages over 1 KiB; cut long ones rather than lose the Event.
EVENT_MESSAGE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class ResourceKind:
    plural: str
    namespaced: bool


# (API group, kind) -> where it lives. The group, not the version: the version comes with each call.
KINDS: dict[tuple[str, str], ResourceKind] = {
    ("", "Namespace"): ResourceKind("namespaces", False),
    ("", "ServiceAccount"): ResourceKind("serviceaccounts", True),
    ("", "ConfigMap"): ResourceKind("configmaps", True),
    ("", "Secret"): ResourceKind("secrets", True),
    ("", "Service"): ResourceKind("services", True),
    ("", "ResourceQuota"): ResourceKind("resourcequotas", True),
    ("", "PersistentVolumeClaim"): ResourceKind("persistentvolumeclaims", True),
    ("", "Event"): ResourceKind("events", True),
    ("apps", "Deployment"): ResourceKind("deployments", True),
    ("apps", "StatefulSet"): ResourceKind("statefulsets", True),
    ("batch", "CronJob"): ResourceKind("cronjobs", True),
    ("networking.k8s.io", "Ingress"): ResourceKind("ingresses", True),
    ("networking.k8s.io", "NetworkPolicy"): ResourceKind("networkpolicies", True),
    ("policy", "PodDisruptionBudget"): ResourceKind("poddisruptionbudgets", True),
    ("postgresql.cnpg.io", "Cluster"): ResourceKind("clusters", True),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): ResourceKind("customresourcedefinitions", False),
    ("storage.k8s.io", "StorageClass"): ResourceKind("storageclasses", False),
    ("rbac.authorization.k8s.io", "RoleBinding"): ResourceKind("rolebindings", True),
    ("polite.io", "PoliteTenant"): ResourceKind("politetenants", False),
}


class KubeError(Exception):
    """The API refused or could not be reached; ``status`` 0 means no answer at all."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def conflict(self) -> bool:
        return self.status == 409


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """An object an Event is about."""

    api_version: str
    kind: str
    name: str
    uid: str | None = None
    namespace: str | None = None

    def as_involved_object(self) -> dict[str, str]:
        ref = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.uid:
            ref["uid"] = self.uid
        if self.namespace:
            ref["namespace"] = self.namespace
        return ref


class KubeApi(Protocol):
    """What the operator's steps need of the Kubernetes API."""

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        ...

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``obj`` (its metadata names it); KubeError 409 when it exists."""
        ...

    async def patch(
        self, api_version: str, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """JSON merge patch (RFC 7386); the object as stored afterwards."""
        ...

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Ask for deletion; False when it was already gone."""
        ...

    async def post_event(self, event: Mapping[str, Any]) -> None:
        """Create a core/v1 Event (see ``event_body``)."""
        ...


def kind_of(api_version: str, kind: str) -> ResourceKind:
    group = api_version.rpartition("/")[0]
    try:
        return KINDS[(group, kind)]
    except KeyError:
        raise ValueError(f"{kind} of {api_version} is not a kind the operator manages") from None


def _version_path(api_version: str) -> str:
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


def object_path(api_version: str, kind: str, name: str | None = None, namespace: str | None = None) -> str:
    """The API path of a collection (no name) or an object."""
    resource = kind_of(api_version, kind)
    base = _version_path(api_version)
    if resource.namespaced:
        if not namespace:
            raise ValueError(f"{kind} {name} needs a namespace")
        base += f"/namespaces/{quote(namespace, safe='')}"
    path = f"{base}/{resource.plural}"
    return f"{path}/{quote(name, safe='')}" if name else path


def collection_path(api_version: str, kind: str) -> str:
    """The API path of a kind's objects in every namespace (a cluster-wide list or watch)."""
    return f"{_version_path(api_version)}/{kind_of(api_version, kind).plural}"


def event_body(
    about: ObjectRef,
    *,
    namespace: str,
    type_: EventType,
    reason: Reason,
    message: str,
    now: str,
    instance: str,
) -> dict[str, Any]:
    """A core/v1 Event about ``about``, written in ``namespace`` (a cluster-scoped tenant's Events
    live in the operator's namespace, where kopf writes its own)."""
    if len(message) > EVENT_MESSAGE_LIMIT:
        message = message[: EVENT_MESSAGE_LIMIT - 3] + "..."
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{about.name}.", "namespace": namespace},
        "involvedObject": about.as_involved_object(),
        "type": type_.value,
        "reason": reason.value,
        "message": message,
        "action": "Reconcile",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def login(*, settings: kopf.OperatorSettings, logger: kopf.Logger, namespace: str) -> kopf.ConnectionInfo:
    """Credentials for the API as kopf resolves them (in-cluster, else KUBECONFIG), with the operator's
    namespace as the default one, where kopf and this client post Events about cluster-scoped tenants."""
    import kopf

    info = kopf.login_via_client(logger=logger, settings=settings)
    if info is None:  # the kubernetes package is missing: kopf's own minimal readers
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no in-cluster ServiceAccount and no KUBECONFIG")
    return dataclasses.replace(info, default_namespace=namespace)


class KubeClient:
    """The real ``KubeApi``. ``credentials`` is called at first use and again once after a 401
    (ServiceAccount tokens are rotated under a running pod)."""

    def __init__(
        self,
        credentials: Callable[[], kopf.ConnectionInfo],
        *,
        timeout: float = REQUEST_SECONDS,
        on_error: Callable[[KubeError], None] | None = None,
    ) -> None:
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._on_error = on_error
        self._session: aiohttp.ClientSession | None = None
        self._server = ""
        self._proxy: str | None = None
        self._lock = asyncio.Lock()
        self._retired: list[aiohttp.ClientSession] = []  # replaced after a 401, closed a while later
        self._closing: set[asyncio.Future[None]] = set()

    async def _connect(self, *, refused: aiohttp.ClientSession | None = None) -> aiohttp.ClientSession:
        """The session; a new one, logged in again, when ``refused`` (a session whose credentials got a
        401) is still the current one."""
        async with self._lock:
            if self._session is not None and (refused is None or self._session is not refused):
                return self._session
            try:
                info = await asyncio.to_thread(self._credentials)
            except Exception as exc:  # kopf.LoginError, an unreadable kubeconfig: no answer possible
                raise KubeError(0, "LoginFailed", f"no credentials for the API ({type(exc).__name__})") from None
            if self._session is not None:
                # Not closed now: the informers' watches stream on it, and closing it would leave them
                # waiting for nothing. Their server ends them within minutes; it goes after that.
                old = self._session
                self._retired.append(old)
                asyncio.get_running_loop().call_later(RETIRE_SECONDS, self._retire, old)
            ssl = info.as_ssl_context() if info.server.startswith("https:") else False
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl),
                headers={**info.as_http_headers(), "User-Agent": COMPONENT, "Accept": "application/json"},
                timeout=self._timeout,
                trust_env=info.trust_env,
            )
            self._server = info.server.rstrip("/")
            self._proxy = info.proxy_url
            return self._session

    def _retire(self, session: aiohttp.ClientSession) -> None:
        if session in self._retired:
            self._retired.remove(session)
            closing = asyncio.ensure_future(session.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for session in [*self._retired, *([self._session] if self._session is not None else [])]:
            await session.close()
        self._retired, self._session = [], None
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def _request(
        self, method: str, path: str, *, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any] | None:
        """The answer's JSON; None for 404. Every other failure is a KubeError (and counted)."""
        try:
            refused: aiohttp.ClientSession | None = None
            for attempt in (1, 2):
                session = await self._connect(refused=refused)
                async with session.request(
                    method,
                    self._server + path,
                    json=body,
                    headers={"Content-Type": content_type} if body is not None else None,
                    proxy=self._proxy,
                ) as response:
                    if response.status == 401 and attempt == 1:
                        refused = session
                        continue  # credentials rotated: log in again, once
                    if response.status == 404:
                        return None
                    text = await response.text()
                    payload = json.loads(text) if text.strip() else {}
                    if response.status >= 400:
                        raise self._error(response.status, payload)
                    return payload if isinstance(payload, dict) else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._report(KubeError(0, "Unreachable", f"{method} {path}: {type(exc).__name__}")) from None
        except ValueError:
            raise self._report(KubeError(0, "BadResponse", f"{method} {path}: the answer is not JSON")) from None
        raise self._report(KubeError(401, "Unauthorized", f"{method} {path}: credentials refused"))

    def _error(self, status: int, payload: Any) -> KubeError:
        reason = message = ""
        if isinstance(payload, dict):
            reason, message = str(payload.get("reason", "")), str(payload.get("message", ""))
        return self._report(KubeError(status, reason or "Error", message or "no message"))

    def _report(self, error: KubeError) -> KubeError:
        if self._on_error is not None:
            self._on_error(error)
        return error

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return await self._request("GET", object_path(api_version, kind, name, namespace))

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], None, meta.get("namespace"))
        created = await self._request("POST", path, body=obj)
        if created is None:  # the namespace (or the CRD) is missing
            raise self._report(KubeError(404, "NotFound", f"cannot create {obj['kind']} {meta.get('name')}"))
        return created

    async def patch(
        self, api_version: str, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        path = object_path(api_version, kind, name, namespace)
        patched = await self._request("PATCH", path, body=patch, content_type=MERGE_PATCH)
        if patched is None:
            raise self._report(KubeError(404, "NotFound", f"{kind} {name} is gone"))
        return patched

    async def patch_status(
        self, api_version: str, kind: str, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """JSON merge patch of the status subresource (outside a kopf handler, which writes its own)."""
        path = object_path(api_version, kind, name, namespace) + "/status"
        patched = await self._request("PATCH", path, body={"status": dict(status)}, content_type=MERGE_PATCH)
        if patched is None:
            raise self._report(KubeError(404, "NotFound", f"{kind} {name} is gone"))
        return patched

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        path = object_path(api_version, kind, name, namespace)
        return await self._request("DELETE", path) is not None

    async def post_event(self, event: Mapping[str, Any]) -> None:
        path = object_path("v1", "Event", None, event["metadata"]["namespace"])
        await self._request("POST", path, body=event)

    async def list(self, api_version: str, kind: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        """One page of a cluster-wide list (``limit``/``continue`` in ``params``); None: the API does not
        serve the kind (its CRD is not installed)."""
        return await self._request("GET", f"{collection_path(api_version, kind)}?{urlencode(dict(params))}")

    async def watch(
        self, api_version: str, kind: str, params: Mapping[str, str], *, read_timeout: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The events of a cluster-wide watch, one JSON object per line, until the server ends the
        stream (its ``timeoutSeconds``); a kind not served is a KubeError 404. A line may be far
        longer than aiohttp's line limit (a CRD's schema): lines are cut from the raw chunks."""
        path = f"{collection_path(api_version, kind)}?{urlencode({**params, 'watch': 'true'})}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total, sock_read=read_timeout)
        try:
            session = await self._connect()
            async with session.get(self._server + path, proxy=self._proxy, timeout=timeout) as response:
                if response.status == 401:
                    await self._connect(refused=session)  # credentials rotated: the next watch logs in again
                if response.status == 404:  # the kind is no longer served (its CRD was removed)
                    raise self._report(KubeError(404, "NotFound", f"watch {path}: the kind is not served"))
                if response.status >= 400:
                    text = await response.text()
                    raise self._error(response.status, json.loads(text) if text.strip().startswith("{") else {})
                pending = bytearray()
                async for chunk in response.content.iter_any():
                    pending += chunk
                    end = pending.rfind(b"\n")
                    if end < 0:
                        continue
                    lines, pending = pending[:end], pending[end + 1 :]
                    for line in lines.split(b"\n"):
                        if line.strip():
                            yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._report(KubeError(0, "Unreachable", f"watch {path}: {type(exc).__name__}")) from None
        except ValueError:
            raise self._report(KubeError(0, "BadResponse", f"watch {path}: an event is not JSON")) from None
