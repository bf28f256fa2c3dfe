"""Per-tenant cryptography: sealed fields, blind indexes, tracking tokens and the key providers a
tracker opens its keys with (a local file, or Vault Transit).

The lowest layer of the project: it imports nothing from ``tracker`` or ``operator``. The operator's
side of a tenant's keys (making, rotating, shredding them) is ``politetenant.operator.keys``.
"""

from politetenant.crypto.blind_index import blind_index, blind_indexes, normalise_email
from politetenant.crypto.keys import KeyMaterialError, KeyProvider, Keyring, KeySet
from politetenant.crypto.local_provider import LocalKeyProvider, provider_from_url
from politetenant.crypto.sealing import RowId, Sealer, SealError, link_row, recipient_row
from politetenant.crypto.tokens import TokenCodec, VerifiedToken, new_record_id
from politetenant.crypto.vault import VaultKeyProvider, VaultRefused, VaultUnavailable

__all__ = [
    "KeyMaterialError",
    "KeyProvider",
    "KeySet",
    "Keyring",
    "LocalKeyProvider",
    "RowId",
    "SealError",
    "Sealer",
    "TokenCodec",
    "VaultKeyProvider",
    "VaultRefused",
    "VaultUnavailable",
    "VerifiedToken",
    "blind_index",
    "blind_indexes",
    "link_row",
    "new_record_id",
    "normalise_email",
    "provider_from_url",
    "recipient_row",
]
