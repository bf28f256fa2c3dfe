"""``POST /api/v1/messages``: senders register messages (reports: api_reports)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

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
    split_body,
)
from politetenant.tracker.messages.packing import BATCH_ROWS, Census, PackedRecipients
from politetenant.tracker.messages.registration import (
    Plan,
    check_limits,
    find_objected,
    plan_envelope,
    plan_records,
    recipient_rows,
    record_batches,
    resolve_mode,
    token_batches,
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

    def add(self, emails: list[bytes], tokens: list[str | None]) -> None:
        """A batch of recipients: e-mails as UTF-8, tokens (None: objected) in the same order."""
        quoted = ["null" if token is None else '"' + token + '"' for token in tokens]  # base64url: no escapes
        self.buffer += self._separator
        self.buffer += ",".join(
            [
                f'{{"email":{_json_str(email.decode())},"token":{token}}}'
                for email, token in zip(emails, quoted, strict=True)
            ]
        ).encode()
        self._separator = b","

    def finish(self, html_untracked: str | None) -> bytearray:
        self.buffer += b"]"
        if html_untracked is not None:
            self.buffer += b',"html_untracked":'
            self.buffer += _json_str(html_untracked).encode()
        self.buffer += b"}"
        return self.buffer


class _Handoff:
    """Batches of rows from a worker thread to the async writer on the event loop. With ``overlap`` (the
    writer's ``overlaps``), one batch is in flight while the thread builds the next, never more (one
    connection does one thing at a time); without, the thread waits for each. Memory stays at two
    batches whatever the message's size."""

    def __init__(self, loop: asyncio.AbstractEventLoop, overlap: bool) -> None:
        self._loop, self._overlap = loop, overlap
        self._in_flight: Future[None] | None = None

    def send(self, write: Callable[[list[Row]], Coroutine[Any, Any, None]], batch: list[Row]) -> None:
        self.settle()
        if batch:
            self._in_flight = asyncio.run_coroutine_threadsafe(write(batch), self._loop)
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


@dataclass(slots=True)
class _Reading:
    """A body whose envelope is valid; its recipients are still to be read batch by batch (``batches``,
    byte ranges of the body) or, when the body could not be cut, were read whole already (``None``)."""

    body: MessageIn
    count: int
    census: Census
    packed: PackedRecipients
    batches: list[tuple[int, int]] | None


def _read_envelope(raw: bytes | bytearray, new_census: Callable[[], Census], limit: int | None) -> _Reading:
    """Validate the envelope (every field but the recipients, of which only the count is known yet).

    When the body can be cut (``split_body``) its recipients are read later, batch by batch, while the
    database stores the batches before; else, and whenever something is wrong, the body is validated
    whole: the answer then is pydantic's own, the same messages and field paths in the same order."""
    split = split_body(raw, BATCH_ROWS)
    if split is not None:
        try:
            body = MessageIn.model_validate_json(split.envelope, context={"visit": _ignore})
            return _Reading(body, split.count, new_census(), PackedRecipients(limit), split.batches)
        except ValidationError:
            pass  # told below
    census, packed = new_census(), PackedRecipients(limit)
    body = _validate_whole(raw, _both(census, packed))
    return _Reading(body, census.count, census, packed, None)


def _validate_whole(raw: bytes | bytearray, visit: Callable[[RecipientIn], None]) -> MessageIn:
    try:
        return MessageIn.model_validate_json(raw, context={"visit": visit})
    except ValidationError as exc:
        code, message = describe_validation_error(exc)
        raise (BadRequest if code == "malformed_json" else Unprocessable)(message, code=code) from None


def _both(census: Census, packed: PackedRecipients) -> Callable[[RecipientIn], None]:
    """One visit per recipient for both: each model is dropped as soon as it is read (one kept per
    batch instead would outlive the young generation and make the collector sweep the heap)."""
    add_to_census, pack = census.add, packed.add

    def visit(recipient: RecipientIn) -> None:
        add_to_census(recipient)
        pack(recipient)

    return visit


def _first_pass(
    raw: bytes | bytearray, reading: _Reading, message_id: str, state: TrackerState, writer: MessageWriter,
    loop: asyncio.AbstractEventLoop,
) -> None:  # fmt: skip
    """Read the recipients into the census and the packing a batch at a time, and store each batch's
    rows as soon as it is read: the database writes one batch while this thread reads the next, instead
    of waiting for the whole body. The rows need the message's id and the batch's blind indexes only."""
    census, packed, batches = reading.census, reading.packed, reading.batches
    handoff = _Handoff(loop, writer.overlaps)
    visit = _both(census, packed)
    try:
        for number in range(packed.chunks if batches is None else len(batches)):
            if batches is not None:
                start, end = batches[number]
                try:
                    RECIPIENT_BATCH.validate_json(b"[" + raw[start:end] + b"]", context={"visit": visit})
                except ValidationError as exc:
                    _validate_whole(raw, _ignore)  # raises with pydantic's message, path and order for the whole
                    raise Unprocessable(describe_validation_error(exc)[1], code="invalid_field") from None
            handoff.send(writer.add_recipients, recipient_rows(message_id, census, packed, number, state.sealer))
        handoff.settle()
    except BaseException:
        handoff.abandon()
        raise


def _second_pass(
    plan: Plan, census: Census, packed: PackedRecipients, state: TrackerState, writer: MessageWriter,
    response: ResponseBody, loop: asyncio.AbstractEventLoop,
) -> None:  # fmt: skip
    """Seal and store the records, handing every recipient's token to ``response``.

    A batch of records, then the tokens of a batch of recipients, and so on: records cost little to build
    and much to store, tokens the other way round, so alternating keeps both the database and this
    thread busy. Records still go in their storage order (one batch after the other on one connection)."""
    handoff = _Handoff(loop, writer.overlaps)
    records = record_batches(plan, census, state.sealer)
    try:
        for emails, tokens in token_batches(plan, census, packed, state.tokens):
            handoff.send(writer.add_records, next(records, []))
            response.add(emails, tokens)
        for batch in records:
            handoff.send(writer.add_records, batch)
        handoff.settle()
    except BaseException:
        handoff.abandon()
        raise


async def register_message(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    principal = await state.auth.require(request, Role.SENDER)
    raw = await read_json_body(request)
    settings = state.settings
    # CPU-heavy steps run off the event loop so beacons keep being answered meanwhile.
    reading = await asyncio.to_thread(
        _read_envelope,
        raw,
        lambda: Census(state.keyring, settings.segment_attributes, limit=settings.max_recipients),
        settings.max_recipients,
    )
    body = reading.body
    mode = resolve_mode(body.mode, settings)
    check_limits(body, settings, reading.count)
    envelope = await asyncio.to_thread(
        plan_envelope, body, mode, settings, state.sealer, principal.token_id, reading.count
    )
    html, census, packed = body.html, reading.census, reading.packed
    del body
    loop = asyncio.get_running_loop()
    async with state.store.message_writer(envelope.message, envelope.links) as writer:
        await asyncio.to_thread(_first_pass, raw, reading, envelope.message.id, state, writer, loop)
        del raw, reading  # the recipients are packed: 13 MB for 100,000 of them go now, not after the answer
        objected = await find_objected(census, state.store)
        plan = await asyncio.to_thread(plan_records, envelope, census, objected, settings, state.tokens)
        if plan.message.tracked != envelope.message.tracked:
            await writer.set_tracked(plan.message.tracked)
        response = ResponseBody(plan)
        await asyncio.to_thread(_second_pass, plan, census, packed, state, writer, response, loop)
    del census, packed  # some 8 MB for 100,000 recipients, free before the answer grows
    sent = await _send(request, response.finish(html if objected else None))
    # Once answered (nothing else runs on this loop before this returns): first clicks need no lookup.
    ids, size = plan.record_ids, RECORD_ID_BYTES  # every position's record (objected ones: never handed out)
    state.click_cache.remember_message(
        plan.message.id, [ids[i : i + size] for i in range(0, len(ids), size)], plan.links
    )
    return sent


_SEND_PIECE = 256 * 1024


async def _send(request: web.Request, answer: bytearray) -> web.StreamResponse:
    """The 201 with ``answer`` as its body, the same bytes and headers as ``web.Response`` would send,
    written a piece at a time: handed over whole, what the socket does not take at once is copied into
    the transport's buffer (up to the whole answer, 8 MB for 100,000 recipients) at the moment memory
    peaks; a piece at a time, waiting for the socket to drain, the copy stays a piece."""
    out = web.StreamResponse(status=201, headers={"Cache-Control": "no-store"})
    out.content_type = "application/json"
    out.content_length = len(answer)
    await out.prepare(request)
    view = memoryview(answer)
    try:
        for at in range(0, len(answer), _SEND_PIECE):
            await out.write(view[at : at + _SEND_PIECE])
        await out.write_eof()
    except ConnectionResetError:
        pass  # the sender left before reading its answer, as aiohttp lets a whole one go unread
    return out
