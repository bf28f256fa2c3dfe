"""The package map is a contract: layers import one way, rooms say what they own, modules stay small.

Reads every module's imports with ``ast`` (also imports inside functions and under TYPE_CHECKING:
a cycle there is still a cycle for the reader) and checks them against the layers that
docs/architecture.md draws. Adding a module to a room needs no change here; adding a room does.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "politetenant"

# Rooms of each part, highest first; a room may import rooms listed after it, never before it, and
# rooms sharing a line are independent of each other.
TRACKER_LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("server",),
    ("ui",),
    ("reports",),
    ("privacy",),
    ("public", "messages"),
    ("http",),
    ("ingest",),
    ("storage", "judging", "metrics"),
)
OPERATOR_LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("runtime", "kubectl"),
    ("keys",),
    ("kube",),
    ("render",),
    ("model",),
)
# What each part of the project may import of the others (besides itself and the standard library).
PARTS_MAY_IMPORT = {
    "durable": set(),
    "crypto": {"durable"},
    "settings": set(),
    "regions": set(),
    "tracker": {"crypto", "settings", "durable"},
    "operator": {"crypto", "settings", "regions"},
}
MAX_MODULE_LINES = 450


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path) -> Iterator[Import]:
    """Every import of a project module by a project module under ``root`` (a ``politetenant`` tree)."""
    prefix = root.name
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # ``from pkg import mod`` imports pkg.mod when that is a module, else a name of pkg.
                targets = [
                    f"{node.module}.{alias.name}" if _is_module(root, f"{node.module}.{alias.name}") else node.module
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                if target == prefix or target.startswith(prefix + "."):
                    yield Import(name, target, node.lineno)


def _is_module(root: Path, dotted: str) -> bool:
    path = root.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def part(dotted: str) -> str:
    """``politetenant.tracker.http.auth`` -> ``tracker``."""
    pieces = dotted.split(".")
    return pieces[1] if len(pieces) > 1 else ""


def room(dotted: str) -> str:
    """``politetenant.tracker.http.auth`` -> ``http``; the part's own ``__init__`` has no room."""
    pieces = dotted.split(".")
    return pieces[2] if len(pieces) > 2 else ""


def layer_violations(found: Sequence[Import], layers: tuple[tuple[str, ...], ...], of_part: str) -> list[str]:
    """Imports inside one part that run upwards or sideways between its rooms, as readable lines."""
    rank = {name: i for i, names in enumerate(layers) for name in names}
    problems = []
    for imp in found:
        if part(imp.module) != of_part or part(imp.target) != of_part:
            continue
        source, target = room(imp.module), room(imp.target)
        if not source or not target or source == target:
            continue
        if source not in rank or target not in rank:
            problems.append(f"{imp.module}:{imp.line}: room {source or target!r} is in no layer of {of_part}")
        elif rank[target] < rank[source]:
            problems.append(f"{imp.module}:{imp.line} imports {imp.target}: {source} is below {target}")
        elif rank[target] == rank[source]:
            problems.append(f"{imp.module}:{imp.line} imports {imp.target}: {source} and {target} are independent")
    return problems


def part_violations(found: Sequence[Import]) -> list[str]:
    problems = []
    for imp in found:
        source, target = part(imp.module), part(imp.target)
        if source != target and target not in PARTS_MAY_IMPORT.get(source, set()):
            problems.append(f"{imp.module}:{imp.line} imports {imp.target}: {source} may not import {target}")
    return problems


@pytest.fixture(scope="module")
def project_imports() -> list[Import]:
    return list(imports_of(PACKAGE))


def test_crypto_settings_and_regions_import_nothing_from_tracker_or_operator(project_imports: list[Import]) -> None:
    assert part_violations(project_imports) == []


@pytest.mark.parametrize(("name", "layers"), [("tracker", TRACKER_LAYERS), ("operator", OPERATOR_LAYERS)])
def test_rooms_import_only_downwards(
    project_imports: list[Import], name: str, layers: tuple[tuple[str, ...], ...]
) -> None:
    assert layer_violations(project_imports, layers, name) == []


@pytest.mark.parametrize(("name", "layers"), [("tracker", TRACKER_LAYERS), ("operator", OPERATOR_LAYERS)])
def test_every_room_is_in_a_layer_and_says_what_it_owns(name: str, layers: tuple[tuple[str, ...], ...]) -> None:
    listed = {room for rooms in layers for room in rooms}
    on_disk = {p.parent.name for p in (PACKAGE / name).glob("*/__init__.py")}
    on_disk |= {p.stem for p in (PACKAGE / name).glob("*.py") if p.stem != "__init__"}
    assert on_disk == listed
    for init in [PACKAGE / name / "__init__.py", *(PACKAGE / name).glob("*/__init__.py")]:
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring and len(docstring.split()) >= 15, f"{init.relative_to(ROOT)} needs a docstring of what it owns"


def test_no_module_grows_past_one_idea() -> None:
    sizes = {p.relative_to(ROOT): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES} == {}


# -- the checks themselves can fail ----------------------------------------------------------------------


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "politetenant"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for directory in [root, *[d for d in root.rglob("*") if d.is_dir()]]:
        (directory / "__init__.py").touch()
    return root


def test_a_storage_module_importing_http_is_reported(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "tracker/http/errors.py": "",
            "tracker/storage/base.py": "from politetenant.tracker.http import errors\n",
        },
    )
    assert layer_violations(list(imports_of(root)), TRACKER_LAYERS, "tracker") == [
        "politetenant.tracker.storage.base:1 imports politetenant.tracker.http.errors: storage is below http"
    ]


def test_crypto_importing_the_operator_is_reported_even_inside_a_function(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "operator/model/names.py": "",
            "crypto/vault.py": "def name():\n    from politetenant.operator.model.names import vault_name\n",
        },
    )
    assert part_violations(list(imports_of(root))) == [
        "politetenant.crypto.vault:2 imports politetenant.operator.model.names: crypto may not import operator"
    ]


def test_sibling_rooms_and_tracker_operator_imports_are_reported(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "tracker/public/beacons.py": "import politetenant.tracker.messages.registration\n",
            "tracker/messages/registration.py": "",
            "operator/render/tenant.py": "from politetenant.tracker.public import beacons\n",
        },
    )
    found = list(imports_of(root))
    assert layer_violations(found, TRACKER_LAYERS, "tracker") == [
        "politetenant.tracker.public.beacons:1 imports politetenant.tracker.messages.registration: "
        "public and messages are independent"
    ]
    assert part_violations(found) == [
        "politetenant.operator.render.tenant:1 imports politetenant.tracker.public.beacons: "
        "operator may not import tracker"
    ]
