"""Keys from the operator's side: rotation by annotation, once per value, rolling the tracker; an
unreachable or refusing key service leaves nothing half-written and says so without secrets."""

from __future__ import annotations

import copy
import json

from politetenant.operator.keys.secret import HANDLED_ANNOTATION, ROTATE_ANNOTATION, VERSION_ANNOTATION, newest_version
from politetenant.operator.kube.client import KubeError
from politetenant.operator.kube.secrets import decode
from politetenant.operator.model import names
from politetenant.operator.runtime.reconcile import Runtime
from tests.unit.operator.test_key_secret_conflicts import RacingKube
from tests.unit.operator.test_reconcile import (
    FakeKeys,
    FakeKube,
    conditions,
    make_runtime,
    run,
    tenant_body,
)


def key_doc(kube: FakeKube) -> dict[str, object]:
    secret = kube.find("Secret", names.KEYS_SECRET, "polite-acme")
    assert secret is not None
    return dict(json.loads(decode(secret, "keys.json") or "{}"))


def pod_keys_version(kube: FakeKube) -> str | None:
    tracker = kube.find("StatefulSet", "tracker")
    assert tracker is not None
    version = tracker["spec"]["template"]["metadata"].get("annotations", {}).get(VERSION_ANNOTATION)
    return None if version is None else str(version)


async def test_the_rotate_annotation_rotates_once_per_value_and_rolls_the_tracker(
    kube: FakeKube, keys: FakeKeys, rt: Runtime
) -> None:
    body = tenant_body()
    await run(body, rt)
    assert pod_keys_version(kube) == "1"

    body["metadata"]["annotations"][ROTATE_ANNOTATION] = "2030-05-01"
    outcome = await run(body, rt)

    assert keys.called("rotate") == 1
    assert newest_version(key_doc(kube)) == 2
    assert pod_keys_version(kube) == "2"  # a new pod template: the tracker rolls onto the new keys
    assert outcome.status is not None
    assert outcome.status["keys"]["version"] == 2
    assert outcome.status["keys"]["rotatedAt"].startswith("2030-05-01T")
    rotated = [e for e in kube.events if e["reason"] == "KeysRotated"]
    assert len(rotated) == 1 and "1 -> 2" in rotated[0]["message"]
    assert rt.metrics.key_rotations.labels("eu-ireland")._value.get() == 1
    secret = kube.find("Secret", names.KEYS_SECRET)
    assert secret is not None and secret["metadata"]["annotations"][HANDLED_ANNOTATION] == "2030-05-01"

    writes = len(kube.writes)
    await run(body, rt)  # the same value again: nothing
    assert keys.called("rotate") == 1
    assert kube.writes[writes:] == []

    body["metadata"]["annotations"][ROTATE_ANNOTATION] = "2030-06-01"
    await run(body, rt)
    assert keys.called("rotate") == 2
    assert newest_version(key_doc(kube)) == 3
    assert pod_keys_version(kube) == "3"


async def test_a_rotation_asked_for_before_the_keys_existed_is_answered_by_the_new_keys(
    kube: FakeKube, keys: FakeKeys, rt: Runtime
) -> None:
    body = tenant_body()
    body["metadata"]["annotations"][ROTATE_ANNOTATION] = "at-birth"
    await run(body, rt)
    await run(body, rt)
    assert keys.called("rotate") == 0
    assert newest_version(key_doc(kube)) == 1


async def test_an_unreachable_vault_at_creation_writes_nothing_and_retries(
    kube: FakeKube, keys: FakeKeys, rt: Runtime
) -> None:
    keys.reachable = False
    body = tenant_body()
    outcome = await run(body, rt)

    assert kube.writes == []  # not even the namespace: nothing half-written
    assert outcome.retry
    assert outcome.status is not None
    status, reason = conditions(outcome.status)["KeysReady"]
    assert (status, reason) == ("False", "KeysUnavailable")
    message = next(c["message"] for c in outcome.status["conditions"] if c["type"] == "KeysReady")
    assert "unreachable" in message
    assert "keys" not in outcome.status
    assert [e["reason"] for e in kube.events] == ["KeysUnavailable"]

    await run(body, rt)  # still down: the Event is not repeated on every retry
    assert [e["reason"] for e in kube.events] == ["KeysUnavailable"]

    keys.reachable = True
    outcome = await run(body, rt)
    assert outcome.status is not None
    assert conditions(outcome.status)["KeysReady"] == ("True", "KeysAvailable")
    assert kube.find("StatefulSet", "tracker") is not None


async def test_an_unreachable_vault_during_rotation_keeps_the_old_keys_and_retries(
    kube: FakeKube, keys: FakeKeys, rt: Runtime
) -> None:
    body = tenant_body()
    await run(body, rt)
    before = kube.find("Secret", names.KEYS_SECRET)
    keys.reachable = False
    body["metadata"]["annotations"][ROTATE_ANNOTATION] = "now"
    writes = len(kube.writes)

    outcome = await run(body, rt)

    assert kube.writes[writes:] == []
    assert kube.find("Secret", names.KEYS_SECRET) == before
    assert pod_keys_version(kube) == "1"
    assert outcome.retry
    assert outcome.status is not None
    assert outcome.status["keys"]["version"] == 1
    assert conditions(outcome.status)["KeysReady"] == ("False", "KeysUnavailable")

    keys.reachable = True
    outcome = await run(body, rt)
    assert outcome.status is not None and outcome.status["keys"]["version"] == 2
    assert not outcome.retry


async def test_a_rotation_whose_secret_write_failed_is_retried_without_a_second_version(
    kube: FakeKube, keys: FakeKeys, rt: Runtime
) -> None:
    body = tenant_body()
    await run(body, rt)
    body["metadata"]["annotations"][ROTATE_ANNOTATION] = "once"
    kube.failures[("patch", "Secret", names.KEYS_SECRET)] = KubeError(500, "InternalError", "etcd timeout")

    failed_once = await run(body, rt)
    assert failed_once.retry
    assert failed_once.status is not None
    assert conditions(failed_once.status)["KeysReady"] == ("False", "ApiError")
    assert pod_keys_version(kube) == "1"  # the tracker keeps the keys its Secret still holds

    del kube.failures[("patch", "Secret", names.KEYS_SECRET)]
    await run(body, rt)
    assert newest_version(key_doc(kube)) == 2
    assert pod_keys_version(kube) == "2"


async def test_an_operator_that_lost_the_race_for_a_rotation_shows_and_rolls_to_the_winners_keys(
    keys: FakeKeys,
) -> None:
    kube = RacingKube()
    rt = make_runtime(kube, keys)
    body = tenant_body()
    await run(body, rt)
    body["metadata"]["annotations"][ROTATE_ANNOTATION] = "once"
    won: list[dict[str, object] | None] = []

    async def the_other_operator() -> None:  # reads the same tenant and Secret, and writes first
        await run(copy.deepcopy(body), make_runtime(kube, FakeKeys()))
        won.append(kube.find("Secret", names.KEYS_SECRET))

    kube.meanwhile[names.KEYS_SECRET] = [the_other_operator]
    outcome = await run(body, rt)

    assert kube.find("Secret", names.KEYS_SECRET) == won[0]  # one key under version 2: the winner's
    assert outcome.status is not None and outcome.status["keys"]["version"] == 2
    assert conditions(outcome.status)["KeysReady"] == ("True", "KeysAvailable")
    assert pod_keys_version(kube) == "2"
    assert keys.called("rotate") == 1
    assert kube.event_reasons().count("KeysRotated") == 1  # the winner's; the loser rotated nothing


async def test_a_rotation_refused_twice_keeps_the_tracker_on_the_stored_keys_and_is_retried(keys: FakeKeys) -> None:
    kube = RacingKube()
    rt = make_runtime(kube, keys)
    body = tenant_body()
    await run(body, rt)
    body["metadata"]["annotations"][ROTATE_ANNOTATION] = "mine"

    async def the_other_operator() -> None:  # honours an older request it still sees
        older = copy.deepcopy(body)
        older["metadata"]["annotations"][ROTATE_ANNOTATION] = "older"
        await run(older, make_runtime(kube, FakeKeys()))

    async def someone_labels_it() -> None:
        await kube.patch("v1", "Secret", names.KEYS_SECRET, {"metadata": {"labels": {"x": "y"}}}, "polite-acme")

    kube.meanwhile[names.KEYS_SECRET] = [the_other_operator, someone_labels_it]
    outcome = await run(body, rt)

    assert outcome.retry and outcome.status is not None
    assert conditions(outcome.status)["KeysReady"] == ("False", "ApiError")
    assert outcome.status["keys"]["version"] == 2  # what the Secret holds: the other operator's version 2
    assert pod_keys_version(kube) == "2"
    assert newest_version(key_doc(kube)) == 2

    outcome = await run(body, rt)  # the retry rotates once, from what is stored
    assert outcome.status is not None and outcome.status["keys"]["version"] == 3
    assert newest_version(key_doc(kube)) == 3 and pod_keys_version(kube) == "3"


async def test_a_key_secret_the_api_refuses_stops_provisioning_after_the_namespace(
    kube: FakeKube, keys: FakeKeys, rt: Runtime
) -> None:
    kube.failures[("create", "Secret", names.KEYS_SECRET)] = KubeError(403, "Forbidden", "secrets is forbidden")
    outcome = await run(tenant_body(), rt)
    assert kube.writes == [("create", "Namespace polite-acme"), ("create", "RoleBinding polite-operator-secrets")]
    assert outcome.retry
    assert outcome.status is not None
    assert conditions(outcome.status)["KeysReady"] == ("False", "ApiError")


async def test_a_refusing_vault_is_failed_for_people_to_fix(kube: FakeKube, keys: FakeKeys, rt: Runtime) -> None:
    keys.refusing = True
    outcome = await run(tenant_body(), rt)
    assert outcome.status is not None
    assert conditions(outcome.status)["KeysReady"] == ("False", "VaultRefused")
    assert outcome.status["phase"] == "Failed"
    assert kube.writes == []


async def test_an_unexpected_key_error_says_only_its_type(kube: FakeKube, keys: FakeKeys, rt: Runtime) -> None:
    keys.failure = RuntimeError("token=hvs.CAESIJ-secret-token-text")
    outcome = await run(tenant_body(), rt)
    assert outcome.status is not None
    message = next(c["message"] for c in outcome.status["conditions"] if c["type"] == "KeysReady")
    assert "hvs." not in message and "RuntimeError" in message
    assert all("hvs." not in e["message"] for e in kube.events)


async def test_a_lost_key_secret_is_never_silently_replaced(kube: FakeKube, keys: FakeKeys, rt: Runtime) -> None:
    body = tenant_body()
    await run(body, rt)
    kube.remove("Secret", names.KEYS_SECRET)
    writes = len(kube.writes)

    outcome = await run(body, rt)

    assert keys.called("new_wrapped_version") == 1  # only the first time
    assert kube.writes[writes:] == []
    assert outcome.status is not None
    assert conditions(outcome.status)["KeysReady"] == ("False", "KeysMissing")
    assert outcome.status["phase"] == "Failed"


async def test_key_services_may_be_coroutines(kube: FakeKube) -> None:
    class AsyncKeys(FakeKeys):
        async def new_wrapped_version(self, key_name: str, existing_doc: dict[str, object] | None) -> dict[str, object]:  # type: ignore[override]
            return FakeKeys._add(None)

    rt = make_runtime(kube, AsyncKeys())
    outcome = await run(tenant_body(), rt)
    assert outcome.status is not None and outcome.status["keys"]["version"] == 1


def test_newest_version_reads_the_key_document_format_and_guesses_nothing_else() -> None:
    assert newest_version({"versions": [{"version": 1}, {"version": 3}, {"version": 2}]}) == 3
    assert newest_version({"versions": [{"version": 2}, {"version": True}, "junk"]}) == 2
    assert newest_version({"versions": {"1": {}, "2": {}}}) is None  # no such format: the annotation decides
    assert newest_version({"current_version": 4}) is None
    assert newest_version({"versions": []}) is None
