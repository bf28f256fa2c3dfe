"""Keyed blind index of e-mail addresses, so look-ups never need the plaintext.

HMAC-SHA256 under the tenant's index key over the normalised address: equal addresses give equal
indexes within a tenant and key version, and nothing without the key links an index to an address.
"""

from __future__ import annotations

import unicodedata

from politetenant.crypto.keys import Keyring


def normalise_email(email: str) -> str:
    """Case, width and surrounding space never make two addresses of one person differ."""
    if email.isascii():  # NFKC leaves ASCII as it is (and costs a fifth of a registration's indexing)
        return email.strip().casefold()
    return unicodedata.normalize("NFKC", email).strip().casefold()


def blind_index(keyring: Keyring, email: str, version: int | None = None) -> bytes:
    """Index of ``email`` under one key version (the newest by default)."""
    mac = keyring.index_mac(keyring.current.version if version is None else version)
    return mac.digest(normalise_email(email).encode("utf-8"))


def blind_indexes(keyring: Keyring, email: str) -> list[bytes]:
    """Indexes under every loaded version: a look-up must find rows written before a rotation."""
    return [blind_index(keyring, email, v) for v in keyring.versions]
