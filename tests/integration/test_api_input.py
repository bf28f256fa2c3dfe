"""Bad input gets a JSON 4xx naming the problem, never a 500; roles are enforced."""

from __future__ import annotations

import json

import pytest

from politetenant.tracker.http.auth import Role
from tests.conftest import Tracker
from tests.support import message_body


async def post(t: Tracker, data: bytes | str, role: Role = Role.SENDER, content_type: str = "application/json"):
    headers = {**t.auth(role), "Content-Type": content_type}
    return await t.client.post("/api/v1/messages", data=data, headers=headers)


async def expect_error(resp, status: int, code: str, *words: str) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    body = await resp.json()
    assert body["error"] == code, body
    for word in words:
        assert word in body["message"], body
    assert "Traceback" not in body["message"]
    return body


async def test_missing_or_wrong_token_is_401_and_wrong_role_403(tracker: Tracker) -> None:
    body = json.dumps(message_body(10))
    resp = await tracker.client.post("/api/v1/messages", data=body, headers={"Content-Type": "application/json"})
    await expect_error(resp, 401, "unauthorized", "Bearer")
    for bad in ("Bearer nope", "Bearer ptk_000000000000_" + "A" * 43, "Basic abc", tracker.tokens[Role.SENDER]):
        resp = await tracker.client.post(
            "/api/v1/messages", data=body, headers={"Authorization": bad, "Content-Type": "application/json"}
        )
        await expect_error(resp, 401, "unauthorized")
    await expect_error(await post(tracker, body, Role.ANALYST), 403, "forbidden", "sender")
    report = await tracker.client.get("/api/v1/messages/x/report", headers=tracker.auth(Role.SENDER))
    await expect_error(report, 403, "forbidden", "analyst")


async def test_malformed_json_is_400(tracker: Tracker) -> None:
    await expect_error(await post(tracker, b"{not json"), 400, "malformed_json", "JSON")
    await expect_error(await post(tracker, b""), 400, "malformed_json")
    await expect_error(await post(tracker, b'\xff\xfe{"subject": "\xc3\x28"}'), 400, "malformed_json")


async def test_wrong_content_type_is_400(tracker: Tracker) -> None:
    await expect_error(await post(tracker, "a=b", content_type="text/plain"), 400, "unsupported_media_type")


async def test_missing_fields_are_named(tracker: Tracker) -> None:
    body = message_body(10)
    del body["subject"], body["recipients"]
    err = await expect_error(await post(tracker, json.dumps(body)), 422, "invalid_field", "subject", "recipients")
    assert "Field required" in err["message"]


async def test_unknown_mode_is_named(tracker: Tracker) -> None:
    await expect_error(await post(tracker, json.dumps(message_body(10, mode="stealth"))), 422, "invalid_field", "mode")


@pytest.mark.settings(allowed_modes=("anonymous", "aggregate"))
async def test_mode_the_tenant_does_not_allow_is_refused_not_changed(tracker: Tracker) -> None:
    resp = await post(tracker, json.dumps(message_body(10, mode="individual")))
    await expect_error(resp, 422, "mode_not_allowed", "individual", "anonymous, aggregate")


@pytest.mark.settings(default_mode="aggregate", mode_locked=True)
async def test_locked_tenant_gets_its_mode_and_refuses_others(tracker: Tracker) -> None:
    resp = await post(tracker, json.dumps(message_body(10)))
    assert resp.status == 201
    out = await resp.json()
    assert out["mode"] == "aggregate"
    assert len({r["token"] for r in out["recipients"]}) == 1
    await expect_error(
        await post(tracker, json.dumps(message_body(10, mode="anonymous"))), 422, "mode_not_allowed", "locked"
    )


async def test_bad_recipient_fields_are_named_with_their_position(tracker: Tracker) -> None:
    body = message_body(10)
    body["recipients"][3]["email"] = "not-an-address"
    body["recipients"][5]["attributes"] = {"Bad Key!": "x"}
    err = await expect_error(await post(tracker, json.dumps(body)), 422, "invalid_field", "recipients.3.email")
    assert "recipients.5.attributes" in err["message"]
    assert "not-an-address" not in err["message"]  # no personal data echoed back


async def test_empty_and_absurd_recipient_lists(tracker: Tracker) -> None:
    body = message_body(1)
    body["recipients"] = []
    await expect_error(await post(tracker, json.dumps(body)), 422, "invalid_field", "recipients")
    body["recipients"] = "everyone"
    await expect_error(await post(tracker, json.dumps(body)), 422, "invalid_field", "recipients")
    body["recipients"] = [{"email": f"p{i}@x.example"} for i in range(1_000_001)]
    await expect_error(await post(tracker, json.dumps(body)), 422, "invalid_field", "recipients")


@pytest.mark.settings(max_recipients=50)
async def test_tenant_recipient_limit(tracker: Tracker) -> None:
    await expect_error(await post(tracker, json.dumps(message_body(51))), 422, "too_many_recipients", "at most 50")


async def test_ten_megabyte_html_is_refused_with_a_clear_message(tracker: Tracker) -> None:
    body = message_body(10, html="<p>" + "x" * (10 * 1024 * 1024) + "</p>")
    await expect_error(await post(tracker, json.dumps(body)), 413, "payload_too_large", "html")


@pytest.mark.settings(max_body_bytes=1_000_000)
async def test_body_over_the_size_limit_is_413(tracker: Tracker) -> None:
    await expect_error(await post(tracker, b"{" + b" " * 2_000_000 + b"}"), 413, "payload_too_large")


async def test_unknown_paths_and_methods_are_json(tracker: Tracker) -> None:
    await expect_error(await tracker.client.get("/nope"), 404, "not_found")
    await expect_error(
        await tracker.client.delete("/api/v1/messages", headers=tracker.auth(Role.SENDER)), 405, "method_not_allowed"
    )


async def test_unknown_message_report_is_404(tracker: Tracker) -> None:
    resp = await tracker.client.get("/api/v1/messages/msg_nope/report", headers=tracker.auth(Role.ANALYST))
    await expect_error(resp, 404, "not_found")


async def test_html_that_already_holds_the_token_placeholder_is_refused(tracker: Tracker) -> None:
    body = message_body(10, html="<img src='https://third-party.example/{{polite_token}}.png'>")
    await expect_error(await post(tracker, json.dumps(body)), 422, "invalid_field", "{{polite_token}}")
