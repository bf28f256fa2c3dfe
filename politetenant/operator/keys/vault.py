"""The operator's side of Vault Transit keys: a tenant's Transit key, decrypt-only policy and
Kubernetes-auth role, its wrapped key versions, rotation and crypto-shredding.

The wrapped document, its format and the Transit context are shared with the tracker, which unwraps
the keys at start (``politetenant.crypto.vault``). Vault generates every key with ``datakey/wrapped``
and returns only its ciphertext, so the operator never holds a tenant's keys in plaintext.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from politetenant.crypto.keys import PURPOSES, KeyMaterialError, timestamp
from politetenant.crypto.vault import (
    DEFAULT_TIMEOUT,
    KUBERNETES_SA_TOKEN,
    WRAPPED_FORMAT,
    VaultClient,
    VaultError,
    VaultRefused,
    mount_path,
    wrap_context,
    wrapped_versions,
)
from politetenant.operator.model.names import vault_name

TRANSIT_KEY_TYPE = "aes256-gcm96"
# The tracker logs in once at start; a token that outlives that by minutes is enough.
DEFAULT_TOKEN_TTL_SECONDS = 300
TOKEN_FILE_REREAD_SECONDS = 60.0


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


def _document(key_name: str, versions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"format": WRAPPED_FORMAT, "key_name": key_name, "versions": versions}


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
        self.transit_mount = mount_path(transit_mount, "spec.keys.vault.transitMount")
        self.auth_mount = mount_path(auth_mount, "spec.keys.vault.kubernetesAuthMount")
        self.audience = audience
        self.token_ttl_seconds = token_ttl_seconds
        self.timeout = timeout
        self.verify = verify
        self._vault: VaultClient | None = None
        self._token_expires = 0.0

    def __repr__(self) -> str:
        return f"VaultTenantKeys(address={self.address!r}, transit_mount={self.transit_mount!r})"

    # -- session

    @contextlib.contextmanager
    def _signed_in(self) -> Iterator[VaultClient]:
        """A signed-in client for one operation; after any Vault error the next operation signs in afresh."""
        try:
            yield self._session()
        except VaultError:
            self._vault = None
            raise

    def _session(self) -> VaultClient:
        """A signed-in client, logging in again shortly before a Kubernetes-auth token expires."""
        if self._vault is not None and time.monotonic() < self._token_expires:
            return self._vault
        vault = VaultClient(self.address, timeout=self.timeout, verify=self.verify)
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
        name = vault_name(tenant_name)
        with self._signed_in() as vault:
            self._ensure_transit_key(vault, name)
            self._ensure_policy(vault, name)
            self._ensure_role(vault, name, namespace, service_account)

    def _ensure_transit_key(self, vault: VaultClient, name: str) -> None:
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

    def _ensure_policy(self, vault: VaultClient, name: str) -> None:
        sys, text = vault.client.sys, tracker_policy(name, self.transit_mount)
        found = vault.read(f"read policy {name}", lambda: sys.read_acl_policy(name))
        if found is None or (found.get("data") or {}).get("policy") != text:
            vault.call(f"write policy {name}", lambda: sys.create_or_update_acl_policy(name, text))

    def _ensure_role(self, vault: VaultClient, name: str, namespace: str, service_account: str) -> None:
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

    def _generate(self, vault: VaultClient, key_name: str, version: int) -> dict[str, Any]:
        transit, mount = vault.client.secrets.transit, self.transit_mount
        entry: dict[str, Any] = {"version": version, "created_at": timestamp()}
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

    def _delete_transit_key(self, vault: VaultClient, key_name: str) -> None:
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
