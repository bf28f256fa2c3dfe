"""The PoliteTenant resource as pydantic models: the single source of the CRD, docs and validation.

Field descriptions become the CRD's OpenAPI descriptions and the README's field reference. Rules
that need more than one field, or the old object, are CEL expressions (``CelRule``) emitted as
``x-kubernetes-validations``, so ``kubectl apply`` rejects a bad tenant before it reaches the
operator; each one is mirrored by a pydantic validator with the same message, so
``polite-operator render`` refuses the same files offline. Python attribute names are snake_case;
the wire (YAML) names are camelCase.

The CRD gives every defaulted field an OpenAPI ``default`` and the API server applies defaults before
it runs CEL, so rules read defaulted fields directly and use ``has()`` only for fields without one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from politetenant.crypto.vault import MOUNT_PATTERN
from politetenant.operator.model.patterns import (
    CIDR_PATTERN,
    CRON_PATTERN,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    HOSTNAME_PATTERN,
    HTTP_URL_PATTERN,
    SECRET_KEY_PATTERN,
)
from politetenant.operator.model.spec_types import CelRule, Quantity, Spec, cel
from politetenant.operator.model.tracking import Judging, Tracking
from politetenant.regions import RegionName

GROUP = "polite.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PoliteTenant"
PLURAL = "politetenants"
SINGULAR = "politetenant"
SHORT_NAMES = ["ptenant"]
NAMESPACE_PREFIX = "polite-"
# A tenant's namespace is polite-<name> and a namespace name is a DNS label of at most 63 characters.
MAX_NAME_LENGTH = 63 - len(NAMESPACE_PREFIX)


TLS_ONE_SOURCE = CelRule(
    "has(self.secretName) != has(self.issuerRef)",
    "tls needs exactly one of secretName (an existing certificate) or issuerRef (cert-manager)",
)
TLS_NEEDS_HOST = CelRule("!has(self.tls) || has(self.host)", "tls needs a host", ".tls")
# engine has no default ("unset" lets the operator choose), hence has(); externalSecretRef neither.
EXTERNAL_DB_NEEDS_SECRET = CelRule(
    "(has(self.engine) && self.engine == 'external') == has(self.externalSecretRef)",
    "externalSecretRef is required when engine is external, and only then",
    ".externalSecretRef",
)
VAULT_NEEDS_SETTINGS = CelRule(
    "(self.provider == 'vault') == has(self.vault)",
    "vault settings are required when provider is vault, and only then",
    ".vault",
)
REGION_IMMUTABLE = CelRule("self == oldSelf", "region is immutable: data stays where the customer chose")
API_HOST_DIFFERS = CelRule(
    "!has(self.api) || !has(self.host) || self.api.host != self.host",
    "api.host must differ from host: the public host serves only beacons and links",
    ".api.host",
)
# allowedSourceRanges has no default, so a forgotten list is refused rather than read as "anyone".
API_NEEDS_SOURCE_RANGES = CelRule(
    "has(self.allowedSourceRanges) && size(self.allowedSourceRanges) > 0",
    "allowedSourceRanges is required with an API host: list the networks that may call the API "
    "(0.0.0.0/0 and ::/0 open it to everyone, on purpose)",
    ".allowedSourceRanges",
)
ENGINE_IMMUTABLE = CelRule(
    "self == oldSelf",
    "engine is immutable once set: a tenant's data stays in the database it was provisioned with",
)
SPOOL_STORAGE_IMMUTABLE = CelRule(
    "self == oldSelf",
    "spoolStorage is immutable: a StatefulSet cannot resize the volumes it made",
)


class DatabaseEngine(StrEnum):
    CNPG = "cnpg"
    STATEFULSET = "statefulset"
    EXTERNAL = "external"


class KeyProviderName(StrEnum):
    VAULT = "vault"
    LOCAL = "local"


class DeletionPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class SecretKeyRef(Spec):
    name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Secret in the tenant namespace."
    )
    key: str = Field("dsn", min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN, description="Key within it.")


class IssuerRef(Spec):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="cert-manager issuer.")
    kind: Literal["Issuer", "ClusterIssuer"] = Field("ClusterIssuer", description="Issuer or ClusterIssuer.")
    group: str = Field(
        "cert-manager.io", max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="API group of the issuer."
    )


class Tls(Spec):
    model_config = ConfigDict(json_schema_extra=cel(TLS_ONE_SOURCE))

    secret_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Existing TLS Secret (tls.crt, tls.key) in the tenant namespace.",
    )
    issuer_ref: IssuerRef | None = Field(None, description="cert-manager issuer that obtains the certificate.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        TLS_ONE_SOURCE.require((self.secret_name is None) != (self.issuer_ref is None))
        return self


class ResourceAmounts(Spec):
    cpu: Quantity | None = Field(None, description="CPU, e.g. 250m or 1.")
    memory: Quantity | None = Field(None, description="Memory, e.g. 256Mi.")


class Resources(Spec):
    requests: ResourceAmounts = Field(
        default_factory=lambda: ResourceAmounts(cpu="100m", memory="128Mi"), description="Guaranteed resources."
    )
    limits: ResourceAmounts = Field(
        default_factory=lambda: ResourceAmounts(cpu="1", memory="512Mi"), description="Upper bounds."
    )


class TrackerApi(Spec):
    model_config = ConfigDict(json_schema_extra=cel(API_NEEDS_SOURCE_RANGES))

    host: str = Field(
        max_length=253, pattern=HOSTNAME_PATTERN, description="Host name of a second Ingress that routes only /api/."
    )
    allowed_source_ranges: list[Annotated[str, Field(max_length=43, pattern=CIDR_PATTERN)]] | None = Field(
        None,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Networks (CIDR) the ingress controller lets reach the API host; required.",
    )
    tls: Tls | None = Field(None, description="TLS for the API host; unset: the operator's default issuer, if any.")

    @model_validator(mode="after")
    def _needs_source_ranges(self) -> Self:
        API_NEEDS_SOURCE_RANGES.require(bool(self.allowed_source_ranges))
        return self

    @field_validator("allowed_source_ranges")
    @classmethod
    def _ranges_are_a_set(cls, ranges: list[str] | None) -> list[str] | None:
        # x-kubernetes-list-type: set, so the API server refuses a repeated range too.
        if ranges is not None and len(set(ranges)) != len(ranges):
            raise PydanticCustomError("duplicate", "allowedSourceRanges must not repeat a range")
        return ranges


class Tracker(Spec):
    model_config = ConfigDict(json_schema_extra=cel(TLS_NEEDS_HOST, API_HOST_DIFFERS))

    replicas: int = Field(2, ge=1, le=50, strict=True, description="Tracker pods.")
    image: str | None = Field(
        None, max_length=512, description="Tracker image; the operator's configured default when unset."
    )
    host: str | None = Field(
        None, max_length=253, pattern=HOSTNAME_PATTERN, description="Public host name; an Ingress is made when set."
    )
    tls: Tls | None = Field(None, description="TLS for the Ingress.")
    api: TrackerApi | None = Field(
        None, description="The API on the Internet: unset, it is reachable only in-cluster, through the Service."
    )
    resources: Resources = Field(default_factory=Resources, description="Tracker container resources.")
    spool_storage: Quantity = Field(
        "1Gi",
        description="Volume of each tracker pod for events held while the database is away; immutable.",
        json_schema_extra=cel(SPOOL_STORAGE_IMMUTABLE),
    )

    @model_validator(mode="after")
    def _tls_and_hosts(self) -> Self:
        TLS_NEEDS_HOST.require(self.tls is None or self.host is not None)
        API_HOST_DIFFERS.require(self.api is None or self.host is None or self.api.host != self.host)
        return self


class Database(Spec):
    model_config = ConfigDict(json_schema_extra=cel(EXTERNAL_DB_NEEDS_SECRET))

    engine: DatabaseEngine | None = Field(
        None,
        description="cnpg (CloudNativePG Cluster), statefulset (PostgreSQL StatefulSet) or external (your DSN). "
        "Unset: cnpg when the CloudNativePG CRD exists at the first provisioning, else statefulset; the engine "
        "resolved then is recorded (status.database.engine) and never changes by itself.",
        json_schema_extra=cel(ENGINE_IMMUTABLE),
    )
    storage: Quantity = Field("10Gi", description="Volume size of the tenant database.")
    external_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret holding the DSN of an external PostgreSQL (engine external)."
    )

    @model_validator(mode="after")
    def _external_needs_secret(self) -> Self:
        EXTERNAL_DB_NEEDS_SECRET.require(
            (self.engine == DatabaseEngine.EXTERNAL) == (self.external_secret_ref is not None)
        )
        return self


class VaultKeys(Spec):
    address: str | None = Field(
        None,
        max_length=512,
        pattern=HTTP_URL_PATTERN,
        description="Vault address; the operator's default when unset.",
    )
    transit_mount: str = Field(
        "transit", min_length=1, max_length=128, pattern=MOUNT_PATTERN, description="Transit secrets engine mount."
    )
    kubernetes_auth_mount: str = Field(
        "kubernetes", min_length=1, max_length=128, pattern=MOUNT_PATTERN, description="Kubernetes auth method mount."
    )


class Keys(Spec):
    model_config = ConfigDict(json_schema_extra=cel(VAULT_NEEDS_SETTINGS))

    provider: KeyProviderName = Field(
        KeyProviderName.LOCAL, description="vault (Transit, recommended) or local (a key Secret of the operator)."
    )
    vault: VaultKeys | None = Field(None, description="Vault settings (provider vault).")

    @model_validator(mode="after")
    def _vault_needs_settings(self) -> Self:
        VAULT_NEEDS_SETTINGS.require((self.provider == KeyProviderName.VAULT) == (self.vault is not None))
        return self


class Retention(Spec):
    interaction_days: int = Field(
        395, ge=1, le=3650, strict=True, description="Days interaction data (opens, clicks) is kept."
    )
    message_days: int = Field(
        730, ge=1, le=3650, strict=True, description="Days messages and recipient lists are kept."
    )
    schedule: str = Field(
        "17 3 * * *", max_length=64, pattern=CRON_PATTERN, description="Cron schedule of the retention job (UTC)."
    )


class PoliteTenantSpec(Spec):
    """What a platform engineer asks for: one customer's isolated e-mail analytics stack."""

    # No rule ties legalHold to deletionPolicy: a hold may be placed whatever the policy says, also on
    # a tenant being deleted (a GitOps repo keeps its policy); deletion waits while it stands.

    display_name: str = Field(min_length=1, max_length=100, description="Customer name shown to people.")
    region: RegionName = Field(description="Data-residency region; immutable.", json_schema_extra=cel(REGION_IMMUTABLE))
    tracking: Tracking = Field(
        default_factory=Tracking, description="Tracking modes, thresholds, segments and the recipients' notice."
    )
    judging: Judging = Field(default_factory=Judging, description="How the tracker tells people from machines.")
    tracker: Tracker = Field(default_factory=Tracker, description="The tenant's tracker pods.")
    database: Database = Field(default_factory=Database, description="The tenant's database.")
    keys: Keys = Field(default_factory=Keys, description="Where the tenant's encryption keys live.")
    retention: Retention = Field(default_factory=Retention, description="Retention of personal data.")
    legal_hold: bool = Field(
        False,
        strict=True,
        description="Suspends every deletion, including the tenant's own: deleting the tenant waits while the "
        "hold stands, whatever deletionPolicy says, then follows it.",
    )
    deletion_policy: DeletionPolicy = Field(
        DeletionPolicy.RETAIN,
        description="Retain (default) keeps namespace, data and keys when the tenant is deleted; "
        "Delete removes the namespace and crypto-shreds the keys.",
    )


def check_update(old: PoliteTenantSpec, new: PoliteTenantSpec) -> list[str]:
    """Messages of the transition rules (those reading ``oldSelf``) that ``old`` -> ``new`` breaks."""
    broken = []
    if new.region != old.region:
        broken.append(REGION_IMMUTABLE.message)
    if new.tracker.spool_storage != old.tracker.spool_storage:
        broken.append(SPOOL_STORAGE_IMMUTABLE.message)
    if None not in (old.database.engine, new.database.engine) and new.database.engine != old.database.engine:
        broken.append(ENGINE_IMMUTABLE.message)
    return broken


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        pattern=DNS_LABEL_PATTERN,
        description=f"Tenant name; its namespace is {NAMESPACE_PREFIX}<name>, so a DNS label of at most "
        f"{MAX_NAME_LENGTH} characters.",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class PoliteTenant(BaseModel):
    """A whole PoliteTenant object as read from YAML or the API (status is the operator's)."""

    model_config = ConfigDict(extra="allow")

    api_version: Literal["polite.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["PoliteTenant"]
    metadata: ObjectMeta
    spec: PoliteTenantSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        """Every tenant lives in its own namespace."""
        return f"{NAMESPACE_PREFIX}{self.metadata.name}"
