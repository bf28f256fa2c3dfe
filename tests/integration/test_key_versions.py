"""Key versions on SQLite and PostgreSQL: rotate, restart, re-seal, retire the old DEK.

A beacon in an e-mail sent before a rotation must still count, new data must use the new version,
``reseal`` must move every sealed value to it (resumably), and after that a keyring that no longer
holds the old DEK (but still its token key) must open everything and verify every old token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from politetenant.crypto import KeyMaterialError, Keyring, KeySet, LocalKeyProvider, Sealer, SealError, recipient_row
from politetenant.tracker.cli.geoip_sample import SAMPLE_ADDRESSES
from politetenant.tracker.cli.keys_cli import rotate_keys, run_reseal
from politetenant.tracker.http.auth import Role
from politetenant.tracker.http.state import TrackerState
from politetenant.tracker.privacy import audit
from politetenant.tracker.privacy.reseal import (
    ResealProgress,
    needs_reseal,
    reseal,
    sealed_heads,
    sealed_tables,
    sealed_versions,
    unbound_values,
)
from politetenant.tracker.server.app import RUNNER_OPTIONS, TrackerConfig, build_app, build_state
from politetenant.tracker.storage.base import Store
from tests.conftest import Tracker, start_tracker, tracker_settings
from tests.support import IP_DUBLIN, UA_IPHONE_MAIL, message_body

POLICY_URL = "https://intranet.example.com/policy?id=7&v=2"
# Records keep the department (12 recipients, 6 in each of 2 departments): every record carries a sealed value.
pytestmark = pytest.mark.settings(segment_attributes=("department",), min_segment_size=5)


async def register(t: Tracker, recipients: int = 12) -> tuple[str, list[str]]:
    body = message_body(recipients, departments=2)
    resp = await t.client.post("/api/v1/messages", json=body, headers=t.auth(Role.SENDER))
    assert resp.status == 201, await resp.text()
    out = await resp.json()
    return out["id"], [r["token"] for r in out["recipients"]]


async def hit(t: Tracker, path: str) -> Any:
    headers = {"User-Agent": UA_IPHONE_MAIL, "X-Forwarded-For": IP_DUBLIN}  # Dublin: events get a sealed city
    return await t.client.get(path, headers=headers, allow_redirects=False)


async def report(t: Tracker, message_id: str) -> dict[str, Any]:
    await t.flush()
    resp = await t.client.get(f"/api/v1/messages/{message_id}/report", headers=t.auth(Role.ANALYST))
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def first_value(store: Store, sql: str, *args: Any) -> bytes:
    return bytes((await store.fetch(sql, *args))[0][0])


def key_file(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"  # where the tracker fixture keeps its keys


@asynccontextmanager
async def serving(state: TrackerState, tokens: dict[Role, str]) -> AsyncIterator[Tracker]:
    server = TestServer(build_app(state))
    await server.start_server(**RUNNER_OPTIONS)  # type: ignore[arg-type]
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    try:
        yield Tracker(client=client, state=state, tokens=tokens)
    finally:
        await client.close()


@asynccontextmanager
async def restarted(old: Tracker, tmp_path: Path, db_url: str, geoip_path: str) -> AsyncIterator[Tracker]:
    """Stop a tracker and start a new one from the same files, as a rolling restart would."""
    await old.flush()
    await old.client.close()
    client, state = await start_tracker(tmp_path, db_url, geoip_path, keys=f"local:{key_file(tmp_path)}")
    try:
        yield Tracker(client=client, state=state, tokens=old.tokens)
    finally:
        await client.close()


@asynccontextmanager
async def with_keyring(
    t: Tracker, tmp_path: Path, db_url: str, geoip_path: str, keyring: Keyring
) -> AsyncIterator[Tracker]:
    """A tracker over the same database whose keyring is ``keyring`` instead of the key file's."""
    config = TrackerConfig(
        settings=tracker_settings(tmp_path), db=db_url, keys=f"local:{key_file(tmp_path)}", geoip=geoip_path,
        trusted_proxies="127.0.0.1/32",
    )  # fmt: skip
    state = dataclasses.replace(build_state(config), keyring=keyring)  # __post_init__ rebuilds sealer and tokens
    async with serving(state, t.tokens) as tracker:
        yield tracker


def retired(keyring: Keyring, version: int) -> Keyring:
    """``keyring`` with ``version``'s DEK destroyed: same token and index keys, a random DEK."""
    sets = []
    for v in keyring.versions:
        keys = keyring.get(v)
        assert keys is not None
        if v == version:
            keys = KeySet(version=v, dek=os.urandom(32), token_key=keys.token_key, index_key=keys.index_key)
        sets.append(keys)
    return Keyring(keyring.tenant_id, sets)


async def open_all(store: Store, sealer: Sealer) -> dict[tuple[str, str, tuple[Any, ...]], bytes]:
    """Every sealed value in the database, opened with its row's identity: (table, column, key) -> plaintext."""
    opened = {}
    for spec in sealed_tables(store):
        for row in await store.fetch(spec.page_sql(first=True), 10**9):
            key, identity, values = spec.split(row)
            for value, (column, field) in zip(values, spec.columns, strict=True):
                if value is not None:
                    opened[(spec.name, column, tuple(key))] = sealer.open(field, value, row=identity)
    return opened


async def open_everything(store: Store, sealer: Sealer) -> int:
    """Open every sealed value in the database; return how many there were."""
    return len(await open_all(store, sealer))


async def rewrite_in_legacy_format(store: Store, sealer: Sealer) -> int:
    """Re-seal every row-bound value without its row, as values were written before rows were bound
    (same key version, field-only associated data); return how many values were rewritten."""
    rewritten = 0
    for spec in sealed_tables(store):
        if spec.repeated:
            continue
        updates = []
        for row in await store.fetch(spec.page_sql(first=True), 10**9):
            key, identity, old = spec.split(row)
            new = [
                None if value is None else sealer.seal(field, sealer.open(field, value, row=identity))
                for value, (_, field) in zip(old, spec.columns, strict=True)
            ]
            rewritten += sum(value is not None for value in new)
            updates.append([*new, *key, *old])
        await store.executemany(spec.update_sql(), updates)
    assert await unbound_values(store) == rewritten
    return rewritten


async def test_old_tokens_still_count_and_new_data_uses_the_newest_version(
    tracker: Tracker, tmp_path: Path, db_url: str, geoip_path: str
) -> None:
    old_id, old_tokens = await register(tracker)
    for token in old_tokens[:3]:
        assert (await hit(tracker, f"/o/{token}.gif")).status == 200

    LocalKeyProvider(key_file(tmp_path)).rotate()
    async with restarted(tracker, tmp_path, db_url, geoip_path) as t2:
        assert t2.state.keyring.versions == [1, 2]
        for token in old_tokens[3:5]:  # last year's e-mail, opened today
            assert (await hit(t2, f"/o/{token}.gif")).status == 200
        click = await hit(t2, f"/c/{old_tokens[0]}/1")
        assert (click.status, click.headers["Location"]) == (302, POLICY_URL)
        new_id, new_tokens = await register(t2)
        await hit(t2, f"/o/{new_tokens[0]}.gif")

        rep = await report(t2, old_id)
        assert rep["opens"] == {"unique": 5, "total": 5} and rep["clicks"] == {"unique": 1, "total": 1}
        tokens = t2.state.tokens
        assert tokens.verify(old_tokens[0]).version == 1  # type: ignore[union-attr]
        assert tokens.verify(new_tokens[0]).version == 2  # type: ignore[union-attr]

        store = t2.state.store
        version_of = Sealer.version_of
        for message_id, version in ((old_id, 1), (new_id, 2)):
            assert version_of(await first_value(store, "SELECT subject FROM messages WHERE id = $1", message_id)) == (
                version
            )
            email = await first_value(store, "SELECT email FROM recipients WHERE message_id = $1", message_id)
            assert version_of(email) == version
            url = await first_value(store, "SELECT url FROM links WHERE message_id = $1 AND link_no = 1", message_id)
            assert version_of(url) == version
        cities = {Sealer.version_of(bytes(r[0])) for r in await store.fetch("SELECT city FROM events")}
        assert cities == {1, 2}  # sealed before and after the restart
        assert set(await sealed_versions(store)) == {1, 2}


async def test_reseal_moves_everything_to_the_newest_version_and_the_old_dek_can_be_retired(
    tracker: Tracker, tmp_path: Path, db_url: str, geoip_path: str
) -> None:
    old_id, old_tokens = await register(tracker)
    for token in old_tokens[:3]:
        await hit(tracker, f"/o/{token}.gif")
    # NULLs beside stale values: no name or attributes; a place without a region (Singapore).
    sparse = message_body(12)
    sparse["recipients"][0] = {"email": "no.name@example.com"}
    resp = await tracker.client.post("/api/v1/messages", json=sparse, headers=tracker.auth(Role.SENDER))
    sparse_token = (await resp.json())["recipients"][0]["token"]
    singapore = {"User-Agent": UA_IPHONE_MAIL, "X-Forwarded-For": SAMPLE_ADDRESSES["Singapore"]}
    assert (await tracker.client.get(f"/o/{sparse_token}.gif", headers=singapore)).status == 200
    await tracker.flush()
    assert (await report(tracker, old_id))["opens"]["unique"] == 3  # PostgreSQL: cities copied into figures

    LocalKeyProvider(key_file(tmp_path)).rotate()
    async with restarted(tracker, tmp_path, db_url, geoip_path) as t2:
        _, new_tokens = await register(t2)
        await hit(t2, f"/o/{new_tokens[0]}.gif")
        await t2.flush()
        store, keyring = t2.state.store, t2.state.keyring
        before = await sealed_versions(store)
        assert set(before) == {1, 2}
        without_v1 = retired(keyring, 1)
        with pytest.raises(SealError):  # the check below means something: v1 rows need v1's DEK
            await open_everything(store, Sealer(without_v1))

        result = await reseal(store, keyring, batch=5)

        total = before[1] + before[2]
        assert await sealed_versions(store) == {2: total}
        assert result.versions_remaining == {2: total}
        assert result.values_resealed == before[1]
        assert result.retirable == [1]
        assert result.unreadable == 0
        assert result.values_bound == 0 and result.unbound_remaining == 0  # registration already binds rows
        assert {t.table: t.versions_remaining for t in result.tables}["events"] == {2: 9}  # Singapore: no region
        assert (await audit.verify_chain(store, keyring)).ok
        assert (await store.fetch("SELECT action, outcome FROM audit ORDER BY id DESC LIMIT 1"))[0] == (
            "key.reseal", "ok",
        )  # fmt: skip

    # Version 1's DEK destroyed; its token key kept: everything opens and old beacons still count.
    async with with_keyring(tracker, tmp_path, db_url, geoip_path, without_v1) as t3:
        assert await open_everything(t3.state.store, t3.state.sealer) == total
        assert (await hit(t3, f"/o/{old_tokens[5]}.gif")).status == 200
        click = await hit(t3, f"/c/{old_tokens[6]}/1")
        assert (click.status, click.headers["Location"]) == (302, POLICY_URL)
        rep = await report(t3, old_id)
        assert rep["opens"]["unique"] == 4 and rep["clicks"]["unique"] == 1
        sealer, store = t3.state.sealer, t3.state.store
        subject = await first_value(store, "SELECT subject FROM messages WHERE id = $1", old_id)
        assert sealer.open_text("message.subject", subject, row=old_id) == message_body(1)["subject"]
        emails = [
            sealer.open_text("recipient.email", bytes(r[0]), row=recipient_row(old_id, bytes(r[1])))
            for r in await store.fetch("SELECT email, email_index FROM recipients WHERE message_id = $1", old_id)
        ]
        assert sorted(emails) == [r["email"] for r in message_body(12)["recipients"]]


async def test_reseal_resumes_after_an_interruption_and_a_rerun_changes_nothing(
    tracker: Tracker, tmp_path: Path
) -> None:
    for _ in range(2):
        _, tokens = await register(tracker)
        for token in tokens[:4]:
            await hit(tracker, f"/o/{token}.gif")
    await tracker.flush()
    store = tracker.state.store
    keyring = Keyring("acme", LocalKeyProvider(key_file(tmp_path)).rotate())
    before = await sealed_versions(store)

    class Interrupted(Exception):
        pass

    def stop_after_first_page(p: ResealProgress) -> None:
        raise Interrupted(p.table)

    with pytest.raises(Interrupted, match="messages"):
        await reseal(store, keyring, batch=5, progress=stop_after_first_page)
    assert await sealed_versions(store, "messages") == {2: 8}  # the first page (both messages) is committed
    assert await sealed_versions(store, "recipients") == {1: 2 * 12 * 3}

    pages: list[ResealProgress] = []
    resumed = await reseal(store, keyring, batch=5, progress=pages.append)
    assert await sealed_versions(store) == {2: before[1]}
    by_table = {t.table: t for t in resumed.tables}
    assert by_table["messages"].rows_scanned == 2 and by_table["messages"].rows_resealed == 0  # done before
    assert by_table["recipients"].rows_resealed == 24
    assert resumed.values_resealed == before[1] - 8
    assert len([p for p in pages if p.table == "recipients"]) == 5  # 24 rows, 5 at a time

    again = await reseal(store, keyring, batch=5)
    assert again.values_resealed == 0 and again.rows_scanned == resumed.rows_scanned
    assert again.retirable == [1]


def test_reseal_rewrites_a_value_under_an_old_version_or_not_bound_to_its_row_except_shared_places() -> None:
    sealer = Sealer(Keyring("acme", [KeySet(1, os.urandom(32), os.urandom(32), os.urandom(32))]))
    bound, legacy = sealer.seal("link.url", b"u", row="msg_a/1"), sealer.seal("link.url", b"u")
    assert not needs_reseal(bound, 1, repeated=False)
    assert needs_reseal(bound, 2, repeated=False)  # after a rotation
    assert needs_reseal(legacy, 1, repeated=False)  # written before rows were bound
    assert not needs_reseal(legacy, 1, repeated=True)  # a city: one ciphertext for many rows, never bound
    assert needs_reseal(legacy, 2, repeated=True)
    with pytest.raises(SealError):
        needs_reseal(b"\x00", 1, repeated=False)


async def test_reseal_binds_legacy_values_to_their_row_and_an_interrupted_run_finishes_cleanly(
    tracker: Tracker,
) -> None:
    for _ in range(2):
        _, tokens = await register(tracker)
        for token in tokens[:4]:
            await hit(tracker, f"/o/{token}.gif")
    await tracker.flush()
    store, keyring = tracker.state.store, tracker.state.keyring
    legacy = await rewrite_in_legacy_format(store, tracker.state.sealer)
    assert legacy == 2 * (4 + 12 * 3 + 12 + 4)
    places = await sealed_heads(store, "events")
    before = await open_all(store, tracker.state.sealer)

    def stop_after_first_page(p: ResealProgress) -> None:
        raise RuntimeError(p.table)

    with pytest.raises(RuntimeError, match="messages"):
        await reseal(store, keyring, batch=5, progress=stop_after_first_page)
    assert await sealed_heads(store, "messages") == {(1, True): 8}  # the first page is committed, bound
    assert await unbound_values(store) == legacy - 8

    resumed = await reseal(store, keyring, batch=5)
    assert resumed.values_bound == resumed.values_resealed == legacy - 8
    assert resumed.unbound_remaining == 0 and await unbound_values(store) == 0
    assert resumed.retirable == [] and resumed.unreadable == 0
    assert await sealed_heads(store, "events") == places  # shared places stay as they are
    assert await open_all(store, tracker.state.sealer) == before  # every table's values round-trip
    detail = (await store.fetch("SELECT detail FROM audit ORDER BY id DESC LIMIT 1"))[0][0]
    assert f"bound={legacy - 8}" in detail and "unbound=0" in detail

    again = await reseal(store, keyring, batch=5)
    assert again.values_resealed == again.values_bound == 0 and again.rows_scanned == resumed.rows_scanned


async def test_rotation_then_reseal_moves_legacy_values_to_the_new_version_bound_to_their_row(
    tracker: Tracker, tmp_path: Path
) -> None:
    message_id, tokens = await register(tracker)
    await hit(tracker, f"/o/{tokens[0]}.gif")
    await tracker.flush()
    store = tracker.state.store
    legacy = await rewrite_in_legacy_format(store, tracker.state.sealer)
    before = await open_all(store, tracker.state.sealer)
    keyring = Keyring("acme", LocalKeyProvider(key_file(tmp_path)).rotate())

    result = await reseal(store, keyring, batch=7)

    assert result.values_bound == legacy and result.values_resealed == legacy + 2  # + the event's city and region
    assert await sealed_heads(store) == {(2, False): 2, (2, True): legacy}
    assert result.retirable == [1]
    without_v1 = Sealer(retired(keyring, 1))
    assert await open_all(store, without_v1) == before
    subject = await first_value(store, "SELECT subject FROM messages WHERE id = $1", message_id)
    with pytest.raises(SealError, match="bound to its row"):
        without_v1.open("message.subject", subject)


class RectifiesDuringReseal:
    """A store that, just before reseal's first write, has someone else rewrite one recipient's name."""

    def __init__(self, inner: Store, sealer: Sealer) -> None:
        self.inner = inner
        self.sealer = sealer
        self.rectified: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def executemany(self, sql: str, rows: Any) -> None:
        if self.rectified is None and sql.startswith("UPDATE recipients"):
            self.rectified = int(rows[0][3])  # the key of the first row about to be written
            [(message_id, email_index)] = await self.inner.fetch(
                "SELECT message_id, email_index FROM recipients WHERE id = $1", self.rectified
            )
            row = recipient_row(message_id, bytes(email_index))
            name = self.sealer.seal_text("recipient.name", "Rectified Name", row=row)
            await self.inner.execute("UPDATE recipients SET name = $1 WHERE id = $2", name, self.rectified)
        await self.inner.executemany(sql, rows)


async def test_reseal_never_overwrites_a_value_changed_meanwhile(tracker: Tracker, tmp_path: Path) -> None:
    await register(tracker)
    keyring = Keyring("acme", LocalKeyProvider(key_file(tmp_path)).rotate())
    sealer = Sealer(keyring)
    store = RectifiesDuringReseal(tracker.state.store, sealer)

    result = await reseal(store, keyring, batch=5)  # type: ignore[arg-type]

    assert store.rectified is not None
    [(name, message_id, email_index)] = await tracker.state.store.fetch(
        "SELECT name, message_id, email_index FROM recipients WHERE id = $1", store.rectified
    )
    row = recipient_row(message_id, bytes(email_index))
    assert sealer.open_text("recipient.name", bytes(name), row=row) == "Rectified Name"  # not the old name resealed
    by_table = {t.table: t for t in result.tables}
    assert by_table["recipients"].versions_remaining == {1: 2, 2: 34}  # the skipped row's email and attributes
    again = await reseal(tracker.state.store, keyring, batch=5)
    assert again.versions_remaining == {2: sum(result.versions_remaining.values())}


# -- the commands ----------------------------------------------------------------------------------
async def test_keys_rotate_command_prints_the_new_version_and_audits_it(
    tracker: Tracker, tmp_path: Path, db_url: str
) -> None:
    out = io.StringIO()
    keys = f"local:{key_file(tmp_path)}"
    assert await asyncio.to_thread(rotate_keys, db_url, keys, tracker.state.settings, out=out) == 0
    assert out.getvalue() == "2\n"
    assert [k.version for k in LocalKeyProvider(key_file(tmp_path)).load()] == [1, 2]
    store = tracker.state.store
    rows = await store.fetch("SELECT action, outcome, detail, key_version FROM audit ORDER BY id DESC LIMIT 1")
    assert rows[0] == ("key.rotate", "ok", "version=2", 2)
    # The running tracker loaded its keys at start: it still seals with version 1 until restarted.
    message_id, _ = await register(tracker)
    assert Sealer.version_of(await first_value(store, "SELECT subject FROM messages WHERE id = $1", message_id)) == 1


@pytest.mark.parametrize("command", [rotate_keys, run_reseal])
async def test_key_commands_without_a_key_file_refuse_and_create_none(
    tracker: Tracker, tmp_path: Path, db_url: str, command: Any
) -> None:
    missing = tmp_path / "elsewhere" / "keys.json"
    with pytest.raises(KeyMaterialError, match="no key file"):
        await asyncio.to_thread(command, db_url, f"local:{missing}", tracker.state.settings, out=io.StringIO())
    assert not missing.exists()


async def test_reseal_command_reports_progress_and_the_retirable_version(
    tracker: Tracker, tmp_path: Path, db_url: str
) -> None:
    await register(tracker)
    legacy = await rewrite_in_legacy_format(tracker.state.store, tracker.state.sealer)
    keys, settings = f"local:{key_file(tmp_path)}", tracker.state.settings
    assert await asyncio.to_thread(rotate_keys, db_url, keys, settings, out=io.StringIO()) == 0

    out = io.StringIO()
    code = await asyncio.to_thread(run_reseal, db_url, keys, settings, batch=5, out=out, progress_every=0)
    text = out.getvalue()
    assert code == 0
    assert "reseal: recipients: 5 rows scanned" in text  # a progress line per page with progress_every=0
    assert "reseal: recipients: 12 rows scanned, 12 resealed; now v2=36" in text
    assert "version 1 seals no value any more: its DEK can be retired" in text
    assert f"resealed under version 2 (bound {legacy} legacy values to their row)" in text
    assert "still not bound" not in text
    assert await sealed_versions(tracker.state.store) == {2: 4 + 12 * 3 + 12 + 4}
