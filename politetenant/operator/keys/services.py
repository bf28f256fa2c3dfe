"""Which key service holds a tenant's keys, and the operator's clients for it.

``standard_keys`` is the operator's ``KeyBackend``. Tenants with ``keys.provider: local`` share one
``LocalTenantKeys`` (key-encryption keys in Secrets of the operator's namespace). Tenants with
``keys.provider: vault`` get the ``VaultTenantKeys`` of their Vault: the address from
``spec.keys.vault.address``, else the configuration's ``vault.address``, and the Transit and
Kubernetes-auth mounts from ``spec.keys.vault``. There is one client per (address, mounts), made on
first use and kept, so its Vault token serves every tenant of that Vault.

The operator signs in as its configuration says (``vault.token_file`` or ``vault.kubernetes_role``),
and only to Vaults the configuration names (``vault.address``, ``vault.allowed_addresses``): a tenant
naming another address would otherwise receive the operator's token or ServiceAccount JWT. When the
configuration does not allow a tenant's Vault, its key calls fail with ``VaultNotConfigured``, a
``VaultRefused``: a person has to act, so the tenant shows ``KeysReady`` False, reason VaultRefused.

Lifecycle calls block (hvac); ``keys`` runs each one in a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from politetenant.crypto.keys import KeyMaterialError
from politetenant.crypto.vault import VaultRefused, VaultUnavailable
from politetenant.operator.keys.lifecycle import KeyBackend, TenantKeys
from politetenant.operator.keys.local import LocalTenantKeys
from politetenant.operator.keys.secret import OperatorSecrets
from politetenant.operator.keys.vault import VaultLogin, VaultTenantKeys
from politetenant.operator.kube.client import KubeApi, KubeError
from politetenant.operator.model.config import OperatorConfig, VaultConfig
from politetenant.operator.model.tenant import KeyProviderName, PoliteTenant, VaultKeys
from politetenant.operator.render.wiring import RenderError, vault_address

VaultClientKey = tuple[str, str, str]  # (address, Transit mount, Kubernetes-auth mount)


class VaultNotConfigured(VaultRefused):
    """The operator's configuration does not let it use a tenant's Vault (no sign-in, another address)."""


class _NotConfigured:
    """A tenant's lifecycle when its Vault cannot be used: every call says why, as VaultRefused."""

    def __init__(self, why: str) -> None:
        self.why = why

    def _fail(self, *_: Any, **__: Any) -> Any:
        raise VaultNotConfigured(self.why)

    ensure = new_wrapped_version = rotate = destroy = _fail


def operator_login(vault: VaultConfig) -> VaultLogin | None:
    """How the operator signs in to Vault, from its configuration; None when it is not told how."""
    if vault.token_file:
        return VaultLogin(token_file=vault.token_file)
    if vault.kubernetes_role:
        return VaultLogin(kubernetes_role=vault.kubernetes_role, jwt_file=vault.jwt_file, auth_mount=vault.auth_mount)
    return None


def _normalised(address: str) -> str:
    return address.rstrip("/").lower()


class VaultClients:
    """The operator's ``VaultTenantKeys``, one per (address, mounts), made when a tenant first needs it.

    Used from the event loop's thread only (``lifecycle_for`` runs there); the clients themselves are
    then called from worker threads.
    """

    def __init__(self, config: OperatorConfig) -> None:
        self._config = config
        self._login = operator_login(config.vault)
        allowed = [config.vault.address, *config.vault.allowed_addresses]
        self._allowed = {_normalised(address) for address in allowed if address}
        self._clients: dict[VaultClientKey, VaultTenantKeys] = {}

    def lifecycle_for(self, tenant: PoliteTenant) -> TenantKeys:
        """The client of the tenant's Vault, or a lifecycle that says why there is none."""
        try:
            address = vault_address(tenant, self._config)
        except RenderError as exc:
            return _NotConfigured(str(exc))
        if address is None:
            return _NotConfigured(f"tenant {tenant.name} does not keep its keys in Vault")
        if _normalised(address) not in self._allowed:
            return _NotConfigured(
                f"spec.keys.vault.address {address} is not a Vault this operator signs in to; add it to "
                "vault.allowed_addresses of the operator's configuration (its credentials go nowhere else)"
            )
        if self._login is None:
            return _NotConfigured(
                f"the operator has no Vault sign-in for {address}: set vault.token_file or vault.kubernetes_role "
                "in its configuration"
            )
        settings = tenant.spec.keys.vault or VaultKeys()
        key = (address, settings.transit_mount, settings.kubernetes_auth_mount)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self._client(*key, self._login)
        return client

    def _client(self, address: str, transit_mount: str, auth_mount: str, login: VaultLogin) -> VaultTenantKeys:
        vault = self._config.vault
        return VaultTenantKeys(
            address,
            login,
            transit_mount=transit_mount,
            auth_mount=auth_mount,
            audience=vault.token_audience,  # the audience of the tracker's projected token
            timeout=vault.timeout_seconds,
            verify=vault.ca_cert or True,
        )


def standard_keys(client: KubeApi, config: OperatorConfig, loop: asyncio.AbstractEventLoop) -> KeyBackend:
    """Local keys kept in the operator's namespace, and each vault tenant's own Vault."""
    secrets = OperatorSecrets(client, config.namespace, loop)
    local = LocalTenantKeys(secrets.get, secrets.put, secrets.delete)
    vaults = VaultClients(config)

    def lifecycle_for(tenant: PoliteTenant) -> TenantKeys:
        if tenant.spec.keys.provider is KeyProviderName.VAULT:
            return vaults.lifecycle_for(tenant)
        return local

    # Refusals are matched first: VaultRefused (and VaultNotConfigured) is a KeyMaterialError too. A
    # damaged local master Secret, or the API refusing the operator its own namespace, counts as
    # unavailable: retried with backoff.
    return KeyBackend(
        lifecycle_for,
        unavailable=(VaultUnavailable, KeyMaterialError, KubeError),
        refused=(VaultRefused,),
    )
