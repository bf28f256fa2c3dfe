"""``POST /api/v1/messages``: senders register messages (reports: api_reports)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from pydantic import ValidationError

from politetenant.crypto import blind_index, blind_indexes
from politetenant.tracker.http.auth import Role
from politetenant.tracker.http.errors import BadRequest, Unprocessable
from politetenant.tracker.http.openapi import Operation
from politetenant.tracker.http.state import STATE
from politetenant.tracker.messages.api_models import MessageIn, MessageOut, RecipientOut
from politetenant.tracker.messages.registration import check_limits, prepare_message, resolve_mode

OPERATIONS = [
    Operation("POST", "/api/v1/messages", "Register a message: HTML template with beacons and one token per recipient",
              roles=("sender",), body=MessageIn, response=MessageOut, status=201),
]  # fmt: skip


def describe_validation_error(exc: ValidationError) -> tuple[str, str]:
    """(code, message) naming the first problems by field path, without echoing values."""
    errors = exc.errors(include_url=False, include_input=False)
    if errors and errors[0]["type"] in ("json_invalid", "json_type"):
        return "malformed_json", f"the body is not valid JSON: {errors[0]['msg']}"
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid_field", "; ".join(parts) + more


async def read_json_body(request: web.Request) -> bytes:
    if request.content_type != "application/json":
        raise BadRequest("send the body as JSON with 'Content-Type: application/json'", code="unsupported_media_type")
    body = await request.read()  # aiohttp enforces client_max_size here (413)
    if not body:
        raise BadRequest("the request body is empty; send a JSON object", code="malformed_json")
    return body


async def register_message(request: web.Request) -> web.Response:
    state = request.app[STATE]
    principal = await state.auth.require(request, Role.SENDER)
    raw = await read_json_body(request)
    try:
        body = MessageIn.model_validate_json(raw)
    except ValidationError as exc:
        code, message = describe_validation_error(exc)
        raise (BadRequest if code == "malformed_json" else Unprocessable)(message, code=code) from None
    del raw
    mode = resolve_mode(body.mode, state.settings)
    check_limits(body, state.settings)
    keyring = state.keyring

    def indexes() -> tuple[list[bytes], dict[bytes, int], list[bytes]]:
        current = [blind_index(keyring, r.email) for r in body.recipients]
        lookup: dict[bytes, int] = {}
        for position, r in enumerate(body.recipients):
            for index in blind_indexes(keyring, r.email) if len(keyring.versions) > 1 else [current[position]]:
                lookup.setdefault(index, position)
        return current, lookup, list(lookup)

    # CPU-heavy steps run off the event loop so beacons keep being answered meanwhile.
    current, lookup, all_indexes = await asyncio.to_thread(indexes)
    objected_indexes = await state.store.objected(all_indexes)
    objected = {lookup[i] for i in objected_indexes}
    prepared = await asyncio.to_thread(
        prepare_message, body, mode, state.settings, state.sealer, state.tokens, current, objected,
        principal.token_id,
    )  # fmt: skip
    await state.store.insert_message(prepared.message, prepared.recipients, prepared.records, prepared.links)
    out = MessageOut(
        id=prepared.message.id,
        mode=mode,
        html_template=prepared.html_template,
        html_untracked=body.html if objected else None,
        recipients=[
            RecipientOut(email=r.email, token=t) for r, t in zip(body.recipients, prepared.tokens, strict=True)
        ],
    )
    return web.Response(
        body=out.model_dump_json(exclude={"html_untracked"} if out.html_untracked is None else None),
        status=201,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
