"""The bulk paths a big message takes: recipients packed between the two passes, values sealed and
tokens issued a batch at a time, HMACs pre-keyed, SQLite rows inserted many to a statement. Each must
give what the one-at-a-time path gives (the formats on disk and in URLs are contracts)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import sqlite3
from pathlib import Path

import pytest

from politetenant.crypto import Keyring, KeySet, Sealer, TokenCodec, blind_index, recipient_row
from politetenant.crypto.keys import PrekeyedHmac
from politetenant.crypto.sealing import ROW_BOUND
from politetenant.tracker.messages import packing
from politetenant.tracker.messages.api_models import RecipientIn
from politetenant.tracker.messages.packing import AttributeEncoder, Census, PackedRecipients
from politetenant.tracker.storage import sqlite as sqlite_store
from politetenant.tracker.storage.rows import LinkRow, MessageRow, RecipientRow, RecordRow
from politetenant.tracker.storage.sqlite import SqliteStore


def keyring(versions: int = 1) -> Keyring:
    sets = [KeySet(v, os.urandom(32), os.urandom(32), os.urandom(32)) for v in range(1, versions + 1)]
    return Keyring("acme", sets)


@pytest.mark.parametrize("key", [b"", b"k" * 32, os.urandom(64), os.urandom(100)])
@pytest.mark.parametrize("context", [b"", b"politetenant/token/acme\x00"])
def test_a_prekeyed_hmac_is_hmac_sha256_of_context_and_message(key: bytes, context: bytes) -> None:
    mac = PrekeyedHmac(key, context)
    for message in (b"", b"x", os.urandom(14), os.urandom(200)):
        assert mac.digest(message) == hmac.new(key, context + message, hashlib.sha256).digest()
    assert "k" * 8 not in repr(mac)


def test_sealed_rows_open_one_by_one_for_their_own_row_only() -> None:
    sealer = Sealer(keyring())
    values = [b"a@example.com", None, "Zoë".encode(), b""]
    rows = [recipient_row("msg_1", bytes([i]) * 32) for i in range(len(values))]
    sealed = sealer.seal_rows("recipient.name", values, [row.encode() for row in rows])
    assert sealed[1] is None
    for value, row, out in zip(values, rows, sealed, strict=True):
        if value is not None:
            assert out is not None
            assert Sealer.head_of(out[:2]) == (1, True)  # the one-by-one format: version, row-bound
            assert sealer.open("recipient.name", out, row=row) == value
    other = sealed[0]
    assert other is not None
    with pytest.raises(Exception, match="does not open"):
        sealer.open("recipient.name", other, row=rows[2])
    nonces = {out[2:14] for out in sealed if out is not None}
    assert len(nonces) == 3  # each value its own nonce


def test_sealing_rows_refuses_a_version_that_cannot_carry_the_row_bit() -> None:
    sealer = Sealer(Keyring("acme", [KeySet(ROW_BOUND, os.urandom(32), os.urandom(32), os.urandom(32))]))
    with pytest.raises(Exception, match="cannot seal a row-bound value"):
        sealer.seal_rows("recipient.email", [b"a@example.com"], [b"msg_1/00"])


def test_tokens_issued_in_bulk_are_the_tokens_issued_one_by_one() -> None:
    codec = TokenCodec(keyring(2))
    ids = [os.urandom(12) for _ in range(50)]
    assert codec.issue_many(ids) == [codec.issue(record_id) for record_id in ids]
    for record_id, token in zip(ids, codec.issue_many(ids), strict=True):
        verified = codec.verify(token)
        assert verified is not None
        assert (verified.version, verified.record_id) == (2, record_id)
    with pytest.raises(ValueError, match="12 bytes"):
        codec.issue_many([os.urandom(12), os.urandom(11)])


def test_the_census_indexes_every_loaded_version_as_blind_index_does() -> None:
    keys = keyring(2)
    census = Census(keys, ["department"])
    recipients = [RecipientIn(email=f" Person{i}@Example.COM ", attributes={"department": "x"}) for i in range(3)]
    for recipient in recipients:
        census.add(recipient)
    for position, recipient in enumerate(recipients):
        expected = [blind_index(keys, recipient.email, 2), blind_index(keys, recipient.email, 1)]
        assert census.all_indexes(position) == expected


def recipient(i: int, **fields: object) -> RecipientIn:
    return RecipientIn.model_validate({"email": f"p{i}@example.com", **fields})


def test_packed_recipients_give_back_each_field_as_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packing, "_SHARED_MOST", 2)  # the third distinct map is kept in place
    given = [
        recipient(0, name="Zoë Ünïcode", attributes={"department": "Finance", "site": "Dublin"}),
        recipient(1),
        recipient(2, name="", attributes={"site": "Dublin", "department": "Finance"}),  # same map, other order
        recipient(3, name="N", attributes={"department": "Sales"}),
        recipient(4, attributes={"department": "Legal " + "x" * 150}),  # past _SHARED_MOST: in place
        recipient(5, name="Ö" * 200, attributes={"department": "Sales"}),
        recipient(6, attributes={"department": "Ops"}),
    ]
    packed = PackedRecipients(chunk=3)
    for r in given:
        packed.add(r)
    assert packed.count == len(given)
    encode = AttributeEncoder()
    got = [packed.batch(number) for number in range(3)]
    emails = [e for batch in got for e in batch[0]]
    names = [n for batch in got for n in batch[1]]
    attributes = [a for batch in got for a in batch[2]]
    assert emails == [r.email.encode() for r in given]
    assert names == [None if r.name is None else r.name.encode() for r in given]
    assert attributes == [encode(r.attributes) for r in given]
    assert [len(batch[0]) for batch in got] == [3, 3, 1]


def test_packed_recipients_keep_nothing_past_the_limit() -> None:
    packed = PackedRecipients(limit=2, chunk=5)
    for i in range(4):
        packed.add(recipient(i, name="x" * 50))
    assert packed.count == 2
    assert packed.batch(0)[0] == [b"p0@example.com", b"p1@example.com"]


def test_sqlite_stores_a_batch_over_several_statements_once_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_ROWS_PER_INSERT", 7)
    message = MessageRow("msg_1", 1, "anonymous", b"s", b"f", b"e", b"l", 30, 30, 1, None, 0, "tok")
    recipients = [RecipientRow("msg_1", os.urandom(32), os.urandom(30), None, b"a") for _ in range(30)]
    records = sorted(RecordRow(os.urandom(12), "msg_1", os.urandom(20), None) for _ in range(30))

    async def store_them() -> None:
        store = SqliteStore(str(tmp_path / "t.db"))
        await store.connect()
        await store.migrate()
        try:
            async with store.message_writer(message, [LinkRow("msg_1", 0, None, None)]) as writer:
                assert writer.overlaps  # batches are stored while the next is built
                await writer.add_records(records[:20])
                await writer.add_recipients(recipients)
                await writer.add_records(records[20:])
        finally:
            await store.close()

    asyncio.run(store_them())
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("SELECT message_id, email_index, email, name, attributes FROM recipients").fetchall() == [
        tuple(r) for r in recipients
    ]
    assert conn.execute("SELECT id, message_id, attributes, subject_index FROM records ORDER BY rowid").fetchall() == [
        tuple(r) for r in records
    ]
