"""Unforgeable tracking tokens: ``base64url(version || record id || truncated HMAC)``.

The token names a random record and nothing else: no person, no message, no URL. The HMAC covers
the tenant id, so a token issued by one tenant never verifies at another, and verification is
constant-time so a forger learns nothing from response timing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from politetenant.crypto.keys import Keyring

RECORD_ID_BYTES = 12
TAG_BYTES = 12
_VERSION = struct.Struct(">H")
TOKEN_BYTES = _VERSION.size + RECORD_ID_BYTES + TAG_BYTES
TOKEN_CHARS = (TOKEN_BYTES * 4 + 2) // 3  # unpadded base64url
_DUMMY_KEY = os.urandom(32)


def new_record_id() -> bytes:
    """96 random bits: unguessable, and too short-lived a namespace to collide in practice."""
    return os.urandom(RECORD_ID_BYTES)


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    version: int
    record_id: bytes


class TokenCodec:
    """Issues and verifies tokens for one tenant's keyring."""

    def __init__(self, keyring: Keyring) -> None:
        self._context = b"politetenant/token/" + keyring.tenant_bytes + b"\x00"
        self._keys = {v: keyring.get(v).token_key for v in keyring.versions}  # type: ignore[union-attr]
        self._current = keyring.current.version

    def _tag(self, key: bytes, head: bytes) -> bytes:
        return hmac.new(key, self._context + head, hashlib.sha256).digest()[:TAG_BYTES]

    def issue(self, record_id: bytes) -> str:
        if len(record_id) != RECORD_ID_BYTES:
            raise ValueError(f"a record id is {RECORD_ID_BYTES} bytes")
        head = _VERSION.pack(self._current) + record_id
        raw = head + self._tag(self._keys[self._current], head)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def verify(self, token: str) -> VerifiedToken | None:
        """The record a genuine token names, or None for anything forged, altered or malformed."""
        if len(token) != TOKEN_CHARS or not token.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != TOKEN_BYTES or "+" in token or "/" in token:
            return None
        head, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        (version,) = _VERSION.unpack_from(head)
        key = self._keys.get(version)
        # An unknown version costs the same HMAC as a known one: no timing oracle on versions.
        expected = self._tag(key if key is not None else _DUMMY_KEY, head)
        if not hmac.compare_digest(expected, tag) or key is None:
            return None
        # Reject non-canonical encodings (different trailing bits decoding to the same bytes).
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
            return None
        return VerifiedToken(version=version, record_id=head[_VERSION.size :])
