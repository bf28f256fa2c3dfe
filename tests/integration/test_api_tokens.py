"""Bootstrap API tokens from the operator's Secret, and revocation (SQLite and PostgreSQL alike).

The Secret is laid out as kubelet mounts one (its atomic writer): a timestamped directory with the
files, a ``..data`` link to it, and one link per key through ``..data``; rotating the Secret writes a
new directory and swaps the link.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from politetenant.tracker.http.auth import Authenticator, Role, read_bootstrap_tokens
from politetenant.tracker.http.state import TrackerState
from politetenant.tracker.privacy.api_tokens import import_bootstrap_tokens, revoke_token
from politetenant.tracker.server.app import load_keyring
from politetenant.tracker.storage import open_store
from tests.conftest import start_tracker
from tests.support import message_body


def operator_token() -> str:
    """A token as the operator generates it (politetenant/operator/kube/secrets.py)."""
    return f"ptk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def mount_secret(directory: Path, data: Mapping[str, str]) -> None:
    """Write ``data`` the way kubelet updates a Secret volume: new files, then one atomic link swap."""
    directory.mkdir(exist_ok=True)
    version = directory / f"..{secrets.token_hex(4)}"
    version.mkdir()
    for key, value in data.items():
        (version / key).write_text(value)
    (directory / "..data_tmp").symlink_to(version.name)
    os.replace(directory / "..data_tmp", directory / "..data")
    for key in data:
        link = directory / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")


def bootstrap_tokens_of(tmp_path: Path) -> dict[str, str]:
    return {role.value: (tmp_path / "api-tokens" / role.value).read_text() for role in Role}


def role_tokens() -> dict[str, str]:
    return {role.value: operator_token() for role in Role}


class Running:
    def __init__(self) -> None:
        self.clients: list[TestClient[Any, Any]] = []

    async def start(self, tmp_path: Path, db_url: str, geoip_path: str, secret_dir: Path) -> TrackerState:
        """A tracker (a pod, a worker) starting with the Secret mounted; its keys are shared."""
        client, state = await start_tracker(
            tmp_path, db_url, geoip_path, bootstrap_tokens=read_bootstrap_tokens(secret_dir),
            spool_dir=str(tmp_path / f"spool-{len(self.clients)}"),  # each worker has its own spool
        )  # fmt: skip
        self.clients.append(client)
        return state

    def client(self, n: int = -1) -> TestClient[Any, Any]:
        return self.clients[n]


@pytest.fixture
async def trackers() -> AsyncIterator[Running]:
    running = Running()
    yield running
    for client in running.clients:
        await client.close()


async def status(client: TestClient[Any, Any], token: str, *, post: bool = False) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    if post:
        resp = await client.post("/api/v1/messages", json=message_body(3), headers=headers)
    else:
        resp = await client.get("/api/v1/messages", headers=headers)
    return resp.status


async def audit_details(state: TrackerState, action: str) -> list[str]:
    rows = await state.store.fetch("SELECT detail FROM audit WHERE action = $1 ORDER BY id", action)
    return [str(r[0]) for r in rows]


async def test_the_secrets_tokens_work_at_once_with_their_roles_and_only_hashes_are_stored(
    trackers: Running, tmp_path: Path, db_url: str, geoip_path: str
) -> None:
    tokens = role_tokens()
    mount_secret(tmp_path / "api-tokens", tokens)
    state = await trackers.start(tmp_path, db_url, geoip_path, tmp_path / "api-tokens")
    client = trackers.client()
    assert await status(client, tokens["sender"], post=True) == 201
    assert await status(client, tokens["analyst"]) == 200
    assert await status(client, tokens["analyst"], post=True) == 403  # the role is the file's
    rows = await state.store.fetch("SELECT id, role, secret_hash, bootstrap_role FROM api_tokens ORDER BY role")
    assert [(r[1], r[3]) for r in rows] == [("analyst", "analyst"), ("privacy", "privacy"), ("sender", "sender")]
    for token in tokens.values():
        assert token.split("_", 2)[2].encode() not in b"".join(bytes(r[2]) for r in rows)
    assert len(await audit_details(state, "token.create")) == 3


async def test_replicas_and_workers_starting_together_import_each_token_once(
    trackers: Running, tmp_path: Path, db_url: str, geoip_path: str
) -> None:
    mount_secret(tmp_path / "api-tokens", role_tokens())
    bootstrap = read_bootstrap_tokens(tmp_path / "api-tokens")
    keyring = load_keyring(f"local:{tmp_path}/keys.json", "acme")
    stores = [open_store(db_url) for _ in range(4)]  # four workers' own connections, on a fresh database
    for store in stores:
        await store.connect()
    try:
        await asyncio.gather(*(store.migrate() for store in stores))
        await asyncio.gather(*(import_bootstrap_tokens(store, keyring, bootstrap) for store in stores))
    finally:
        for store in stores:
            await store.close()
    state = await trackers.start(tmp_path, db_url, geoip_path, tmp_path / "api-tokens")  # and a restart
    assert await state.store.count_rows("api_tokens") == 3
    assert len(await audit_details(state, "token.create")) == 3  # one entry per token, not per importer
    assert await status(trackers.client(), bootstrap_tokens_of(tmp_path)["analyst"]) == 200


async def test_a_rotated_secret_replaces_the_roles_token_and_an_old_copy_never_brings_it_back(
    trackers: Running, tmp_path: Path, db_url: str, geoip_path: str
) -> None:
    old = role_tokens()
    secret = tmp_path / "api-tokens"
    mount_secret(secret, old)
    stale_copy = read_bootstrap_tokens(secret)  # what a pod that started before the rotation read
    await trackers.start(tmp_path, db_url, geoip_path, secret)
    new = {**old, "sender": operator_token()}
    mount_secret(secret, new)
    state = await trackers.start(tmp_path, db_url, geoip_path, secret)  # the rolled pod
    client = trackers.client()
    assert await status(client, old["sender"], post=True) == 401
    assert await status(client, new["sender"], post=True) == 201
    assert await status(client, old["analyst"]) == 200  # the other roles' tokens did not change
    old_id = old["sender"].split("_")[1]
    assert await audit_details(state, "token.revoke") == [
        f"id={old_id} role=sender reason=replaced by ptk_{new['sender'].split('_')[1]}"
    ]
    await import_bootstrap_tokens(state.store, state.keyring, stale_copy)  # a late pod with the old copy
    assert await state.store.get_api_token(old_id) is None  # still revoked
    assert await status(client, new["sender"], post=True) == 201
    assert await state.store.count_rows("api_tokens") == 4


async def test_a_revoked_token_is_refused_at_once_by_a_new_worker_and_within_the_cache_time_by_others(
    trackers: Running, tmp_path: Path, db_url: str, geoip_path: str
) -> None:
    tokens = role_tokens()
    mount_secret(tmp_path / "api-tokens", tokens)
    state = await trackers.start(tmp_path, db_url, geoip_path, tmp_path / "api-tokens")
    client = trackers.client()
    state.auth = Authenticator(state.store, cache_seconds=0.3)  # the bound, shortened for the test
    assert await status(client, tokens["analyst"]) == 200  # now cached by this worker
    token_id = tokens["analyst"].split("_")[1]
    assert await revoke_token(state.store, state.keyring, token_id) == ("analyst", True)
    assert await revoke_token(state.store, state.keyring, token_id) == ("analyst", False)  # idempotent
    assert await revoke_token(state.store, state.keyring, "0123456789ab") is None
    await trackers.start(tmp_path, db_url, geoip_path, tmp_path / "api-tokens")  # a new worker (or pod)
    assert await status(trackers.client(), tokens["analyst"]) == 401  # refused at once, not re-imported
    await asyncio.sleep(0.4)
    assert await status(client, tokens["analyst"]) == 401  # refused once the cached row expired
    assert await audit_details(state, "token.revoke") == [f"id={token_id} role=analyst"]
