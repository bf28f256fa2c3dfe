"""``polite-operator render`` and ``crd`` as a platform engineer runs them: YAML out, readable errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from politetenant.operator.cli import load_tenant, main
from politetenant.operator.model.config import load_operator_config
from politetenant.operator.render.tenant import render_tenant

DATA = Path(__file__).with_name("data")
MINIMAL = str(DATA / "tenant-minimal.yaml")
FULL = str(DATA / "tenant-full.yaml")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_render_prints_every_object_as_multi_document_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "render", "-f", FULL)
    assert (code, err) == (0, "")
    documents = list(yaml.safe_load_all(out))
    expected = render_tenant(load_tenant(FULL), load_operator_config(None, {})).objects
    assert documents == expected
    assert out.startswith("---\n") and out.count("\n---\n") == len(documents) - 1
    for obj in documents:
        if obj["kind"] != "Cluster":
            kubernetes_validate.validate(obj, "1.37", strict=True)
    # The settings file reads as a file in review, not as one escaped line.
    assert "settings.yaml: |" in out


def test_render_without_config_serves_every_region(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "render", "-f", str(DATA / "tenant-singapore.yaml"))
    assert code == 0
    assert {doc["kind"] for doc in yaml.safe_load_all(out)} >= {"Namespace", "StatefulSet", "Service"}


def test_render_cnpg_flag_picks_cloudnativepg_for_an_unset_engine(capsys: pytest.CaptureFixture[str]) -> None:
    _, plain, _ = run(capsys, "render", "-f", MINIMAL)
    _, cnpg, _ = run(capsys, "render", "-f", MINIMAL, "--cnpg")
    assert "StatefulSet" in {d["kind"] for d in yaml.safe_load_all(plain)}
    assert "Cluster" in {d["kind"] for d in yaml.safe_load_all(cnpg)}


def test_render_of_an_unserved_region_prints_nothing_and_says_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "operator.yaml"
    config.write_text("cloud: azure\nserved_regions: [eu-ireland, eu-germany]\n")
    tenant = str(DATA / "tenant-singapore.yaml")
    code, out, err = run(capsys, "render", "-f", tenant, "--config", str(config))
    assert (code, out) == (0, "")
    assert err == (
        f"{tenant}: tenant stark not rendered: region ap-singapore is not served by this operator"
        " (it serves eu-ireland, eu-germany)\n"
    )


def test_render_uses_the_configuration_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "operator.yaml"
    config.write_text("cloud: azure\nimages: {tracker: registry.example/tracker:7}\ningress_class: nginx\n")
    _, out, _ = run(capsys, "render", "-f", MINIMAL, "--config", str(config))
    tracker = next(
        d for d in yaml.safe_load_all(out) if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "tracker"
    )
    pod = tracker["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/tracker:7"
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"][0]["values"] == ["northeurope"]


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        ("tenant-bad-segment.yaml", ["spec.tracking.minSegmentSize: Input should be greater than or equal to 5"]),
        ("tenant-wrong-kind.yaml", ["kind: Input should be 'PoliteTenant'"]),
        ("tenant-unknown-field.yaml", ["spec.tracker.replica: Extra inputs are not permitted"]),
        ("tenant-not-yaml.yaml", ["not valid YAML at line 4, column 1"]),
        ("does-not-exist.yaml", ["file not found"]),
    ],
)
def test_a_bad_tenant_file_exits_2_with_the_field_and_the_reason(
    capsys: pytest.CaptureFixture[str], name: str, lines: list[str]
) -> None:
    path = str(DATA / name)
    code, out, err = run(capsys, "render", "-f", path)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"{path}: {line}" for line in lines]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "expected a PoliteTenant object (a YAML mapping)"),
        ("kind: PoliteTenant\n---\nkind: PoliteTenant\n", "expected one PoliteTenant, found 2 YAML documents"),
        ("", "expected one PoliteTenant, found 0 YAML documents"),
    ],
)
def test_a_tenant_file_must_hold_one_object(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "tenant.yaml"
    path.write_text(text)
    code, _, err = run(capsys, "render", "-f", str(path))
    assert (code, err) == (2, f"{path}: {message}\n")


def test_every_bad_field_gets_its_own_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "tenant.yaml"
    path.write_text(
        "apiVersion: polite.io/v1alpha1\nkind: PoliteTenant\nmetadata: {name: acme}\n"
        "spec: {displayName: Acme, region: mars, tracker: {replicas: 0}}\n"
    )
    code, _, err = run(capsys, "render", "-f", str(path))
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}: spec.region: Input should be ")
    assert lines[1] == f"{path}: spec.tracker.replicas: Input should be greater than or equal to 1"


def test_a_bad_configuration_exits_2_naming_the_setting(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "operator.yaml"
    config.write_text("cloud: gcp\n")
    code, out, err = run(capsys, "render", "-f", MINIMAL, "--config", str(config))
    assert (code, out) == (2, "")
    assert err == f"{config}: cloud: Input should be 'aws' or 'azure'\n"


def test_a_tenant_that_cannot_be_rendered_exits_2_with_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "tenant.yaml"
    path.write_text(
        "apiVersion: polite.io/v1alpha1\nkind: PoliteTenant\nmetadata: {name: acme}\n"
        "spec: {displayName: Acme, region: us-east, keys: {provider: vault, vault: {}}}\n"
    )
    code, _, err = run(capsys, "render", "-f", str(path))
    assert code == 2
    assert err == (f"{path}: spec.keys.vault.address: unset, and the operator configuration has no vault.address\n")


def test_render_reads_standard_input(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(Path(MINIMAL).read_text()))
    code, out, _ = run(capsys, "render", "-f", "-")
    assert code == 0
    assert next(yaml.safe_load_all(out))["metadata"]["name"] == "polite-acme"


def test_crd_prints_the_custom_resource_definition(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("politetenant.operator.model.crd")
    code, out, _ = run(capsys, "crd")
    assert code == 0
    crd = yaml.safe_load(out)
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "politetenants.polite.io"


def test_the_module_runs_as_a_program() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "politetenant.operator.cli", "render", "-f", MINIMAL],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert next(yaml.safe_load_all(done.stdout))["kind"] == "Namespace"


def test_summary_names_every_object_with_its_placement(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "render", "-f", "examples/tenant-eu-vault.yaml", "--summary")
    assert code == 0
    lines = out.splitlines()
    rendered = render_tenant(load_tenant("examples/tenant-eu-vault.yaml"), load_operator_config(None, {}))
    assert len([line for line in lines if line.startswith("  ")]) == len(rendered.objects) + len(rendered.secrets)
    tracker = next(line for line in lines if line.split()[:2] == ["StatefulSet", "polite-globex/tracker"])
    assert "pinned to eu-central-1" in tracker and "replicas=3" in tracker and "volume 2Gi on" in tracker
    assert any(line.split()[0] == "CronJob" and "schedule" in line for line in lines)


def test_tracker_settings_are_the_ones_the_tracker_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    from politetenant.settings import TrackerSettings

    code, out, _ = run(capsys, "render", "-f", "examples/tenant-us-external-db.yaml", "--tracker-settings")
    assert code == 0
    settings = TrackerSettings.model_validate(yaml.safe_load(out))
    tenant = load_tenant("examples/tenant-us-external-db.yaml")
    assert settings.tenant_id == tenant.name
    assert settings.min_segment_size == tenant.spec.tracking.min_segment_size
    assert settings.default_mode == tenant.spec.tracking.default_mode
