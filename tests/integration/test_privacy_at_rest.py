"""After a demo-like run, neither database holds a client IP, user agent or personal field in plaintext.

The databases are dumped byte for byte (the SQLite files including the WAL, and pg_dump of the
PostgreSQL database); every needle is searched as text and as the hex form a bytea dump would show.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from politetenant.tracker.cli.geoip_sample import SAMPLE_ADDRESSES
from politetenant.tracker.http.auth import Role
from tests.conftest import Tracker
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
