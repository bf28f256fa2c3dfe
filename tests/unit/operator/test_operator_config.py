"""The operator's configuration: built-in defaults, a YAML file, POLITE_OPERATOR_* on top, errors by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from politetenant.operator.model.config import ConfigError, OperatorConfig, load_operator_config
from politetenant.regions import REGION_NAMES


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_serve_every_region_on_aws() -> None:
    config = load_operator_config(None, {})
    assert config == OperatorConfig()
    assert config.cloud == "aws"
    assert config.served_regions == REGION_NAMES
    assert config.ingress_namespace_selector is None
    assert config.vault.address is None and config.vault.cidrs == []


def test_file_then_environment_environment_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path / "operator.yaml",
        "cloud: azure\n"
        "served_regions: [eu-ireland]\n"
        "images: {tracker: registry.example/tracker:1, postgres: postgres:17}\n"
        "vault: {address: 'https://vault.example:8200', cidrs: [10.0.0.0/8]}\n",
    )
    environ = {
        "POLITE_OPERATOR_SERVED_REGIONS": "eu-ireland, eu-germany",
        "POLITE_OPERATOR_IMAGES__TRACKER": "registry.example/tracker:2",
        "POLITE_OPERATOR_INGRESS_NAMESPACE_SELECTOR": "kubernetes.io/metadata.name=ingress-nginx",
        "POLITE_OPERATOR_CERT_MANAGER_ISSUER": "name=letsencrypt,kind=ClusterIssuer",
        "POLITE_OPERATOR_EXTERNAL_DB_PORT": "6432",
        "POLITE_OPERATOR_NAMESPACE": "polite-system",
        "OTHER": "ignored",
    }
    config = load_operator_config(path, environ)
    assert config.cloud == "azure"
    assert config.served_regions == ("eu-ireland", "eu-germany")
    assert config.images.tracker == "registry.example/tracker:2"
    assert config.images.postgres == "postgres:17"  # the file's value where the environment says nothing
    assert config.vault.address == "https://vault.example:8200"
    assert config.vault.cidrs == ["10.0.0.0/8"]
    assert config.ingress_namespace_selector == {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert config.cert_manager_issuer is not None and config.cert_manager_issuer.name == "letsencrypt"
    assert config.external_db_port == 6432
    assert config.namespace == "polite-system"


def test_the_file_can_be_named_by_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "operator.yaml", "cloud: azure\n")
    assert load_operator_config(None, {"POLITE_OPERATOR_CONFIG": path}).cloud == "azure"


def test_empty_variable_unsets_an_optional_setting(tmp_path: Path) -> None:
    path = write(tmp_path / "operator.yaml", "ingress_class: nginx\n")
    assert load_operator_config(path, {"POLITE_OPERATOR_INGRESS_CLASS": ""}).ingress_class is None


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("cloud: gcp\n", {}, "{file}: cloud: Input should be 'aws' or 'azure'"),
        ("served_regions: [eu-ireland, eu-ireland]\n", {}, "{file}: served_regions: Value error, lists a region twice"),
        (
            "served_regions: []\n",
            {},
            "{file}: served_regions: Tuple should have at least 1 item after validation, not 0",
        ),
        ("vault: {cidrs: [vault.example]}\n", {}, "{file}: vault.cidrs: Value error, 'vault.example' is not a CIDR"),
        ("images: {tracker: ''}\n", {}, "{file}: images.tracker: String should have at least 1 character"),
        ("surprise: 1\n", {}, "{file}: surprise: Extra inputs are not permitted"),
        ("", {"POLITE_OPERATOR_CLOUD": "gcp"}, "POLITE_OPERATOR_CLOUD: cloud: Input should be 'aws' or 'azure'"),
        ("", {"POLITE_OPERATOR_VAULT__CIDRS": "10.0.0.0/8,nope"}, "POLITE_OPERATOR_VAULT__CIDRS: vault.cidrs: "),
        ("", {"POLITE_OPERATOR_SURPRISE": "1"}, "POLITE_OPERATOR_SURPRISE: surprise is not an operator setting"),
        ("", {"POLITE_OPERATOR_CLOUD__X": "1"}, "POLITE_OPERATOR_CLOUD__X: cloud has no nested settings"),
        ("", {"POLITE_OPERATOR_DNS__POD_LABELS": "k8s-app"}, "POLITE_OPERATOR_DNS__POD_LABELS: expected key=value"),
        ("- a list\n", {}, "{file}: expected a mapping of operator settings"),
        ("cloud: [\n", {}, "{file}: not valid YAML at line 2, column 1"),
    ],
)
def test_errors_name_the_setting(tmp_path: Path, text: str, environ: dict[str, str], message: str) -> None:
    path = write(tmp_path / "operator.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_operator_config(path, environ)
    assert str(caught.value).startswith(message.format(file=path))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"operator\.yaml: file not found"):
        load_operator_config(tmp_path / "operator.yaml", {})
