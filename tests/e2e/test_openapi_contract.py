"""The API keeps its published contract: schemathesis against the live server, with every role's token.

The OpenAPI document is fetched from the running tracker, cases are generated from it (valid and
invalid), and every response is checked: never a 5xx, status codes and bodies as documented.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given

from tests.e2e.tracker_process import TrackerProcess, create_token, running_tracker, tracker_settings_file

pytestmark = pytest.mark.slow
ROLES = ("sender", "analyst", "privacy")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TrackerProcess, dict[str, str]]]:
    workdir = tmp_path_factory.mktemp("contract")
    db = f"sqlite:///{workdir}/tracker.db"
    settings = tracker_settings_file(workdir)
    keys = f"local:{workdir / 'keys.json'}"
    tokens = {role: create_token(role, db, keys, settings) for role in ROLES}
    with running_tracker(workdir, db, keys=keys) as tracker:
        yield tracker, tokens


def _schema(tracker: TrackerProcess) -> schemathesis.BaseSchema:
    with urllib.request.urlopen(f"{tracker.base_url}/api/v1/openapi.json", timeout=10) as resp:
        document = json.loads(resp.read())
    return schemathesis.openapi.from_dict(document)


def test_openapi_document_describes_every_route(live: tuple[TrackerProcess, dict[str, str]]) -> None:
    from politetenant.tracker.server.app import api_operations

    schema = _schema(live[0])
    documented = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert documented == {(op.method, op.path) for op in api_operations()}
    assert len(documented) >= 8


@pytest.mark.parametrize("role", ROLES)
def test_live_api_never_5xx_and_matches_its_schema(live: tuple[TrackerProcess, dict[str, str]], role: str) -> None:
    tracker, tokens = live
    schema = _schema(tracker)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=tracker.base_url, headers={"Authorization": f"Bearer {tokens[role]}"}, timeout=10
            )

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
