"""Argo CD's health check for PoliteTenant (``deploy/argocd/polite.io/PoliteTenant``), run for real.

The Lua runs in Lua 5.1 (lupa; Argo CD's gopher-lua speaks 5.1) with ``string``, ``table``, ``os``,
``io`` and ``math`` set to nil, as an argocd-cm script runs without its standard libraries: a script
that called one would fail here as it fails in Argo CD. Each case of ``health_test.yaml`` (Argo CD's
own test layout) gives the health and message Argo CD would show.

The testdata are the statuses the operator writes: ``build_cases`` makes them with the real reconcile
and deletion steps (``reconcile.reconcile``, ``deletion.offboard``, hence ``status.status_body``) over
the in-memory API of the reconcile tests, and a test fails when a file drifts from what the operator
writes now. Two cases are not written by this operator, and say so: a part failed with no Stalled
condition, and a status with no conditions. Rewrite the files with
``.venv/bin/python -m tests.unit.test_argocd_health``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from politetenant.operator.model.reasons import NEEDS_ACTION, Reason
from politetenant.operator.model.status import PARTS, Facts, failed, passed, status_body
from politetenant.operator.runtime.deletion import offboard
from tests.unit.operator.test_reconcile import FakeKeys, FakeKube, make_available, make_runtime, run, tenant_body

HEALTH_DIR = Path(__file__).resolve().parents[2] / "deploy" / "argocd" / "polite.io" / "PoliteTenant"
SCRIPT = (HEALTH_DIR / "health.lua").read_text()
# What an argocd-cm script lacks unless useOpenLibs is set, and what could load code from outside.
NO_LIBRARIES = ("string", "table", "os", "io", "math", "debug", "package", "require", "load", "loadstring", "dofile")
DELETED_AT = "2030-05-02T00:00:00Z"


# -- running the script as Argo CD does -------------------------------------------------------------


def _to_lua(runtime: Any, value: Any) -> Any:
    """A Python value as Argo CD hands it to Lua: objects and lists as tables, lists 1-based."""
    if isinstance(value, Mapping):
        return runtime.table_from({key: _to_lua(runtime, item) for key, item in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, item) for item in value])
    return value


def lua_health(obj: Mapping[str, Any], script: str = SCRIPT) -> tuple[str, str]:
    """The health status and message ``script`` gives ``obj``, without the standard libraries."""
    runtime = lua51.LuaRuntime()
    sandbox = runtime.globals()
    for name in NO_LIBRARIES:
        sandbox[name] = None
    sandbox.obj = _to_lua(runtime, obj)
    result = runtime.execute(script)
    return str(result.status), str(result.message)


def listed_cases() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load((HEALTH_DIR / "health_test.yaml").read_text())["tests"]
    return tests


def read_case(input_path: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((HEALTH_DIR / input_path).read_text())
    return loaded


# -- the cases, from the operator's own steps -------------------------------------------------------

Step = Callable[[], Awaitable[dict[str, Any]]]


async def _life(**spec: Any) -> tuple[dict[str, Any], FakeKube, Any]:
    """A tenant after its first reconcile, with the runtime that reconciled it."""
    kube, keys = FakeKube(), FakeKeys()
    rt = make_runtime(kube, keys)
    body = tenant_body(**spec)
    await run(body, rt)
    return body, kube, rt


async def _ready(**spec: Any) -> tuple[dict[str, Any], FakeKube, Any]:
    body, kube, rt = await _life(**spec)
    make_available(kube)
    await run(body, rt)
    return body, kube, rt


async def _deleting(body: dict[str, Any], rt: Any) -> dict[str, Any]:
    body["metadata"]["deletionTimestamp"] = DELETED_AT
    outcome = await offboard(body, rt)
    assert outcome.status is not None
    body["status"] = outcome.status
    return body


async def no_status() -> dict[str, Any]:
    return tenant_body()


async def rolling_out() -> dict[str, Any]:
    return (await _life())[0]


async def ready() -> dict[str, Any]:
    return (await _ready())[0]


async def spec_changed() -> dict[str, Any]:
    body = (await _ready())[0]
    body["spec"]["displayName"] = "Acme Europe"
    body["metadata"]["generation"] = 2
    return body


async def retrying_vault_unreachable() -> dict[str, Any]:
    kube, keys = FakeKube(), FakeKeys()
    keys.reachable = False
    body = tenant_body()
    await run(body, make_runtime(kube, keys))
    return body


async def stalled_vault_refused() -> dict[str, Any]:
    kube, keys = FakeKube(), FakeKeys()
    keys.refusing = True
    body = tenant_body()
    await run(body, make_runtime(kube, keys))
    return body


async def part_failed_without_stalled() -> dict[str, Any]:
    """Not written by this operator: the Stalled condition taken out of ``stalled_vault_refused``, as
    a status from a tool that knows only the parts would look."""
    body = await stalled_vault_refused()
    body["status"]["conditions"] = [c for c in body["status"]["conditions"] if c["type"] != "Stalled"]
    return body


async def no_conditions() -> dict[str, Any]:
    """Not written by this operator: a status with its generation but no conditions."""
    body = tenant_body()
    body["status"] = {"observedGeneration": 1, "phase": "Provisioning"}
    return body


async def legal_hold() -> dict[str, Any]:
    return (await _ready(legalHold=True))[0]


async def deleting_held_by_legal_hold() -> dict[str, Any]:
    body, _, rt = await _ready(legalHold=True)
    return await _deleting(body, rt)


async def deleting_namespace() -> dict[str, Any]:
    body, kube, rt = await _ready(deletionPolicy="Delete")
    kube.namespaces_linger = True
    return await _deleting(body, rt)


async def _marked_for_deletion(**spec: Any) -> dict[str, Any]:
    """Deleted in the API, not yet seen by the operator: the status is the last reconcile's."""
    body = (await _ready(**spec))[0]
    body["metadata"]["deletionTimestamp"] = DELETED_AT
    return body


async def deleting_unseen_retain() -> dict[str, Any]:
    return await _marked_for_deletion()


async def deleting_unseen_delete() -> dict[str, Any]:
    return await _marked_for_deletion(deletionPolicy="Delete")


async def deleting_unseen_legal_hold() -> dict[str, Any]:
    return await _marked_for_deletion(legalHold=True)


CASES: dict[str, Step] = {
    "no-status": no_status,
    "rolling-out": rolling_out,
    "ready": ready,
    "spec-changed": spec_changed,
    "retrying-vault-unreachable": retrying_vault_unreachable,
    "stalled-vault-refused": stalled_vault_refused,
    "part-failed-without-stalled": part_failed_without_stalled,
    "no-conditions": no_conditions,
    "legal-hold": legal_hold,
    "deleting-held-by-legal-hold": deleting_held_by_legal_hold,
    "deleting-namespace": deleting_namespace,
    "deleting-unseen-retain": deleting_unseen_retain,
    "deleting-unseen-delete": deleting_unseen_delete,
    "deleting-unseen-legal-hold": deleting_unseen_legal_hold,
}


async def build_cases() -> dict[str, dict[str, Any]]:
    """Each testdata file's object, by file name."""
    return {f"{name}.yaml": await step() for name, step in CASES.items()}


async def write_cases() -> None:
    for name, body in (await build_cases()).items():
        (HEALTH_DIR / "testdata" / name).write_text(yaml.safe_dump(body, sort_keys=False, width=120))


# -- the tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", listed_cases(), ids=lambda case: Path(case["inputPath"]).stem)
def test_argo_cd_shows_each_case_as_health_test_yaml_says(case: dict[str, Any]) -> None:
    expected = case["healthStatus"]
    assert lua_health(read_case(case["inputPath"])) == (expected["status"], expected["message"])


def test_health_test_yaml_covers_every_testdata_file_and_names_no_other() -> None:
    listed = [case["inputPath"] for case in listed_cases()]
    on_disk = sorted(f"testdata/{path.name}" for path in (HEALTH_DIR / "testdata").glob("*.yaml"))
    assert len(listed) == len(set(listed))
    assert sorted(listed) == on_disk
    assert sorted(f"testdata/{name}.yaml" for name in CASES) == on_disk


def test_every_health_argo_cd_knows_of_a_tenant_is_shown_by_some_case() -> None:
    shown = {case["healthStatus"]["status"] for case in listed_cases()}
    assert shown == {"Healthy", "Progressing", "Degraded", "Suspended"}


async def test_testdata_is_the_status_the_operator_writes_today() -> None:
    for name, body in (await build_cases()).items():
        assert read_case(f"testdata/{name}") == body, f"{name} drifted: rewrite with python -m {__name__}"


def _one_part_failing(reason: Reason) -> dict[str, Any]:
    """A tenant whose KeysReady failed with ``reason`` and every other part is fine, as status_body
    writes it (Stalled, Reconciling and Ready derived by the operator's own rules)."""
    checks = [passed(part, Reason.READY) for part in PARTS if part != "KeysReady"]
    checks.append(failed("KeysReady", reason, "what the key service said"))
    body = tenant_body()
    body["status"] = status_body(None, checks, Facts(namespace="polite-acme"), generation=1, now=DELETED_AT)
    return body


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_a_failed_part_is_degraded_only_when_a_person_must_act(reason: Reason) -> None:
    """Argo CD fails a sync on Degraded: only a reason in NEEDS_ACTION may give it; progress and what
    the operator retries by itself (Vault unreachable, an API error) stay Progressing."""
    body = _one_part_failing(reason)
    health, message = lua_health(body)
    assert health == ("Degraded" if reason in NEEDS_ACTION else "Progressing")
    assert "what the key service said" in message
    if health == "Degraded":
        assert reason.value in message

    # The script's own list of reasons that need a person is reasons.NEEDS_ACTION, not just Stalled.
    body["status"]["conditions"] = [c for c in body["status"]["conditions"] if c["type"] != "Stalled"]
    assert lua_health(body)[0] == ("Degraded" if reason in NEEDS_ACTION else "Progressing")


def test_a_script_calling_a_standard_library_fails_in_this_sandbox() -> None:
    with_string = 'return {status = "Healthy", message = string.format("%s", obj.kind)}'
    with pytest.raises(lua51.LuaError, match="string"):
        lua_health({"kind": "PoliteTenant"}, with_string)
    with pytest.raises(lua51.LuaError, match="table"):
        lua_health({"kind": "PoliteTenant"}, 'table.insert({}, 1) return {status = "Healthy"}')


def test_lists_reach_lua_as_one_based_tables() -> None:
    script = "return {status = obj.status.conditions[1].type, message = obj.status.conditions[2].type}"
    body = {"status": {"conditions": [{"type": "Ready"}, {"type": "Stalled"}]}}
    assert lua_health(body, script) == ("Ready", "Stalled")


if __name__ == "__main__":
    asyncio.run(write_cases())
