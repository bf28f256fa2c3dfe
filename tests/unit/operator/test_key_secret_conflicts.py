"""Two writers of one key Secret: the rotation patch is conditional on the resourceVersion it was
prepared from, and a 409 makes the operator re-plan (adopt what the other stored, or prepare once
more), so one key version number never stands for two different keys.

``RacingKube`` is the reconcile tests' ``FakeKube`` with the API server's optimistic concurrency
(https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions: a write naming a
stale ``metadata.resourceVersion`` is 409 Conflict, with the server's message) and a way to let
another writer in between a read and a write: ``meanwhile[name]`` runs just before the next write of
that object.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from politetenant.crypto.keys import PURPOSES
from politetenant.crypto.local_provider import unwrap_key
from politetenant.operator.keys.lifecycle import KeyBackend
from politetenant.operator.keys.local import LocalTenantKeys, master_secret_name
from politetenant.operator.keys.secret import (
    HANDLED_ANNOTATION,
    ROTATE_ANNOTATION,
    VERSION_ANNOTATION,
    KeyPlan,
    OperatorSecrets,
    prepare_keys,
    store_keys,
    write_keys,
)
from politetenant.operator.kube.client import KubeError
from politetenant.operator.kube.secrets import decode
from politetenant.operator.model import names
from politetenant.operator.model.config import OperatorConfig
from politetenant.operator.model.tenant import DatabaseEngine, PoliteTenant
from politetenant.operator.render.wiring import OwnedSecret, owned_secrets
from tests.unit.operator.test_reconcile import FakeKeys, FakeKube, VaultDown, VaultSaysNo, tenant_body

NOW = "2030-05-01T12:00:00Z"
OPERATOR_NAMESPACE = "politetenant-system"
Hook = Callable[[], Awaitable[object]]


class RacingKube(FakeKube):
    """``FakeKube`` with resourceVersion preconditions on patches, and other writers let in on cue."""

    def __init__(self) -> None:
        super().__init__()
        self.meanwhile: dict[str, list[Hook]] = {}  # object name -> writers to run before its next write
        self.sent: list[tuple[str, str, dict[str, Any]]] = []  # (verb, name, body) of every create and patch
        self._letting_in = False

    async def _let_in(self, name: str) -> None:
        waiting = self.meanwhile.get(name)
        if waiting and not self._letting_in:  # the other writer's own writes let nobody in
            self._letting_in = True
            try:
                await waiting.pop(0)()
            finally:
                self._letting_in = False

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        await self._let_in(name)
        self.sent.append(("create", name, json.loads(json.dumps(obj))))
        return await super().create(obj)

    async def patch(
        self, api_version: str, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        await self._let_in(name)
        self.sent.append(("patch", name, json.loads(json.dumps(patch))))
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        current = await self.get(api_version, kind, name, namespace)
        if wanted and current is not None and wanted != current["metadata"]["resourceVersion"]:
            plural = f"{kind.lower()}s"
            why = "the object has been modified; please apply your changes to the latest version and try again"
            raise KubeError(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": {why}')
        return await super().patch(api_version, kind, name, patch, namespace)

    def patches_of(self, name: str) -> list[dict[str, Any]]:
        return [body for verb, sent_to, body in self.sent if verb == "patch" and sent_to == name]


def tenant(request: str | None = None) -> PoliteTenant:
    body = tenant_body()
    if request is not None:
        body["metadata"]["annotations"][ROTATE_ANNOTATION] = request
    return PoliteTenant.model_validate({key: body[key] for key in ("apiVersion", "kind", "metadata", "spec")})


def key_secret(of: PoliteTenant) -> OwnedSecret:
    return owned_secrets(of, OperatorConfig(), DatabaseEngine.STATEFULSET)[0]


def backend(keys: FakeKeys) -> KeyBackend:
    return KeyBackend(lambda _tenant: keys, unavailable=(VaultDown,), refused=(VaultSaysNo,))


def seed_namespace(kube: FakeKube, name: str) -> None:
    kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def stored(kube: FakeKube) -> dict[str, Any]:
    secret = kube.find("Secret", names.KEYS_SECRET, "polite-acme")
    assert secret is not None
    return secret


def stored_doc(kube: FakeKube) -> dict[str, Any]:
    return dict(json.loads(decode(stored(kube), key_secret(tenant()).keys[0]) or "{}"))


async def keys_of(kube: FakeKube, keys: FakeKeys, request: str | None = None, *, known: int | None = 1) -> KeyPlan:
    """One operator's plan and write, as the reconcile step does them."""
    of = tenant(request)
    plan = await prepare_keys(kube, backend(keys), of, key_secret(of), known_version=known, now=NOW)
    done, error = await store_keys(kube, backend(keys), of, key_secret(of), plan, known_version=known, now=NOW)
    assert error is None, error
    return done


async def first_keys(kube: RacingKube) -> None:
    seed_namespace(kube, "polite-acme")
    await keys_of(kube, FakeKeys(), known=None)


async def test_a_rotation_is_written_on_the_condition_of_the_secret_it_was_prepared_from() -> None:
    kube = RacingKube()
    await first_keys(kube)
    read_at = stored(kube)["metadata"]["resourceVersion"]
    of = tenant("2030-05-01")

    plan = await prepare_keys(kube, backend(FakeKeys()), of, key_secret(of), known_version=1, now=NOW)

    assert plan.patch is not None and plan.patch["metadata"]["resourceVersion"] == read_at
    done, error = await store_keys(kube, backend(FakeKeys()), of, key_secret(of), plan, known_version=1, now=NOW)
    assert error is None and done.version == 2
    assert kube.patches_of(names.KEYS_SECRET)[-1]["metadata"]["resourceVersion"] == read_at


async def test_another_operator_honouring_the_same_request_first_is_adopted_without_a_second_key() -> None:
    kube = RacingKube()
    await first_keys(kube)
    ours, theirs = FakeKeys(), FakeKeys()
    of = tenant("rotate-once")
    plan = await prepare_keys(kube, backend(ours), of, key_secret(of), known_version=1, now=NOW)
    assert plan.version == 2
    won: list[dict[str, Any]] = []

    async def the_other_operator() -> None:
        await keys_of(kube, theirs, "rotate-once")
        won.append(stored(kube))

    kube.meanwhile[names.KEYS_SECRET] = [the_other_operator]
    done, error = await store_keys(kube, backend(ours), of, key_secret(of), plan, known_version=1, now=NOW)

    assert error is None
    assert stored(kube) == won[0]  # the winner's document, untouched: one key for version 2
    assert (done.version, done.check.ok, done.patch, done.create) == (2, True, None, None)
    assert done.version == int(stored(kube)["metadata"]["annotations"][VERSION_ANNOTATION])
    assert ours.called("rotate") == 1  # no second rotation for the same request
    assert len(kube.patches_of(names.KEYS_SECRET)) == 2  # the winner's, and ours refused


async def test_a_request_another_operator_already_answered_with_a_key_version_is_not_rotated_again() -> None:
    kube = RacingKube()
    await first_keys(kube)
    ours, theirs = FakeKeys(), FakeKeys()
    of = tenant("first")
    plan = await prepare_keys(kube, backend(ours), of, key_secret(of), known_version=1, now=NOW)

    async def two_rotations() -> None:  # "first", then a newer request, both before our write lands
        await keys_of(kube, theirs, "first")
        await keys_of(kube, theirs, "second")

    kube.meanwhile[names.KEYS_SECRET] = [two_rotations]
    done, error = await store_keys(kube, backend(ours), of, key_secret(of), plan, known_version=1, now=NOW)

    assert error is None and done.version == 3 and done.patch is None
    assert newest_rotation(stored_doc(kube)) == "second"
    assert ours.called("rotate") == 1


async def test_another_operator_honouring_another_request_first_makes_this_one_prepare_and_write_once_more() -> None:
    kube = RacingKube()
    await first_keys(kube)
    ours, theirs = FakeKeys(), FakeKeys()
    of = tenant("newer")
    plan = await prepare_keys(kube, backend(ours), of, key_secret(of), known_version=1, now=NOW)
    theirs_v2: list[dict[str, Any]] = []

    async def the_other_operator() -> None:
        await keys_of(kube, theirs, "older")
        theirs_v2.append(stored_doc(kube)["versions"][1])

    kube.meanwhile[names.KEYS_SECRET] = [the_other_operator]
    done, error = await store_keys(kube, backend(ours), of, key_secret(of), plan, known_version=1, now=NOW)

    assert error is None
    assert (done.rotated_from, done.version, done.check.ok) == (2, 3, True)
    doc = stored_doc(kube)
    assert [v["version"] for v in doc["versions"]] == [1, 2, 3]
    assert doc["versions"][1] == theirs_v2[0]  # version 2 stays the other operator's key
    assert stored(kube)["metadata"]["annotations"][HANDLED_ANNOTATION] == "newer"
    assert ours.called("rotate") == 2
    ours_sent = kube.patches_of(names.KEYS_SECRET)
    assert len(ours_sent) == 3  # ours refused, the other's, ours again (once)
    assert ours_sent[2]["metadata"]["resourceVersion"] != ours_sent[0]["metadata"]["resourceVersion"]


async def test_a_second_conflict_is_a_retryable_api_error_and_the_stored_keys_stay() -> None:
    kube = RacingKube()
    await first_keys(kube)
    ours, theirs = FakeKeys(), FakeKeys()
    of = tenant("mine")
    plan = await prepare_keys(kube, backend(ours), of, key_secret(of), known_version=1, now=NOW)

    async def someone_labels_it() -> None:
        await kube.patch("v1", "Secret", names.KEYS_SECRET, {"metadata": {"labels": {"x": "y"}}}, "polite-acme")

    async def the_other_operator() -> None:
        await keys_of(kube, theirs, "theirs")

    kube.meanwhile[names.KEYS_SECRET] = [the_other_operator, someone_labels_it]
    done, error = await store_keys(kube, backend(ours), of, key_secret(of), plan, known_version=1, now=NOW)

    assert error is not None and error.status == 409 and error.reason == "Conflict"
    assert (done.check.ok, done.check.reason.value, done.version) == (False, "ApiError", 2)
    assert f"Secret {names.KEYS_SECRET}: 409 Conflict: Operation cannot be fulfilled" in done.check.message
    assert stored(kube)["metadata"]["annotations"][HANDLED_ANNOTATION] == "theirs"
    assert newest_rotation(stored_doc(kube)) == "theirs"


async def test_a_failure_other_than_a_conflict_is_not_replanned() -> None:
    kube = RacingKube()
    await first_keys(kube)
    ours = FakeKeys()
    of = tenant("now")
    plan = await prepare_keys(kube, backend(ours), of, key_secret(of), known_version=1, now=NOW)
    kube.failures[("patch", "Secret", names.KEYS_SECRET)] = KubeError(500, "InternalError", "etcd timeout")

    done, error = await store_keys(kube, backend(ours), of, key_secret(of), plan, known_version=1, now=NOW)

    assert error is not None and error.status == 500
    assert (done.check.reason.value, done.version) == ("ApiError", 1)
    assert ours.called("rotate") == 1


async def test_a_create_racing_another_create_adopts_the_secret_that_won() -> None:
    kube = RacingKube()
    seed_namespace(kube, "polite-acme")
    ours, theirs = FakeKeys(), FakeKeys()
    of = tenant()
    plan = await prepare_keys(kube, backend(ours), of, key_secret(of), known_version=None, now=NOW)
    assert plan.create is not None
    won: list[dict[str, Any]] = []

    async def the_other_operator() -> None:
        await keys_of(kube, theirs, known=None)
        won.append(stored(kube))

    kube.meanwhile[names.KEYS_SECRET] = [the_other_operator]
    done, error = await store_keys(kube, backend(ours), of, key_secret(of), plan, known_version=None, now=NOW)

    assert error is None
    assert (done.version, done.check.ok, done.create, done.patch) == (1, True, None, None)
    assert stored(kube) == won[0]
    assert [verb for verb, name, _ in kube.sent if name == names.KEYS_SECRET] == ["create", "create"]
    assert ours.called("new_wrapped_version") == 1


async def test_a_single_attempt_reports_the_conflict_for_the_caller() -> None:
    kube = RacingKube()
    await first_keys(kube)
    of = tenant("r")
    plan = await prepare_keys(kube, backend(FakeKeys()), of, key_secret(of), known_version=1, now=NOW)
    await keys_of(kube, FakeKeys(), "other")
    error = await write_keys(kube, of, key_secret(of), plan)
    assert error is not None and error.conflict


def newest_rotation(doc: Mapping[str, Any]) -> Any:
    return doc["versions"][-1].get("rotation")


# -- the local provider's master copy: writes conditional on what the same call read ----------------


def materials(doc: Mapping[str, Any]) -> dict[int, tuple[bytes, ...]]:
    """Each version's plain keys, opened with the file key the local key file carries."""
    file_key = base64.b64decode(doc["kek"])
    return {
        int(v["version"]): tuple(unwrap_key(file_key, int(v["version"]), p, v[p]) for p in PURPOSES)
        for v in doc["versions"]
    }


@pytest.fixture
async def operator_secrets() -> tuple[RacingKube, OperatorSecrets]:
    kube = RacingKube()
    seed_namespace(kube, OPERATOR_NAMESPACE)
    return kube, OperatorSecrets(kube, OPERATOR_NAMESPACE, asyncio.get_running_loop())


async def test_two_local_rotations_at_once_store_one_key_under_the_new_version(
    operator_secrets: tuple[RacingKube, OperatorSecrets],
) -> None:
    kube, secrets = operator_secrets
    local = LocalTenantKeys(secrets.get, secrets.put, secrets.delete)
    name = "polite-acme"
    await asyncio.to_thread(local.ensure, "acme", "polite-acme", "tracker")
    first = await asyncio.to_thread(local.new_wrapped_version, name, None)
    theirs: list[dict[str, Any]] = []

    async def the_other_operator() -> None:
        rotate = LocalTenantKeys(secrets.get, secrets.put, secrets.delete).rotate
        theirs.append(await asyncio.to_thread(rotate, name, first, rotation_id="r1"))

    kube.meanwhile[master_secret_name(name)] = [the_other_operator]
    with pytest.raises(KubeError) as refused:  # ours read the master copy before the other wrote it
        await asyncio.to_thread(local.rotate, name, first, rotation_id="r1")
    assert (refused.value.status, refused.value.reason) == (409, "Conflict")

    again = await asyncio.to_thread(local.rotate, name, first, rotation_id="r1")  # the retry
    assert materials(again)[2] == materials(theirs[0])[2]
    assert materials(again)[1] == materials(first)[1]


async def test_a_master_secret_someone_else_created_is_never_overwritten(
    operator_secrets: tuple[RacingKube, OperatorSecrets],
) -> None:
    kube, secrets = operator_secrets

    def read_then_write() -> None:
        assert secrets.get("polite-acme-keys") is None
        asyncio.run_coroutine_threadsafe(made_meanwhile(), loop).result()
        secrets.put("polite-acme-keys", {"kek": "mine"})

    async def made_meanwhile() -> None:
        await FakeKube.create(kube, operator_secret({"kek": "theirs"}))

    loop = asyncio.get_running_loop()
    with pytest.raises(KubeError) as refused:
        await asyncio.to_thread(read_then_write)
    assert (refused.value.status, refused.value.reason) == (409, "AlreadyExists")
    kept = kube.find("Secret", "polite-acme-keys", OPERATOR_NAMESPACE)
    assert kept is not None and decode(kept, "kek") == "theirs"


async def test_a_put_after_its_own_put_needs_no_new_read(operator_secrets: tuple[RacingKube, OperatorSecrets]) -> None:
    kube, secrets = operator_secrets

    def write_twice() -> dict[str, str] | None:
        secrets.get("polite-acme-keys")
        secrets.put("polite-acme-keys", {"kek": "one"})
        secrets.put("polite-acme-keys", {"kek": "two"})
        return secrets.get("polite-acme-keys")

    assert await asyncio.to_thread(write_twice) == {"kek": "two"}
    assert [verb for verb, _, _ in kube.sent] == ["create", "patch"]
    assert kube.patches_of("polite-acme-keys")[0]["metadata"]["resourceVersion"]


def operator_secret(data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "polite-acme-keys", "namespace": OPERATOR_NAMESPACE},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
