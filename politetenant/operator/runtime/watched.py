"""What the operator owns, as its watches see it: the reconcile reads children from here, not the API.

Every child the operator renders carries the ``polite.io/tenant`` label, and an informer
(``kube.informer``) lists and watches each kind in ``WATCHED_KINDS`` with that label selector on the
server, keeping its objects in memory (``Children``). The reconcile waits until every kind's first list
is in, so a key missing from a store means the object does not exist: a resync of an unchanged tenant
compares the rendered objects with the stores and sends no request at all.

What the operator itself just created or patched is answered as written (``Written``) until the watch
shows that version or a later one (a deletion is not: it may take a while), so a reconcile that runs
before its own write's event arrives does not write again; that event itself, the very
resourceVersion written, is no news and reconciles nothing. A create refused as AlreadyExists (the
store had not seen the object yet) makes the next read of that object go to the API.

Watching costs the operator cluster-wide ``list``/``watch`` on each kind in RBAC (label selectors
narrow what is sent, not what may be read). Secrets are deliberately not watched, so the operator
cannot read every Secret in the cluster: the reconcile reads a tenant's Secrets by name when the
tenant changed, when a child changed (a pod that cannot mount a deleted Secret changes its
StatefulSet's status) and at start, not on a plain resync.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from politetenant.operator.kube.client import KubeApi, KubeClient, KubeError
from politetenant.operator.kube.informer import Informer, Store
from politetenant.operator.model import names
from politetenant.operator.runtime.database_engine import CNPG_CRD


@dataclass(frozen=True, slots=True)
class WatchedKind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    labelled: bool = True  # watched with the tenant label selector (CRDs: by name instead)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def selection(self) -> dict[str, str]:
        """What the API server sends of this kind: the tenants' children, or the CRDs looked at."""
        if self.labelled:
            return {"labelSelector": names.TENANT_LABEL}
        # One name only: a field selector's terms are ANDed (more CRDs: all of them, read by name here).
        return {"fieldSelector": f"metadata.name={next(iter(WATCHED_CRDS))}"} if len(WATCHED_CRDS) == 1 else {}


# The kinds whose drift breaks a tenant's service (its fence, workloads, addresses, database, the
# operator's access to its Secrets), the
# legacy tracker Deployment an upgrade retires, and CloudNativePG's CRD (whether it is installed).
WATCHED_KINDS: tuple[WatchedKind, ...] = (
    WatchedKind("", "v1", "namespaces", "Namespace", namespaced=False),
    WatchedKind("", "v1", "serviceaccounts", "ServiceAccount"),
    WatchedKind("", "v1", "configmaps", "ConfigMap"),
    WatchedKind("", "v1", "services", "Service"),
    WatchedKind("", "v1", "resourcequotas", "ResourceQuota"),
    WatchedKind("apps", "v1", "statefulsets", "StatefulSet"),
    WatchedKind("apps", "v1", "deployments", "Deployment"),
    WatchedKind("batch", "v1", "cronjobs", "CronJob"),
    WatchedKind("networking.k8s.io", "v1", "ingresses", "Ingress"),
    WatchedKind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    WatchedKind("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    WatchedKind("postgresql.cnpg.io", "v1", "clusters", "Cluster"),
    WatchedKind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    WatchedKind(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        labelled=False,
    ),
)
_BY_KIND = {(kind.group, kind.kind): kind for kind in WATCHED_KINDS}
WATCHED_CRDS = frozenset({CNPG_CRD})

Key = tuple[str, str, str | None, str]  # group, kind, namespace, name
Lookup = Callable[[WatchedKind, str | None, str], "dict[str, Any] | None"]
Stores = Mapping[WatchedKind, Store]
# A child's event: its kind, "ADDED", "MODIFIED" or "DELETED", and the object.
ChildEvent = Callable[[WatchedKind, str, dict[str, Any]], None]
# How long a reconcile waits for the watches' first lists before it is retried (and says why).
SYNC_SECONDS = 30.0


def watched_kind(api_version: str, kind: str) -> WatchedKind | None:
    return _BY_KIND.get((api_version.rpartition("/")[0], kind))


def tenant_of(body: Mapping[str, Any]) -> str | None:
    """The tenant a watched child belongs to, by its label."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    value = labels.get(names.TENANT_LABEL)
    return str(value) if value else None


def _newer_or_same(seen: Mapping[str, Any], written: Mapping[str, Any]) -> bool:
    """Whether the watch has caught up with a write. resourceVersions are opaque to clients; the
    API server's are etcd revisions (integers), compared only to tell an event older than our own
    write from a later one. Anything else counts as caught up: the store is then trusted."""
    seen_rv = str((seen.get("metadata") or {}).get("resourceVersion", ""))
    written_rv = str((written.get("metadata") or {}).get("resourceVersion", ""))
    if seen_rv.isdigit() and written_rv.isdigit():
        return int(seen_rv) >= int(written_rv)
    return True


def _same_version(seen: Mapping[str, Any], written: Mapping[str, Any]) -> bool:
    """The event shows exactly the object as written (the same resourceVersion, which the API server
    changes on every write)."""
    seen_rv = (seen.get("metadata") or {}).get("resourceVersion")
    return bool(seen_rv) and seen_rv == (written.get("metadata") or {}).get("resourceVersion")


class Written:
    """The operator's own writes its watches have not shown yet (None: it deleted the object)."""

    def __init__(self) -> None:
        self._objects: dict[Key, dict[str, Any] | None] = {}
        self._stale: set[Key] = set()

    def remember(self, key: Key, body: dict[str, Any] | None) -> None:
        self._objects[key] = body
        self._stale.discard(key)

    def mark_stale(self, key: Key) -> None:
        self._stale.add(key)

    def stale(self, key: Key) -> bool:
        return key in self._stale

    def lookup(self, key: Key) -> tuple[bool, dict[str, Any] | None]:
        """(known, object): whether a write of ours is newer than the store, and what it stored."""
        if key in self._objects:
            return True, self._objects[key]
        return False, None

    def observed(self, key: Key, body: Mapping[str, Any], *, deleted: bool) -> bool:
        """A watch event: forget the write it shows (or outdates). True when the event is that very
        write coming back (its resourceVersion): it tells the operator nothing it did not do itself, so
        it need not reconcile the tenant again."""
        if key not in self._objects:
            return False
        written = self._objects[key]
        if written is None:
            if deleted:
                del self._objects[key]
            return False
        if not _newer_or_same(body, written):
            return False  # an event from before the write: someone else's change, or an older one of ours
        del self._objects[key]
        return not deleted and _same_version(body, written)


def key_of(api_version: str, kind: str, name: str, namespace: str | None) -> Key:
    return api_version.rpartition("/")[0], kind, namespace, name


class CachedKube:
    """A ``KubeApi`` whose reads of watched kinds come from the stores (and our own unseen writes)."""

    def __init__(self, api: KubeApi, lookup: Lookup, written: Written) -> None:
        self.api = api
        self._lookup = lookup
        self._written = written

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        watched = watched_kind(api_version, kind)
        key = key_of(api_version, kind, name, namespace)
        if watched is None and namespace is not None and not await self._namespace_exists(namespace):
            return None  # a namespace that does not exist holds nothing (and grants no access to ask)
        if watched is None or (watched.kind == "CustomResourceDefinition" and name not in WATCHED_CRDS):
            return await self.api.get(api_version, kind, name, namespace)
        if self._written.stale(key):
            found = await self.api.get(api_version, kind, name, namespace)
            self._written.remember(key, found)
            return found
        known, written = self._written.lookup(key)
        if known:
            return written
        return self._lookup(watched, namespace, name)

    async def _namespace_exists(self, namespace: str) -> bool:
        return await self.get("v1", "Namespace", namespace) is not None

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        key = key_of(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
        try:
            created = await self.api.create(obj)
        except KubeError as exc:
            if exc.conflict:
                self._written.mark_stale(key)
            raise
        if watched_kind(obj["apiVersion"], obj["kind"]) is not None:
            self._written.remember(key, created)
        return created

    async def patch(
        self, api_version: str, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        key = key_of(api_version, kind, name, namespace)
        try:
            patched = await self.api.patch(api_version, kind, name, patch, namespace)
        except KubeError as exc:
            if exc.status == 404:
                self._written.mark_stale(key)
            raise
        if watched_kind(api_version, kind) is not None:
            self._written.remember(key, patched)
        return patched

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        # Nothing remembered: a deletion may take a while (finalizers, a namespace emptying itself),
        # and until the watch says the object is gone it is not.
        return await self.api.delete(api_version, kind, name, namespace)

    async def post_event(self, event: Mapping[str, Any]) -> None:
        await self.api.post_event(event)


def store_lookup(stores: Stores) -> Lookup:
    """Read the stores (namespace, name -> object per kind) as the cache's lookup."""

    def lookup(kind: WatchedKind, namespace: str | None, name: str) -> dict[str, Any] | None:
        store = stores.get(kind)
        return None if store is None else store.get((namespace, name))

    return lookup


class Children:
    """An informer per watched kind, started with the operator and stopped with it."""

    def __init__(self, client: KubeClient, on_event: ChildEvent) -> None:
        self._on_event = on_event
        self.informers = {
            kind: Informer(client, kind.api_version, kind.kind, params=kind.selection, on_event=self._handler(kind))
            for kind in WATCHED_KINDS
        }
        self.lookup = store_lookup({kind: informer.store for kind, informer in self.informers.items()})
        self._tasks: list[asyncio.Task[None]] = []

    def _handler(self, kind: WatchedKind) -> Callable[[str, dict[str, Any]], None]:
        def handle(event_type: str, obj: dict[str, Any]) -> None:
            if not kind.labelled and event_type != "DELETED":
                self._crd_installed(str((obj.get("metadata") or {}).get("name")))
            self._on_event(kind, event_type, obj)

        return handle

    def _crd_installed(self, crd: str) -> None:
        """A CRD looked at appeared: the kind it defines is listed now, not at the next look."""
        plural, _, group = crd.partition(".")
        for kind, informer in self.informers.items():
            if (kind.group, kind.plural) == (group, plural):
                informer.wake()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(i.run(), name=f"watch {k.plural}") for k, i in self.informers.items()]

    async def synced(self) -> None:
        """Wait until every kind's first list is in; a KubeError naming the kinds still missing after
        ``SYNC_SECONDS`` (a list the API keeps refusing): the reconcile is retried, and says why."""
        waiting = [informer for informer in self.informers.values() if not informer.synced.is_set()]
        if not waiting:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*(informer.synced.wait() for informer in waiting)), SYNC_SECONDS)
        except TimeoutError:
            missing = ", ".join(informer.kind for informer in waiting if not informer.synced.is_set())
            raise KubeError(0, "NotListed", f"the operator could not list {missing} yet") from None

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
