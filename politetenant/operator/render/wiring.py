"""How tenant pods find their settings, database and keys: environment, volumes, owned Secrets.

Render is pure and deterministic, so it never holds a secret value. Secrets that need generated
material (API tokens, database credentials, the wrapped key set) are *named* here as
``OwnedSecret``s; the reconcile step creates each one once, if absent, and never rewrites it from a
render. Pods refer to them by name, so a render is complete without their contents.

The spool (events held while the database is away) is a PersistentVolumeClaim per tracker pod, from
the StatefulSet's volumeClaimTemplate. An emptyDir goes with its pod: a rollout, a drain or an
eviction during a database outage would delete every event it held, because a terminating pod can
flush only to a database that answers. Pod tracker-N always comes back with claim spool-tracker-N
and replays what its predecessor spooled (the spool adopts files no live worker holds). The price:
a pod follows its volume's zone, and a rollout replaces pods one at a time without a surge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from politetenant.operator.model.config import OperatorConfig
from politetenant.operator.model.names import (
    API_TOKENS_SECRET,
    APP_ROLE,
    CNPG_APP_SECRET,
    DATABASE,
    DATABASE_APP_SECRET,
    DATABASE_CREDENTIALS_SECRET,
    DATABASE_NAME,
    DATABASE_OWNER_SECRET,
    DATABASE_PORT,
    DSN_KEY,
    KEYS_SECRET,
    OPS_PORT,
    OWNER_ROLE,
    SETTINGS_CONFIGMAP,
    SETTINGS_FILE,
    SPOOL_VOLUME,
    TRACKER_PORT,
    vault_name,
)
from politetenant.operator.model.tenant import DatabaseEngine, KeyProviderName, PoliteTenant, VaultKeys

SETTINGS_DIR = "/etc/polite"
KEYS_DIR = "/var/run/polite/keys"
SPOOL_DIR = "/var/lib/polite/spool"
API_TOKENS_DIR = "/var/run/polite/api-tokens"
GEOIP_DIR = "/var/lib/polite/geoip"
VAULT_TOKEN_DIR = "/var/run/secrets/vault"
VAULT_TOKEN_SECONDS = 3600
LOCAL_KEY_FILE = "keys.json"
WRAPPED_KEY_FILE = "wrapped-keys.json"


class RenderError(ValueError):
    """A tenant that cannot be rendered as written; the message names the field and the fix."""


@dataclass(frozen=True, slots=True)
class OwnedSecret:
    """A Secret in the tenant namespace that the reconcile step creates with generated values.

    ``keys`` are the data keys it must hold; ``known`` the ones whose (non-secret) value render
    already knows, so the reconcile step generates only the rest and composes nothing by itself.
    """

    name: str
    keys: tuple[str, ...]
    purpose: str
    known: Mapping[str, str] = field(default_factory=dict)


def database_engine(
    tenant: PoliteTenant, cnpg_available: bool, recorded: DatabaseEngine | None = None
) -> DatabaseEngine:
    """The tenant's database engine: the one recorded when it was first provisioned, whatever came
    later (installing CloudNativePG must not move a running tenant to an empty Cluster); else the one
    it asks for; unset, CloudNativePG when its CRD exists, else a StatefulSet. A spec naming another
    engine than the recorded one is refused by the reconcile step (``engine_conflict``)."""
    if recorded is not None:
        return recorded
    if tenant.spec.database.engine is not None:
        return tenant.spec.database.engine
    return DatabaseEngine.CNPG if cnpg_available else DatabaseEngine.STATEFULSET


def engine_conflict(tenant: PoliteTenant, recorded: DatabaseEngine | None) -> str | None:
    """Why the spec's engine cannot be had (it differs from the recorded one), or None."""
    asked = tenant.spec.database.engine
    if recorded is None or asked is None or asked is recorded:
        return None
    return (
        f"spec.database.engine is {asked.value} but this tenant's database is {recorded.value} (resolved when it "
        f"was first provisioned); the engine never changes by itself: its data stays where it is. Set engine "
        f"{recorded.value}, or move the data and provision a new tenant"
    )


def vault_address(tenant: PoliteTenant, config: OperatorConfig) -> str | None:
    """Vault of a vault-provider tenant: its own address, else the operator's; None for local keys."""
    keys = tenant.spec.keys
    if keys.provider is not KeyProviderName.VAULT:
        return None
    address = (keys.vault.address if keys.vault else None) or config.vault.address
    if not address:
        raise RenderError("spec.keys.vault.address: unset, and the operator configuration has no vault.address")
    try:
        urlsplit(address).port  # noqa: B018 - parsing is the check: a port out of range raises
    except ValueError as exc:
        raise RenderError(f"spec.keys.vault.address: {exc}") from None
    return address.rstrip("/")


@dataclass(frozen=True, slots=True)
class Logins:
    """secretKeyRefs of ``postgresql://`` DSNs: ``app`` for serve and purge, ``owner`` for migrate.

    A StatefulSet database has an owner and an app role (``database_roles``); CloudNativePG's app
    user owns its database and is no superuser; an external database is whatever its DSN says.
    """

    app: dict[str, str]
    owner: dict[str, str]


def database_logins(tenant: PoliteTenant, engine: DatabaseEngine) -> Logins:
    if engine is DatabaseEngine.EXTERNAL:
        ref = tenant.spec.database.external_secret_ref
        if ref is None:
            raise RenderError("spec.database.externalSecretRef: required when engine is external")
        external = {"name": ref.name, "key": ref.key}
        return Logins(external, external)
    if engine is DatabaseEngine.CNPG:
        cnpg = {"name": CNPG_APP_SECRET, "key": DSN_KEY}
        return Logins(cnpg, cnpg)
    return Logins({"name": DATABASE_APP_SECRET, "key": DSN_KEY}, {"name": DATABASE_OWNER_SECRET, "key": DSN_KEY})


def owned_secrets(tenant: PoliteTenant, config: OperatorConfig, engine: DatabaseEngine) -> tuple[OwnedSecret, ...]:
    vault = tenant.spec.keys.provider is KeyProviderName.VAULT
    secrets = [
        OwnedSecret(
            KEYS_SECRET,
            (WRAPPED_KEY_FILE,) if vault else (LOCAL_KEY_FILE,),
            "the tenant's key versions wrapped by its Vault Transit key"
            if vault
            else "the tenant's local key file (format of politetenant.crypto.local_provider)",
        ),
        OwnedSecret(
            API_TOKENS_SECRET,
            ("sender", "analyst", "privacy"),
            "one bootstrap API token per role, for the customer; the tracker stores only their hashes",
        ),
    ]
    if engine is DatabaseEngine.STATEFULSET:
        where = {
            "dbname": DATABASE_NAME,
            "host": f"{DATABASE}.{tenant.namespace}.svc.{config.cluster_domain}",
            "port": str(DATABASE_PORT),
        }
        keys = ("username", "password", "dbname", "host", "port", DSN_KEY)
        layout = f"{DSN_KEY} postgresql://username:password@host:port/dbname (the keys of CloudNativePG's app Secret)"
        secrets += [
            OwnedSecret(
                DATABASE_CREDENTIALS_SECRET,
                keys,
                f"the PostgreSQL image's superuser, for the database pod only; {layout}",
                {"username": DATABASE_NAME, **where},
            ),
            OwnedSecret(
                DATABASE_OWNER_SECRET,
                keys,
                f"role {OWNER_ROLE}: owns the schema, runs migrations; {layout}",
                {"username": OWNER_ROLE, **where},
            ),
            OwnedSecret(
                DATABASE_APP_SECRET,
                keys,
                f"role {APP_ROLE}: reads and writes rows, for the tracker and purge; {layout}",
                {"username": APP_ROLE, **where},
            ),
        ]
    return tuple(secrets)


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _secret_env(name: str, ref: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": dict(ref)}}


def _key_env(tenant: PoliteTenant, vault: str | None) -> list[dict[str, Any]]:
    """Where the key set is (``POLITE_KEYS``) and, for provider vault, how to unwrap it."""
    if vault is None:
        return [_env("POLITE_KEYS", f"local:{KEYS_DIR}/{LOCAL_KEY_FILE}")]
    settings = tenant.spec.keys.vault or VaultKeys()
    return [
        _env("POLITE_KEYS", f"vault:{KEYS_DIR}/{WRAPPED_KEY_FILE}"),
        _env("POLITE_VAULT_ADDR", vault),
        _env("POLITE_VAULT_TRANSIT_MOUNT", settings.transit_mount),
        _env("POLITE_VAULT_TRANSIT_KEY", vault_name(tenant.name)),
        _env("POLITE_VAULT_AUTH_MOUNT", settings.kubernetes_auth_mount),
        _env("POLITE_VAULT_ROLE", vault_name(tenant.name)),
        _env("POLITE_VAULT_TOKEN_FILE", f"{VAULT_TOKEN_DIR}/token"),
    ]


def tracker_env(
    tenant: PoliteTenant, config: OperatorConfig, *, dsn: dict[str, str], vault: str | None, workers: int
) -> list[dict[str, Any]]:
    """The ``POLITE_*`` variables ``polite-tracker serve`` reads."""
    env = [
        _env("POLITE_SETTINGS", f"{SETTINGS_DIR}/{SETTINGS_FILE}"),
        _env("POLITE_HOST", "0.0.0.0"),  # noqa: S104 - inside the pod; NetworkPolicies bound who reaches it
        _env("POLITE_PORT", str(TRACKER_PORT)),
        _env("POLITE_OPS_PORT", str(OPS_PORT)),
        _env("POLITE_WORKERS", str(workers)),
        _env("POLITE_API_TOKENS_DIR", API_TOKENS_DIR),
        _secret_env("POLITE_DB", dsn),
        *_key_env(tenant, vault),
    ]
    if config.trusted_proxies:
        env.append(_env("POLITE_TRUSTED_PROXIES", ",".join(config.trusted_proxies)))
    if config.geoip is not None:
        env.append(_env("POLITE_GEOIP", f"{GEOIP_DIR}/{config.geoip.file}"))
    return env


def migrate_env(*, dsn: dict[str, str]) -> list[dict[str, Any]]:
    """``polite-tracker migrate`` (the tracker pod's init container) needs only the owner's DSN."""
    return [_env("POLITE_SETTINGS", f"{SETTINGS_DIR}/{SETTINGS_FILE}"), _secret_env("POLITE_DB", dsn)]


def retention_env(tenant: PoliteTenant, *, dsn: dict[str, str], vault: str | None) -> list[dict[str, Any]]:
    """``polite-tracker purge``: settings (retention days, legal hold), database, and the keys that
    seal its audit entry."""
    return [
        _env("POLITE_SETTINGS", f"{SETTINGS_DIR}/{SETTINGS_FILE}"),
        _secret_env("POLITE_DB", dsn),
        *_key_env(tenant, vault),
    ]


def _key_volumes(config: OperatorConfig, vault: str | None) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [{"name": "keys", "secret": {"secretName": KEYS_SECRET, "defaultMode": 0o440}}]
    if vault is not None:
        # The only Kubernetes token a tenant pod holds: short-lived, for Vault's audience alone.
        token = {"audience": config.vault.token_audience, "expirationSeconds": VAULT_TOKEN_SECONDS, "path": "token"}
        volumes.append({"name": "vault-token", "projected": {"sources": [{"serviceAccountToken": token}]}})
    return volumes


def _key_mounts(vault: str | None) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [{"name": "keys", "mountPath": KEYS_DIR, "readOnly": True}]
    if vault is not None:
        mounts.append({"name": "vault-token", "mountPath": VAULT_TOKEN_DIR, "readOnly": True})
    return mounts


def _tmp_volume() -> dict[str, Any]:
    return {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}


def _settings_volume() -> dict[str, Any]:
    return {"name": "settings", "configMap": {"name": SETTINGS_CONFIGMAP, "defaultMode": 0o444}}


def _settings_mount() -> dict[str, Any]:
    return {"name": "settings", "mountPath": SETTINGS_DIR, "readOnly": True}


def _tmp_mount() -> dict[str, Any]:
    return {"name": "tmp", "mountPath": "/tmp"}  # noqa: S108 - a private emptyDir, not a shared /tmp


def tracker_volumes(config: OperatorConfig, *, vault: str | None) -> list[dict[str, Any]]:
    """The tracker pod's volumes; the spool is not among them: it is the StatefulSet's claim."""
    tokens = {"name": "api-tokens", "secret": {"secretName": API_TOKENS_SECRET, "defaultMode": 0o440}}
    volumes = [_settings_volume(), _tmp_volume(), tokens, *_key_volumes(config, vault)]
    if config.geoip is not None:
        volumes.append({"name": "geoip", **config.geoip.volume})
    return volumes


def tracker_mounts(config: OperatorConfig, *, vault: str | None) -> list[dict[str, Any]]:
    spool = {"name": SPOOL_VOLUME, "mountPath": SPOOL_DIR}
    tokens = {"name": "api-tokens", "mountPath": API_TOKENS_DIR, "readOnly": True}
    mounts = [_settings_mount(), spool, _tmp_mount(), tokens, *_key_mounts(vault)]
    if config.geoip is not None:
        mounts.append({"name": "geoip", "mountPath": GEOIP_DIR, "readOnly": True})
    return mounts


def migrate_mounts() -> list[dict[str, Any]]:
    return [_settings_mount(), _tmp_mount()]


def retention_volumes(config: OperatorConfig, *, vault: str | None) -> list[dict[str, Any]]:
    return [_settings_volume(), _tmp_volume(), *_key_volumes(config, vault)]


def retention_mounts(*, vault: str | None) -> list[dict[str, Any]]:
    return [_settings_mount(), _tmp_mount(), *_key_mounts(vault)]
