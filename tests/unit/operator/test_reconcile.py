"""reconcile: a tenant's first reconcile creates everything, a resync writes nothing, drift is restored
and said so, an unserved region or a missing CloudNativePG is reported, never crashed on.

Driven without kopf or a cluster: an in-memory ``FakeKube`` (the ``KubeApi`` Protocol, JSON merge
patch as RFC 7386 says, 404 for a missing namespace, 409 for an existing name) and ``FakeKeys`` (the
key lifecycle Protocol). Other ``test_reconcile_*`` files import these fakes.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from politetenant.operator.keys.lifecycle import KeyBackend
from politetenant.operator.kube.client import KINDS, KubeError
from politetenant.operator.kube.secrets import decode
from politetenant.operator.model import names
from politetenant.operator.model.config import OperatorConfig
from politetenant.operator.model.status import status_patch
from politetenant.operator.model.tenant import DatabaseEngine
from politetenant.operator.runtime.metrics import Metrics
from politetenant.operator.runtime.reconcile import CNPG_CRD, ORPHANED_LABEL, Outcome, Runtime, reconcile

# -- fakes ------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _key(api_version: str, kind: str, namespace: str | None, name: str) -> tuple[str, str, str | None, str]:
    group = api_version.rpartition("/")[0]
    resource = KINDS[(group, kind)]  # an unknown kind is a bug in the code under test
    return (group, kind, namespace if resource.namespaced else None, name)


class FakeKube:
    """The ``KubeApi`` Protocol over a dict. ``writes`` lists every create, patch and delete."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str | None, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.events: list[dict[str, Any]] = []
        self.failures: dict[tuple[str, str, str], KubeError] = {}  # (verb, kind, name) -> error
        self.namespaces_linger = False  # a deleted namespace stays Terminating until finish_deletions()
        self._serial = itertools.count(1)

    # -- helpers for tests (not writes)
    def seed(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[_key(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])] = copy.deepcopy(obj)

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        for (_, k, ns, n), obj in self.objects.items():
            if k == kind and n == name and (namespace is None or ns == namespace):
                return obj
        return None

    def remove(self, kind: str, name: str, namespace: str | None = None) -> None:
        for key in [
            k for k in self.objects if k[1] == kind and k[3] == name and (namespace is None or k[2] == namespace)
        ]:
            del self.objects[key]

    def finish_deletions(self) -> None:
        for key in [k for k, obj in self.objects.items() if obj["metadata"].get("deletionTimestamp")]:
            self._drop_namespace(key[3]) if key[1] == "Namespace" else self.objects.pop(key)

    def _drop_namespace(self, name: str) -> None:
        for key in [k for k in self.objects if k[2] == name or (k[1] == "Namespace" and k[3] == name)]:
            del self.objects[key]

    def _fail(self, verb: str, kind: str, name: str) -> None:
        error = self.failures.get((verb, kind, name))
        if error is not None:
            raise error

    # -- the Protocol
    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self._fail("get", kind, name)
        obj = self.objects.get(_key(api_version, kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        self._fail("create", obj["kind"], meta["name"])
        key = _key(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        if key[2] is not None and _key("v1", "Namespace", None, key[2]) not in self.objects:
            raise KubeError(404, "NotFound", f'namespaces "{key[2]}" not found')
        if key in self.objects:
            raise KubeError(409, "AlreadyExists", f"{obj['kind']} {meta['name']} already exists")
        stored = copy.deepcopy(dict(obj))
        serial = next(self._serial)
        stored["metadata"] = {
            **stored["metadata"],
            "uid": f"uid-{serial}",
            "resourceVersion": str(serial),
            "generation": 1,
        }
        self.objects[key] = stored
        self.writes.append(("create", f"{obj['kind']} {meta['name']}"))
        return copy.deepcopy(stored)

    async def patch(
        self, api_version: str, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        self._fail("patch", kind, name)
        key = _key(api_version, kind, namespace, name)
        if key not in self.objects:
            raise KubeError(404, "NotFound", f"{kind} {name} not found")
        old = self.objects[key]
        new = merge_patch(old, dict(patch))
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        new["metadata"]["resourceVersion"] = str(next(self._serial))
        self.objects[key] = new
        self.writes.append(("patch", f"{kind} {name}"))
        return copy.deepcopy(new)

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        self._fail("delete", kind, name)
        key = _key(api_version, kind, namespace, name)
        if key not in self.objects:
            return False
        self.writes.append(("delete", f"{kind} {name}"))
        if kind == "Namespace" and self.namespaces_linger:
            self.objects[key]["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
            self.objects[key]["status"] = {"phase": "Terminating"}
        elif kind == "Namespace":
            self._drop_namespace(name)
        else:
            del self.objects[key]
        return True

    async def post_event(self, event: Mapping[str, Any]) -> None:
        self.events.append(copy.deepcopy(dict(event)))

    # -- readings
    def event_reasons(self) -> list[str]:
        return [event["reason"] for event in self.events]


class VaultDown(Exception):
    """What an unreachable key service raises."""


class VaultSaysNo(Exception):
    """What a key service that refuses the operator raises."""


class FakeKeys:
    """The key lifecycle Protocol in memory; documents look like the local provider's file."""

    def __init__(self) -> None:
        self.reachable = True
        self.refusing = False
        self.failure: Exception | None = None
        self.calls: list[tuple[str, str]] = []

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure
        if not self.reachable:
            raise VaultDown("vault https://vault.example:8200 unreachable: connection refused")
        if self.refusing:
            raise VaultSaysNo("permission denied on transit/keys/polite-acme")

    def ensure(self, tenant: str, namespace: str, service_account: str) -> None:
        self._check()
        self.calls.append(("ensure", f"{tenant} {namespace} {service_account}"))

    def new_wrapped_version(self, key_name: str, existing_doc: Mapping[str, Any] | None) -> dict[str, Any]:
        self._check()
        self.calls.append(("new_wrapped_version", key_name))
        return self._add(existing_doc)

    def rotate(
        self, key_name: str, existing_doc: Mapping[str, Any], *, rotation_id: str | None = None
    ) -> dict[str, Any]:
        """Like the real lifecycles: the same ``rotation_id`` again returns the document unchanged."""
        self._check()
        self.calls.append(("rotate", key_name))
        versions = existing_doc.get("versions", [])
        if rotation_id is not None and versions and versions[-1].get("rotation") == rotation_id:
            return dict(existing_doc)
        doc = self._add(dict(existing_doc))
        doc["versions"][-1]["rotation"] = rotation_id
        return doc

    def destroy(self, key_name: str) -> None:
        self._check()
        self.calls.append(("destroy", key_name))

    @staticmethod
    def _add(doc: Mapping[str, Any] | None) -> dict[str, Any]:
        versions = list((doc or {}).get("versions", []))
        versions.append({"version": len(versions) + 1, "dek": "wrapped:" + secrets.token_hex(8)})
        return {"format": 1, "versions": versions}

    def called(self, name: str) -> int:
        return sum(1 for call, _ in self.calls if call == name)


class Clock:
    """Each reading one second later, so a timestamp that does not move was kept on purpose."""

    def __init__(self) -> None:
        self.ticks = itertools.count()

    def __call__(self) -> str:
        seconds = next(self.ticks)
        return f"2030-05-01T12:{seconds // 60:02d}:{seconds % 60:02d}Z"


def make_runtime(kube: FakeKube, keys: FakeKeys, config: OperatorConfig | None = None) -> Runtime:
    backend = KeyBackend(lambda _tenant: keys, unavailable=(VaultDown,), refused=(VaultSaysNo,))
    return Runtime(kube, backend, config or OperatorConfig(), Metrics(), instance="test", clock=Clock())


def tenant_body(name: str = "acme", *, region: str = "eu-ireland", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "polite.io/v1alpha1",
        "kind": "PoliteTenant",
        "metadata": {"name": name, "uid": f"uid-tenant-{name}", "generation": 1, "annotations": {}},
        "spec": {"displayName": name.title(), "region": region, **spec},
    }


async def run(body: dict[str, Any], rt: Runtime) -> Outcome:
    """One reconcile, its status written back to ``body`` as the handler would."""
    outcome = await reconcile(body, rt)
    if outcome.status is not None:
        body["status"] = outcome.status
    return outcome


def conditions(status: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def make_available(kube: FakeKube, namespace: str = "polite-acme") -> None:
    """What the StatefulSet and CNPG controllers would report once pods run."""
    for (_, kind, ns, _name), obj in kube.objects.items():
        if ns != namespace:
            continue
        generation = obj["metadata"].get("generation", 1)
        if kind == "StatefulSet":
            n = obj["spec"]["replicas"]
            counts = ("replicas", "readyReplicas", "currentReplicas", "updatedReplicas", "availableReplicas")
            obj["status"] = {"observedGeneration": generation, **dict.fromkeys(counts, n)}
        elif kind == "Cluster":
            obj["status"] = {"instances": obj["spec"]["instances"], "readyInstances": obj["spec"]["instances"]}


# -- first reconcile, readiness, resync ---------------------------------------------------------------


async def test_first_reconcile_creates_every_child_the_secrets_and_the_keys(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    outcome = await run(body, rt)

    kinds = sorted(kind for (_, kind, _, _) in kube.objects)
    assert kinds.count("NetworkPolicy") == 5
    for kind in ("Namespace", "ResourceQuota", "ServiceAccount", "ConfigMap", "CronJob"):
        assert kind in kinds
    assert kube.find("StatefulSet", "tracker") is not None and kube.find("StatefulSet", "postgres") is not None
    assert "Deployment" not in kinds
    owned = (names.KEYS_SECRET, names.API_TOKENS_SECRET, names.DATABASE_CREDENTIALS_SECRET)
    for secret in (*owned, names.DATABASE_OWNER_SECRET, names.DATABASE_APP_SECRET):
        assert kube.find("Secret", secret, "polite-acme") is not None
    assert kube.writes[0] == ("create", "Namespace polite-acme")  # the fence first
    assert kube.writes.index(("create", f"Secret {names.KEYS_SECRET}")) < kube.writes.index(
        ("create", "StatefulSet tracker")
    )
    assert kube.event_reasons() == ["NamespaceCreated", "ObjectsCreated", "SecretCreated", "KeysCreated"]

    status = outcome.status
    assert status is not None
    assert conditions(status) == {
        "Ready": ("Unknown", "DatabaseStarting"),
        "Reconciling": ("True", "Progressing"),
        "Stalled": ("False", "Progressing"),
        "NamespaceReady": ("True", "NamespaceActive"),
        "KeysReady": ("True", "KeysAvailable"),
        "DatabaseReady": ("False", "DatabaseStarting"),
        "TrackerReady": ("False", "TrackerStarting"),
        "RetentionReady": ("True", "RetentionScheduled"),
        "Placement": ("True", "RegionServed"),
    }
    assert status["phase"] == "Provisioning"
    assert status["observedGeneration"] == 1
    assert status["namespace"] == "polite-acme"
    assert status["endpoint"] == "http://tracker.polite-acme.svc.cluster.local"
    assert status["keys"] == {"version": 1, "rotatedAt": status["keys"]["rotatedAt"]}
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])
    assert not outcome.retry


async def test_children_are_owned_by_the_tenant_except_those_holding_data(kube: FakeKube, rt: Runtime) -> None:
    await run(tenant_body(), rt)
    tracker = kube.find("StatefulSet", "tracker")
    assert tracker is not None
    assert tracker["metadata"]["ownerReferences"][0]["uid"] == "uid-tenant-acme"
    for kind, name in (("Namespace", "polite-acme"), ("StatefulSet", "postgres"), ("Secret", names.KEYS_SECRET)):
        obj = kube.find(kind, name)
        assert obj is not None and "ownerReferences" not in obj["metadata"], kind


async def test_tenant_is_ready_once_its_workloads_report_available(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    make_available(kube)
    writes = len(kube.writes)

    outcome = await run(body, rt)

    assert outcome.status is not None
    assert outcome.status["phase"] == "Ready"
    assert conditions(outcome.status)["Ready"] == ("True", "Ready")
    assert conditions(outcome.status)["TrackerReady"] == ("True", "TrackerAvailable")
    assert len(kube.writes) == writes  # reading health writes nothing


async def test_resync_of_an_unchanged_tenant_writes_nothing_and_says_nothing(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    make_available(kube)
    await run(body, rt)
    writes, events, previous = len(kube.writes), len(kube.events), copy.deepcopy(body["status"])

    outcome = await run(body, rt)

    assert kube.writes[writes:] == []
    assert kube.events[events:] == []
    assert outcome.status is not None
    assert status_patch(previous, outcome.status) == {}  # so the handler writes no status either


async def test_a_condition_keeps_its_transition_time_until_its_status_changes(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    before = {c["type"]: c["lastTransitionTime"] for c in body["status"]["conditions"]}
    make_available(kube)
    await run(body, rt)
    after = {c["type"]: c["lastTransitionTime"] for c in body["status"]["conditions"]}
    assert after["NamespaceReady"] == before["NamespaceReady"]
    assert after["TrackerReady"] != before["TrackerReady"]


# -- drift ---------------------------------------------------------------------------------------------


async def test_a_child_deleted_by_hand_is_restored_and_an_event_says_so(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    kube.remove("StatefulSet", "tracker")
    writes = len(kube.writes)

    await run(body, rt)

    assert kube.writes[writes:] == [("create", "StatefulSet tracker")]
    restored = [e for e in kube.events if e["reason"] == "ObjectRestored"]
    assert len(restored) == 1
    assert restored[0]["type"] == "Warning"
    assert "StatefulSet polite-acme/tracker" in restored[0]["message"]
    assert restored[0]["involvedObject"]["kind"] == "PoliteTenant"


async def test_a_hand_edit_that_keeps_the_hash_annotation_is_still_restored(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    tracker = kube.find("StatefulSet", "tracker")
    assert tracker is not None
    tracker["spec"]["replicas"] = 7
    tracker["spec"]["template"]["spec"]["containers"][0]["image"] = "evil/tracker:latest"

    await run(body, rt)

    restored = kube.find("StatefulSet", "tracker")
    assert restored is not None
    assert restored["spec"]["replicas"] == 2
    assert restored["spec"]["template"]["spec"]["containers"][0]["image"] == "politetenant/polite-tracker:0.1.0"
    assert kube.event_reasons().count("ObjectRestored") == 1


async def test_fields_the_api_server_adds_are_not_drift(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    service = kube.find("Service", "tracker")
    tracker = kube.find("StatefulSet", "tracker")
    namespace = kube.find("Namespace", "polite-acme")
    assert service is not None and tracker is not None and namespace is not None
    service["spec"]["clusterIP"] = "10.96.0.17"
    container = tracker["spec"]["template"]["spec"]["containers"][0]
    container["terminationMessagePath"] = "/dev/termination-log"
    container["resources"]["limits"]["cpu"] = "1000m"  # the same quantity, spelled otherwise
    tracker["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"] = "Filesystem"
    tracker["metadata"]["annotations"]["example.com/noted"] = "1"
    namespace["metadata"]["labels"]["kubernetes.io/metadata.name"] = "polite-acme"
    writes = len(kube.writes)

    await run(body, rt)

    assert kube.writes[writes:] == []


async def test_a_spec_change_updates_the_children_it_touches_and_says_so(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    writes = len(kube.writes)
    body["spec"]["tracker"] = {"replicas": 4}
    body["metadata"]["generation"] = 2

    outcome = await run(body, rt)

    patched = {what for verb, what in kube.writes[writes:] if verb == "patch"}
    assert "StatefulSet tracker" in patched
    assert "ResourceQuota tenant-quota" in patched  # room for the new pods
    assert all(verb == "patch" for verb, _ in kube.writes[writes:])
    assert "ObjectUpdated" in kube.event_reasons()
    assert "ObjectRestored" not in kube.event_reasons()
    assert outcome.status is not None and outcome.status["observedGeneration"] == 2


async def test_an_ingress_goes_when_the_host_is_removed(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body(tracker={"host": "insights.acme.example", "tls": {"secretName": "acme-tls"}})
    outcome = await run(body, rt)
    assert kube.find("Ingress", "tracker") is not None
    assert outcome.status is not None and outcome.status["endpoint"] == "https://insights.acme.example"

    body["spec"]["tracker"] = {}
    body["metadata"]["generation"] = 2
    await run(body, rt)

    assert kube.find("Ingress", "tracker") is None
    assert ("delete", "Ingress tracker") in kube.writes


async def test_the_api_ingress_goes_when_the_api_host_is_removed(kube: FakeKube, rt: Runtime) -> None:
    api = {"host": "api.acme.example", "allowedSourceRanges": ["203.0.113.0/24"]}
    body = tenant_body(tracker={"host": "insights.acme.example", "api": api})
    await run(body, rt)
    assert kube.find("Ingress", "tracker") is not None and kube.find("Ingress", "tracker-api") is not None

    body["spec"]["tracker"] = {"host": "insights.acme.example"}
    body["metadata"]["generation"] = 2
    await run(body, rt)

    assert kube.find("Ingress", "tracker-api") is None
    assert kube.find("Ingress", "tracker") is not None
    assert ("delete", "Ingress tracker-api") in kube.writes


def legacy_tracker_deployment(tenant: str = "acme") -> dict[str, Any]:
    """The tracker as operator versions before the StatefulSet made it."""
    labels = {"app.kubernetes.io/instance": tenant, "app.kubernetes.io/component": "tracker"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "tracker",
            "namespace": f"polite-{tenant}",
            "labels": {**labels, names.TENANT_LABEL: tenant},
        },
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}}},
    }


async def test_the_tracker_deployment_of_an_earlier_version_goes_once_the_statefulset_serves(
    kube: FakeKube, rt: Runtime
) -> None:
    body = tenant_body()
    await run(body, rt)  # the namespace and everything else, as an earlier version left them
    kube.seed(legacy_tracker_deployment())
    tracker = kube.find("StatefulSet", "tracker")
    assert tracker is not None
    tracker["status"] = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 0}

    outcome = await run(body, rt)

    assert kube.find("Deployment", "tracker") is not None, "the old pods serve until a new one does"
    assert outcome.rolling_out  # looked at again soon
    tracker["status"] = {**tracker["status"], "availableReplicas": 1}

    await run(body, rt)

    assert kube.find("Deployment", "tracker") is None
    assert ("delete", "Deployment tracker") in kube.writes
    told = [e["message"] for e in kube.events if e["reason"] == "ObjectUpdated"]
    assert any("removed Deployment polite-acme/tracker" in message for message in told), told


async def test_a_deployment_of_someone_else_is_left_alone(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    foreign = legacy_tracker_deployment()
    foreign["metadata"]["labels"][names.TENANT_LABEL] = "globex"
    kube.seed(foreign)
    make_available(kube)

    await run(body, rt)

    assert kube.find("Deployment", "tracker") is not None


# -- placement, engines, invalid specs, API errors ------------------------------------------------------


async def test_a_region_not_served_here_gets_placement_false_and_no_writes(kube: FakeKube, keys: FakeKeys) -> None:
    rt = make_runtime(kube, keys, OperatorConfig(served_regions=("us-east",)))
    outcome = await run(tenant_body(region="eu-ireland"), rt)

    assert kube.writes == []
    assert kube.events == []
    assert keys.calls == []
    assert outcome.status is not None
    assert conditions(outcome.status) == {
        "Placement": ("False", "RegionNotServed"),
        "Ready": ("False", "RegionNotServed"),
        "Reconciling": ("False", "RegionNotServed"),
        "Stalled": ("True", "RegionNotServed"),
    }
    assert outcome.status["phase"] == "Pending"
    assert "us-east" in outcome.status["conditions"][0]["message"]
    assert not outcome.retry


async def test_cnpg_asked_without_its_crd_is_a_clear_condition_not_a_crash(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body(database={"engine": "cnpg"})
    outcome = await run(body, rt)

    assert outcome.status is not None
    status, reason = conditions(outcome.status)["DatabaseReady"]
    assert (status, reason) == ("False", "DatabaseEngineUnavailable")
    assert CNPG_CRD in next(c["message"] for c in outcome.status["conditions"] if c["type"] == "DatabaseReady")
    assert outcome.status["phase"] == "Failed"
    assert kube.find("Cluster", "postgres") is None
    assert kube.find("StatefulSet", "tracker") is not None  # the rest is in place for when CNPG arrives


async def test_with_the_cnpg_crd_a_cluster_is_made_and_read_for_readiness(kube: FakeKube, rt: Runtime) -> None:
    kube.seed(
        {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": CNPG_CRD}}
    )
    body = tenant_body()  # no engine named: CloudNativePG, since it is installed
    await run(body, rt)
    cluster = kube.find("Cluster", "postgres")
    assert cluster is not None
    assert kube.find("StatefulSet", "postgres") is None
    assert kube.find("Secret", names.DATABASE_CREDENTIALS_SECRET) is None  # CNPG writes its own

    make_available(kube)
    outcome = await run(body, rt)
    assert outcome.status is not None
    assert conditions(outcome.status)["DatabaseReady"] == ("True", "DatabaseAvailable")


CNPG_INSTALLED = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CNPG_CRD},
}


async def test_installing_cloudnativepg_later_never_moves_a_tenant_to_an_empty_cluster(
    kube: FakeKube, rt: Runtime
) -> None:
    body = tenant_body()  # no engine named, no CloudNativePG: a StatefulSet
    await run(body, rt)
    assert body["status"]["database"] == {"engine": "statefulset"}
    namespace = kube.find("Namespace", "polite-acme")
    assert namespace is not None and namespace["metadata"]["annotations"]["polite.io/database-engine"] == "statefulset"
    dsn = tracker_env_of(kube)["POLITE_DB"]

    kube.seed(CNPG_INSTALLED)
    body["metadata"]["generation"] = 2  # e.g. a displayName change: a full reconcile
    await run(body, rt)
    assert kube.find("Cluster", "postgres") is None, "an empty Cluster would orphan every record"
    assert kube.find("StatefulSet", "postgres") is not None
    assert tracker_env_of(kube)["POLITE_DB"] == dsn
    assert body["status"]["database"] == {"engine": "statefulset"}


async def test_a_tenant_adopting_a_retained_namespace_keeps_its_engine(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    kube.seed(CNPG_INSTALLED)
    again = tenant_body()  # a new tenant of the same name: no status yet, the namespace remembers
    await run(again, rt)
    assert again["status"]["database"] == {"engine": "statefulset"}
    assert kube.find("Cluster", "postgres") is None


async def test_a_spec_naming_another_engine_than_the_recorded_one_is_refused_visibly(
    kube: FakeKube, rt: Runtime
) -> None:
    body = tenant_body()
    await run(body, rt)
    kube.seed(CNPG_INSTALLED)
    body["spec"]["database"] = {"engine": "cnpg"}  # unset -> cnpg passes the CRD; the operator says no
    body["metadata"]["generation"] = 2
    outcome = await run(body, rt)
    assert outcome.status is not None
    assert conditions(outcome.status)["DatabaseReady"] == ("False", "DatabaseEngineChangeRefused")
    assert "statefulset" in next(c["message"] for c in outcome.status["conditions"] if c["type"] == "DatabaseReady")
    assert kube.find("Cluster", "postgres") is None and kube.find("StatefulSet", "postgres") is not None
    assert outcome.status["phase"] == "Failed"  # a person has to act: stalled, not retried in a loop


def tracker_env_of(kube: FakeKube) -> dict[str, Any]:
    tracker = kube.find("StatefulSet", "tracker")
    assert tracker is not None
    container = tracker["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


async def test_an_external_database_is_reported_as_such(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body(database={"engine": DatabaseEngine.EXTERNAL.value, "externalSecretRef": {"name": "acme-db"}})
    outcome = await run(body, rt)
    assert outcome.status is not None
    assert conditions(outcome.status)["DatabaseReady"] == ("True", "ExternalDatabase")
    assert kube.find("StatefulSet", "postgres") is None


async def test_a_tenant_that_cannot_be_rendered_is_failed_with_no_writes(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body(keys={"provider": "vault", "vault": {}})  # no address, and the operator has none
    outcome = await run(body, rt)
    assert kube.writes == []
    assert outcome.status is not None
    assert outcome.status["phase"] == "Failed"
    assert conditions(outcome.status)["Ready"] == ("False", "InvalidSpec")


async def test_a_refused_child_is_reported_on_its_part_and_retried(kube: FakeKube, rt: Runtime) -> None:
    kube.failures[("create", "CronJob", "retention")] = KubeError(403, "Forbidden", "cronjobs is forbidden")
    outcome = await run(tenant_body(), rt)
    assert outcome.status is not None
    assert conditions(outcome.status)["RetentionReady"] == ("False", "ApiError")
    assert outcome.retry
    assert kube.find("StatefulSet", "tracker") is not None  # the others went ahead
    assert "ApiError" in kube.event_reasons()


async def test_an_unreachable_api_is_a_retry_with_the_last_known_status(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    kube.failures[("get", "CustomResourceDefinition", CNPG_CRD)] = KubeError(0, "Unreachable", "GET: timeout")
    outcome = await run(body, rt)
    assert outcome.retry
    assert outcome.status is not None
    assert conditions(outcome.status)["Ready"] == ("False", "ApiError")
    assert conditions(outcome.status)["NamespaceReady"] == ("True", "NamespaceActive")


async def test_a_tenant_being_deleted_is_left_to_the_delete_handler(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    body["metadata"]["deletionTimestamp"] = "2030-05-01T00:00:00Z"
    outcome = await run(body, rt)
    assert outcome.status is None
    assert kube.writes == []


async def test_a_namespace_left_by_a_retained_tenant_is_adopted_again(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    namespace = kube.find("Namespace", "polite-acme")
    assert namespace is not None
    namespace["metadata"]["labels"][ORPHANED_LABEL] = "true"
    del body["status"]  # a new tenant object of the same name

    await run(body, rt)

    namespace = kube.find("Namespace", "polite-acme")
    assert namespace is not None and ORPHANED_LABEL not in namespace["metadata"]["labels"]
    assert "NamespaceAdopted" in kube.event_reasons()


# -- secrets ---------------------------------------------------------------------------------------------

TOKEN = re.compile(r"^ptk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


async def test_generated_secrets_are_made_once_and_never_rewritten(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    tokens = kube.find("Secret", names.API_TOKENS_SECRET)
    credentials = kube.find("Secret", names.DATABASE_CREDENTIALS_SECRET)
    assert tokens is not None and credentials is not None
    values = {role: decode(tokens, role) for role in ("sender", "analyst", "privacy")}
    assert all(value is not None and TOKEN.match(value) for value in values.values())
    assert len(set(values.values())) == 3
    password = decode(credentials, "password")
    assert password is not None
    assert decode(credentials, "uri") == (
        f"postgresql://polite:{password}@postgres.polite-acme.svc.cluster.local:5432/polite"
    )

    tokens["data"]["sender"] = "aGFuZC1zZXQ="  # a customer replaced a token by hand
    body["spec"]["displayName"] = "Acme Corporation"
    body["metadata"]["generation"] = 2
    await run(body, rt)

    after = kube.find("Secret", names.API_TOKENS_SECRET)
    assert after is not None and after["data"]["sender"] == "aGFuZC1zZXQ="
    assert not any(what.startswith("Secret") for verb, what in kube.writes if verb == "patch")


async def test_the_database_owner_and_app_roles_get_their_own_generated_passwords(kube: FakeKube, rt: Runtime) -> None:
    await run(tenant_body(database={"engine": "statefulset"}), rt)
    logins = {}
    for secret, role in (
        (names.DATABASE_CREDENTIALS_SECRET, "polite"),
        (names.DATABASE_OWNER_SECRET, "polite_owner"),
        (names.DATABASE_APP_SECRET, "polite_app"),
    ):
        found = kube.find("Secret", secret, "polite-acme")
        assert found is not None, secret
        password = decode(found, "password")
        assert decode(found, "username") == role
        assert decode(found, "uri") == (
            f"postgresql://{role}:{password}@postgres.polite-acme.svc.cluster.local:5432/polite"
        )
        logins[role] = password
    assert len(set(logins.values())) == 3


async def test_no_secret_value_reaches_status_or_events(kube: FakeKube, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    tokens = kube.find("Secret", names.API_TOKENS_SECRET)
    credentials = kube.find("Secret", names.DATABASE_CREDENTIALS_SECRET)
    key_secret = kube.find("Secret", names.KEYS_SECRET)
    assert tokens is not None and credentials is not None and key_secret is not None
    doc = json.loads(decode(key_secret, "keys.json") or "{}")
    values = [decode(tokens, role) for role in ("sender", "analyst", "privacy")]
    values += [decode(credentials, "password"), decode(credentials, "uri")]
    values += [version["dek"] for version in doc["versions"]]
    said = json.dumps([body["status"], kube.events])
    for value in values:
        assert value and value not in said
