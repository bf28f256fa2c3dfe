"""Keys of a tenant without Vault, managed by the operator: a master copy in the operator's namespace.

A tenant on the local provider has its keys in two places:

- its own Secret ``tracker-keys`` holds ``keys.json`` in the local provider's format
  (``local_provider``): every version wrapped under a per-tenant *file key* stored in that same file.
  The tracker must open its keys without the operator, so the file carries what opens it, and is
  exactly as safe as that Secret.
- the operator's namespace holds the Secret ``polite-<tenant>-keys``: the tenant's KEK and the
  *master copy* of every version wrapped under it. ``new_wrapped_version`` with no tenant document
  rebuilds a lost ``keys.json`` from it (the reconcile step does not do so on its own: a lost tenant
  Secret shows KeysMissing), and crypto-shredding deletes it.

What this does not buy, plainly: the KEK sits next to the copy it wraps, so the wrap separates keys
(file key and KEK never open each other's copies; each copy binds tenant, version and purpose) but
adds no secrecy: whoever can read either Secret can open the tenant's data. Shredding removes every
live copy (the tenant namespace, then this Secret), not copies inside backups taken before. Use
Vault where shredding has to reach backups.

The operator supplies get/put/delete callables for Secrets in its namespace, by name, with text
values (it does the base64 of Secret ``data``), so this module has no Kubernetes dependency.
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from politetenant.crypto.keys import KEY_BYTES, PURPOSES, KeyMaterialError, KeySet, timestamp
from politetenant.crypto.local_provider import FILE_FORMAT, unwrap_key, wrap_key
from politetenant.operator.keys.lifecycle import decode_key_document, encode_key_document
from politetenant.operator.model.names import vault_name

MASTER_KEK = "kek"
MASTER_COPY = "master.json"

SecretGet = Callable[[str], Mapping[str, str] | None]
SecretPut = Callable[[str, Mapping[str, str]], None]
SecretDelete = Callable[[str], None]


def master_secret_name(key_name: str) -> str:
    """The operator-namespace Secret holding a tenant's KEK and master copy."""
    return f"{key_name}-keys"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _key_bytes(text: Any, what: str) -> bytes:
    try:
        key = base64.b64decode(str(text), validate=True)
    except ValueError:
        raise KeyMaterialError(f"{what} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyMaterialError(f"{what} must be {KEY_BYTES} bytes")
    return key


def _master_aad(key_name: str, version: int, purpose: str) -> bytes:
    return f"politetenant/local-master/{key_name}/v{version}/{purpose}".encode()


@dataclass
class _Versions:
    """Key versions in plaintext with their metadata (created_at, rotation), by version number."""

    sets: dict[int, KeySet]
    meta: dict[int, dict[str, Any]]

    @property
    def newest(self) -> int:
        return max(self.sets, default=0)


class LocalTenantKeys:
    """Per-tenant local keys: master copy under a KEK in the operator's namespace, ``keys.json`` for the tenant."""

    def __init__(self, get_secret: SecretGet, put_secret: SecretPut, delete_secret: SecretDelete) -> None:
        self._get = get_secret
        self._put = put_secret
        self._delete = delete_secret

    def ensure(self, tenant_name: str, namespace: str, service_account: str) -> None:
        """Create the tenant's KEK and master copy, with its first version, once (so the
        ``new_wrapped_version`` that follows finds the master ahead and writes nothing); the namespace and
        account play no part."""
        key_name = vault_name(tenant_name)
        if self._get(master_secret_name(key_name)) is None:
            master = _Versions({}, {})
            self._add_version(master)
            self._store(key_name, os.urandom(KEY_BYTES), master)
        else:
            self._load(key_name)  # refuse a damaged master Secret now, not at the next rotation

    def new_wrapped_version(self, key_name: str, existing_doc: Mapping[str, Any] | None) -> dict[str, Any]:
        """The tenant's ``keys.json`` with one more version than it had.

        When the master copy is already ahead (an earlier call whose ``keys.json`` was never stored,
        or a deleted tenant Secret) it returns the master's versions instead of making another, so a
        retry converges and a lost Secret is restored rather than replaced.
        """
        kek, master = self._load(key_name)
        tenant = self._tenant(key_name, existing_doc, master)
        if master.newest <= (tenant[1].newest if tenant else 0):
            self._add_version(master)
            self._store(key_name, kek, master)
        return self._render(master, tenant)

    def rotate(
        self, key_name: str, existing_doc: Mapping[str, Any], *, rotation_id: str | None = None
    ) -> dict[str, Any]:
        """New KEK, new file key, one more version; the same ``rotation_id`` again changes nothing."""
        _, master = self._load(key_name)
        tenant = self._tenant(key_name, existing_doc, master)
        if rotation_id is not None and master.meta.get(master.newest, {}).get("rotation") == rotation_id:
            return self._render(master, tenant)
        if not master.sets:
            raise KeyMaterialError(f"{master_secret_name(key_name)}: no key version to rotate from")
        self._add_version(master, rotation_id)
        self._store(key_name, os.urandom(KEY_BYTES), master)
        return self._render(master, None)

    def destroy(self, key_name: str) -> None:
        """Crypto-shred the operator's copy: delete the KEK and master Secret (absent is fine)."""
        self._delete(master_secret_name(key_name))

    # -- the master Secret

    def _load(self, key_name: str) -> tuple[bytes, _Versions]:
        name = master_secret_name(key_name)
        data = self._get(name)
        if data is None:
            raise KeyMaterialError(f"{name}: no master key Secret (ensure() first; or the tenant was crypto-shredded)")
        try:
            kek = _key_bytes(data.get(MASTER_KEK), "the key-encryption key")
            doc = decode_key_document(data.get(MASTER_COPY) or "", MASTER_COPY)
            if doc.get("format") != FILE_FORMAT or doc.get("key_name") != key_name:
                raise KeyMaterialError(f"{MASTER_COPY} is not the master copy of {key_name}")
            versions = _Versions({}, {})
            for entry in doc.get("versions") or []:
                version = int(entry["version"])
                keys = {p: self._open(kek, key_name, version, p, entry[p]) for p in PURPOSES}
                versions.sets[version] = KeySet(version=version, **keys)
                versions.meta[version] = {k: v for k, v in entry.items() if k not in PURPOSES}
        except KeyMaterialError as exc:
            raise KeyMaterialError(f"{name}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError):
            raise KeyMaterialError(f"{name}: malformed key version in {MASTER_COPY}") from None
        return kek, versions

    @staticmethod
    def _open(kek: bytes, key_name: str, version: int, purpose: str, wrapped: str) -> bytes:
        blob = base64.b64decode(wrapped, validate=True)
        try:
            return AESGCM(kek).decrypt(blob[:12], blob[12:], _master_aad(key_name, version, purpose))
        except (InvalidTag, ValueError):
            raise KeyMaterialError(f"key version {version} {purpose} does not unwrap under the KEK") from None

    def _store(self, key_name: str, kek: bytes, versions: _Versions) -> None:
        entries = []
        for version in sorted(versions.sets):
            entry = dict(versions.meta[version])
            for purpose in PURPOSES:
                nonce = os.urandom(12)
                key = getattr(versions.sets[version], purpose)
                entry[purpose] = _b64(nonce + AESGCM(kek).encrypt(nonce, key, _master_aad(key_name, version, purpose)))
            entries.append(entry)
        master = {"format": FILE_FORMAT, "key_name": key_name, "versions": entries}
        self._put(master_secret_name(key_name), {MASTER_KEK: _b64(kek), MASTER_COPY: encode_key_document(master)})

    @staticmethod
    def _add_version(master: _Versions, rotation_id: str | None = None) -> None:
        version = master.newest + 1
        keys = {p: os.urandom(KEY_BYTES) for p in PURPOSES}
        master.sets[version] = KeySet(version=version, **keys)
        master.meta[version] = {"version": version, "created_at": timestamp()}
        if rotation_id is not None:
            master.meta[version]["rotation"] = rotation_id

    # -- the tenant's keys.json

    def _tenant(
        self, key_name: str, doc: Mapping[str, Any] | None, master: _Versions
    ) -> tuple[dict[str, Any], _Versions, bytes] | None:
        """The tenant's key file (copied), its versions and file key; every version must match the master."""
        if doc is None:
            return None
        source = f"the keys.json of {key_name}"
        try:
            if doc.get("format") != FILE_FORMAT:
                raise KeyMaterialError(f"unknown format (expected {FILE_FORMAT})")
            file_key = _key_bytes(doc.get("kek"), "the file key")
            versions = _Versions({}, {})
            for entry in doc.get("versions") or []:
                version = int(entry["version"])
                keys = {p: unwrap_key(file_key, version, p, entry[p]) for p in PURPOSES}
                versions.sets[version] = KeySet(version=version, **keys)
        except KeyMaterialError as exc:
            raise KeyMaterialError(f"{source}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError):
            raise KeyMaterialError(f"{source}: malformed key version") from None
        for version, found in versions.sets.items():
            kept = master.sets.get(version)
            if kept is None or any(getattr(kept, p) != getattr(found, p) for p in PURPOSES):
                raise KeyMaterialError(
                    f"{source}: key version {version} is not the one in the master copy {master_secret_name(key_name)}"
                    " (refusing to guess which one sealed the data)"
                )
        return copy.deepcopy(dict(doc)), versions, file_key

    @staticmethod
    def _render(master: _Versions, tenant: tuple[dict[str, Any], _Versions, bytes] | None) -> dict[str, Any]:
        """``keys.json`` with every master version; entries the tenant file already has stay byte for byte."""
        doc, have, file_key = tenant if tenant else ({}, _Versions({}, {}), os.urandom(KEY_BYTES))
        kept = {int(e["version"]): e for e in doc.get("versions") or [] if int(e["version"]) in have.sets}
        entries = []
        for version in sorted(master.sets):
            entry = kept.get(version)
            if entry is None:
                entry = dict(master.meta[version])
                for purpose in PURPOSES:
                    entry[purpose] = wrap_key(file_key, version, purpose, getattr(master.sets[version], purpose))
            entries.append(entry)
        return {"format": FILE_FORMAT, "kek": _b64(file_key), "versions": entries}
