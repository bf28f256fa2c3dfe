"""The data plane end to end over a real socket, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from politetenant.crypto import Keyring, KeySet, TokenCodec, new_record_id
from politetenant.tracker.http.auth import Role
from politetenant.tracker.judging.verdicts import Reason
from politetenant.tracker.storage.rows import Event, EventKind
from tests.conftest import Tracker
from tests.support import IP_DUBLIN, UA_CHROME, UA_IPHONE_MAIL, UA_OUTLOOK, UA_SCANNER, message_body


async def register(t: Tracker, recipients: int = 12, **kw: object) -> dict:
    resp = await t.client.post("/api/v1/messages", json=message_body(recipients, **kw), headers=t.auth(Role.SENDER))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def hit(t: Tracker, path: str, ua: str = UA_IPHONE_MAIL, ip: str = IP_DUBLIN, **kw: object):
    return await t.client.get(path, headers={"User-Agent": ua, "X-Forwarded-For": ip}, allow_redirects=False, **kw)


async def report(t: Tracker, message_id: str) -> dict:
    await t.flush()
    resp = await t.client.get(f"/api/v1/messages/{message_id}/report", headers=t.auth(Role.ANALYST))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_registration_returns_template_and_one_token_per_recipient(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    assert out["mode"] == "anonymous"
    tokens = [r["token"] for r in out["recipients"]]
    assert len(set(tokens)) == 12 and all(tokens)
    html = out["html_template"]
    assert "https://t.acme.example/o/{{polite_token}}.gif" in html
    assert "https://t.acme.example/t/{{polite_token}}.gif" in html
    assert "https://t.acme.example/c/{{polite_token}}/1" in html
    assert "https://t.acme.example/c/{{polite_token}}/2" in html
    assert "mailto:hr@example.com" in html
    assert "intranet.example.com" not in html


async def test_opens_and_clicks_are_counted_in_the_report(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    tokens = [r["token"] for r in out["recipients"]]
    for token in tokens[:5]:
        assert (await hit(tracker, f"/o/{token}.gif")).status == 200
    await hit(tracker, f"/o/{tokens[0]}.gif", ua=UA_OUTLOOK)
    resp = await hit(tracker, f"/c/{tokens[1]}/1", ua=UA_CHROME)
    assert resp.status == 302
    assert resp.headers["Location"] == "https://intranet.example.com/policy?id=7&v=2"
    resp = await hit(tracker, f"/c/{tokens[2]}/2")
    assert resp.headers["Location"] == "https://hr.example.com/faq"
    rep = await report(tracker, out["id"])
    assert rep["suppressed"] is False
    assert rep["recipients"] == 12
    assert rep["opens"] == {"unique": 5, "total": 6}
    assert rep["clicks"] == {"unique": 2, "total": 2}
    assert rep["bots"] == {"opens": 0, "clicks": 0}
    assert rep["machine"]["records"] == 0


@pytest.mark.settings(min_segment_size=5)
async def test_a_copy_that_clicks_every_link_within_seconds_counts_as_a_machine(tracker: Tracker) -> None:
    out = await register(tracker, 10)
    tokens = [r["token"] for r in out["recipients"]]
    for token in tokens[:5]:  # link protection opening the message and following both links at once
        for path in (f"/o/{token}.gif", f"/c/{token}/1", f"/c/{token}/2"):
            await hit(tracker, path, ua=UA_CHROME)
    for token in tokens[5:]:
        await hit(tracker, f"/o/{token}.gif")
        await hit(tracker, f"/c/{token}/1")
    rep = await report(tracker, out["id"])
    assert rep["opens"] == {"unique": 5, "total": 5}
    assert rep["clicks"] == {"unique": 5, "total": 5}
    assert rep["machine"] == {
        "records": 5,
        "opens": 5,
        "clicks": 10,
        "by_reason": {"buckets": [{"label": "all_links_burst", "records": 5}], "other": None},
    }
    assert rep["bots"] == {"opens": 5, "clicks": 10}


async def test_open_beacon_is_a_43_byte_uncacheable_gif(tracker: Tracker) -> None:
    out = await register(tracker)
    resp = await hit(tracker, f"/o/{out['recipients'][0]['token']}.gif")
    body = await resp.read()
    assert len(body) == 43 and body.startswith(b"GIF89a")
    assert resp.headers["Content-Type"] == "image/gif"
    assert "no-store" in resp.headers["Cache-Control"]


@pytest.mark.settings(min_segment_size=5)
async def test_scanner_agent_network_and_honeypot_are_reported_apart(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    tokens = [r["token"] for r in out["recipients"]]
    for token in tokens[:2]:
        await hit(tracker, f"/o/{token}.gif", ua=UA_SCANNER)
        await hit(tracker, f"/c/{token}/1", ua=UA_SCANNER)
    for token in tokens[2:4]:
        await hit(tracker, f"/o/{token}.gif", ua=UA_CHROME, ip="203.0.113.200")  # scanner network
    for token in tokens[4:6]:
        honeypot = await hit(tracker, f"/c/{token}/0", ua=UA_CHROME)
        assert honeypot.status == 200 and "Location" not in honeypot.headers
    await hit(tracker, f"/o/{tokens[6]}.gif")  # one person
    rep = await report(tracker, out["id"])
    assert rep["opens"] == {"unique": 1, "total": 1}
    assert rep["clicks"] == {"unique": 0, "total": 0}
    # Six machine copies show; two per reason would name them, so the reasons fold together.
    assert rep["machine"] == {"records": 6, "opens": 4, "clicks": 4, "by_reason": {"buckets": [], "other": 6}}
    assert rep["bots"] == {"opens": 4, "clicks": 4}


async def test_a_few_machine_copies_are_not_shown_even_as_bots(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    tokens = [r["token"] for r in out["recipients"]]
    await hit(tracker, f"/o/{tokens[0]}.gif", ua=UA_SCANNER)
    await hit(tracker, f"/c/{tokens[1]}/0", ua=UA_CHROME)
    await hit(tracker, f"/o/{tokens[2]}.gif")
    rep = await report(tracker, out["id"])
    assert rep["machine"] is None and rep["bots"] == {"opens": 0, "clicks": 0}
    assert rep["opens"] == {"unique": 1, "total": 1}


@pytest.mark.settings(scanner_window_seconds=30, min_segment_size=5)
async def test_the_early_window_follows_the_messages_first_hit_not_its_registration(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    message = await tracker.state.store.get_message(out["id"])
    assert message is not None
    delivered = message.created_at + 2 * 3_600_000  # the gateway scans at delivery, two hours later
    events = []
    for n, recipient in enumerate(out["recipients"]):
        verified = tracker.state.tokens.verify(recipient["token"])
        assert verified is not None
        at = delivered + (n * 1_000 if n < 6 else 60_000)  # six within 30 s of the first hit, six a minute on
        events.append(
            Event(os.urandom(16), verified.record_id, EventKind.OPEN, None, at, "IE", None, None, "iOS", "mobile",
                  "Apple Mail", Reason.PERSON, None)
        )  # fmt: skip
    await tracker.state.store.insert_events(events)
    rep = await report(tracker, out["id"])
    assert rep["opens"] == {"unique": 6, "total": 6}
    assert rep["machine"]["by_reason"] == {"buckets": [{"label": "early_hit", "records": 6}], "other": None}


async def test_message_below_threshold_shows_no_figures(tracker: Tracker) -> None:
    out = await register(tracker, 9)
    await hit(tracker, f"/o/{out['recipients'][0]['token']}.gif")
    rep = await report(tracker, out["id"])
    assert rep == {"id": out["id"], "suppressed": True}


def _forgeries(token: str) -> list[str]:
    raw = bytearray(base64.urlsafe_b64decode(token + "="))
    flipped = bytearray(raw)
    flipped[5] ^= 0x01
    tag_flipped = bytearray(raw)
    tag_flipped[-1] ^= 0x80
    enc = lambda b: base64.urlsafe_b64encode(bytes(b)).rstrip(b"=").decode()  # noqa: E731
    return [
        token[:-1],  # truncated
        token + "A",  # extended
        enc(flipped),  # record id altered
        enc(tag_flipped),  # tag altered
        "A" * len(token),
        token.replace(token[3], "+" if token[3] != "+" else "/"),
        "",
        "%00",
    ]


async def test_forged_and_truncated_tokens_are_rejected_and_counted(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    token = out["recipients"][0]["token"]
    for forged in _forgeries(token):
        for path in (f"/o/{forged}.gif", f"/c/{forged}/1", f"/t/{forged}.gif"):
            resp = await hit(tracker, path)
            assert resp.status == 404, path
            assert "Location" not in resp.headers
    rep = await report(tracker, out["id"])
    assert rep["opens"]["total"] == 0 and rep["bots"]["opens"] == 0
    metrics = await (await tracker.client.get("/metrics")).text()
    rejected = [line for line in metrics.splitlines() if line.startswith("polite_rejected_tokens_total")]
    assert float(rejected[0].split()[-1]) >= 16


async def test_token_of_another_tenant_or_key_never_verifies(tracker: Tracker) -> None:
    keys = tracker.state.keyring.current
    record = new_record_id()
    foreign_tenant = TokenCodec(Keyring("globex", [keys])).issue(record)
    rekeyed = TokenCodec(
        Keyring("acme", [KeySet(version=keys.version, dek=keys.dek, token_key=bytes(32), index_key=keys.index_key)])
    ).issue(record)
    for token in (foreign_tenant, rekeyed):
        assert (await hit(tracker, f"/o/{token}.gif")).status == 404
        assert (await hit(tracker, f"/c/{token}/1")).status == 404


async def test_click_never_redirects_anywhere_not_stored_for_the_message(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    token = out["recipients"][0]["token"]
    for link in ("3", "99", "-1", "1a", "01x", "https:%2F%2Fevil.example", "9999999", "1/2"):
        resp = await hit(tracker, f"/c/{token}/{link}")
        assert resp.status == 404, link
        assert "Location" not in resp.headers
        assert resp.headers["Content-Type"].startswith("application/json")
    other = await register(tracker, 12, html="<a href='https://other.example/x'>x</a>")
    resp = await hit(tracker, f"/c/{other['recipients'][0]['token']}/1")
    assert resp.headers["Location"] == "https://other.example/x"
    resp = await hit(tracker, f"/c/{token}/1")
    assert resp.headers["Location"].startswith("https://intranet.example.com/")


async def test_read_time_is_the_time_until_the_client_hangs_up(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    token = out["recipients"][0]["token"]
    resp = await hit(tracker, f"/t/{token}.gif")
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/gif"
    assert (await resp.content.read(6)) == b"GIF89a"
    await asyncio.sleep(1.2)
    resp.close()  # the reader closes the message
    for _ in range(50):
        await asyncio.sleep(0.1)
        if tracker.state.read_streams == 0:
            break
    await tracker.flush()
    rows = await _read_times(tracker)
    assert len(rows) == 1
    assert 1000 <= rows[0] <= 2500


@pytest.mark.settings(read_streams_per_worker=1)
async def test_read_beacon_answers_at_once_when_streams_are_saturated(tracker: Tracker) -> None:
    out = await register(tracker, 12)
    tokens = [r["token"] for r in out["recipients"]]
    first = await hit(tracker, f"/t/{tokens[0]}.gif")
    assert tracker.state.read_streams == 1
    second = await hit(tracker, f"/t/{tokens[1]}.gif")
    body = await asyncio.wait_for(second.read(), timeout=2)
    assert len(body) == 43
    first.close()
    for _ in range(50):
        await asyncio.sleep(0.1)
        if tracker.state.read_streams == 0:
            break
    await tracker.flush()
    assert len(await _read_times(tracker)) == 1  # only the streamed one has a read time


async def _read_times(t: Tracker) -> list[int]:
    store = t.state.store
    sql = "SELECT read_ms FROM events WHERE kind = 2"
    if store.url_scheme == "sqlite":
        return [r[0] for r in await store._run(lambda c: c.execute(sql).fetchall())]  # type: ignore[attr-defined]
    return [r[0] for r in await store._call("fetch", sql)]  # type: ignore[attr-defined]


async def test_health_ready_and_metrics(tracker: Tracker) -> None:
    assert (await tracker.client.get("/healthz")).status == 200
    ready = await tracker.client.get("/readyz")
    assert ready.status == 200
    body = await ready.json()
    assert body["status"] == "ready" and body["database"] == "up"
    assert body["checks"] == {"keys": True, "ingest": True}
    out = await register(tracker, 12)
    await hit(tracker, f"/o/{out['recipients'][0]['token']}.gif")
    await tracker.flush()
    text = await (await tracker.client.get("/metrics")).text()
    assert 'polite_requests_total{outcome="2xx",route="/o/{token}.gif"} 1.0' in text
    assert "polite_events_stored_total 1.0" in text
    assert "polite_flush_seconds_count" in text


async def test_a_database_outage_keeps_the_tracker_ready_and_shows_in_the_body_and_metrics(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool exists so that links in sent mail keep working while the database is away: a pod
    that left the Service on an outage would break every one of them. Readiness is keys and ingest;
    the database's state is reported, not acted on."""
    from politetenant.tracker.storage.base import StorageUnavailable

    token = (await register(tracker, 12))["recipients"][0]["token"]

    async def unreachable(*args: object) -> None:
        raise StorageUnavailable("database unreachable")

    monkeypatch.setattr(tracker.state.store, "ping", unreachable)
    monkeypatch.setattr(tracker.state.store, "insert_events", unreachable)
    ready = await tracker.client.get("/readyz")
    body = await ready.json()
    assert (ready.status, body["status"], body["database"]) == (200, "ready", "down")
    assert (await hit(tracker, f"/o/{token}.gif")).status == 200  # and beacons still answer
    await tracker.flush()  # the event goes to the spool
    metrics = await (await tracker.client.get("/metrics")).text()
    assert "polite_database_up 0.0" in metrics
    assert (await (await tracker.client.get("/readyz")).json())["spool_bytes"] > 0
    monkeypatch.undo()
    tracker.state.ingest._retry_at = 0
    body = await (await tracker.client.get("/readyz")).json()
    assert body["database"] == "up"
    assert "polite_database_up 1.0" in await (await tracker.client.get("/metrics")).text()
