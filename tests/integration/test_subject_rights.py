"""Rights of the individual over the HTTP API, in every tracking mode, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from politetenant.crypto import LocalKeyProvider, SealError, blind_index, blind_indexes, recipient_row
from politetenant.tracker.http.auth import Role
from tests.conftest import Tracker, start_tracker
from tests.integration.test_key_versions import rewrite_in_legacy_format
from tests.support import IP_DUBLIN, UA_CHROME, UA_IPHONE_MAIL, message_body

PERSON = "person000000@example.com"
OTHER = "person000001@example.com"
SUBJECT_PATHS = [f"/api/v1/subjects/{right}" for right in ("access", "export", "rectify", "erase", "object")]


# -- helpers --------------------------------------------------------------------------------------------


async def register(t: Tracker, mode: str, recipients: int = 12, **kw: Any) -> dict[str, Any]:
    resp = await t.client.post(
        "/api/v1/messages", json=message_body(recipients, mode=mode, **kw), headers=t.auth(Role.SENDER)
    )
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


def token_of(out: dict[str, Any], email: str) -> str:
    return next(r["token"] for r in out["recipients"] if r["email"] == email)


async def interact(t: Tracker, token: str, *, clicks: int = 1) -> None:
    headers = {"User-Agent": UA_IPHONE_MAIL, "X-Forwarded-For": IP_DUBLIN}
    assert (await t.client.get(f"/o/{token}.gif", headers=headers)).status == 200
    for _ in range(clicks):
        resp = await t.client.get(f"/c/{token}/1", headers={**headers, "User-Agent": UA_CHROME}, allow_redirects=False)
        assert resp.status == 302


async def right(t: Tracker, name: str, body: dict[str, Any], status: int = 200) -> Any:
    resp = await t.client.post(f"/api/v1/subjects/{name}", json=body, headers=t.auth(Role.PRIVACY))
    assert resp.status == status, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    return await resp.json()


async def report(t: Tracker, message_id: str) -> dict[str, Any]:
    await t.flush()
    resp = await t.client.get(f"/api/v1/messages/{message_id}/report", headers=t.auth(Role.ANALYST))
    assert resp.status == 200
    return dict(await resp.json())


async def count(t: Tracker, sql: str, *args: Any) -> int:
    return int((await t.state.store.fetch(sql, *args))[0][0])


async def rows_of_message(t: Tracker, message_id: str) -> dict[str, int]:
    store = t.state.store
    return {
        "recipients": await count(t, "SELECT COUNT(*) FROM recipients WHERE message_id = $1", message_id),
        "records": await count(t, "SELECT COUNT(*) FROM records WHERE message_id = $1", message_id),
        "events": int(
            (
                await store.fetch(
                    "SELECT COUNT(*) FROM events e JOIN records r ON r.id = e.record_id WHERE r.message_id = $1",
                    message_id,
                )
            )[0][0]
        ),
    }


async def three_messages(t: Tracker) -> dict[str, dict[str, Any]]:
    """One message per mode to the same 12 people; PERSON and OTHER open each and click once."""
    out = {}
    for mode in ("individual", "anonymous", "aggregate"):
        out[mode] = await register(t, mode, subject=f"Policy update ({mode})", list_name=f"List {mode}")
        await interact(t, token_of(out[mode], PERSON))
        await interact(t, token_of(out[mode], OTHER), clicks=2)
    await t.flush()
    return out


# -- access and export ----------------------------------------------------------------------------------


async def test_access_lists_every_message_and_interactions_only_where_linkable(tracker: Tracker) -> None:
    sent = await three_messages(tracker)
    doc = await right(tracker, "access", {"email": PERSON})
    assert doc["found"] is True and doc["objection"] == {"objected": False, "since": None}
    by_mode = {m["mode"]: m for m in doc["messages"]}
    assert set(by_mode) == {"individual", "anonymous", "aggregate"}
    for mode, entry in by_mode.items():
        assert entry["id"] == sent[mode]["id"]
        assert entry["subject"] == f"Policy update ({mode})"
        assert entry["from_name"] == "Dana Whitfield" and entry["from_email"] == "dana.whitfield@example.com"
        assert entry["list_name"] == f"List {mode}"
        assert entry["sent_at"].endswith("Z")
        assert entry["held"] == [{"email": PERSON, "name": "Person Number0", "attributes": {"department": "Finance"}}]
    interactions = by_mode["individual"]["interactions"]
    assert [i["kind"] for i in interactions] == ["open", "click"]
    assert interactions[0]["city"] == "Dublin" and interactions[0]["os"] == "iOS"
    assert interactions[1]["link"] == 1 and interactions[1]["url"] == "https://intranet.example.com/policy?id=7&v=2"
    for mode in ("anonymous", "aggregate"):
        assert by_mode[mode]["interactions"] is None
        assert "not linkable to this person" in by_mode[mode]["interactions_note"]
    text = json.dumps(doc)
    assert OTHER not in text and "Person Number1" not in text and "Engineering" not in text


async def test_individual_message_to_an_objector_says_they_were_not_tracked(tracker: Tracker) -> None:
    await right(tracker, "object", {"email": PERSON})
    await register(tracker, "individual")
    [entry] = (await right(tracker, "access", {"email": PERSON}))["messages"]
    assert entry["interactions"] == [] and "not tracked" in entry["interactions_note"]


async def test_export_is_the_access_document_as_a_download(tracker: Tracker) -> None:
    await three_messages(tracker)
    access = await right(tracker, "access", {"email": PERSON})
    resp = await tracker.client.post(
        "/api/v1/subjects/export", json={"email": PERSON}, headers=tracker.auth(Role.PRIVACY)
    )
    assert resp.status == 200
    assert resp.headers["Content-Disposition"] == 'attachment; filename="subject-export.json"'
    assert resp.headers["Content-Type"].startswith("application/json")
    exported = json.loads(await resp.read())
    access.pop("generated_at"), exported.pop("generated_at")
    assert exported == access


async def test_unknown_email_gets_an_explicit_empty_result_not_404(tracker: Tracker) -> None:
    await register(tracker, "individual")
    nobody = {"email": "nobody@example.com"}
    for name in ("access", "export"):
        doc = await right(tracker, name, nobody)
        assert doc["found"] is False and doc["messages"] == []
        assert doc["notes"] == ["No data is held for this e-mail address: it is not a recipient of any stored message."]
    erased = await right(tracker, "erase", nobody)
    assert erased["found"] is False
    assert erased["erased"] == {"recipient_rows": 0, "messages": 0, "records": 0, "events": 0}
    rectified = await right(tracker, "rectify", {**nobody, "name": "X"})
    assert rectified["found"] is False and rectified["updated"]["recipient_rows"] == 0
    assert await count(tracker, "SELECT COUNT(*) FROM recipients") == 12


async def test_case_and_whitespace_variants_find_the_same_person(tracker: Tracker) -> None:
    sent = await register(tracker, "individual")
    for variant in ("  PERSON000000@Example.COM ", "Person000000@EXAMPLE.com", "\tperson000000@example.com\n"):
        doc = await right(tracker, "access", {"email": variant})
        assert [m["id"] for m in doc["messages"]] == [sent["id"]]
        assert doc["messages"][0]["held"][0]["email"] == PERSON  # as held, not as asked


# -- erase ----------------------------------------------------------------------------------------------


async def test_erase_in_individual_mode_removes_the_persons_records_and_events_only(tracker: Tracker) -> None:
    sent = (await three_messages(tracker))["individual"]
    before = await report(tracker, sent["id"])
    assert before["opens"]["unique"] == 2
    out = await right(tracker, "erase", {"email": PERSON})
    assert out["found"] is True
    assert out["erased"] == {"recipient_rows": 3, "messages": 3, "records": 1, "events": 2}
    assert any("Individual mode (1 message(s))" in n for n in out["notes"])
    assert any("Aggregate counts already published are kept" in n for n in out["notes"])
    assert await rows_of_message(tracker, sent["id"]) == {"recipients": 11, "records": 11, "events": 3}
    after = await report(tracker, sent["id"])
    assert after["recipients"] == 12 and after["tracked"] == 12  # published counts kept
    assert after["opens"] == {"unique": 1, "total": 1} and after["clicks"] == {"unique": 1, "total": 2}
    other = await right(tracker, "access", {"email": OTHER})
    assert len(other["messages"]) == 3
    individual = next(m for m in other["messages"] if m["mode"] == "individual")
    assert [i["kind"] for i in individual["interactions"]] == ["open", "click", "click"]
    assert (await right(tracker, "access", {"email": PERSON}))["found"] is False


async def test_erase_in_anonymous_mode_removes_recipient_rows_and_says_records_cannot_be_found(
    tracker: Tracker,
) -> None:
    sent = await register(tracker, "anonymous")
    await interact(tracker, token_of(sent, PERSON))
    rep_before, rows_before = await report(tracker, sent["id"]), await rows_of_message(tracker, sent["id"])
    out = await right(tracker, "erase", {"email": PERSON})
    assert out["erased"] == {"recipient_rows": 1, "messages": 1, "records": 0, "events": 0}
    assert any("Anonymous mode (1 message(s))" in n and "cannot be found" in n for n in out["notes"])
    assert await rows_of_message(tracker, sent["id"]) == {**rows_before, "recipients": 11}
    assert await report(tracker, sent["id"]) == rep_before


async def test_erase_in_aggregate_mode_removes_recipient_rows_and_keeps_counts(tracker: Tracker) -> None:
    sent = await register(tracker, "aggregate")
    await interact(tracker, token_of(sent, PERSON))
    rep_before, rows_before = await report(tracker, sent["id"]), await rows_of_message(tracker, sent["id"])
    assert rows_before == {"recipients": 12, "records": 1, "events": 2}
    out = await right(tracker, "erase", {"email": PERSON})
    assert out["erased"] == {"recipient_rows": 1, "messages": 1, "records": 0, "events": 0}
    assert any("Aggregate mode (1 message(s))" in n for n in out["notes"])
    assert await rows_of_message(tracker, sent["id"]) == {**rows_before, "recipients": 11}
    assert await report(tracker, sent["id"]) == rep_before


async def test_erase_is_idempotent_and_keeps_the_objection(tracker: Tracker) -> None:
    await three_messages(tracker)
    await right(tracker, "object", {"email": PERSON})
    first = await right(tracker, "erase", {"email": PERSON})
    assert first["found"] is True
    assert any("objection on file is kept" in n for n in first["notes"])
    totals = {table: await tracker.state.store.count_rows(table) for table in ("recipients", "records", "events")}
    again = await right(tracker, "erase", {"email": " Person000000@example.com"})
    assert again["found"] is False
    assert again["erased"] == {"recipient_rows": 0, "messages": 0, "records": 0, "events": 0}
    assert {table: await tracker.state.store.count_rows(table) for table in totals} == totals
    assert await tracker.state.store.count_rows("objections") == 1
    assert (await right(tracker, "access", {"email": PERSON}))["objection"]["objected"] is True


async def events_of(t: Tracker, token: str) -> int:
    record_id = t.state.tokens.verify(token).record_id  # type: ignore[union-attr]
    return await count(t, "SELECT COUNT(*) FROM events WHERE record_id = $1", record_id)


async def test_after_an_erasure_the_persons_old_email_still_answers_and_records_nothing(tracker: Tracker) -> None:
    sent = await register(tracker, "individual")
    person, other = token_of(sent, PERSON), token_of(sent, OTHER)
    await interact(tracker, person)
    await tracker.flush()
    assert await events_of(tracker, person) == 2
    await right(tracker, "erase", {"email": PERSON})

    headers = {"User-Agent": UA_IPHONE_MAIL, "X-Forwarded-For": IP_DUBLIN}
    opened = await tracker.client.get(f"/o/{person}.gif", headers=headers)
    assert opened.status == 200 and opened.headers["Content-Type"] == "image/gif"  # the mail client sees no change
    read = await tracker.client.get(f"/t/{person}.gif", headers=headers)
    assert read.status == 200 and read.headers["Content-Type"] == "image/gif"
    clicked = await tracker.client.get(f"/c/{person}/1", headers=headers, allow_redirects=False)
    assert clicked.status == 302  # the link works
    assert clicked.headers["Location"] == "https://intranet.example.com/policy?id=7&v=2"
    tracker.state.click_cache.clear()  # and without this worker's memory of the message: from the database
    clicked = await tracker.client.get(f"/c/{person}/2", headers=headers, allow_redirects=False)
    assert clicked.status == 302 and clicked.headers["Location"] == "https://hr.example.com/faq"
    await interact(tracker, other)  # everyone else is tracked as before
    await tracker.flush()

    assert await events_of(tracker, person) == 0
    assert await events_of(tracker, other) == 2
    record_id = tracker.state.tokens.verify(person).record_id  # type: ignore[union-attr]
    # what is kept names no one: the record's random id and its message, no e-mail, name or pseudonym
    kept = await tracker.state.store.fetch("SELECT * FROM erased_records")
    assert [(bytes(row[0]), row[1]) for row in kept] == [(record_id, sent["id"])]


async def test_another_worker_learns_of_an_erasure_and_drops_what_it_took_meanwhile(
    tracker: Tracker, tmp_path: Path, db_url: str, geoip_path: str
) -> None:
    sent = await register(tracker, "individual")
    person = token_of(sent, PERSON)
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    client, state = await start_tracker(second_dir, db_url, geoip_path, keys=f"local:{tmp_path}/keys.json")
    second = Tracker(client=client, state=state)
    headers = {"User-Agent": UA_IPHONE_MAIL, "X-Forwarded-For": IP_DUBLIN}

    async def open_in_second() -> None:
        assert (await second.client.get(f"/o/{person}.gif", headers=headers)).status == 200

    try:
        clicked = await second.client.get(f"/c/{person}/1", headers=headers, allow_redirects=False)
        assert clicked.status == 302  # the second worker now knows where the record's links go
        await right(tracker, "erase", {"email": PERSON})  # in the first worker
        await open_in_second()  # the second does not know yet: it stores what it takes
        await second.flush()
        assert await events_of(second, person) == 2  # the click before, the open after the erasure
        await open_in_second()  # and takes more, still buffered when it learns

        assert await second.state.erased.refresh(second.state.store) == 1
        assert await events_of(second, person) == 0  # what it stored meanwhile is deleted
        await second.flush()  # what it had buffered is dropped
        await open_in_second()  # and what comes now is answered, not taken
        clicked = await second.client.get(f"/c/{person}/1", headers=headers, allow_redirects=False)
        assert clicked.status == 302  # the link still works, and records nothing
        await second.flush()
        assert await events_of(second, person) == 0
        assert await second.state.erased.refresh(second.state.store) == 0  # nothing new to learn
    finally:
        await client.close()


async def test_a_worker_learns_of_another_workers_erasure_on_its_own_timer(
    tracker: Tracker, tmp_path: Path, db_url: str, geoip_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("politetenant.tracker.storage.erased.REFRESH_SECONDS", 0.05)  # 10 s in production
    sent = await register(tracker, "individual")
    record_id = tracker.state.tokens.verify(token_of(sent, PERSON)).record_id  # type: ignore[union-attr]
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    client, state = await start_tracker(second_dir, db_url, geoip_path, keys=f"local:{tmp_path}/keys.json")
    try:
        assert record_id not in state.erased
        await right(tracker, "erase", {"email": PERSON})
        for _ in range(100):
            if record_id in state.erased:
                break
            await asyncio.sleep(0.05)
        assert record_id in state.erased
    finally:
        await client.close()


# -- rectify --------------------------------------------------------------------------------------------


async def _record_attributes(t: Tracker, message_id: str) -> list[dict[str, str]]:
    rows = await t.state.store.fetch("SELECT id, attributes FROM records WHERE message_id = $1", message_id)
    sealer = t.state.sealer
    return sorted(
        (json.loads(sealer.open("record.attributes", bytes(a), row=bytes(i))) for i, a in rows if a is not None),
        key=json.dumps,
    )


async def test_rectify_changes_name_and_attributes_in_every_linkable_place(tracker: Tracker) -> None:
    sent = {mode: await register(tracker, mode) for mode in ("individual", "anonymous")}
    anonymous_before = await _record_attributes(tracker, sent["anonymous"]["id"])
    out = await right(
        tracker, "rectify", {"email": PERSON, "name": "Corrected Name", "attributes": {"department": "Legal"}}
    )
    assert out["found"] is True and out["changed"] == ["name", "attributes"]
    assert out["updated"] == {"recipient_rows": 2, "messages": 2, "records": 1, "events": 0}
    assert any("keep the attributes they were sent with" in n for n in out["notes"])
    doc = await right(tracker, "access", {"email": PERSON})
    for entry in doc["messages"]:
        assert entry["held"] == [{"email": PERSON, "name": "Corrected Name", "attributes": {"department": "Legal"}}]
    # The individual-mode record follows the person; anonymous records are not linkable and stay.
    subject_index = blind_index(tracker.state.keyring, PERSON)
    [(record_id, sealed)] = await tracker.state.store.fetch(
        "SELECT id, attributes FROM records WHERE subject_index = $1", subject_index
    )
    opened = tracker.state.sealer.open("record.attributes", bytes(sealed), row=bytes(record_id))
    assert json.loads(opened) == {"department": "Legal"}
    assert await _record_attributes(tracker, sent["anonymous"]["id"]) == anonymous_before
    other = await right(tracker, "access", {"email": OTHER})
    assert other["messages"][0]["held"][0]["name"] == "Person Number1"
    assert other["messages"][0]["held"][0]["attributes"] == {"department": "Engineering"}


async def test_rectify_changes_only_what_is_given(tracker: Tracker) -> None:
    await register(tracker, "individual")
    out = await right(tracker, "rectify", {"email": PERSON, "name": None})
    assert out["changed"] == ["name"]
    held = (await right(tracker, "access", {"email": PERSON}))["messages"][0]["held"][0]
    assert held == {"email": PERSON, "name": None, "attributes": {"department": "Finance"}}
    await right(tracker, "rectify", {"email": PERSON, "attributes": {}})
    held = (await right(tracker, "access", {"email": PERSON}))["messages"][0]["held"][0]
    assert held == {"email": PERSON, "name": None, "attributes": {}}


async def test_rectified_fields_are_sealed_under_the_current_key(tracker: Tracker) -> None:
    await register(tracker, "individual")
    await right(tracker, "rectify", {"email": PERSON, "name": "Corrected Name"})
    rows = await tracker.state.store.fetch(
        "SELECT name FROM recipients WHERE email_index = $1", blind_index(tracker.state.keyring, PERSON)
    )
    assert b"Corrected" not in bytes(rows[0][0])
    assert tracker.state.sealer.version_of(bytes(rows[0][0])) == tracker.state.keyring.current.version


async def test_rectified_values_are_bound_to_their_row_so_a_copy_into_another_row_does_not_open(
    tracker: Tracker,
) -> None:
    sent = await register(tracker, "individual")
    await right(tracker, "rectify", {"email": PERSON, "name": "Corrected Name", "attributes": {"department": "Legal"}})
    store, sealer = tracker.state.store, tracker.state.sealer
    mine, other = (blind_index(tracker.state.keyring, email) for email in (PERSON, OTHER))
    [(name,)] = await store.fetch("SELECT name FROM recipients WHERE email_index = $1", mine)
    assert sealer.open_text("recipient.name", bytes(name), row=recipient_row(sent["id"], mine)) == "Corrected Name"
    with pytest.raises(SealError, match=r"recipient\.name does not open"):
        sealer.open_text("recipient.name", bytes(name), row=recipient_row(sent["id"], other))
    [(record_id, attributes)] = await store.fetch("SELECT id, attributes FROM records WHERE subject_index = $1", mine)
    [(other_record,)] = await store.fetch("SELECT id FROM records WHERE subject_index = $1", other)
    assert sealer.open("record.attributes", bytes(attributes), row=bytes(record_id)) == b'{"department":"Legal"}'
    with pytest.raises(SealError, match=r"record\.attributes does not open"):
        sealer.open("record.attributes", bytes(attributes), row=bytes(other_record))


async def test_rights_reach_rows_written_before_values_were_bound_and_rectify_binds_what_it_writes(
    tracker: Tracker,
) -> None:
    sent = await three_messages(tracker)
    before = await right(tracker, "access", {"email": PERSON})
    store, sealer = tracker.state.store, tracker.state.sealer
    legacy = await rewrite_in_legacy_format(store, sealer)
    assert legacy > 0
    after = await right(tracker, "access", {"email": PERSON})
    before.pop("generated_at"), after.pop("generated_at")
    assert after == before  # access and export read the legacy format unchanged

    await right(tracker, "rectify", {"email": PERSON, "name": "Corrected Name"})
    mine = blind_index(tracker.state.keyring, PERSON)
    names = await store.fetch("SELECT name FROM recipients WHERE email_index = $1", mine)
    assert len(names) == 3 and all(sealer.is_row_bound(bytes(n)) for (n,) in names)
    doc = await right(tracker, "access", {"email": PERSON})
    assert {h["name"] for m in doc["messages"] for h in m["held"]} == {"Corrected Name"}
    out = await right(tracker, "erase", {"email": PERSON})
    assert out["erased"]["recipient_rows"] == 3 and out["erased"]["records"] == 1
    assert (await right(tracker, "access", {"email": OTHER}))["messages"][0]["id"] == sent["individual"]["id"]


# -- object ---------------------------------------------------------------------------------------------


async def test_object_then_a_new_message_carries_no_tracking_for_that_person(tracker: Tracker) -> None:
    out = await right(tracker, "object", {"email": " PERSON000000@example.com"})
    assert out["objected"] is True and out["already_objected"] is False
    assert any("no beacon and no rewritten links" in n for n in out["notes"])
    again = await right(tracker, "object", {"email": PERSON})
    assert again["already_objected"] is True and again["since"] == out["since"]
    assert await tracker.state.store.count_rows("objections") == 1

    sent = await register(tracker, "individual")
    assert token_of(sent, PERSON) is None
    assert all(r["token"] for r in sent["recipients"] if r["email"] != PERSON)
    assert "/o/" not in sent["html_untracked"] and "intranet.example.com/policy" in sent["html_untracked"]
    assert await rows_of_message(tracker, sent["id"]) == {"recipients": 12, "records": 11, "events": 0}
    objected = await tracker.state.store.fetch("SELECT subject_index FROM objections")
    assert [bytes(r[0]) for r in objected] == [blind_index(tracker.state.keyring, PERSON)]


async def test_rights_still_reach_data_written_before_a_key_rotation(
    tracker: Tracker, tmp_path: Path, db_url: str, geoip_path: str
) -> None:
    sent = await register(tracker, "individual")
    await interact(tracker, token_of(sent, PERSON))
    await tracker.flush()
    await right(tracker, "object", {"email": OTHER})
    LocalKeyProvider(tmp_path / "keys.json").rotate()
    client, state = await start_tracker(tmp_path, db_url, geoip_path, spool_dir=str(tmp_path / "spool-2"))
    try:
        rotated = Tracker(client=client, state=state, tokens=tracker.tokens)
        assert state.keyring.versions == [1, 2]
        doc = await right(rotated, "access", {"email": PERSON})
        assert [m["id"] for m in doc["messages"]] == [sent["id"]]
        assert [i["kind"] for i in doc["messages"][0]["interactions"]] == ["open", "click"]
        assert (await right(rotated, "object", {"email": OTHER}))["already_objected"] is True
        objected = {bytes(r[0]) for r in await state.store.fetch("SELECT subject_index FROM objections")}
        assert objected == set(blind_indexes(state.keyring, OTHER))  # now held under the new version too
        newer = await register(rotated, "individual")
        assert token_of(newer, OTHER) is None
        out = await right(rotated, "erase", {"email": PERSON})
        assert out["erased"] == {"recipient_rows": 2, "messages": 2, "records": 2, "events": 2}
    finally:
        await client.close()


# -- the door: roles, bodies, URLs ----------------------------------------------------------------------


async def test_only_the_privacy_role_may_call_subject_rights(tracker: Tracker) -> None:
    for path in SUBJECT_PATHS:
        body = {"email": PERSON, "name": "X"} if path.endswith("rectify") else {"email": PERSON}
        for role in (Role.SENDER, Role.ANALYST):
            resp = await tracker.client.post(path, json=body, headers=tracker.auth(role))
            assert resp.status == 403, path
            assert (await resp.json())["error"] == "forbidden"
        resp = await tracker.client.post(path, json=body)
        assert resp.status == 401, path
        assert (await tracker.client.get(path, headers=tracker.auth(Role.PRIVACY))).status == 405


async def test_email_in_the_query_string_is_refused_and_never_echoed(tracker: Tracker) -> None:
    await register(tracker, "individual")
    for path in SUBJECT_PATHS:
        resp = await tracker.client.post(
            f"{path}?email={PERSON}", json={"email": PERSON, "name": "X"}, headers=tracker.auth(Role.PRIVACY)
        )
        assert resp.status == 400, path
        body = await resp.json()
        assert body["error"] == "query_not_allowed" and "body" in body["message"]
        assert "person000000" not in json.dumps(body)
    assert await count(tracker, "SELECT COUNT(*) FROM recipients") == 12  # nothing erased
    assert await tracker.state.store.count_rows("objections") == 0


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "field"),
    [
        ("access", b'{"email": "not an address"}', 422, "invalid_field", "email"),
        ("access", b'{"email": ""}', 422, "invalid_field", "email"),
        ("access", b"{}", 422, "invalid_field", "email"),
        ("access", b'{"email": "person000000@example.com", "mail": "x"}', 422, "invalid_field", "mail"),
        ("erase", b'{"person000000@example.com": true}', 422, "invalid_field", "<key>"),
        ("erase", b'{"email": ["person000000@example.com"]}', 422, "invalid_field", "email"),
        ("object", b"{not json person000000@example.com", 400, "malformed_json", "JSON"),
        ("object", b"[]", 422, "invalid_field", "body"),
        ("rectify", b'{"email": "person000000@example.com"}', 422, "invalid_field", "name or attributes"),
        ("rectify", b'{"email": "person000000@example.com", "attributes": null}', 422, "invalid_field", "attributes"),
        ("rectify", b'{"email": "person000000@example.com", "attributes": {"Bad Key": "x"}}', 422, "invalid_field",
         "attributes"),
        ("rectify", b'{"email": "person000000@example.com", "name": 7}', 422, "invalid_field", "name"),
    ],
)  # fmt: skip
async def test_bad_bodies_name_the_field_and_never_echo_the_email(
    tracker: Tracker, path: str, body: bytes, status: int, code: str, field: str
) -> None:
    resp = await tracker.client.post(
        f"/api/v1/subjects/{path}",
        data=body,
        headers={**tracker.auth(Role.PRIVACY), "Content-Type": "application/json"},
    )
    assert resp.status == status, await resp.text()
    out = await resp.json()
    assert out["error"] == code and field in out["message"], out
    text = json.dumps(out)
    assert "person000000" not in text and "not an address" not in text


async def test_a_body_that_is_not_json_is_refused(tracker: Tracker) -> None:
    headers = {**tracker.auth(Role.PRIVACY), "Content-Type": "text/plain"}
    resp = await tracker.client.post("/api/v1/subjects/access", data=PERSON, headers=headers)
    assert resp.status == 400 and (await resp.json())["error"] == "unsupported_media_type"


async def test_no_response_or_log_line_carries_an_address(tracker: Tracker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await three_messages(tracker)
    bodies = []
    for name, body in [
        ("access", {"email": PERSON}),
        ("export", {"email": PERSON}),
        ("rectify", {"email": PERSON, "name": "New Name"}),
        ("object", {"email": PERSON}),
        ("erase", {"email": PERSON}),
        ("access", {"email": "nobody@example.com"}),
    ]:
        bodies.append(json.dumps(await right(tracker, name, body)))
    assert all(OTHER not in b and "Person Number1" not in b for b in bodies)
    assert all(PERSON not in b for b in bodies[2:])  # only access/export return the person's own data
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for needle in (PERSON, OTHER, "nobody@example.com", "New Name", "Person Number"):
        assert needle not in logged
