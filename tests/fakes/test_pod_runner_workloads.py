"""The pod runner (``tests/fakes/pod_runner.py``): what the workload controllers do, and what runs.

Deployments rolling out, StatefulSets keeping their claims and rolling in order, a PodDisruptionBudget
refusing an eviction, the postgres image and CloudNativePG emulated on this machine's PostgreSQL, Jobs
made from CronJobs, and the tracker the operator renders for examples/tenant-minimal.yaml run to Ready
with the real operator. As in ``test_pod_runner.py``, through the API and what a user sees; root needed.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from tests.e2e.operator_process import start_operator
from tests.fakes.kube_server import KubeApiHandle, running_kube_api
from tests.fakes.pod_runner import PodRunner, RunnerError
from tests.fakes.pod_testing import (
    MERGE,
    STRATEGIC,
    available,
    create,
    finished_output,
    get,
    http_get,
    must,
    namespace,
    path,
    python_pod,
    secret,
    web_deployment,
    web_service,
)

REPO = Path(__file__).resolve().parents[2]


def test_a_rollout_with_max_unavailable_zero_keeps_every_replica_serving(
    runner: PodRunner, kube: KubeApiHandle
) -> None:
    ns = namespace(kube, "rollout")
    create(kube, "deployments", ns, web_deployment("web", maxSurge=1, maxUnavailable=0))
    create(kube, "services", ns, web_service("web"))
    runner.wait_for(lambda: available(kube, ns, "web", 2), 30, "web available")
    old = {p["metadata"]["name"] for p in runner.pods(ns, {"app": "web"})}
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            pods = runner.pods(ns, {"app": "web"})
            ready = [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(
                c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or []
            )]  # fmt: skip
            seen.append((len(ready), len(pods)))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        patch = {
            "spec": {
                "template": {"spec": {"containers": [{"name": "web", "env": [{"name": "VERSION", "value": "2"}]}]}}
            }
        }
        assert kube.request("PATCH", path("deployments", ns, "web"), patch, content_type=STRATEGIC).status == 200
        runner.wait_for(lambda: available(kube, ns, "web", 2), 60, "the rollout")
        runner.wait_for(
            lambda: not old & {p["metadata"]["name"] for p in runner.pods(ns, {"app": "web"})}, 30, "old pods gone"
        )
    finally:
        stop.set()
        watcher.join()
    assert min(ready for ready, _ in seen) >= 2, seen
    assert max(total for _, total in seen) >= 3  # the surge pod was there
    assert {http_get(runner.url(ns, "web")).split()[1] for _ in range(6)} == {"2"}
    progressing = next(
        c for c in must(kube, "deployments", ns, "web")["status"]["conditions"] if c["type"] == "Progressing"
    )
    assert progressing["reason"] == "NewReplicaSetAvailable"
    replicasets = kube.request("GET", "/apis/apps/v1/namespaces/" + ns + "/replicasets").body["items"]
    assert sorted(rs["spec"]["replicas"] for rs in replicasets) == [0, 2]


def test_deleting_a_pod_sends_sigterm_and_its_replacement_takes_over(runner: PodRunner, kube: KubeApiHandle) -> None:
    ns = namespace(kube, "delete")
    create(kube, "deployments", ns, web_deployment("web", replicas=1))
    runner.wait_for(lambda: available(kube, ns, "web", 1), 30, "web available")
    (pod,) = runner.pods(ns, {"app": "web"})
    name = pod["metadata"]["name"]
    runner.delete_pod(ns, name)
    runner.wait_for(lambda: get(kube, "pods", ns, name) is None, 30, f"{name} gone")
    assert "SIGTERM, leaving" in runner.logs(ns, name)
    runner.wait_for(lambda: available(kube, ns, "web", 1), 30, "a replacement")
    assert [p["metadata"]["name"] for p in runner.pods(ns, {"app": "web"})] != [name]


def test_deleting_a_namespace_stops_its_pods_gracefully_before_it_goes(runner: PodRunner, kube: KubeApiHandle) -> None:
    ns = namespace(kube, "offboard")
    create(kube, "deployments", ns, web_deployment("web", replicas=1))
    runner.wait_for(lambda: available(kube, ns, "web", 1), 30, "web available")
    (pod,) = runner.pods(ns, {"app": "web"})
    assert kube.request("DELETE", f"/api/v1/namespaces/{ns}").status == 202
    runner.wait_for(lambda: kube.request("GET", f"/api/v1/namespaces/{ns}").status == 404, 30, "the namespace gone")
    assert "SIGTERM, leaving" in runner.logs(ns, pod["metadata"]["name"])


STORE = """
if [ -f /data/token ]; then echo "found $(cat /data/token)"; else
  cat /proc/sys/kernel/random/uuid > /data/token; echo "made $(cat /data/token)"; fi
exec sleep 3600
"""


def test_a_statefulset_pod_gets_its_claims_directory_back_after_deletion(
    runner: PodRunner, kube: KubeApiHandle
) -> None:
    ns = namespace(kube, "sts")
    template = {
        "metadata": {"labels": {"app": "store"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "store",
                    "image": "busybox:1",
                    "command": ["sh", "-c", STORE],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
        },
    }
    claim = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    sts = {
        "metadata": {"name": "store"},
        "spec": {
            "replicas": 1,
            "serviceName": "store",
            "selector": {"matchLabels": {"app": "store"}},
            "template": template,
            "volumeClaimTemplates": [claim],
        },
    }
    create(kube, "statefulsets", ns, sts)

    def log_line() -> str | None:
        try:
            return runner.logs(ns, "store-0").strip() or None
        except RunnerError:
            return None

    first = runner.wait_for(log_line, 30, "store-0 to write its token")
    assert first is not None and first.startswith("made ")
    uid = must(kube, "pods", ns, "store-0")["metadata"]["uid"]
    pvc = get(kube, "persistentvolumeclaims", ns, "data-store-0")
    assert pvc is not None and pvc["status"]["phase"] == "Bound"
    runner.delete_pod(ns, "store-0")

    def replaced() -> bool:
        pod = get(kube, "pods", ns, "store-0")
        return pod is not None and pod["metadata"]["uid"] != uid and pod.get("status", {}).get("phase") == "Running"

    runner.wait_for(replaced, 30, "store-0 recreated")
    again = runner.wait_for(log_line, 30, "the new store-0 to read its token")
    assert again == "found " + first.removeprefix("made ")
    status = must(kube, "statefulsets", ns, "store")["status"]
    assert status["readyReplicas"] == 1 and status["currentRevision"] == status["updateRevision"]


def test_a_statefulset_rolls_from_the_highest_ordinal_down_and_honours_its_partition(
    runner: PodRunner, kube: KubeApiHandle
) -> None:
    ns = namespace(kube, "roll")
    template = web_deployment("web")["spec"]["template"]
    sts = {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": template,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
        },
    }
    create(kube, "statefulsets", ns, sts)

    def status() -> dict[str, Any]:
        return dict(must(kube, "statefulsets", ns, "web").get("status") or {})

    runner.wait_for(lambda: status().get("readyReplicas") == 3, 30, "three ready pods")
    created = {p["metadata"]["name"]: p["metadata"]["creationTimestamp"] for p in runner.pods(ns)}
    assert sorted(created) == ["web-0", "web-1", "web-2"]
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in runner.pods(ns)}
    since = kube.request("GET", path("pods", ns)).body["metadata"]["resourceVersion"]
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "VERSION", "value": "2"}]}]}}}
    }
    assert kube.request("PATCH", path("statefulsets", ns, "web"), patch, content_type=STRATEGIC).status == 200
    runner.wait_for(
        lambda: status().get("updatedReplicas") == 2 and status().get("readyReplicas") == 3,
        60,
        "the partitioned rollout",
    )
    events = kube.watch(path("pods", ns), {"resourceVersion": since}, timeout=1.0)
    assert [e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED"] == ["web-2", "web-1"]
    terminating: set[str] = set()
    most = 0
    for event in events:  # one pod at a time: never two terminating together
        name = event["object"]["metadata"]["name"]
        if event["type"] == "MODIFIED" and event["object"]["metadata"].get("deletionTimestamp"):
            terminating.add(name)
        elif event["type"] in ("DELETED", "ADDED"):
            terminating.discard(name)
        most = max(most, len(terminating))
    assert most == 1
    pods = {p["metadata"]["name"]: p for p in runner.pods(ns)}
    assert pods["web-0"]["metadata"]["uid"] == uids["web-0"], "below the partition stays on the old revision"
    final = status()
    assert final["currentRevision"] != final["updateRevision"] and final["currentReplicas"] == 1
    assert (
        kube.request("PATCH", path("statefulsets", ns, "web"), {"spec": {"replicas": 1}}, content_type=MERGE).status
        == 200
    )
    runner.wait_for(lambda: [p["metadata"]["name"] for p in runner.pods(ns)] == ["web-0"], 30, "scaled down to web-0")


def test_an_eviction_respects_the_pod_disruption_budget(runner: PodRunner, kube: KubeApiHandle) -> None:
    ns = namespace(kube, "evict")
    create(kube, "deployments", ns, web_deployment("web"))
    budget = {"metadata": {"name": "web"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}}
    assert kube.request("POST", f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", budget).status == 201
    runner.wait_for(lambda: available(kube, ns, "web", 2), 30, "web available")
    pdb_path = f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/web"

    def allowed() -> int | None:
        return (kube.request("GET", pdb_path).body.get("status") or {}).get("disruptionsAllowed")

    runner.wait_for(lambda: allowed() == 1, 30, "the budget to allow one disruption")
    first, second = (p["metadata"]["name"] for p in runner.pods(ns, {"app": "web"}))
    assert runner.evict(ns, first) is True
    assert runner.evict(ns, second) is False, "a second eviction before the replacement is ready"
    runner.wait_for(lambda: available(kube, ns, "web", 2) and allowed() == 1, 30, "the replacement ready")
    assert runner.evict(ns, second) is True


# -- PostgreSQL -------------------------------------------------------------------------------------------


def postgres_statefulset() -> dict[str, Any]:
    env = [
        {"name": "POSTGRES_USER", "valueFrom": {"secretKeyRef": {"name": "db", "key": "username"}}},
        {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        {"name": "POSTGRES_DB", "value": "appdb"},
        {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
    ]
    container = {
        "name": "postgres",
        "image": "docker.io/library/postgres:17.5-bookworm",
        "env": env,
        "ports": [{"name": "postgres", "containerPort": 5432}],
        "readinessProbe": {
            "exec": {"command": ["sh", "-c", 'exec pg_isready -h 127.0.0.1 -U "$POSTGRES_USER"']},
            "periodSeconds": 5,
        },
        "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/postgresql/data"},
            {"name": "run", "mountPath": "/var/run/postgresql"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True},
        ],
    }
    return {
        "metadata": {"name": "postgres"},
        "spec": {
            "replicas": 1,
            "serviceName": "postgres",
            "selector": {"matchLabels": {"app": "postgres"}},
            "template": {
                "metadata": {"labels": {"app": "postgres"}},
                "spec": {
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999, "runAsNonRoot": True},
                    "containers": [
                        container,  # a sidecar next to the database, as the operator's roles container is
                        {"name": "sidecar", "image": "busybox:1", "command": ["sleep", "3600"]},
                    ],
                    "volumes": [
                        {"name": "run", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "init", "configMap": {"name": "init"}},
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            ],
        },
    }


INIT_SQL = "CREATE TABLE greetings (text text NOT NULL); INSERT INTO greetings VALUES ('from sql');\n"
INIT_SH = (
    'psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" '
    "-c \"INSERT INTO greetings VALUES ('from sh')\"\n"
)


async def _greetings(dsn: str) -> list[str]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return [row["text"] for row in await connection.fetch("SELECT text FROM greetings ORDER BY text")]
    finally:
        await connection.close()


@pytest.mark.slow
def test_the_postgres_image_initialises_from_env_and_scripts_and_refuses_a_wrong_password(
    runner: PodRunner, kube: KubeApiHandle
) -> None:
    ns = namespace(kube, "pg")
    create(kube, "secrets", ns, secret("db", username="app", password="right-password"))
    create(
        kube,
        "configmaps",
        ns,
        {"metadata": {"name": "init"}, "data": {"01-schema.sql": INIT_SQL, "02-more.sh": INIT_SH}},
    )
    create(kube, "statefulsets", ns, postgres_statefulset())
    create(
        kube,
        "services",
        ns,
        {
            "metadata": {"name": "postgres"},
            "spec": {
                "clusterIP": "None",
                "selector": {"app": "postgres"},
                "ports": [{"port": 5432, "targetPort": "postgres"}],
            },
        },
    )

    def ready() -> bool:
        return bool(must(kube, "statefulsets", ns, "postgres").get("status", {}).get("readyReplicas") == 1)

    runner.wait_for(ready, 90, "PostgreSQL ready")
    host, port = runner.service(ns, "postgres")
    assert asyncio.run(_greetings(f"postgresql://app:right-password@{host}:{port}/appdb")) == ["from sh", "from sql"]
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(_greetings(f"postgresql://app:wrong-password@{host}:{port}/appdb"))
    runner.stop_database(ns)
    sidecar = next(
        c for c in must(kube, "pods", ns, "postgres-0")["status"]["containerStatuses"] if c["name"] == "sidecar"
    )
    assert "running" in sidecar["state"] and sidecar["restartCount"] == 0
    with pytest.raises((OSError, asyncpg.PostgresError, asyncio.TimeoutError)):
        asyncio.run(_greetings(f"postgresql://app:right-password@{host}:{port}/appdb"))
    runner.start_database(ns)
    runner.wait_for(ready, 90, "PostgreSQL ready again")
    assert asyncio.run(_greetings(f"postgresql://app:right-password@{host}:{port}/appdb")) == ["from sh", "from sql"]
    assert "Skipping initialization" in runner.logs(ns, "postgres-0", "postgres")


def cnpg_cluster(instances: int) -> dict[str, Any]:
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "pg"},
        "spec": {
            "instances": instances,
            "bootstrap": {"initdb": {"database": "polite", "owner": "polite"}},
            "storage": {"size": "1Gi"},
        },
    }


async def _role_and_recovery(dsn: str) -> tuple[bool, bool, str]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        row = await connection.fetchrow(
            "SELECT rolsuper, pg_is_in_recovery() AS standby, current_database() AS db"
            " FROM pg_roles WHERE rolname = current_user"
        )
        return bool(row["rolsuper"]), bool(row["standby"]), str(row["db"])
    finally:
        await connection.close()


@pytest.mark.slow
def test_a_cloudnativepg_cluster_gets_its_app_secret_services_and_a_streaming_standby(
    runner: PodRunner, kube: KubeApiHandle
) -> None:
    ns = namespace(kube, "cnpg")
    answer = kube.request("POST", f"/apis/postgresql.cnpg.io/v1/namespaces/{ns}/clusters", cnpg_cluster(2))
    assert answer.status == 201, answer.body
    cluster_path = f"/apis/postgresql.cnpg.io/v1/namespaces/{ns}/clusters/pg"

    def ready() -> bool:
        return bool((kube.request("GET", cluster_path).body.get("status") or {}).get("readyInstances") == 2)

    runner.wait_for(ready, 120, "two ready instances")
    app = get(kube, "secrets", ns, "pg-app")
    assert app is not None
    values = {k: base64.b64decode(v).decode() for k, v in app["data"].items()}
    assert values["uri"] == f"postgresql://polite:{values['password']}@pg-rw.{ns}:5432/polite"
    assert (values["username"], values["dbname"], values["host"], values["port"]) == (
        "polite",
        "polite",
        "pg-rw",
        "5432",
    )
    host, port = runner.service(ns, "pg-rw")
    assert asyncio.run(_role_and_recovery(f"postgresql://polite:{values['password']}@{host}:{port}/polite")) == (
        False,
        False,
        "polite",
    )
    host, port = runner.service(ns, "pg-ro")
    assert asyncio.run(_role_and_recovery(f"postgresql://polite:{values['password']}@{host}:{port}/polite")) == (
        False,
        True,
        "polite",
    )
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(_role_and_recovery(f"postgresql://postgres:{values['password']}@{host}:{port}/polite"))


def test_a_server_of_the_test_is_reached_from_pods_as_a_service_without_selector(
    runner: PodRunner, kube: KubeApiHandle
) -> None:
    ns = namespace(kube, "outside")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer_once() -> None:
        connection, _ = server.accept()
        with connection:
            connection.sendall(b"hello from the test's own server\n")

    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    try:
        runner.expose_host_port(ns, "vault", 8200, host_port=server.getsockname()[1])
        program = """
        import socket
        with socket.create_connection(("vault", 8200), timeout=10) as connection:
            print(connection.recv(100).decode().strip())
        """
        create(kube, "pods", ns, python_pod("client", program))
        assert finished_output(runner, kube, ns, "client").strip() == "hello from the test's own server"
    finally:
        thread.join(10)
        server.close()


# -- Jobs ---------------------------------------------------------------------------------------------------


def cronjob(name: str, script: str, backoff: int = 0) -> dict[str, Any]:
    pod = {
        "restartPolicy": "Never",
        "containers": [{"name": "run", "image": "busybox:1", "command": ["sh", "-c", script]}],
    }
    return {
        "metadata": {"name": name},
        "spec": {
            "schedule": "17 3 * * *",
            "jobTemplate": {
                "metadata": {"labels": {"app": name}},
                "spec": {"backoffLimit": backoff, "template": {"metadata": {"labels": {"app": name}}, "spec": pod}},
            },
        },
    }


def test_a_cronjobs_job_runs_on_demand_with_its_exit_code_and_logs(runner: PodRunner, kube: KubeApiHandle) -> None:
    ns = namespace(kube, "cron")
    create(kube, "cronjobs", ns, cronjob("purge", "echo purged 3 rows"))
    create(kube, "cronjobs", ns, cronjob("broken", "echo cannot reach the database; exit 4"))
    done = runner.create_job_from_cronjob(ns, "purge")
    assert done.succeeded and list(done.exit_codes.values()) == [0]
    assert done.logs == "purged 3 rows\n"
    assert done.job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert done.job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    failed = runner.create_job_from_cronjob(ns, "broken", "broken-now")
    assert not failed.succeeded and list(failed.exit_codes.values()) == [4]
    assert "cannot reach the database" in failed.logs
    reasons = {c["type"]: c["reason"] for c in failed.job["status"]["conditions"]}
    assert reasons["Failed"] == "BackoffLimitExceeded"


# -- the rendered tracker, and stopping -----------------------------------------------------------------


@pytest.mark.slow
def test_the_rendered_tracker_of_the_minimal_example_runs_to_ready(tmp_path: Path) -> None:
    tenant = yaml.safe_load((REPO / "examples" / "tenant-minimal.yaml").read_text(encoding="utf-8"))
    labels = {"topology.kubernetes.io/region": "eu-west-1", "topology.kubernetes.io/zone": "eu-west-1a"}
    with running_kube_api() as api:
        api.request("POST", "/api/v1/namespaces", {"metadata": {"name": "politetenant-system"}})
        operator = start_operator(
            api.kubeconfig_path,
            extra_args=["--standalone", "--all-namespaces", "--resync-seconds", "2", "--metrics-port", "0"],
            log_path=tmp_path / "operator.log",
        )
        try:
            with PodRunner(api, time_scale=0.2, node_labels=labels) as runner:
                assert api.request("POST", "/apis/polite.io/v1alpha1/politetenants", tenant).status == 201

                def ready() -> dict[str, Any] | None:
                    found = api.request("GET", "/apis/polite.io/v1alpha1/politetenants/acme").body
                    return found if (found.get("status") or {}).get("phase") == "Ready" else None

                found = runner.wait_for(ready, 180, "tenant acme Ready")
                assert found is not None
                assert {c["type"]: c["status"] for c in found["status"]["conditions"]}["TrackerReady"] == "True"
                trackers = runner.pods("polite-acme", {"app.kubernetes.io/component": "tracker"})
                assert len(trackers) == 2
                assert all(c["ready"] for p in trackers for c in p["status"]["containerStatuses"])
                host, port = runner.service("polite-acme", "tracker")
                with socket.create_connection((host, port), timeout=10) as connection:
                    connection.sendall(b"GET /o/not-a-token.gif HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n\r\n")
                    assert connection.recv(64).startswith(b"HTTP/1.1 404")
                assert runner.errors == []
        finally:
            operator.stop()
