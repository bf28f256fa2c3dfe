"""Vault tenants wired into the operator: the configuration's sign-in, which client serves a tenant,
and how Vault's answers become conditions and retries.

Selection is checked on ``VaultClients`` directly; the error mapping through ``reconcile`` with the
in-memory ``FakeKube`` and the hvac-compatible Vault fake on loopback (quick, no processes).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from politetenant.crypto.vault import KUBERNETES_SA_TOKEN
from politetenant.operator.keys.local import LocalTenantKeys
from politetenant.operator.keys.services import VaultClients, VaultNotConfigured, operator_login, standard_keys
from politetenant.operator.keys.vault import VaultLogin, VaultTenantKeys, operator_policy
from politetenant.operator.kube.secrets import decode
from politetenant.operator.model import names
from politetenant.operator.model.config import ConfigError, OperatorConfig, load_operator_config
from politetenant.operator.model.tenant import PoliteTenant
from politetenant.operator.runtime.metrics import Metrics
from politetenant.operator.runtime.reconcile import Outcome, Runtime, parse
from politetenant.operator.runtime.retries import BACKOFF_SECONDS, backoff
from tests.fakes.vault_fake import IssuedToken, VaultFake, running_vault_fake
from tests.unit.operator.test_reconcile import Clock, FakeKube, conditions, run, tenant_body

VAULT = "https://vault.example:8200"


def vault_tenant(name: str = "acme", address: str | None = None, **vault: str) -> dict[str, Any]:
    settings = {**({"address": address} if address else {}), **vault}
    return tenant_body(name, keys={"provider": "vault", "vault": settings})


def tenant(body: dict[str, Any]) -> PoliteTenant:
    parsed = parse(body)
    assert isinstance(parsed, PoliteTenant), parsed
    return parsed


def config(**vault: Any) -> OperatorConfig:
    return OperatorConfig.model_validate({"vault": {"address": VAULT, "token_file": "/vault/token", **vault}})


def condition(outcome: Outcome, type_: str) -> dict[str, Any]:
    assert outcome.status is not None
    found: dict[str, Any] = next(c for c in outcome.status["conditions"] if c["type"] == type_)
    return found


# -- configuration ------------------------------------------------------------------------------------


def test_no_vault_sign_in_by_default() -> None:
    vault = OperatorConfig().vault
    assert (vault.token_file, vault.kubernetes_role, vault.ca_cert) == (None, None, None)
    assert vault.jwt_file == KUBERNETES_SA_TOKEN and vault.auth_mount == "kubernetes"
    assert vault.timeout_seconds == 10 and vault.allowed_addresses == []
    assert operator_login(vault) is None


def test_sign_in_settings_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(f"vault: {{address: '{VAULT}', kubernetes_role: politetenant-operator, timeout_seconds: 3}}\n")
    environ = {
        "POLITE_OPERATOR_VAULT__JWT_FILE": "/var/run/secrets/vault/jwt",
        "POLITE_OPERATOR_VAULT__AUTH_MOUNT": "k8s-eu",
        "POLITE_OPERATOR_VAULT__CA_CERT": "/etc/vault/ca.pem",
        "POLITE_OPERATOR_VAULT__ALLOWED_ADDRESSES": "https://vault-b.example:8200, https://vault-c.example",
    }
    vault = load_operator_config(path, environ).vault
    assert vault.timeout_seconds == 3 and vault.ca_cert == "/etc/vault/ca.pem"
    assert vault.allowed_addresses == ["https://vault-b.example:8200", "https://vault-c.example"]
    assert operator_login(vault) == VaultLogin(
        kubernetes_role="politetenant-operator", jwt_file="/var/run/secrets/vault/jwt", auth_mount="k8s-eu"
    )


def test_a_token_file_from_the_environment_is_the_sign_in(tmp_path: Path) -> None:
    vault = load_operator_config(None, {"POLITE_OPERATOR_VAULT__TOKEN_FILE": "/vault/token"}).vault
    assert operator_login(vault) == VaultLogin(token_file="/vault/token")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"POLITE_OPERATOR_VAULT__TOKEN_FILE": "/t", "POLITE_OPERATOR_VAULT__KUBERNETES_ROLE": "r"},
            "vault: Value error, set token_file or kubernetes_role, not both",
        ),
        ({"POLITE_OPERATOR_VAULT__TIMEOUT_SECONDS": "0"}, "vault.timeout_seconds: Input should be greater than 0"),
        ({"POLITE_OPERATOR_VAULT__ALLOWED_ADDRESSES": "vault:8200"}, "vault.allowed_addresses.0: String should match"),
    ],
)
def test_sign_in_mistakes_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_operator_config(None, environ)
    assert message in str(caught.value)


# -- which client serves a tenant ---------------------------------------------------------------------


async def test_local_tenants_share_the_local_provider_and_vault_tenants_get_a_vault_client() -> None:
    backend = standard_keys(FakeKube(), config(), asyncio.get_running_loop())
    local = backend.lifecycle_for(tenant(tenant_body("acme")))
    assert isinstance(local, LocalTenantKeys)
    assert backend.lifecycle_for(tenant(tenant_body("initech"))) is local
    assert isinstance(backend.lifecycle_for(tenant(vault_tenant("globex"))), VaultTenantKeys)


def test_a_vault_client_is_built_from_the_configuration_and_the_tenant_mounts() -> None:
    clients = VaultClients(config(token_audience="vault-eu", timeout_seconds=4, ca_cert="/etc/vault/ca.pem"))
    client = clients.lifecycle_for(tenant(vault_tenant(transitMount="transit-eu", kubernetesAuthMount="k8s-eu")))
    assert isinstance(client, VaultTenantKeys)
    assert (client.address, client.transit_mount, client.auth_mount) == (VAULT, "transit-eu", "k8s-eu")
    assert (client.audience, client.timeout, client.verify) == ("vault-eu", 4, "/etc/vault/ca.pem")
    assert client.login == VaultLogin(token_file="/vault/token")


def test_system_trust_unless_a_ca_bundle_is_named() -> None:
    client = VaultClients(config()).lifecycle_for(tenant(vault_tenant()))
    assert isinstance(client, VaultTenantKeys) and client.verify is True


def test_one_client_per_vault_address_and_mounts() -> None:
    other = "https://vault-b.example:8200"
    clients = VaultClients(config(allowed_addresses=[other]))
    acme = clients.lifecycle_for(tenant(vault_tenant("acme")))
    assert clients.lifecycle_for(tenant(vault_tenant("globex", address=VAULT + "/"))) is acme  # same Vault
    elsewhere = clients.lifecycle_for(tenant(vault_tenant("initech", address=other)))
    other_mount = clients.lifecycle_for(tenant(vault_tenant("hooli", transitMount="transit-eu")))
    assert isinstance(elsewhere, VaultTenantKeys) and elsewhere.address == other
    assert len({id(acme), id(elsewhere), id(other_mount)}) == 3


@pytest.mark.parametrize(
    ("cfg", "body", "says"),
    [
        (
            OperatorConfig.model_validate({"vault": {"address": VAULT}}),
            vault_tenant(),
            "no Vault sign-in for https://vault.example:8200: set vault.token_file or vault.kubernetes_role",
        ),
        (
            config(),
            vault_tenant(address="https://vault.attacker.example"),
            "spec.keys.vault.address https://vault.attacker.example is not a Vault this operator signs in to",
        ),
        (
            OperatorConfig.model_validate({"vault": {"token_file": "/vault/token"}}),
            vault_tenant(),
            "spec.keys.vault.address: unset, and the operator configuration has no vault.address",
        ),
    ],
)
def test_a_vault_the_operator_may_not_use_refuses_every_call(
    cfg: OperatorConfig, body: dict[str, Any], says: str
) -> None:
    lifecycle = VaultClients(cfg).lifecycle_for(tenant(body))
    for call in (
        lambda: lifecycle.ensure("acme", "polite-acme", "tracker"),
        lambda: lifecycle.new_wrapped_version("polite-acme", None),
        lambda: lifecycle.rotate("polite-acme", {}, rotation_id="r1"),
        lambda: lifecycle.destroy("polite-acme"),
    ):
        with pytest.raises(VaultNotConfigured, match=says):
            call()


# -- through reconcile, against the Vault fake -----------------------------------------------------------


@pytest.fixture
def vault() -> Iterator[VaultFake]:
    with running_vault_fake() as fake:
        yield fake


def operator_token(fake: VaultFake, tmp_path: Path) -> str:
    """A token file for the operator, scoped by operator_policy() as the chart documents."""
    fake.policies["politetenant-operator"] = operator_policy()
    token = "hvs.operator-token-for-tests"
    fake.tokens[token] = IssuedToken(["politetenant-operator"], float("inf"), "")
    path = tmp_path / "vault-token"
    path.write_text(token + "\n")
    return str(path)


def runtime(kube: FakeKube, cfg: OperatorConfig) -> Runtime:
    backend = standard_keys(kube, cfg, asyncio.get_running_loop())
    return Runtime(kube, backend, cfg, Metrics(), instance="test", clock=Clock())


def fake_config(fake: VaultFake, token_file: str) -> OperatorConfig:
    return OperatorConfig.model_validate({"vault": {"address": fake.address, "token_file": token_file}})


async def test_a_vault_tenant_gets_keys_wrapped_by_its_transit_key(vault: VaultFake, tmp_path: Path) -> None:
    kube = FakeKube()
    rt = runtime(kube, fake_config(vault, operator_token(vault, tmp_path)))
    outcome = await run(vault_tenant(), rt)

    assert condition(outcome, "KeysReady")["status"] == "True"
    secret = kube.find("Secret", names.KEYS_SECRET, "polite-acme")
    assert secret is not None
    doc = json.loads(decode(secret, "wrapped-keys.json") or "{}")
    assert doc["key_name"] == "polite-acme" and [v["version"] for v in doc["versions"]] == [1]
    assert all(doc["versions"][0][p].startswith("vault:v1:") for p in ("dek", "token_key", "index_key"))
    assert ("transit", "polite-acme") in vault.keys and "polite-acme" in vault.policies
    assert vault.roles[("kubernetes", "polite-acme")]["bound_service_account_namespaces"] == ["polite-acme"]


async def test_vault_calls_run_off_the_event_loop(vault: VaultFake, tmp_path: Path) -> None:
    kube = FakeKube()
    rt = runtime(kube, fake_config(vault, operator_token(vault, tmp_path)))
    body = vault_tenant()
    client = rt.keys.lifecycle_for(tenant(body))
    assert isinstance(client, VaultTenantKeys)
    threads: list[threading.Thread] = []
    ensure = client.ensure

    def recording_ensure(*args: Any) -> None:
        threads.append(threading.current_thread())
        ensure(*args)

    client.ensure = recording_ensure  # type: ignore[method-assign]
    await run(body, rt)
    assert threads and threading.main_thread() not in threads


async def test_an_unreachable_vault_is_retried_with_the_usual_backoff_and_writes_nothing(
    vault: VaultFake, tmp_path: Path
) -> None:
    kube = FakeKube()
    rt = runtime(kube, fake_config(vault, operator_token(vault, tmp_path)))
    vault.stop_listening()
    outcome = await run(vault_tenant(), rt)

    keys = condition(outcome, "KeysReady")
    assert (keys["status"], keys["reason"]) == ("False", "KeysUnavailable")
    assert keys["message"] == (
        f"create keys: Vault at {vault.address} is unreachable (connection failed); "
        "could not read Transit key transit/polite-acme"
    )
    assert outcome.retry and not outcome.needs_action
    assert kube.writes == []


async def test_a_refusing_vault_is_retried_slowly_for_a_person_to_fix(vault: VaultFake, tmp_path: Path) -> None:
    kube = FakeKube()
    token_file = operator_token(vault, tmp_path)
    vault.policies["politetenant-operator"] = "# nothing\n"  # the operator's policy was taken away
    outcome = await run(vault_tenant(), runtime(kube, fake_config(vault, token_file)))

    keys = condition(outcome, "KeysReady")
    assert (keys["status"], keys["reason"]) == ("False", "VaultRefused")
    assert "permission denied" in keys["message"] and "hvs." not in keys["message"]
    assert outcome.status is not None and outcome.status["phase"] == "Failed"
    assert outcome.retry and outcome.needs_action
    assert kube.writes == []


async def test_a_vault_tenant_without_a_configured_sign_in_is_failed_naming_the_settings() -> None:
    kube = FakeKube()
    rt = runtime(kube, OperatorConfig.model_validate({"vault": {"address": VAULT}}))
    outcome = await run(vault_tenant(), rt)
    assert conditions(outcome.status or {})["KeysReady"] == ("False", "VaultRefused")
    assert "set vault.token_file or vault.kubernetes_role" in condition(outcome, "KeysReady")["message"]
    assert outcome.needs_action and kube.writes == []


async def test_the_operator_sends_nothing_to_a_vault_its_configuration_does_not_name(
    vault: VaultFake, tmp_path: Path
) -> None:
    kube = FakeKube()
    cfg = OperatorConfig.model_validate({"vault": {"address": VAULT, "token_file": operator_token(vault, tmp_path)}})
    outcome = await run(vault_tenant(address=vault.address), runtime(kube, cfg))
    assert conditions(outcome.status or {})["KeysReady"] == ("False", "VaultRefused")
    assert vault.requests == []


def test_what_needs_a_person_is_retried_further_along_the_backoff() -> None:
    assert [backoff(r) for r in range(4)] == [5, 10, 20, 40]
    assert [backoff(r, needs_action=True) for r in range(4)] == [40, 80, 160, 300]
    assert backoff(100, needs_action=True) == backoff(100) == BACKOFF_SECONDS[-1]
