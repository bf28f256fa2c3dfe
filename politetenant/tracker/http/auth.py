"""API bearer tokens: printed once, stored only as a hash, checked per request against a role.

A token reads ``ptk_<id>_<secret>``: the id finds the row (and names the caller in the audit log),
the secret is compared by SHA-256 hash in constant time. Tokens are 256-bit random, so a plain hash
is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web

from politetenant.tracker.http.errors import Forbidden, Unauthorized
from politetenant.tracker.storage.base import Store
from politetenant.tracker.storage.rows import ApiTokenRow


class Role(StrEnum):
    SENDER = "sender"
    ANALYST = "analyst"
    PRIVACY = "privacy"


_TOKEN = re.compile(r"^ptk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: str
    role: Role


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


async def create_api_token(store: Store, role: Role) -> str:
    """Store a new token's hash and return the token: the only time it is ever shown."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    await store.insert_api_token(ApiTokenRow(token_id, role.value, _hash(secret), int(time.time() * 1000)))
    return f"ptk_{token_id}_{secret}"


class Authenticator:
    """Checks bearer tokens; caches rows briefly so an API burst does not hammer the database."""

    def __init__(self, store: Store, cache_seconds: float = 30.0) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, ApiTokenRow | None]] = {}

    async def _row(self, token_id: str) -> ApiTokenRow | None:
        now = time.monotonic()
        hit = self._cache.get(token_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self.store.get_api_token(token_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token_id] = (now + self.cache_seconds, row)
        return row

    async def require(self, request: web.Request, *roles: Role) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("send 'Authorization: Bearer <token>'; create one with polite-tracker token create")
        match = _TOKEN.match(value.strip())
        row = await self._row(match.group(1)) if match else None
        if match is None or row is None or not hmac.compare_digest(row.secret_hash, _hash(match.group(2))):
            raise Unauthorized("the bearer token is not valid")
        role = Role(row.role)
        if role not in roles:
            allowed = " or ".join(r.value for r in roles)
            raise Forbidden(f"this call needs role {allowed}; the token has role {role.value}")
        return Principal(token_id=row.id, role=role)
