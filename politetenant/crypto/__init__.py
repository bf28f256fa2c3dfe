"""Per-tenant cryptography: sealed fields, blind indexes, tracking tokens and key providers."""

from politetenant.crypto.blind_index import blind_index, blind_indexes, normalise_email
from politetenant.crypto.keys import KeyMaterialError, KeyProvider, Keyring, KeySet
from politetenant.crypto.local_provider import LocalKeyProvider, provider_from_url
from politetenant.crypto.local_tenant_keys import LocalTenantKeys, TenantKeys
from politetenant.crypto.sealing import Sealer, SealError
from politetenant.crypto.tokens import TokenCodec, VerifiedToken, new_record_id
from politetenant.crypto.vault import VaultKeyProvider, VaultLogin, VaultRefused, VaultTenantKeys, VaultUnavailable

__all__ = [
    "KeyMaterialError",
    "KeyProvider",
    "KeySet",
    "Keyring",
    "LocalKeyProvider",
    "LocalTenantKeys",
    "SealError",
    "Sealer",
    "TenantKeys",
    "TokenCodec",
    "VaultKeyProvider",
    "VaultLogin",
    "VaultRefused",
    "VaultTenantKeys",
    "VaultUnavailable",
    "VerifiedToken",
    "blind_index",
    "blind_indexes",
    "new_record_id",
    "normalise_email",
    "provider_from_url",
]
