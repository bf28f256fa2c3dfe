"""The real ``polite-operator run`` end to end, driven only through the Kubernetes API as ``kubectl`` would.

The operator is a subprocess (``tests/e2e/operator_process.py``) with a kubeconfig; the tests create,
patch and delete PoliteTenants and their children over HTTP and read what the operator made of them:
children equal to ``polite-operator render``, status, Events, Secrets, drift restored, key rotation,
legal hold and both deletion policies, ``/healthz``, ``/metrics`` and the ``kubectl polite`` plug-in.

Where the API is:

- by default, the Kubernetes API emulator (``tests/fakes``), with the PoliteTenant CRD loaded. It has
  no StatefulSet or CloudNativePG controller, so the tests do what those would (report replicas
  ready, ``roll_out``) to let a tenant reach Ready. It counts requests by verb, path and
  User-Agent, so the tests also measure what one tenant costs and that a resync of unchanged tenants
  writes nothing. The main operator runs standalone; a second emulator, with CloudNativePG's CRD,
  runs its operator in the chart's ClusterKopfPeering, as deployed replicas do.
- with ``POLITE_E2E_KUBECONFIG=/path/to/kubeconfig``, a real cluster (kind, k3d) prepared by
  ``scripts/e2e-real-cluster.sh`` (the chart installed with the operator scaled to 0, for its CRDs,
  namespace and peering object). The operator still runs here as a local subprocess with that
  kubeconfig (building and loading an operator image is more than these tests need); it joins the
  chart's peering. Real controllers roll workloads out, so waits are longer; the tests that count the
  emulator's requests or need a second emulator (CloudNativePG present, 20 tenants) are skipped, and
  the CloudNativePG tests follow whatever the cluster has installed.

Tenant names carry a random suffix, so runs against one real cluster never meet each other's leftovers.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import io
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest
import yaml

from politetenant.operator.keys.secret import VERSION_ANNOTATION
from politetenant.operator.kubectl import commands as kubectl_plugin
from politetenant.operator.render.tenant import spec_hash
from tests.e2e.operator_process import OperatorProcess, as_the_chart_runs_it, start_operator
from tests.fakes.kube_emulator import POLITETENANT_CRD, RequestRecord
from tests.fakes.kube_server import ApiResponse, KubeApiHandle, running_kube_api
from tests.support import free_port
from tests.support_kstatus import compute_kstatus

T = TypeVar("T")

REAL_KUBECONFIG = os.environ.get("POLITE_E2E_KUBECONFIG")
REAL = bool(REAL_KUBECONFIG)
# On a real cluster one wait may take minutes (image pulls), more than pytest's default per test.
pytestmark = [pytest.mark.slow, *([pytest.mark.timeout(1800)] if REAL else [])]
emulator_only = pytest.mark.skipif(REAL, reason="counts the emulator's requests, or needs an emulator of its own")

REPO_ROOT = Path(__file__).resolve().parents[2]
PEERING_CRD = REPO_ROOT / "charts" / "politetenant" / "crds" / "clusterkopfpeerings.kopf.dev.yaml"
PEERING = "politetenant"  # the chart's peering.name
OPERATOR_NAMESPACE = "politetenant-system"  # the operator configuration's default
RESYNC = 2.0  # --resync-seconds
RESYNCS = 3  # resync periods a "nothing is written" window spans
WAIT = 300.0 if REAL else 30.0  # real controllers pull images and schedule pods
SUFFIX = secrets.token_hex(2)
REGION = "eu-ireland"
UNSERVED_REGION = "ap-australia"  # left out of the main operator's --served-regions
SERVED_REGIONS = ("us-east", "us-west", "eu-ireland", "eu-germany", "ap-singapore")
SCALE_TENANTS = 20

TENANTS = "/apis/polite.io/v1alpha1/politetenants"
MERGE_PATCH = "application/merge-patch+json"
OPERATOR_AGENTS = ("kopf/", "polite-operator")  # kopf's own requests, and the operator's KubeClient
CNPG_CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clusters.postgresql.cnpg.io"

# Every kind a tenant's children can have: its API version and plural.
KINDS: dict[str, tuple[str, str]] = {
    "Namespace": ("v1", "namespaces"),
    "ResourceQuota": ("v1", "resourcequotas"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "ConfigMap": ("v1", "configmaps"),
    "Secret": ("v1", "secrets"),
    "Service": ("v1", "services"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "Ingress": ("networking.k8s.io/v1", "ingresses"),
    "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
    "CronJob": ("batch/v1", "cronjobs"),
    "Cluster": ("postgresql.cnpg.io/v1", "clusters"),
}
# The Secrets reconcile creates with generated values (render names them, never fills them).
DATABASE_LOGINS = {"postgres-credentials", "postgres-owner-credentials", "postgres-app-credentials"}
OWNED_SECRETS = {"tracker-keys", "tracker-api-tokens", *DATABASE_LOGINS}
EVERY_PART_READY = {
    "Ready": "Ready",
    "NamespaceReady": "NamespaceActive",
    "KeysReady": "KeysAvailable",
    "DatabaseReady": "DatabaseAvailable",
    "TrackerReady": "TrackerAvailable",
    "RetentionReady": "RetentionScheduled",
    "Placement": "RegionServed",
}
# Key material as it is kept: long base64 runs (tokens, passwords, wrapped and plain keys).
SECRETISH = re.compile(r"[A-Za-z0-9+/_=-]{24,}")


def unique(base: str) -> str:
    return f"{base}-{SUFFIX}"


def path(kind: str, name: str | None = None, namespace: str | None = None) -> str:
    """The API path of a collection (no name) or of one object of ``kind``."""
    api_version, plural = KINDS[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if kind != "Namespace":
        base += f"/namespaces/{namespace}"
    return f"{base}/{plural}" + (f"/{name}" if name else "")


# -- the API, as the tests reach it ------------------------------------------------------------------


@dataclass
class Cluster:
    """The Kubernetes API under test, reached with the ``kubernetes`` client from the kubeconfig, as
    kubectl reaches it; ``emulator`` is the emulator's handle (None on a real cluster)."""

    kubeconfig: Path
    emulator: KubeApiHandle | None = None
    tenants_made: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._client = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    @property
    def emulated(self) -> bool:
        return self.emulator is not None

    def request(
        self,
        method: str,
        api_path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        """One request; the answer whatever its status (a Status object on failures)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self._client.param_serialize(
            method,
            api_path,
            query_params=list(params.items()) if params else None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
        raw = response.read()
        return ApiResponse(response.status, json.loads(raw) if raw else None)

    def get(self, api_path: str, params: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """The object (or list) at ``api_path``, None when it does not exist."""
        answer = self.request("GET", api_path, params=params)
        if answer.status == 404:
            return None
        assert answer.status == 200, f"GET {api_path}: {answer.status} {answer.body}"
        return dict(answer.body)

    def write(self, method: str, api_path: str, body: Any = None, *, content_type: str = MERGE_PATCH) -> Any:
        answer = self.request(method, api_path, body, content_type=content_type)
        assert answer.status in (200, 201, 202), f"{method} {api_path}: {answer.status} {answer.body}"
        return answer.body

    def items(self, api_path: str, **params: str) -> list[dict[str, Any]]:
        found = self.get(api_path, params)
        return list((found or {}).get("items") or [])

    # -- tenants

    def create_tenant(self, name: str, **spec: Any) -> dict[str, Any]:
        self.tenants_made.append(name)
        return dict(self.write("POST", TENANTS, tenant_manifest(name, **spec), content_type="application/json"))

    def tenant(self, name: str) -> dict[str, Any] | None:
        return self.get(f"{TENANTS}/{name}")

    def patch_tenant(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.write("PATCH", f"{TENANTS}/{name}", patch))

    def events(self, name: str, uid: str | None = None) -> list[dict[str, Any]]:
        """Events about tenant ``name`` (of this very object when ``uid`` is given), where the operator posts them."""
        found = self.items(
            f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/events",
            fieldSelector=f"involvedObject.name={name},involvedObject.kind=PoliteTenant",
        )
        found = [e for e in found if uid is None or (e.get("involvedObject") or {}).get("uid") == uid]
        return sorted(found, key=_posted)

    def reasons(self, name: str, uid: str | None = None) -> list[str]:
        return [str(e.get("reason")) for e in self.events(name, uid)]

    def has_crd(self, crd_path: str) -> bool:
        return self.get(crd_path) is not None

    # -- the emulator's request log

    def mark(self) -> int:
        assert self.emulator is not None
        return self.emulator.request_count()

    def operator_requests(self, since: int) -> list[RequestRecord]:
        """What the operator (kopf and its own client) asked of the API since ``mark``."""
        assert self.emulator is not None
        return [r for r in self.emulator.requests_served(since) if r.agent.startswith(OPERATOR_AGENTS)]


def _posted(event: Mapping[str, Any]) -> tuple[str, int]:
    """When an Event was posted: its time (seconds), then its resourceVersion (a counter in the emulator
    and in etcd, though clients are told not to rely on it: good enough to order a test's Events)."""
    meta = event.get("metadata") or {}
    version = str(meta.get("resourceVersion", ""))
    return str(meta.get("creationTimestamp", "")), int(version) if version.isdigit() else 0


def tenant_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "polite.io/v1alpha1",
        "kind": "PoliteTenant",
        "metadata": {"name": name},
        "spec": {"displayName": f"End to end {name}", "region": REGION, **spec},
    }


@dataclass
class Operator:
    """The running operator, the ports it serves and the configuration file it read (if any)."""

    process: OperatorProcess
    metrics_port: int
    liveness_port: int
    config: Path | None

    def wait_for(self, predicate: Callable[[], T], what: str, timeout: float = WAIT) -> T:
        return self.process.wait_for(predicate, timeout, what=what)


def operator_args(*, peering: bool, metrics_port: int = 0, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        *(("--peering", PEERING) if peering else ("--standalone",)),
        "--all-namespaces",
        "--resync-seconds",
        str(RESYNC),
        "--metrics-port",
        str(metrics_port),
        *extra,
    ]


def ensure_operator_namespace(cluster: Cluster) -> None:
    """The operator keeps local keys and posts Events in its namespace; the chart creates it in a cluster."""
    answer = cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": OPERATOR_NAMESPACE}})
    assert answer.status in (201, 409), answer.body


def real_cluster_config(directory: Path, cluster: Cluster) -> Path:
    """An operator configuration for a kind or k3d cluster: its default storage class for the region
    the tests use (the region catalogue names a cloud's, gp3, which such a cluster lacks)."""
    storage_class = os.environ.get("POLITE_E2E_STORAGE_CLASS")
    if not storage_class:
        for item in cluster.items("/apis/storage.k8s.io/v1/storageclasses"):
            annotations = (item.get("metadata") or {}).get("annotations") or {}
            if annotations.get("storageclass.kubernetes.io/is-default-class") == "true":
                storage_class = item["metadata"]["name"]
    config: dict[str, Any] = {"namespace": OPERATOR_NAMESPACE}
    if storage_class:
        config["storage_classes"] = {REGION: storage_class}
    target = directory / "operator-config.yaml"
    target.write_text(yaml.safe_dump(config), encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if REAL_KUBECONFIG:
        yield Cluster(Path(REAL_KUBECONFIG))
        return
    # RBAC and https as a cluster has them: the operator runs as the chart's ServiceAccount, with the
    # chart's ClusterRole (installed by the operator fixture); kubectl sends credentials only over TLS.
    with running_kube_api(rbac=True, tls=True) as handle:
        yield Cluster(handle.kubeconfig_path, handle)


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """One operator for the module (its start is the slow part): standalone on the emulator, as the
    chart's ServiceAccount under the chart's RBAC, in the chart's peering on a real cluster; every
    region but ``UNSERVED_REGION``."""
    ensure_operator_namespace(cluster)
    directory = tmp_path_factory.mktemp("operator")
    kubeconfig = cluster.kubeconfig
    config = real_cluster_config(directory, cluster) if REAL else None
    if cluster.emulator is not None:
        kubeconfig, config = as_the_chart_runs_it(cluster.emulator, OPERATOR_NAMESPACE, directory)
    metrics_port, liveness_port = free_port(), free_port()
    extra = (
        "--liveness",
        f"http://127.0.0.1:{liveness_port}/healthz",
        "--served-regions",
        ",".join(SERVED_REGIONS),
        "--verbose",  # the log checked for secret values is the most talkative one
        *(("--config", str(config)) if config else ()),
    )
    process = start_operator(
        kubeconfig,
        extra_args=operator_args(peering=REAL, metrics_port=metrics_port, extra=extra),
        log_path=directory / "operator.log",
    )
    running = Operator(process, metrics_port, liveness_port, config)
    try:
        wait_started(cluster, running)
        yield running
        if REAL:
            remove_tenants(cluster, running)
    finally:
        process.stop()


def wait_started(cluster: Cluster, operator: Operator) -> None:
    """Until the operator watches tenants (its /healthz answers first, when it has a liveness port)."""
    if operator.liveness_port:
        url = f"http://127.0.0.1:{operator.liveness_port}/healthz"
        operator.wait_for(lambda: http_get(url)[0] == 200, "/healthz")
    if cluster.emulated:  # so that counting from here on counts no start-up request

        def watching() -> bool:
            return any(r.verb == "watch" and r.path == TENANTS for r in cluster.operator_requests(0))

        operator.wait_for(watching, "kopf to watch PoliteTenants")


def remove_tenants(cluster: Cluster, operator: Operator) -> None:
    """Leave a real cluster as found: every tenant made here deleted with its keys, namespaces a
    Retain deletion left behind removed too (a failure here fails no test; it is printed)."""
    for name in cluster.tenants_made:
        try:
            if cluster.tenant(name) is not None:
                cluster.patch_tenant(name, {"spec": {"legalHold": False, "deletionPolicy": "Delete"}})
                cluster.request("DELETE", f"{TENANTS}/{name}")
                operator.wait_for(lambda name=name: cluster.tenant(name) is None, f"tenant {name} gone")
            cluster.request("DELETE", path("Namespace", f"polite-{name}"))
            cluster.request("DELETE", path("Secret", f"polite-{name}-keys", OPERATOR_NAMESPACE))
        except AssertionError as exc:
            print(f"cleanup of tenant {name} failed: {exc}")


def http_get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:
            return response.status, response.read().decode()
    except OSError:
        return 0, ""


# -- standing in for the controllers the emulator lacks -----------------------------------------------

WORKLOADS = (("StatefulSet", "tracker"), ("StatefulSet", "postgres"), ("Cluster", "postgres"))


def roll_out(cluster: Cluster, namespace: str, workloads: tuple[tuple[str, str], ...] = WORKLOADS) -> None:
    """Report the tenant's workloads rolled out, as the StatefulSet controller and CloudNativePG
    would: every replica of the newest generation ready. A real cluster does it itself."""
    if not cluster.emulated:
        return
    for kind, name in workloads:
        workload_path = path(kind, name, namespace)
        live = cluster.get(workload_path)
        if live is None:
            continue
        spec = live.get("spec") or {}
        if kind == "Cluster":
            want = int(spec.get("instances", 1))
            status: dict[str, Any] = {"instances": want, "readyInstances": want}
        else:
            want = int(spec.get("replicas", 1))
            counts = ("replicas", "readyReplicas", "updatedReplicas", "availableReplicas", "currentReplicas")
            status = {"observedGeneration": live["metadata"].get("generation"), **dict.fromkeys(counts, want)}
        if any((live.get("status") or {}).get(key) != value for key, value in status.items()):
            cluster.write("PATCH", workload_path + "/status", {"status": status})


def wait_ready(cluster: Cluster, operator: Operator, name: str) -> dict[str, Any]:
    """The tenant once its status says Ready for its newest generation (rolling workloads out meanwhile)."""

    def ready() -> dict[str, Any] | None:
        tenant = cluster.tenant(name) or {}
        status = tenant.get("status") or {}
        if status.get("namespace"):
            roll_out(cluster, status["namespace"])
        current = status.get("observedGeneration") == (tenant.get("metadata") or {}).get("generation")
        return tenant if status.get("phase") == "Ready" and current else None

    return operator.wait_for(ready, f"tenant {name} Ready")


def condition(tenant: Mapping[str, Any], kind: str) -> dict[str, Any]:
    conditions = (tenant.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def secret_text(secret: Mapping[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def render(tenant: Mapping[str, Any], directory: Path, operator: Operator, *, cnpg: bool) -> list[dict[str, Any]]:
    """What ``polite-operator render -f`` prints for the tenant as it is stored (same configuration)."""
    manifest = {key: tenant[key] for key in ("apiVersion", "kind", "spec")}
    manifest["metadata"] = {"name": tenant["metadata"]["name"]}
    source = directory / f"{tenant['metadata']['name']}.yaml"
    source.write_text(yaml.safe_dump(manifest), encoding="utf-8")
    argv = [sys.executable, "-m", "politetenant.operator.cli", "render", "-f", str(source)]
    argv += [*(["--config", str(operator.config)] if operator.config else []), *(["--cnpg"] if cnpg else [])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def children(cluster: Cluster, name: str) -> set[tuple[str, str]]:
    """(kind, name) of every object in the tenant's namespace labelled as the tenant's."""
    found = set()
    for kind in KINDS:
        if kind == "Namespace":
            continue
        for item in cluster.items(path(kind, namespace=f"polite-{name}"), labelSelector=f"polite.io/tenant={name}"):
            found.add((kind, item["metadata"]["name"]))
    return found


def by_verb(requests: list[RequestRecord]) -> dict[str, int]:
    return dict(sorted(collections.Counter(r.verb for r in requests).items()))


def writes_by_resource(requests: list[RequestRecord]) -> dict[str, int]:
    """Writes as ``verb plural`` (the path's resource segment), e.g. ``create secrets``."""
    counted: collections.Counter[str] = collections.Counter()
    for request in requests:
        if request.write:
            parts = request.path.strip("/").split("/")
            resource = parts[-1] if request.verb in ("create", "deletecollection") else parts[-2]
            if parts[-1] == "status":
                resource = parts[-3] + "/status"
            counted[f"{request.verb} {resource}"] += 1
    return dict(sorted(counted.items()))


# -- one tenant, brought to Ready once for the module --------------------------------------------------


@dataclass
class ReadyTenant:
    name: str
    uid: str
    first_ready: dict[str, Any]  # the tenant as it first showed Ready
    requests: list[RequestRecord]  # the operator's requests from creation to Ready (emulator only)

    @property
    def namespace(self) -> str:
        return f"polite-{self.name}"


@pytest.fixture(scope="module")
def acme(cluster: Cluster, operator: Operator) -> ReadyTenant:
    name = unique("acme")
    mark = cluster.mark() if cluster.emulated else 0
    created = cluster.create_tenant(name)
    ready = wait_ready(cluster, operator, name)
    requests = cluster.operator_requests(mark) if cluster.emulated else []
    return ReadyTenant(name, created["metadata"]["uid"], ready, requests)


def test_tenant_reaches_ready_with_the_children_render_prints(
    cluster: Cluster, operator: Operator, acme: ReadyTenant, tmp_path: Path
) -> None:
    tenant = wait_ready(cluster, operator, acme.name)
    cnpg = cluster.has_crd(CNPG_CRD)
    rendered = render(tenant, tmp_path, operator, cnpg=cnpg)
    keys_version = tenant["status"]["keys"]["version"]
    for obj in rendered:
        kind, meta = obj["kind"], obj["metadata"]
        live = cluster.get(path(kind, meta["name"], meta.get("namespace")))
        assert live is not None, f"{kind} {meta['name']} was rendered but not created"
        if (kind, meta["name"]) == ("StatefulSet", "tracker"):
            # The operator stamps the key version on the tracker's pods (a rotation rolls them) and
            # hashes the StatefulSet again: render plus that stamp, nothing else.
            template_meta = obj["spec"]["template"].setdefault("metadata", {})
            template_meta.setdefault("annotations", {})[VERSION_ANNOTATION] = str(keys_version)
            meta["annotations"]["polite.io/spec-hash"] = spec_hash(obj)
        wanted = meta["annotations"]["polite.io/spec-hash"]
        assert live["metadata"]["annotations"]["polite.io/spec-hash"] == wanted, f"{kind} {meta['name']}"
    rendered_children = {(o["kind"], o["metadata"]["name"]) for o in rendered if o["kind"] != "Namespace"}
    owned = OWNED_SECRETS - (DATABASE_LOGINS if cnpg else set())  # CloudNativePG makes its own
    assert children(cluster, acme.name) == rendered_children | {("Secret", s) for s in owned}
    workloads = {(o["kind"], o["metadata"]["name"]) for o in rendered} & {("Cluster", "postgres"), *WORKLOADS}
    expected = {("StatefulSet", "tracker"), ("Cluster", "postgres") if cnpg else ("StatefulSet", "postgres")}
    assert workloads == expected


def test_status_reports_every_part(cluster: Cluster, operator: Operator, acme: ReadyTenant) -> None:
    first = acme.first_ready["status"]
    assert first["observedGeneration"] == 1
    assert first["keys"]["version"] == 1 and first["keys"]["rotatedAt"]
    tenant = wait_ready(cluster, operator, acme.name)
    status = tenant["status"]
    assert status["observedGeneration"] == tenant["metadata"]["generation"]
    assert status["phase"] == "Ready"
    reasons = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    settled = {"Reconciling": ("False", "Ready"), "Stalled": ("False", "Ready")}  # kstatus: Current
    assert reasons == {**{kind: ("True", reason) for kind, reason in EVERY_PART_READY.items()}, **settled}
    assert compute_kstatus(tenant) == ("Current", "Resource is Ready")
    assert all(c["observedGeneration"] == status["observedGeneration"] for c in status["conditions"])
    assert status["namespace"] == acme.namespace
    settings = yaml.safe_load(
        cluster.get(path("ConfigMap", "tracker-settings", acme.namespace))["data"]["settings.yaml"]
    )
    assert status["endpoint"] == settings["public_base_url"]
    told = cluster.reasons(acme.name, acme.uid)
    assert {"NamespaceCreated", "ObjectsCreated", "SecretCreated", "KeysCreated"} <= set(told), told
    namespace = cluster.get(path("Namespace", acme.namespace))
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def revealing(text: str, values: set[str]) -> list[str]:
    return sorted(value[:12] + "..." for value in values if value in text)


def secret_values(cluster: Cluster, name: str) -> set[str]:
    """Every secret value the tenant has: tokens, password, DSN, key documents and their key material,
    decoded and as stored (base64), in its namespace and in the operator's."""
    found = [cluster.get(path("Secret", s, f"polite-{name}")) for s in OWNED_SECRETS]
    found.append(cluster.get(path("Secret", f"polite-{name}-keys", OPERATOR_NAMESPACE)))
    values: set[str] = set()
    for secret in filter(None, found):
        for key, encoded in (secret.get("data") or {}).items():
            text = base64.b64decode(encoded).decode()
            if key in ("username", "dbname", "host", "port"):
                continue  # names, not secrets
            values |= {encoded, text, *SECRETISH.findall(text)}
    return {value for value in values if len(value) >= 24}


def test_owned_secrets_hold_generated_values_that_never_show(
    cluster: Cluster, operator: Operator, acme: ReadyTenant
) -> None:
    namespace = acme.namespace
    tokens = cluster.get(path("Secret", "tracker-api-tokens", namespace))
    assert set(tokens["data"]) == {"sender", "analyst", "privacy"}
    assert all(re.fullmatch(r"ptk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", secret_text(tokens, k)) for k in tokens["data"])
    assert len({secret_text(tokens, k) for k in tokens["data"]}) == 3
    if not cluster.has_crd(CNPG_CRD):
        passwords = set()
        for secret, role in (
            ("postgres-credentials", "polite"),
            ("postgres-owner-credentials", "polite_owner"),
            ("postgres-app-credentials", "polite_app"),
        ):
            database = cluster.get(path("Secret", secret, namespace))
            assert set(database["data"]) == {"username", "password", "dbname", "host", "port", "uri"}
            password = secret_text(database, "password")
            assert secret_text(database, "uri") == (
                f"postgresql://{role}:{password}@postgres.{namespace}.svc.cluster.local:5432/polite"
            )
            passwords.add(password)
        assert len(passwords) == 3
    keys = json.loads(secret_text(cluster.get(path("Secret", "tracker-keys", namespace)), "keys.json"))
    assert keys["versions"], "the tracker's key file holds no version"
    master = cluster.get(path("Secret", f"polite-{acme.name}-keys", OPERATOR_NAMESPACE))
    assert master is not None and {"kek", "master.json"} <= set(master["data"])
    assert_nothing_revealed(cluster, operator, acme.name)


def assert_nothing_revealed(cluster: Cluster, operator: Operator, name: str) -> None:
    """No secret value of tenant ``name`` in the tenant object, any Event, or the operator's log."""
    values = secret_values(cluster, name)
    assert len(values) >= 6, "too few secret values found to make the check mean anything"
    tenant = json.dumps(cluster.tenant(name))
    events = json.dumps(
        cluster.items(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/events")
        + cluster.items(f"/api/v1/namespaces/polite-{name}/events")
    )
    for where, text in (("the tenant", tenant), ("Events", events), ("the operator's log", operator.process.logs())):
        assert not revealing(text, values), f"secret values in {where}: {revealing(text, values)}"


# -- what it costs: requests to Ready, and a resync that writes nothing ---------------------------------


@emulator_only
def test_requests_to_bring_one_tenant_to_ready(acme: ReadyTenant) -> None:
    verbs = by_verb(acme.requests)
    writes = writes_by_resource(acme.requests)
    print(f"\none tenant to Ready: {len(acme.requests)} requests by verb {verbs}; writes {writes}")
    # 18 children (the operator's RoleBinding for Secrets among them), 5 owned Secrets and the master
    # key Secret are each created once; the rest are a few Events, kopf's finalizer and last-handled
    # annotation, and status patches as parts turn ready.
    assert writes.get("create namespaces") == 1
    assert sum(n for w, n in writes.items() if w.startswith("create ") and "events" not in w) == 18 + 5 + 1
    assert sum(writes.values()) <= 45, writes
    assert len(acme.requests) <= 250, verbs


def reconciles(operator: Operator, trigger: str) -> float:
    """How many reconciles the operator counted for one trigger (its metrics)."""
    status, text = http_get(f"http://127.0.0.1:{operator.metrics_port}/metrics")
    pattern = rf'^polite_reconcile_duration_seconds_count\{{trigger="{trigger}"\}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found[1]) if status == 200 and found else 0.0


@emulator_only
def test_resync_of_unchanged_tenants_sends_no_request(cluster: Cluster, operator: Operator, acme: ReadyTenant) -> None:
    """The resync compares with the watched state: an unchanged tenant costs neither a read nor a write."""
    wait_ready(cluster, operator, acme.name)
    tenants = len(cluster.items(TENANTS))
    time.sleep(RESYNC)  # let the events of the last writes settle
    before = reconciles(operator, "resync")
    mark = cluster.mark()
    time.sleep(RESYNCS * RESYNC + 0.5)
    seen = cluster.operator_requests(mark)
    looked = reconciles(operator, "resync") - before
    print(
        f"\n{RESYNCS} resyncs of {tenants} unchanged tenant(s): {looked:g} reconciles, {len(seen)} requests by "
        f"verb {by_verb(seen)}"
    )
    assert looked >= RESYNCS - 1, "the resync timer did not look at the tenant"
    assert [f"{r.verb} {r.path}" for r in seen if not r.verb == "watch"] == []


# -- changes: the spec, hand edits, keys -----------------------------------------------------------------


def settings_of(cluster: Cluster, namespace: str) -> dict[str, Any]:
    configmap = cluster.get(path("ConfigMap", "tracker-settings", namespace)) or {}
    return dict(yaml.safe_load((configmap.get("data") or {}).get("settings.yaml") or "{}") or {})


def test_spec_change_reaches_the_tracker_and_the_settings(
    cluster: Cluster, operator: Operator, acme: ReadyTenant
) -> None:
    before = wait_ready(cluster, operator, acme.name)
    replicas = before["spec"]["tracker"]["replicas"] + 1
    segment = before["spec"]["tracking"]["minSegmentSize"] + 10
    changed = cluster.patch_tenant(
        acme.name, {"spec": {"tracker": {"replicas": replicas}, "tracking": {"minSegmentSize": segment}}}
    )
    generation = changed["metadata"]["generation"]
    assert generation == before["metadata"]["generation"] + 1

    def followed() -> bool:
        tracker = cluster.get(path("StatefulSet", "tracker", acme.namespace)) or {}
        observed = ((cluster.tenant(acme.name) or {}).get("status") or {}).get("observedGeneration")
        return (
            tracker.get("spec", {}).get("replicas") == replicas
            and settings_of(cluster, acme.namespace).get("min_segment_size") == segment
            and observed == generation
        )

    operator.wait_for(followed, "the StatefulSet, the settings and observedGeneration to follow the spec")
    assert "ObjectUpdated" in cluster.reasons(acme.name, acme.uid)
    after = wait_ready(cluster, operator, acme.name)
    assert all(c["observedGeneration"] == generation for c in after["status"]["conditions"])


def test_children_deleted_or_edited_by_hand_are_restored(
    cluster: Cluster, operator: Operator, acme: ReadyTenant
) -> None:
    wait_ready(cluster, operator, acme.name)
    namespace = acme.namespace
    tracker = cluster.get(path("StatefulSet", "tracker", namespace))
    configmap = cluster.get(path("ConfigMap", "tracker-settings", namespace))
    restored_before = cluster.reasons(acme.name, acme.uid).count("ObjectRestored")
    cluster.write("DELETE", path("StatefulSet", "tracker", namespace))
    tampered = "tenant_id: someone-else\nmin_segment_size: 1\n"
    cluster.write("PATCH", path("ConfigMap", "tracker-settings", namespace), {"data": {"settings.yaml": tampered}})

    def restored() -> bool:
        again = cluster.get(path("StatefulSet", "tracker", namespace))
        settings = cluster.get(path("ConfigMap", "tracker-settings", namespace)) or {}
        return (
            again is not None
            and again["metadata"]["uid"] != tracker["metadata"]["uid"]
            and settings.get("data") == configmap["data"]
        )

    operator.wait_for(restored, "the StatefulSet re-created and the ConfigMap restored", timeout=WAIT + 3 * RESYNC)

    def told() -> list[str]:  # the Events follow the writes they tell of
        messages = [e["message"] for e in cluster.events(acme.name, acme.uid) if e["reason"] == "ObjectRestored"]
        return messages if len(messages) - restored_before >= 2 else []

    messages = operator.wait_for(told, "an ObjectRestored Event for each object", timeout=5.0)
    assert any(f"StatefulSet {namespace}/tracker" in m for m in messages), messages
    assert any(f"ConfigMap {namespace}/tracker-settings" in m for m in messages), messages
    wait_ready(cluster, operator, acme.name)


def legacy_tracker(name: str) -> dict[str, Any]:
    """The tracker Deployment operator versions before the StatefulSet made (its spool on an emptyDir)."""
    selector = {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": "tracker"}
    pod = {
        "metadata": {"labels": selector},
        "spec": {
            "containers": [{"name": "tracker", "image": "politetenant/polite-tracker:0.1.0", "args": ["serve"]}],
            "volumes": [{"name": "spool", "emptyDir": {"sizeLimit": "1Gi"}}],
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "tracker", "labels": {**selector, "polite.io/tenant": name}},
        "spec": {"replicas": 2, "selector": {"matchLabels": selector}, "template": pod},
    }


@emulator_only
def test_the_tracker_deployment_of_an_earlier_version_serves_until_the_statefulset_does(
    cluster: Cluster, operator: Operator
) -> None:
    name = unique("upgrade")
    namespace = f"polite-{name}"
    uid = cluster.create_tenant(name)["metadata"]["uid"]
    provisioned(cluster, operator, name)
    deployment = path("Deployment", "tracker", namespace)
    cluster.write(
        "POST", path("Deployment", namespace=namespace), legacy_tracker(name), content_type="application/json"
    )
    time.sleep(2 * RESYNC + 0.5)  # resyncs and rollout re-checks, while no StatefulSet pod serves yet
    assert cluster.get(deployment) is not None, "the old tracker was removed before a new one served"

    roll_out(cluster, namespace)

    operator.wait_for(lambda: cluster.get(deployment) is None, "the old tracker Deployment to go")
    told = [e["message"] for e in cluster.events(name, uid) if e["reason"] == "ObjectUpdated"]
    assert any(f"removed Deployment {namespace}/tracker" in message for message in told), told
    wait_ready(cluster, operator, name)


def pod_keys_version(cluster: Cluster, namespace: str) -> str | None:
    tracker = cluster.get(path("StatefulSet", "tracker", namespace)) or {}
    template = (tracker.get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(VERSION_ANNOTATION)


def test_rotate_keys_annotation_rotates_once(cluster: Cluster, operator: Operator, acme: ReadyTenant) -> None:
    before = wait_ready(cluster, operator, acme.name)["status"]["keys"]
    assert pod_keys_version(cluster, acme.namespace) == str(before["version"])
    request = unique("rotation")
    cluster.patch_tenant(acme.name, {"metadata": {"annotations": {"polite.io/rotate-keys": request}}})

    def rotated() -> dict[str, Any] | None:
        keys = ((cluster.tenant(acme.name) or {}).get("status") or {}).get("keys") or {}
        return keys if keys.get("version") == before["version"] + 1 else None

    keys = operator.wait_for(rotated, "status.keys.version to grow by one")
    assert keys["rotatedAt"] and keys["rotatedAt"] >= before["rotatedAt"]
    operator.wait_for(
        lambda: pod_keys_version(cluster, acme.namespace) == str(keys["version"]),
        "the tracker's pod template to carry the new key version",
    )
    assert cluster.reasons(acme.name, acme.uid).count("KeysRotated") == 1
    # The same request again, with another change that makes kopf run the update handler, then resyncs.
    cluster.patch_tenant(
        acme.name, {"metadata": {"annotations": {"polite.io/rotate-keys": request, "e2e.polite.io/touched": "yes"}}}
    )
    time.sleep(2 * RESYNC + 0.5)
    after = wait_ready(cluster, operator, acme.name)
    assert after["status"]["keys"]["version"] == keys["version"], "the same request value rotated twice"
    assert cluster.reasons(acme.name, acme.uid).count("KeysRotated") == 1
    assert_nothing_revealed(cluster, operator, acme.name)


def run_plugin(cluster: Cluster, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = kubectl_plugin.main(["--kubeconfig", str(cluster.kubeconfig), *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_kubectl_polite_status_and_rotate_keys(cluster: Cluster, operator: Operator, acme: ReadyTenant) -> None:
    tenant = wait_ready(cluster, operator, acme.name)
    code, out, err = run_plugin(cluster, "status", acme.name)
    assert code == 0, err
    assert "Phase:           Ready" in out
    for kind, reason in EVERY_PART_READY.items():
        assert re.search(rf"^{kind}\s+True\s+{reason}\s", out, re.MULTILINE), out
    assert "KeysCreated" in out  # its Events, found where the operator posts them
    version = tenant["status"]["keys"]["version"]
    code, out, err = run_plugin(cluster, "rotate-keys", acme.name, "--wait", "--timeout", f"{WAIT:g}s")
    assert code == 0, err
    assert f"Keys rotated: version {version + 1}." in out
    wait_ready(cluster, operator, acme.name)


# -- the operator's own endpoints -------------------------------------------------------------------------


def test_healthz_answers_on_the_liveness_port(operator: Operator, acme: ReadyTenant) -> None:
    status, body = http_get(f"http://127.0.0.1:{operator.liveness_port}/healthz")
    assert status == 200
    assert json.loads(body)["tenants"] >= 1


def test_metrics_count_tenants_by_phase(cluster: Cluster, operator: Operator, acme: ReadyTenant) -> None:
    wait_ready(cluster, operator, acme.name)

    def ready_tenants() -> float:
        status, text = http_get(f"http://127.0.0.1:{operator.metrics_port}/metrics")
        found = re.search(rf'^polite_tenants\{{phase="Ready",region="{REGION}"\}} (\S+)$', text, re.MULTILINE)
        return float(found[1]) if status == 200 and found else 0.0

    assert operator.wait_for(ready_tenants, "polite_tenants to count the Ready tenant", timeout=2 * RESYNC + 5) >= 1


# -- where nothing may be provisioned -----------------------------------------------------------------------


def test_unserved_region_is_reported_and_gets_nothing(cluster: Cluster, operator: Operator) -> None:
    name = unique("elsewhere")
    cluster.create_tenant(name, region=UNSERVED_REGION)

    def placed() -> dict[str, Any]:
        return condition(cluster.tenant(name) or {}, "Placement")

    placement = operator.wait_for(lambda: placed().get("reason"), "the Placement condition")
    assert placement == "RegionNotServed"
    tenant = cluster.tenant(name)
    assert condition(tenant, "Placement")["status"] == "False"
    assert tenant["status"]["phase"] == "Pending"
    assert cluster.get(path("Namespace", f"polite-{name}")) is None
    assert children(cluster, name) == set()
    assert cluster.get(path("Secret", f"polite-{name}-keys", OPERATOR_NAMESPACE)) is None


def test_cnpg_engine_without_its_crd_is_a_condition_not_a_crash(cluster: Cluster, operator: Operator) -> None:
    if cluster.has_crd(CNPG_CRD):
        pytest.skip("CloudNativePG is installed in this cluster")
    name = unique("nocnpg")
    cluster.create_tenant(name, database={"engine": "cnpg"})

    def database() -> dict[str, Any]:
        return condition(cluster.tenant(name) or {}, "DatabaseReady")

    operator.wait_for(lambda: database().get("reason") == "DatabaseEngineUnavailable", "DatabaseReady to say why")
    tenant = cluster.tenant(name)
    assert database()["status"] == "False" and "CloudNativePG" in database()["message"]
    assert tenant["status"]["phase"] == "Failed"
    namespace = f"polite-{name}"
    assert cluster.get(path("StatefulSet", "tracker", namespace)) is not None  # everything else is there
    assert cluster.get(path("StatefulSet", "postgres", namespace)) is None  # no engine it was not asked for
    mark = cluster.mark() if cluster.emulated else 0
    time.sleep(2 * RESYNC + 0.5)
    assert operator.process.alive
    if cluster.emulated:  # a failing tenant is not retried in a loop: its resyncs write nothing either
        others = [other for other in cluster.tenants_made if other != name]
        writes = [r for r in cluster.operator_requests(mark) if r.write and not any(o in r.path for o in others)]
        assert writes == [], writes
    assert "OperatorError" not in cluster.reasons(name)
    assert "Traceback" not in operator.process.logs()


# -- legal hold and deletion ---------------------------------------------------------------------------------


def provisioned(cluster: Cluster, operator: Operator, name: str) -> dict[str, Any]:
    """The tenant once its namespace and keys exist (Ready is not needed to delete it)."""

    def done() -> dict[str, Any] | None:
        tenant = cluster.tenant(name) or {}
        keys = condition(tenant, "KeysReady").get("status") == "True"
        return tenant if keys and condition(tenant, "NamespaceReady").get("status") == "True" else None

    return operator.wait_for(done, f"tenant {name} provisioned")


def test_legal_hold_blocks_deletion_until_lifted_then_retain_keeps_the_data(
    cluster: Cluster, operator: Operator
) -> None:
    name = unique("held")
    namespace = f"polite-{name}"
    uid = cluster.create_tenant(name)["metadata"]["uid"]
    provisioned(cluster, operator, name)
    cluster.patch_tenant(name, {"spec": {"legalHold": True}})
    operator.wait_for(
        lambda: (cluster.get(path("CronJob", "retention", namespace)) or {}).get("spec", {}).get("suspend") is True,
        "retention to be suspended by the hold",
    )
    assert cluster.request("DELETE", f"{TENANTS}/{name}").status == 202  # the operator's finalizer holds it

    def held() -> dict[str, Any] | None:
        tenant = cluster.tenant(name) or {}
        blocked = condition(tenant, "Ready").get("reason") == "LegalHold"
        return tenant if blocked and (tenant.get("status") or {}).get("phase") == "Deleting" else None

    tenant = operator.wait_for(held, "the deletion to be shown as blocked by the legal hold")
    assert tenant["metadata"]["deletionTimestamp"]
    assert "LegalHold" in cluster.reasons(name, uid)
    time.sleep(RESYNC + 0.5)  # a recheck later, still held
    assert cluster.tenant(name) is not None and cluster.get(path("Namespace", namespace)) is not None
    assert cluster.reasons(name, uid).count("LegalHold") == 1, "the hold is told once, not on every recheck"

    code, out, err = run_plugin(cluster, "legal-hold", name, "off")
    assert code == 0, err
    assert "deletion now proceeds (deletionPolicy Retain)" in out
    operator.wait_for(lambda: cluster.tenant(name) is None, "the tenant to be deleted once the hold is lifted")
    left = cluster.get(path("Namespace", namespace))
    assert left is not None, "deletionPolicy Retain removed the namespace"
    assert left["metadata"]["labels"]["polite.io/orphaned"] == "true"
    assert cluster.get(path("Secret", "tracker-keys", namespace)) is not None
    if cluster.emulated:  # the emulator's garbage collector has run: the tracker went with its owner
        operator.wait_for(
            lambda: cluster.get(path("StatefulSet", "tracker", namespace)) is None, "the tracker to be collected"
        )
    fence = {p["metadata"]["name"] for p in cluster.items(path("NetworkPolicy", namespace=namespace))}
    assert {"default-deny", "database-ingress"} <= fence, f"the retained database lost its fence: {fence}"
    assert cluster.get(path("ResourceQuota", "tenant-quota", namespace)) is not None
    assert cluster.get(path("Secret", f"polite-{name}-keys", OPERATOR_NAMESPACE)) is not None, "keys were destroyed"
    assert "Orphaned" in cluster.reasons(name, uid)


def test_delete_policy_removes_the_namespace_then_shreds_the_keys(cluster: Cluster, operator: Operator) -> None:
    name = unique("shred")
    namespace = f"polite-{name}"
    uid = cluster.create_tenant(name, deletionPolicy="Delete")["metadata"]["uid"]
    provisioned(cluster, operator, name)
    master = path("Secret", f"polite-{name}-keys", OPERATOR_NAMESPACE)
    assert cluster.get(master) is not None
    cluster.write("DELETE", f"{TENANTS}/{name}")
    operator.wait_for(lambda: cluster.tenant(name) is None, "the tenant to be deleted")
    assert cluster.get(path("Namespace", namespace)) is None
    assert cluster.get(master) is None, "the master key Secret survived: not crypto-shredded"
    told = cluster.reasons(name, uid)
    assert told.index("NamespaceDeleting") < told.index("CryptoShredded"), told


# -- CloudNativePG present, and peering ------------------------------------------------------------------------


@contextlib.contextmanager
def cnpg_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Operator]]:
    """An emulator with CloudNativePG's CRD and the chart's peering, and an operator in that peering."""
    with running_kube_api(cnpg=True, crds=(POLITETENANT_CRD, PEERING_CRD)) as handle:
        cluster = Cluster(handle.kubeconfig_path, handle)
        ensure_operator_namespace(cluster)
        cluster.write(
            "POST",
            "/apis/kopf.dev/v1/clusterkopfpeerings",
            {"metadata": {"name": PEERING}},
            content_type="application/json",
        )
        process = start_operator(
            cluster.kubeconfig, extra_args=operator_args(peering=True), log_path=tmp_path / "operator.log"
        )
        try:
            yield cluster, Operator(process, 0, 0, None)
        finally:
            process.stop()


def test_cnpg_cluster_instead_of_a_statefulset_when_its_crd_exists(
    cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    if REAL:
        if not cluster.has_crd(CNPG_CRD):
            pytest.skip("CloudNativePG is not installed in this cluster")
        check_cnpg_tenant(cluster, operator)
        return
    with cnpg_cluster(tmp_path) as (other, other_operator):
        check_cnpg_tenant(other, other_operator)
        peers = (other.get(f"/apis/kopf.dev/v1/clusterkopfpeerings/{PEERING}") or {}).get("status") or {}
        assert len(peers) == 1, f"the operator did not join peering {PEERING}: {peers}"


def check_cnpg_tenant(cluster: Cluster, operator: Operator) -> None:
    name = unique("pg")
    namespace = f"polite-{name}"
    cluster.create_tenant(name)
    tenant = wait_ready(cluster, operator, name)
    assert cluster.get(path("Cluster", "postgres", namespace)) is not None
    assert cluster.get(path("StatefulSet", "postgres", namespace)) is None
    assert cluster.get(path("Secret", "postgres-credentials", namespace)) is None  # CloudNativePG writes postgres-app
    assert condition(tenant, "DatabaseReady")["message"].startswith("Cluster postgres")


# -- twenty tenants ----------------------------------------------------------------------------------------------


@emulator_only
def test_twenty_tenants_cost_and_quiet_resyncs(tmp_path: Path) -> None:
    with running_kube_api() as handle:
        cluster = Cluster(handle.kubeconfig_path, handle)
        ensure_operator_namespace(cluster)
        process = start_operator(
            cluster.kubeconfig, extra_args=operator_args(peering=False), log_path=tmp_path / "operator.log"
        )
        operator = Operator(process, 0, 0, None)
        try:
            wait_started(cluster, operator)
            names = [f"scale-{i:02d}-{SUFFIX}" for i in range(SCALE_TENANTS)]
            mark = cluster.mark()
            for name in names:
                cluster.create_tenant(name)
            pending = set(names)

            def all_ready() -> bool:
                for name in sorted(pending):
                    tenant = cluster.tenant(name) or {}
                    status = tenant.get("status") or {}
                    if status.get("namespace"):
                        roll_out(cluster, status["namespace"])
                    if status.get("phase") == "Ready":
                        pending.discard(name)
                return not pending

            operator.wait_for(all_ready, f"{SCALE_TENANTS} tenants Ready", timeout=WAIT + 30)
            to_ready = cluster.operator_requests(mark)
            time.sleep(RESYNC)  # the last status writes land
            mark = cluster.mark()
            time.sleep(RESYNCS * RESYNC + 0.5)
            resyncs = cluster.operator_requests(mark)
        finally:
            process.stop()
    writes = [f"{r.verb} {r.path}" for r in resyncs if r.write]
    per_tenant = len(to_ready) / SCALE_TENANTS
    print(
        f"\n{SCALE_TENANTS} tenants to Ready: {len(to_ready)} requests ({per_tenant:.1f} per tenant) by verb "
        f"{by_verb(to_ready)}; writes {writes_by_resource(to_ready)}"
        f"\n{RESYNCS} resyncs of {SCALE_TENANTS} unchanged tenants: {len(resyncs)} requests by verb "
        f"{by_verb(resyncs)}, {len(writes)} writes"
    )
    assert writes == []
    assert sum(1 for r in to_ready if r.write) <= 40 * SCALE_TENANTS
    assert per_tenant <= 250
