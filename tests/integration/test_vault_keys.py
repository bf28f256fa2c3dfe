"""Tenant keys end to end: the operator's lifecycle (Vault and local) and the tracker unwrapping them.

Vault is the fake in tests/fakes/vault_fake.py over a loopback socket, reached through hvac unchanged.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest

from politetenant.crypto import (
    KeyMaterialError,
    KeySet,
    LocalKeyProvider,
    VaultKeyProvider,
    VaultRefused,
    VaultUnavailable,
    provider_from_url,
)
from politetenant.crypto.keys import PURPOSES
from politetenant.crypto.vault import wrap_context
from politetenant.operator.keys.lifecycle import decode_key_document, encode_key_document
from politetenant.operator.keys.local import LocalTenantKeys, master_secret_name
from politetenant.operator.keys.vault import VaultLogin, VaultTenantKeys, operator_policy, tracker_policy
from politetenant.operator.model.names import vault_name
from politetenant.tracker.http.auth import Role, create_api_token
from tests.conftest import start_tracker
from tests.fakes.vault_fake import ROOT_TOKEN, VaultFake, parse_policy, running_vault_fake
from tests.support import IP_DUBLIN, UA_IPHONE_MAIL, message_body

ACME = vault_name("acme")
GLOBEX = vault_name("globex")


@pytest.fixture
def vault() -> Iterator[VaultFake]:
    with running_vault_fake() as fake:
        yield fake


def operator(fake: VaultFake) -> VaultTenantKeys:
    return VaultTenantKeys(fake.address, VaultLogin(token=ROOT_TOKEN), timeout=5)


def tracker(
    fake: VaultFake,
    tmp_path: Path,
    doc: dict[str, Any],
    *,
    key_name: str = ACME,
    role: str = ACME,
    namespace: str = "polite-acme",
    attempts: int = 1,
    backoff: float = 0.0,
) -> VaultKeyProvider:
    """The tracker's provider with its Secret file and projected ServiceAccount token on disk."""
    wrapped = tmp_path / f"{namespace}-wrapped-keys.json"
    wrapped.write_text(encode_key_document(doc))
    token = tmp_path / f"{namespace}-token"
    token.write_text(fake.issue_service_account_token(namespace, "tracker"))
    return VaultKeyProvider(
        wrapped,
        address=fake.address,
        key_name=key_name,
        role=role,
        token_file=token,
        timeout=5,
        attempts=attempts,
        backoff_seconds=backoff,
    )


def witness(fake: VaultFake, doc: dict[str, Any]) -> list[KeySet]:
    """The keys as Vault's root sees them, to compare with what the tracker got."""
    transit = hvac.Client(url=fake.address, token=ROOT_TOKEN, timeout=5).secrets.transit
    sets = []
    for entry in doc["versions"]:
        v = entry["version"]
        keys = {
            p: base64.b64decode(
                transit.decrypt_data(doc["key_name"], ciphertext=entry[p], context=wrap_context(doc["key_name"], v, p))[
                    "data"
                ]["plaintext"]
            )
            for p in PURPOSES
        }
        sets.append(KeySet(version=v, **keys))
    return sets


def raw(sets: list[KeySet]) -> list[tuple[int, bytes, bytes, bytes]]:
    return [(s.version, s.dek, s.token_key, s.index_key) for s in sets]


def vault_state(fake: VaultFake) -> dict[str, Any]:
    keys = {n: (k.derived, k.exportable, k.deletion_allowed) for (_, n), k in fake.keys.items()}
    return {"keys": keys, "policies": dict(fake.policies), "roles": {n: dict(r) for (_, n), r in fake.roles.items()}}


def provisioned(fake: VaultFake, tenant: str = "acme") -> dict[str, Any]:
    keys = operator(fake)
    keys.ensure(tenant, f"polite-{tenant}", "tracker")
    return keys.new_wrapped_version(vault_name(tenant), None)


# -- Vault: provisioning and unwrapping ------------------------------------------------------------


def test_tracker_unwraps_exactly_the_keys_vault_generated_and_the_operator_never_saw_them(
    vault: VaultFake, tmp_path: Path
) -> None:
    doc = provisioned(vault)
    operator_calls = list(vault.requests)

    assert doc["format"] == 1 and doc["key_name"] == ACME
    assert [e["version"] for e in doc["versions"]] == [1]
    assert all(doc["versions"][0][p].startswith("vault:v1:") for p in PURPOSES)
    # The keys were made inside Vault (datakey/wrapped): the operator neither received nor asked for plaintext.
    assert not [c for c in operator_calls if "decrypt" in c.path or "datakey/plaintext" in c.path]

    loaded = tracker(vault, tmp_path, decode_key_document(encode_key_document(doc), "secret")).load()
    assert raw(loaded) == raw(witness(vault, doc))
    assert len({loaded[0].dek, loaded[0].token_key, loaded[0].index_key}) == 3


def test_ensure_makes_a_derived_key_a_decrypt_only_policy_and_a_bound_role(vault: VaultFake) -> None:
    operator(vault).ensure("acme", "polite-acme", "tracker")
    key = vault.keys[("transit", ACME)]
    assert (key.derived, key.exportable, key.deletion_allowed) == (True, False, False)
    assert parse_policy(vault.policies[ACME]) == {f"transit/decrypt/{ACME}": {"update"}}
    role = vault.roles[("kubernetes", ACME)]
    assert role["bound_service_account_names"] == ["tracker"]
    assert role["bound_service_account_namespaces"] == ["polite-acme"]
    assert role["audience"] == "vault"
    assert role["token_policies"] == [ACME] and role["token_no_default_policy"] is True
    assert 0 < role["token_ttl"] <= 600


def test_ensure_again_reads_and_writes_nothing(vault: VaultFake) -> None:
    keys = operator(vault)
    keys.ensure("acme", "polite-acme", "tracker")
    before = len(vault.requests)
    keys.ensure("acme", "polite-acme", "tracker")
    assert {c.method for c in vault.requests[before:]} == {"GET"}


def test_ensure_repairs_a_widened_policy_a_moved_role_and_allowed_deletion(vault: VaultFake) -> None:
    keys = operator(vault)
    keys.ensure("acme", "polite-acme", "tracker")
    vault.policies[ACME] = 'path "transit/*" {\n  capabilities = ["update"]\n}\n'
    vault.roles[("kubernetes", ACME)]["bound_service_account_namespaces"] = ["*"]
    vault.keys[("transit", ACME)].deletion_allowed = True
    keys.ensure("acme", "polite-acme", "tracker")
    assert vault.policies[ACME] == tracker_policy(ACME)
    assert vault.roles[("kubernetes", ACME)]["bound_service_account_namespaces"] == ["polite-acme"]
    assert vault.keys[("transit", ACME)].deletion_allowed is False


def test_ensure_refuses_an_existing_key_it_cannot_use(vault: VaultFake) -> None:
    hvac.Client(url=vault.address, token=ROOT_TOKEN).secrets.transit.create_key(ACME, key_type="aes256-gcm96")
    with pytest.raises(VaultRefused, match=f"Transit key transit/{ACME} exists .* derived=False"):
        operator(vault).ensure("acme", "polite-acme", "tracker")


# -- isolation --------------------------------------------------------------------------------------


def test_a_tenants_tracker_cannot_unwrap_another_tenants_keys(vault: VaultFake, tmp_path: Path) -> None:
    provisioned(vault, "acme")
    globex_doc = provisioned(vault, "globex")

    # acme's tracker pointed at globex's document and key: its token may decrypt only with polite-acme.
    stolen = tracker(vault, tmp_path, globex_doc, key_name=GLOBEX, role=ACME)
    with pytest.raises(VaultRefused) as refused:
        stolen.load()
    message = str(refused.value)
    assert f"refused to unwrap key version 1 dek with Transit key transit/{GLOBEX}" in message
    assert "permission denied" in message and vault.address in message
    assert vault.requests[-1].path == f"transit/decrypt/{GLOBEX}"
    assert "eyJ" not in message and "hvs." not in message  # neither the JWT nor the Vault token

    # Nor can it log in as globex's role: that role is bound to globex's namespace.
    with pytest.raises(VaultRefused, match="namespace not authorized"):
        tracker(vault, tmp_path, globex_doc, key_name=GLOBEX, role=GLOBEX).load()


def test_the_tracker_refuses_a_document_made_for_another_key(vault: VaultFake, tmp_path: Path) -> None:
    globex_doc = provisioned(vault, "globex")
    before = len(vault.requests)
    with pytest.raises(KeyMaterialError, match=f"for Transit key '{GLOBEX}', not '{ACME}'"):
        tracker(vault, tmp_path, globex_doc).load()
    assert len(vault.requests) == before  # refused before asking Vault anything


def test_a_wrapped_key_moved_to_another_slot_does_not_open(vault: VaultFake, tmp_path: Path) -> None:
    doc = provisioned(vault)
    entry = doc["versions"][0]
    entry["dek"], entry["index_key"] = entry["index_key"], entry["dek"]
    with pytest.raises(VaultRefused, match="message authentication failed"):
        tracker(vault, tmp_path, doc).load()


# -- rotation and shredding ------------------------------------------------------------------------


def test_rotation_adds_a_version_and_old_versions_still_unwrap(vault: VaultFake, tmp_path: Path) -> None:
    keys = operator(vault)
    first = provisioned(vault)
    v1 = tracker(vault, tmp_path, first).load()

    second = keys.rotate(ACME, first, rotation_id="2025-06-01")
    assert [e["version"] for e in second["versions"]] == [1, 2]
    assert second["versions"][0] == first["versions"][0]
    assert all(second["versions"][1][p].startswith("vault:v2:") for p in PURPOSES)
    assert vault.keys[("transit", ACME)].latest == 2

    loaded = tracker(vault, tmp_path, second).load()
    assert raw(loaded[:1]) == raw(v1)
    assert loaded[1].dek not in (v1[0].dek, v1[0].token_key, v1[0].index_key)

    before = len(vault.requests)
    assert keys.rotate(ACME, second, rotation_id="2025-06-01") == second  # the same request, answered again
    assert len(vault.requests) == before


def test_destroy_crypto_shreds_the_tenant(vault: VaultFake, tmp_path: Path) -> None:
    keys = operator(vault)
    doc = provisioned(vault)
    provider = tracker(vault, tmp_path, doc)
    provider.load()

    keys.destroy(ACME)
    assert ("transit", ACME) not in vault.keys
    assert ACME not in vault.policies and ("kubernetes", ACME) not in vault.roles
    with pytest.raises(VaultRefused, match="invalid role name"):
        provider.load()
    with pytest.raises(hvac.exceptions.InvalidRequest, match="encryption key not found"):
        witness(vault, doc)  # not even root can open the wrapped keys now
    keys.destroy(ACME)  # again: nothing left to do, no error


# -- outages ---------------------------------------------------------------------------------------


def test_vault_down_is_unavailable_with_a_readable_message(vault: VaultFake) -> None:
    vault.stop_listening()
    with pytest.raises(VaultUnavailable) as down:
        operator(vault).ensure("acme", "polite-acme", "tracker")
    assert str(down.value) == (
        f"Vault at {vault.address} is unreachable (connection failed); could not read Transit key transit/{ACME}"
    )
    assert isinstance(down.value, KeyMaterialError)


def test_sealed_vault_is_unavailable_for_operator_and_tracker(vault: VaultFake, tmp_path: Path) -> None:
    doc = provisioned(vault)
    vault.seal()
    with pytest.raises(VaultUnavailable, match="sealed"):
        operator(vault).ensure("acme", "polite-acme", "tracker")
    with pytest.raises(VaultUnavailable, match="sealed"):
        operator(vault).rotate(ACME, doc)
    with pytest.raises(VaultUnavailable, match=f"is sealed or not ready .* role {ACME} at auth/kubernetes"):
        tracker(vault, tmp_path, doc).load()


def test_ensure_broken_half_way_converges_after_recovery(vault: VaultFake) -> None:
    with running_vault_fake() as clean:
        operator(clean).ensure("acme", "polite-acme", "tracker")
        expected = vault_state(clean)

    vault.fail_after(3)  # read key, create key, read policy; then Vault drops the connection
    with pytest.raises(VaultUnavailable, match="could not write policy"):
        operator(vault).ensure("acme", "polite-acme", "tracker")
    assert ACME not in vault.policies
    vault.recover()
    operator(vault).ensure("acme", "polite-acme", "tracker")
    assert vault_state(vault) == expected


def test_versions_broken_half_way_leave_nothing_and_retry_without_duplicates(vault: VaultFake, tmp_path: Path) -> None:
    keys = operator(vault)
    keys.ensure("acme", "polite-acme", "tracker")

    vault.fail_after(1)  # the first data key is made, the second request is dropped
    with pytest.raises(VaultUnavailable, match="could not generate key version 1 token_key"):
        keys.new_wrapped_version(ACME, None)
    vault.recover()
    first = keys.new_wrapped_version(ACME, None)
    assert [e["version"] for e in first["versions"]] == [1]

    snapshot = json.loads(json.dumps(first))
    vault.fail_after(2, "sealed")  # Transit rotates and one data key is made, then Vault seals
    with pytest.raises(VaultUnavailable, match="sealed"):
        keys.rotate(ACME, first, rotation_id="r1")
    assert first == snapshot  # the caller's document is never touched
    vault.recover()
    second = keys.rotate(ACME, first, rotation_id="r1")
    assert [e["version"] for e in second["versions"]] == [1, 2]
    assert vault.keys[("transit", ACME)].latest == 3  # rotated twice; harmless, the document has one new version
    assert [s.version for s in tracker(vault, tmp_path, second).load()] == [1, 2]


def test_the_tracker_rides_out_a_short_outage_and_reports_a_long_one(vault: VaultFake, tmp_path: Path) -> None:
    doc = provisioned(vault)
    vault.stop_listening()
    with pytest.raises(VaultUnavailable, match=f"unreachable .* log in as role {ACME}"):
        tracker(vault, tmp_path, doc, attempts=2, backoff=0.01).load()

    vault.resume_listening()
    vault.fail_after(0)
    timer = threading.Timer(0.05, vault.recover)
    timer.start()
    try:
        loaded = tracker(vault, tmp_path, doc, attempts=3, backoff=0.3).load()
    finally:
        timer.join()
    assert raw(loaded) == raw(witness(vault, doc))


# -- the operator signed in with its own ServiceAccount --------------------------------------------


def test_the_documented_operator_policy_is_enough_for_the_whole_lifecycle(vault: VaultFake, tmp_path: Path) -> None:
    admin = hvac.Client(url=vault.address, token=ROOT_TOKEN)
    admin.sys.create_or_update_acl_policy("politetenant-operator", operator_policy())
    admin.write_data(
        "auth/kubernetes/role/politetenant-operator",
        data={
            "bound_service_account_names": ["politetenant-operator"],
            "bound_service_account_namespaces": ["politetenant-system"],
            "audience": "vault",
            "token_policies": ["politetenant-operator"],
            "token_no_default_policy": True,
            "token_ttl": 600,
        },
    )
    jwt = tmp_path / "operator-token"
    jwt.write_text(vault.issue_service_account_token("politetenant-system", "politetenant-operator"))
    keys = VaultTenantKeys(
        vault.address, VaultLogin(kubernetes_role="politetenant-operator", jwt_file=str(jwt)), timeout=5
    )

    keys.ensure("acme", "polite-acme", "tracker")
    doc = keys.rotate(ACME, keys.new_wrapped_version(ACME, None))
    assert [s.version for s in tracker(vault, tmp_path, doc).load()] == [1, 2]
    keys.destroy(ACME)
    assert ("transit", ACME) not in vault.keys
    assert len(vault.calls("POST", "auth/kubernetes/login")) == 2  # the operator once, the tracker once

    with pytest.raises(VaultRefused, match="permission denied"):  # nothing beyond tenant keys, not even its own
        keys.destroy("politetenant-operator")


# -- the tracker over a socket, keys from Vault ----------------------------------------------------


async def test_a_tracker_started_on_vault_keys_serves_beacons(
    vault: VaultFake, tmp_path: Path, geoip_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = operator(vault)
    doc = keys.rotate(ACME, provisioned(vault))
    wrapped = tmp_path / "keys" / "wrapped-keys.json"
    wrapped.parent.mkdir()
    wrapped.write_text(encode_key_document(doc))
    token = tmp_path / "vault-token"
    token.write_text(vault.issue_service_account_token("polite-acme", "tracker"))
    for name, value in {
        "POLITE_VAULT_ADDR": vault.address,
        "POLITE_VAULT_TRANSIT_MOUNT": "transit",
        "POLITE_VAULT_TRANSIT_KEY": ACME,
        "POLITE_VAULT_AUTH_MOUNT": "kubernetes",
        "POLITE_VAULT_ROLE": ACME,
        "POLITE_VAULT_TOKEN_FILE": str(token),
    }.items():
        monkeypatch.setenv(name, value)

    client, state = await start_tracker(
        tmp_path, f"sqlite:///{tmp_path}/tracker.db", geoip_path, keys=f"vault:{wrapped}"
    )
    try:
        assert state.keyring.versions == [1, 2]
        assert raw([state.keyring.current]) == raw(witness(vault, doc)[1:])
        sender = {"Authorization": f"Bearer {await create_api_token(state.store, Role.SENDER)}"}
        analyst = {"Authorization": f"Bearer {await create_api_token(state.store, Role.ANALYST)}"}
        resp = await client.post("/api/v1/messages", json=message_body(12), headers=sender)
        assert resp.status == 201, await resp.text()
        message = await resp.json()
        for recipient in message["recipients"][:3]:
            beacon = await client.get(
                f"/o/{recipient['token']}.gif", headers={"User-Agent": UA_IPHONE_MAIL, "X-Forwarded-For": IP_DUBLIN}
            )
            assert beacon.status == 200
        await state.ingest._flush(final=True)
        report = await (await client.get(f"/api/v1/messages/{message['id']}/report", headers=analyst)).json()
        assert report["opens"] == {"unique": 3, "total": 3}
    finally:
        await client.close()


def test_provider_from_url_builds_the_vault_provider_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLITE_VAULT_ADDR", "https://vault.example:8200/")
    monkeypatch.setenv("POLITE_VAULT_TRANSIT_KEY", ACME)
    monkeypatch.setenv("POLITE_VAULT_ROLE", ACME)
    monkeypatch.setenv("POLITE_VAULT_TOKEN_FILE", "/var/run/secrets/vault/token")
    monkeypatch.delenv("POLITE_VAULT_TRANSIT_MOUNT", raising=False)
    provider = provider_from_url("vault:/var/run/polite/keys/wrapped-keys.json")
    assert isinstance(provider, VaultKeyProvider)
    assert provider.describe() == (
        f"vault:/var/run/polite/keys/wrapped-keys.json (Transit key transit/{ACME} at https://vault.example:8200)"
    )
    with pytest.raises(KeyMaterialError, match="rotated by the operator"):
        provider.rotate()
    with pytest.raises(ValueError, match="not a Vault address"):
        provider_from_url("vault://vault.example:8200/acme")
    monkeypatch.delenv("POLITE_VAULT_ROLE")
    with pytest.raises(ValueError, match="needs POLITE_VAULT_ROLE"):
        provider_from_url("vault:/var/run/polite/keys/wrapped-keys.json")


# -- local keys managed by the operator -------------------------------------------------------------


class SecretsOfTheOperator:
    """The operator namespace's Secrets as the operator would hand them over: get, put, delete by name."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}
        self.puts = 0
        self.fail_puts = False

    def get(self, name: str) -> dict[str, str] | None:
        return self.data.get(name)

    def put(self, name: str, data: Any) -> None:
        if self.fail_puts:
            raise ConnectionError("API server unavailable")
        self.puts += 1
        self.data[name] = dict(data)

    def delete(self, name: str) -> None:
        self.data.pop(name, None)


def opened(tmp_path: Path, doc: dict[str, Any]) -> list[KeySet]:
    """What the tracker opens from the tenant's keys.json, with the local provider and nothing else."""
    path = tmp_path / "tenant" / "keys.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(encode_key_document(doc))
    return LocalKeyProvider(path).load()


@pytest.fixture
def secrets() -> SecretsOfTheOperator:
    return SecretsOfTheOperator()


@pytest.fixture
def local(secrets: SecretsOfTheOperator) -> LocalTenantKeys:
    return LocalTenantKeys(secrets.get, secrets.put, secrets.delete)


def test_local_keys_open_in_the_tracker_and_the_master_copy_holds_them_wrapped(
    local: LocalTenantKeys, secrets: SecretsOfTheOperator, tmp_path: Path
) -> None:
    local.ensure("acme", "polite-acme", "tracker")
    local.ensure("acme", "polite-acme", "tracker")
    assert secrets.puts == 1
    doc = local.new_wrapped_version(ACME, None)
    (keys,) = opened(tmp_path, doc)
    assert keys.version == 1

    master = secrets.data[master_secret_name(ACME)]
    assert set(master) == {"kek", "master.json"}
    assert master["kek"] != doc["kek"]  # the tenant's file key is not the operator's KEK
    copy_text = master["master.json"]
    for secret in (keys.dek, keys.token_key, keys.index_key):
        assert base64.b64encode(secret).decode() not in copy_text


def test_local_rotation_adds_a_version_with_fresh_wrapping_keys(
    local: LocalTenantKeys, secrets: SecretsOfTheOperator, tmp_path: Path
) -> None:
    local.ensure("acme", "polite-acme", "tracker")
    first = local.new_wrapped_version(ACME, None)
    kek_before = secrets.data[master_secret_name(ACME)]["kek"]
    v1 = opened(tmp_path, first)

    second = local.rotate(ACME, first, rotation_id="r1")
    loaded = opened(tmp_path, second)
    assert [s.version for s in loaded] == [1, 2]
    assert raw(loaded[:1]) == raw(v1)
    assert second["kek"] != first["kek"]
    assert secrets.data[master_secret_name(ACME)]["kek"] != kek_before

    puts = secrets.puts
    again = local.rotate(ACME, second, rotation_id="r1")
    assert again == second and secrets.puts == puts


def test_a_lost_tenant_secret_is_restored_from_the_master_copy(local: LocalTenantKeys, tmp_path: Path) -> None:
    local.ensure("acme", "polite-acme", "tracker")
    doc = local.rotate(ACME, local.new_wrapped_version(ACME, None))
    before = opened(tmp_path, doc)
    assert raw(opened(tmp_path, local.new_wrapped_version(ACME, None))) == raw(before)  # restores, adds nothing


def test_local_retries_converge_without_duplicate_versions(
    local: LocalTenantKeys, secrets: SecretsOfTheOperator, tmp_path: Path
) -> None:
    local.ensure("acme", "polite-acme", "tracker")
    first = local.new_wrapped_version(ACME, None)

    secrets.fail_puts = True
    with pytest.raises(ConnectionError):
        local.new_wrapped_version(ACME, first)
    secrets.fail_puts = False

    lost = local.new_wrapped_version(ACME, first)  # suppose the tenant Secret write of this one failed
    retried = local.new_wrapped_version(ACME, first)
    assert [e["version"] for e in retried["versions"]] == [1, 2]
    assert retried["versions"][0] == first["versions"][0]  # what the tracker already reads stays byte for byte
    assert raw(opened(tmp_path, retried)) == raw(opened(tmp_path, lost))


def test_local_keys_refuse_a_tenant_file_the_master_copy_does_not_know(local: LocalTenantKeys, tmp_path: Path) -> None:
    local.ensure("acme", "polite-acme", "tracker")
    local.new_wrapped_version(ACME, None)
    foreign_path = tmp_path / "foreign.json"
    LocalKeyProvider(foreign_path).load()
    with pytest.raises(KeyMaterialError, match="not the one in the master copy"):
        local.new_wrapped_version(ACME, json.loads(foreign_path.read_text()))


def test_local_destroy_makes_the_keys_unrecoverable(
    local: LocalTenantKeys, secrets: SecretsOfTheOperator, tmp_path: Path
) -> None:
    local.ensure("acme", "polite-acme", "tracker")
    doc = local.new_wrapped_version(ACME, None)
    local.destroy(ACME)
    assert master_secret_name(ACME) not in secrets.data
    with pytest.raises(KeyMaterialError, match="crypto-shredded"):
        local.new_wrapped_version(ACME, None)
    with pytest.raises(KeyMaterialError, match="crypto-shredded"):
        local.new_wrapped_version(ACME, doc)
    local.destroy(ACME)


# -- mount names are paths, never requests or policy text of their own ---------------------------------


@pytest.mark.parametrize(
    "mounts",
    [
        {"auth_mount": "kubernetes/role/polite-victim#"},  # would write another tenant's role
        {"transit_mount": 'transit/decrypt/polite-other" {}\npath "sys/*'},  # would widen the policy
        {"transit_mount": "transit/*"},
        {"auth_mount": "../sys"},
    ],
)
def test_a_hostile_mount_is_refused_before_anything_reaches_vault(vault: VaultFake, mounts: dict[str, str]) -> None:
    with pytest.raises(VaultRefused, match="must be a Vault mount path"):
        VaultTenantKeys(vault.address, VaultLogin(token=ROOT_TOKEN), timeout=5, **mounts)
    with pytest.raises(VaultRefused, match="must be a Vault mount path"):
        VaultKeyProvider("/nonexistent", address=vault.address, key_name=ACME, role=ACME, **mounts)
    assert vault.requests == []


def test_a_nested_mount_is_a_path_of_plain_segments(vault: VaultFake) -> None:
    keys = VaultTenantKeys(vault.address, VaultLogin(token=ROOT_TOKEN), transit_mount="tenants/transit", timeout=5)
    assert keys.transit_mount == "tenants/transit"
    assert tracker_policy(ACME, keys.transit_mount).count('path "') == 1
