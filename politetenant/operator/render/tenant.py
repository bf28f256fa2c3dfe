"""``render_tenant``: a PoliteTenant and the operator configuration in, every child object out.

Pure and deterministic: the same tenant and configuration give byte-identical objects, so a resync of
an unchanged tenant writes nothing. Objects come from the Jinja2 templates next to this module
(``StrictUndefined``; every value is emitted through ``tojson``, so no spec value can inject YAML)
and are parsed back with a YAML safe loader. Each object carries the tenant's labels and
``polite.io/spec-hash``, the sha256 of its canonical JSON without that annotation, which the apply
step compares instead of diffing fields the API server defaults.

Secrets that need generated values are not rendered: ``RenderResult.secrets`` names them, and the
reconcile step creates them (see ``wiring``). Objects that hold tenant data carry
``polite.io/holds-data``: the apply step must never give them an ownerReference.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from politetenant.operator.model import names
from politetenant.operator.model.config import OperatorConfig
from politetenant.operator.model.tenant import DatabaseEngine, PoliteTenant
from politetenant.operator.render import skeleton
from politetenant.operator.render.database_roles import (
    ROLES_DATA,
    ROLES_DIR,
    ROLES_HASH_ANNOTATION,
    ROLES_SCRIPT_FILE,
    SIDECAR_RESOURCES,
    STATE_DIR,
    roles_env,
    roles_hash,
)
from politetenant.operator.render.exposure import ingresses, public_base_url
from politetenant.operator.render.hardening import (
    POSTGRES_UID,
    TRACKER_UID,
    container_security_context,
    parse_quantity,
    pod_requirements,
    pod_security_context,
    quota,
    resource_requirements,
    workers_for,
)
from politetenant.operator.render.network import network_values
from politetenant.operator.render.placement import node_affinity, spread, storage_class
from politetenant.operator.render.tracker_settings import settings_yaml as render_settings_yaml
from politetenant.operator.render.wiring import (
    Logins,
    OwnedSecret,
    RenderError,
    database_engine,
    database_logins,
    migrate_env,
    migrate_mounts,
    owned_secrets,
    retention_env,
    retention_mounts,
    retention_volumes,
    tracker_env,
    tracker_mounts,
    tracker_volumes,
    vault_address,
)

__all__ = ["OwnedSecret", "RenderError", "RenderResult", "render_tenant", "spec_hash"]

TEMPLATES = Path(__file__).with_name("templates")
APP_NAMES: dict[names.Component, str] = {
    "tenant": "politetenant",
    "tracker": "polite-tracker",
    "database": "postgresql",
    "retention": "polite-retention",
}
POD_SECURITY_LABELS = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
TEMPLATE_NAMES = {
    "tracker": names.TRACKER,
    "tracker_ops": names.TRACKER_OPS,
    "spool": names.SPOOL_VOLUME,
    "database_roles": names.DATABASE_ROLES_CONFIGMAP,
    "settings": names.SETTINGS_CONFIGMAP,
    "settings_file": names.SETTINGS_FILE,
    "retention": names.RETENTION,
    "database": names.DATABASE,
    "database_name": names.DATABASE_NAME,
    "database_credentials": names.DATABASE_CREDENTIALS_SECRET,
    "quota": names.QUOTA,
    "operator_secrets": names.OPERATOR_SECRETS_BINDING,
}
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class RenderResult:
    """The tenant's objects, or none and why; the Secrets the reconcile step must create; and the
    tracker's public base URL, as its settings file gives it (the status shows it as the endpoint)."""

    objects: list[dict[str, Any]]
    skipped_reason: str | None = None
    secrets: tuple[OwnedSecret, ...] = ()
    endpoint: str | None = None


def render_tenant(
    tenant: PoliteTenant,
    config: OperatorConfig,
    *,
    cnpg_available: bool = False,
    recorded_engine: DatabaseEngine | None = None,
) -> RenderResult:
    """Every child object of ``tenant``; nothing, with the reason, when its region is not served here."""
    region = tenant.spec.region
    if region not in config.served_regions:
        served = ", ".join(config.served_regions)
        return RenderResult([], skipped_reason=f"region {region} is not served by this operator (it serves {served})")
    if len(tenant.namespace) > 63:
        raise RenderError(f"metadata.name: at most 56 characters, so that namespace {tenant.namespace} fits in 63")
    engine = database_engine(tenant, cnpg_available, recorded_engine)
    values = _template_values(tenant, config, engine)
    objects = [obj for template in _templates(engine, values) for obj in _render(template, values)]
    return RenderResult(
        [_finish(obj, values["labels"]["tenant"]) for obj in objects],
        None,
        owned_secrets(tenant, config, engine),
        values["endpoint"],
    )


def _templates(engine: DatabaseEngine, values: dict[str, Any]) -> list[str]:
    """Template names in apply order: the fence (namespace, quota, policies) before any pod."""
    # The operator's access to the namespace's Secrets right after the namespace: the reconcile writes
    # Secrets before the other children.
    chosen = ["namespace", "operator-secrets", "resourcequota", "networkpolicies", "serviceaccount", "configmap"]
    if engine is not DatabaseEngine.EXTERNAL:
        chosen.append(f"database-{engine.value}")
    chosen += ["tracker-service", "tracker-statefulset", "tracker-pdb"]
    if values["ingresses"]:
        chosen.append("tracker-ingress")
    chosen.append("retention-cronjob")
    return [f"{name}.yaml.j2" for name in chosen]


# -- values handed to the templates ----------------------------------------------------------------------


def _template_values(tenant: PoliteTenant, config: OperatorConfig, engine: DatabaseEngine) -> dict[str, Any]:
    """Everything the templates print, computed here so templates hold only layout."""
    spec = tenant.spec
    labels = _labels(tenant)
    selectors = _selectors(tenant, engine)
    vault = vault_address(tenant, config)
    logins = database_logins(tenant, engine)
    exposed = ingresses(tenant, config)
    endpoint = public_base_url(tenant, config, exposed)
    settings_yaml = render_settings_yaml(tenant, endpoint)
    tracker = _tracker(
        tenant, config, logins=logins, vault=vault, settings_yaml=settings_yaml, selector=selectors["tracker"]
    )
    # purge logs in as the application role too: its migrate() issues no DDL when nothing is pending.
    retention = _retention(tenant, config, dsn=logins.app, vault=vault)
    database = _database(tenant, config, engine, labels["database"])
    return {
        "namespace": tenant.namespace,
        "names": TEMPLATE_NAMES,
        "labels": labels,
        "selectors": selectors,
        "namespace_labels": {**labels["tenant"], **POD_SECURITY_LABELS},
        "namespace_annotations": {
            names.DISPLAY_NAME_ANNOTATION: spec.display_name,
            names.HOLDS_DATA_ANNOTATION: "true",
            names.DATABASE_ENGINE_ANNOTATION: engine.value,
        },
        "data_annotations": {names.HOLDS_DATA_ANNOTATION: "true"},
        "fence_annotations": {names.GUARDS_DATA_ANNOTATION: "true"},
        "node_affinity": node_affinity(spec.region, config),
        "storage_class": storage_class(spec.region, config),
        "pull_policy": config.images.pull_policy,
        "container_security": container_security_context(),
        "settings_yaml": settings_yaml,
        "endpoint": endpoint,
        "ingresses": exposed,
        "tracker": tracker,
        "retention": retention,
        "database": database,
        "network": network_values(engine=engine, selectors=selectors, vault_address=vault, config=config),
        "quota": _quota(tenant, config, engine, tracker["resources"], retention["resources"], database),
        "operator": {
            "account": config.service_account,
            "namespace": config.namespace,
            "secrets_role": config.tenant_secrets_role,
        },
    }


def _tracker(
    tenant: PoliteTenant,
    config: OperatorConfig,
    *,
    logins: Logins,
    vault: str | None,
    settings_yaml: str,
    selector: dict[str, str],
) -> dict[str, Any]:
    resources = resource_requirements(tenant.spec.tracker.resources)
    return {
        "replicas": tenant.spec.tracker.replicas,
        "image": tenant.spec.tracker.image or config.images.tracker,
        "resources": resources,
        "env": tracker_env(tenant, config, dsn=logins.app, vault=vault, workers=workers_for(resources)),
        "migrate_env": migrate_env(dsn=logins.owner),
        "migrate_mounts": migrate_mounts(),
        "volumes": tracker_volumes(config, vault=vault),
        "mounts": tracker_mounts(config, vault=vault),
        "spool_storage": tenant.spec.tracker.spool_storage,
        "spread": spread(selector),
        "pod_security": pod_security_context(TRACKER_UID),
        # The tracker reads its settings at start: a changed file must roll the pods.
        "pod_annotations": {names.CONFIG_HASH_ANNOTATION: hashlib.sha256(settings_yaml.encode()).hexdigest()},
    }


def _retention(
    tenant: PoliteTenant, config: OperatorConfig, *, dsn: dict[str, str], vault: str | None
) -> dict[str, Any]:
    return {
        "schedule": tenant.spec.retention.schedule,
        "suspend": tenant.spec.legal_hold,
        "env": retention_env(tenant, dsn=dsn, vault=vault),
        "resources": resource_requirements(config.retention_resources),
        "volumes": retention_volumes(config, vault=vault),
        "mounts": retention_mounts(vault=vault),
        "pod_security": pod_security_context(TRACKER_UID),  # the tracker image, running purge
    }


def _labels(tenant: PoliteTenant) -> dict[str, dict[str, str]]:
    """Labels per component: the app.kubernetes.io/* set plus the tenant and its region."""
    return {
        component: {
            "app.kubernetes.io/name": app,
            "app.kubernetes.io/instance": tenant.name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "politetenant",
            "app.kubernetes.io/managed-by": "polite-operator",
            names.TENANT_LABEL: tenant.name,
            names.REGION_LABEL: tenant.spec.region,
        }
        for component, app in APP_NAMES.items()
    }


def _selectors(tenant: PoliteTenant, engine: DatabaseEngine) -> dict[str, dict[str, str]]:
    """Pod selectors (immutable on StatefulSets, so only labels that never change)."""
    selectors = {
        component: {"app.kubernetes.io/instance": tenant.name, "app.kubernetes.io/component": component}
        for component in ("tracker", "retention", "database")
    }
    if engine is DatabaseEngine.CNPG:
        selectors["database"] = {"cnpg.io/cluster": names.DATABASE}  # the label CNPG guarantees on its pods
    return selectors


def _database(
    tenant: PoliteTenant, config: OperatorConfig, engine: DatabaseEngine, labels: dict[str, str]
) -> dict[str, Any]:
    cnpg = engine is DatabaseEngine.CNPG
    roles = {
        "data": ROLES_DATA,
        "dir": ROLES_DIR,
        "script": f"{ROLES_DIR}/{ROLES_SCRIPT_FILE}",
        "state_dir": STATE_DIR,
        "marker": f"{STATE_DIR}/applied",
        "env": roles_env(
            names.DATABASE_CREDENTIALS_SECRET, names.DATABASE_OWNER_SECRET, names.DATABASE_APP_SECRET,
            names.DATABASE_NAME,
        ),
        "resources": SIDECAR_RESOURCES,
        "pod_annotations": {ROLES_HASH_ANNOTATION: roles_hash()},
    }  # fmt: skip
    return {
        "roles": roles,
        "storage": tenant.spec.database.storage,
        "resources": resource_requirements(config.database.resources),
        "port": names.DATABASE_PORT,
        "instances": config.database.cnpg_instances,
        "image": config.images.cnpg_postgres if cnpg else config.images.postgres,
        "pod_security": pod_security_context(POSTGRES_UID),
        "inherited_labels": {key: value for key, value in labels.items() if key.startswith(names.LABEL_PREFIX)},
    }


def _quota(
    tenant: PoliteTenant,
    config: OperatorConfig,
    engine: DatabaseEngine,
    tracker: dict[str, dict[str, str]],
    retention: dict[str, dict[str, str]],
    database: dict[str, Any],
) -> dict[str, str]:
    """Room for every pod rendered, one more tracker pod, and every volume (spools and the database).

    The tracker StatefulSet does not surge, but moving a tenant from the Deployment of earlier
    versions runs both for a moment: the extra pod lets the first new pod start while the old ones
    still serve.
    """
    replicas = tenant.spec.tracker.replicas
    pods = [(replicas + 1, tracker), (1, retention)]
    volumes = replicas
    storage = replicas * parse_quantity(tenant.spec.tracker.spool_storage)
    if engine is DatabaseEngine.STATEFULSET:
        pods.append((1, pod_requirements(database["resources"], database["roles"]["resources"])))
        volumes += 1
        storage += parse_quantity(tenant.spec.database.storage)
    elif engine is DatabaseEngine.CNPG:  # CNPG runs an initdb or join Job beside its instances
        instances = config.database.cnpg_instances + 1
        pods.append((instances, database["resources"]))
        volumes += instances
        storage += instances * parse_quantity(tenant.spec.database.storage)
    return quota(pods, volumes, storage)


# -- templates to objects -------------------------------------------------------------------------------


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    if 0xD800 <= code <= 0xDFFF:
        raise RenderError(f"a spec string holds an unpaired surrogate (\\u{code:04x}), which is not Unicode text")
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _yaml_safe_json(obj: Any, **kwargs: Any) -> str:
    """JSON whose strings hold only printable ASCII, so YAML reads back exactly the same value.

    YAML refuses some raw characters and reads a JSON surrogate pair as two characters, so every
    character outside printable ASCII is written as a YAML escape (``\\uXXXX`` or ``\\UXXXXXXXX``).
    """
    return _NOT_PRINTABLE_ASCII.sub(_escape, json.dumps(obj, ensure_ascii=False, **kwargs))


@functools.cache
def _environment(layout: bool = False) -> jinja2.Environment:
    """The templates' environment; ``layout``: the one whose ``tojson`` prints placeholders (``skeleton``)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - YAML, not HTML: every value goes through tojson instead
        keep_trailing_newline=True,
    )
    env.policies["json.dumps_function"] = _yaml_safe_json
    env.policies["json.dumps_kwargs"] = {"sort_keys": True}
    if layout:
        env.filters["tojson"] = skeleton.slot_filter(_yaml_safe_json)
    return env


def _render(template: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    docs = skeleton.render(lambda: _environment(layout=True).get_template(template).render(values))
    if docs is not None:
        return docs
    return _render_yaml(template, values)


def _render_yaml(template: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The template's text parsed as YAML: what ``skeleton`` gives faster, and its fallback."""
    text = _environment().get_template(template).render(values)
    return [doc for doc in yaml.load_all(text, Loader=skeleton.SAFE_LOADER) if doc is not None]


def spec_hash(obj: dict[str, Any]) -> str:
    """sha256 of the object's canonical JSON, leaving out the ``polite.io/spec-hash`` annotation itself."""
    metadata = dict(obj.get("metadata", {}))
    annotations = {k: v for k, v in metadata.get("annotations", {}).items() if k != names.SPEC_HASH_ANNOTATION}
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    canonical = json.dumps({**obj, "metadata": metadata}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _finish(obj: dict[str, Any], tenant_labels: dict[str, str]) -> dict[str, Any]:
    """Make sure the object carries the tenant's common labels, then stamp its spec hash."""
    metadata = obj["metadata"]
    labels = metadata.setdefault("labels", {})
    for key, value in tenant_labels.items():
        if key not in ("app.kubernetes.io/name", "app.kubernetes.io/component"):
            labels.setdefault(key, value)
    metadata["annotations"] = {**metadata.get("annotations", {}), names.SPEC_HASH_ANNOTATION: spec_hash(obj)}
    return obj
