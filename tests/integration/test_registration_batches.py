"""A message of many recipients is read, sealed and stored batch by batch, in one transaction: every
recipient and record stored exactly once, nothing at all when it fails midway, the same answers
and the same errors as a message read whole."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from politetenant.crypto import blind_index, recipient_row
from politetenant.tracker.http.auth import Role
from politetenant.tracker.messages import registration
from politetenant.tracker.messages.api_messages import describe_validation_error
from politetenant.tracker.messages.api_models import MessageIn, MessageOut, split_body
from politetenant.tracker.messages.registration import BATCH_ROWS
from politetenant.tracker.storage.base import MessageWriter, StorageUnavailable
from politetenant.tracker.storage.rows import LinkRow, MessageRow, RecipientRow
from politetenant.tracker.storage.sqlite import SqliteStore
from tests.conftest import Tracker
from tests.support import message_body

MANY = 2 * BATCH_ROWS + 2_001  # two full batches and a partial one
TABLES = ("messages", "recipients", "records", "links")


async def post(t: Tracker, body: dict[str, Any]) -> Any:
    headers = {**t.auth(Role.SENDER), "Content-Type": "application/json"}
    return await t.client.post("/api/v1/messages", data=json.dumps(body), headers=headers)


async def counts(t: Tracker) -> dict[str, int]:
    return {table: await t.state.store.count_rows(table) for table in TABLES}


def record_ids_of(t: Tracker, tokens: Sequence[str | None]) -> list[bytes]:
    ids = []
    for token in tokens:
        assert token is not None
        verified = t.state.tokens.verify(token)
        assert verified is not None
        ids.append(verified.record_id)
    return ids


@pytest.mark.settings(segment_attributes=("department",), min_segment_size=5)
@pytest.mark.parametrize("mode", ["individual", "anonymous"])
async def test_every_recipient_and_record_is_stored_exactly_once(tracker: Tracker, mode: str) -> None:
    body = message_body(MANY, mode=mode)
    resp = await post(tracker, body)
    assert resp.status == 201, await resp.text()
    out = await resp.json()
    emails = [r["email"] for r in body["recipients"]]
    assert [r["email"] for r in out["recipients"]] == emails
    record_ids = record_ids_of(tracker, [r["token"] for r in out["recipients"]])
    assert len(set(record_ids)) == MANY
    assert await counts(tracker) == {"messages": 1, "recipients": MANY, "records": MANY, "links": 3}

    store, sealer, keyring = tracker.state.store, tracker.state.sealer, tracker.state.keyring
    records = {
        bytes(r[0]): (r[1], r[2])
        for r in await store.fetch("SELECT id, attributes, subject_index FROM records WHERE message_id = $1", out["id"])
    }
    assert set(records) == set(record_ids)
    for position, record_id in enumerate(record_ids):
        sealed, pseudonym = records[record_id]
        # The record each token names is this recipient's: its department, and (individual) its pseudonym.
        kept = json.loads(sealer.open("record.attributes", bytes(sealed), row=record_id))
        assert kept == body["recipients"][position]["attributes"]
        if mode == "individual":
            assert bytes(pseudonym) == blind_index(keyring, emails[position])
        else:
            assert pseudonym is None
    rows = await store.fetch("SELECT email_index, email FROM recipients WHERE message_id = $1", out["id"])
    opened = [sealer.open_text("recipient.email", bytes(e), row=recipient_row(out["id"], bytes(i))) for i, e in rows]
    assert sorted(opened) == sorted(emails)


@pytest.mark.parametrize("failing_batch", [1, 3])
async def test_a_failure_midway_stores_nothing(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch, failing_batch: int
) -> None:
    store = tracker.state.store
    real_writer = store.message_writer
    added: list[int] = []

    @contextlib.asynccontextmanager
    async def failing_writer(message: MessageRow, links: Sequence[LinkRow]) -> AsyncIterator[MessageWriter]:
        async with real_writer(message, links) as writer:
            add = writer.add_recipients

            async def add_then_fail(rows: Sequence[RecipientRow]) -> None:
                await add(rows)  # the rows reach the open transaction, then the database goes away
                added.append(len(rows))
                if len(added) == failing_batch:
                    raise StorageUnavailable("the database went away")

            monkeypatch.setattr(writer, "add_recipients", add_then_fail)
            yield writer

    monkeypatch.setattr(store, "message_writer", failing_writer)
    resp = await post(tracker, message_body(MANY))
    assert resp.status == 503, await resp.text()
    assert sum(added) > 0  # it did fail midway, with rows written
    assert await counts(tracker) == dict.fromkeys(TABLES, 0)

    monkeypatch.undo()  # the store is usable again: no transaction was left open
    resp = await post(tracker, message_body(10))
    assert resp.status == 201
    assert await counts(tracker) == {"messages": 1, "recipients": 10, "records": 10, "links": 3}


async def test_a_bad_recipient_in_a_later_batch_is_named_as_pydantic_names_it(tracker: Tracker) -> None:
    body = message_body(MANY)
    body["recipients"][BATCH_ROWS + 17]["email"] = "not-an-address"
    body["recipients"][MANY - 1]["attributes"] = {"Bad Key!": "x"}
    body["surprise"] = True
    resp = await post(tracker, body)
    assert resp.status == 422
    err = await resp.json()
    assert f"recipients.{BATCH_ROWS + 17}.email" in err["message"]
    assert f"recipients.{MANY - 1}.attributes" in err["message"]
    assert "not-an-address" not in err["message"]
    with pytest.raises(ValidationError) as whole:
        MessageIn.model_validate_json(json.dumps(body))
    assert (err["error"], err["message"]) == describe_validation_error(whole.value)
    assert await counts(tracker) == dict.fromkeys(TABLES, 0)


async def test_the_answer_is_the_documented_json_byte_for_byte(tracker: Tracker) -> None:
    body = message_body(2 * BATCH_ROWS + 3)
    body["recipients"][4] = {"email": "  zoë.ünïcode@exämple.com ", "name": 'Zoë "Q" Ünïcode'}
    body["recipients"][BATCH_ROWS + 1]["email"] = "back\\slash@example.com"
    resp = await post(tracker, body)
    raw = await resp.read()
    assert raw == MessageOut.model_validate_json(raw).model_dump_json(exclude={"html_untracked"}).encode()
    assert json.loads(raw)["recipients"][4]["email"] == "zoë.ünïcode@exämple.com"  # stripped, as validated

    objector = body["recipients"][BATCH_ROWS + 1]["email"]
    await tracker.state.store.add_objection(blind_index(tracker.state.keyring, objector), int(time.time() * 1000))
    resp = await post(tracker, body)
    raw = await resp.read()
    out = MessageOut.model_validate_json(raw)
    assert raw == out.model_dump_json().encode()
    assert out.html_untracked == body["html"]
    assert [r.email for r in out.recipients if r.token is None] == [objector]


async def test_anonymous_records_are_shuffled_over_the_whole_message(tracker: Tracker) -> None:
    resp = await post(tracker, message_body(MANY, mode="anonymous"))
    out = await resp.json()
    position_of = {rid: p for p, rid in enumerate(record_ids_of(tracker, [r["token"] for r in out["recipients"]]))}
    order = "rowid" if tracker.state.store.url_scheme == "sqlite" else "ctid"
    stored = await tracker.state.store.fetch(
        f"SELECT id FROM records WHERE message_id = $1 ORDER BY {order}", out["id"]
    )
    positions = [position_of[bytes(r[0])] for r in stored]
    assert sorted(positions) == list(range(MANY))
    # Shuffled batch by batch, the first batch stored would hold only the first batch's recipients.
    later = sum(p >= BATCH_ROWS for p in positions[:BATCH_ROWS])
    assert later > BATCH_ROWS * (MANY - BATCH_ROWS) / MANY * 0.9
    # And storage order says nothing of request order (a rank correlation near 0, not near 1).
    mean = (MANY - 1) / 2
    covariance = sum((s - mean) * (p - mean) for s, p in enumerate(positions))
    variance = sum((s - mean) ** 2 for s in range(MANY))
    assert abs(covariance / variance) < 0.1


def test_a_body_is_cut_into_runs_of_whole_recipients() -> None:
    raw = '{"a": 1, "recipients": [{"email": "é@x"}, {"email":"b@x"} , 3 ,4,5], "z": [1]}'.encode()
    split = split_body(raw, 2)
    assert split is not None
    assert split.count == 5
    assert [raw[start:end] for start, end in split.batches] == [
        '{"email": "é@x"}, {"email":"b@x"}'.encode(),
        b"3 ,4",
        b"5",
    ]
    assert json.loads(split.envelope) == {"a": 1, "recipients": [{"email": "é@x"}], "z": [1]}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"recipients": []}',
        b'{"recipients": [1], "recipients": [2]}',
        b'{"recipients": [1]} trailing',
        b'{"recipients": [1,]}',
        b'{"recipients": "everyone"}',
        b'{"subject": "no recipients"}',
        b"[1]",
        b"\xff\xfe{}",
        b'{"recipients": [1}',
    ],
)
def test_a_body_that_cannot_be_cut_is_left_to_pydantic_whole(raw: bytes) -> None:
    assert split_body(raw, 2) is None


@pytest.mark.parametrize("objection_list", ["read whole", "asked batch by batch"])
async def test_objectors_anywhere_in_a_big_message_get_no_token_and_no_record(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch, objection_list: str
) -> None:
    if objection_list == "asked batch by batch":
        monkeypatch.setattr(registration, "_LIST_WHOLE", 1)  # a list longer than this is asked per batch
    body = message_body(MANY)
    listed = [3, BATCH_ROWS + 4, MANY - 1]
    body["recipients"].append(dict(body["recipients"][BATCH_ROWS + 4]))  # the same address twice
    now = int(time.time() * 1000)
    for position in listed:
        index = blind_index(tracker.state.keyring, body["recipients"][position]["email"])
        await tracker.state.store.add_objection(index, now)
    resp = await post(tracker, body)
    assert resp.status == 201
    tokens = [r["token"] for r in (await resp.json())["recipients"]]
    assert [p for p, token in enumerate(tokens) if token is None] == [*listed, MANY]
    assert await tracker.state.store.count_rows("records") == MANY + 1 - 4
    assert await tracker.state.store.count_rows("recipients") == MANY + 1
    # The message's row went in before anyone's objection was known; its counts are the final ones.
    assert await tracker.state.store.fetch("SELECT recipients, tracked FROM messages") == [(MANY + 1, MANY + 1 - 4)]


async def test_the_answer_is_sent_with_the_headers_of_a_whole_json_response(tracker: Tracker) -> None:
    """Written a piece at a time, the answer still says its type and length up front, and is not cached."""
    resp = await post(tracker, message_body(BATCH_ROWS + 3))
    raw = await resp.read()
    assert resp.status == 201
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Content-Length"] == str(len(raw))
    assert resp.headers["Cache-Control"] == "no-store"
    assert "Transfer-Encoding" not in resp.headers
    assert len(json.loads(raw)["recipients"]) == BATCH_ROWS + 3


async def test_a_big_message_on_sqlite_reaches_the_database_file_after_its_answer(tmp_path: Path) -> None:
    """Its commit leaves copying the write-ahead log into the database for after the answer (some 40 MB
    for 100,000 recipients would hold the sender up); the copy still happens, on the message's own
    thread, so the log does not wait for the next writer."""
    path = tmp_path / "tracker.db"
    store = SqliteStore(str(path))
    await store.connect()
    await store.migrate()
    try:
        before = path.stat().st_size
        message = MessageRow("msg_0123456789abcdef0123", 1, "individual", b"s", b"f", b"e", b"l", 5_000, 5_000, 1,
                             None, 0, "tok")  # fmt: skip
        rows = [RecipientRow(message.id, os.urandom(32), os.urandom(200), None, None) for _ in range(5_000)]
        async with store.message_writer(message, []) as writer:
            await writer.add_recipients(rows)
        for _ in range(400):
            if not any(thread.name.startswith("sqlite-message") for thread in threading.enumerate()):
                break
            await asyncio.sleep(0.05)
        assert path.stat().st_size > before + len(rows) * 232  # the rows are in the file, not only the log
        assert await store.count_rows("recipients") == len(rows)
    finally:
        await store.close()
