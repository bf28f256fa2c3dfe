"""render_tenant: every child object a tenant needs, valid for Kubernetes 1.30 and 1.37, hardened,
pinned to its region, fenced by NetworkPolicies, and the same bytes every time."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from politetenant.operator.cli import dump_objects
from politetenant.operator.model.config import OperatorConfig, load_operator_config
from politetenant.operator.model.tenant import PoliteTenant
from politetenant.operator.render.tenant import RenderError, RenderResult, render_tenant, spec_hash
from politetenant.regions import REGIONS
from politetenant.settings import TrackerSettings, TrackingMode

DATA = Path(__file__).with_name("data")
EXAMPLES = Path(__file__).parents[3] / "examples"
K8S_VERSIONS = ("1.30", "1.37")
DEFAULTS = load_operator_config(None, {})
TRACKER_SELECTOR = {"app.kubernetes.io/instance": "acme", "app.kubernetes.io/component": "tracker"}
RETENTION_SELECTOR = {"app.kubernetes.io/instance": "acme", "app.kubernetes.io/component": "retention"}
STATEFULSET_SELECTOR = {"app.kubernetes.io/instance": "acme", "app.kubernetes.io/component": "database"}
CNPG_SELECTOR = {"cnpg.io/cluster": "postgres"}
DNS_RULE = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}
# Volume types Pod Security "restricted" admits.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}  # fmt: skip
# Fields of CloudNativePG's Cluster spec (postgresql.cnpg.io/v1) that rendering may use.
CNPG_SPEC_FIELDS = {"instances", "imageName", "enableSuperuserAccess", "primaryUpdateStrategy", "bootstrap",
                    "storage", "resources", "affinity", "inheritedMetadata"}  # fmt: skip
CNPG_AFFINITY_FIELDS = {"nodeAffinity", "enablePodAntiAffinity", "podAntiAffinityType", "topologyKey"}


@pytest.fixture(scope="module", autouse=True)
def schemas_read_once() -> Iterator[None]:
    """kubernetes-validate reads a schema file per call; read each once (validation is unchanged)."""
    with pytest.MonkeyPatch.context() as patch:
        cached = functools.cache(kubernetes_validate.utils.schema_contents)
        patch.setattr(kubernetes_validate.utils, "schema_contents", cached)
        yield


# -- building tenants and reading what was rendered --------------------------------------------------------


def make_tenant(name: str = "acme", **spec: Any) -> PoliteTenant:
    body = {"displayName": "Acme Corp", "region": "eu-ireland", **spec}
    return PoliteTenant.model_validate(
        {"apiVersion": "polite.io/v1alpha1", "kind": "PoliteTenant", "metadata": {"name": name}, "spec": body}
    )


def make_config(**settings: Any) -> OperatorConfig:
    return OperatorConfig.model_validate(settings)


def render(tenant: PoliteTenant, config: OperatorConfig = DEFAULTS, **kwargs: Any) -> list[dict[str, Any]]:
    result = render_tenant(tenant, config, **kwargs)
    assert result.skipped_reason is None
    return result.objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [obj for obj in of_kind(objects, kind) if name is None or obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod template) of every workload, CronJob's included."""
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "StatefulSet"):
            yield where, obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            yield where, obj["spec"]["jobTemplate"]["spec"]["template"]


def tracker(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The tracker's StatefulSet."""
    return one(objects, "StatefulSet", "tracker")


def tracker_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = tracker(objects)["spec"]["template"]["spec"]["containers"]
    return dict(container)


def tracker_env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in tracker_container(objects)["env"]}


def policy(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return dict(one(objects, "NetworkPolicy", name)["spec"])


def validate(obj: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: {path}: {exc}")


def validate_in_pod(fragment: dict[str, Any]) -> None:
    """A core-API fragment of a custom resource, checked by placing it where a Pod holds the same type."""
    container = {"name": "c", "image": "i", "resources": fragment["resources"]}
    pod_spec = {"containers": [container], "affinity": {"nodeAffinity": fragment["nodeAffinity"]}}
    validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, "spec": pod_spec})


def check_cnpg_cluster(cluster: dict[str, Any], cloud_region: str, storage_class: str, storage: str) -> None:
    """What kubernetes-validate cannot check: the CloudNativePG Cluster's own fields."""
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["kind"] == "Cluster"
    spec = cluster["spec"]
    assert set(spec) <= CNPG_SPEC_FIELDS
    assert set(spec["affinity"]) <= CNPG_AFFINITY_FIELDS
    assert isinstance(spec["instances"], int) and spec["instances"] >= 1
    assert spec["storage"] == {"size": storage, "storageClass": storage_class}
    assert spec["bootstrap"] == {"initdb": {"database": "polite", "owner": "polite"}}
    assert spec["enableSuperuserAccess"] is False
    assert region_of(spec["affinity"]["nodeAffinity"]) == cloud_region
    assert set(spec["inheritedMetadata"]["labels"]) == {"polite.io/tenant", "polite.io/region"}
    validate_in_pod({"resources": spec["resources"], "nodeAffinity": spec["affinity"]["nodeAffinity"]})


def region_of(node_affinity: dict[str, Any]) -> str:
    """The single region a NodeAffinity requires, failing if it requires anything else."""
    (term,) = node_affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    (expression,) = term["matchExpressions"]
    assert expression["key"] == "topology.kubernetes.io/region"
    assert expression["operator"] == "In"
    (value,) = expression["values"]
    return str(value)


# -- the matrix: each region with each engine, both clouds, both key providers, every TLS shape, ----------
# -- legal hold on and off (each engine meets every provider x hold pair and every TLS shape) ------------

ENGINES = ("cnpg", "statefulset", "external")
TLS_SHAPES = ("no-host", "host", "secret", "issuer")


def matrix_case(region_index: int, engine_index: int) -> tuple[str, dict[str, Any]]:
    region = list(REGIONS)[region_index]
    engine = ENGINES[engine_index]
    spec: dict[str, Any] = {
        "displayName": f"Tenant in {region}",
        "region": region,
        "database": {"engine": engine, "storage": "20Gi"},
        "legalHold": (region_index // 2) % 2 == 1,
    }
    if engine == "external":
        spec["database"]["externalSecretRef"] = {"name": "their-postgres", "key": "dsn"}
    if region_index % 2 == 0:
        spec["keys"] = {"provider": "vault", "vault": {"address": "https://vault.example:8200"}}
    shape = TLS_SHAPES[(region_index + engine_index) % 4]
    if shape != "no-host":
        spec["tracker"] = {"host": f"t.{region}.example"}
    if shape == "secret":
        spec["tracker"]["tls"] = {"secretName": "tracker-cert"}
    if shape == "issuer":
        spec["tracker"]["tls"] = {"issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}}
    cloud = ("aws", "azure")[(region_index // 3 + engine_index) % 2]
    return cloud, spec


def tls_shape(spec: dict[str, Any]) -> str:
    tracker = spec.get("tracker")
    if not tracker:
        return "no-host"
    tls = tracker.get("tls")
    if not tls:
        return "host"
    return "secret" if "secretName" in tls else "issuer"


MATRIX = [
    pytest.param(matrix_case(r, e), id=f"{list(REGIONS)[r]}-{ENGINES[e]}-{TLS_SHAPES[(r + e) % 4]}")
    for r in range(len(REGIONS))
    for e in range(len(ENGINES))
]


@pytest.fixture(params=MATRIX)
def case(request: pytest.FixtureRequest) -> tuple[str, PoliteTenant, list[dict[str, Any]]]:
    cloud, spec = request.param
    tenant = make_tenant(**spec)
    return cloud, tenant, render(tenant, make_config(cloud=cloud))


def test_matrix_covers_every_region_engine_provider_tls_shape_and_legal_hold() -> None:
    specs = [param.values[0][1] for param in MATRIX]
    assert {s["region"] for s in specs} == set(REGIONS)
    for engine in ENGINES:
        of_engine = [s for s in specs if s["database"]["engine"] == engine]
        assert {("keys" in s, s["legalHold"]) for s in of_engine} == {
            (v, h) for v in (True, False) for h in (True, False)
        }
        assert {tls_shape(s) for s in of_engine} == set(TLS_SHAPES)
    for region in REGIONS:
        assert {cloud for ((cloud, spec),) in (p.values for p in MATRIX) if spec["region"] == region} == {
            "aws",
            "azure",
        }


def test_every_object_is_valid_for_kubernetes_1_30_and_1_37(
    case: tuple[str, PoliteTenant, list[dict[str, Any]]],
) -> None:
    cloud, tenant, objects = case
    region = REGIONS[tenant.spec.region]
    for obj in objects:
        if obj["apiVersion"] == "postgresql.cnpg.io/v1":
            check_cnpg_cluster(obj, region.cloud_region(cloud), region.storage_class[cloud], "20Gi")
        else:
            validate(obj)


def test_every_pod_is_hardened(case: tuple[str, PoliteTenant, list[dict[str, Any]]]) -> None:
    _, tenant, objects = case
    templates = list(pod_templates(objects))
    expected = {"StatefulSet/tracker", "CronJob/retention"}
    if tenant.spec.database.engine == "statefulset":
        expected.add("StatefulSet/postgres")
    assert {where for where, _ in templates} == expected
    for where, template in templates:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] > 0, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["enableServiceLinks"] is False, where
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), where
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, (where, volume)
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context.get("privileged", False) is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, (where, bound)
            assert all("hostPort" not in port for port in container.get("ports", [])), where


def test_only_key_users_of_a_vault_tenant_hold_a_token_and_only_for_vault(
    case: tuple[str, PoliteTenant, list[dict[str, Any]]],
) -> None:
    _, tenant, objects = case
    assert one(objects, "ServiceAccount", "tracker")["automountServiceAccountToken"] is False
    for where, template in pod_templates(objects):
        tokens = [
            source["serviceAccountToken"]
            for volume in template["spec"].get("volumes", [])
            for source in volume.get("projected", {}).get("sources", [])
            if "serviceAccountToken" in source
        ]
        if where in ("StatefulSet/tracker", "CronJob/retention") and tenant.spec.keys.provider == "vault":
            assert tokens == [{"audience": "vault", "expirationSeconds": 3600, "path": "token"}], where
            assert template["spec"]["serviceAccountName"] == "tracker"
        else:
            assert tokens == [], where


def test_pods_and_volumes_stay_in_the_tenant_region(case: tuple[str, PoliteTenant, list[dict[str, Any]]]) -> None:
    cloud, tenant, objects = case
    region = REGIONS[tenant.spec.region]
    for where, template in pod_templates(objects):
        assert region_of(template["spec"]["affinity"]["nodeAffinity"]) == region.cloud_region(cloud), where
    for statefulset in of_kind(objects, "StatefulSet"):
        for claim in statefulset["spec"]["volumeClaimTemplates"]:
            assert claim["spec"]["storageClassName"] == region.storage_class[cloud]


def test_every_object_is_labelled_namespaced_and_hashed(case: tuple[str, PoliteTenant, list[dict[str, Any]]]) -> None:
    _, tenant, objects = case
    for obj in objects:
        metadata = obj["metadata"]
        labels = metadata["labels"]
        assert labels["polite.io/tenant"] == tenant.name
        assert labels["polite.io/region"] == tenant.spec.region
        assert labels["app.kubernetes.io/instance"] == tenant.name
        assert labels["app.kubernetes.io/part-of"] == "politetenant"
        assert labels["app.kubernetes.io/managed-by"] == "polite-operator"
        assert {"app.kubernetes.io/name", "app.kubernetes.io/component"} <= set(labels)
        assert metadata["annotations"]["polite.io/spec-hash"] == spec_hash(obj)
        assert "ownerReferences" not in metadata
        if obj["kind"] != "Namespace":
            assert metadata["namespace"] == f"polite-{tenant.name}"


def test_selectors_select_the_pods_they_mean(case: tuple[str, PoliteTenant, list[dict[str, Any]]]) -> None:
    _, _, objects = case
    workload = tracker(objects)
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    for selector in (
        workload["spec"]["selector"]["matchLabels"],
        one(objects, "Service", "tracker")["spec"]["selector"],
        one(objects, "Service", "tracker-ops")["spec"]["selector"],
        one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        policy(objects, "tracker-ingress")["podSelector"]["matchLabels"],
        policy(objects, "tracker-egress")["podSelector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    cronjob = one(objects, "CronJob")
    retention_labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert policy(objects, "retention-egress")["podSelector"]["matchLabels"].items() <= retention_labels.items()


def test_legal_hold_suspends_the_retention_job(case: tuple[str, PoliteTenant, list[dict[str, Any]]]) -> None:
    _, tenant, objects = case
    cronjob = one(objects, "CronJob", "retention")
    assert cronjob["spec"]["suspend"] is tenant.spec.legal_hold
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["purge"]
    settings = yaml.safe_load(one(objects, "ConfigMap", "tracker-settings")["data"]["settings.yaml"])
    assert settings["legal_hold"] is tenant.spec.legal_hold


# -- one behaviour at a time ------------------------------------------------------------------------------


def test_namespace_enforces_pod_security_restricted_and_carries_the_display_name() -> None:
    namespace = one(render(make_tenant()), "Namespace")
    assert namespace["metadata"]["name"] == "polite-acme"
    for mode in ("enforce", "audit", "warn"):
        assert namespace["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert namespace["metadata"]["annotations"]["polite.io/display-name"] == "Acme Corp"


def test_children_come_in_apply_order_namespace_and_fence_before_pods() -> None:
    kinds = [obj["kind"] for obj in render(make_tenant(database={"engine": "statefulset"}))]
    # The operator's access to the namespace's Secrets right after it: Secrets are written next.
    assert kinds[:4] == ["Namespace", "RoleBinding", "ResourceQuota", "NetworkPolicy"]
    assert kinds.index("StatefulSet") > max(i for i, kind in enumerate(kinds) if kind == "NetworkPolicy")


def test_objects_that_hold_data_are_marked_so_apply_never_owner_references_them() -> None:
    for engine, kinds in (("cnpg", {"Namespace/polite-acme", "Cluster/postgres"}),
                          ("statefulset", {"Namespace/polite-acme", "StatefulSet/postgres"})):  # fmt: skip
        objects = render(make_tenant(database={"engine": engine}))
        marked = {
            f"{o['kind']}/{o['metadata']['name']}"
            for o in objects
            if o["metadata"]["annotations"].get("polite.io/holds-data") == "true"
        }
        assert marked == kinds


def test_statefulset_volumes_survive_the_statefulset() -> None:
    statefulset = one(
        render(make_tenant(database={"engine": "statefulset", "storage": "30Gi"})), "StatefulSet", "postgres"
    )
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "30Gi"
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "postgres"
    assert container["image"] == DEFAULTS.images.postgres
    assert statefulset["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 999


@pytest.mark.parametrize("cloud", ["aws", "azure"])
@pytest.mark.parametrize("region", list(REGIONS))
def test_each_region_and_cloud_gets_its_node_region_and_storage_class(region: str, cloud: str) -> None:
    expected = REGIONS[region]
    for engine in ("cnpg", "statefulset"):
        objects = render(make_tenant(region=region, database={"engine": engine}), make_config(cloud=cloud))
        for _, template in pod_templates(objects):
            assert region_of(template["spec"]["affinity"]["nodeAffinity"]) == expected.cloud_region(cloud)
        if engine == "cnpg":
            cluster = one(objects, "Cluster")
            assert region_of(cluster["spec"]["affinity"]["nodeAffinity"]) == expected.cloud_region(cloud)
            assert cluster["spec"]["storage"]["storageClass"] == expected.storage_class[cloud]
        else:
            claim = one(objects, "StatefulSet", "postgres")["spec"]["volumeClaimTemplates"][0]
            assert claim["spec"]["storageClassName"] == expected.storage_class[cloud]
        spool = tracker(objects)["spec"]["volumeClaimTemplates"][0]
        assert spool["spec"]["storageClassName"] == expected.storage_class[cloud]


def test_configured_storage_class_wins_over_the_catalogue() -> None:
    config = make_config(storage_classes={"eu-ireland": "encrypted-ie"})
    objects = render(make_tenant(database={"engine": "cnpg"}), config)
    assert one(objects, "Cluster")["spec"]["storage"]["storageClass"] == "encrypted-ie"


def test_unset_engine_is_cnpg_when_its_crd_exists_else_a_statefulset() -> None:
    tenant = make_tenant()
    assert of_kind(render(tenant, cnpg_available=True), "Cluster")
    assert [o["metadata"]["name"] for o in of_kind(render(tenant, cnpg_available=True), "StatefulSet")] == ["tracker"]
    assert one(render(tenant, cnpg_available=False), "StatefulSet", "postgres")
    assert not of_kind(render(tenant, cnpg_available=False), "Cluster")


def test_external_database_renders_no_database_only_the_wiring() -> None:
    tenant = make_tenant(database={"engine": "external", "externalSecretRef": {"name": "their-db", "key": "dsn"}})
    result = render_tenant(tenant, DEFAULTS)
    kinds = {obj["kind"] for obj in result.objects}
    assert "Cluster" not in kinds
    assert [o["metadata"]["name"] for o in of_kind(result.objects, "StatefulSet")] == ["tracker"]
    assert {o["metadata"]["name"] for o in of_kind(result.objects, "Service")} == {"tracker", "tracker-ops"}
    assert tracker_env(result.objects)["POLITE_DB"] == {"secretKeyRef": {"name": "their-db", "key": "dsn"}}
    assert "postgres-credentials" not in {secret.name for secret in result.secrets}
    assert "database-ingress" not in {o["metadata"]["name"] for o in of_kind(result.objects, "NetworkPolicy")}


@pytest.mark.parametrize(("engine", "serve"), [("cnpg", "postgres-app"), ("statefulset", "postgres-app-credentials")])
def test_tracker_and_retention_read_the_dsn_from_the_database_secret(engine: str, serve: str) -> None:
    objects = render(make_tenant(database={"engine": engine}))
    assert tracker_env(objects)["POLITE_DB"] == {"secretKeyRef": {"name": serve, "key": "uri"}}
    ref = {"secretKeyRef": {"name": serve, "key": "uri"}}  # the application role, as the tracker
    purge = one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert {v["name"]: v.get("valueFrom", v.get("value")) for v in purge["env"]} == {
        "POLITE_DB": ref,
        "POLITE_SETTINGS": "/etc/polite/settings.yaml",
        "POLITE_KEYS": "local:/var/run/polite/keys/keys.json",  # purge seals its audit entry
    }
    assert {m["mountPath"] for m in purge["volumeMounts"]} == {"/etc/polite", "/tmp", "/var/run/polite/keys"}


def test_tracker_runs_serve_with_settings_keys_probes_and_writable_scratch_only() -> None:
    objects = render(make_tenant(tracker={"replicas": 4, "resources": {"limits": {"cpu": "3", "memory": "1Gi"}}}))
    workload = tracker(objects)
    pod = workload["spec"]["template"]["spec"]
    container = tracker_container(objects)
    assert workload["spec"]["replicas"] == 4
    assert container["image"] == DEFAULTS.images.tracker
    assert container["args"] == ["serve", "--no-migrate"]
    env = tracker_env(objects)
    assert env["POLITE_SETTINGS"] == "/etc/polite/settings.yaml"
    assert env["POLITE_KEYS"] == "local:/var/run/polite/keys/keys.json"
    assert env["POLITE_PORT"] == "8080"
    assert env["POLITE_WORKERS"] == "3"  # one per whole CPU of the limit
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "3", "memory": "1Gi"},
    }
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp", "/var/lib/polite/spool"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "spool" not in volumes  # the StatefulSet's claim, not a pod volume
    assert volumes["keys"]["secret"]["secretName"] == "tracker-keys"
    assert volumes["settings"]["configMap"]["name"] == "tracker-settings"
    assert [c["topologyKey"] for c in pod["topologySpreadConstraints"]] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]


def test_a_missing_request_or_limit_follows_the_other() -> None:
    objects = render(make_tenant(tracker={"resources": {"requests": {"cpu": "2"}, "limits": {"memory": "64Mi"}}}))
    resources = tracker_container(objects)["resources"]
    assert resources == {"requests": {"cpu": "2", "memory": "64Mi"}, "limits": {"cpu": "2", "memory": "64Mi"}}


def test_tracker_image_comes_from_the_spec_else_the_configuration() -> None:
    config = make_config(images={"tracker": "registry.example/tracker:9"})
    assert tracker_container(render(make_tenant(), config))["image"] == "registry.example/tracker:9"
    own = render(make_tenant(tracker={"image": "mine:1"}), config)
    assert tracker_container(own)["image"] == "mine:1"
    assert tracker(own)["spec"]["template"]["spec"]["initContainers"][0]["image"] == "mine:1"  # migrate
    assert one(own, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:1"


def test_vault_tracker_is_told_where_its_transit_key_and_role_are() -> None:
    tenant = make_tenant(keys={"provider": "vault", "vault": {"address": "https://vault.example:8200/"}})
    env = tracker_env(render(tenant))
    assert env["POLITE_KEYS"] == "vault:/var/run/polite/keys/wrapped-keys.json"
    assert env["POLITE_VAULT_ADDR"] == "https://vault.example:8200"
    assert env["POLITE_VAULT_TRANSIT_KEY"] == env["POLITE_VAULT_ROLE"] == "polite-acme"
    assert env["POLITE_VAULT_TRANSIT_MOUNT"] == "transit"
    assert env["POLITE_VAULT_TOKEN_FILE"] == "/var/run/secrets/vault/token"


def test_vault_tenant_without_any_vault_address_is_refused_with_the_field() -> None:
    with pytest.raises(RenderError, match=r"spec\.keys\.vault\.address"):
        render_tenant(make_tenant(keys={"provider": "vault", "vault": {}}), DEFAULTS)
    config = make_config(vault={"address": "https://vault.internal:8200"})
    env = tracker_env(render(make_tenant(keys={"provider": "vault", "vault": {}}), config))
    assert env["POLITE_VAULT_ADDR"] == "https://vault.internal:8200"


def test_settings_configmap_is_the_tracker_settings_contract() -> None:
    tenant = make_tenant(
        tracking={"defaultMode": "individual", "allowedModes": ["individual", "anonymous"], "modeLocked": True,
                  "minSegmentSize": 25},
        retention={"interactionDays": 30, "messageDays": 60},
        legalHold=True,
    )  # fmt: skip
    data = yaml.safe_load(one(render(tenant), "ConfigMap", "tracker-settings")["data"]["settings.yaml"])
    settings = TrackerSettings.model_validate(data)
    assert settings.tenant_id == "acme"
    assert settings.public_base_url == "http://tracker.polite-acme.svc.cluster.local"
    assert settings.default_mode is TrackingMode.INDIVIDUAL
    assert settings.allowed_modes == (TrackingMode.INDIVIDUAL, TrackingMode.ANONYMOUS)
    assert settings.mode_locked is True
    assert settings.min_segment_size == 25
    assert (settings.retention_interaction_days, settings.retention_message_days) == (30, 60)
    assert settings.legal_hold is True
    assert settings.spool_dir == "/var/lib/polite/spool"


def test_a_settings_change_rolls_the_tracker_pods() -> None:
    def config_hash(tenant: PoliteTenant) -> str:
        template = tracker(render(tenant))["spec"]["template"]
        return str(template["metadata"]["annotations"]["polite.io/config-hash"])

    assert config_hash(make_tenant()) == config_hash(make_tenant())
    assert config_hash(make_tenant()) != config_hash(make_tenant(tracking={"minSegmentSize": 11}))


@pytest.mark.parametrize(
    ("tracker", "config", "url", "tls", "annotations"),
    [
        ({"host": "t.acme.example"}, {}, "http://t.acme.example", None, {}),
        ({"host": "t.acme.example", "tls": {"secretName": "cert"}}, {}, "https://t.acme.example", "cert", {}),
        (
            {"host": "t.acme.example", "tls": {"issuerRef": {"name": "le", "kind": "ClusterIssuer"}}},
            {},
            "https://t.acme.example",
            "tracker-tls",
            {"cert-manager.io/cluster-issuer": "le"},
        ),
        (
            {"host": "t.acme.example", "tls": {"issuerRef": {"name": "ns-ca", "kind": "Issuer"}}},
            {},
            "https://t.acme.example",
            "tracker-tls",
            {"cert-manager.io/issuer": "ns-ca"},
        ),
        (
            {"host": "t.acme.example"},
            {"cert_manager_issuer": {"name": "default-ca"}, "ingress_class": "nginx"},
            "https://t.acme.example",
            "tracker-tls",
            {"cert-manager.io/cluster-issuer": "default-ca"},
        ),
    ],
    ids=["plain", "secret", "cluster-issuer", "issuer", "config-default-issuer"],
)
def test_ingress_tls_and_public_url(
    tracker: dict[str, Any], config: dict[str, Any], url: str, tls: str | None, annotations: dict[str, str]
) -> None:
    cfg = make_config(**config)
    objects = render(make_tenant(tracker=tracker), cfg)
    ingress = one(objects, "Ingress", "tracker")
    assert ingress["spec"]["rules"][0]["host"] == "t.acme.example"
    assert ingress["spec"].get("ingressClassName") == cfg.ingress_class
    if tls is None:
        assert "tls" not in ingress["spec"]
    else:
        assert ingress["spec"]["tls"] == [{"hosts": ["t.acme.example"], "secretName": tls}]
    assert {
        k: v for k, v in ingress["metadata"]["annotations"].items() if k.startswith("cert-manager.io/")
    } == annotations
    assert (
        yaml.safe_load(one(objects, "ConfigMap", "tracker-settings")["data"]["settings.yaml"])["public_base_url"] == url
    )
    # the endpoint the status shows is the very URL the tracker's settings give its links
    assert render_tenant(make_tenant(tracker=tracker), cfg).endpoint == url


def test_no_host_no_ingress() -> None:
    assert not of_kind(render(make_tenant()), "Ingress")


def test_quota_admits_every_rendered_pod_plus_a_rollout_surge_and_no_exposure() -> None:
    from politetenant.operator.render.hardening import parse_quantity

    for engine in ("statefulset", "cnpg", "external"):
        extra = {"externalSecretRef": {"name": "x", "key": "dsn"}} if engine == "external" else {}
        objects = render(make_tenant(database={"engine": engine, **extra}))
        hard = one(objects, "ResourceQuota")["spec"]["hard"]
        assert hard["services.loadbalancers"] == hard["services.nodeports"] == "0"
        needed = {"limits.cpu": 0, "limits.memory": 0}
        for where, template in pod_templates(objects):
            copies = 1
            if where == "StatefulSet/tracker":
                copies = tracker(objects)["spec"]["replicas"] + 1
            for container in template["spec"]["containers"]:
                needed["limits.cpu"] += copies * parse_quantity(container["resources"]["limits"]["cpu"])
                needed["limits.memory"] += copies * parse_quantity(container["resources"]["limits"]["memory"])
        for key, amount in needed.items():
            assert parse_quantity(hard[key]) >= amount, (engine, key)
        claims = [
            (copies, claim["spec"]["resources"]["requests"]["storage"])
            for workload in of_kind(objects, "StatefulSet")
            for copies in [workload["spec"]["replicas"]]
            for claim in workload["spec"]["volumeClaimTemplates"]
        ]
        if engine != "cnpg":  # CNPG's volumes are its own: counted from its instances in render
            assert hard["persistentvolumeclaims"] == str(sum(copies for copies, _ in claims)), engine
            storage = sum(copies * parse_quantity(size) for copies, size in claims)
            assert parse_quantity(hard["requests.storage"]) == storage, engine


# -- NetworkPolicies: exactly the allowances of docs/architecture.md ------------------------------------------


def test_network_policies_statefulset_with_vault_cidrs_and_ingress_namespace() -> None:
    config = make_config(
        vault={"cidrs": ["10.20.0.0/16"]},
        ingress_namespace_selector={"kubernetes.io/metadata.name": "ingress-nginx"},
    )
    tenant = make_tenant(
        database={"engine": "statefulset"}, keys={"provider": "vault", "vault": {"address": "https://vault:8200"}}
    )
    objects = render(tenant, config)
    names = [o["metadata"]["name"] for o in of_kind(objects, "NetworkPolicy")]
    assert names == ["default-deny", "tracker-ingress", "tracker-egress", "retention-egress", "database-ingress"]
    database_rule = {
        "to": [{"podSelector": {"matchLabels": STATEFULSET_SELECTOR}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }
    assert policy(objects, "default-deny") == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert policy(objects, "tracker-ingress") == {
        "podSelector": {"matchLabels": TRACKER_SELECTOR},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
                "ports": [{"protocol": "TCP", "port": 8080}],
            }
        ],
    }
    assert policy(objects, "tracker-egress") == {
        "podSelector": {"matchLabels": TRACKER_SELECTOR},
        "policyTypes": ["Egress"],
        "egress": [
            database_rule,
            {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 8200}]},
            DNS_RULE,
        ],
    }
    assert policy(objects, "retention-egress") == {
        "podSelector": {"matchLabels": RETENTION_SELECTOR},
        "policyTypes": ["Egress"],
        "egress": [
            database_rule,
            {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 8200}]},
            DNS_RULE,
        ],
    }
    assert policy(objects, "database-ingress") == {
        "podSelector": {"matchLabels": STATEFULSET_SELECTOR},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": TRACKER_SELECTOR}},
                         {"podSelector": {"matchLabels": RETENTION_SELECTOR}}],
                "ports": [{"protocol": "TCP", "port": 5432}],
            }
        ],
    }  # fmt: skip


def test_network_policies_cnpg_with_local_keys_and_defaults() -> None:
    objects = render(make_tenant(database={"engine": "cnpg"}))
    names = [o["metadata"]["name"] for o in of_kind(objects, "NetworkPolicy")]
    assert names == [
        "default-deny", "tracker-ingress", "tracker-egress", "retention-egress", "database-ingress", "database-egress",
    ]  # fmt: skip
    to_database = {
        "to": [{"podSelector": {"matchLabels": CNPG_SELECTOR}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }
    # No ingress selector configured: any namespace may reach the tracker port, and nothing else.
    assert policy(objects, "tracker-ingress")["ingress"] == [
        {"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 8080}]}
    ]
    # Local keys: no Vault rule.
    assert policy(objects, "tracker-egress")["egress"] == [to_database, DNS_RULE]
    assert policy(objects, "database-ingress")["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": TRACKER_SELECTOR}},
                     {"podSelector": {"matchLabels": RETENTION_SELECTOR}}],
            "ports": [{"protocol": "TCP", "port": 5432}],
        },
        {"from": [{"podSelector": {"matchLabels": CNPG_SELECTOR}}], "ports": [{"protocol": "TCP", "port": 5432}]},
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cnpg-system"}}}],
            "ports": [{"protocol": "TCP", "port": 8000}],
        },
    ]  # fmt: skip
    assert policy(objects, "database-egress")["egress"] == [
        to_database,
        DNS_RULE,
        {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]},
    ]
    pinned = render(make_tenant(database={"engine": "cnpg"}), make_config(api_server_cidrs=["172.16.0.10/32"]))
    assert policy(pinned, "database-egress")["egress"][2] == {
        "to": [{"ipBlock": {"cidr": "172.16.0.10/32"}}],
        "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}],
    }


def test_network_policies_external_database_and_metrics_scraper() -> None:
    config = make_config(
        external_db_cidrs=["192.0.2.0/24"], external_db_port=6432, metrics_namespace_selector={"team": "monitoring"}
    )
    tenant = make_tenant(database={"engine": "external", "externalSecretRef": {"name": "db", "key": "dsn"}})
    objects = render(tenant, config)
    names = [o["metadata"]["name"] for o in of_kind(objects, "NetworkPolicy")]
    assert names == ["default-deny", "tracker-ingress", "tracker-egress", "retention-egress"]
    to_database = {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"protocol": "TCP", "port": 6432}]}
    assert policy(objects, "tracker-egress")["egress"] == [to_database, DNS_RULE]
    assert policy(objects, "retention-egress")["egress"] == [to_database, DNS_RULE]
    # The scraper reaches the ops port (health, metrics) and nothing else; the http port stays the ingress's.
    assert policy(objects, "tracker-ingress")["ingress"] == [
        {"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 8080}]},
        {"from": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}],
         "ports": [{"protocol": "TCP", "port": 9090}]},
    ]  # fmt: skip


def test_an_in_cluster_vault_is_reached_by_its_namespace() -> None:
    config = make_config(vault={"namespace_selector": {"kubernetes.io/metadata.name": "vault"}})
    tenant = make_tenant(keys={"provider": "vault", "vault": {"address": "https://vault.vault.svc:8200"}})
    assert policy(render(tenant, config), "tracker-egress")["egress"][1] == {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vault"}}}],
        "ports": [{"protocol": "TCP", "port": 8200}],
    }


def test_vault_port_follows_the_address() -> None:
    tenant = make_tenant(keys={"provider": "vault", "vault": {"address": "https://vault.example"}})
    assert policy(render(tenant), "tracker-egress")["egress"][1] == {"ports": [{"protocol": "TCP", "port": 443}]}


# -- what render promises about itself ----------------------------------------------------------------------


def test_unserved_region_renders_nothing_and_says_why() -> None:
    config = make_config(served_regions=["eu-ireland", "eu-germany"])
    result = render_tenant(make_tenant(region="ap-singapore"), config)
    assert result == RenderResult(
        [], "region ap-singapore is not served by this operator (it serves eu-ireland, eu-germany)"
    )


def test_rendering_twice_gives_byte_identical_output() -> None:
    spec = matrix_case(0, 0)[1]
    first = dump_objects(render(make_tenant(**spec), cnpg_available=True))
    second = dump_objects(render(make_tenant(**spec), cnpg_available=True))
    assert first == second


def test_spec_hash_changes_with_the_spec_and_only_then() -> None:
    def hashes(tenant: PoliteTenant) -> dict[str, str]:
        return {
            f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["annotations"]["polite.io/spec-hash"]
            for o in render(tenant)
        }

    base = hashes(make_tenant())
    relabelled = make_tenant().model_copy(
        update={"metadata": make_tenant().metadata.model_copy(update={"labels": {"team": "x"}})}
    )
    assert hashes(relabelled) == base
    scaled = hashes(make_tenant(tracker={"replicas": 5}))
    changed = {key for key in base if base[key] != scaled[key]}
    assert changed == {"StatefulSet/tracker", "ResourceQuota/tenant-quota"}
    held = hashes(make_tenant(legalHold=True))
    assert {key for key in base if base[key] != held[key]} == {
        "ConfigMap/tracker-settings", "StatefulSet/tracker", "CronJob/retention",
    }  # fmt: skip


def test_spec_hash_is_sha256_of_canonical_json_without_itself() -> None:
    obj = one(render(make_tenant()), "Service", "tracker")
    stripped = json.loads(json.dumps(obj))
    del stripped["metadata"]["annotations"]
    canonical = json.dumps(stripped, sort_keys=True, separators=(",", ":"))
    assert obj["metadata"]["annotations"]["polite.io/spec-hash"] == hashlib.sha256(canonical.encode()).hexdigest()


INJECTIONS = [
    "x\n  evil: true",
    'x"\nevil: true',
    "x\n---\napiVersion: v1\nkind: Secret",
    "{{ 7 * 7 }} {% raw %}",
    "a: b # c",
    "émoji 😀 \x85 \u2028 \x7f tab\tend",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_spec_strings_render_as_plain_strings(text: str) -> None:
    address = 'https://vault:8200/"}{evil:true,#'  # an address may hold anything but white space
    tenant = make_tenant(
        displayName=text,
        tracker={"image": text},
        # Mounts are paths, refused at the door unless plain (test_model); they still travel as values.
        keys={"provider": "vault", "vault": {"address": address, "transitMount": "t/x", "kubernetesAuthMount": "k"}},
    )
    objects = render(tenant)
    plain = render(make_tenant(keys={"provider": "vault", "vault": {"address": "https://vault:8200"}}))
    assert [(o["kind"], sorted(o)) for o in objects] == [(o["kind"], sorted(o)) for o in plain]
    env = tracker_env(objects)
    assert (env["POLITE_VAULT_TRANSIT_MOUNT"], env["POLITE_VAULT_AUTH_MOUNT"]) == ("t/x", "k")
    assert env["POLITE_VAULT_ADDR"] == address
    namespace = one(objects, "Namespace")
    assert namespace["metadata"]["annotations"]["polite.io/display-name"] == text
    assert set(namespace["metadata"]) == {"name", "labels", "annotations"}
    assert set(namespace["metadata"]["annotations"]) == {
        "polite.io/display-name", "polite.io/holds-data", "polite.io/spec-hash", "polite.io/database-engine",
    }  # fmt: skip
    container = tracker_container(objects)
    assert container["image"] == text
    assert "evil" not in json.dumps(objects).replace(json.dumps(text)[1:-1], "").replace(json.dumps(address)[1:-1], "")
    for obj in objects:
        if obj["kind"] != "Cluster":
            validate(obj)
    # And the printed stream reads back to the same objects.
    assert list(yaml.safe_load_all(dump_objects(objects))) == objects


def test_a_lone_surrogate_is_refused_not_mangled() -> None:
    # The model refuses one; render refuses it too should an object ever skip validation.
    tenant = make_tenant()
    broken = tenant.model_copy(update={"spec": tenant.spec.model_copy(update={"display_name": "x\ud800y"})})
    with pytest.raises(RenderError, match="unpaired surrogate"):
        render_tenant(broken, DEFAULTS)


def test_injection_tenant_file_renders_plain_strings() -> None:
    from politetenant.operator.cli import load_tenant

    tenant = load_tenant(str(DATA / "tenant-injection.yaml"))
    objects = render(tenant)
    assert one(objects, "Namespace")["metadata"]["annotations"]["polite.io/display-name"] == "x\n  evil: true"
    for obj in objects:
        validate(obj)


def test_owned_secrets_are_named_never_filled() -> None:
    result = render_tenant(make_tenant(database={"engine": "statefulset"}), DEFAULTS)
    assert not of_kind(result.objects, "Secret")
    login = ("username", "password", "dbname", "host", "port", "uri")
    assert {(s.name, s.keys) for s in result.secrets} == {
        ("tracker-keys", ("keys.json",)),
        ("tracker-api-tokens", ("sender", "analyst", "privacy")),
        ("postgres-credentials", login),
        ("postgres-owner-credentials", login),
        ("postgres-app-credentials", login),
    }
    where = {"dbname": "polite", "host": "postgres.polite-acme.svc.cluster.local", "port": "5432"}
    known = {s.name: s.known for s in result.secrets}
    assert known["postgres-credentials"] == {"username": "polite", **where}
    assert known["postgres-owner-credentials"] == {"username": "polite_owner", **where}
    assert known["postgres-app-credentials"] == {"username": "polite_app", **where}
    vault = render_tenant(make_tenant(keys={"provider": "vault", "vault": {"address": "https://v:8200"}}), DEFAULTS)
    assert ("tracker-keys", ("wrapped-keys.json",)) in {(s.name, s.keys) for s in vault.secrets}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")) + sorted(DATA.glob("tenant-[fms]*.yaml")), ids=str)
def test_every_example_renders_and_validates(path: Path) -> None:
    from politetenant.operator.cli import load_tenant

    tenant = load_tenant(str(path))
    for cnpg in (False, True):
        for obj in render(tenant, cnpg_available=cnpg):
            if obj["kind"] != "Cluster":
                validate(obj)
