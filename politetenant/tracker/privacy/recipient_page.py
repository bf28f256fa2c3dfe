"""The recipient's page, ``/p/{token}``: what is recorded for the holder of this e-mail, and a form
to stop being tracked (``POST /p/{token}/object``), linked from the tenant's notice in each message.

- A GET never changes anything: mail scanners follow every link. Objecting takes the form's POST,
  which carries a CSRF token (an HMAC over the tracking token and a five-minute time bucket, keyed
  from the tenant's keys, valid about an hour); no cookie is ever set.
- The page speaks of this record only: its own figures in individual and anonymous mode, none in
  aggregate mode (the one shared record is everyone's).
- Individual mode: the record carries the recipient's blind index, so the form objects for them.
  Anonymous and aggregate modes: nothing stored joins a record to a person (that is the point), so the
  form asks for the address and objects only when it received this message; the answer is the same
  page either way, so the form tells nobody who received what. The address and the record are joined
  only in this request's memory; the audit entry names the subject by blind index, never the record.
- The page is English; the notice languages are the tenant's, translating the page is out of scope.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any, Final
from urllib.parse import parse_qsl

from aiohttp import web
from pydantic import ValidationError

from politetenant.crypto import Keyring, recipient_row
from politetenant.settings import TrackerSettings, TrackingMode
from politetenant.tracker.http.openapi import ERROR_SCHEMA, Operation
from politetenant.tracker.http.state import STATE, TrackerState
from politetenant.tracker.judging.verdicts import counts_as_person
from politetenant.tracker.privacy import audit, subjects
from politetenant.tracker.privacy.api_subjects import SubjectIn
from politetenant.tracker.storage.base import StorageUnavailable, marks
from politetenant.tracker.storage.rows import EventKind

ACTOR: Final = ("recipient-page", "recipient")
FORM_MAX_BYTES: Final = 4096
CSRF_BUCKET_SECONDS: Final = 300
CSRF_MAX_AGE_BUCKETS: Final = 12  # a form is good for 55 to 60 minutes
MAX_DEVICES_SHOWN: Final = 10


def _page_response(description: str, *, json_too: bool = False) -> dict[str, Any]:
    # json_too: the router's own 404 (a path no route matches) is the API's JSON error
    json = {"application/json": {"schema": ERROR_SCHEMA}} if json_too else {}
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}, **json}}


_ERRORS = {
    404: _page_response("Unknown or expired tracking token: a plain page, no detail.", json_too=True),
    503: _page_response("The database is unavailable; try again shortly."),
}
OPERATIONS = [
    Operation("GET", "/p/{token}", "The recipient's page: what is recorded for this copy of the message, and a"
              " form to stop being tracked (never objects by itself)", response={"type": "string"},
              content_type="text/html", extra_responses=_ERRORS),
    Operation("POST", "/p/{token}/object", "Stop tracking the recipient: the page's form"
              " (application/x-www-form-urlencoded: csrf, and email in anonymous and aggregate modes)",
              response={"type": "string"}, content_type="text/html", extra_responses={
                  **_ERRORS, 400: _page_response("The form could not be read."),
                  403: _page_response("Missing, forged or expired form token: open the page again."),
                  413: _page_response(f"A form larger than {FORM_MAX_BYTES} bytes.")}),
]  # fmt: skip


# -- the form's CSRF token (pure) --------------------------------------------------------------------


def csrf_keys(keyring: Keyring) -> list[bytes]:
    """The keys a form token may be made with, newest first (a form survives a key rotation)."""
    label = b"politetenant/recipient-page-csrf/" + keyring.tenant_bytes
    versions = sorted(keyring.versions, reverse=True)
    return [hmac.new(keyring.get(v).token_key, label, hashlib.sha256).digest() for v in versions]  # type: ignore[union-attr]


def _csrf_mac(key: bytes, token: str, bucket: int) -> str:
    digest = hmac.new(key, f"{token}\x00{bucket}".encode("ascii", "replace"), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode("ascii")


def issue_csrf(key: bytes, token: str, now: float) -> str:
    """A form token for this tracking token, stamped with the current time bucket."""
    bucket = int(now // CSRF_BUCKET_SECONDS)
    return f"{bucket}.{_csrf_mac(key, token, bucket)}"


def csrf_valid(keys: Sequence[bytes], token: str, value: str, now: float) -> bool:
    """True for a form token issued for this tracking token within the last hour by any of ``keys``."""
    bucket_text, _, mac = value.partition(".")
    if not bucket_text.isascii() or not bucket_text.isdigit() or len(bucket_text) > 12:
        return False
    bucket = int(bucket_text)
    if not 0 <= int(now // CSRF_BUCKET_SECONDS) - bucket < CSRF_MAX_AGE_BUCKETS:
        return False
    return any(hmac.compare_digest(_csrf_mac(key, token, bucket), mac) for key in keys)


# -- what the page shows (pure) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    """What is stored for one record: counts, the first open, device families as stored."""

    opens: int = 0
    reads: int = 0
    clicks: int = 0
    automated: int = 0  # of all the above, judged not to be a person's (scanners, proxies on delivery)
    first_open_ms: int | None = None
    devices: tuple[str, ...] = ()


def figures_of(counts: Sequence[tuple[int, int, int, int | None]], devices: Sequence[tuple[str, str, str]]) -> Figures:
    """Figures from rows (kind, reason, count, first time) and distinct (device, os, browser)."""
    totals = {EventKind.OPEN: 0, EventKind.READ: 0, EventKind.CLICK: 0}
    automated, first_open = 0, None
    for kind, reason, count, first in counts:
        totals[EventKind(kind)] += count
        automated += 0 if counts_as_person(reason) else count
        if kind == EventKind.OPEN and first is not None:
            first_open = first if first_open is None else min(first_open, first)
    shown = sorted({" · ".join(part for part in row if part) for row in devices} - {""})
    return Figures(totals[EventKind.OPEN], totals[EventKind.READ], totals[EventKind.CLICK], automated, first_open,
                   tuple(shown[:MAX_DEVICES_SHOWN]))  # fmt: skip


STYLE: Final = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;line-height:1.5;"
    "color:#1a1a1a;background:#fff}h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.75rem}"
    "dt{font-weight:600}dd{margin:0 0 .5rem 0}label{display:block;font-weight:600;margin:.75rem 0 .25rem}"
    "input{font:inherit;padding:.4rem;width:100%;max-width:24rem;box-sizing:border-box}button{font:inherit;margin-top:.75rem;"
    "padding:.5rem 1rem;cursor:pointer}:focus{outline:3px solid #1a5fb4;outline-offset:2px}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode("ascii")
PAGE_HEADERS: Final = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Content-Security-Policy": f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
}

MODE_TEXT: Final = {
    TrackingMode.INDIVIDUAL: (
        "This message was sent in <strong>individual</strong> mode: interactions with it are recorded against your"
        " e-mail address (through a keyed pseudonym), so that the privacy officer can show them to you."
    ),
    TrackingMode.ANONYMOUS: (
        "This message was sent in <strong>anonymous</strong> mode: interactions with this copy are recorded without"
        " your address, and nothing stored links them to you."
    ),
    TrackingMode.AGGREGATE: (
        "This message was sent in <strong>aggregate</strong> mode: nothing individual is recorded, only one shared"
        " counter for all recipients. That is why this page shows no figures: the shared record is everyone's."
    ),
}
_IF_RECEIVED: Final = "If this address received this message, it will not be tracked in future messages."
CONFIRMED: Final = {TrackingMode.INDIVIDUAL: "Your address will not be tracked in future messages.",
                    TrackingMode.ANONYMOUS: _IF_RECEIVED, TrackingMode.AGGREGATE: _IF_RECEIVED}  # fmt: skip
PROBLEMS: Final = {
    400: ("The form could not be read", "Open this page again from the link in the message and send the form there."),
    403: ("This form has expired", "The form is valid for an hour and only from its own page. Open the page again"
          " from the link in the message and send the form there."),
    404: ("Page not found", "This link is not known here. It may have expired with the data it referred to."),
    413: ("The form is too large", "Open this page again from the link in the message and send the form there."),
    503: ("Not available right now", "This page cannot be shown at the moment. Please try again later."),
}  # fmt: skip


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex, nofollow"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><main>{body}</main></body></html>\n"
    )


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _figures_html(mode: TrackingMode, figures: Figures) -> str:
    whose = "recorded against your address" if mode is TrackingMode.INDIVIDUAL else "recorded for this copy"
    devices = ", ".join(escape(d) for d in figures.devices) or "none"
    first = "not opened yet" if figures.first_open_ms is None else _when(figures.first_open_ms)
    return (
        f"<h2>What is {whose}</h2><dl>"
        f"<dt>Opens</dt><dd>{figures.opens}</dd><dt>Reading-time measurements</dt><dd>{figures.reads}</dd>"
        f"<dt>Link clicks</dt><dd>{figures.clicks}</dd><dt>First opened</dt><dd>{first}</dd>"
        f"<dt>Devices (type, operating system, program)</dt><dd>{devices}</dd>"
        f"<dt>Judged automated</dt><dd>{figures.automated} of these (for example a mail security scanner"
        " checking the message before you saw it)</dd></dl>"
        "<p>An approximate place (country, region, city) is kept with each interaction too; it is not shown"
        " here because anyone holding this message's link can open this page.</p>"
    )


def render_page(
    mode: TrackingMode, figures: Figures | None, token: str, csrf: str, settings: TrackerSettings
) -> str:  # fmt: skip
    """The page for one record: the mode in plain words, its own figures (never in aggregate mode),
    what is never recorded, retention, whom to ask, and the form to stop being tracked."""
    parts = [
        "<h1>What is recorded about this e-mail</h1>",
        "<p>The organisation that sent you this message measures how its e-mail is read. This page tells"
        " whoever holds this message what is recorded about it, and lets you stop being tracked.</p>",
        f"<p>{MODE_TEXT[mode]}</p>",
    ]
    if figures is not None and mode is not TrackingMode.AGGREGATE:
        parts.append(_figures_html(mode, figures))
        if settings.segment_attributes:
            names = ", ".join(escape(name) for name in settings.segment_attributes)
            parts.append(f"<p>Kept with it for statistics, when your organisation holds them: {names}.</p>")
    hold = " Deletion is suspended at the moment by a legal hold." if settings.legal_hold else ""
    parts.append(
        "<h2>What is never recorded</h2><p>Your IP address and your mail program's or browser's user-agent string"
        " are never stored: each request is judged when it arrives (approximate place, device type, operating"
        " system, program, whether it looks automated) and then they are dropped.</p>"
        f"<h2>How long it is kept</h2><p>Interaction data is deleted after {settings.retention_interaction_days}"
        f" days, message data (who a message was sent to) after {settings.retention_message_days} days.{hold}</p>"
        "<h2>Stop being tracked</h2><p>Future messages to your address will then carry no tracking at all."
        " What is already recorded stays until it is deleted; the privacy officer can erase it sooner.</p>"
        f'<form method="post" action="{escape(token)}/object">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
    )
    if mode is not TrackingMode.INDIVIDUAL:
        parts.append(
            '<label for="email">Your e-mail address</label>'
            '<input id="email" name="email" type="email" autocomplete="email" required maxlength="320">'
            "<p>Nothing stored links this message to you, so we need the address it was sent to.</p>"
        )
    parts.append(
        '<button type="submit">Stop tracking me</button></form>'
        "<h2>Your rights</h2><p>To see, correct, export or erase what is held about you, contact the privacy"
        " officer of the organisation that sent you this message (its privacy notice says how).</p>"
        "<p>This page is in English only; the notice in the message is in the sender's languages.</p>"
    )
    return _document("What is recorded about this e-mail", "".join(parts))


def render_confirmation(mode: TrackingMode) -> str:
    """The answer to an accepted form: the same words whether or not the address matched."""
    body = (
        f"<h1>Done</h1><p>{CONFIRMED[mode]}</p><p>Interactions already recorded stay until they are deleted;"
        " the privacy officer of the organisation that sent you the message can erase them sooner.</p>"
    )
    return _document("Done", body)


def render_problem(status: int, back: str | None = None) -> str:
    """A plain page for a refusal, with nothing about the token or the record."""
    title, text = PROBLEMS[status]
    link = "" if back is None else f'<p><a href="{escape(back)}">Back to the page</a></p>'
    return _document(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>{link}")


def page_response(status: int, html: str) -> web.Response:
    return web.Response(status=status, body=html.encode("utf-8"), headers=PAGE_HEADERS)


# -- reading the record and the form ---------------------------------------------------------------------


class PageProblem(Exception):
    """A refusal answered with ``render_problem(status)``."""

    def __init__(self, status: int, *, back: bool = False) -> None:
        super().__init__(status)
        self.status, self.back = status, back


@dataclass(frozen=True, slots=True)
class FoundRecord:
    record_id: bytes
    message_id: str
    mode: TrackingMode
    subject_index: bytes | None


async def find_record(state: TrackerState, token: str) -> FoundRecord:
    """The record a genuine token names, with its message's mode; PageProblem(404) otherwise."""
    verified = state.tokens.verify(token)
    if verified is None:
        state.metrics.rejected_tokens.inc()
        raise PageProblem(404)
    rows = await state.store.fetch(
        "SELECT r.message_id, m.mode, r.subject_index FROM records r JOIN messages m ON m.id = r.message_id"
        " WHERE r.id = $1",
        verified.record_id,
    )
    if not rows:  # erased, or purged by retention
        raise PageProblem(404)
    message_id, mode, subject_index = rows[0]
    return FoundRecord(verified.record_id, message_id, TrackingMode(mode), None if subject_index is None
                       else bytes(subject_index))  # fmt: skip


async def load_figures(state: TrackerState, record_id: bytes) -> Figures:
    store = state.store
    counts = await store.fetch(
        "SELECT kind, bot, COUNT(*), MIN(occurred_at) FROM events WHERE record_id = $1 GROUP BY kind, bot", record_id
    )
    devices = await store.fetch("SELECT DISTINCT device, os, browser FROM events WHERE record_id = $1", record_id)
    return figures_of(
        [(int(k), int(b), int(c), None if f is None else int(f)) for k, b, c, f in counts],
        [(str(d), str(o), str(b)) for d, o, b in devices],
    )


def parse_form(content_type: str, raw: bytes) -> dict[str, str]:
    """The fields of a urlencoded form; an empty body is an empty form. PageProblem(400) if malformed."""
    if not raw:
        return {}
    if content_type != "application/x-www-form-urlencoded":
        raise PageProblem(400, back=True)
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=True, errors="strict",
                          max_num_fields=8)  # fmt: skip
    except ValueError:  # also UnicodeDecodeError: not ASCII, or percent-escapes that are not UTF-8
        raise PageProblem(400, back=True) from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise PageProblem(400, back=True)
    return fields


async def read_form(request: web.Request) -> dict[str, str]:
    """Read at most FORM_MAX_BYTES of the body, whatever Content-Length claims; PageProblem(413) beyond."""
    if request.content_length is not None and request.content_length > FORM_MAX_BYTES:
        raise PageProblem(413, back=True)
    raw = bytearray()
    async for chunk in request.content.iter_any():
        raw += chunk
        if len(raw) > FORM_MAX_BYTES:
            raise PageProblem(413, back=True)
    return parse_form(request.content_type, bytes(raw))


# -- objecting ------------------------------------------------------------------------------------------


async def _object(state: TrackerState, found: FoundRecord, subject: subjects.Subject | None) -> None:
    """Object for ``subject`` (None: no recipient of this message matched) and write the audit entry."""
    detail = f"via=recipient-page mode={found.mode.value}"
    if subject is None:
        await audit.record(state.store, state.keyring, ACTOR, audit.Action.SUBJECT_OBJECT, outcome="no_match",
                           detail=detail)  # fmt: skip
        return
    result = await subjects.object_to_tracking(state.store, subject, int(time.time() * 1000))
    detail += f" already_objected={str(result.already_objected).lower()}"
    await audit.record(state.store, state.keyring, ACTOR, audit.Action.SUBJECT_OBJECT,
                       subject_index=subject.current_index, outcome="ok", detail=detail)  # fmt: skip


async def recipient_of_record(state: TrackerState, found: FoundRecord) -> subjects.Subject | None:
    """Individual mode: the recipient the record's pseudonym names, from their row of this message."""
    if found.subject_index is None:
        return None
    rows = await state.store.fetch(
        "SELECT email, email_index FROM recipients WHERE message_id = $1 AND email_index = $2",
        found.message_id, found.subject_index,
    )  # fmt: skip
    if not rows:  # the row was erased since: the pseudonym itself still names the person
        return subjects.Subject(found.subject_index, (found.subject_index,))
    email, email_index = bytes(rows[0][0]), bytes(rows[0][1])
    address = state.sealer.open_text("recipient.email", email, row=recipient_row(found.message_id, email_index))
    return subjects.Subject.of(state.keyring, address)


async def recipient_by_address(state: TrackerState, found: FoundRecord, email: str) -> subjects.Subject | None:
    """Anonymous and aggregate modes: the person at ``email`` if they received this message, else None."""
    subject = subjects.Subject.of(state.keyring, email)
    rows = await state.store.fetch(
        f"SELECT COUNT(*) FROM recipients WHERE message_id = $1 AND email_index IN ({marks(len(subject.indexes), 2)})",
        found.message_id, *subject.indexes,
    )  # fmt: skip
    return subject if rows and int(rows[0][0]) > 0 else None


def form_address(fields: Mapping[str, str]) -> str:
    """The address the form names, validated as the privacy API validates one; PageProblem(400) if not."""
    try:
        return SubjectIn(email=fields.get("email", "")).email
    except ValidationError:
        raise PageProblem(400, back=True) from None


# -- handlers ---------------------------------------------------------------------------------------------

Handler = Callable[[web.Request, TrackerState, str], Awaitable[web.Response]]


def _plain_errors(handler: Handler, back: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Refusals as plain pages (never the API's JSON): the page's readers are people."""

    async def wrapped(request: web.Request) -> web.Response:
        token = request.match_info["token"]
        try:
            return await handler(request, request.app[STATE], token)
        except PageProblem as problem:
            return page_response(problem.status, render_problem(problem.status, back + token if problem.back else None))
        except StorageUnavailable:
            return page_response(503, render_problem(503))

    return wrapped


async def show_page(request: web.Request, state: TrackerState, token: str) -> web.Response:
    found = await find_record(state, token)
    figures = None if found.mode is TrackingMode.AGGREGATE else await load_figures(state, found.record_id)
    csrf = issue_csrf(csrf_keys(state.keyring)[0], token, time.time())
    return page_response(200, render_page(found.mode, figures, token, csrf, state.settings))


async def object_form(request: web.Request, state: TrackerState, token: str) -> web.Response:
    found = await find_record(state, token)
    fields = await read_form(request)
    if not csrf_valid(csrf_keys(state.keyring), token, fields.get("csrf", ""), time.time()):
        raise PageProblem(403, back=True)
    if found.mode is TrackingMode.INDIVIDUAL:
        subject = await recipient_of_record(state, found)
    else:
        subject = await recipient_by_address(state, found, form_address(fields))
    await _object(state, found, subject)
    return page_response(200, render_confirmation(found.mode))


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the page and its form on the public listener."""
    router.add_get("/p/{token}", _plain_errors(show_page, back=""))
    router.add_post("/p/{token}/object", _plain_errors(object_form, back="../"))
