"""The audit log: written for every subject request, readable and filterable by the privacy officer,
unalterable through the API, and any edit or deletion in the database is found by ``audit verify``:
deletion of the newest entries only with the anchor file, which the tests show both ways."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from politetenant.crypto import Keyring, KeySet, blind_index
from politetenant.tracker.cli import commands
from politetenant.tracker.http.auth import Role
from politetenant.tracker.privacy import api_audit, audit
from tests.conftest import Tracker
from tests.support import message_body

PERSON = "person000000@example.com"
Action = audit.Action
NO_ANCHOR = (
    "no audit anchor configured (audit_anchor_path): deletion of the newest entries cannot be detected without one"
)


async def read_audit(t: Tracker, query: str = "", status: int = 200) -> dict[str, Any]:
    resp = await t.client.get(f"/api/v1/audit{query}", headers=t.auth(Role.PRIVACY))
    assert resp.status == status, await resp.text()
    return dict(await resp.json())


async def dump_audit(t: Tracker) -> list[tuple[Any, ...]]:
    return await t.state.store.fetch("SELECT * FROM audit ORDER BY id")


async def write_entries(t: Tracker, actions: list[Action], keyring: Keyring | None = None) -> None:
    for action in actions:
        await audit.record(t.state.store, keyring or t.state.keyring, audit.SYSTEM_ACTOR, action, detail="test")


# -- written for every subject request ---------------------------------------------------------------------


async def test_every_subject_request_is_audited_with_the_blind_index_never_the_address(tracker: Tracker) -> None:
    resp = await tracker.client.post(
        "/api/v1/messages", json=message_body(12, mode="individual"), headers=tracker.auth(Role.SENDER)
    )
    assert resp.status == 201
    calls = [
        ("access", {"email": PERSON}),
        ("export", {"email": " Person000000@Example.com"}),
        ("rectify", {"email": PERSON, "name": "Renamed Person"}),
        ("object", {"email": PERSON}),
        ("erase", {"email": PERSON}),
        ("access", {"email": "nobody@example.com"}),
    ]
    for name, body in calls:
        resp = await tracker.client.post(f"/api/v1/subjects/{name}", json=body, headers=tracker.auth(Role.PRIVACY))
        assert resp.status == 200
    refused = await tracker.client.post(
        f"/api/v1/subjects/erase?email={PERSON}", json={"email": PERSON}, headers=tracker.auth(Role.PRIVACY)
    )
    assert refused.status == 400

    rows = await dump_audit(tracker)
    token_id = tracker.tokens[Role.PRIVACY].split("_")[1]
    person, nobody = (
        blind_index(tracker.state.keyring, PERSON),
        blind_index(tracker.state.keyring, "nobody@example.com"),
    )
    entries = [(r[4], bytes(r[5]) if r[5] is not None else None, r[6], r[7]) for r in rows]  # action, index, ...
    assert entries == [
        ("subject.access", person, "ok", "messages=1"),
        ("subject.export", person, "ok", "messages=1"),
        ("subject.rectify", person, "ok", "messages=1 fields=name"),
        ("subject.object", person, "ok", "messages=1 already_objected=false"),
        ("subject.erase", person, "ok", "messages=1 recipient_rows=1 records=1 events=0"),
        ("subject.access", nobody, "no_data", "messages=0"),
        ("subject.erase", None, "rejected", "query_not_allowed"),
    ]
    assert all(r[2] == token_id and r[3] == "privacy" for r in rows)
    # No address, name or their hex anywhere in the table, whatever the column.
    dump = repr(rows).lower() + "".join(bytes(v).hex() for r in rows for v in r if isinstance(v, bytes | memoryview))
    for needle in (PERSON, "nobody@example.com", "renamed person", "person000000"):
        assert needle not in dump and needle.encode().hex() not in dump
    assert (await audit.verify_chain(tracker.state.store, tracker.state.keyring)).ok


# -- read through the API ----------------------------------------------------------------------------------------


async def test_audit_entries_are_listed_as_json_with_the_subject_index_in_hex(tracker: Tracker) -> None:
    resp = await tracker.client.post(
        "/api/v1/subjects/object", json={"email": PERSON}, headers=tracker.auth(Role.PRIVACY)
    )
    assert resp.status == 200
    page = await read_audit(tracker)
    assert page["next_cursor"] is None
    [entry] = page["entries"]
    assert entry["subject_index"] == blind_index(tracker.state.keyring, PERSON).hex()
    assert entry["action"] == "subject.object" and entry["role"] == "privacy" and entry["outcome"] == "ok"
    assert entry["key_version"] == 1 and len(entry["hash"]) == 64
    assert datetime.fromisoformat(entry["at"]) == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        milliseconds=entry["at_ms"]
    )
    assert PERSON not in json.dumps(page)


async def test_audit_filters_by_action(tracker: Tracker) -> None:
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE, Action.TOKEN_CREATE, Action.PURGE])
    purges = await read_audit(tracker, "?action=purge")
    assert [e["action"] for e in purges["entries"]] == ["purge", "purge"]
    both = await read_audit(tracker, "?action=purge,report.read")
    assert [e["action"] for e in both["entries"]] == ["report.read", "purge", "purge"]
    repeated = await read_audit(tracker, "?action=purge&action=token.create")
    assert [e["action"] for e in repeated["entries"]] == ["purge", "token.create", "purge"]
    assert (await read_audit(tracker, "?action=key.rotate"))["entries"] == []


async def test_audit_filters_by_time_as_iso_or_epoch_milliseconds(tracker: Tracker) -> None:
    await write_entries(tracker, [Action.REPORT_READ] * 3)
    await asyncio.sleep(0.05)
    await write_entries(tracker, [Action.PURGE] * 2)
    entries = (await read_audit(tracker))["entries"]
    boundary = entries[3]["at_ms"]
    assert boundary > entries[2]["at_ms"]
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=boundary)
    iso = at.isoformat(timespec="milliseconds")
    for since in (str(boundary), iso, iso.replace("+00:00", "Z"), iso.replace("+00:00", "")):
        page = await read_audit(tracker, "?since=" + since.replace("+", "%2B"))
        assert [e["action"] for e in page["entries"]] == ["purge", "purge"], since
    page = await read_audit(tracker, f"?until={boundary}")
    assert [e["action"] for e in page["entries"]] == ["report.read"] * 3
    # An unescaped '+' of an offset arrives as a space: still read as the offset.
    dublin_summer = at.astimezone(timezone(timedelta(hours=1)))
    page = await read_audit(tracker, "?until=" + dublin_summer.isoformat(timespec="milliseconds"))
    assert [e["action"] for e in page["entries"]] == ["report.read"] * 3
    assert (await read_audit(tracker, f"?since={boundary}&until={boundary}"))["entries"] == []
    lower = await read_audit(tracker, "?since=" + iso.replace("+00:00", "z").replace("T", "t"))
    assert len(lower["entries"]) == 2
    window = await read_audit(tracker, f"?since={entries[1]['at_ms']}&until={boundary}&action=report.read")
    assert [e["id"] for e in window["entries"]] == [e["id"] for e in entries[:3] if e["at_ms"] >= entries[1]["at_ms"]]


async def test_audit_pages_with_a_cursor_without_gaps_or_repeats(tracker: Tracker) -> None:
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE] * 4)
    seen: list[int] = []
    cursor = ""
    pages = 0
    while True:
        page = await read_audit(tracker, f"?limit=3{cursor}")
        assert len(page["entries"]) <= 3
        seen += [e["id"] for e in page["entries"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert pages == 3 and seen == sorted(seen) and len(seen) == len(set(seen)) == 8
    filtered = await read_audit(tracker, "?action=purge&limit=2")
    rest = await read_audit(tracker, f"?action=purge&limit=2&cursor={filtered['next_cursor']}")
    assert [e["action"] for e in filtered["entries"] + rest["entries"]] == ["purge"] * 4
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("?since=yesterday", "since"),
        ("?until=2025-13-01T00:00:00Z", "until"),
        ("?since=99999999999999999999", "since"),
        ("?action=subject.peek", "action"),
        ("?action=", "action"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=ten", "limit"),
        ("?cursor=abc", "cursor"),
        ("?cursor=-1", "cursor"),
        ("?email=person000000@example.com", "email"),
    ],
)
async def test_bad_query_parameters_are_400_naming_the_parameter(tracker: Tracker, query: str, parameter: str) -> None:
    body = await read_audit(tracker, query, status=400)
    assert body["error"] == "invalid_parameter" and parameter in body["message"], body
    assert "person000000" not in body["message"] and "subject.peek" not in body["message"]


async def test_only_the_privacy_role_reads_the_audit_log(tracker: Tracker) -> None:
    for role in (Role.SENDER, Role.ANALYST):
        resp = await tracker.client.get("/api/v1/audit", headers=tracker.auth(role))
        assert resp.status == 403 and (await resp.json())["error"] == "forbidden"
    assert (await tracker.client.get("/api/v1/audit")).status == 401


async def test_the_api_offers_no_way_to_alter_entries(tracker: Tracker) -> None:
    await write_entries(tracker, [Action.PURGE])
    before = await dump_audit(tracker)
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        for path in ("/api/v1/audit", "/api/v1/audit/1"):
            resp = await tracker.client.request(
                method, path, json={"outcome": "edited"}, headers=tracker.auth(Role.PRIVACY)
            )
            assert resp.status in (404, 405), (method, path)
            assert resp.status == 405 or path.endswith("/1")
    assert await dump_audit(tracker) == before


# -- tampering in the database --------------------------------------------------------------------------------


async def test_editing_one_row_in_the_database_is_reported_at_that_row(tracker: Tracker) -> None:
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE, Action.SUBJECT_ERASE, Action.PURGE])
    assert await api_audit.verify_audit_command(tracker.state.store, tracker.state.keyring) == (
        0,
        f"audit log intact: 4 entries, hash chain verified\n{NO_ANCHOR}",
    )
    assert await tracker.state.store.execute("UPDATE audit SET outcome = $1 WHERE id = $2", "denied", 3) == 1
    check = await audit.verify_chain(tracker.state.store, tracker.state.keyring)
    assert check.first_broken_id == 3
    code, message = await api_audit.verify_audit_command(tracker.state.store, tracker.state.keyring)
    assert code == 1 and "entry id 3" in message


async def test_recomputing_the_hash_without_the_key_does_not_hide_an_edit(tracker: Tracker) -> None:
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE, Action.PURGE])
    rows = await dump_audit(tracker)
    forger = Keyring("acme", [KeySet(version=1, dek=bytes(32), token_key=bytes(32), index_key=bytes(32))])
    values = [rows[1][1], rows[1][2], rows[1][3], "token.create", None, rows[1][6], rows[1][7], 1]
    forged = audit.entry_hash(forger, 1, bytes(rows[0][10]), values)
    await tracker.state.store.execute(
        "UPDATE audit SET action = $1, hash = $2 WHERE id = $3", "token.create", forged, 2
    )
    assert (await audit.verify_chain(tracker.state.store, tracker.state.keyring)).first_broken_id == 2


async def test_deleting_a_row_in_the_middle_is_detected(tracker: Tracker) -> None:
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE, Action.SUBJECT_ERASE, Action.PURGE])
    assert await tracker.state.store.execute("DELETE FROM audit WHERE id = $1", 2) == 1
    code, message = await api_audit.verify_audit_command(tracker.state.store, tracker.state.keyring)
    assert code == 1 and "entry id 3" in message


async def test_deleting_the_first_row_is_detected(tracker: Tracker) -> None:
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE])
    await tracker.state.store.execute("DELETE FROM audit WHERE id = $1", 1)
    assert (await audit.verify_chain(tracker.state.store, tracker.state.keyring)).first_broken_id == 2


async def test_empty_log_verifies(tracker: Tracker) -> None:
    assert await api_audit.verify_audit_command(tracker.state.store, tracker.state.keyring) == (
        0,
        f"audit log is empty; nothing to verify\n{NO_ANCHOR}",
    )


async def test_a_key_rotation_keeps_old_entries_verifiable(tracker: Tracker) -> None:
    old = tracker.state.keyring
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE], old)
    new = KeySet(version=2, dek=bytes(range(32)), token_key=bytes(range(1, 33)), index_key=bytes(range(2, 34)))
    rotated = Keyring(old.tenant_id, [old.current, new])
    await write_entries(tracker, [Action.KEY_ROTATE, Action.PURGE], rotated)
    rows = await dump_audit(tracker)
    assert [r[8] for r in rows] == [1, 1, 2, 2]  # key_version
    assert await api_audit.verify_audit_command(tracker.state.store, rotated) == (
        0,
        f"audit log intact: 4 entries, hash chain verified\n{NO_ANCHOR}",
    )
    # Without the version that signed them, the old entries cannot be vouched for; and vice versa.
    assert (await audit.verify_chain(tracker.state.store, Keyring(old.tenant_id, [new]))).first_broken_id == 1
    assert (await audit.verify_chain(tracker.state.store, old)).first_broken_id == 3


# -- the anchor outside the database: deletion of the newest entries ---------------------------------------------


@pytest.fixture
def anchor(tracker: Tracker, tmp_path: Path) -> Iterator[Path]:
    """The tenant's anchor file: entries recorded from now on are anchored in it, and the tracker's
    settings name it (as the operator's ConfigMap would)."""
    path = tmp_path / "anchor" / "audit.anchor"
    path.parent.mkdir()
    tracker.state.settings = tracker.state.settings.model_copy(update={"audit_anchor_path": str(path)})
    audit.use_anchor(str(path))
    try:
        yield path
    finally:
        audit.use_anchor(None)


async def verify(t: Tracker, anchor_path: Path | None) -> tuple[int, str]:
    path = None if anchor_path is None else str(anchor_path)
    return await api_audit.verify_audit_command(t.state.store, t.state.keyring, path)


async def test_each_entry_appends_its_id_and_hash_to_the_anchor(tracker: Tracker, anchor: Path) -> None:
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE, Action.TOKEN_CREATE])
    rows = await dump_audit(tracker)
    assert anchor.read_text() == "".join(f"{r[0]} {bytes(r[10]).hex()}\n" for r in rows)
    assert anchor.stat().st_mode & 0o777 == 0o600
    code, message = await verify(tracker, anchor)
    assert code == 0 and message.splitlines() == [
        "audit log intact: 3 entries, hash chain verified",
        f"anchor {anchor}: 3 lines, every anchored entry stored as anchored",
    ]


async def test_deleting_the_newest_entries_is_caught_by_the_anchor_and_only_by_it(
    tracker: Tracker, anchor: Path
) -> None:
    await write_entries(tracker, [Action.REPORT_READ, Action.SUBJECT_ERASE, Action.PURGE, Action.SUBJECT_ACCESS] * 2)
    assert await tracker.state.store.execute("DELETE FROM audit WHERE id > $1", 5) == 3
    # What remains is a valid chain: without the anchor, nothing can tell.
    assert (await audit.verify_chain(tracker.state.store, tracker.state.keyring)).ok
    code, message = await verify(tracker, None)
    assert code == 0 and message == f"audit log intact: 5 entries, hash chain verified\n{NO_ANCHOR}"
    # With it, the truncation is named, and how much of the log at least is gone.
    check = await audit.verify_chain(tracker.state.store, tracker.state.keyring, str(anchor))
    assert not check.ok and check.chain_ok
    assert (check.anchor.truncated_after, check.anchor.truncated, check.anchor.newest_anchored_id) == (5, 3, 8)
    code, message = await verify(tracker, anchor)
    assert code == 1
    assert message.splitlines()[1] == (
        "audit log truncated: the anchor names entry id 8, but the newest stored entry is id 5:"
        " at least 3 of the newest entries were deleted"
    )


async def test_emptying_the_whole_log_is_caught_by_the_anchor(tracker: Tracker, anchor: Path) -> None:
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE])
    await tracker.state.store.execute("DELETE FROM audit")
    code, message = await verify(tracker, anchor)
    assert code == 1 and "newest stored entry is id 0: at least 2 of the newest entries were deleted" in message


async def test_entries_appended_after_a_truncation_do_not_hide_it(tracker: Tracker, anchor: Path) -> None:
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE, Action.SUBJECT_ERASE])
    await tracker.state.store.execute("DELETE FROM audit WHERE id = $1", 3)
    await write_entries(tracker, [Action.REPORT_READ, Action.REPORT_READ])  # chained onto entry 2: valid again
    assert (await audit.verify_chain(tracker.state.store, tracker.state.keyring)).ok
    code, message = await verify(tracker, anchor)
    assert code == 1 and "audit entry id 3, named by the anchor, is missing: it was deleted" in message


async def test_editing_a_row_is_still_reported_at_that_row_with_an_anchor(tracker: Tracker, anchor: Path) -> None:
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE, Action.SUBJECT_ERASE, Action.PURGE])
    await tracker.state.store.execute("UPDATE audit SET detail = $1 WHERE id = $2", "edited", 2)
    code, message = await verify(tracker, anchor)
    assert code == 1 and message.startswith("audit log broken at entry id 2 (entry 2 in order)")


async def test_a_log_rewritten_with_the_keys_still_differs_from_its_anchor(tracker: Tracker, anchor: Path) -> None:
    """Someone holding the tenant's keys rewrites entry 3 and re-chains everything after it: the chain
    holds, but the anchor still names the hashes the log had."""
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE, Action.SUBJECT_ERASE, Action.PURGE])
    rows = await dump_audit(tracker)
    prev = bytes(rows[1][10])
    for row in rows[2:]:
        values = list(row[1:9])
        values[4] = None if values[4] is None else bytes(values[4])
        if row[0] == 3:
            values[6] = "rewritten"
        digest = audit.entry_hash(tracker.state.keyring, 1, prev, values)
        await tracker.state.store.execute(
            "UPDATE audit SET detail = $1, prev_hash = $2, hash = $3 WHERE id = $4", values[6], prev, digest, row[0]
        )
        prev = digest
    assert (await audit.verify_chain(tracker.state.store, tracker.state.keyring)).ok
    code, message = await verify(tracker, anchor)
    assert code == 1 and message.splitlines() == [
        "hash chain of 4 entries holds, but",
        "audit entry id 3 is stored with another hash than the anchor names: it was rewritten, or the log was replaced",
    ]


async def test_the_privacy_api_reports_the_anchor_verdict(tracker: Tracker, anchor: Path) -> None:
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE, Action.PURGE])

    async def verdict() -> dict[str, Any]:
        resp = await tracker.client.get("/api/v1/audit/verify", headers=tracker.auth(Role.PRIVACY))
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        return dict(await resp.json())

    intact = await verdict()
    assert {k: intact[k] for k in ("entries", "ok", "first_broken_id")} == {
        "entries": 3, "ok": True, "first_broken_id": None,
    }  # fmt: skip
    assert intact["anchor"] == {"configured": True, "lines": 3, "ok": True, "truncated_after": None, "problem": None}
    await tracker.state.store.execute("DELETE FROM audit WHERE id = $1", 3)
    truncated = await verdict()
    assert truncated["ok"] is False and truncated["first_broken_id"] is None
    assert truncated["anchor"]["ok"] is False and truncated["anchor"]["truncated_after"] == 2
    assert "at least 1 of the newest entries were deleted" in truncated["message"]
    with anchor.open("a") as f:
        f.write("garbage\n")
    unreadable = await verdict()
    assert unreadable["ok"] is False and unreadable["anchor"]["ok"] is False
    assert unreadable["anchor"]["problem"] == (
        f"audit anchor {anchor} line 4: malformed; every line is '<entry id> <64 hex digits>'"
    )
    for role in (Role.SENDER, Role.ANALYST):
        assert (await tracker.client.get("/api/v1/audit/verify", headers=tracker.auth(role))).status == 403


async def test_without_an_anchor_the_api_says_truncation_cannot_be_detected(tracker: Tracker) -> None:
    await write_entries(tracker, [Action.PURGE])
    resp = await tracker.client.get("/api/v1/audit/verify", headers=tracker.auth(Role.PRIVACY))
    body = await resp.json()
    assert body["ok"] is True and body["anchor"]["configured"] is False and NO_ANCHOR in body["message"]


async def test_cli_audit_verify_exits_0_1_or_2(
    tracker: Tracker, anchor: Path, tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await write_entries(tracker, [Action.REPORT_READ, Action.PURGE, Action.PURGE])
    settings = tmp_path / "settings.yaml"
    settings.write_text(json.dumps({"tenant_id": "acme", "audit_anchor_path": str(anchor)}))  # JSON is YAML
    argv = ["audit", "verify", "--db", db_url, "--keys", f"local:{tmp_path}/keys.json", "--settings", str(settings)]

    async def cli(*extra: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(commands.main, [*argv, *extra])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await cli()
    assert code == 0 and f"anchor {anchor}: 3 lines" in out
    await tracker.state.store.execute("DELETE FROM audit WHERE id = $1", 3)
    code, _, err = await cli()
    assert code == 1 and "polite-tracker: audit log truncated: the anchor names entry id 3" in err
    # --anchor names another copy (the one the operator collected); an empty one cannot tell.
    empty = tmp_path / "collected.anchor"
    empty.write_text("")
    code, out, _ = await cli("--anchor", str(empty))
    assert code == 0 and "holds no lines yet" in out and "2 entries newer than the anchor's newest line" in out
    anchor.write_text(anchor.read_text() + "3 not-a-hash\n")
    code, _, err = await cli()
    assert code == 2 and err.strip() == f"polite-tracker: audit anchor {anchor} line 4: malformed;" + (
        " every line is '<entry id> <64 hex digits>'"
    )
