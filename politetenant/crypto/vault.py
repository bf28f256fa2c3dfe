"""Keys wrapped by Vault Transit, as the tracker unwraps them at start (the operator's side, which
makes, rotates and destroys them, is ``politetenant.operator.keys.vault``).

The tenant's Secret holds ``wrapped-keys.json``::

    {"format": 1, "key_name": "polite-acme",
     "versions": [{"version": 1, "created_at": "2025-01-01T00:00:00+00:00",
                   "dek": "vault:v1:…", "token_key": "vault:v1:…", "index_key": "vault:v1:…"}]}

Each value is a Transit ciphertext of a 32-byte key made by ``datakey/wrapped``: Vault generates the
key and returns only its ciphertext, so the operator never holds a tenant's keys in plaintext; they
exist in plaintext only in the tracker's memory (docs/architecture.md, privacy model). Transit ``decrypt`` returns them
base64-encoded. A version entry made by a rotation also carries ``"rotation"``, the id of the
request (the annotation value), so a retried rotation does not add a second version.

The Transit key is ``aes256-gcm96``, non-exportable and *derived*: every wrap and unwrap names a
context ``politetenant/<key name>/v<version>/<purpose>``, from which Vault derives a separate
key-encryption key. A ciphertext copied to another purpose, version or tenant therefore fails to
open, which is what the associated data of the local provider does for its file.

Errors never carry key material, tokens or JWTs, only the Vault address, the Transit key and what
was attempted. ``VaultUnavailable`` (unreachable, sealed, 5xx, rate limited) is worth retrying with
backoff; ``VaultRefused`` (permission denied, a missing or destroyed key, a bad request) is not.
Both are ``KeyMaterialError``s, so the tracker's CLI already reports them and exits 2.

hvac is imported when a Vault is first used, so the rest of the tracker does not need it installed.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from politetenant.crypto.keys import PURPOSES, KeyMaterialError, KeySet

T = TypeVar("T")

WRAPPED_FORMAT = 1
DEFAULT_TIMEOUT = 10.0
KUBERNETES_SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"

ENV_ADDRESS = "POLITE_VAULT_ADDR"
ENV_TRANSIT_MOUNT = "POLITE_VAULT_TRANSIT_MOUNT"
ENV_TRANSIT_KEY = "POLITE_VAULT_TRANSIT_KEY"
ENV_AUTH_MOUNT = "POLITE_VAULT_AUTH_MOUNT"
ENV_ROLE = "POLITE_VAULT_ROLE"
ENV_TOKEN_FILE = "POLITE_VAULT_TOKEN_FILE"
ENV_CACERT = "POLITE_VAULT_CACERT"  # optional: CA bundle of a Vault behind a private CA

# A Vault mount path: segments of letters, digits, '-' and '_' joined by single '/'. Mounts go into
# request paths and into policy text; anything else ('#', '?', '%', '..', '*', quotes, newlines) could
# point a request or a policy at another tenant's role or key, or widen a policy by a glob.
_SEGMENT = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9])?"
MOUNT_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"


class VaultError(KeyMaterialError):
    """Vault did not do what was asked; the message names the address and the key, never a secret."""


class VaultUnavailable(VaultError):
    """Vault cannot answer now (unreachable, sealed, 5xx, rate limited): retry with backoff."""


class VaultRefused(VaultError):
    """Vault answered no (permission denied, missing or destroyed key, bad request): retrying will not help."""


def mount_path(mount: str, what: str) -> str:
    """``mount`` checked against MOUNT_PATTERN, each segment URL-quoted (a no-op for a valid one: defence
    in depth, as hvac puts mounts into URLs as they are). ``what`` names the setting in the error."""
    if len(mount) > 128 or not re.fullmatch(MOUNT_PATTERN, mount):
        raise VaultRefused(
            f"{what} must be a Vault mount path (letters, digits, '-' and '_' in segments joined by '/'), "
            f"not {mount[:64]!r}"
        )
    return "/".join(quote(segment, safe="") for segment in mount.split("/"))


def wrap_context(key_name: str, version: int, purpose: str) -> str:
    """The base64 Transit context binding one wrapped key to its tenant key, version and purpose."""
    return base64.b64encode(f"politetenant/{key_name}/v{version}/{purpose}".encode()).decode("ascii")


def _errors_of(exc: Exception) -> str:
    """Vault's own error list (reasons such as "permission denied", never request data), shortened."""
    errors = getattr(exc, "errors", None)
    text = "; ".join(str(e) for e in errors) if errors else exc.__class__.__name__
    return text if len(text) <= 200 else text[:197] + "..."


class VaultClient:
    """One hvac client and the translation of its failures into our two error types."""

    def __init__(self, address: str, *, timeout: float, verify: bool | str) -> None:
        import hvac

        self.address = address
        self.client: Any = hvac.Client(url=address, timeout=timeout, verify=verify)

    def call(self, what: str, action: Callable[[], T]) -> T:
        from hvac import exceptions as hvac_errors

        try:
            return action()
        except OSError as exc:  # requests' ConnectionError, Timeout, SSLError all derive from OSError
            reason = "timed out" if "timeout" in exc.__class__.__name__.lower() else "connection failed"
            raise VaultUnavailable(f"Vault at {self.address} is unreachable ({reason}); could not {what}") from None
        except hvac_errors.VaultDown:
            raise VaultUnavailable(f"Vault at {self.address} is sealed or not ready (503); could not {what}") from None
        except (
            hvac_errors.InternalServerError,
            hvac_errors.BadGateway,
            hvac_errors.RateLimitExceeded,
            hvac_errors.VaultNotInitialized,
        ) as exc:
            raise VaultUnavailable(f"Vault at {self.address} failed to {what}: {_errors_of(exc)}") from None
        except hvac_errors.Forbidden as exc:  # Vault's reasons ("namespace not authorized") carry no secret
            reason = _errors_of(exc) if getattr(exc, "errors", None) else "permission denied"
            raise VaultRefused(f"Vault at {self.address} refused to {what}: {reason}") from None
        except hvac_errors.VaultError as exc:
            raise VaultRefused(f"Vault at {self.address} refused to {what}: {_errors_of(exc)}") from None

    def read(self, what: str, action: Callable[[], Any]) -> dict[str, Any] | None:
        """A GET that answers None when the object does not exist (404)."""
        from hvac import exceptions as hvac_errors

        def attempt() -> Any:
            try:
                return action()
            except hvac_errors.InvalidPath:
                return None

        found = self.call(what, attempt)
        return found if isinstance(found, dict) else None

    def kubernetes_login(self, *, role: str, jwt: str, mount: str) -> dict[str, Any]:
        login = self.client.auth.kubernetes.login
        answer: dict[str, Any] = self.call(
            f"log in as role {role} at auth/{mount}", lambda: login(role, jwt, mount_point=mount)
        )
        return answer


# -- the wrapped key document ---------------------------------------------------------------------


def wrapped_versions(doc: Mapping[str, Any] | None, key_name: str, source: str) -> list[dict[str, Any]]:
    """The version entries of a wrapped key document, checked for shape; ``source`` names it in errors."""
    if doc is None:
        return []
    if not isinstance(doc, Mapping) or doc.get("format") != WRAPPED_FORMAT:
        raise KeyMaterialError(f"{source}: unknown format (expected a wrapped key document of format {WRAPPED_FORMAT})")
    if doc.get("key_name") != key_name:
        raise KeyMaterialError(f"{source}: the document is for Transit key {doc.get('key_name')!r}, not {key_name!r}")
    versions = doc.get("versions")
    if not isinstance(versions, list) or not all(isinstance(v, dict) for v in versions):
        raise KeyMaterialError(f"{source}: 'versions' must be a list of key versions")
    seen: set[int] = set()
    for entry in versions:
        version = entry.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= 0xFFFF or version in seen:
            raise KeyMaterialError(f"{source}: key version {version!r} is not a distinct number in 1..65535")
        seen.add(version)
        for purpose in PURPOSES:
            wrapped = entry.get(purpose)
            if not isinstance(wrapped, str) or not wrapped.startswith("vault:v"):
                raise KeyMaterialError(f"{source}: key version {version} {purpose} is not a Vault Transit ciphertext")
    return [copy.deepcopy(dict(entry)) for entry in versions]


# -- the tracker's side ---------------------------------------------------------------------------


class VaultKeyProvider:
    """The tracker's keys: the wrapped document from its Secret, unwrapped by Vault after a Kubernetes login."""

    def __init__(
        self,
        wrapped_path: str | os.PathLike[str],
        *,
        address: str,
        key_name: str,
        role: str,
        transit_mount: str = "transit",
        auth_mount: str = "kubernetes",
        token_file: str | os.PathLike[str] = KUBERNETES_SA_TOKEN,
        timeout: float = DEFAULT_TIMEOUT,
        verify: bool | str = True,
        attempts: int = 3,
        backoff_seconds: float = 0.5,
    ) -> None:
        self.path = Path(wrapped_path)
        self.address = address.rstrip("/")
        self.key_name = key_name
        self.role = role
        self.transit_mount = mount_path(transit_mount, ENV_TRANSIT_MOUNT)
        self.auth_mount = mount_path(auth_mount, ENV_AUTH_MOUNT)
        self.token_file = Path(token_file)
        self.timeout = timeout
        self.verify = verify
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds

    @classmethod
    def from_environment(cls, wrapped_path: str, environ: Mapping[str, str]) -> VaultKeyProvider:
        """Settings from the ``POLITE_VAULT_*`` variables the operator puts in the tracker pod."""
        missing = [name for name in (ENV_ADDRESS, ENV_TRANSIT_KEY, ENV_ROLE) if not environ.get(name)]
        if missing:
            raise ValueError(f"--keys vault:{wrapped_path} needs {', '.join(missing)} in the environment")
        return cls(
            wrapped_path,
            address=environ[ENV_ADDRESS],
            key_name=environ[ENV_TRANSIT_KEY],
            role=environ[ENV_ROLE],
            transit_mount=environ.get(ENV_TRANSIT_MOUNT) or "transit",
            auth_mount=environ.get(ENV_AUTH_MOUNT) or "kubernetes",
            token_file=environ.get(ENV_TOKEN_FILE) or KUBERNETES_SA_TOKEN,
            verify=environ.get(ENV_CACERT) or True,
        )

    def describe(self) -> str:
        return f"vault:{self.path} (Transit key {self.transit_mount}/{self.key_name} at {self.address})"

    def rotate(self) -> list[KeySet]:
        raise KeyMaterialError(
            f"{self.describe()}: a Vault tenant's keys are rotated by the operator "
            "(kubectl polite rotate-keys TENANT), never by the tracker"
        )

    def load(self) -> list[KeySet]:
        versions = self._read_document()
        jwt = self._read_jwt()
        for attempt in range(1, self.attempts + 1):
            try:
                return self._unwrap(versions, jwt)
            except VaultUnavailable:
                if attempt == self.attempts:
                    raise
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_document(self) -> list[dict[str, Any]]:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            raise KeyMaterialError(f"{self.describe()}: no wrapped key file (the operator writes it)") from None
        except OSError as exc:
            raise KeyMaterialError(f"{self.describe()}: cannot read the wrapped key file ({exc.strerror})") from None
        except ValueError:
            raise KeyMaterialError(f"{self.describe()}: the wrapped key file is not JSON") from None
        versions = wrapped_versions(doc, self.key_name, self.describe())
        if not versions:
            raise KeyMaterialError(f"{self.describe()} holds no key version")
        return versions

    def _read_jwt(self) -> str:
        try:
            jwt = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise KeyMaterialError(
                f"{self.describe()}: cannot read the Vault login token {self.token_file} ({exc.strerror})"
            ) from None
        if not jwt:
            raise KeyMaterialError(f"{self.describe()}: the Vault login token {self.token_file} is empty")
        return jwt

    def _unwrap(self, versions: list[dict[str, Any]], jwt: str) -> list[KeySet]:
        vault = VaultClient(self.address, timeout=self.timeout, verify=self.verify)
        vault.kubernetes_login(role=self.role, jwt=jwt, mount=self.auth_mount)
        sets = []
        for entry in versions:
            version = entry["version"]
            keys = {purpose: self._decrypt(vault, version, purpose, entry[purpose]) for purpose in PURPOSES}
            try:
                sets.append(KeySet(version=version, **keys))
            except KeyMaterialError as exc:
                raise KeyMaterialError(f"{self.describe()}: {exc}") from None
        return sets

    def _decrypt(self, vault: VaultClient, version: int, purpose: str, ciphertext: str) -> bytes:
        what = f"unwrap key version {version} {purpose} with Transit key {self.transit_mount}/{self.key_name}"
        answer = vault.call(
            what,
            lambda: vault.client.secrets.transit.decrypt_data(
                self.key_name,
                ciphertext=ciphertext,
                context=wrap_context(self.key_name, version, purpose),
                mount_point=self.transit_mount,
            ),
        )
        try:
            return base64.b64decode(answer["data"]["plaintext"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise VaultRefused(f"Vault at {self.address} answered no plaintext to {what}") from None
