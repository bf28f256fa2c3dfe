"""Vault tenants end to end: the real ``polite-operator run`` process, the Kubernetes API emulator and
the Vault fake, each on loopback.

The operator signs in with a token file whose token carries only ``operator_policy()``, as the chart
documents. What is pinned: a vault tenant's key Secret holds Transit ciphertexts only, and only that
tenant's tracker (its ServiceAccount, its namespace) can unwrap them; an unreachable Vault leaves a
new tenant with nothing written and a readable condition, then converges to one key version; the
rotate annotation rotates the Transit key; ``deletionPolicy: Delete`` destroys it once the namespace
is gone, and says so in an Event.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest

from politetenant.crypto.keys import PURPOSES, KeySet
from politetenant.crypto.vault import VaultKeyProvider, VaultRefused, wrap_context
from politetenant.operator.keys.vault import operator_policy
from tests.e2e.operator_process import OperatorProcess, start_operator
from tests.fakes.kube_server import KubeApiHandle, running_kube_api
from tests.fakes.vault_fake import ROOT_TOKEN, IssuedToken, VaultFake, running_vault_fake

pytestmark = pytest.mark.slow

TENANTS = "/apis/polite.io/v1alpha1/politetenants"
OPERATOR_NAMESPACE = "politetenant-system"
OPERATOR_POLICY = "politetenant-operator"  # outside polite-*, which are the tenants' policies
OPERATOR_TOKEN = "hvs.operator-token-of-the-e2e-test"
RESYNC_SECONDS = "2"
CONVERGE_SECONDS = 60.0


@dataclass
class Cluster:
    kube: KubeApiHandle
    vault: VaultFake
    operator: OperatorProcess
    workdir: Path

    # -- reading the API like kubectl

    def get(self, path: str) -> dict[str, Any] | None:
        answer = self.kube.request("GET", path)
        if answer.status == 404:
            return None
        assert answer.status == 200, answer.body
        body: dict[str, Any] = answer.body
        return body

    def tenant(self, name: str) -> dict[str, Any]:
        found = self.get(f"{TENANTS}/{name}")
        assert found is not None, f"tenant {name} is gone"
        return found

    def keys_condition(self, name: str) -> dict[str, Any] | None:
        conditions = (self.tenant(name).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "KeysReady"), None)

    def keys_secret(self, name: str) -> dict[str, Any] | None:
        return self.get(f"/api/v1/namespaces/polite-{name}/secrets/tracker-keys")

    def wrapped_doc(self, name: str) -> dict[str, Any]:
        secret = self.keys_secret(name)
        assert secret is not None
        doc: dict[str, Any] = json.loads(base64.b64decode(secret["data"]["wrapped-keys.json"]))
        return doc

    def events(self, tenant: str) -> list[dict[str, Any]]:
        listed = self.get(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/events") or {"items": []}
        return [e for e in listed["items"] if e["involvedObject"].get("name") == tenant]

    def everything_stored(self) -> str:
        """Every version of every object the API server ever held, as one JSON text."""

        def dump(emulator: Any) -> str:
            versions = [v.raw for obj in emulator.objects.values() for v in obj.history.raw if v is not None]
            return json.dumps(versions, default=str)

        return self.kube.call(dump)

    # -- acting like an SRE

    def create_tenant(self, name: str, **keys: Any) -> None:
        body = {
            "apiVersion": "polite.io/v1alpha1",
            "kind": "PoliteTenant",
            "metadata": {"name": name},
            "spec": {"displayName": name.title(), "region": "eu-ireland", "keys": {"provider": "vault", **keys}},
        }
        answer = self.kube.request("POST", TENANTS, body)
        assert answer.status == 201, answer.body

    def merge_patch(self, name: str, patch: dict[str, Any]) -> None:
        answer = self.kube.request("PATCH", f"{TENANTS}/{name}", patch, content_type="application/merge-patch+json")
        assert answer.status == 200, answer.body

    def wait_keys(self, name: str, status: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            condition = self.keys_condition(name)
            return condition if condition is not None and condition["status"] == status else None

        return self.operator.wait_for(reached, CONVERGE_SECONDS, f"tenant {name} KeysReady {status}")

    # -- the tracker's side

    def tracker_keys(self, doc: dict[str, Any], *, namespace: str, role: str) -> list[KeySet]:
        """What a tracker pod of ``namespace`` (ServiceAccount tracker) unwraps as Vault role ``role``."""
        wrapped = self.workdir / f"{namespace}-{role}-wrapped-keys.json"
        wrapped.write_text(json.dumps(doc))
        jwt = self.workdir / f"{namespace}-{role}-token"
        jwt.write_text(self.vault.issue_service_account_token(namespace, "tracker"))
        provider = VaultKeyProvider(
            wrapped, address=self.vault.address, key_name=doc["key_name"], role=role, token_file=jwt, timeout=5,
            attempts=1,
        )  # fmt: skip
        return provider.load()


def plaintext_keys(vault: VaultFake, doc: dict[str, Any]) -> list[bytes]:
    """Every key of the document as Vault's root unwraps it: what must never appear outside Vault."""
    transit = hvac.Client(url=vault.address, token=ROOT_TOKEN, timeout=5).secrets.transit
    name = doc["key_name"]
    return [
        base64.b64decode(
            transit.decrypt_data(name, ciphertext=v[p], context=wrap_context(name, v["version"], p))["data"][
                "plaintext"
            ]
        )
        for v in doc["versions"]
        for p in PURPOSES
    ]


def encodings(key: bytes) -> list[str]:
    return [base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode().rstrip("="), key.hex()]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_vault_fake() as vault, running_kube_api() as kube:
        vault.policies[OPERATOR_POLICY] = operator_policy()
        vault.tokens[OPERATOR_TOKEN] = IssuedToken([OPERATOR_POLICY], float("inf"), "")
        token_file = tmp_path / "vault-token"
        token_file.write_text(OPERATOR_TOKEN + "\n")
        config = tmp_path / "operator.yaml"
        config.write_text(
            f"namespace: {OPERATOR_NAMESPACE}\n"
            f"vault: {{address: '{vault.address}', token_file: '{token_file}', timeout_seconds: 3}}\n"
        )
        created = kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": OPERATOR_NAMESPACE}})
        assert created.status == 201, created.body
        operator = start_operator(
            kube.kubeconfig_path,
            extra_args=[
                "--standalone",
                "--config",
                str(config),
                "--metrics-port",
                "0",
                "--resync-seconds",
                RESYNC_SECONDS,
            ],
            log_path=tmp_path / "operator.log",
        )
        try:
            yield Cluster(kube, vault, operator, tmp_path)
        finally:
            code = operator.stop()
            logs = operator.logs()
        assert code == 0, logs[-4000:]
        assert "Traceback" not in logs, logs[-4000:]
        assert OPERATOR_TOKEN not in logs


def test_a_vault_tenant_gets_ciphertexts_only_its_own_tracker_can_unwrap(cluster: Cluster) -> None:
    vault = cluster.vault
    cluster.create_tenant("acme", vault={"address": vault.address})
    cluster.create_tenant("globex", vault={})  # the operator's default Vault
    for name in ("acme", "globex"):
        ready = cluster.wait_keys(name, "True")
        assert (ready["reason"], ready["message"]) == ("KeysAvailable", "key version 1")
        assert cluster.tenant(name)["status"]["keys"]["version"] == 1

    # In Vault: a derived aes256-gcm96 Transit key, a decrypt-only policy, a role bound to the tracker.
    for name in ("acme", "globex"):
        key = vault.keys[("transit", f"polite-{name}")]
        assert (key.derived, key.exportable, key.deletion_allowed, key.latest) == (True, False, False, 1)
        assert vault.policies[f"polite-{name}"].count("path ") == 1
        assert f'path "transit/decrypt/polite-{name}"' in vault.policies[f"polite-{name}"]
        role = vault.roles[("kubernetes", f"polite-{name}")]
        assert role["bound_service_account_names"] == ["tracker"]
        assert role["bound_service_account_namespaces"] == [f"polite-{name}"]
        assert role["token_policies"] == [f"polite-{name}"] and role["audience"] == "vault"
    assert {r.token for r in vault.requests} == {OPERATOR_TOKEN}  # the operator used its own token only

    # In the cluster: ciphertexts only, and no key in any version of any object.
    docs = {name: cluster.wrapped_doc(name) for name in ("acme", "globex")}
    for name, doc in docs.items():
        (version,) = doc["versions"]
        assert doc["key_name"] == f"polite-{name}"
        assert all(version[p].startswith("vault:v1:") for p in PURPOSES)
        assert set(cluster.keys_secret(name)["data"]) == {"wrapped-keys.json"}  # type: ignore[index]
    stored, logs = cluster.everything_stored(), cluster.operator.logs()
    keys = [key for doc in docs.values() for key in plaintext_keys(vault, doc)]
    assert len(set(keys)) == 6
    leaks = [text for key in keys for text in encodings(key) if text in stored or text in logs]
    assert leaks == []

    # Each tracker unwraps its own keys, exactly as Vault holds them; never another tenant's.
    acme = cluster.tracker_keys(docs["acme"], namespace="polite-acme", role="polite-acme")
    assert [acme[0].dek, acme[0].token_key, acme[0].index_key] == plaintext_keys(vault, docs["acme"])
    with pytest.raises(VaultRefused, match="namespace not authorized"):  # globex's pod as acme's role
        cluster.tracker_keys(docs["acme"], namespace="polite-globex", role="polite-acme")
    with pytest.raises(VaultRefused, match="permission denied"):  # globex's own role, acme's document
        cluster.tracker_keys(docs["acme"], namespace="polite-globex", role="polite-globex")


def test_a_vault_outage_during_creation_writes_nothing_and_converges_to_one_key_version(cluster: Cluster) -> None:
    vault = cluster.vault
    cluster.create_tenant("acme", vault={})
    cluster.wait_keys("acme", "True")

    vault.stop_listening()
    cluster.create_tenant("globex", vault={})
    down = cluster.wait_keys("globex", "False")
    assert down["reason"] == "KeysUnavailable"
    assert down["message"] == (
        f"create keys: Vault at {vault.address} is unreachable (connection failed); "
        "could not read Transit key transit/polite-globex"
    )
    assert cluster.get("/api/v1/namespaces/polite-globex") is None  # nothing half-written, not even this
    assert cluster.keys_secret("globex") is None
    assert [e["reason"] for e in cluster.events("globex")] == ["KeysUnavailable"]
    assert cluster.keys_condition("acme")["status"] == "True"  # type: ignore[index]  # keys it has still work

    vault.resume_listening()
    ready = cluster.wait_keys("globex", "True")
    assert ready["message"] == "key version 1"
    assert [v["version"] for v in cluster.wrapped_doc("globex")["versions"]] == [1]
    assert vault.keys[("transit", "polite-globex")].latest == 1
    assert "KeysCreated" in [e["reason"] for e in cluster.events("globex")]
    unwrapped = cluster.tracker_keys(cluster.wrapped_doc("globex"), namespace="polite-globex", role="polite-globex")
    assert [k.version for k in unwrapped] == [1]


def test_rotation_rotates_the_transit_key_and_delete_shreds_it_after_the_namespace(cluster: Cluster) -> None:
    vault = cluster.vault
    cluster.create_tenant("acme", vault={})
    cluster.wait_keys("acme", "True")
    first = cluster.wrapped_doc("acme")

    cluster.merge_patch("acme", {"metadata": {"annotations": {"polite.io/rotate-keys": "2030-05-01"}}})
    cluster.operator.wait_for(
        lambda: (cluster.tenant("acme").get("status") or {}).get("keys", {}).get("version") == 2,
        CONVERGE_SECONDS,
        "status.keys.version 2",
    )
    assert vault.keys[("transit", "polite-acme")].latest == 2
    rotated = cluster.wrapped_doc("acme")
    assert rotated["versions"][0] == first["versions"][0]  # the old version still opens old rows
    assert all(rotated["versions"][1][p].startswith("vault:v2:") for p in PURPOSES)
    unwrapped = cluster.tracker_keys(rotated, namespace="polite-acme", role="polite-acme")
    assert [k.version for k in unwrapped] == [1, 2]
    assert "KeysRotated" in [e["reason"] for e in cluster.events("acme")]

    cluster.merge_patch("acme", {"spec": {"deletionPolicy": "Delete"}})
    assert cluster.kube.request("DELETE", f"{TENANTS}/acme").status in (200, 202)

    def shredded() -> bool:
        if ("transit", "polite-acme") in vault.keys:
            return False
        # Read after the key was seen gone: the namespace must have gone first.
        assert cluster.get("/api/v1/namespaces/polite-acme") is None, "the Transit key went before the namespace"
        return True

    cluster.operator.wait_for(shredded, CONVERGE_SECONDS, "the Transit key to be destroyed")
    # The key, then the tenant's policy and role: three Vault calls, so the last two may follow a moment later.
    cluster.operator.wait_for(
        lambda: "polite-acme" not in vault.policies and ("kubernetes", "polite-acme") not in vault.roles,
        CONVERGE_SECONDS,
        "the tenant's Vault policy and role to be removed",
    )
    cluster.operator.wait_for(lambda: cluster.get(f"{TENANTS}/acme") is None, CONVERGE_SECONDS, "the tenant to go")
    events = {e["reason"]: e for e in cluster.events("acme")}
    assert "NamespaceDeleting" in events
    assert events["CryptoShredded"]["message"].startswith(
        "keys polite-acme destroyed after namespace polite-acme was deleted"
    )
    with pytest.raises(VaultRefused):  # nobody can open the old document any more
        cluster.tracker_keys(rotated, namespace="polite-acme", role="polite-acme")
