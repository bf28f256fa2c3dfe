"""The Vault fake against hvac's real methods: request shapes, answers, policy enforcement, outages.

Each test calls hvac as production code does and asserts the path and body the fake received, so a
drift between hvac, the fake and Vault's documented API fails here first.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import hvac
import pytest
import requests
from hvac import exceptions as hvac_errors

from tests.fakes.vault_fake import ROOT_TOKEN, VaultFake, running_vault_fake

CTX = base64.b64encode(b"politetenant/polite-acme/v1/dek").decode()


@pytest.fixture
def vault() -> Iterator[VaultFake]:
    with running_vault_fake() as fake:
        yield fake


def root(fake: VaultFake) -> Any:
    return hvac.Client(url=fake.address, token=ROOT_TOKEN, timeout=5)


def tracker_login(fake: VaultFake, *, namespace: str = "polite-acme", account: str = "tracker") -> Any:
    """A client signed in as a tracker whose role may only decrypt with polite-acme."""
    admin = root(fake)
    admin.sys.create_or_update_acl_policy(
        "polite-acme", 'path "transit/decrypt/polite-acme" {\n  capabilities = ["update"]\n}\n'
    )
    admin.write_data(
        "auth/kubernetes/role/polite-acme",
        data={
            "bound_service_account_names": ["tracker"],
            "bound_service_account_namespaces": ["polite-acme"],
            "audience": "vault",
            "token_policies": ["polite-acme"],
            "token_no_default_policy": True,
            "token_ttl": 300,
            "token_max_ttl": 300,
        },
    )
    client = hvac.Client(url=fake.address, timeout=5)
    client.auth.kubernetes.login("polite-acme", fake.issue_service_account_token(namespace, account))
    return client


def test_transit_key_life_has_hvac_request_shapes(vault: VaultFake) -> None:
    transit = root(vault).secrets.transit
    transit.create_key("polite-acme", derived=True, exportable=False, key_type="aes256-gcm96")
    created = vault.requests[-1]
    assert (created.method, created.path) == ("POST", "transit/keys/polite-acme")
    assert created.body == {"derived": True, "exportable": False, "type": "aes256-gcm96"}
    assert created.token == ROOT_TOKEN

    data = transit.read_key("polite-acme")["data"]
    assert (data["type"], data["derived"], data["exportable"], data["deletion_allowed"]) == (
        "aes256-gcm96",
        True,
        False,
        False,
    )
    assert data["latest_version"] == 1 and list(data["keys"]) == ["1"]

    transit.rotate_key("polite-acme")
    assert (vault.requests[-1].method, vault.requests[-1].path) == ("POST", "transit/keys/polite-acme/rotate")
    assert transit.read_key("polite-acme")["data"]["latest_version"] == 2

    transit.update_key_configuration("polite-acme", deletion_allowed=True)
    assert vault.requests[-1].path == "transit/keys/polite-acme/config"
    assert vault.requests[-1].body == {"deletion_allowed": True}

    transit.delete_key("polite-acme")
    assert (vault.requests[-1].method, vault.requests[-1].path) == ("DELETE", "transit/keys/polite-acme")
    with pytest.raises(hvac_errors.InvalidPath):
        transit.read_key("polite-acme")


def test_a_key_is_deleted_only_after_deletion_is_allowed(vault: VaultFake) -> None:
    transit = root(vault).secrets.transit
    transit.create_key("k", key_type="aes256-gcm96")
    with pytest.raises(hvac_errors.InvalidRequest, match="deletion is not allowed"):
        transit.delete_key("k")
    assert transit.read_key("k")["data"]["name"] == "k"


def test_creating_an_existing_key_changes_nothing(vault: VaultFake) -> None:
    transit = root(vault).secrets.transit
    transit.create_key("k", derived=True, key_type="aes256-gcm96")
    transit.create_key("k", derived=False, exportable=True, key_type="aes256-gcm96")
    data = transit.read_key("k")["data"]
    assert data["derived"] is True and data["exportable"] is False


def test_wrapped_datakey_and_decrypt_have_hvac_request_shapes(vault: VaultFake) -> None:
    transit = root(vault).secrets.transit
    transit.create_key("polite-acme", derived=True, key_type="aes256-gcm96")
    answer = transit.generate_data_key("polite-acme", key_type="wrapped", context=CTX, bits=256)
    sent = vault.requests[-1]
    assert (sent.method, sent.path, sent.body) == (
        "POST",
        "transit/datakey/wrapped/polite-acme",
        {"context": CTX, "bits": 256},
    )
    ciphertext = answer["data"]["ciphertext"]
    assert ciphertext.startswith("vault:v1:") and "plaintext" not in answer["data"]

    plain = transit.decrypt_data("polite-acme", ciphertext=ciphertext, context=CTX)
    assert vault.requests[-1].path == "transit/decrypt/polite-acme"
    assert vault.requests[-1].body == {"ciphertext": ciphertext, "context": CTX}
    assert len(base64.b64decode(plain["data"]["plaintext"])) == 32


def test_a_derived_key_opens_only_under_the_same_context(vault: VaultFake) -> None:
    transit = root(vault).secrets.transit
    transit.create_key("k", derived=True, key_type="aes256-gcm96")
    ciphertext = transit.generate_data_key("k", key_type="wrapped", context=CTX)["data"]["ciphertext"]
    other = base64.b64encode(b"politetenant/polite-acme/v1/token_key").decode()
    with pytest.raises(hvac_errors.InvalidRequest, match="message authentication failed"):
        transit.decrypt_data("k", ciphertext=ciphertext, context=other)
    with pytest.raises(hvac_errors.InvalidRequest, match="missing 'context'"):
        transit.decrypt_data("k", ciphertext=ciphertext)


def test_old_versions_decrypt_after_rotation_until_min_decryption_version(vault: VaultFake) -> None:
    transit = root(vault).secrets.transit
    transit.create_key("k", derived=True, key_type="aes256-gcm96")
    old = transit.generate_data_key("k", key_type="plaintext", context=CTX)["data"]
    transit.rotate_key("k")
    new = transit.generate_data_key("k", key_type="wrapped", context=CTX)["data"]["ciphertext"]
    assert new.startswith("vault:v2:")
    assert transit.decrypt_data("k", ciphertext=old["ciphertext"], context=CTX)["data"]["plaintext"] == old["plaintext"]
    transit.update_key_configuration("k", min_decryption_version=2)
    with pytest.raises(hvac_errors.InvalidRequest, match="too old"):
        transit.decrypt_data("k", ciphertext=old["ciphertext"], context=CTX)


def test_encrypt_authenticates_associated_data(vault: VaultFake) -> None:
    transit = root(vault).secrets.transit
    transit.create_key("k", key_type="aes256-gcm96")
    ad = base64.b64encode(b"tenant acme").decode()
    plaintext = base64.b64encode(b"secret").decode()
    ciphertext = transit.encrypt_data("k", plaintext=plaintext, associated_data=ad)["data"]["ciphertext"]
    assert vault.requests[-1].body == {"plaintext": plaintext, "associated_data": ad}
    assert transit.decrypt_data("k", ciphertext=ciphertext, associated_data=ad)["data"]["plaintext"] == plaintext
    with pytest.raises(hvac_errors.InvalidRequest, match="message authentication failed"):
        transit.decrypt_data("k", ciphertext=ciphertext)


def test_acl_policy_calls_have_hvac_request_shapes(vault: VaultFake) -> None:
    sys = root(vault).sys
    text = 'path "transit/decrypt/polite-acme" {\n  capabilities = ["update"]\n}\n'
    sys.create_or_update_acl_policy("polite-acme", text)
    sent = vault.requests[-1]
    assert (sent.method, sent.path, sent.body) == ("PUT", "sys/policies/acl/polite-acme", {"policy": text})
    assert sys.read_acl_policy("polite-acme")["data"] == {"name": "polite-acme", "policy": text}
    sys.delete_acl_policy("polite-acme")
    assert (vault.requests[-1].method, vault.requests[-1].path) == ("DELETE", "sys/policies/acl/polite-acme")
    with pytest.raises(hvac_errors.InvalidPath):
        sys.read_acl_policy("polite-acme")
    sys.delete_acl_policy("polite-acme")  # deleting an absent policy is not an error, as in Vault


def test_a_policy_outside_the_parsed_subset_is_refused(vault: VaultFake) -> None:
    with pytest.raises(hvac_errors.InvalidRequest, match="failed to parse policy"):
        root(vault).sys.create_or_update_acl_policy("p", {"path": {"transit/*": {"capabilities": ["read"]}}})


def test_kubernetes_role_calls_have_hvac_request_shapes(vault: VaultFake) -> None:
    client = root(vault)
    kubernetes = client.auth.kubernetes
    kubernetes.create_role("r", ["tracker"], ["polite-acme"], ttl="5m", policies=["p"], audience="vault")
    sent = vault.requests[-1]
    assert (sent.method, sent.path) == ("POST", "auth/kubernetes/role/r")
    assert sent.body == {
        "bound_service_account_names": ["tracker"],
        "bound_service_account_namespaces": ["polite-acme"],
        "audience": "vault",
        "ttl": "5m",
        "policies": ["p"],
    }
    data = kubernetes.read_role("r")
    assert (data["token_policies"], data["token_ttl"], data["audience"]) == (["p"], 300, "vault")

    modern = {
        "bound_service_account_names": ["tracker"],
        "bound_service_account_namespaces": ["polite-acme"],
        "token_policies": ["p"],
        "token_no_default_policy": True,
        "token_ttl": 60,
        "token_max_ttl": 60,
    }
    client.write_data("auth/kubernetes/role/r", data=modern)
    assert (vault.requests[-1].path, vault.requests[-1].body) == ("auth/kubernetes/role/r", modern)
    assert kubernetes.read_role("r")["token_no_default_policy"] is True

    kubernetes.delete_role("r")
    assert (vault.requests[-1].method, vault.requests[-1].path) == ("DELETE", "auth/kubernetes/role/r")
    with pytest.raises(hvac_errors.InvalidPath):
        kubernetes.read_role("r")


def test_login_has_hvac_request_shape_and_issues_a_token(vault: VaultFake) -> None:
    client = tracker_login(vault)
    sent = vault.calls("POST", "auth/kubernetes/login")[-1]
    assert set(sent.body) == {"role", "jwt"} and sent.body["role"] == "polite-acme"
    assert sent.token is None
    assert client.token.startswith("hvs.")
    assert vault.tokens[client.token].policies == ["polite-acme"]  # no default policy


def test_a_tracker_token_decrypts_with_its_key_and_nothing_else(vault: VaultFake) -> None:
    transit = root(vault).secrets.transit
    for name in ("polite-acme", "polite-globex"):
        transit.create_key(name, derived=True, key_type="aes256-gcm96")
    mine = transit.generate_data_key("polite-acme", key_type="wrapped", context=CTX)["data"]["ciphertext"]
    theirs = transit.generate_data_key("polite-globex", key_type="wrapped", context=CTX)["data"]["ciphertext"]
    tracker = tracker_login(vault).secrets.transit

    assert tracker.decrypt_data("polite-acme", ciphertext=mine, context=CTX)["data"]["plaintext"]
    with pytest.raises(hvac_errors.Forbidden):
        tracker.decrypt_data("polite-globex", ciphertext=theirs, context=CTX)
    with pytest.raises(hvac_errors.Forbidden):
        tracker.read_key("polite-acme")
    with pytest.raises(hvac_errors.Forbidden):
        tracker.generate_data_key("polite-acme", key_type="plaintext", context=CTX)
    with pytest.raises(hvac_errors.Forbidden):
        tracker.rotate_key("polite-acme")


def test_the_most_specific_policy_path_wins_and_deny_overrides(vault: VaultFake) -> None:
    admin = root(vault)
    admin.secrets.transit.create_key("k", key_type="aes256-gcm96")
    admin.sys.create_or_update_acl_policy(
        "reader",
        'path "transit/keys/*" {\n  capabilities = ["read"]\n}\n'
        'path "transit/keys/k" {\n  capabilities = ["deny"]\n}\n',
    )
    admin.auth.kubernetes.create_role("r", ["op"], ["ops"], policies=["reader"])
    client = hvac.Client(url=vault.address, timeout=5)
    client.auth.kubernetes.login("r", vault.issue_service_account_token("ops", "op"))
    with pytest.raises(hvac_errors.Forbidden):
        client.secrets.transit.read_key("k")
    with pytest.raises(hvac_errors.InvalidPath):  # allowed by the glob; the key just does not exist
        client.secrets.transit.read_key("other")


@pytest.mark.parametrize(
    ("namespace", "account", "audience", "message"),
    [
        ("polite-acme", "default", "vault", "service account name not authorized"),
        ("polite-globex", "tracker", "vault", "namespace not authorized"),
        ("polite-acme", "tracker", "https://kubernetes.default.svc", "invalid audience"),
    ],
)
def test_login_checks_account_namespace_and_audience(
    vault: VaultFake, namespace: str, account: str, audience: str, message: str
) -> None:
    tracker_login(vault)  # creates the role
    client = hvac.Client(url=vault.address, timeout=5)
    jwt = vault.issue_service_account_token(namespace, account, audience)
    with pytest.raises(hvac_errors.Forbidden, match=message):
        client.auth.kubernetes.login("polite-acme", jwt)


def test_login_refuses_unknown_roles_and_tokens(vault: VaultFake) -> None:
    tracker_login(vault)
    client = hvac.Client(url=vault.address, timeout=5)
    with pytest.raises(hvac_errors.InvalidRequest, match="invalid role name"):
        client.auth.kubernetes.login("nope", vault.issue_service_account_token("polite-acme", "tracker"))
    with pytest.raises(hvac_errors.Forbidden):
        client.auth.kubernetes.login("polite-acme", "not-a-token-this-vault-knows")


def test_tokens_expire_after_the_role_ttl(vault: VaultFake) -> None:
    transit = root(vault).secrets.transit
    transit.create_key("polite-acme", derived=True, key_type="aes256-gcm96")
    ciphertext = transit.generate_data_key("polite-acme", key_type="wrapped", context=CTX)["data"]["ciphertext"]
    tracker = tracker_login(vault).secrets.transit
    vault.advance(301)
    with pytest.raises(hvac_errors.Forbidden):
        tracker.decrypt_data("polite-acme", ciphertext=ciphertext, context=CTX)


def test_calls_without_a_known_token_are_denied(vault: VaultFake) -> None:
    with pytest.raises(hvac_errors.Forbidden, match="permission denied"):
        hvac.Client(url=vault.address, timeout=5).secrets.transit.read_key("k")
    with pytest.raises(hvac_errors.Forbidden, match="permission denied"):
        hvac.Client(url=vault.address, token="hvs.forged", timeout=5).sys.read_acl_policy("p")


def test_unknown_paths_and_parameters_are_refused_so_shape_drift_fails(vault: VaultFake) -> None:
    client = root(vault)
    with pytest.raises(hvac_errors.InvalidPath, match="no handler for route"):
        client.adapter.get("/v1/secret/data/anything")
    with pytest.raises(hvac_errors.InvalidPath, match="no handler for route"):
        client.secrets.transit.read_key("k", mount_point="transit-eu")
    with pytest.raises(hvac_errors.InvalidRequest, match="takes no parameter"):
        client.write_data("transit/keys/k", data={"type": "aes256-gcm96", "derive": True})
    client.secrets.transit.create_key("k", key_type="aes256-gcm96")
    with pytest.raises(hvac_errors.InvalidRequest, match="batch_input is not implemented"):
        client.secrets.transit.decrypt_data("k", batch_input=[{"ciphertext": "vault:v1:AAAA"}])
    with pytest.raises(hvac_errors.InvalidRequest, match="only aes256-gcm96"):
        client.secrets.transit.create_key("rsa", key_type="rsa-2048")


def test_sealed_vault_answers_503(vault: VaultFake) -> None:
    vault.seal()
    with pytest.raises(hvac_errors.VaultDown, match="sealed"):
        root(vault).secrets.transit.read_key("k")
    vault.unseal()
    with pytest.raises(hvac_errors.InvalidPath):
        root(vault).secrets.transit.read_key("k")


def test_a_stopped_vault_refuses_connections_and_comes_back_with_its_state(vault: VaultFake) -> None:
    root(vault).secrets.transit.create_key("k", key_type="aes256-gcm96")
    vault.stop_listening()
    with pytest.raises(requests.exceptions.ConnectionError):
        root(vault).secrets.transit.read_key("k")
    vault.resume_listening()
    assert root(vault).secrets.transit.read_key("k")["data"]["latest_version"] == 1


def test_fail_after_breaks_an_operation_half_way(vault: VaultFake) -> None:
    transit = root(vault).secrets.transit
    vault.fail_after(1)
    transit.create_key("k", key_type="aes256-gcm96")
    with pytest.raises(requests.exceptions.ConnectionError):
        transit.rotate_key("k")
    vault.fail_after(0, "sealed")
    with pytest.raises(hvac_errors.VaultDown):
        transit.rotate_key("k")
    vault.recover()
    assert transit.read_key("k")["data"]["latest_version"] == 1
