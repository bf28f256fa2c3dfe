"""The Secrets render names but never fills (``OwnedSecret``): created once, with generated values.

A Secret that exists is never rewritten from a render: API tokens were handed to the customer, the
database was initialised with its password, and the key Secret holds the only copy of the wrapped
data keys. Values are never logged, and never reach status or Events; only names do.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from politetenant.operator.kube.client import KubeApi, KubeError
from politetenant.operator.model import names
from politetenant.operator.model.tenant import PoliteTenant
from politetenant.operator.render.wiring import OwnedSecret

PURPOSE_ANNOTATION = "polite.io/purpose"
ROLES = ("sender", "analyst", "privacy")
TOKEN_PATTERN = r"^ptk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$"  # what politetenant.tracker.http.auth accepts


def api_token() -> str:
    """A bearer token as the tracker makes them (``politetenant.tracker.http.auth``): ``ptk_<id>_<secret>``."""
    return f"ptk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def database_password() -> str:
    return secrets.token_urlsafe(32)  # URL-safe, so the DSN needs no escaping of it


def encode(data: Mapping[str, str]) -> dict[str, str]:
    """Secret ``data``: base64 of each value (``stringData`` is an API-server convenience, not stored)."""
    return {key: base64.b64encode(value.encode("utf-8")).decode("ascii") for key, value in data.items()}


def decode(secret: Mapping[str, Any], key: str) -> str | None:
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except ValueError:
        return None


def secret_body(
    tenant: PoliteTenant, owned: OwnedSecret, data: Mapping[str, str], annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A Secret of the tenant namespace. No ownerReference: deleting the tenant must not delete the
    means to read its retained data (deletionPolicy Retain)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": owned.name,
            "namespace": tenant.namespace,
            "labels": {
                "app.kubernetes.io/instance": tenant.name,
                "app.kubernetes.io/part-of": "politetenant",
                "app.kubernetes.io/managed-by": "polite-operator",
                names.TENANT_LABEL: tenant.name,
                names.REGION_LABEL: tenant.spec.region,
            },
            "annotations": {PURPOSE_ANNOTATION: owned.purpose, **(annotations or {})},
        },
        "type": "Opaque",
        "data": encode(data),
    }


def _dsn(values: Mapping[str, str]) -> str:
    user, password = quote(values["username"], safe=""), quote(values["password"], safe="")
    return f"postgresql://{user}:{password}@{values['host']}:{values['port']}/{quote(values['dbname'], safe='')}"


GENERATORS: dict[str, Callable[[], str]] = {
    **dict.fromkeys(ROLES, api_token),
    "password": database_password,
}


def generated_values(owned: OwnedSecret) -> dict[str, str]:
    """Every key of ``owned``: render's known values, fresh random ones, and the DSN composed from
    them as the OwnedSecret's purpose describes. Refuses a key it has no generator for."""
    values = dict(owned.known)
    for key in owned.keys:
        if key in values or key == names.DSN_KEY:
            continue
        generator = GENERATORS.get(key)
        if generator is None:
            raise ValueError(f"Secret {owned.name}: no generator for key {key!r}")
        values[key] = generator()
    if names.DSN_KEY in owned.keys:
        values[names.DSN_KEY] = _dsn(values)
    return {key: values[key] for key in owned.keys}


@dataclass(frozen=True, slots=True)
class SecretOutcome:
    name: str
    created: bool
    error: KubeError | None = None


async def ensure_secret(
    kube: KubeApi, tenant: PoliteTenant, owned: OwnedSecret, *, absent: bool = False
) -> SecretOutcome:
    """Create ``owned`` with generated values when it is missing; an existing one is left untouched.

    ``absent``: the caller knows there is nothing to read (the namespace was made moments ago), so the
    create is sent at once; a 409 still means another writer's Secret, which stands."""
    try:
        if not absent and await kube.get("v1", "Secret", owned.name, tenant.namespace) is not None:
            return SecretOutcome(owned.name, created=False)
        await kube.create(secret_body(tenant, owned, generated_values(owned)))
    except KubeError as exc:
        if exc.conflict:  # made by another writer since the read: theirs stands
            return SecretOutcome(owned.name, created=False)
        return SecretOutcome(owned.name, created=False, error=exc)
    return SecretOutcome(owned.name, created=True)
