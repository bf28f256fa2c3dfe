"""The whole tenant stack as a customer gets it, run as one: nothing here stands in for product code.

The real ``polite-operator run`` provisions tenants in the Kubernetes API emulator; the pod runner
(``tests/fakes/pod_runner.py``, the kubelet, kube-proxy and workload controllers of these tests) runs
every pod it renders as local processes: the trackers, their migrate init containers, the tenant's
PostgreSQL StatefulSet with its roles container, the retention CronJob's Job. The test talks to the
tenant only as a customer, an SRE or a cluster would: through the API server, the tenant's Services
(public routes and API on ``tracker``, the database on ``postgres``) and the operator's Secrets.

The steps share one tenant (``acme``, two tracker replicas) and run in order:
apply -> Ready only once the trackers answer; a customer's first message with the operator's tokens;
key rotation; a database outage under load with a rollout in the middle; retention and legal hold;
offboarding with Retain. A second tenant (``globex``, deletionPolicy Delete) is crypto-shredded at the
end, and a dump of its database taken before is shown to open with no key left anywhere.

Figures each step measured are printed (``-s`` shows them) and collected for the session note.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import json
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import pytest

from politetenant.crypto import KeyMaterialError, Keyring, LocalKeyProvider, RowId, Sealer, SealError
from politetenant.operator.keys.local import LocalTenantKeys, master_secret_name
from politetenant.tracker.privacy import reseal
from tests.e2e.operator_process import OperatorProcess, as_the_chart_runs_it, start_operator
from tests.fakes.kube_server import KubeApiHandle, running_kube_api
from tests.fakes.pod_runner import PodRunner
from tests.support import UA_CHROME, UA_OUTLOOK, message_body

T = TypeVar("T")

# The pod runner gives pods namespaces of their own, so this needs root (as CI has); without it the
# runner's start fails saying so.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TENANTS = "/apis/polite.io/v1alpha1/politetenants"
MERGE = "application/merge-patch+json"
OPERATOR_NAMESPACE = "politetenant-system"
OPERATOR_ARGS = ("--standalone", "--all-namespaces", "--resync-seconds", "2", "--metrics-port", "0")
# The node the pod runner plays: in the AWS region of eu-ireland, where the tenants' pods are pinned.
NODE_LABELS = {"topology.kubernetes.io/region": "eu-west-1", "topology.kubernetes.io/zone": "eu-west-1a"}
TIME_SCALE = 0.2  # the pods' probe periods, grace periods and back-offs, scaled
WAIT = 240.0
SCANNER_WINDOW = 2.5  # a little over the tenant's earlyHitSeconds: hits sooner after the first count as machines
FIGURES: dict[str, Any] = {}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A click's 302 is the answer under test, not something to follow."""

    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


@dataclass
class Stack:
    api: KubeApiHandle
    operator: OperatorProcess
    runner: PodRunner
    state: dict[str, Any] = field(default_factory=dict)

    def wait_for(self, predicate: Callable[[], T | None], what: str, timeout: float = WAIT) -> T:
        deadline = time.monotonic() + timeout
        while True:
            found = predicate()
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what}\n{self.operator.logs()[-3000:]}"
                )
            time.sleep(0.2)

    def get(self, api_path: str) -> dict[str, Any] | None:
        answer = self.api.request("GET", api_path)
        return None if answer.status == 404 else dict(answer.body)

    def tenant(self, name: str) -> dict[str, Any] | None:
        return self.get(f"{TENANTS}/{name}")

    def patch_tenant(self, name: str, patch: dict[str, Any]) -> None:
        answer = self.api.request("PATCH", f"{TENANTS}/{name}", patch, content_type=MERGE)
        assert answer.status == 200, answer.body

    def secret(self, namespace: str, name: str) -> dict[str, str]:
        found = self.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        assert found is not None, f"Secret {namespace}/{name} is missing"
        return {k: base64.b64decode(v).decode() for k, v in (found.get("data") or {}).items()}

    def trackers(self, namespace: str) -> list[dict[str, Any]]:
        return self.runner.pods(namespace, {"app.kubernetes.io/component": "tracker"})

    def url(self, namespace: str, path: str) -> str:
        host, port = self.runner.service(namespace, "tracker", 80)
        return f"http://{host}:{port}{path}"

    def database(self, namespace: str) -> str:
        """The superuser DSN of the tenant's PostgreSQL, reached through its Service, as an SRE would."""
        login = self.secret(namespace, "postgres-credentials")
        host, port = self.runner.service(namespace, "postgres", 5432)
        return f"postgresql://{login['username']}:{login['password']}@{host}:{port}/{login['dbname']}"


def condition(tenant: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    conditions = ((tenant or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def http(
    method: str, url: str, body: Any = None, *, token: str | None = None, agent: str = UA_CHROME
) -> tuple[int, Any]:
    headers = {"User-Agent": agent}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _opener.open(request, timeout=30) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def sql(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def count_events(stack: Stack, namespace: str) -> int:
    return int(sql(stack.database(namespace), "SELECT count(*) FROM events")[0][0])


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "polite.io/v1alpha1",
        "kind": "PoliteTenant",
        "metadata": {"name": name},
        "spec": {"displayName": f"Stack {name}", "region": "eu-ireland", **spec},
    }


def apply_and_wait_ready(stack: Stack, name: str, **spec: Any) -> float:
    """Create the tenant; the seconds until it is Ready. Ready must mean every tracker answers."""
    started = time.monotonic()
    answer = stack.api.request("POST", TENANTS, manifest(name, **spec))
    assert answer.status == 201, answer.body
    namespace = f"polite-{name}"

    def ready() -> dict[str, Any] | None:
        found = stack.tenant(name)
        return found if condition(found, "Ready").get("status") == "True" else None

    tenant = stack.wait_for(ready, f"tenant {name} to be Ready")
    seconds = time.monotonic() - started
    # At the moment the operator says Ready, every tracker pod passed its readiness probe and the
    # Service answers: an unknown token is the tracker's own 404, not a connection refused.
    trackers = stack.trackers(namespace)
    assert trackers and all(pod_ready(p) for p in trackers), [p["metadata"]["name"] for p in trackers]
    assert len(trackers) == tenant["spec"]["tracker"]["replicas"]
    status, body = http("GET", stack.url(namespace, "/o/not-a-token.gif"))
    assert (status, body["error"]) == (404, "not_found"), body
    return seconds


def open_and_click(stack: Stack, namespace: str, tokens: list[str], opens: int, clicks: int) -> None:
    for token in tokens[:opens]:
        status, _ = http("GET", stack.url(namespace, f"/o/{token}.gif"), agent=UA_OUTLOOK)
        assert status == 200
    for token in tokens[:clicks]:
        status, _ = http("GET", stack.url(namespace, f"/c/{token}/1"))
        assert status == 302


def report(stack: Stack, namespace: str, message_id: str, token: str) -> dict[str, Any]:
    status, body = http("GET", stack.url(namespace, f"/api/v1/messages/{message_id}/report"), token=token)
    assert status == 200, body
    return dict(body)


def wait_report(stack: Stack, namespace: str, message_id: str, token: str, **figures: int) -> dict[str, Any]:
    """The report once its people's figures read as expected (events reach the database in batches)."""

    def settled() -> dict[str, Any] | None:
        found = report(stack, namespace, message_id, token)
        got = {
            "opens_unique": found["opens"]["unique"],
            "opens_total": found["opens"]["total"],
            "clicks_unique": found["clicks"]["unique"],
            "clicks_total": found["clicks"]["total"],
        }
        return found if all(got[k] == v for k, v in figures.items()) else None

    return stack.wait_for(settled, f"the report of {message_id} to show {figures}", 60)


def token_version(token: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))[:2], "big")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("stack")
    # RBAC as a cluster has it: the operator runs as the chart's ServiceAccount under the chart's roles.
    with running_kube_api(rbac=True) as api:
        assert api.request("POST", "/api/v1/namespaces", {"metadata": {"name": OPERATOR_NAMESPACE}}).status == 201
        kubeconfig, config = as_the_chart_runs_it(api, OPERATOR_NAMESPACE, logs)
        operator = start_operator(
            kubeconfig,
            extra_args=[*OPERATOR_ARGS, "--config", str(config)],
            log_path=logs / "operator.log",
        )
        try:
            with PodRunner(api, time_scale=TIME_SCALE, node_labels=NODE_LABELS) as runner:
                yield Stack(api, operator, runner)
                assert runner.errors == []
        finally:
            operator.stop()
            print("\nstack figures:", json.dumps(FIGURES, indent=2))


# -- 1 and 2: provisioned, and used as README tells a customer ---------------------------------------


def test_a_tenant_is_ready_once_its_trackers_answer_and_its_customer_can_use_it(stack: Stack) -> None:
    # The tenant's judging windows travel spec -> ConfigMap -> tracker: a 2 s early window after the first hit.
    judging = {"earlyHitSeconds": 2}
    FIGURES["apply_to_ready_seconds"] = round(
        apply_and_wait_ready(stack, "acme", tracker={"replicas": 2}, judging=judging), 1
    )
    namespace = "polite-acme"
    tokens = stack.secret(namespace, "tracker-api-tokens")  # kubectl get secret ... | base64 -d
    assert set(tokens) == {"sender", "analyst", "privacy"}
    stack.state["tokens"] = tokens

    status, message = http("POST", stack.url(namespace, "/api/v1/messages"), message_body(12), token=tokens["sender"])
    assert status == 201, message
    assert "/o/{{polite_token}}.gif" in message["html_template"]
    recipients = [r["token"] for r in message["recipients"]]
    assert len(recipients) == 12 and all(recipients)
    stack.state.update(message_id=message["id"], recipients=recipients)

    # Delivery: a script fetches a beacon (the message's first hit), and a person who opens within the
    # early window after it is taken for the gateway's scan that comes with delivery.
    assert http("GET", stack.url(namespace, f"/o/{recipients[11]}.gif"), agent="python-httpx/0.27.0")[0] == 200
    assert http("GET", stack.url(namespace, f"/o/{recipients[10]}.gif"), agent=UA_OUTLOOK)[0] == 200
    time.sleep(SCANNER_WINDOW)
    open_and_click(stack, namespace, recipients, opens=10, clicks=5)
    http("GET", stack.url(namespace, f"/o/{recipients[0]}.gif"), agent=UA_OUTLOOK)  # one person opens twice
    found = wait_report(
        stack,
        namespace,
        message["id"],
        tokens["analyst"],
        opens_unique=10,
        opens_total=11,
        clicks_unique=5,
        clicks_total=5,
    )
    assert found["suppressed"] is False and found["recipients"] == 12
    # Two machine copies (the script, the early open): fewer than the minimum segment, so not shown,
    # and "bots" adds up only what is shown.
    assert found["machine"] is None and found["bots"] == {"opens": 0, "clicks": 0}

    # Each token does what its role may, and no more.
    status, body = http("GET", stack.url(namespace, f"/api/v1/messages/{message['id']}/report"), token=tokens["sender"])
    assert (status, body["error"]) == (403, "forbidden"), body
    status, access = http(
        "POST", stack.url(namespace, "/api/v1/subjects/access"), {"email": "person000003@example.com"},
        token=tokens["privacy"],
    )  # fmt: skip
    assert status == 200, access
    assert [m["id"] for m in access["messages"]] == [message["id"]]
    status, body = http("GET", stack.url(namespace, "/metrics"))
    assert status == 404, "metrics must not be on the port the Ingress routes"


# -- 3: key rotation ----------------------------------------------------------------------------------


def test_rotating_keys_replaces_the_trackers_and_old_tokens_still_count(stack: Stack) -> None:
    namespace, tokens = "polite-acme", stack.state["tokens"]
    before = {p["metadata"]["uid"] for p in stack.trackers(namespace)}
    stack.patch_tenant("acme", {"metadata": {"annotations": {"polite.io/rotate-keys": "stack-1"}}})

    def rotated() -> list[dict[str, Any]] | None:
        tenant = stack.tenant("acme") or {}
        pods = stack.trackers(namespace)
        fresh = [p for p in pods if p["metadata"]["uid"] not in before and pod_ready(p)]
        version = ((tenant.get("status") or {}).get("keys") or {}).get("version")
        return fresh if version == 2 and len(fresh) == 2 and len(pods) == 2 else None

    started = time.monotonic()
    stack.wait_for(rotated, "both trackers to be replaced with key version 2")
    FIGURES["rotation_to_new_trackers_seconds"] = round(time.monotonic() - started, 1)

    status, message = http("POST", stack.url(namespace, "/api/v1/messages"), message_body(10), token=tokens["sender"])
    assert status == 201, message
    assert {token_version(r["token"]) for r in message["recipients"]} == {2}, "new data is not under the new keys"
    # A token mailed before the rotation (version 1) still counts.
    old = stack.state["recipients"]
    assert token_version(old[11]) == 1
    time.sleep(SCANNER_WINDOW)
    open_and_click(stack, namespace, [old[11]], opens=1, clicks=0)
    wait_report(stack, namespace, stack.state["message_id"], tokens["analyst"], opens_unique=11, opens_total=12)
    stored = sql(stack.database(namespace), "SELECT subject FROM messages WHERE id = $1", message["id"])
    assert Sealer.version_of(bytes(stored[0][0])) == 2, "the new message's subject is sealed with version 1"


# -- 4: the database goes away under load, and the trackers roll meanwhile -----------------------------


class Load:
    """Beacon hits from a thread, as mail clients send them, counting what was answered 2xx."""

    def __init__(self, stack: Stack, namespace: str, tokens: list[str]) -> None:
        self.stack, self.namespace, self.tokens = stack, namespace, tokens
        self.accepted = self.refused = self.failed = 0
        self.phase = "outage"
        self.failures: list[tuple[float, str]] = []
        self.answered: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            token = self.tokens[i % len(self.tokens)]
            i += 1
            try:
                status, _ = http("GET", self.stack.url(self.namespace, f"/o/{token}.gif"), agent=UA_OUTLOOK)
            except OSError:
                self.failed += 1
                self.failures.append((time.monotonic(), self.phase))
                continue
            if 200 <= status < 300:
                self.accepted += 1
                self.answered.append(time.monotonic())
            else:
                self.refused += 1

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_a_database_outage_under_load_and_a_rollout_lose_no_accepted_hit(stack: Stack) -> None:
    namespace = "polite-acme"
    before = count_events(stack, namespace)
    stack.runner.stop_database(namespace)
    with Load(stack, namespace, stack.state["recipients"]) as load:
        time.sleep(3)
        # The spool takes the hits: every tracker stays Ready, in the Service, answering 200.
        assert all(pod_ready(p) for p in stack.trackers(namespace))
        assert load.accepted > 0 and load.refused == 0, (load.accepted, load.refused)
        during_outage = load.accepted
        # Roll the trackers while the database is still down (a settings change rolls them).
        uids = {p["metadata"]["uid"] for p in stack.trackers(namespace)}
        load.phase = "rolling while down"
        stack.patch_tenant("acme", {"spec": {"tracking": {"minSegmentSize": 11}}})
        stack.wait_for(
            lambda: any(p["metadata"]["uid"] not in uids for p in stack.trackers(namespace)),
            "the rollout to replace a tracker pod",
        )
        time.sleep(2)
        stack.runner.start_database(namespace)
        load.phase = "database back, rollout finishing"
        stack.wait_for(
            lambda: (
                len(pods := stack.trackers(namespace)) == 2
                and all(p["metadata"]["uid"] not in uids and pod_ready(p) for p in pods)
            ),
            "the rollout to finish once the database is back",
        )
        time.sleep(1)
    accepted = load.accepted
    assert load.refused == 0, f"{load.refused} hits were refused"
    # Every link in sent mail kept working: no hit found the Service without a tracker behind it.
    assert load.failed == 0, f"{load.failed} hits found no tracker: {collections.Counter(p for _, p in load.failures)}"
    stored = stack.wait_for(
        lambda: (n := count_events(stack, namespace)) >= before + accepted and n,
        f"all {accepted} accepted hits to be in the database",
        90,
    )
    assert stored == before + accepted, f"{stored - before} stored for {accepted} accepted"
    FIGURES["outage"] = {
        "accepted_while_down_before_the_roll": during_outage,
        "accepted_in_all": accepted,
        "stored": stored - before,
        "failed_connections": load.failed,
        "longest_unanswered_seconds": round(max((b - a for a, b in itertools.pairwise(load.answered)), default=0), 2),
        "failures_by_phase": dict(collections.Counter(phase for _, phase in load.failures)),
    }
    stack.wait_for(lambda: condition(stack.tenant("acme"), "Ready").get("status") == "True", "acme to be Ready again")


# -- 5: retention, and a legal hold ---------------------------------------------------------------------


def test_retention_deletes_old_rows_and_a_legal_hold_stops_it(stack: Stack) -> None:
    namespace, dsn = "polite-acme", stack.database("polite-acme")
    day_ms = 86_400_000
    total = count_events(stack, namespace)
    # Seed events older than the tenant's retention (395 days by default): age 20 of them.
    sql(dsn, f"UPDATE events SET occurred_at = occurred_at - 400 * {day_ms}::bigint WHERE event_id IN "
             "(SELECT event_id FROM events ORDER BY occurred_at LIMIT 20)")  # fmt: skip
    run = stack.runner.create_job_from_cronjob(namespace, "retention", "purge-now")
    assert run.succeeded, run.logs
    assert count_events(stack, namespace) == total - 20, run.logs
    old = int(
        sql(dsn, f"SELECT count(*) FROM events WHERE occurred_at < {int(time.time() * 1000) - 395 * day_ms}")[0][0]
    )
    assert old == 0

    stack.patch_tenant("acme", {"spec": {"legalHold": True}})
    stack.wait_for(
        lambda: (
            (stack.get(f"/apis/batch/v1/namespaces/{namespace}/cronjobs/retention") or {})
            .get("spec", {})
            .get("suspend")
        ),
        "the retention CronJob to be suspended by the hold",
    )

    def settings_held() -> bool:
        settings = stack.get(f"/api/v1/namespaces/{namespace}/configmaps/tracker-settings") or {}
        return "legal_hold: true" in settings.get("data", {}).get("settings.yaml", "")

    stack.wait_for(settings_held, "the tenant's settings to carry the hold")
    sql(dsn, f"UPDATE events SET occurred_at = occurred_at - 400 * {day_ms}::bigint WHERE event_id IN "
             "(SELECT event_id FROM events ORDER BY occurred_at LIMIT 5)")  # fmt: skip
    held = stack.runner.create_job_from_cronjob(namespace, "retention", "purge-held")
    assert held.succeeded and "legal hold" in held.logs, held.logs
    assert count_events(stack, namespace) == total - 20, "a purge under a legal hold deleted something"
    stack.patch_tenant("acme", {"spec": {"legalHold": False}})


# -- 6: offboarding -------------------------------------------------------------------------------------


def test_retain_keeps_data_keys_and_the_fence_around_the_retained_database(stack: Stack) -> None:
    namespace = "polite-acme"
    events = count_events(stack, namespace)
    assert stack.api.request("DELETE", f"{TENANTS}/acme").status in (200, 202)
    stack.wait_for(lambda: stack.tenant("acme") is None, "tenant acme to be deleted")
    stack.wait_for(lambda: not stack.trackers(namespace), "the trackers to go with their tenant")
    assert stack.get(f"/api/v1/namespaces/{namespace}") is not None
    assert stack.secret(namespace, "tracker-keys") and stack.secret(OPERATOR_NAMESPACE, "polite-acme-keys")
    policies = {
        p["metadata"]["name"]
        for p in stack.get(f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies")["items"]
    }
    assert {"default-deny", "database-ingress"} <= policies, policies
    assert stack.get(f"/api/v1/namespaces/{namespace}/resourcequotas/tenant-quota") is not None
    # Its Service went with the tenant; the retained database itself still runs: ask it in its pod.
    login = stack.secret(namespace, "postgres-credentials")
    query = f"PGPASSWORD='{login['password']}' psql -h 127.0.0.1 -U {login['username']} -d {login['dbname']} -tAc"
    code, output = stack.runner.exec(
        namespace, "postgres-0", ["sh", "-c", f"{query} 'SELECT count(*) FROM events'"], container="postgres"
    )
    assert (code, output.strip()) == (0, str(events)), output


def dump_sealed_values(dsn: str) -> list[tuple[str, bytes, RowId | None]]:
    """Every sealed value of the tenant's tables, with the field and the row it is bound to, as reseal
    reads them (so a value sealed in a column reseal does not know of would be missed by both)."""
    values = []
    for table in reseal.SEALED_TABLES:
        columns = [column for column, _ in table.columns]
        query = f"SELECT {', '.join([*table.identity, *columns])} FROM {table.name}"
        for row in sql(dsn, query):
            identity = table.row_of(tuple(row[: len(table.identity)]))
            for (_, name), value in zip(table.columns, row[len(table.identity) :], strict=True):
                if value is not None:
                    values.append((name, bytes(value), identity))
    return values


def keyrings_anywhere(stack: Stack, tenant_id: str) -> list[Keyring]:
    """Every keyring that any Secret left in the cluster can give, by the local provider's formats:
    a tenant's keys.json, or a master copy with its KEK."""
    found = []
    secrets = stack.get("/api/v1/secrets") or {}
    for secret in secrets.get("items") or []:
        data = {k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.get("data") or {}).items()}
        documents = list(data.values())
        if "kek" in data and "master.json" in data:  # the operator's master copy: rebuild a keys.json
            key_name = json.loads(data["master.json"]).get("key_name", "")
            local = LocalTenantKeys(lambda name, d=data: d, lambda *_: None, lambda *_: None)
            try:
                documents.append(json.dumps(local.new_wrapped_version(key_name, None)))
            except KeyMaterialError:
                pass
        for document in documents:
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
                handle.write(document)
            try:
                found.append(Keyring(tenant_id, LocalKeyProvider(handle.name).load()))
            except (KeyMaterialError, ValueError, TypeError):
                pass
            finally:
                os.unlink(handle.name)
    return found


def opened(values: list[tuple[str, bytes, RowId | None]], keyrings: list[Keyring]) -> int:
    count = 0
    for keyring in keyrings:
        sealer = Sealer(keyring)
        for name, value, row in values:
            try:
                sealer.open(name, value, row=row)
            except SealError:
                continue
            count += 1
    return count


def test_delete_crypto_shreds_so_a_dump_taken_before_opens_with_no_key_left(stack: Stack) -> None:
    apply_and_wait_ready(stack, "globex", tracker={"replicas": 1}, deletionPolicy="Delete")
    namespace = "polite-globex"
    tokens = stack.secret(namespace, "tracker-api-tokens")
    status, message = http("POST", stack.url(namespace, "/api/v1/messages"), message_body(10), token=tokens["sender"])
    assert status == 201, message
    dump = dump_sealed_values(stack.database(namespace))
    # The check can succeed: while the tenant lives, the keys in the cluster open the dump.
    assert opened(dump, keyrings_anywhere(stack, "globex")) >= 10 + 4  # recipients' e-mails, the message's fields

    assert stack.api.request("DELETE", f"{TENANTS}/globex").status in (200, 202)
    stack.wait_for(lambda: stack.tenant("globex") is None, "tenant globex to be deleted and shredded", 120)
    assert stack.get(f"/api/v1/namespaces/{namespace}") is None
    assert stack.get(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets/{master_secret_name('polite-globex')}") is None
    left = keyrings_anywhere(stack, "globex")
    FIGURES["shredded_dump"] = {"sealed_values": len(dump), "keyrings_left": len(left), "opened": opened(dump, left)}
    assert opened(dump, left) == 0
