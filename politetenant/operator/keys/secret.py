"""The tenant's key Secret: keys created once, rotated on request, shredded on deletion.

Key material comes from a key service (Vault Transit or the local provider) behind the
``TenantKeys`` interface (``lifecycle``); the operator keeps only the wrapped document it returns,
in the tenant's key Secret. That Secret is the record of truth: its annotations say which key version is
newest, when it was made, and which ``polite.io/rotate-keys`` request was last honoured, written in
the same patch as the new document, so a rotation is either wholly recorded or not at all.

Everything that may fail against the key service happens in ``prepare_keys``, before the reconcile
step writes anything; ``store_keys`` then stores what was prepared.

Two operators (replicas during a peering hand-over, or one whose view is stale) may prepare from the
same Secret. A key version exists only once this Secret holds it, so the write is conditional: the
rotation patch carries the ``metadata.resourceVersion`` it was prepared from, a precondition the API
server answers with 409 Conflict when the Secret changed since (optimistic concurrency,
https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions), and a create of a
Secret someone else made is 409 AlreadyExists. On a 409 ``store_keys`` re-plans from the Secret as it
now is: it adopts what is stored when that already answers this very request (no second key for one
request), and otherwise prepares once more from what is stored (which adopts a Secret another operator
created, and rotates once from a version made for another request) and writes once more; a second 409
is a retryable API error. A document prepared but never stored was never given to a tracker, so dropping it
loses nothing; a stored version is never overwritten by another one of the same number.

What the re-plan relies on in the key services: neither has to give the same result twice for one
rotation id across two operators. Vault's ``rotate`` judges "already done" from the document it is
given, so two operators rotating from one stored document both rotate the Transit key and both wrap a
new version; only one is stored, and the other's is an unused data key (Transit keeps its old key
versions, so nothing stored stops decrypting). The local provider judges it from its master copy in
the operator's namespace, a read-modify-write too: ``OperatorSecrets`` makes each of its writes
conditional on what the same call read, so of two concurrent rotations one fails (retried, KeysReady
False meanwhile) and its retry finds the other's version in the master copy.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from politetenant.operator.keys.lifecycle import (
    KeyBackend,
    KeyServiceError,
    TenantKeys,
    call,
    encode_key_document,
    key_name,
)
from politetenant.operator.kube.client import KubeApi, KubeError
from politetenant.operator.kube.secrets import decode, encode, secret_body
from politetenant.operator.model import names
from politetenant.operator.model.reasons import Reason
from politetenant.operator.model.status import Check, failed, passed
from politetenant.operator.model.tenant import PoliteTenant
from politetenant.operator.render.wiring import OwnedSecret

log = logging.getLogger(__name__)

ROTATE_ANNOTATION = names.ROTATE_ANNOTATION  # on the tenant: an SRE's request, any new value
HANDLED_ANNOTATION = "polite.io/rotate-keys-handled"  # on the key Secret: the request last honoured
VERSION_ANNOTATION = "polite.io/keys-version"  # on the key Secret, and on the tracker's pod template
ISSUED_ANNOTATION = "polite.io/keys-issued-at"  # on the key Secret: when the newest version was made


def newest_version(doc: Mapping[str, Any]) -> int | None:
    """The newest key version a key document holds (``versions: [{version: N}, ...]``), if any."""
    versions = doc.get("versions")
    if not isinstance(versions, list):
        return None
    numbers = [v["version"] for v in versions if isinstance(v, dict) and isinstance(v.get("version"), int)]
    return max(numbers, default=None)


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """What ``prepare_keys`` found and decided; ``create`` is the key Secret to create, ``patch`` the
    rotation (conditional on the resourceVersion it was prepared from)."""

    check: Check
    version: int | None = None
    issued_at: str | None = None
    create: dict[str, Any] | None = None
    patch: dict[str, Any] | None = None
    rotated_from: int | None = None
    previous_issued_at: str | None = None

    @property
    def usable(self) -> bool:
        """A key Secret exists or is about to: the tenant's pods can start."""
        return self.version is not None


async def prepare_keys(
    kube: KubeApi, backend: KeyBackend, tenant: PoliteTenant, owned: OwnedSecret, *, known_version: int | None, now: str
) -> KeyPlan:
    """Read the key Secret and do every key-service call the tenant needs now (first keys, or a
    requested rotation). Writes nothing: see ``store_keys``."""
    live = await kube.get("v1", "Secret", owned.name, tenant.namespace)
    return await _plan(backend, tenant, owned, live, known_version=known_version, now=now)


async def _plan(
    backend: KeyBackend,
    tenant: PoliteTenant,
    owned: OwnedSecret,
    live: Mapping[str, Any] | None,
    *,
    known_version: int | None,
    now: str,
) -> KeyPlan:
    request = tenant.metadata.annotations.get(ROTATE_ANNOTATION)
    lifecycle = backend.lifecycle_for(tenant)
    if live is None:
        if known_version is not None:
            return KeyPlan(failed("KeysReady", Reason.KEYS_MISSING, _missing_message(tenant, owned)))
        try:
            await call(backend, "create keys", lifecycle.ensure, tenant.name, tenant.namespace, names.TRACKER)
            doc = await call(backend, "create keys", lifecycle.new_wrapped_version, key_name(tenant), None)
        except KeyServiceError as exc:
            return KeyPlan(failed("KeysReady", exc.reason, exc.message))
        version = newest_version(doc) or 1
        annotations = _record(version, now, request)
        body = secret_body(tenant, owned, {owned.keys[0]: encode_key_document(doc)}, annotations)
        return KeyPlan(_available(version), version, now, create=body)
    return await _existing(backend, lifecycle, tenant, owned, live, request=request, now=now)


async def _existing(
    backend: KeyBackend,
    lifecycle: TenantKeys,
    tenant: PoliteTenant,
    owned: OwnedSecret,
    live: Mapping[str, Any],
    *,
    request: str | None,
    now: str,
) -> KeyPlan:
    kept, doc = _stored(tenant, owned, live)
    if doc is None or kept.version is None:
        return kept
    if not request or request == _annotations(live).get(HANDLED_ANNOTATION):
        return kept
    try:
        await call(backend, "rotate keys", lifecycle.ensure, tenant.name, tenant.namespace, names.TRACKER)
        rotate = functools.partial(lifecycle.rotate, rotation_id=request)
        rotated = await call(backend, "rotate keys", rotate, key_name(tenant), doc)
    except KeyServiceError as exc:
        # The old keys still work: the tenant keeps running on them while the rotation is retried.
        return KeyPlan(failed("KeysReady", exc.reason, exc.message), kept.version, kept.issued_at)
    new_version = newest_version(rotated) or kept.version + 1
    metadata: dict[str, Any] = {"annotations": _record(new_version, now, request)}
    read_at = (live.get("metadata") or {}).get("resourceVersion")
    if read_at:
        metadata["resourceVersion"] = read_at  # the precondition: 409 Conflict if the Secret moved since
    patch = {"metadata": metadata, "data": encode({owned.keys[0]: encode_key_document(rotated)})}
    return KeyPlan(
        _available(new_version),
        new_version,
        now,
        patch=patch,
        rotated_from=kept.version,
        previous_issued_at=kept.issued_at,
    )


def _stored(tenant: PoliteTenant, owned: OwnedSecret, live: Mapping[str, Any]) -> tuple[KeyPlan, dict[str, Any] | None]:
    """The keys an existing Secret holds, kept as they are (and its document), or why they cannot be read."""
    doc = _load(decode(live, owned.keys[0]))
    if doc is None:
        message = f"Secret {tenant.namespace}/{owned.name} holds no readable {owned.keys[0]}; restore it from backup"
        return KeyPlan(failed("KeysReady", Reason.KEYS_MISSING, message)), None
    annotations = _annotations(live)
    version = _int(annotations.get(VERSION_ANNOTATION)) or newest_version(doc) or 1
    return KeyPlan(_available(version), version, annotations.get(ISSUED_ANNOTATION)), doc


async def write_keys(kube: KubeApi, tenant: PoliteTenant, owned: OwnedSecret, plan: KeyPlan) -> KubeError | None:
    """One attempt at storing what ``prepare_keys`` decided: the new key Secret, or the rotated
    document (a 409 when someone else wrote the Secret first). ``store_keys`` re-plans on that 409."""
    try:
        if plan.create is not None:
            await kube.create(plan.create)
        elif plan.patch is not None:
            await kube.patch("v1", "Secret", owned.name, plan.patch, tenant.namespace)
    except KubeError as exc:
        return exc
    return None


async def store_keys(
    kube: KubeApi,
    backend: KeyBackend,
    tenant: PoliteTenant,
    owned: OwnedSecret,
    plan: KeyPlan,
    *,
    known_version: int | None,
    now: str,
) -> tuple[KeyPlan, KubeError | None]:
    """Store what ``prepare_keys`` decided, re-planning once when another writer got there first.

    The keys as they then stand, and the API error that left them unwritten (a failure other than a
    409, or a second 409: the caller retries later; the Secret keeps whatever it held).
    """
    error = await write_keys(kube, tenant, owned, plan)
    if error is None:
        return plan, None
    if not error.conflict:
        return _unwritten(plan, owned, error), error
    try:
        live = await kube.get("v1", "Secret", owned.name, tenant.namespace)
    except KubeError as exc:
        return _unwritten(plan, owned, exc), exc
    if live is None:  # gone again (its namespace going away): look afresh at the next reconcile
        return _unwritten(plan, owned, error), error
    kept, doc = _stored(tenant, owned, live)
    if doc is not None and _answered(tenant.metadata.annotations.get(ROTATE_ANNOTATION), live, doc):
        log.info(
            "tenant %s: Secret %s/%s was rotated by another for this request since it was read (%s); "
            "keeping its key version %s",
            tenant.name, tenant.namespace, owned.name, error.reason, kept.version,
        )  # fmt: skip
        return kept, None
    log.info(
        "tenant %s: Secret %s/%s changed since it was read (%s); preparing the keys again from it",
        tenant.name, tenant.namespace, owned.name, error.reason,
    )  # fmt: skip
    replanned = await _plan(backend, tenant, owned, live, known_version=known_version, now=now)
    again = await write_keys(kube, tenant, owned, replanned)
    if again is None:
        return replanned, None
    return _unwritten(replanned, owned, again), again


def _answered(request: str | None, live: Mapping[str, Any], doc: Mapping[str, Any]) -> bool:
    """The stored keys already answer rotation ``request``: the Secret records it as the one last
    honoured, or one of its key versions was made for it (both key services record the request in the
    version they add), though a newer request was honoured since."""
    if not request:
        return False
    if request == _annotations(live).get(HANDLED_ANNOTATION):
        return True
    versions = doc.get("versions")
    return isinstance(versions, list) and any(isinstance(v, dict) and v.get("rotation") == request for v in versions)


def _unwritten(plan: KeyPlan, owned: OwnedSecret, error: KubeError) -> KeyPlan:
    return unwritten(plan, f"Secret {owned.name}: {error}")


def unwritten(plan: KeyPlan, why: str) -> KeyPlan:
    """The keys as they stand when ``write_keys`` failed: a rotation's old version (the Secret still
    holds it, so the tracker must not roll), or no keys at all when the Secret was never made."""
    check = failed("KeysReady", Reason.API_ERROR, why)
    if plan.rotated_from is not None:
        return KeyPlan(check, plan.rotated_from, plan.previous_issued_at)
    return KeyPlan(check)


async def destroy_keys(backend: KeyBackend, tenant: PoliteTenant) -> None:
    """Crypto-shred the tenant: destroy its key-encryption key. Raises KeyServiceError."""
    await call(backend, "destroy keys", backend.lifecycle_for(tenant).destroy, key_name(tenant))


def _annotations(live: Mapping[str, Any]) -> Mapping[str, Any]:
    return cast(Mapping[str, Any], (live.get("metadata") or {}).get("annotations") or {})


def _record(version: int, now: str, request: str | None) -> dict[str, str]:
    record = {VERSION_ANNOTATION: str(version), ISSUED_ANNOTATION: now, names.HOLDS_DATA_ANNOTATION: "true"}
    if request:
        record[HANDLED_ANNOTATION] = request  # fresh keys answer any rotation asked for so far
    return record


def _available(version: int) -> Check:
    return passed("KeysReady", Reason.KEYS_AVAILABLE, f"key version {version}")


def _missing_message(tenant: PoliteTenant, owned: OwnedSecret) -> str:
    return (
        f"Secret {tenant.namespace}/{owned.name} is gone and new keys would leave the tenant's sealed data unreadable; "
        "restore the Secret from backup (the operator makes no new keys for a tenant that had some)"
    )


def _load(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return cast(dict[str, Any], doc) if isinstance(doc, dict) else None


def _int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


class OperatorSecrets:
    """Blocking get/put/delete of Secret data in the operator's namespace, over the async KubeApi,
    for a key lifecycle running in a worker thread (``LocalTenantKeys`` keeps its KEKs there).
    Calling it from the event loop's own thread would deadlock, so that raises instead.

    A ``put`` is conditional on what the same thread last read of that Secret: a create when it read
    none (409 AlreadyExists if another operator made it meanwhile), else a merge patch carrying the
    resourceVersion it read (409 Conflict if another wrote it meanwhile). The lifecycle reads, changes
    and writes a master copy in one worker-thread call, so two operators rotating one tenant at once
    cannot both store a different key under one version number: the second write fails instead.
    """

    def __init__(self, kube: KubeApi, namespace: str, loop: asyncio.AbstractEventLoop) -> None:
        self._kube = kube
        self._namespace = namespace
        self._loop = loop
        self._seen = threading.local()  # per worker thread: Secret name -> resourceVersion read (None: absent)

    def _run(self, coro: Any) -> Any:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError("OperatorSecrets is for worker threads, not the event loop")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _read_at(self) -> dict[str, str | None]:
        seen: dict[str, str | None] | None = getattr(self._seen, "versions", None)
        if seen is None:
            seen = self._seen.versions = {}
        return seen

    def get(self, name: str) -> dict[str, str] | None:
        secret = self._run(self._kube.get("v1", "Secret", name, self._namespace))
        self._read_at()[name] = _resource_version(secret) if secret is not None else None
        if secret is None:
            return None
        return {key: value for key in secret.get("data") or {} if (value := decode(secret, key)) is not None}

    def put(self, name: str, data: Mapping[str, str]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": self._namespace,
                "labels": {"app.kubernetes.io/part-of": "politetenant"},
            },
            "type": "Opaque",
            "data": encode(data),
        }
        read_at = self._read_at()
        if name not in read_at:
            self.get(name)
        version = read_at.pop(name)  # a failed write leaves nothing to rely on: the next put reads again
        if version is None:
            stored = self._run(self._kube.create(body))
        else:
            patch: dict[str, Any] = {"data": body["data"]}
            if version:
                patch["metadata"] = {"resourceVersion": version}
            stored = self._run(self._kube.patch("v1", "Secret", name, patch, self._namespace))
        read_at[name] = _resource_version(stored)

    def delete(self, name: str) -> None:
        self._read_at().pop(name, None)
        self._run(self._kube.delete("v1", "Secret", name, self._namespace))


def _resource_version(obj: Mapping[str, Any]) -> str:
    """An object's resourceVersion; "" when an answer lacks one (a patch then has no precondition to carry)."""
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
