"""What a reconcile reads of the API besides the watched state: the Secrets, and only when it must."""

from __future__ import annotations

from typing import Any

from politetenant.operator.kube.secrets import ensure_secret, secret_body
from politetenant.operator.model import names
from politetenant.operator.model.tenant import PoliteTenant
from politetenant.operator.render.wiring import OwnedSecret
from politetenant.operator.runtime.reconcile import Runtime
from tests.unit.operator.test_reconcile import FakeKube, run, tenant_body


class CountingKube(FakeKube):
    """The fake API, counting reads by kind."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self.reads.append(f"{kind} {name}")
        return await super().get(api_version, kind, name, namespace)


TENANT = PoliteTenant.model_validate(tenant_body())
TOKENS = OwnedSecret(names.API_TOKENS_SECRET, ("sender",), "tokens")


def _namespace(kube: FakeKube) -> None:
    kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TENANT.namespace}})


async def test_a_secret_known_absent_is_created_without_a_read() -> None:
    kube = CountingKube()
    _namespace(kube)
    outcome = await ensure_secret(kube, TENANT, TOKENS, absent=True)
    assert outcome.created and outcome.error is None
    assert kube.reads == []


async def test_a_secret_made_meanwhile_by_another_writer_stands_when_created_without_a_read() -> None:
    kube = CountingKube()
    _namespace(kube)
    theirs = secret_body(TENANT, TOKENS, {"sender": "ptk_theirs"})
    kube.seed(theirs)
    outcome = await ensure_secret(kube, TENANT, TOKENS, absent=True)
    assert not outcome.created and outcome.error is None  # the 409: theirs is kept, not an error
    assert kube.find("Secret", names.API_TOKENS_SECRET, TENANT.namespace) == theirs
    assert kube.writes == []


async def test_without_that_knowledge_an_existing_secret_is_read_and_left_alone() -> None:
    kube = CountingKube()
    _namespace(kube)
    kube.seed(secret_body(TENANT, TOKENS, {"sender": "ptk_theirs"}))
    outcome = await ensure_secret(kube, TENANT, TOKENS)
    assert not outcome.created and kube.writes == []
    assert kube.reads == [f"Secret {names.API_TOKENS_SECRET}"]


async def test_the_first_reconcile_reads_no_secret_of_the_namespace_it_creates(rt: Runtime) -> None:
    kube = CountingKube()
    rt.kube = kube
    await run(tenant_body(), rt)
    # The key Secret is looked up before the namespace exists: the watched cache answers that without
    # a request (test_watched); the Secrets made after the namespace are not looked up at all.
    assert [read for read in kube.reads if read.startswith("Secret")] == [f"Secret {names.KEYS_SECRET}"]
    assert kube.find("Secret", names.DATABASE_CREDENTIALS_SECRET, TENANT.namespace) is not None


async def test_a_secret_deleted_later_is_found_missing_and_made_again(rt: Runtime) -> None:
    kube = CountingKube()
    rt.kube = kube
    body = tenant_body()
    await run(body, rt)
    kube.remove("Secret", names.API_TOKENS_SECRET, TENANT.namespace)
    kube.reads.clear()
    await run(body, rt)  # a change (or the start): the namespace exists, so its Secrets are read
    assert f"Secret {names.API_TOKENS_SECRET}" in kube.reads
    assert kube.find("Secret", names.API_TOKENS_SECRET, TENANT.namespace) is not None
