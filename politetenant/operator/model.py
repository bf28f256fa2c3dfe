"""The PoliteTenant resource as pydantic models: the single source of the CRD, docs and validation.

Field descriptions become the CRD's OpenAPI descriptions and the README's field reference. Rules
that need more than one field, or the old object, are CEL expressions attached with ``cel()`` and
emitted as ``x-kubernetes-validations``, so ``kubectl apply`` rejects a bad tenant before it reaches
the operator. Python attribute names are snake_case; the wire (YAML) names are camelCase.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from politetenant.regions import RegionName
from politetenant.settings import TrackingMode

GROUP = "polite.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PoliteTenant"
PLURAL = "politetenants"
SINGULAR = "politetenant"
SHORT_NAMES = ["ptenant"]

# Kubernetes quantity (resource.Quantity) as the API server accepts it.
QUANTITY_PATTERN = r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[mkMGTPE])?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HOSTNAME_PATTERN = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
# Five cron fields (minute hour day-of-month month day-of-week), as CronJob takes them.
CRON_FIELD = r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*"
CRON_PATTERN = rf"^{CRON_FIELD}( {CRON_FIELD}){{4}}$|^@(hourly|daily|weekly|monthly|yearly|annually)$"

Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """``x-kubernetes-validations`` for a model: (CEL rule, message shown to the user)."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


class Spec(BaseModel):
    """Base of every part of the spec: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


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


class Tracking(Spec):
    model_config = ConfigDict(
        json_schema_extra=cel(("self.defaultMode in self.allowedModes", "defaultMode must be one of allowedModes"))
    )

    default_mode: TrackingMode = Field(TrackingMode.ANONYMOUS, description="Mode of a message that names none.")
    allowed_modes: list[TrackingMode] = Field(
        default_factory=lambda: [TrackingMode.INDIVIDUAL, TrackingMode.ANONYMOUS, TrackingMode.AGGREGATE],
        min_length=1,
        max_length=3,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Modes a message may ask for; a request for another mode is refused, never changed.",
    )
    mode_locked: bool = Field(False, description="Only defaultMode is allowed, whatever a message asks for.")
    min_segment_size: int = Field(
        10, ge=5, le=100_000, description="Fewest people any figure may describe (never below 5)."
    )


class SecretKeyRef(Spec):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_LABEL_PATTERN, description="Secret name.")
    key: str = Field("tls.crt", min_length=1, max_length=253, description="Key within the Secret.")


class IssuerRef(Spec):
    name: str = Field(min_length=1, max_length=253, description="cert-manager issuer name.")
    kind: Literal["Issuer", "ClusterIssuer"] = Field("ClusterIssuer", description="Issuer or ClusterIssuer.")
    group: str = Field("cert-manager.io", description="API group of the issuer.")


class Tls(Spec):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "has(self.secretName) != has(self.issuerRef)",
                "tls needs exactly one of secretName (an existing certificate) or issuerRef (cert-manager)",
            )
        )
    )

    secret_name: str | None = Field(
        None, max_length=253, pattern=DNS_LABEL_PATTERN, description="Existing TLS Secret in the tenant namespace."
    )
    issuer_ref: IssuerRef | None = Field(None, description="cert-manager issuer that obtains the certificate.")


class ResourceAmounts(Spec):
    cpu: Quantity | None = Field(None, description="CPU, e.g. 250m.")
    memory: Quantity | None = Field(None, description="Memory, e.g. 256Mi.")


class Resources(Spec):
    requests: ResourceAmounts = Field(
        default_factory=lambda: ResourceAmounts(cpu="100m", memory="128Mi"), description="Guaranteed resources."
    )
    limits: ResourceAmounts = Field(
        default_factory=lambda: ResourceAmounts(cpu="1", memory="512Mi"), description="Upper bounds."
    )


class Tracker(Spec):
    model_config = ConfigDict(json_schema_extra=cel(("!has(self.tls) || has(self.host)", "tls needs a host")))

    replicas: int = Field(2, ge=1, le=50, description="Tracker pods.")
    image: str | None = Field(
        None, max_length=512, description="Tracker image; the operator's configured default when unset."
    )
    host: str | None = Field(
        None, max_length=253, pattern=HOSTNAME_PATTERN, description="Public host name; an Ingress is made when set."
    )
    tls: Tls | None = Field(None, description="TLS for the Ingress.")
    resources: Resources = Field(default_factory=Resources, description="Tracker container resources.")


class Database(Spec):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "(has(self.engine) && self.engine == 'external') == has(self.externalSecretRef)",
                "externalSecretRef is required when engine is external, and only then",
            )
        )
    )

    engine: DatabaseEngine | None = Field(
        None,
        description="cnpg (CloudNativePG Cluster), statefulset (PostgreSQL StatefulSet) or external (your DSN). "
        "Unset: cnpg when the CloudNativePG CRD exists, else statefulset.",
    )
    storage: Quantity = Field("10Gi", description="Volume size of the tenant database.")
    external_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret holding the DSN of an external PostgreSQL (engine external)."
    )


class VaultKeys(Spec):
    address: str | None = Field(
        None, max_length=512, pattern=r"^https?://", description="Vault address; the operator's default when unset."
    )
    transit_mount: str = Field("transit", min_length=1, max_length=128, description="Transit secrets engine mount.")
    kubernetes_auth_mount: str = Field(
        "kubernetes", min_length=1, max_length=128, description="Kubernetes auth method mount."
    )


class Keys(Spec):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "(has(self.provider) && self.provider == 'vault') == has(self.vault)",
                "vault settings are required when provider is vault, and only then",
            )
        )
    )

    provider: KeyProviderName = Field(
        KeyProviderName.LOCAL, description="vault (Transit, recommended) or local (a key Secret of the operator)."
    )
    vault: VaultKeys | None = Field(None, description="Vault settings (provider vault).")


class Retention(Spec):
    interaction_days: int = Field(395, ge=1, le=3650, description="Days interaction data (opens, clicks) is kept.")
    message_days: int = Field(730, ge=1, le=3650, description="Days messages and recipient lists are kept.")
    schedule: str = Field(
        "17 3 * * *", max_length=64, pattern=CRON_PATTERN, description="Cron schedule of the retention job (UTC)."
    )


class PoliteTenantSpec(Spec):
    model_config = ConfigDict(
        json_schema_extra=cel(
            ("self.region == oldSelf.region", "region is immutable: data stays where the customer chose"),
            (
                "!(has(self.legalHold) && self.legalHold"
                " && has(self.deletionPolicy) && self.deletionPolicy == 'Delete')",
                "deletionPolicy Delete is refused while legalHold is true",
            ),
        )
    )

    display_name: str = Field(min_length=1, max_length=100, description="Customer name shown to people.")
    region: RegionName = Field(description="Data-residency region; immutable.")
    tracking: Tracking = Field(default_factory=Tracking, description="Tracking modes and thresholds.")
    tracker: Tracker = Field(default_factory=Tracker, description="The tenant's tracker Deployment.")
    database: Database = Field(default_factory=Database, description="The tenant's database.")
    keys: Keys = Field(default_factory=Keys, description="Where the tenant's encryption keys live.")
    retention: Retention = Field(default_factory=Retention, description="Retention of personal data.")
    legal_hold: bool = Field(False, description="Suspends every deletion, including the tenant's own.")
    deletion_policy: DeletionPolicy = Field(
        DeletionPolicy.RETAIN,
        description="Retain (default) keeps namespace, data and keys when the tenant is deleted; "
        "Delete removes the namespace and crypto-shreds the keys.",
    )


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)
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
        return f"polite-{self.metadata.name}"


# -- status (written by the operator only; never part of the spec) -----------------------------------
CONDITION_TYPES = (
    "Ready",
    "NamespaceReady",
    "KeysReady",
    "DatabaseReady",
    "TrackerReady",
    "RetentionReady",
    "Placement",
)
PHASES = ("Pending", "Provisioning", "Ready", "Degraded", "Deleting", "Failed")


class Condition(BaseModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    observed_generation: int | None = Field(None, alias="observedGeneration")
    last_transition_time: str | None = Field(None, alias="lastTransitionTime")


class KeysStatus(BaseModel):
    version: int | None = None
    rotated_at: str | None = Field(None, alias="rotatedAt")


class PoliteTenantStatus(BaseModel):
    observed_generation: int | None = Field(None, alias="observedGeneration")
    phase: Literal["Pending", "Provisioning", "Ready", "Degraded", "Deleting", "Failed"] | None = None
    conditions: list[Condition] = Field(default_factory=list)
    namespace: str | None = None
    endpoint: str | None = None
    keys: KeysStatus | None = None
