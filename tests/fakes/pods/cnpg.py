"""CloudNativePG, for what a tenant's tracker needs of a ``Cluster`` (postgresql.cnpg.io/v1).

From CloudNativePG's documentation (https://cloudnative-pg.io/documentation/current/ : "Bootstrap",
"Connecting from an application", "Service management", "Replication") and its Cluster CRD:

- Secret ``<cluster>-app`` (type kubernetes.io/basic-auth), created once: ``username``/``user`` (the
  ``bootstrap.initdb.owner``, default ``app``), ``password``, ``dbname`` (``bootstrap.initdb.database``,
  default ``app``), ``host`` (``<cluster>-rw``), ``port`` (5432), ``uri``
  (``postgresql://user:password@<cluster>-rw.<namespace>:5432/dbname``), ``jdbc-uri``, ``fqdn-uri``,
  ``pgpass``. The owner is an ordinary role owning the database, not a superuser; the superuser
  ``postgres`` has no password unless ``enableSuperuserAccess`` (then Secret ``<cluster>-superuser``).
- Services ``<cluster>-rw`` (the primary), ``<cluster>-ro`` (replicas), ``<cluster>-r`` (any instance).
- ``instances`` pods ``<cluster>-<n>`` from 1, each with its PersistentVolumeClaim ``<cluster>-<n>``
  (``storage.size``); instance 1 is the primary, initialised by the postgres image's entrypoint plus a
  bootstrap script (the owner role and database, and a ``streaming_replica`` role); each further instance
  is created once the one before is Ready and starts as a streaming standby of ``<cluster>-rw``
  (``pg_basebackup -R``), labels ``cnpg.io/cluster``, ``cnpg.io/instanceName``, ``cnpg.io/instanceRole``
  (and ``role``) primary or replica.
- Status: instances, readyInstances, phase, currentPrimary, targetPrimary, writeService,
  readService, condition Ready (ClusterIsReady / ClusterIsNotReady).

Not emulated: failover and switchover, backups, the instance manager's own probes and metrics, pooler,
managed roles, ``imageName`` other than what the runner's image table maps.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from tests.fakes.pods.api import CNPG_CLUSTERS, PODS, PVCS, SECRETS, SERVICES, Body, meta
from tests.fakes.pods.cluster import Cluster
from tests.fakes.pods.deployments import controller_ref, owned_by, write_status
from tests.fakes.pods.pod_status import is_ready, now

DEFAULT_IMAGE = "ghcr.io/cloudnative-pg/postgresql:17"
PORT = 5432
BOOTSTRAP_ANNOTATION = "pod-runner.polite.io/cnpg-bootstrap.sh"
# Run by the entrypoint as an init script of the primary (its environment holds the app password).
BOOTSTRAP = """\
set -e
psql -v ON_ERROR_STOP=1 --username postgres --dbname postgres --no-psqlrc \\
  --set owner="$CNPG_OWNER" --set password="$CNPG_PASSWORD" --set db="$CNPG_DATABASE" <<'EOSQL'
CREATE ROLE :"owner" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"owner";
CREATE ROLE streaming_replica REPLICATION LOGIN PASSWORD :'password';
EOSQL
if [ "$CNPG_SUPERUSER_ACCESS" != "true" ]; then
  psql -v ON_ERROR_STOP=1 --username postgres --dbname postgres --no-psqlrc -c 'ALTER ROLE postgres PASSWORD NULL'
fi
printf 'host replication streaming_replica all scram-sha-256\\n' >> "$PGDATA/pg_hba.conf"
"""
# The instance's command: a standby copies the primary first, then PostgreSQL starts as the image does.
INSTANCE = """\
set -e
if [ -n "$CNPG_PRIMARY_HOST" ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && chmod 700 "$PGDATA"
  PGPASSWORD="$CNPG_PASSWORD" pg_basebackup -h "$CNPG_PRIMARY_HOST" -p 5432 -U streaming_replica \\
    -D "$PGDATA" -R -X stream
  chmod 700 "$PGDATA"
fi
exec docker-entrypoint.sh postgres
"""


def _settings(cluster: Mapping[str, Any]) -> tuple[str, str]:
    initdb = ((cluster.get("spec") or {}).get("bootstrap") or {}).get("initdb") or {}
    database = str(initdb.get("database") or "app")
    return str(initdb.get("owner") or database), database


def app_secret(cluster: Mapping[str, Any]) -> Body:
    info = meta(cluster)
    name, namespace = str(info.get("name")), str(info.get("namespace"))
    owner, database = _settings(cluster)
    password = secrets.token_urlsafe(32)
    host = f"{name}-rw"
    user, pw, db = quote(owner, safe=""), quote(password, safe=""), quote(database, safe="")
    data = {
        "username": owner,
        "user": owner,
        "password": password,
        "dbname": database,
        "host": host,
        "port": str(PORT),
        "uri": f"postgresql://{user}:{pw}@{host}.{namespace}:{PORT}/{db}",
        "jdbc-uri": f"jdbc:postgresql://{host}.{namespace}:{PORT}/{db}?password={pw}&user={user}",
        "fqdn-uri": f"postgresql://{user}:{pw}@{host}.{namespace}.svc.cluster.local:{PORT}/{db}",
        "pgpass": f"{host}:{PORT}:{database}:{owner}:{password}\n",
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/basic-auth",
        "metadata": {
            "name": f"{name}-app",
            "namespace": namespace,
            "labels": {"cnpg.io/cluster": name, "cnpg.io/reload": "true"},
            "ownerReferences": [controller_ref(cluster)],
        },
        "data": _encoded(data),
    }


def service(cluster: Mapping[str, Any], suffix: str, role: str | None) -> Body:
    info = meta(cluster)
    name = str(info.get("name"))
    selector = {"cnpg.io/cluster": name, **({"cnpg.io/instanceRole": role} if role else {})}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"{name}-{suffix}",
            "namespace": info.get("namespace"),
            "labels": {"cnpg.io/cluster": name},
            "ownerReferences": [controller_ref(cluster)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "postgres", "port": PORT, "targetPort": PORT, "protocol": "TCP"}],
        },
    }


def instance_pod(cluster: Mapping[str, Any], number: int) -> Body:
    info, spec = meta(cluster), cluster.get("spec") or {}
    name = str(info.get("name"))
    pod_name = f"{name}-{number}"
    owner, database = _settings(cluster)
    role = "primary" if number == 1 else "replica"
    app = f"{name}-app"
    superuser = f"{name}-superuser" if spec.get("enableSuperuserAccess") else app
    inherited = (spec.get("inheritedMetadata") or {}).get("labels") or {}
    env = [
        {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
        {"name": "POSTGRES_USER", "value": "postgres"},
        {"name": "POSTGRES_DB", "value": "postgres"},
        {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": superuser, "key": "password"}}},
        {"name": "CNPG_PASSWORD", "valueFrom": {"secretKeyRef": {"name": app, "key": "password"}}},
        {"name": "CNPG_OWNER", "value": owner},
        {"name": "CNPG_DATABASE", "value": database},
        {"name": "CNPG_SUPERUSER_ACCESS", "value": "true" if spec.get("enableSuperuserAccess") else "false"},
    ]
    if number > 1:
        env.append({"name": "CNPG_PRIMARY_HOST", "value": f"{name}-rw"})
    node_affinity = (spec.get("affinity") or {}).get("nodeAffinity")
    probe = {"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-p", str(PORT)]}, "periodSeconds": 5}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": info.get("namespace"),
            "labels": {
                **inherited,
                "cnpg.io/cluster": name,
                "cnpg.io/instanceName": pod_name,
                "cnpg.io/instanceRole": role,
                "cnpg.io/podRole": "instance",
                "role": role,
            },
            "annotations": {BOOTSTRAP_ANNOTATION: BOOTSTRAP},
            "ownerReferences": [controller_ref(cluster)],
        },
        "spec": {
            "hostname": pod_name,
            **({"affinity": {"nodeAffinity": node_affinity}} if node_affinity else {}),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999, "runAsNonRoot": True},
            "containers": [
                {
                    "name": "postgres",
                    "image": str(spec.get("imageName") or DEFAULT_IMAGE),
                    "command": ["bash", "-c", INSTANCE],
                    "env": env,
                    "ports": [{"name": "postgresql", "containerPort": PORT, "protocol": "TCP"}],
                    "readinessProbe": probe,
                    "resources": spec.get("resources") or {},
                    "volumeMounts": [
                        {"name": "pgdata", "mountPath": "/var/lib/postgresql/data"},
                        {"name": "run", "mountPath": "/var/run/postgresql"},
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "bootstrap", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True},
                    ],
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
                }
            ],
            "volumes": [
                {"name": "pgdata", "persistentVolumeClaim": {"claimName": pod_name}},
                {"name": "run", "emptyDir": {}},
                {"name": "tmp", "emptyDir": {}},
                {
                    "name": "bootstrap",
                    "downwardAPI": {
                        "items": (
                            [
                                {
                                    "path": "cnpg-bootstrap.sh",
                                    "fieldRef": {"fieldPath": f"metadata.annotations['{BOOTSTRAP_ANNOTATION}']"},
                                }
                            ]
                            if number == 1
                            else []
                        )
                    },
                },
            ],
        },
    }


def instance_claim(cluster: Mapping[str, Any], number: int) -> Body:
    info, spec = meta(cluster), cluster.get("spec") or {}
    storage = spec.get("storage") or {}
    name = str(info.get("name"))
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": f"{name}-{number}",
            "namespace": info.get("namespace"),
            "labels": {
                "cnpg.io/cluster": name,
                "cnpg.io/instanceName": f"{name}-{number}",
                "cnpg.io/pvcRole": "PG_DATA",
            },
            "ownerReferences": [controller_ref(cluster)],
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": storage.get("size", "1Gi")}},
            **({"storageClassName": storage["storageClass"]} if storage.get("storageClass") else {}),
        },
    }


class CloudNativePG:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def sync(self) -> None:
        c = self.cluster
        if CNPG_CLUSTERS not in c.caches:
            return
        for cnpg in list(c.cache(CNPG_CLUSTERS).items()):
            info = meta(cnpg)
            namespace, name = str(info.get("namespace")), str(info.get("name"))
            if not c.managed(namespace) or info.get("deletionTimestamp"):
                continue
            await self._ensure(SECRETS, namespace, f"{name}-app", lambda cnpg=cnpg: app_secret(cnpg))
            for suffix, role in (("rw", "primary"), ("ro", "replica"), ("r", None)):
                await self._ensure(
                    SERVICES, namespace, f"{name}-{suffix}", lambda s=suffix, r=role, cnpg=cnpg: service(cnpg, s, r)
                )
            if (cnpg.get("spec") or {}).get("enableSuperuserAccess"):
                await self._ensure(SECRETS, namespace, f"{name}-superuser", lambda cnpg=cnpg: superuser_secret(cnpg))
            wanted = int((cnpg.get("spec") or {}).get("instances", 1))
            pods = {str(meta(p).get("name")): p for p in c.cache(PODS).items(namespace) if owned_by(p, cnpg)}
            for number in range(1, wanted + 1):
                pod = pods.get(f"{name}-{number}")
                if pod is None:
                    await self._ensure(
                        PVCS, namespace, f"{name}-{number}", lambda n=number, cnpg=cnpg: instance_claim(cnpg, n)
                    )
                    await c.write(PODS, c.api.create(PODS.path(namespace), instance_pod(cnpg, number)))
                    break
                if not is_ready(pod):
                    break
            ready = sum(is_ready(p) for p in pods.values())
            healthy = ready >= wanted
            status = {
                "instances": len(pods),
                "readyInstances": ready,
                "phase": "Cluster in healthy state"
                if healthy
                else "Setting up primary"
                if not ready
                else "Creating a new replica",
                "currentPrimary": f"{name}-1",
                "targetPrimary": f"{name}-1",
                "writeService": f"{name}-rw",
                "readService": f"{name}-r",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if healthy else "False",
                        "reason": "ClusterIsReady" if healthy else "ClusterIsNotReady",
                        "message": "Cluster is Ready" if healthy else "Cluster Is Not Ready",
                        "lastTransitionTime": _keep_time(cnpg, healthy),
                    }
                ],
            }
            await write_status(c, CNPG_CLUSTERS, cnpg, status)

    async def _ensure(self, kind: Any, namespace: str, name: str, build: Any) -> None:
        if self.cluster.cache(kind).get(namespace, name) is None:
            await self.cluster.write(kind, self.cluster.api.create(kind.path(namespace), build()))


def superuser_secret(cluster: Mapping[str, Any]) -> Body:
    body = app_secret(cluster)
    name = str(meta(cluster).get("name"))
    body["metadata"]["name"] = f"{name}-superuser"
    body["data"] = _encoded({"username": "postgres", "user": "postgres", "password": secrets.token_urlsafe(32)})
    return body


def _encoded(values: Mapping[str, str]) -> dict[str, str]:
    return {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}


def _keep_time(cluster: Mapping[str, Any], healthy: bool) -> str:
    for condition in (cluster.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and (condition.get("status") == "True") == healthy:
            return str(condition.get("lastTransitionTime"))
    return now()
