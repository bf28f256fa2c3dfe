"""API bearer tokens: printed once, stored only as a hash, checked per request against a role.

A token reads ``ptk_<id>_<secret>``: the id finds the row (and names the caller in the audit log),
the secret is compared by SHA-256 hash in constant time. Tokens are 256-bit random, so a plain hash
is enough (no password stretching needed).

Tokens come from ``polite-tracker token create`` or, in a cluster, from the operator's Secret
``tracker-api-tokens`` mounted at ``--api-tokens-dir``: one file per role, read here once at start
(``read_bootstrap_tokens``) and kept only as hashes. A revoked token stops working on a worker when
its cached row expires: at most ``REVOCATION_SECONDS`` later.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from aiohttp import web

from politetenant.tracker.http.errors import Forbidden, Unauthorized
from politetenant.tracker.storage.base import Store
from politetenant.tracker.storage.rows import ApiTokenRow


class Role(StrEnum):
    SENDER = "sender"
    ANALYST = "analyst"
    PRIVACY = "privacy"


_TOKEN = re.compile(r"^ptk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_TOKEN_REFERENCE = re.compile(r"^ptk_([0-9a-f]{12})(?:_[A-Za-z0-9_-]{43})?$")  # the id part, or the whole token
TOKEN_SHAPE = "ptk_<12 lowercase hex>_<43 base64url characters>"
REVOCATION_SECONDS = 5.0  # how long a worker may keep believing a token after it was revoked


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


def token_id_of(reference: str) -> str:
    """The id of ``ptk_<id>`` or of a whole token (what ``token revoke`` takes); ValueError otherwise,
    without echoing the argument (it may be a secret)."""
    match = _TOKEN_REFERENCE.match(reference.strip())
    if match is None:
        raise ValueError(f"not a token id: give ptk_<12 lowercase hex> or the whole token ({TOKEN_SHAPE})")
    return match.group(1)


@dataclass(frozen=True)
class BootstrapToken:
    """A role's token as the operator generated it, reduced to what is stored: id and secret hash."""

    role: Role
    token_id: str
    secret_hash: bytes = field(repr=False)
    source: str  # the file it came from, for messages (never its content)

    def row(self, now_ms: int) -> ApiTokenRow:
        return ApiTokenRow(self.token_id, self.role.value, self.secret_hash, now_ms)


def read_bootstrap_tokens(directory: str | Path) -> tuple[BootstrapToken, ...]:
    """Read one token per role from ``directory`` (a mounted Secret: files ``sender``, ``analyst``,
    ``privacy``). Raises ValueError naming the file and role of the first problem, never the token."""
    base = Path(directory)
    if not base.is_dir():
        raise ValueError(f"--api-tokens-dir {base}: not a directory (mount the tracker-api-tokens Secret there)")
    tokens = []
    for role in Role:
        path = base / role.value
        try:
            text = path.read_text(encoding="ascii").strip()  # a trailing newline (kubectl --from-file) is fine
        except FileNotFoundError:
            raise ValueError(
                f"{path}: missing: the {role.value} token (one file per role: sender, analyst, privacy)"
            ) from None
        except UnicodeDecodeError:
            text = ""
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the {role.value} token ({exc.strerror})") from None
        match = _TOKEN.match(text)
        if match is None:
            raise ValueError(f"{path}: the {role.value} token is malformed; expected one token {TOKEN_SHAPE}")
        tokens.append(BootstrapToken(role, match.group(1), _hash(match.group(2)), str(path)))
    return tuple(tokens)


async def revoke_api_token(store: Store, token_id: str) -> tuple[str, bool] | None:
    """Mark the token revoked now; returns (its role, whether it was in force), or None for an unknown id."""
    rows = await store.fetch("SELECT role, revoked_at FROM api_tokens WHERE id = $1", token_id)
    if not rows:
        return None
    changed = await store.execute(
        "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", token_id, int(time.time() * 1000)
    )
    return str(rows[0][0]), changed > 0


class Authenticator:
    """Checks bearer tokens; caches rows briefly so an API burst does not hammer the database, and only
    for REVOCATION_SECONDS, which bounds how long a revoked token keeps working on a worker."""

    def __init__(self, store: Store, cache_seconds: float = REVOCATION_SECONDS) -> None:
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

    async def check_token(self, token: str) -> Principal:
        """Who a token string stands for, whatever its role; Unauthorized unless it is a token in force.
        The API's bearer header and the dashboard's sign-in form both end here, so they cannot disagree."""
        match = _TOKEN.match(token.strip())
        row = await self._row(match.group(1)) if match else None
        if match is None or row is None or not hmac.compare_digest(row.secret_hash, _hash(match.group(2))):
            raise Unauthorized("the bearer token is not valid")
        return Principal(token_id=row.id, role=Role(row.role))

    async def require(self, request: web.Request, *roles: Role) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("send 'Authorization: Bearer <token>'; create one with polite-tracker token create")
        principal = await self.check_token(value)
        if principal.role not in roles:
            allowed = " or ".join(r.value for r in roles)
            raise Forbidden(f"this call needs role {allowed}; the token has role {principal.role.value}")
        return principal
