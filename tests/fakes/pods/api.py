"""The runner's view of the API server: a small async client and informers (list, then watch).

Controllers and the kubelet read only from the informers' caches and write through the API, as their
real counterparts do (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes).
A write's answer goes into the cache at once (when it is newer than what the cache holds), so a
controller's next pass never acts twice on a state it has already changed: the role of client-go's
"expectations".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

Body = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
AGENT = "polite-pod-runner/1 (kubelet, kube-proxy, kube-controller-manager)"
MERGE_PATCH = "application/merge-patch+json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    """One resource: where it lives in the API."""

    api_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        path = f"{base}/{self.plural}"
        if name:
            path += f"/{name}"
        return f"{path}/{sub}" if sub else path


PODS = Kind("v1", "pods")
SERVICES = Kind("v1", "services")
SECRETS = Kind("v1", "secrets")
CONFIGMAPS = Kind("v1", "configmaps")
PVCS = Kind("v1", "persistentvolumeclaims")
EVENTS = Kind("v1", "events")
NODES = Kind("v1", "nodes", namespaced=False)
NAMESPACES = Kind("v1", "namespaces", namespaced=False)
SERVICE_ACCOUNTS = Kind("v1", "serviceaccounts")
DEPLOYMENTS = Kind("apps/v1", "deployments")
REPLICASETS = Kind("apps/v1", "replicasets")
STATEFULSETS = Kind("apps/v1", "statefulsets")
REVISIONS = Kind("apps/v1", "controllerrevisions")
JOBS = Kind("batch/v1", "jobs")
CRONJOBS = Kind("batch/v1", "cronjobs")
ENDPOINTSLICES = Kind("discovery.k8s.io/v1", "endpointslices")
PDBS = Kind("policy/v1", "poddisruptionbudgets")
CNPG_CLUSTERS = Kind("postgresql.cnpg.io/v1", "clusters")


class ApiError(Exception):
    """A refusal of the API server: its HTTP status and Status reason."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body if isinstance(body, dict) else {}
        self.reason = str(self.body.get("reason", ""))
        super().__init__(f"{status} {self.reason}: {self.body.get('message', body)}")


def meta(obj: Mapping[str, Any]) -> Body:
    found = obj.get("metadata")
    return found if isinstance(found, dict) else {}


def key_of(obj: Mapping[str, Any]) -> Key:
    return str(meta(obj).get("namespace") or ""), str(meta(obj).get("name"))


def _version(obj: Mapping[str, Any]) -> int:
    value = str(meta(obj).get("resourceVersion") or "0")
    return int(value) if value.isdigit() else 0


class KubeApi:
    """JSON over HTTP to one API server: anonymous, or with the bearer ``token`` (the emulator's admin
    token when it authorizes with RBAC), trusting the certificate ``ca`` of an https server."""

    def __init__(self, url: str, token: str | None = None, ca: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._token, self._ca = token, ca
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeApi:
        trust = ssl.create_default_context(cafile=self._ca) if self._ca else True
        connector = aiohttp.TCPConnector(limit=32, ssl=trust)
        headers = {"User-Agent": AGENT, **({"Authorization": f"Bearer {self._token}"} if self._token else {})}
        self._session = aiohttp.ClientSession(connector=connector, headers=headers, trust_env=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "KubeApi used outside its context"
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(
            method, self.url + path, data=data, params=params, headers=headers, timeout=aiohttp.ClientTimeout(30)
        ) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if raw else None

    async def _ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        status, answer = await self.request(method, path, body, **kwargs)
        if status >= 300:
            raise ApiError(status, answer)
        return answer

    async def get(self, path: str) -> Body | None:
        status, answer = await self.request("GET", path)
        if status == 404:
            return None
        if status >= 300:
            raise ApiError(status, answer)
        return dict(answer)

    async def create(self, path: str, body: Body) -> Body:
        return dict(await self._ok("POST", path, body))

    async def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH) -> Body:
        return dict(await self._ok("PATCH", path, body, content_type=content_type))

    async def delete(self, path: str, options: Body | None = None) -> tuple[int, Body | None]:
        """The HTTP status (200: gone; 202: still there, being deleted) and the object; 404 is (404, None)."""
        status, answer = await self.request("DELETE", path, options or {})
        if status == 404:
            return 404, None
        if status >= 300:
            raise ApiError(status, answer)
        return status, dict(answer) if isinstance(answer, dict) else None

    async def watch(self, path: str, resource_version: str) -> AsyncIterator[Body]:
        params = {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self.session.get(self.url + path, params=params, timeout=timeout) as response:
            if response.status >= 300:
                raise ApiError(response.status, await response.json(content_type=None))
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)


class Informer:
    """One resource kind, every namespace: a cache kept by a list and then a watch (re-listing after
    410 Gone or a closed stream); ``changed`` is called after every change."""

    def __init__(self, api: KubeApi, kind: Kind, changed: Callable[[Kind], None]) -> None:
        self.api = api
        self.kind = kind
        self.objects: dict[Key, Body] = {}
        self._gone: dict[str, int] = {}  # uid -> resourceVersion of its deletion: older answers come too late
        self.synced = asyncio.Event()
        self._changed = changed

    def get(self, namespace: str, name: str) -> Body | None:
        return self.objects.get((namespace, name))

    def items(self, namespace: str | None = None) -> Iterator[Body]:
        for (ns, _), obj in list(self.objects.items()):
            if namespace is None or ns == namespace:
                yield obj

    def put(self, obj: Body) -> None:
        """A newer version of an object (from a watch, or the answer to one of our writes)."""
        key = key_of(obj)
        current = self.objects.get(key)
        if current is not None and _version(current) >= _version(obj):
            return  # one resourceVersion counter for every object: an older answer never wins
        if _version(obj) <= self._gone.get(str(meta(obj).get("uid")), -1):
            return  # an answer that arrives after the object's deletion was seen
        self.objects[key] = obj
        self._changed(self.kind)

    def drop(self, obj: Mapping[str, Any]) -> None:
        key = key_of(obj)
        uid = str(meta(obj).get("uid"))
        self._gone[uid] = max(_version(obj), self._gone.get(uid, 0))
        current = self.objects.get(key)
        if current is not None and meta(current).get("uid") == meta(obj).get("uid"):
            del self.objects[key]
            self._changed(self.kind)

    async def run(self) -> None:
        while True:
            try:
                listing = await self.api.get(self.kind.path())
                if listing is None:  # not served (yet): a CRD not installed
                    self.synced.set()
                    await asyncio.sleep(1.0)
                    continue
                fresh = {key_of(item): item for item in listing.get("items") or []}
                for key in set(self.objects) - set(fresh):
                    del self.objects[key]
                self.objects.update(fresh)
                self._changed(self.kind)
                self.synced.set()
                version = str(meta(listing).get("resourceVersion") or "0")
                async for event in self.api.watch(self.kind.path(), version):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        break
                    if kind == "DELETED":
                        self.drop(obj)
                    elif kind in ("ADDED", "MODIFIED"):
                        self.put(obj)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ClientError, ApiError, ValueError) as exc:
                log.debug("informer %s: %s; listing again", self.kind.plural, exc)
                await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def informers(
    api: KubeApi, kinds: list[Kind], changed: Callable[[Kind], None]
) -> AsyncIterator[dict[Kind, Informer]]:
    """Start one informer per kind; yield once every one has listed; stop them on exit."""
    found = {kind: Informer(api, kind, changed) for kind in kinds}
    tasks = [asyncio.create_task(informer.run(), name=f"informer-{kind.plural}") for kind, informer in found.items()]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(i.synced.wait() for i in found.values()))
        yield found
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
