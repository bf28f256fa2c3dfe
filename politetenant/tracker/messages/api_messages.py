"""``POST /api/v1/messages``: senders register messages (reports: api_reports)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from aiohttp import web
from pydantic import ValidationError

from politetenant.crypto.tokens import RECORD_ID_BYTES
from politetenant.tracker.http.auth import Role
from politetenant.tracker.http.errors import BadRequest, Unprocessable
from politetenant.tracker.http.openapi import Operation
from politetenant.tracker.http.state import STATE, TrackerState
from politetenant.tracker.messages.api_models import (
    RECIPIENT_BATCH,
    MessageIn,
    MessageOut,
    RecipientIn,
    SplitBody,
    split_body,
)
from politetenant.tracker.messages.registration import (
    BATCH_ROWS,
    Census,
    Plan,
    RecipientRows,
    check_limits,
    find_objected,
    plan_message,
    record_rows,
    resolve_mode,
)
from politetenant.tracker.storage.base import MessageWriter

Row = TypeVar("Row")
_json_str: Callable[[str], str] = json.encoder.encode_basestring  # the C encoder, no ensure_ascii

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


async def read_json_body(request: web.Request) -> bytes | bytearray:
    if request.content_type != "application/json":
        raise BadRequest("send the body as JSON with 'Content-Type: application/json'", code="unsupported_media_type")
    body = await _read_body(request)
    if not body:
        raise BadRequest("the request body is empty; send a JSON object", code="malformed_json")
    return body


async def _read_body(request: web.Request) -> bytes | bytearray:
    """The body in one buffer of its announced size: ``request.read()`` gathers a growing copy and then
    copies it once more, three times a 13 MB body at the peak. Compressed or chunked bodies, whose
    size is not announced, still take ``request.read()`` (which enforces client_max_size: 413)."""
    length, limit = request.content_length, request.client_max_size
    if length is None or request.headers.get("Content-Encoding", "identity") != "identity":
        return await request.read()
    if limit and length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
    body = bytearray(length)
    view, at = memoryview(body), 0
    while chunk := await request.content.readany():
        if at + len(chunk) > length:
            raise BadRequest("the body is longer than its Content-Length", code="malformed_json")
        view[at : at + len(chunk)] = chunk
        at += len(chunk)
    view.release()
    del body[at:]
    return body


class ResponseBody:
    """The 201 body, written recipient by recipient as the second pass goes: the same JSON as
    ``MessageOut.model_dump_json`` (field order, compact separators, UTF-8), without 100,000 models
    and their dump in memory at once."""

    def __init__(self, plan: Plan) -> None:
        self.buffer = bytearray(f'{{"id":{_json_str(plan.message.id)},"mode":{_json_str(plan.mode.value)},'.encode())
        self.buffer += b'"html_template":'
        self.buffer += _json_str(plan.html_template).encode()  # megabytes, maybe: no more copies than this
        self.buffer += b',"recipients":['
        self._separator = b""

    def add(self, email: str, token: str | None) -> None:
        quoted = "null" if token is None else f'"{token}"'  # a token is base64url: nothing to escape
        self.buffer += self._separator
        self.buffer += f'{{"email":{_json_str(email)},"token":{quoted}}}'.encode()
        self._separator = b","

    def finish(self, html_untracked: str | None) -> bytearray:
        self.buffer += b"]"
        if html_untracked is not None:
            self.buffer += b',"html_untracked":'
            self.buffer += _json_str(html_untracked).encode()
        self.buffer += b"}"
        return self.buffer


class _Handoff(Generic[Row]):
    """Batches of rows from a worker thread to an async writer on the event loop. With ``overlap`` (the
    writer's ``overlaps``), one batch is in flight while the thread builds the next, never more; without,
    the thread waits for each. Memory stays at two batches whatever the message's size."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, write: Callable[[list[Row]], Coroutine[Any, Any, None]], overlap: bool
    ) -> None:
        self._loop, self._write, self._overlap = loop, write, overlap
        self._batch: list[Row] = []
        self._in_flight: Future[None] | None = None

    def add(self, row: Row) -> None:
        self._batch.append(row)
        if len(self._batch) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        self.settle()
        if self._batch:
            self._in_flight = asyncio.run_coroutine_threadsafe(self._write(self._batch), self._loop)
            self._batch = []
        if not self._overlap:
            self.settle()

    def settle(self) -> None:
        """Wait for the batch in flight; its error, if any, is raised here."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def abandon(self) -> None:
        """After a failure: wait for the batch in flight (the transaction is rolled back next)."""
        with contextlib.suppress(Exception):
            self.settle()


def _ignore(_: RecipientIn) -> None:
    """The envelope's sample recipient: read again with its batch."""


def _first_pass(raw: bytes | bytearray, new_census: Callable[[], Census]) -> tuple[MessageIn, Census, SplitBody | None]:
    """Validate the whole body, counting the recipients into a census instead of keeping them.

    Batch by batch when the body can be cut (``split_body``); else, and whenever something is wrong,
    as a whole: the answer then is pydantic's own, the same messages and field paths in the same order."""
    split = split_body(raw, BATCH_ROWS)
    if split is not None:
        census = new_census()
        try:
            body = MessageIn.model_validate_json(split.envelope, context={"visit": _ignore})
            _read_recipients(raw, split, census.add)
            return body, census, split
        except ValidationError:
            pass  # told below
    census = new_census()
    try:
        return MessageIn.model_validate_json(raw, context={"visit": census.add}), census, None
    except ValidationError as exc:
        code, message = describe_validation_error(exc)
        raise (BadRequest if code == "malformed_json" else Unprocessable)(message, code=code) from None


def _read_recipients(raw: bytes | bytearray, split: SplitBody | None, visit: Callable[[RecipientIn], None]) -> None:
    """Hand each recipient, in request order, to ``visit``."""
    if split is None:
        MessageIn.model_validate_json(raw, context={"visit": visit})
        return
    for start, end in split.batches:
        RECIPIENT_BATCH.validate_json(b"[" + raw[start:end] + b"]", context={"visit": visit})


def _second_pass(
    raw: bytes | bytearray, split: SplitBody | None, plan: Plan, census: Census, state: TrackerState,
    writer: MessageWriter, response: ResponseBody, loop: asyncio.AbstractEventLoop,
) -> None:  # fmt: skip
    """Seal and store the records, then every recipient's row, handing the token to ``response``."""
    records = _Handoff(loop, writer.add_records, writer.overlaps)
    recipients = _Handoff(loop, writer.add_recipients, writer.overlaps)
    build = RecipientRows(plan, census, state.sealer, state.tokens)

    def visit(recipient: RecipientIn) -> None:
        row, token = build(recipient)
        recipients.add(row)
        response.add(recipient.email, token)

    try:
        for record in record_rows(plan, census, state.sealer):
            records.add(record)
        records.flush()
        records.settle()
        try:
            _read_recipients(raw, split, visit)
        except ValidationError as exc:  # valid on the first pass: only a bug gets here (a ValueError raised within)
            raise RuntimeError("the message failed its second reading") from exc
        recipients.flush()
        recipients.settle()
    except BaseException:
        records.abandon()
        recipients.abandon()
        raise


async def register_message(request: web.Request) -> web.Response:
    state = request.app[STATE]
    principal = await state.auth.require(request, Role.SENDER)
    raw = await read_json_body(request)
    settings = state.settings
    # CPU-heavy steps run off the event loop so beacons keep being answered meanwhile.
    body, census, split = await asyncio.to_thread(
        _first_pass, raw, lambda: Census(state.keyring, settings.segment_attributes, limit=settings.max_recipients)
    )
    mode = resolve_mode(body.mode, settings)
    check_limits(body, settings, census.count)
    objected = await find_objected(census, state.store)
    plan = await asyncio.to_thread(
        plan_message, body, census, objected, mode, settings, state.sealer, state.tokens, principal.token_id
    )
    html_untracked = body.html if objected else None
    del body
    response = ResponseBody(plan)
    async with state.store.message_writer(plan.message, plan.links) as writer:
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(_second_pass, raw, split, plan, census, state, writer, response, loop)
    ids, size = plan.record_ids, RECORD_ID_BYTES  # every position's record (objected ones: never handed out)
    records = (ids[i : i + size] for i in range(0, len(ids), size))
    state.click_cache.remember_message(plan.message.id, records, plan.links)  # first clicks need no lookup
    return web.Response(
        body=response.finish(html_untracked),
        status=201,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
