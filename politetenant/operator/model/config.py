"""The operator's own configuration: which cloud, which regions, which images, and network facts.

Read once at start from a YAML file (``--config``, else the file named by ``POLITE_OPERATOR_CONFIG``)
with ``POLITE_OPERATOR_*`` environment variables on top; ``__`` reaches into a nested setting
(``POLITE_OPERATOR_VAULT__ADDRESS``), lists are comma separated and label maps are ``key=value``
pairs. The built-in defaults serve every region on AWS, so ``polite-operator render`` works with no
file at all. Keys in the file are snake_case, like the tracker's settings.
"""

from __future__ import annotations

import ipaddress
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from politetenant.crypto.vault import DEFAULT_TIMEOUT, KUBERNETES_SA_TOKEN, MOUNT_PATTERN
from politetenant.operator.model.patterns import DNS_LABEL_PATTERN
from politetenant.operator.model.tenant import ResourceAmounts, Resources
from politetenant.regions import Cloud, RegionName

ENV_PREFIX = "POLITE_OPERATOR_"
CONFIG_FILE_ENV = "POLITE_OPERATOR_CONFIG"
DEFAULT_TRACKER_IMAGE = "politetenant/polite-tracker:0.1.0"
# The Debian image of PostgreSQL 17: its postgres user is uid 999, its data lives under
# /var/lib/postgresql/data (PostgreSQL 18 images moved it, so a major upgrade is a deliberate step).
DEFAULT_POSTGRES_IMAGE = "docker.io/library/postgres:17.5-bookworm"

VAULT_ADDRESS_PATTERN = r"^https?://[^\s/?#]+/?$"

LabelMap = dict[Annotated[str, Field(min_length=1, max_length=317)], Annotated[str, Field(max_length=63)]]


class ConfigError(ValueError):
    """A configuration that cannot be used; one line per problem, naming the setting."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_cidrs(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a CIDR network ({exc})") from None
    return values


class Images(_Config):
    tracker: str = Field(DEFAULT_TRACKER_IMAGE, min_length=1, description="Tracker image of tenants that name none.")
    postgres: str = Field(DEFAULT_POSTGRES_IMAGE, min_length=1, description="PostgreSQL image of engine statefulset.")
    cnpg_postgres: str | None = Field(None, min_length=1, description="imageName of CNPG Clusters; unset: CNPG's.")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class IssuerConfig(_Config):
    name: str = Field(min_length=1, max_length=253)
    kind: Literal["Issuer", "ClusterIssuer"] = "ClusterIssuer"
    group: str = "cert-manager.io"


class VaultConfig(_Config):
    address: str | None = Field(None, pattern=VAULT_ADDRESS_PATTERN, description="Default Vault address.")
    cidrs: list[str] = Field(
        default_factory=list,
        description="Where Vault answers (NetworkPolicies cannot name hosts).",
    )
    namespace_selector: LabelMap | None = Field(
        None, description="Labels of the namespace of an in-cluster Vault. Neither this nor cidrs: any address."
    )
    token_audience: str = Field("vault", min_length=1, description="Audience of the tracker's projected token.")
    # How the operator itself signs in, for tenants with provider vault: a token file (written by a
    # Vault agent, or a mounted Secret), or Kubernetes auth with its ServiceAccount token. Neither:
    # vault tenants show KeysReady False (VaultRefused) saying so. Never a token value: this file is a
    # ConfigMap. The identity needs operator_policy() of politetenant.operator.keys.vault, no more.
    token_file: str | None = Field(
        None, min_length=1, description="File holding the operator's Vault token; re-read every minute."
    )
    kubernetes_role: str | None = Field(
        None, min_length=1, max_length=128, description="Kubernetes-auth role the operator logs in as, with jwt_file."
    )
    jwt_file: str = Field(
        KUBERNETES_SA_TOKEN, min_length=1, description="ServiceAccount token for kubernetes_role (default: the pod's)."
    )
    auth_mount: str = Field(
        "kubernetes",
        min_length=1,
        max_length=128,
        pattern=MOUNT_PATTERN,
        description="Kubernetes auth mount the operator logs in at.",
    )
    allowed_addresses: list[Annotated[str, Field(pattern=VAULT_ADDRESS_PATTERN)]] = Field(
        default_factory=list,
        description="Other Vaults tenants may name in spec.keys.vault.address; the operator signs in to no other.",
    )
    ca_cert: str | None = Field(
        None, min_length=1, description="PEM CA bundle of a Vault behind a private CA; unset: the system's."
    )
    timeout_seconds: float = Field(DEFAULT_TIMEOUT, gt=0, le=120, description="Seconds per Vault request.")

    _cidrs = field_validator("cidrs")(_check_cidrs)

    @model_validator(mode="after")
    def _one_sign_in(self) -> Self:
        if self.token_file and self.kubernetes_role:
            raise ValueError("set token_file or kubernetes_role, not both")
        return self


# Volume sources Pod Security "restricted" admits (image: Kubernetes 1.33 and later); tenant namespaces
# enforce it, so any other source would leave the tracker pods uncreated.
GEOIP_VOLUME_SOURCES = (
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim", "projected",
    "secret",
)  # fmt: skip
GEOIP_FILE_PATTERN = r"^[A-Za-z0-9_][-.A-Za-z0-9_]*(/[A-Za-z0-9_][-.A-Za-z0-9_]*)*$"


class GeoipConfig(_Config):
    """A MaxMind-format City database for every tenant's tracker, from any volume the cluster has."""

    volume: dict[str, dict[str, Any]] = Field(
        description="A Kubernetes volume source, verbatim and without a name, e.g. "
        "{persistentVolumeClaim: {claimName: geoip, readOnly: true}}; mounted read-only."
    )
    file: str = Field(
        "GeoLite2-City.mmdb", max_length=253, pattern=GEOIP_FILE_PATTERN, description="The database, inside the volume."
    )

    @field_validator("volume")
    @classmethod
    def _one_admitted_source(cls, volume: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if len(volume) != 1:
            found = ", ".join(sorted(volume)) or "none"
            raise ValueError(f"needs exactly one volume source (found: {found})")
        (source,) = volume
        if source not in GEOIP_VOLUME_SOURCES:
            raise ValueError(
                f"{source} is not a volume source Pod Security restricted admits in tenant namespaces; "
                f"use one of {', '.join(GEOIP_VOLUME_SOURCES)}"
            )
        return volume


class DnsConfig(_Config):
    namespace: str = Field("kube-system", pattern=DNS_LABEL_PATTERN)
    pod_labels: LabelMap = Field(default_factory=lambda: {"k8s-app": "kube-dns"})


class DatabaseConfig(_Config):
    cnpg_instances: int = Field(2, ge=1, le=9, description="PostgreSQL instances of a CNPG Cluster.")
    resources: Resources = Field(
        default_factory=lambda: Resources(
            requests=ResourceAmounts(cpu="250m", memory="512Mi"), limits=ResourceAmounts(cpu="2", memory="2Gi")
        )
    )


class OperatorConfig(_Config):
    """Everything rendering needs to know about the cluster it renders for."""

    cloud: Cloud = Field("aws", description="Which column of the region catalogue this cluster's nodes use.")
    served_regions: tuple[RegionName, ...] = Field(default_factory=lambda: get_args(RegionName), min_length=1)
    storage_classes: dict[RegionName, Annotated[str, Field(pattern=DNS_LABEL_PATTERN)]] = Field(
        default_factory=dict, description="Storage class per region, instead of the catalogue's."
    )
    images: Images = Field(default_factory=Images)
    ingress_class: str | None = Field(None, pattern=DNS_LABEL_PATTERN, description="ingressClassName; unset: none.")
    ingress_namespace_selector: LabelMap | None = Field(
        None, description="Labels of the ingress controller's namespace; unset: any namespace may reach trackers."
    )
    metrics_namespace_selector: LabelMap | None = Field(
        None, description="Labels of the namespace that scrapes /metrics; unset: no extra allowance."
    )
    api_source_range_annotation: str = Field(
        "nginx.ingress.kubernetes.io/whitelist-source-range",
        min_length=1,
        max_length=317,
        description="Ingress annotation the ingress controller reads allowed client networks from (API hosts).",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of the ingress controller's pods: X-Forwarded-For is believed from them only.",
    )
    geoip: GeoipConfig | None = Field(
        None, description="GeoIP City database mounted into every tracker; unset: places are unknown."
    )
    cert_manager_issuer: IssuerConfig | None = Field(None, description="Issuer for hosts whose tenant names no TLS.")
    vault: VaultConfig = Field(default_factory=VaultConfig)
    external_db_cidrs: list[str] = Field(
        default_factory=list, description="Where external databases live; empty: any address on external_db_port."
    )
    external_db_port: int = Field(5432, ge=1, le=65535)
    api_server_cidrs: list[str] = Field(
        default_factory=list,
        description="Kubernetes API endpoints CNPG instances talk to; empty: any address on 443 and 6443.",
    )
    cnpg_namespace: str = Field("cnpg-system", pattern=DNS_LABEL_PATTERN, description="Namespace of CNPG's operator.")
    dns: DnsConfig = Field(default_factory=DnsConfig)
    cluster_domain: str = Field("cluster.local", min_length=1, max_length=253)
    namespace: str = Field(
        "politetenant-system", pattern=DNS_LABEL_PATTERN, description="The operator's namespace (local key Secrets)."
    )
    service_account: str = Field(
        "polite-operator",
        pattern=DNS_LABEL_PATTERN,
        description="The operator's ServiceAccount, bound in each tenant namespace to read and write its Secrets.",
    )
    tenant_secrets_role: str = Field(
        "polite-operator-tenant-secrets",
        pattern=DNS_LABEL_PATTERN,
        description="The ClusterRole (Secrets only) the operator binds to itself in each tenant namespace.",
    )
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    retention_resources: Resources = Field(
        default_factory=lambda: Resources(
            requests=ResourceAmounts(cpu="50m", memory="128Mi"), limits=ResourceAmounts(cpu="500m", memory="256Mi")
        )
    )

    _cidrs = field_validator("trusted_proxies", "external_db_cidrs", "api_server_cidrs")(_check_cidrs)

    @field_validator("served_regions")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("lists a region twice")
        return value


# -- loading -------------------------------------------------------------------------------------------


def _field_type(annotation: Any) -> Any:
    """The type inside ``X | None``, for deciding how an environment string is read."""
    if get_origin(annotation) in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return _field_type(inner[0])
    return annotation


def _is_mapping(tp: Any) -> bool:
    return get_origin(tp) is dict or (isinstance(tp, type) and issubclass(tp, BaseModel))


def _env_value(raw: str, tp: Any, optional: bool) -> Any:
    """An environment string as the field wants it: lists by commas, mappings as key=value pairs."""
    raw = raw.strip()
    if get_origin(tp) in (list, tuple):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if _is_mapping(tp):
        if not raw:
            return None if optional else {}
        if raw.startswith("{"):
            return yaml.safe_load(raw)
        pairs = [part.split("=", 1) for part in raw.split(",") if part.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("expected key=value pairs separated by commas")
        return {key.strip(): value.strip() for key, value in pairs}
    if not raw and optional:
        return None
    return raw


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """Nested values from ``POLITE_OPERATOR_*`` and, per setting path, the variable that set it."""
    data: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_FILE_ENV:
            continue
        path = tuple(var[len(ENV_PREFIX) :].lower().split("__"))
        model: type[BaseModel] = OperatorConfig
        for depth, name in enumerate(path):
            field = model.model_fields.get(name)
            if field is None:
                raise ConfigError(f"{var}: {'.'.join(path[: depth + 1])} is not an operator setting")
            tp = _field_type(field.annotation)
            if depth < len(path) - 1:
                if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
                    raise ConfigError(f"{var}: {'.'.join(path[: depth + 1])} has no nested settings")
                model = tp
                continue
            try:
                value = _env_value(environ[var], tp, optional=tp is not field.annotation)
            except (ValueError, yaml.YAMLError) as exc:
                raise ConfigError(f"{var}: {exc}") from None
        node = data
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
        sources[path] = var
    return data, sources


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _read_file(path: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of operator settings")
    return loaded


def _describe(exc: ValidationError, file_source: str, env_sources: Mapping[tuple[str, ...], str]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(str(part) for part in err["loc"])
        var = next((env_sources[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in env_sources), None)
        dotted = ".".join(loc) or "(top level)"
        lines.append(f"{var}: {dotted}: {err['msg']}" if var else f"{file_source}: {dotted}: {err['msg']}")
    return "\n".join(lines)


def load_operator_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> OperatorConfig:
    """Read the YAML file (``path``, else ``POLITE_OPERATOR_CONFIG``, else none), overlay the environment."""
    file_path = os.fspath(path) if path else environ.get(CONFIG_FILE_ENV) or None
    data = _read_file(file_path) if file_path else {}
    overrides, env_sources = _env_overrides(environ)
    try:
        return OperatorConfig.model_validate(_merge(data, overrides))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file_path or "operator configuration", env_sources)) from None
