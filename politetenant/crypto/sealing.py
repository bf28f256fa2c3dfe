"""Sealing of personal fields with AES-256-GCM under the tenant's data key.

Layout of a sealed value: ``version (2 bytes, big endian) || nonce (12) || ciphertext || tag (16)``.
The key version travels with the value so rotation never needs a flag day; the tenant id and the
field name are bound as associated data, so a value copied to another tenant or column does not open.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from politetenant.crypto.keys import Keyring

_HEADER = struct.Struct(">H")
_NONCE = 12
_OVERHEAD = _HEADER.size + _NONCE + 16


class SealError(Exception):
    """A sealed value did not open: wrong tenant, wrong field, unknown key version or tampering."""


class Sealer:
    """Seals and opens field values for one tenant's keyring."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._aead = {v: AESGCM(keyring.get(v).dek) for v in keyring.versions}  # type: ignore[union-attr]
        self._prefix = b"politetenant/seal/" + keyring.tenant_bytes + b"\x00"
        self._memo: dict[tuple[str, str], bytes] = {}

    def _aad(self, field: str) -> bytes:
        return self._prefix + field.encode("utf-8")

    def seal(self, field: str, plaintext: bytes) -> bytes:
        version = self.keyring.current.version
        nonce = os.urandom(_NONCE)
        return _HEADER.pack(version) + nonce + self._aead[version].encrypt(nonce, plaintext, self._aad(field))

    def seal_text(self, field: str, text: str) -> bytes:
        return self.seal(field, text.encode("utf-8"))

    def seal_repeated(self, field: str, text: str) -> bytes:
        """Seal a low-variety value (a city) once per process and reuse the ciphertext.

        Equal values then share a ciphertext, which reveals only that two rows hold the same
        value: acceptable for places, never used for identifying fields. It makes the hot path
        cheaper and lets a report open each distinct value once instead of once per row.
        """
        key = (field, text)
        sealed = self._memo.get(key)
        if sealed is None:
            if len(self._memo) >= 50_000:
                self._memo.clear()
            sealed = self._memo[key] = self.seal_text(field, text)
        return sealed

    def seal_optional(self, field: str, text: str | None) -> bytes | None:
        return None if text is None else self.seal_text(field, text)

    def open(self, field: str, sealed: bytes) -> bytes:
        if len(sealed) < _OVERHEAD:
            raise SealError(f"sealed {field} is too short")
        (version,) = _HEADER.unpack_from(sealed)
        aead = self._aead.get(version)
        if aead is None:
            raise SealError(f"sealed {field} uses key version {version}, which is not loaded")
        nonce = sealed[_HEADER.size : _HEADER.size + _NONCE]
        try:
            return aead.decrypt(nonce, sealed[_HEADER.size + _NONCE :], self._aad(field))
        except InvalidTag as exc:
            raise SealError(f"sealed {field} does not open for this tenant and field") from exc

    def open_text(self, field: str, sealed: bytes) -> str:
        return self.open(field, sealed).decode("utf-8")

    def open_optional(self, field: str, sealed: bytes | None) -> str | None:
        return None if sealed is None else self.open_text(field, bytes(sealed))

    @staticmethod
    def version_of(sealed: bytes) -> int:
        """The key version a value was sealed with (for re-sealing after rotation)."""
        if len(sealed) < _HEADER.size:
            raise SealError("sealed value is too short to carry a key version")
        return int(_HEADER.unpack_from(sealed)[0])
