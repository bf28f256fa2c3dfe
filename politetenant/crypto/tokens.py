"""Unforgeable tracking tokens: ``base64url(version || record id || truncated HMAC)``.

The token names a random record and nothing else: no person, no message, no URL. The HMAC covers
the tenant id, so a token issued by one tenant never verifies at another, and verification is
constant-time so a forger learns nothing from response timing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from politetenant.crypto.keys import Keyring, PrekeyedHmac

RECORD_ID_BYTES = 12
TAG_BYTES = 12
_VERSION = struct.Struct(">H")
TOKEN_BYTES = _VERSION.size + RECORD_ID_BYTES + TAG_BYTES
TOKEN_CHARS = (TOKEN_BYTES * 4 + 2) // 3  # unpadded base64url
_DUMMY_KEY = os.urandom(32)
_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SPARE_BITS_MASK = (1 << (TOKEN_CHARS * 6 - TOKEN_BYTES * 8)) - 1  # bits of the last character left over


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
        context = b"politetenant/token/" + keyring.tenant_bytes + b"\x00"
        # HMAC states already keyed and fed the context: each token then costs a few C calls.
        self._macs = {
            v: PrekeyedHmac(keyring.get(v).token_key, context)  # type: ignore[union-attr]
            for v in keyring.versions
        }
        self._dummy_mac = PrekeyedHmac(_DUMMY_KEY, context)
        self._current = keyring.current.version

    def _tag(self, mac: PrekeyedHmac, head: bytes) -> bytes:
        return mac.digest(head)[:TAG_BYTES]

    def issue(self, record_id: bytes) -> str:
        return self.issue_many((record_id,))[0]

    def issue_many(self, record_ids: Iterable[bytes]) -> list[str]:
        """``issue`` for a batch of records (a message's recipients): the version and key looked up once."""
        version, digest = _VERSION.pack(self._current), self._macs[self._current].digest
        encode = base64.urlsafe_b64encode
        tokens = []
        for record_id in record_ids:
            if len(record_id) != RECORD_ID_BYTES:
                raise ValueError(f"a record id is {RECORD_ID_BYTES} bytes")
            head = version + record_id
            # TOKEN_BYTES is not a multiple of 3: the encoding ends in one "=" of padding, cut here.
            tokens.append(encode(head + digest(head)[:TAG_BYTES])[:TOKEN_CHARS].decode("ascii"))
        return tokens

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
        mac = self._macs.get(version)
        # An unknown version costs the same HMAC as a known one: no timing oracle on versions.
        expected = self._tag(mac if mac is not None else self._dummy_mac, head)
        if not hmac.compare_digest(expected, tag) or mac is None:
            return None
        # Reject non-canonical encodings: the last character's unused low bits must be zero, or
        # several strings would decode to the same bytes.
        last = _B64URL.find(token[-1])
        if last < 0 or last & _SPARE_BITS_MASK:
            return None
        return VerifiedToken(version=version, record_id=head[_VERSION.size :])
