"""The local key provider: a single 0600 file for laptops, the demo and small installs.

The file holds a key-encryption key (KEK) and, per version, the DEK, token key and index key wrapped
with AES-256-GCM under it. That keeps the same wrapped-at-rest shape as the Vault provider, so moving
a tenant to Vault only changes where the KEK lives. The file is only as safe as its permissions.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from politetenant.crypto.keys import KEY_BYTES, PURPOSES, KeyMaterialError, KeyProvider, KeySet, timestamp
from politetenant.durable import replace_durably

FILE_FORMAT = 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError as exc:
        raise KeyMaterialError(f"{what} is not valid base64") from exc


def wrap_key(kek: bytes, version: int, purpose: str, key: bytes) -> str:
    """One key of a version sealed under ``kek``, bound to its version and purpose (the file's format)."""
    nonce = os.urandom(12)
    aad = f"politetenant/local-wrap/v{version}/{purpose}".encode()
    return _b64(nonce + AESGCM(kek).encrypt(nonce, key, aad))


def unwrap_key(kek: bytes, version: int, purpose: str, wrapped: str) -> bytes:
    """The inverse of ``wrap_key``; a key moved to another version or purpose does not open."""
    blob = _unb64(wrapped, f"key version {version} {purpose}")
    if len(blob) < 12 + 16:
        raise KeyMaterialError(f"key version {version} {purpose} is too short to be a wrapped key")
    aad = f"politetenant/local-wrap/v{version}/{purpose}".encode()
    try:
        return AESGCM(kek).decrypt(blob[:12], blob[12:], aad)
    except InvalidTag as exc:
        raise KeyMaterialError(f"key version {version} {purpose} does not unwrap under this KEK") from exc


class LocalKeyProvider:
    """Keys in one JSON file, created with mode 0600 on first use; writes are atomic and locked."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return f"local:{self.path}"

    @contextlib.contextmanager
    def _locked(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read(self) -> dict[str, Any] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise KeyMaterialError(f"{self.describe()} is not a JSON key file") from exc
        if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
            raise KeyMaterialError(f"{self.describe()} has an unknown format (expected format {FILE_FORMAT})")
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        # Durable through a power loss: a key version lost after data was sealed with it loses the data.
        replace_durably(self.path, json.dumps(doc, indent=2).encode())

    @staticmethod
    def _new_version(kek: bytes, version: int) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "version": version,
            "created_at": timestamp(),
        }
        for purpose in PURPOSES:
            entry[purpose] = wrap_key(kek, version, purpose, os.urandom(KEY_BYTES))
        return entry

    def _unwrap_all(self, doc: dict[str, Any]) -> list[KeySet]:
        """Every version in plaintext; any malformation is a KeyMaterialError naming this file."""
        try:
            kek = _unb64(doc.get("kek"), "the key-encryption key")
            if len(kek) != KEY_BYTES:
                raise KeyMaterialError(f"the key-encryption key must be {KEY_BYTES} bytes")
            versions = doc.get("versions") or []
            if not isinstance(versions, list) or not all(isinstance(v, dict) for v in versions):
                raise KeyMaterialError("'versions' must be a list of key versions")
            sets = []
            for entry in versions:
                version = int(entry["version"])
                keys = {p: unwrap_key(kek, version, p, entry[p]) for p in PURPOSES}
                sets.append(KeySet(version=version, **keys))
        except KeyMaterialError as exc:
            raise KeyMaterialError(f"{self.describe()}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else "malformed entry"
            raise KeyMaterialError(f"{self.describe()}: {what} in a key version") from None
        if not sets:
            raise KeyMaterialError(f"{self.describe()} holds no key version")
        return sets

    def load(self) -> list[KeySet]:
        # An existing file is read without the lock: writes replace it atomically, and the file may
        # sit on a read-only mount (a Kubernetes Secret) where no lock file can be created.
        doc = self._read()
        if doc is not None:
            return self._unwrap_all(doc)
        with self._locked():
            doc = self._read()
            if doc is None:
                kek = os.urandom(KEY_BYTES)
                doc = {"format": FILE_FORMAT, "kek": _b64(kek), "versions": [self._new_version(kek, 1)]}
                self._write(doc)
            return self._unwrap_all(doc)

    def rotate(self) -> list[KeySet]:
        self.load()
        with self._locked():
            doc = self._read()
            assert doc is not None
            kek = _unb64(doc["kek"], "the key-encryption key")
            newest = max(int(v["version"]) for v in doc["versions"])
            doc["versions"].append(self._new_version(kek, newest + 1))
            self._write(doc)
            return self._unwrap_all(doc)


def provider_from_url(url: str) -> KeyProvider:
    """Parse ``--keys``: ``local:PATH`` (``local:///abs/path`` and ``local:./rel`` both work), or
    ``vault:PATH`` (the wrapped key file; Vault's address, key and login come from ``POLITE_VAULT_*``)."""
    if url.startswith("local:"):
        path = url[len("local:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError("--keys local: needs a file path, e.g. local:./polite-data/keys.json")
        return LocalKeyProvider(path)
    if url.startswith("vault:"):
        from politetenant.crypto.vault import ENV_ADDRESS, VaultKeyProvider

        path = url[len("vault:") :]
        if path.startswith("//") and not path.startswith("///"):
            raise ValueError(
                f"--keys vault:PATH names the wrapped key file, not a Vault address (that is {ENV_ADDRESS})"
            )
        path = path[2:] if path.startswith("//") else path
        if not path:
            raise ValueError(
                "--keys vault: needs the wrapped key file, e.g. vault:/var/run/polite/keys/wrapped-keys.json"
            )
        return VaultKeyProvider.from_environment(path, os.environ)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ValueError(f"--keys: unknown key provider {scheme!r}; use local:PATH or vault:PATH")
