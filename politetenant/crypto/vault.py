"""Keys wrapped by Vault Transit: the tracker unwraps them at start, the operator manages their life.

The tenant's Secret holds ``wrapped-keys.json``::

    {"format": 1, "key_name": "polite-acme",
     "versions": [{"version": 1, "created_at": "2025-01-01T00:00:00+00:00",
                   "dek": "vault:v1:…", "token_key": "vault:v1:…", "index_key": "vault:v1:…"}]}

Each value is a Transit ciphertext of a 32-byte key made by ``datakey/wrapped``: Vault generates the
key and returns only its ciphertext, so the operator never holds a tenant's keys in plaintext; they
exist in plaintext only in the tracker's memory (DESIGN §2). Transit ``decrypt`` returns them
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
import contextlib
import copy
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from politetenant.crypto.keys import KeyMaterialError, KeySet
from politetenant.operator.model.names import vault_name

T = TypeVar("T")

WRAPPED_FORMAT = 1
TRANSIT_KEY_TYPE = "aes256-gcm96"
PURPOSES = ("dek", "token_key", "index_key")
DEFAULT_TIMEOUT = 10.0
# The tracker logs in once at start; a token that outlives that by minutes is enough.
DEFAULT_TOKEN_TTL_SECONDS = 300
KUBERNETES_SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
TOKEN_FILE_REREAD_SECONDS = 60.0

ENV_ADDRESS = "POLITE_VAULT_ADDR"
ENV_TRANSIT_MOUNT = "POLITE_VAULT_TRANSIT_MOUNT"
ENV_TRANSIT_KEY = "POLITE_VAULT_TRANSIT_KEY"
ENV_AUTH_MOUNT = "POLITE_VAULT_AUTH_MOUNT"
ENV_ROLE = "POLITE_VAULT_ROLE"
ENV_TOKEN_FILE = "POLITE_VAULT_TOKEN_FILE"
ENV_CACERT = "POLITE_VAULT_CACERT"  # optional: CA bundle of a Vault behind a private CA


class VaultError(KeyMaterialError):
    """Vault did not do what was asked; the message names the address and the key, never a secret."""


class VaultUnavailable(VaultError):
    """Vault cannot answer now (unreachable, sealed, 5xx, rate limited): retry with backoff."""


class VaultRefused(VaultError):
    """Vault answered no (permission denied, missing or destroyed key, bad request): retrying will not help."""


def wrap_context(key_name: str, version: int, purpose: str) -> str:
    """The base64 Transit context binding one wrapped key to its tenant key, version and purpose."""
    return base64.b64encode(f"politetenant/{key_name}/v{version}/{purpose}".encode()).decode("ascii")


def tracker_policy(key_name: str, transit_mount: str = "transit") -> str:
    """The ACL policy of a tenant's tracker: decrypt with its own Transit key, and nothing else."""
    return (
        f"# Managed by PoliteTenant: the tracker of {key_name} unwraps its keys; nothing else.\n"
        f'path "{transit_mount}/decrypt/{key_name}" {{\n'
        '  capabilities = ["update"]\n'
        "}\n"
    )


def operator_policy(transit_mount: str = "transit", auth_mount: str = "kubernetes") -> str:
    """The least the operator's own Vault identity needs, for the Helm chart's documentation."""
    paths = {
        f"{transit_mount}/keys/polite-*": '["create", "read", "update", "delete"]',  # also /rotate, /config
        f"{transit_mount}/datakey/wrapped/polite-*": '["update"]',
        "sys/policies/acl/polite-*": '["create", "read", "update", "delete"]',
        f"auth/{auth_mount}/role/polite-*": '["create", "read", "update", "delete"]',
    }
    return "".join(f'path "{p}" {{\n  capabilities = {caps}\n}}\n' for p, caps in paths.items())


def _errors_of(exc: Exception) -> str:
    """Vault's own error list (reasons such as "permission denied", never request data), shortened."""
    errors = getattr(exc, "errors", None)
    text = "; ".join(str(e) for e in errors) if errors else exc.__class__.__name__
    return text if len(text) <= 200 else text[:197] + "..."


class _Vault:
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


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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


def _document(key_name: str, versions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"format": WRAPPED_FORMAT, "key_name": key_name, "versions": versions}


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
        self.transit_mount = transit_mount
        self.auth_mount = auth_mount
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
        vault = _Vault(self.address, timeout=self.timeout, verify=self.verify)
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

    def _decrypt(self, vault: _Vault, version: int, purpose: str, ciphertext: str) -> bytes:
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


# -- the operator's side --------------------------------------------------------------------------


@dataclass(frozen=True)
class VaultLogin:
    """How the operator itself signs in to Vault: a token (value or file), else its ServiceAccount."""

    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    kubernetes_role: str | None = None
    jwt_file: str = KUBERNETES_SA_TOKEN
    auth_mount: str = "kubernetes"


class VaultTenantKeys:
    """The operator's management of tenant keys in one Vault: Transit key, policy, role, wrapped versions.

    Every method is idempotent, and none writes the tenant's Secret: methods return the next wrapped
    document and the caller stores it whole, so a Vault failure half-way leaves nothing half-written.
    The client is synchronous (hvac); call it from a thread (``asyncio.to_thread``) in async handlers.
    """

    def __init__(
        self,
        address: str,
        login: VaultLogin,
        *,
        transit_mount: str = "transit",
        auth_mount: str = "kubernetes",
        audience: str = "vault",
        token_ttl_seconds: int = DEFAULT_TOKEN_TTL_SECONDS,
        timeout: float = DEFAULT_TIMEOUT,
        verify: bool | str = True,
    ) -> None:
        self.address = address.rstrip("/")
        self.login = login
        self.transit_mount = transit_mount
        self.auth_mount = auth_mount
        self.audience = audience
        self.token_ttl_seconds = token_ttl_seconds
        self.timeout = timeout
        self.verify = verify
        self._vault: _Vault | None = None
        self._token_expires = 0.0

    def __repr__(self) -> str:
        return f"VaultTenantKeys(address={self.address!r}, transit_mount={self.transit_mount!r})"

    @staticmethod
    def key_name(tenant_name: str) -> str:
        """The tenant's Transit key, policy and role name (``names.vault_name``)."""
        return vault_name(tenant_name)

    # -- session

    @contextlib.contextmanager
    def _signed_in(self) -> Iterator[_Vault]:
        """A signed-in client for one operation; after any Vault error the next operation signs in afresh."""
        try:
            yield self._session()
        except VaultError:
            self._vault = None
            raise

    def _session(self) -> _Vault:
        """A signed-in client, logging in again shortly before a Kubernetes-auth token expires."""
        if self._vault is not None and time.monotonic() < self._token_expires:
            return self._vault
        vault = _Vault(self.address, timeout=self.timeout, verify=self.verify)
        login = self.login
        if login.token:
            vault.client.token, expires = login.token, float("inf")
        elif login.token_file:  # re-read now and then: an agent may renew the file
            vault.client.token = self._read_secret_file(login.token_file, "Vault token")
            expires = time.monotonic() + TOKEN_FILE_REREAD_SECONDS
        elif login.kubernetes_role:
            jwt = self._read_secret_file(login.jwt_file, "ServiceAccount token")
            answer = vault.kubernetes_login(role=login.kubernetes_role, jwt=jwt, mount=login.auth_mount)
            lease = int(answer.get("auth", {}).get("lease_duration") or 0)
            expires = time.monotonic() + lease * 0.8 if lease else float("inf")
        else:
            raise VaultRefused(f"no way to sign in to Vault at {self.address}: set a token, token file or role")
        self._vault, self._token_expires = vault, expires
        return vault

    def _read_secret_file(self, path: str, what: str) -> str:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise VaultRefused(f"cannot read the {what} for Vault at {self.address}: {path} ({exc.strerror})") from None
        if not value:
            raise VaultRefused(f"the {what} for Vault at {self.address} is empty: {path}")
        return value

    # -- ensure

    def ensure(self, tenant_name: str, namespace: str, service_account: str) -> None:
        """Create or correct the tenant's Transit key, decrypt-only policy and Kubernetes-auth role."""
        name = self.key_name(tenant_name)
        with self._signed_in() as vault:
            self._ensure_transit_key(vault, name)
            self._ensure_policy(vault, name)
            self._ensure_role(vault, name, namespace, service_account)

    def _ensure_transit_key(self, vault: _Vault, name: str) -> None:
        transit, mount = vault.client.secrets.transit, self.transit_mount
        found = vault.read(f"read Transit key {mount}/{name}", lambda: transit.read_key(name, mount_point=mount))
        if found is None:
            vault.call(
                f"create Transit key {mount}/{name}",
                lambda: transit.create_key(
                    name, derived=True, exportable=False, key_type=TRANSIT_KEY_TYPE, mount_point=mount
                ),
            )
            return
        data = found.get("data") or {}
        if data.get("type") != TRANSIT_KEY_TYPE or data.get("derived") is not True or data.get("exportable"):
            raise VaultRefused(
                f"Vault at {self.address}: Transit key {mount}/{name} exists as type {data.get('type')!r}, "
                f"derived={data.get('derived')}, exportable={data.get('exportable')}; PoliteTenant needs a derived, "
                f"non-exportable {TRANSIT_KEY_TYPE} key (rename or remove the existing one)"
            )
        if data.get("deletion_allowed"):
            vault.call(
                f"forbid deletion of Transit key {mount}/{name}",
                lambda: transit.update_key_configuration(name, deletion_allowed=False, mount_point=mount),
            )

    def _ensure_policy(self, vault: _Vault, name: str) -> None:
        sys, text = vault.client.sys, tracker_policy(name, self.transit_mount)
        found = vault.read(f"read policy {name}", lambda: sys.read_acl_policy(name))
        if found is None or (found.get("data") or {}).get("policy") != text:
            vault.call(f"write policy {name}", lambda: sys.create_or_update_acl_policy(name, text))

    def _ensure_role(self, vault: _Vault, name: str, namespace: str, service_account: str) -> None:
        # Written with the documented token_* parameters (hvac's create_role only knows the deprecated
        # aliases and cannot drop the default policy).
        desired: dict[str, Any] = {
            "bound_service_account_names": [service_account],
            "bound_service_account_namespaces": [namespace],
            "audience": self.audience,
            "token_policies": [name],
            "token_no_default_policy": True,
            "token_ttl": self.token_ttl_seconds,
            "token_max_ttl": self.token_ttl_seconds,
        }
        path, client, mount = f"auth/{self.auth_mount}/role/{name}", vault.client, self.auth_mount
        # hvac's read_role answers the role itself (the response's "data").
        found = vault.read(f"read role {path}", lambda: client.auth.kubernetes.read_role(name, mount_point=mount))
        if found is None or any(found.get(k) != v for k, v in desired.items()):
            vault.call(f"write role {path}", lambda: client.write_data(path, data=desired))

    # -- versions

    def new_wrapped_version(self, key_name: str, existing_doc: Mapping[str, Any] | None) -> dict[str, Any]:
        """The wrapped document with one more key version, generated and wrapped by Vault; old ones kept."""
        versions = wrapped_versions(existing_doc, key_name, f"the wrapped keys of {key_name}")
        with self._signed_in() as vault:
            entry = self._generate(vault, key_name, max((v["version"] for v in versions), default=0) + 1)
        return _document(key_name, [*versions, entry])

    def _generate(self, vault: _Vault, key_name: str, version: int) -> dict[str, Any]:
        transit, mount = vault.client.secrets.transit, self.transit_mount
        entry: dict[str, Any] = {"version": version, "created_at": _now()}
        for purpose in PURPOSES:

            def datakey(purpose: str = purpose) -> Any:
                return transit.generate_data_key(
                    key_name,
                    key_type="wrapped",
                    context=wrap_context(key_name, version, purpose),
                    bits=256,
                    mount_point=mount,
                )

            what = f"generate key version {version} {purpose} with Transit key {mount}/{key_name}"
            answer = vault.call(what, datakey)
            ciphertext = (answer.get("data") or {}).get("ciphertext") if isinstance(answer, dict) else None
            if not isinstance(ciphertext, str) or not ciphertext.startswith("vault:v"):
                raise VaultRefused(f"Vault at {self.address} returned no ciphertext for Transit key {mount}/{key_name}")
            entry[purpose] = ciphertext
        return entry

    def rotate(
        self, key_name: str, existing_doc: Mapping[str, Any], *, rotation_id: str | None = None
    ) -> dict[str, Any]:
        """Rotate the Transit key, then add a key version wrapped by its newest version.

        ``rotation_id`` (the annotation value that asked) is recorded in the new version; asking again
        with the same id returns the document unchanged, so a retry never adds a second version.
        """
        versions = wrapped_versions(existing_doc, key_name, f"the wrapped keys of {key_name}")
        if not versions:
            raise KeyMaterialError(f"the wrapped keys of {key_name} hold no version to rotate from")
        if rotation_id is not None and versions[-1].get("rotation") == rotation_id:
            return _document(key_name, versions)
        with self._signed_in() as vault:
            transit, mount = vault.client.secrets.transit, self.transit_mount
            what = f"rotate Transit key {mount}/{key_name}"
            vault.call(what, lambda: transit.rotate_key(key_name, mount_point=mount))
            entry = self._generate(vault, key_name, max(v["version"] for v in versions) + 1)
        if rotation_id is not None:
            entry["rotation"] = rotation_id
        return _document(key_name, [*versions, entry])

    # -- crypto-shredding

    def destroy(self, key_name: str) -> None:
        """Crypto-shred: delete the Transit key (every version), then the role and the policy."""
        with self._signed_in() as vault:
            self._delete_transit_key(vault, key_name)
            client, auth = vault.client, self.auth_mount  # Vault answers 204 to deleting an absent role or policy
            vault.call(
                f"delete role auth/{auth}/role/{key_name}",
                lambda: client.auth.kubernetes.delete_role(key_name, mount_point=auth),
            )
            vault.call(f"delete policy {key_name}", lambda: client.sys.delete_acl_policy(key_name))

    def _delete_transit_key(self, vault: _Vault, key_name: str) -> None:
        transit, mount = vault.client.secrets.transit, self.transit_mount
        found = vault.read(
            f"read Transit key {mount}/{key_name}", lambda: transit.read_key(key_name, mount_point=mount)
        )
        if found is None:
            return
        if not (found.get("data") or {}).get("deletion_allowed"):
            vault.call(
                f"allow deletion of Transit key {mount}/{key_name}",
                lambda: transit.update_key_configuration(key_name, deletion_allowed=True, mount_point=mount),
            )
        vault.call(f"delete Transit key {mount}/{key_name}", lambda: transit.delete_key(key_name, mount_point=mount))
