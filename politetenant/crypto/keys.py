"""Key material and the interface every key provider implements.

A tenant has numbered key versions; each version holds a data key (DEK) for sealing fields, a token
key for signing tracking tokens and an index key for blind indexes. New data uses the newest version,
older versions stay loaded so last year's beacon still counts and last year's rows still open.
Providers (the local file, Vault Transit) only differ in how these keys are wrapped at rest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

KEY_BYTES = 32
# The three keys of one version, by the names key documents use for them (and KeySet's fields).
PURPOSES = ("dek", "token_key", "index_key")


def timestamp() -> str:
    """When a key version was made, as every key document records it: UTC, to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class PrekeyedHmac:
    """HMAC-SHA256 (RFC 2104) under one key, for many short messages that all begin with ``context``.

    The key's inner and outer pads (and the context) are hashed once; each message then costs two copies
    of a SHA-256 state, two updates and two digests, all in C. ``hmac.HMAC.copy`` does the same work
    behind a layer of Python (a third of the cost of a blind index or a token, 100,000 of each per big
    message). The digests are HMAC's, bit for bit (tests compare them with ``hmac.new``)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, context: bytes = b"") -> None:
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_SHA256_BLOCK, b"\x00")
        self._inner = hashlib.sha256(key.translate(hmac.trans_36))
        self._inner.update(context)
        self._outer = hashlib.sha256(key.translate(hmac.trans_5C))

    def digest(self, message: bytes) -> bytes:
        """HMAC-SHA256(key, context || message)."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def __repr__(self) -> str:  # its states are as good as the key: never print them
        return "PrekeyedHmac()"


_SHA256_BLOCK = 64


class KeyMaterialError(Exception):
    """Key material is missing, unreadable or cannot be unwrapped; the message names the source only."""


@dataclass(frozen=True, slots=True, repr=False)
class KeySet:
    """One version of a tenant's keys, in plaintext, in memory only."""

    version: int
    dek: bytes
    token_key: bytes
    index_key: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.version <= 0xFFFF:
            raise KeyMaterialError(f"key version {self.version} is outside 1..65535")
        for name in PURPOSES:
            if len(getattr(self, name)) != KEY_BYTES:
                raise KeyMaterialError(f"key version {self.version}: {name} must be {KEY_BYTES} bytes")

    def __repr__(self) -> str:  # never print key bytes, not even by accident in a traceback
        return f"KeySet(version={self.version})"


class Keyring:
    """Every loaded key version of one tenant; the tenant id is bound into all crypto as context."""

    def __init__(self, tenant_id: str, sets: Iterable[KeySet]) -> None:
        if not tenant_id:
            raise KeyMaterialError("a keyring needs a tenant id")
        self.tenant_id = tenant_id
        self.tenant_bytes = tenant_id.encode("utf-8")
        self._sets = {s.version: s for s in sets}
        if not self._sets:
            raise KeyMaterialError("a keyring needs at least one key version")
        self.current = self._sets[max(self._sets)]
        self._index_macs: dict[int, PrekeyedHmac] = {}

    def get(self, version: int) -> KeySet | None:
        return self._sets.get(version)

    def index_mac(self, version: int) -> PrekeyedHmac:
        """HMAC-SHA256 under the version's index key, already fed the tenant context: keyed once per
        version, then a few C calls per address. Held by the keyring, so it goes when the keyring does,
        like the key itself."""
        mac = self._index_macs.get(version)
        if mac is None:
            keys = self._sets.get(version)
            if keys is None:
                raise ValueError(f"key version {version} is not loaded")
            mac = self._index_macs[version] = PrekeyedHmac(keys.index_key, self.tenant_bytes + b"\x00")
        return mac

    @property
    def versions(self) -> list[int]:
        return sorted(self._sets)

    def __repr__(self) -> str:
        return f"Keyring(tenant_id={self.tenant_id!r}, versions={self.versions})"


class KeyProvider(Protocol):
    """Where a tenant's keys come from. Callers only ever see plaintext KeySets in memory."""

    def load(self) -> list[KeySet]:
        """Return every key version, creating version 1 when there is none yet."""
        ...

    def rotate(self) -> list[KeySet]:
        """Add a new version (old ones kept for reading) and return every version."""
        ...

    def describe(self) -> str:
        """Where the keys live, for logs and errors: never key material."""
        ...
