"""One kind's objects in memory, kept current by a list and then a watch, as client-go's informers do.

The operator reads its children from these stores instead of the API (``runtime.watched``). They
were kopf indices, fed by kopf's per-event machinery (a memory per object, three loggers, a
throttler, causes, kwargs for every handler): at 500 tenants that was a third of the operator's CPU
for events that only need a dict updated and, now and then, a tenant poked. An informer does just
that, following API concepts, "Efficient detection of changes":

- list (in pages of ``PAGE``), then watch from the list's resourceVersion with bookmarks; a watch the
  server ends (``timeoutSeconds``) is resumed from the last version seen;
- a resourceVersion too old (410 Expired) or a failed request: list again, and tell ``on_event`` what
  changed between the two lists, so a change missed in the gap still reaches the tenant;
- a kind the API does not serve (CloudNativePG's CRD is not installed) is an empty store, listed
  again after ``NOT_SERVED_SECONDS`` or at once on ``wake``;
- ``synced`` is set once the first list is in: until then a missing key means nothing, and the
  reconcile waits for it (as kopf let no handler run before its indices were filled).

The first list's objects are no news (``on_event`` is not called): the operator just started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from politetenant.operator.kube.client import KubeClient, KubeError

log = logging.getLogger(__name__)

Key = tuple[str | None, str]  # namespace (None: cluster-scoped), name
Store = Mapping[Key, dict[str, Any]]
# What happened to an object: "ADDED", "MODIFIED" or "DELETED", and the object (as it was, if deleted).
OnEvent = Callable[[str, dict[str, Any]], None]

PAGE = 500
# The server ends a watch after this long (a real API server also ends it on its own, 5-10 minutes);
# the client gives up on a silent one a little later.
WATCH_SECONDS = 300
READ_TIMEOUT_SECONDS = 330.0
NOT_SERVED_SECONDS = 30.0
QUICK_END_SECONDS = 1.0
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)


class Expired(Exception):
    """The watch's resourceVersion is older than the server keeps: list again."""


def store_key(obj: Mapping[str, Any]) -> Key:
    """How a store holds an object: by namespace and name."""
    meta = obj.get("metadata") or {}
    return meta.get("namespace"), str(meta.get("name"))


def version_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def differences(before: Store, after: Store) -> Iterator[tuple[str, dict[str, Any]]]:
    """The events that take ``before`` to ``after``: what a relist found added, changed or gone."""
    for key, obj in after.items():
        old = before.get(key)
        if old is None:
            yield "ADDED", obj
        elif version_of(old) != version_of(obj):
            yield "MODIFIED", obj
    for key, obj in before.items():
        if key not in after:
            yield "DELETED", obj


class Informer:
    """The objects of one kind selected by ``params`` (a label or field selector), cluster-wide."""

    def __init__(
        self,
        client: KubeClient,
        api_version: str,
        kind: str,
        *,
        params: Mapping[str, str] | None = None,
        on_event: OnEvent | None = None,
    ) -> None:
        self.api_version = api_version
        self.kind = kind
        self.store: dict[Key, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.served = True
        self._client = client
        self._params = dict(params or {})
        self._on_event = on_event
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look again now at a kind that was not served (its CRD has just been installed)."""
        self._wake.set()

    async def run(self) -> None:
        """List and watch until cancelled; every failure is logged and retried."""
        failures = 0
        while True:
            try:
                version = await self.relist()
                if version is None:
                    failures = 0
                    await self._sleep(NOT_SERVED_SECONDS)
                    continue
                while True:
                    started = time.monotonic()
                    version = await self.watch_once(version)
                    failures = 0
                    if time.monotonic() - started < QUICK_END_SECONDS:
                        await asyncio.sleep(QUICK_END_SECONDS)  # a server ending watches at once: no busy loop
            except Expired:
                continue
            except Exception as exc:  # the API refused or failed, or a bug: said, and listed again later
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                if isinstance(exc, KubeError):
                    log.warning(
                        "watching %s: %s (%s); listing again in %.1f s", self.kind, exc.reason, exc.status, delay
                    )
                else:
                    log.exception("watching %s failed; listing again in %.1f s", self.kind, delay)
                await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, or less if woken since the last list began (a wake during that list is kept)."""
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def relist(self) -> str | None:
        """Replace the store with a fresh list; its resourceVersion (None: the kind is not served)."""
        self._wake.clear()
        found: dict[Key, dict[str, Any]] = {}
        params = {**self._params, "limit": str(PAGE)}
        while True:
            page = await self._client.list(self.api_version, self.kind, params)
            if page is None:
                self._replace({}, served=False, version="")
                return None
            for item in page.get("items") or ():
                # list items carry no kind: give them the one a watch event's object has
                item.setdefault("apiVersion", self.api_version)
                item.setdefault("kind", self.kind)
                found[store_key(item)] = item
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                version = str(meta.get("resourceVersion", ""))
                self._replace(found, served=True, version=version)
                return version
            params = {**self._params, "limit": str(PAGE), "continue": str(meta["continue"])}

    def _replace(self, found: dict[Key, dict[str, Any]], *, served: bool, version: str) -> None:
        """The store becomes ``found`` (the same dict object throughout: readers may hold it). A
        deletion found this way carries the list's resourceVersion, not the object's last one: it
        happened before that list, and after any write the operator made of the object."""
        before = dict(self.store) if self.synced.is_set() else {}
        self.store.clear()
        self.store.update(found)
        self.served = served
        if self.synced.is_set():
            for event_type, obj in differences(before, found):
                if event_type == "DELETED" and version:
                    obj = {**obj, "metadata": {**(obj.get("metadata") or {}), "resourceVersion": version}}
                self._tell(event_type, obj)
        self.synced.set()

    def _tell(self, event_type: str, obj: dict[str, Any]) -> None:
        """Hand an event on; a failing ``on_event`` is logged and does not stop the watch."""
        if self._on_event is None:
            return
        try:
            self._on_event(event_type, obj)
        except Exception:
            log.exception("watching %s: handling an event failed", self.kind)

    async def watch_once(self, version: str) -> str:
        """Follow one watch from ``version`` until the server ends it; the last version seen."""
        params = {**self._params, "resourceVersion": version, "allowWatchBookmarks": "true"}
        params["timeoutSeconds"] = str(WATCH_SECONDS)
        events = self._client.watch(self.api_version, self.kind, params, read_timeout=READ_TIMEOUT_SECONDS)
        async with contextlib.aclosing(events):  # the stream is closed now, not when the error is collected
            async for event in events:
                version = self.apply(event, version)
        return version

    def apply(self, event: Mapping[str, Any], version: str) -> str:
        """One watch event into the store (and to ``on_event``); the resourceVersion to resume from."""
        event_type = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise KubeError(0, "BadResponse", f"watch of {self.kind}: an event without an object")
        if event_type == "ERROR":
            if obj.get("code") == 410:
                raise Expired(str(obj.get("message", "")))
            raise KubeError(int(obj.get("code") or 0), str(obj.get("reason") or "Error"), str(obj.get("message", "")))
        if event_type == "BOOKMARK":
            return version_of(obj) or version
        if event_type == "DELETED":
            self.store.pop(store_key(obj), None)
        elif event_type in ("ADDED", "MODIFIED"):
            self.store[store_key(obj)] = obj
        else:
            raise KubeError(0, "BadResponse", f"watch of {self.kind}: an event of type {event_type!r}")
        self._tell(str(event_type), obj)
        return version_of(obj) or version
