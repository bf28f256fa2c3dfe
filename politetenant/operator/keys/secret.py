"""The tenant's key Secret: keys created once, rotated on request, shredded on deletion.

Key material comes from a key service (Vault Transit or the local provider) behind the
``TenantKeys`` interface (``lifecycle``); the operator keeps only the wrapped document it returns,
in the tenant's key Secret. That Secret is the record of truth: its annotations say which key version is
newest, when it was made, and which ``polite.io/rotate-keys`` request was last honoured, written in
the same patch as the new document, so a rotation is either wholly recorded or not at all.

Everything that may fail against the key service happens in ``prepare_keys``, before the reconcile
step writes anything; ``write_keys`` then stores what was prepared.
"""

from __future__ import annotations

import asyncio
import functools
import json
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
    """What ``prepare_keys`` found and decided; ``write`` is the key Secret to create or the patch."""

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
    requested rotation). Writes nothing: see ``write_keys``."""
    live = await kube.get("v1", "Secret", owned.name, tenant.namespace)
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
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    doc = _load(decode(live, owned.keys[0]))
    if doc is None:
        message = f"Secret {tenant.namespace}/{owned.name} holds no readable {owned.keys[0]}; restore it from backup"
        return KeyPlan(failed("KeysReady", Reason.KEYS_MISSING, message))
    version = _int(annotations.get(VERSION_ANNOTATION)) or newest_version(doc) or 1
    issued_at = annotations.get(ISSUED_ANNOTATION)
    if not request or request == annotations.get(HANDLED_ANNOTATION):
        return KeyPlan(_available(version), version, issued_at)
    try:
        await call(backend, "rotate keys", lifecycle.ensure, tenant.name, tenant.namespace, names.TRACKER)
        rotate = functools.partial(lifecycle.rotate, rotation_id=request)
        rotated = await call(backend, "rotate keys", rotate, key_name(tenant), doc)
    except KeyServiceError as exc:
        # The old keys still work: the tenant keeps running on them while the rotation is retried.
        return KeyPlan(failed("KeysReady", exc.reason, exc.message), version, issued_at)
    new_version = newest_version(rotated) or version + 1
    patch = {
        "metadata": {"annotations": _record(new_version, now, request)},
        "data": encode({owned.keys[0]: encode_key_document(rotated)}),
    }
    return KeyPlan(
        _available(new_version), new_version, now, patch=patch, rotated_from=version, previous_issued_at=issued_at
    )


async def write_keys(kube: KubeApi, tenant: PoliteTenant, owned: OwnedSecret, plan: KeyPlan) -> KubeError | None:
    """Store what ``prepare_keys`` decided: the new key Secret, or the rotated document."""
    try:
        if plan.create is not None:
            await kube.create(plan.create)
        elif plan.patch is not None:
            await kube.patch("v1", "Secret", owned.name, plan.patch, tenant.namespace)
    except KubeError as exc:
        return exc
    return None


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
    Calling it from the event loop's own thread would deadlock, so that raises instead."""

    def __init__(self, kube: KubeApi, namespace: str, loop: asyncio.AbstractEventLoop) -> None:
        self._kube = kube
        self._namespace = namespace
        self._loop = loop

    def _run(self, coro: Any) -> Any:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError("OperatorSecrets is for worker threads, not the event loop")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def get(self, name: str) -> dict[str, str] | None:
        secret = self._run(self._kube.get("v1", "Secret", name, self._namespace))
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
        if self.get(name) is None:
            self._run(self._kube.create(body))
        else:
            self._run(self._kube.patch("v1", "Secret", name, {"data": body["data"]}, self._namespace))

    def delete(self, name: str) -> None:
        self._run(self._kube.delete("v1", "Secret", name, self._namespace))
