"""After a demo-like run, neither database holds a client IP, user agent or personal field in plaintext.

The databases are dumped byte for byte (the SQLite files including the WAL, and pg_dump of the
PostgreSQL database); every needle is searched as text and as the hex form a bytea dump would show.
A sealed value copied into another row of its column (a link URL moved to another message) does not
open either: values are bound to their row, and ``reseal`` binds the ones written before that.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from politetenant.crypto import RowId, Sealer, SealError, link_row, recipient_row
from politetenant.tracker.cli.geoip_sample import SAMPLE_ADDRESSES
from politetenant.tracker.http.auth import Role
from politetenant.tracker.privacy.reseal import reseal, unbound_values
from politetenant.tracker.storage.base import Store
from tests.conftest import Tracker
from tests.integration.test_key_versions import open_all, rewrite_in_legacy_format
from tests.support import UA_CHROME, UA_IPHONE_MAIL, UA_OUTLOOK, UA_SCANNER, message_body

IPS = [
    SAMPLE_ADDRESSES["Dublin"],
    SAMPLE_ADDRESSES["Berlin"],
    SAMPLE_ADDRESSES["Sydney"],
    "2001:db8:1::77",
    "203.0.113.201",
]
AGENTS = [UA_IPHONE_MAIL, UA_OUTLOOK, UA_CHROME, UA_SCANNER]


def _pg_dump(dsn: str) -> bytes:
    binary = shutil.which("pg_dump") or sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1]
    return subprocess.run([binary, "--no-owner", dsn], check=True, capture_output=True, timeout=60).stdout


def _sqlite_bytes(db_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(db_path.parent.glob(db_path.name + "*")))


async def _demo_like_run(t: Tracker) -> dict:
    body = message_body(25, departments=3)
    body["recipients"][0]["attributes"]["manager"] = "Siobhan O'Rourke"
    resp = await t.client.post("/api/v1/messages", json=body, headers=t.auth(Role.SENDER))
    assert resp.status == 201
    out = await resp.json()
    tokens = [r["token"] for r in out["recipients"]]
    for i, token in enumerate(tokens[:20]):
        headers = {"User-Agent": AGENTS[i % len(AGENTS)], "X-Forwarded-For": IPS[i % len(IPS)]}
        assert (await t.client.get(f"/o/{token}.gif", headers=headers)).status == 200
        assert (await t.client.get(f"/c/{token}/{1 + i % 2}", headers=headers, allow_redirects=False)).status == 302
    reader = await t.client.get(f"/t/{tokens[0]}.gif", headers={"User-Agent": UA_OUTLOOK, "X-Forwarded-For": IPS[0]})
    await reader.content.read(6)
    await asyncio.sleep(0.5)
    reader.close()
    for _ in range(40):
        if t.state.read_streams == 0:
            break
        await asyncio.sleep(0.1)
    await t.flush()
    report = await t.client.get(f"/api/v1/messages/{out['id']}/report", headers=t.auth(Role.ANALYST))
    assert (await report.json())["opens"]["total"] == 12  # 8 scanner hits (agent or network) apart
    return body


def _needles(body: dict) -> list[str]:
    needles = [*IPS, "Mozilla/5.0", "iPhone OS 17_4", "Microsoft Outlook 16.0", "Barracuda Sentinel"]
    needles += [body["subject"], body["from_name"], body["from_email"], body["list_name"]]
    needles += ["intranet.example.com", "hr.example.com/faq", "new policy"]  # link URLs and texts
    needles += ["Siobhan O'Rourke", "Engineering", "Finance"]  # HR attributes
    needles += ["Dublin", "Berlin", "Sydney"]  # cities
    for r in body["recipients"]:
        needles += [r["email"], r["name"]]
    return needles


def _assert_absent(dump: bytes, needles: list[str]) -> None:
    lowered = dump.lower()
    found = []
    for needle in needles:
        raw = needle.encode()
        if raw.lower() in lowered or raw.hex().encode() in lowered:
            found.append(needle)
    assert not found, f"plaintext at rest: {found[:10]}"


@pytest.mark.settings(scanner_window_seconds=0)
async def test_no_ip_user_agent_or_personal_field_in_plaintext_at_rest(
    tracker: Tracker, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = await _demo_like_run(tracker)
    if db_url.startswith("sqlite:///"):
        dump = _sqlite_bytes(Path(db_url[len("sqlite:///") :]))
    else:
        dump = _pg_dump(db_url)
    assert len(dump) > 10_000  # the dump really holds the run
    assert b"events" in dump
    _assert_absent(dump, _needles(body))
    spool_dir = Path(tracker.state.settings.spool_dir)
    _assert_absent(b"".join(p.read_bytes() for p in spool_dir.glob("*")), _needles(body))
    _assert_absent(caplog.text.encode(), _needles(body))


async def test_the_search_would_find_plaintext_if_it_were_there(tracker: Tracker, db_url: str) -> None:
    """Guards the test above: a plaintext value written to the same database is found by the same search."""
    body = await _demo_like_run(tracker)
    store = tracker.state.store
    await store.add_objection(body["recipients"][3]["email"].encode(), 0)  # deliberately unsealed
    dump = _sqlite_bytes(Path(db_url[len("sqlite:///") :])) if db_url.startswith("sqlite") else _pg_dump(db_url)
    with pytest.raises(AssertionError, match="plaintext at rest"):
        _assert_absent(dump, _needles(body))


# -- values bound to their row ------------------------------------------------------------------------


@dataclass(frozen=True)
class Swap:
    """Copy ``column`` from the row keyed ``source`` into the row keyed ``target``, in the database."""

    field: str
    table: str
    column: str
    key: tuple[str, ...]
    source: tuple[Any, ...]
    target: tuple[Any, ...]
    target_row: RowId  # the identity of the row the copy now sits in

    def _where(self, first: int) -> str:
        return " AND ".join(f"{k} = ${i}" for i, k in enumerate(self.key, first))

    async def copy(self, store: Store) -> bytes:
        [(value,)] = await store.fetch(f"SELECT {self.column} FROM {self.table} WHERE {self._where(1)}", *self.source)
        sql = f"UPDATE {self.table} SET {self.column} = $1 WHERE {self._where(2)}"
        await store.execute(sql, bytes(value), *self.target)
        return bytes(value)

    def open(self, sealer: Sealer, copied: bytes) -> bytes:
        """Open the copy where it now sits, as every reader of the target row does."""
        return sealer.open(self.field, copied, row=self.target_row)


async def _swaps(t: Tracker) -> list[Swap]:
    """Two messages, and the copies someone with write access to the database could make between rows."""
    ids = []
    for subject in ("Quarterly all-hands", "Pay review 2026"):
        body = message_body(12, mode="individual", subject=subject, departments=2)  # 6 per department
        resp = await t.client.post("/api/v1/messages", json=body, headers=t.auth(Role.SENDER))
        assert resp.status == 201
        ids.append((await resp.json())["id"])
    a, b = ids
    store = t.state.store
    finance, engineering = [  # person 0's and person 1's records of message a
        bytes(r[0])
        for r in await store.fetch(
            "SELECT r.id FROM records r JOIN recipients p ON p.message_id = r.message_id"
            " AND p.email_index = r.subject_index WHERE r.message_id = $1 ORDER BY p.id LIMIT 2",
            a,
        )
    ]
    sql = "SELECT email_index FROM recipients WHERE message_id = $1 ORDER BY id LIMIT 2"
    first, second = [bytes(r[0]) for r in await store.fetch(sql, b)]
    link = ("message_id", "link_no")
    return [
        Swap("link.url", "links", "url", link, (a, 2), (b, 1), link_row(b, 1)),  # a link URL moved to another message
        Swap("link.url", "links", "url", link, (a, 2), (a, 1), link_row(a, 1)),  # or to another link of its message
        Swap("message.subject", "messages", "subject", ("id",), (a,), (b,), b),
        Swap("record.attributes", "records", "attributes", ("id",), (finance,), (engineering,), engineering),
        Swap(
            "recipient.email",
            "recipients",
            "email",
            ("message_id", "email_index"),
            (b, first),
            (b, second),
            recipient_row(b, second),
        ),
    ]


@pytest.mark.settings(segment_attributes=("department",), min_segment_size=5)  # records keep department
async def test_a_value_copied_into_another_rows_column_does_not_open(tracker: Tracker) -> None:
    for swap in await _swaps(tracker):
        copied = await swap.copy(tracker.state.store)
        with pytest.raises(
            SealError, match=rf"sealed {re.escape(swap.field)} does not open for this tenant, field and row"
        ):
            swap.open(tracker.state.sealer, copied)


@pytest.mark.settings(segment_attributes=("department",), min_segment_size=5)  # records keep department
async def test_the_same_copies_opened_in_the_old_format_and_no_longer_do_once_reseal_binds_the_rows(
    tracker: Tracker,
) -> None:
    swaps = await _swaps(tracker)
    store, sealer = tracker.state.store, tracker.state.sealer
    legacy = await rewrite_in_legacy_format(store, sealer)  # as rows written before values were bound

    # The flaw: in the old format every copy opens in its new row, showing what another row holds.
    opened = [swap.open(sealer, await swap.copy(store)) for swap in swaps]
    assert opened[:3] == [b"https://hr.example.com/faq", b"https://hr.example.com/faq", b"Quarterly all-hands"]
    assert opened[3] == b'{"department":"Finance"}' and opened[4] == b"person000000@example.com"
    as_they_stand = await open_all(store, sealer)

    result = await reseal(store, tracker.state.keyring, batch=4)

    assert result.values_bound == legacy and result.unbound_remaining == 0 and result.unreadable == 0
    assert await unbound_values(store) == 0
    assert await open_all(store, sealer) == as_they_stand  # every table's values round-trip
    for swap in swaps:  # the same copies, made again after the reseal: refused
        with pytest.raises(SealError, match="does not open for this tenant, field and row"):
            swap.open(sealer, await swap.copy(store))


async def test_a_click_on_a_link_whose_url_was_copied_from_another_is_refused_not_redirected(tracker: Tracker) -> None:
    body = message_body(6, mode="anonymous")
    resp = await tracker.client.post("/api/v1/messages", json=body, headers=tracker.auth(Role.SENDER))
    created = await resp.json()
    token = created["recipients"][0]["token"]
    redirect = await tracker.client.get(f"/c/{token}/1", allow_redirects=False)
    assert redirect.status == 302 and redirect.headers["Location"].startswith("https://intranet.example.com/")
    # Someone with write access to the database points link 1 at link 2's (sealed) URL.
    store = tracker.state.store
    await store.execute(
        "UPDATE links SET url = (SELECT url FROM links WHERE message_id = $1 AND link_no = 2)"
        " WHERE message_id = $1 AND link_no = 1",
        created["id"],
    )
    other = created["recipients"][1]["token"]  # a worker that has not cached link 1's target yet
    tracker.state.click_cache.clear()
    refused = await tracker.client.get(f"/c/{other}/1", allow_redirects=False)
    assert refused.status == 404
    assert await refused.json() == {"error": "not_found", "message": "unknown link"}
