"""Names of a tenant's children, labels and annotations: the vocabulary render, apply and keys share."""

from __future__ import annotations

from typing import Literal

Component = Literal["tenant", "tracker", "database", "retention"]

# Objects in the tenant namespace.
TRACKER = "tracker"  # ServiceAccount, StatefulSet, Service, PodDisruptionBudget, Ingress (public host)
TRACKER_API = "tracker-api"  # Ingress of the API host
TRACKER_OPS = "tracker-ops"  # headless Service of the ops port, the StatefulSet's governing Service
SPOOL_VOLUME = "spool"  # the tracker StatefulSet's volumeClaimTemplate: PVCs spool-tracker-<n>
SETTINGS_CONFIGMAP = "tracker-settings"
SETTINGS_FILE = "settings.yaml"
RETENTION = "retention"  # CronJob
DATABASE = "postgres"  # CNPG Cluster, or StatefulSet + headless Service
DATABASE_NAME = "polite"  # the PostgreSQL database (and its owner role)
DATABASE_PORT = 5432
DATABASE_ROLES_CONFIGMAP = f"{DATABASE}-roles"  # the SQL that makes the owner and app roles
# PostgreSQL roles of a StatefulSet database: the owner runs migrations; the tracker and purge log in
# as the app role, which may read and write rows but not change the schema or make roles.
OWNER_ROLE = "polite_owner"
APP_ROLE = "polite_app"
QUOTA = "tenant-quota"
OPERATOR_SECRETS_BINDING = "polite-operator-secrets"  # RoleBinding: the operator's access to the Secrets here
INGRESS_TLS_SECRET = "tracker-tls"  # written by cert-manager when an issuer is used
API_INGRESS_TLS_SECRET = "tracker-api-tls"  # the same, for the API host

# Secrets the reconcile step creates with generated values (render names them, never fills them).
KEYS_SECRET = "tracker-keys"
API_TOKENS_SECRET = "tracker-api-tokens"
DATABASE_CREDENTIALS_SECRET = f"{DATABASE}-credentials"  # engine statefulset: the image's superuser
DATABASE_OWNER_SECRET = f"{DATABASE}-owner-credentials"  # engine statefulset: OWNER_ROLE
DATABASE_APP_SECRET = f"{DATABASE}-app-credentials"  # engine statefulset: APP_ROLE
CNPG_APP_SECRET = f"{DATABASE}-app"  # written by CloudNativePG itself (bootstrap initdb)
DSN_KEY = "uri"  # the key holding postgresql://user:password@host:port/db in both of the above

TRACKER_PORT = 8080  # "http": public routes and the API
OPS_PORT = 9090  # "ops": /healthz, /readyz, /metrics; no Ingress routes it
LABEL_PREFIX = "polite.io/"
TENANT_LABEL = "polite.io/tenant"
REGION_LABEL = "polite.io/region"
SPEC_HASH_ANNOTATION = "polite.io/spec-hash"
CONFIG_HASH_ANNOTATION = "polite.io/config-hash"
DISPLAY_NAME_ANNOTATION = "polite.io/display-name"
# On the tenant: an SRE's request to rotate its keys; any new value asks once (kubectl polite rotate-keys).
ROTATE_ANNOTATION = "polite.io/rotate-keys"
# On objects whose deletion loses tenant data or keys (the namespace, the database): the apply step
# never gives them an ownerReference, so deleting the PoliteTenant removes them only when its
# deletionPolicy says Delete, and never during a legal hold.
HOLDS_DATA_ANNOTATION = "polite.io/holds-data"
# On the namespace: the database engine resolved when the tenant was first provisioned. With
# status.database.engine it is the record the engine is read from ever after (the namespace outlives
# a tenant deleted with Retain, so a tenant of the same name adopting it keeps its database).
DATABASE_ENGINE_ANNOTATION = "polite.io/database-engine"
# On the fence around that data (NetworkPolicies, the quota): no ownerReference either, so a tenant
# deleted with deletionPolicy Retain leaves its retained database fenced as before, not open.
GUARDS_DATA_ANNOTATION = "polite.io/guards-data"


def vault_name(tenant: str) -> str:
    """Name of the tenant's Vault Transit key, policy and Kubernetes-auth role."""
    return f"polite-{tenant}"
