"""The one interface to a tenant's keys in a key service, and how its calls run and fail.

``TenantKeys`` is implemented by ``vault.VaultTenantKeys`` (Vault Transit) and ``local.LocalTenantKeys``
(a KEK in the operator's namespace). Every method returns the tenant's next key document and none
writes the tenant's Secret: the caller stores the document whole, so a failure half-way leaves
nothing half-written. ``call`` runs one method off the event loop and turns its failure into a
``KeyServiceError`` whose reason the tenant's status shows.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from politetenant.crypto.keys import KeyMaterialError
from politetenant.operator.model import names
from politetenant.operator.model.reasons import Reason
from politetenant.operator.model.tenant import PoliteTenant

ERROR_MESSAGE_LIMIT = 300


class TenantKeys(Protocol):
    """A tenant's keys in a key service. Methods may be blocking (they run in a worker thread) or
    coroutine functions; documents are JSON objects."""

    def ensure(self, tenant_name: str, namespace: str, service_account: str) -> object:
        """Make the tenant's key-encryption key and whatever lets its ServiceAccount use it."""
        ...

    def new_wrapped_version(self, key_name: str, existing_doc: Mapping[str, Any] | None) -> dict[str, Any]:
        """``existing_doc`` with one more data-key version (or a first one), wrapped."""
        ...

    def rotate(
        self, key_name: str, existing_doc: Mapping[str, Any], *, rotation_id: str | None = None
    ) -> dict[str, Any]:
        """Rotate the key-encryption key and add a data-key version; old versions still open. The
        same ``rotation_id`` twice rotates once, so a retry after a failed Secret write adds nothing."""
        ...

    def destroy(self, key_name: str) -> object:
        """Destroy the key-encryption key: every document wrapped under it becomes unreadable."""
        ...


@dataclass(frozen=True, slots=True)
class KeyBackend:
    """How the operator reaches tenants' keys: the ``TenantKeys`` of a tenant (its provider, its
    Vault), and which of their errors mean the service is unreachable or refused the request."""

    lifecycle_for: Callable[[PoliteTenant], TenantKeys]
    unavailable: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    refused: tuple[type[BaseException], ...] = ()


class KeyServiceError(Exception):
    """A key-service call failed; ``reason`` and a message with no secret in it."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def key_name(tenant: PoliteTenant) -> str:
    """The tenant's key in its key service (Transit key, policy and role; the local master copy)."""
    return names.vault_name(tenant.name)


async def call(backend: KeyBackend, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run one ``TenantKeys`` call off the event loop; its failure as a KeyServiceError."""
    try:
        result = await asyncio.to_thread(fn, *args)
        if inspect.isawaitable(result):
            result = await result
        return result
    except backend.refused as exc:
        raise KeyServiceError(Reason.VAULT_REFUSED, f"{what}: {_safe(exc)}") from None
    except backend.unavailable as exc:
        raise KeyServiceError(Reason.KEYS_UNAVAILABLE, f"{what}: {_safe(exc)}") from None
    except Exception as exc:
        # Unknown errors may carry anything in their text (a token, a response body): the type only.
        raise KeyServiceError(Reason.KEYS_UNAVAILABLE, f"{what}: {type(exc).__name__}") from None


def _safe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= ERROR_MESSAGE_LIMIT else text[: ERROR_MESSAGE_LIMIT - 3] + "..."


def encode_key_document(doc: Mapping[str, Any]) -> str:
    """A key document as a Secret stores it: stable bytes, so an unchanged document rewrites nothing."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def decode_key_document(text: str | bytes, source: str) -> dict[str, Any]:
    """The document of a Secret's key file; ``source`` names it in errors."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise KeyMaterialError(f"{source}: not a JSON key document") from None
    if not isinstance(doc, dict):
        raise KeyMaterialError(f"{source}: not a JSON key document")
    return doc
