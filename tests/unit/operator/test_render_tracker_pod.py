"""The tracker's pods: a StatefulSet whose spool outlives each pod, the bootstrap API tokens mounted,
a GeoIP database from the operator's configuration, migrations as the database owner before serve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from politetenant.operator.model.config import ConfigError, load_operator_config
from politetenant.operator.render.tenant import RenderError, render_tenant
from politetenant.settings import TrackerSettings
from tests.unit.operator.test_render import (
    DEFAULTS,
    make_config,
    make_tenant,
    of_kind,
    one,
    render,
    tracker,
    tracker_container,
    tracker_env,
    validate,
)

GEOIP_PVC = {"volume": {"persistentVolumeClaim": {"claimName": "geoip", "readOnly": True}}}


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container["volumeMounts"]}


def pod_volumes(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in tracker(objects)["spec"]["template"]["spec"]["volumes"]}


def settings_of(objects: list[dict[str, Any]]) -> TrackerSettings:
    text = one(objects, "ConfigMap", "tracker-settings")["data"]["settings.yaml"]
    return TrackerSettings.model_validate(yaml.safe_load(text))


# -- H3: the spool survives the pod --------------------------------------------------------------------


def test_the_spool_is_a_claim_per_pod_that_outlives_the_pod_and_a_scale_down() -> None:
    objects = render(make_tenant(tracker={"replicas": 3}))
    assert not of_kind(objects, "Deployment")
    workload = tracker(objects)
    spec = workload["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spool"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "gp3",  # the region's, like the database's
        "resources": {"requests": {"storage": "1Gi"}},
    }
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "RollingUpdate"}
    assert spec["replicas"] == 3
    spool_mount = mounts(tracker_container(objects))["/var/lib/polite/spool"]
    assert spool_mount == {"name": "spool", "mountPath": "/var/lib/polite/spool"}
    assert "spool" not in pod_volumes(objects), "an emptyDir named spool would shadow the claim"
    assert settings_of(objects).spool_dir == "/var/lib/polite/spool"
    validate(workload)


def test_spool_storage_sizes_the_claims_and_the_spool_budget_below_it() -> None:
    objects = render(make_tenant(tracker={"spoolStorage": "4Gi", "replicas": 2}))
    (claim,) = tracker(objects)["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "4Gi"
    assert settings_of(objects).spool_max_bytes == int(4 * 2**30 * 0.8)
    assert settings_of(render(make_tenant())).spool_max_bytes == int(2**30 * 0.8)
    hard = one(objects, "ResourceQuota")["spec"]["hard"]
    # Two spool claims and the database's (statefulset engine, 10Gi).
    assert hard["persistentvolumeclaims"] == "3"
    assert hard["requests.storage"] == f"{(2 * 4 + 10) * 1024}Mi"


def test_a_spool_too_small_for_a_budget_is_refused_naming_the_field() -> None:
    with pytest.raises(RenderError, match=r"spec\.tracker\.spoolStorage: 4Mi is too small for a spool; at least 5Mi"):
        render_tenant(make_tenant(tracker={"spoolStorage": "4Mi"}), DEFAULTS)
    assert settings_of(render(make_tenant(tracker={"spoolStorage": "5Mi"}))).spool_max_bytes == 4 * 2**20


def test_the_spool_claims_are_pinned_to_the_tenant_region_storage_class() -> None:
    config = make_config(cloud="azure", storage_classes={"eu-ireland": "encrypted-ie"})
    (claim,) = tracker(render(make_tenant(), config))["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "encrypted-ie"


# -- H1: the bootstrap API tokens -------------------------------------------------------------------------


def test_the_bootstrap_api_tokens_are_mounted_read_only_and_named_to_serve() -> None:
    result = render_tenant(make_tenant(), DEFAULTS)
    (owned,) = [s for s in result.secrets if s.name == "tracker-api-tokens"]
    assert owned.keys == ("sender", "analyst", "privacy")
    volume = pod_volumes(result.objects)["api-tokens"]
    # Every key of the Secret becomes a file (no items list), readable by the tracker's group only.
    assert volume == {"name": "api-tokens", "secret": {"secretName": "tracker-api-tokens", "defaultMode": 0o440}}
    mount = mounts(tracker_container(result.objects))["/var/run/polite/api-tokens"]
    assert mount == {"name": "api-tokens", "mountPath": "/var/run/polite/api-tokens", "readOnly": True}
    assert tracker_env(result.objects)["POLITE_API_TOKENS_DIR"] == "/var/run/polite/api-tokens"
    # Only serve reads them: neither purge nor the migrate step gets the tokens.
    cronjob = one(result.objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert "tracker-api-tokens" not in str(cronjob)
    (migrate,) = tracker(result.objects)["spec"]["template"]["spec"]["initContainers"]
    assert "api-tokens" not in str(migrate)


# -- M1: GeoIP and trusted proxies from the operator's configuration --------------------------------------


@pytest.mark.parametrize(
    "geoip",
    [
        GEOIP_PVC,
        {"volume": {"configMap": {"name": "geoip-test"}}, "file": "test/City.mmdb"},
        {"volume": {"csi": {"driver": "nfs.csi.k8s.io", "readOnly": True, "volumeAttributes": {"share": "/geo"}}}},
    ],
    ids=["pvc", "configmap", "csi"],
)
def test_a_configured_geoip_volume_is_mounted_read_only_and_passed_to_serve(geoip: dict[str, Any]) -> None:
    config = make_config(geoip=geoip)
    objects = render(make_tenant(), config)
    ((source, settings),) = geoip["volume"].items()
    assert pod_volumes(objects)["geoip"] == {"name": "geoip", source: settings}
    mount = mounts(tracker_container(objects))["/var/lib/polite/geoip"]
    assert mount == {"name": "geoip", "mountPath": "/var/lib/polite/geoip", "readOnly": True}
    file = geoip.get("file", "GeoLite2-City.mmdb")
    assert tracker_env(objects)["POLITE_GEOIP"] == f"/var/lib/polite/geoip/{file}"
    validate(tracker(objects))  # the verbatim source is a volume the Kubernetes schema accepts


def test_without_geoip_the_tracker_gets_no_database_and_places_stay_unknown() -> None:
    objects = render(make_tenant())
    assert "geoip" not in pod_volumes(objects)
    assert "POLITE_GEOIP" not in tracker_env(objects)


@pytest.mark.parametrize(
    ("geoip", "message"),
    [
        ({"volume": {}}, "needs exactly one volume source (found: none)"),
        (
            {"volume": {"configMap": {"name": "a"}, "persistentVolumeClaim": {"claimName": "b"}}},
            "needs exactly one volume source (found: configMap, persistentVolumeClaim)",
        ),
        ({"volume": {"hostPath": {"path": "/usr/share/GeoIP"}}}, "hostPath is not a volume source Pod Security"),
        ({"volume": {"configMap": {"name": "a"}}, "file": "../etc/passwd"}, "geoip.file"),
        ({"volume": {"configMap": {"name": "a"}}, "file": "/abs.mmdb"}, "geoip.file"),
        ({"file": "City.mmdb"}, "geoip.volume"),
    ],
    ids=["none", "two", "hostPath", "dotdot", "absolute", "missing"],
)
def test_a_geoip_volume_the_tenant_namespace_cannot_mount_is_refused_at_start(
    geoip: dict[str, Any], message: str, tmp_path: Path
) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(yaml.safe_dump({"geoip": geoip}))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        load_operator_config(path, {})
    assert str(path) in str(caught.value)


def test_geoip_can_come_from_the_environment() -> None:
    env = {"POLITE_OPERATOR_GEOIP__VOLUME": "{image: {reference: registry.example/geoip:2025-06}}"}
    config = load_operator_config(None, env)
    assert config.geoip is not None
    assert config.geoip.volume == {"image": {"reference": "registry.example/geoip:2025-06"}}
    assert config.geoip.file == "GeoLite2-City.mmdb"


def test_trusted_proxies_reach_serve_only_when_configured() -> None:
    config = make_config(trusted_proxies=["10.244.0.0/16", "fd00::/64"])
    assert tracker_env(render(make_tenant(), config))["POLITE_TRUSTED_PROXIES"] == "10.244.0.0/16,fd00::/64"
    assert "POLITE_TRUSTED_PROXIES" not in tracker_env(render(make_tenant()))


# -- M2: migrations as the owner, serve and purge as the app role -----------------------------------------


@pytest.mark.parametrize(
    ("engine", "serve", "migrate"),
    [
        ("statefulset", "postgres-app-credentials", "postgres-owner-credentials"),
        ("cnpg", "postgres-app", "postgres-app"),  # CloudNativePG's app user owns its database, no superuser
        ("external", "their-db", "their-db"),
    ],
)
def test_migrations_run_first_as_the_owner_then_serve_without_migrating(engine: str, serve: str, migrate: str) -> None:
    database: dict[str, Any] = {"engine": engine}
    if engine == "external":
        database["externalSecretRef"] = {"name": "their-db", "key": "uri"}
    objects = render(make_tenant(database=database))
    pod = tracker(objects)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["name"] == "migrate" and init["args"] == ["migrate"]
    assert init["image"] == tracker_container(objects)["image"]
    init_env = {v["name"]: v.get("value", v.get("valueFrom")) for v in init["env"]}
    assert init_env["POLITE_DB"] == {"secretKeyRef": {"name": migrate, "key": "uri"}}
    assert tracker_container(objects)["args"] == ["serve", "--no-migrate"]
    assert tracker_env(objects)["POLITE_DB"] == {"secretKeyRef": {"name": serve, "key": "uri"}}
    assert not any(m.get("readOnly") is not True and m["mountPath"] != "/tmp" for m in init["volumeMounts"])


def test_no_tracker_or_retention_pod_refers_to_the_database_superuser() -> None:
    objects = render(make_tenant(database={"engine": "statefulset"}))
    for kind, name in (("StatefulSet", "tracker"), ("CronJob", "retention")):
        assert "postgres-credentials" not in str(one(objects, kind, name)), kind
    database = one(objects, "StatefulSet", "postgres")
    assert "postgres-credentials" in str(database)  # the image's superuser stays in the database pod
