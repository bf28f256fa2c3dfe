"""Sealing of personal fields with AES-256-GCM under the tenant's data key.

Layout of a sealed value: ``header (2 bytes, big endian) || nonce (12) || ciphertext || tag (16)``.
The header is the key version, so rotation never needs a flag day; its high bit (0x8000) says the
value is bound to its row. The associated data binds the tenant and the field, so a value copied to
another tenant or column does not open, and, for a row-bound value, the row's identity too
(``prefix || field || 0x00 || row``), so a value copied to another row of the same column (a link URL
moved to another message) does not open either.

Values written before rows were bound (high bit clear) still open with the field alone, whether or
not a row is given: they stay readable until ``polite-tracker reseal`` binds them. Clearing the bit
of a bound value does not turn it into a legacy one: its tag was made over the row, so it fails.

Row identities, one per table (every writer and reader must use the same):

================================================  ==============================================
fields                                            row identity
================================================  ==============================================
message.subject / from_name / from_email /        the message id (``msg_…``)
list_name
link.url / link.text                              ``link_row(message_id, link_no)``:
                                                  ``f"{message_id}/{link_no}"``
record.attributes                                 the record id (12 bytes, as stored)
recipient.email / recipient.name /                ``recipient_row(message_id, email_index)``:
recipient.attributes                              ``f"{message_id}/" + email_index.hex()``
event.city / event.region                         none: ``seal_repeated`` (see there)
================================================  ==============================================

A recipient's identity uses the blind index the row carries, never the address. Nothing rewrites a
row's ``email_index`` today (rectification changes name and attributes only); whatever ever does must
re-seal that row's three fields under the new identity in the same statement.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from politetenant.crypto.keys import Keyring

_HEADER = struct.Struct(">H")
_NONCE = 12
_OVERHEAD = _HEADER.size + _NONCE + 16
ROW_BOUND = 0x8000  # header bit: the associated data includes the row's identity
_VERSION_MASK = 0x7FFF

RowId = str | bytes


class SealError(Exception):
    """A sealed value did not open: wrong tenant, field or row, unknown key version or tampering."""


def link_row(message_id: str, link_no: int) -> str:
    """The row identity of a link's URL and text."""
    return f"{message_id}/{link_no}"


def recipient_row(message_id: str, email_index: bytes) -> str:
    """The row identity of a recipient's e-mail, name and attributes: message and blind index."""
    return f"{message_id}/{bytes(email_index).hex()}"


class Sealer:
    """Seals and opens field values for one tenant's keyring."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._aead = {v: AESGCM(keyring.get(v).dek) for v in keyring.versions}  # type: ignore[union-attr]
        self._prefix = b"politetenant/seal/" + keyring.tenant_bytes + b"\x00"
        self._memo: dict[tuple[str, str], bytes] = {}
        self._field_aad: dict[str, bytes] = {}  # prefix || field, built once per field name

    def _aad(self, field: str, row: RowId | None) -> bytes:
        aad = self._field_aad.get(field)
        if aad is None:
            aad = self._field_aad[field] = self._prefix + field.encode("utf-8")
        if row is None:
            return aad
        return aad + b"\x00" + (row.encode("utf-8") if isinstance(row, str) else bytes(row))

    def seal(self, field: str, plaintext: bytes, *, row: RowId | None = None) -> bytes:
        """Seal under the newest key version; with ``row``, the value opens only for that row."""
        version = self.keyring.current.version
        header = version
        if row is not None:
            if version & ROW_BOUND:
                raise SealError(f"key version {version} is above {_VERSION_MASK}: it cannot seal a row-bound value")
            header |= ROW_BOUND
        nonce = os.urandom(_NONCE)
        return _HEADER.pack(header) + nonce + self._aead[version].encrypt(nonce, plaintext, self._aad(field, row))

    def seal_rows(self, field: str, plaintexts: Sequence[bytes | None], rows: Sequence[bytes]) -> list[bytes | None]:
        """``seal`` of many values of one field, each bound to its row (``rows[i]``: the identity as
        ``seal`` encodes it, UTF-8 of a ``str`` row); a None stays None. The same format, for a fraction
        of the cost per value: a message of 100,000 recipients seals 400,000 values, and one
        ``os.urandom`` call for all the nonces (each 12 bytes of it, random like a call of its own) and
        the field's associated data and header built once are most of what ``seal`` spends."""
        version = self.keyring.current.version
        if version & ROW_BOUND:
            raise SealError(f"key version {version} is above {_VERSION_MASK}: it cannot seal a row-bound value")
        head, aad = _HEADER.pack(version | ROW_BOUND), self._aad(field, b"")  # aad: prefix || field || 0x00
        encrypt = self._aead[version].encrypt
        nonces = os.urandom(_NONCE * len(plaintexts))
        return [
            None if value is None else head + (nonce := nonces[at : at + _NONCE]) + encrypt(nonce, value, aad + row)
            for at, value, row in zip(range(0, len(nonces), _NONCE), plaintexts, rows, strict=True)
        ]

    def seal_text(self, field: str, text: str, *, row: RowId | None = None) -> bytes:
        return self.seal(field, text.encode("utf-8"), row=row)

    def seal_repeated(self, field: str, text: str) -> bytes:
        """Seal a low-variety value (a city) once per process and reuse the ciphertext.

        Equal values then share a ciphertext, which reveals only that two rows hold the same
        value: acceptable for places, never used for identifying fields. It makes the hot path
        cheaper and lets a report open each distinct value once instead of once per row.
        It is never bound to a row: one ciphertext shared by many rows is the point, and a city
        swapped between two events misleads nobody about who anyone is.
        """
        key = (field, text)
        sealed = self._memo.get(key)
        if sealed is None:
            if len(self._memo) >= 50_000:
                self._memo.clear()
            sealed = self._memo[key] = self.seal_text(field, text)
        return sealed

    def seal_optional(self, field: str, text: str | None, *, row: RowId | None = None) -> bytes | None:
        return None if text is None else self.seal_text(field, text, row=row)

    def open(self, field: str, sealed: bytes, *, row: RowId | None = None) -> bytes:
        """Open a value of ``field``; a row-bound value needs the ``row`` it was sealed for."""
        if len(sealed) < _OVERHEAD:
            raise SealError(f"sealed {field} is too short")
        (header,) = _HEADER.unpack_from(sealed)
        version = header & _VERSION_MASK
        aead = self._aead.get(version)
        if aead is None:
            raise SealError(f"sealed {field} uses key version {version}, which is not loaded")
        bound = bool(header & ROW_BOUND)
        if bound and row is None:
            raise SealError(f"sealed {field} is bound to its row: open it with the row's identity")
        nonce = sealed[_HEADER.size : _HEADER.size + _NONCE]
        try:
            # A legacy value (bit clear) was sealed over the field alone: it opens whatever row is given.
            return aead.decrypt(nonce, sealed[_HEADER.size + _NONCE :], self._aad(field, row if bound else None))
        except InvalidTag as exc:
            where = "tenant, field and row" if bound else "tenant and field"
            raise SealError(f"sealed {field} does not open for this {where}") from exc

    def open_text(self, field: str, sealed: bytes, *, row: RowId | None = None) -> str:
        return self.open(field, sealed, row=row).decode("utf-8")

    def open_optional(self, field: str, sealed: bytes | None, *, row: RowId | None = None) -> str | None:
        return None if sealed is None else self.open_text(field, bytes(sealed), row=row)

    @staticmethod
    def version_of(sealed: bytes) -> int:
        """The key version a value was sealed with (for re-sealing after rotation)."""
        if len(sealed) < _HEADER.size:
            raise SealError("sealed value is too short to carry a key version")
        return int(_HEADER.unpack_from(sealed)[0]) & _VERSION_MASK

    @staticmethod
    def head_of(sealed_head: bytes) -> tuple[int, bool]:
        """(key version, row-bound) from a value's first two bytes (what a SQL ``substr`` returns)."""
        if len(sealed_head) < _HEADER.size:
            raise SealError("sealed value is too short to carry a header")
        (header,) = _HEADER.unpack_from(sealed_head)
        return header & _VERSION_MASK, bool(header & ROW_BOUND)

    @staticmethod
    def is_row_bound(sealed: bytes) -> bool:
        """Whether a value was sealed with its row's identity (False: the legacy, field-only format)."""
        return Sealer.head_of(sealed)[1]
