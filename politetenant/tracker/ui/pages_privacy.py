"""The privacy officer's pages: the five subject rights as forms, the audit log, the chain's verdict.

Each right calls the same functions as ``/api/v1/subjects/*`` (``privacy.api_subjects.answer_*``), so
the answer and the audit entry are the API's; only the envelope differs (a form in, a page out). The
e-mail travels in the POST body only: a POST carrying a query string is refused before anything runs,
and no response echoes the address the officer typed (the access page shows addresses as held).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from pydantic import BaseModel, ValidationError

from politetenant.tracker.http.auth import Principal, Role
from politetenant.tracker.http.errors import BadRequest
from politetenant.tracker.http.state import STATE, TrackerState
from politetenant.tracker.privacy import api_audit, api_subjects, audit, subjects
from politetenant.tracker.ui.layout import (
    SECURITY_HEADERS,
    UiNotFound,
    e,
    empty_state,
    error_state,
    html_response,
    page,
    table_open,
    ui_handler,
)
from politetenant.tracker.ui.session import check_csrf, read_form, require_session

AUDIT_PAGE_SIZE = 50
INDEX_PREFIX = 12  # hex digits of a blind index shown: enough to tell entries apart, never an address
_NEWEST = 2**63 - 1  # before any id: the first page starts at the newest entry
_DAY_MS = 86_400_000
_ACTIONS = {right: audit.Action(f"subject.{right}") for right in ("access", "export", "rectify", "erase", "object")}
ERASE_CONFIRMATION = (
    "I understand this deletes what is held about this person and cannot be undone; published counts stay."
)


class FormProblem(ValueError):
    """A form the officer can correct; the message names fields, never the values typed. ``code`` is what
    the audit log records for the refusal, as the API records its error code."""

    def __init__(self, message: str, code: str = "invalid_field") -> None:
        super().__init__(message)
        self.code = code


# -- the forms ------------------------------------------------------------------------------------------

_RIGHTS: dict[str, tuple[str, str, str]] = {  # action -> (heading, what it does, button)
    "access": ("Access", "Shows everything held about the person, message by message, and their interactions"
               " where the message's tracking mode links them.", "Show what is held"),
    "export": ("Export", "The same document as access, as a JSON file to hand to the person.", "Download JSON"),
    "rectify": ("Rectify", "Corrects the name and HR attributes held for the person on every message.",
                "Correct"),
    "erase": ("Erase", "Deletes the person's recipient rows and, in individual mode, their records and"
              " interactions. Published counts stay.", "Erase"),
    "object": ("Object", "Stops tracking the person in future messages; what was sent stays until erased.",
               "Stop tracking"),
}  # fmt: skip


def _field(action: str, name: str, label: str, control: str) -> str:
    return f'<p class="field"><label for="{action}-{name}">{label}</label>{control}</p>'


def right_form(action: str, csrf: str) -> str:
    """One right's form: POST, the csrf field, a labelled e-mail input (never filled in: not echoed)."""
    heading, what, button = _RIGHTS[action]
    email = f'<input id="{action}-email" name="email" type="email" required autocomplete="off" spellcheck="false">'
    fields = [_field(action, "email", "E-mail address of the person", email)]
    if action == "rectify":
        fields += [
            _field(action, "name", "Corrected name (empty: keep the name held)",
                   f'<input id="{action}-name" name="name" type="text" maxlength="200" autocomplete="off">'),
            _checkbox(action, "remove_name", "Remove the name held"),
            _field(action, "attributes", "HR attributes, one name=value per line: they replace every attribute"
                   " held (empty: keep them)", f'<textarea id="{action}-attributes" name="attributes" rows="3">'
                   "</textarea>"),
            _checkbox(action, "remove_attributes", "Remove every HR attribute held"),
        ]  # fmt: skip
    if action == "erase":
        fields.append(_checkbox(action, "confirm", ERASE_CONFIRMATION, required=True))
    return (
        f'<section class="right" aria-labelledby="right-{action}"><h2 id="right-{action}">{heading}</h2>'
        f'<p>{what}</p><form method="post" action="/ui/privacy/subjects/{action}" class="form">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">{"".join(fields)}'
        f'<p><button type="submit">{button}</button></p></form></section>'
    )


def _checkbox(action: str, name: str, label: str, *, required: bool = False) -> str:
    extra = " required" if required else ""
    return (
        f'<p class="field checkbox"><input id="{action}-{name}" name="{name}" type="checkbox" value="yes"{extra}>'
        f'<label for="{action}-{name}">{e(label)}</label></p>'
    )


# -- from a form to the API's body ---------------------------------------------------------------------------


def parse_attributes(text: str) -> dict[str, str]:
    """``name=value`` lines (blank lines skipped) as a mapping; a line without ``=`` is named by number."""
    attributes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise FormProblem(f"attributes: line {number} has no '='; write one name=value per line")
        attributes[name.strip()] = value.strip()
    return attributes


def request_body(action: str, form: Mapping[str, str]) -> dict[str, Any]:
    """What the API would receive as JSON for this form: the e-mail, and for rectify only what changes."""
    body: dict[str, Any] = {"email": form.get("email", "")}
    if action == "rectify":
        name, attributes = form.get("name", "").strip(), form.get("attributes", "").strip()
        if form.get("remove_name") and name:
            raise FormProblem("name: give a corrected name or tick 'remove the name', not both")
        if form.get("remove_attributes") and attributes:
            raise FormProblem("attributes: give the attributes or tick 'remove every attribute', not both")
        if form.get("remove_name") or name:
            body["name"] = name or None
        if form.get("remove_attributes") or attributes:
            body["attributes"] = parse_attributes(attributes)
    elif action == "erase" and form.get("confirm") != "yes":
        raise FormProblem("confirm: tick the box to confirm the erasure", code="not_confirmed")
    return body


def validate(action: str, form: Mapping[str, str]) -> api_subjects.SubjectIn:
    """The API's body model, validated as the API validates it; FormProblem names what to correct."""
    model = api_subjects.RectifyIn if action == "rectify" else api_subjects.SubjectIn
    try:
        return model.model_validate(request_body(action, form))
    except ValidationError as exc:
        raise FormProblem(api_subjects.describe_body_error(exc)[1]) from None


# -- pages -------------------------------------------------------------------------------------------------


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _notes(notes: list[str]) -> str:
    return "" if not notes else '<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>"


def _facts(pairs: list[tuple[str, object]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in pairs) + "</dl>"


def _table(caption: str, head: list[str], rows: Sequence[Sequence[object]]) -> str:
    ths = "".join(f'<th scope="col">{e(h)}</th>' for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'{table_open(caption)}<thead><tr>{ths}</tr></thead>' \
        f"<tbody>{trs}</tbody></table></div>"  # fmt: skip


def access_body(document: subjects.AccessDocument) -> str:
    """What is held, one section per message; interactions only where the mode makes them linkable."""
    objection = (
        f"Objected to tracking since {_when(document.objection.since)}." if document.objection.since
        else "Has not objected to tracking."
    )  # fmt: skip
    parts = [_notes(document.notes), f"<p>{e(objection)}</p>"]
    for number, message in enumerate(document.messages, start=1):
        held = [[h.email, h.name or "(none)", ", ".join(f"{k}={v}" for k, v in h.attributes.items()) or "(none)"]
                for h in message.held]  # fmt: skip
        parts.append(
            f'<section aria-labelledby="message-{number}"><h2 id="message-{number}">{e(message.subject)}</h2>'
            + _facts([("Sent", _when(message.sent_at)), ("From", f"{message.from_name} <{message.from_email}>"),
                      ("List", message.list_name), ("Tracking mode", message.mode.value), ("Message id", message.id)])
            + _table("Held for this person", ["E-mail", "Name", "HR attributes"], held)
            + f"<p>{e(message.interactions_note)}</p>"
        )  # fmt: skip
        if message.interactions:
            rows = [
                [
                    i.kind,
                    _when(i.at),
                    i.url or "",
                    ", ".join(p for p in (i.city, i.country) if p),
                    f"{i.device} / {i.os} / {i.browser}",
                    "yes" if i.suspected_bot else "no",
                    "" if i.read_ms is None else f"{i.read_ms / 1000:.1f} s",
                ]
                for i in message.interactions
            ]
            parts.append(_table("Interactions", ["Kind", "When", "Link", "Place", "Device / OS / browser",
                                                 "Suspected machine", "Read time"], rows))  # fmt: skip
        parts.append("</section>")
    return "".join(parts)


def change_body(result: BaseModel) -> str:
    """What rectify, erase or object changed, in figures, with the notes the API returns."""
    if isinstance(result, subjects.RectifyResult):
        c = result.updated
        facts = [("Fields changed", ", ".join(result.changed)), ("Messages", c.messages),
                 ("Recipient rows", c.recipient_rows), ("Tracking records", c.records)]  # fmt: skip
    elif isinstance(result, subjects.EraseResult):
        c = result.erased
        facts = [("Messages", c.messages), ("Recipient rows", c.recipient_rows), ("Tracking records", c.records),
                 ("Interactions", c.events)]  # fmt: skip
    elif isinstance(result, subjects.ObjectResult):
        facts = [("Objected since", _when(result.since)), ("Already objected", "yes" if result.already_objected
                 else "no")]  # fmt: skip
    notes: list[str] = getattr(result, "notes", [])
    return _facts(facts) + _notes(notes)


_DONE = {"rectify": "Correction done", "erase": "Erasure done", "object": "Objection recorded"}


def _back() -> str:
    return '<p><a href="/ui/privacy">Back to the subject-rights forms</a></p>'


def _export(document: subjects.AccessDocument) -> web.Response:
    """The API's download, with the dashboard's security headers."""
    disposition = f'attachment; filename="{api_subjects.EXPORT_FILENAME}"'
    return web.Response(
        body=document.model_dump_json(), content_type="application/json",
        headers={**SECURITY_HEADERS, "Content-Disposition": disposition},
    )  # fmt: skip


async def _answer(state: TrackerState, who: Principal, action: str, body: Any) -> BaseModel:
    if action in ("access", "export"):
        return await api_subjects.answer_access(state, who, body, _ACTIONS[action])
    if action == "rectify":
        return await api_subjects.answer_rectify(state, who, body)
    if action == "erase":
        return await api_subjects.answer_erase(state, who, body)
    return await api_subjects.answer_object(state, who, body)


@ui_handler
async def subject_action(request: web.Request) -> web.Response:
    """``POST /ui/privacy/subjects/{action}``: one right, from its form, answered as the API answers it."""
    session = await require_session(request, Role.PRIVACY)
    form = await read_form(request)
    check_csrf(session, form)
    action = request.match_info.get("action", "")
    if action not in _ACTIONS:
        raise UiNotFound("There is no such subject right: use one of the forms on the privacy page.", session=session)
    state, who = request.app[STATE], session.principal
    try:
        if request.query_string:
            raise FormProblem("the address goes in the form, never in the address bar: send the form again",
                              code="query_not_allowed")  # fmt: skip
        body = validate(action, form)
    except FormProblem as exc:
        await api_subjects.record_refusal(state, who, _ACTIONS[action], exc.code)
        status = 400 if exc.code == "query_not_allowed" else 422
        content = error_state(f"Nothing was done. {exc}.") + right_form(action, session.csrf) + _back()
        return html_response(page(f"{_RIGHTS[action][0]}: correct the form", content, session=session,
                                  active="privacy"), status)  # fmt: skip
    result = await _answer(state, who, action, body)
    if isinstance(result, subjects.AccessDocument):
        if action == "export":
            return _export(result)
        title = "What is held about this person" if result.found else "Nothing is held about this person"
        return html_response(page(title, access_body(result) + _back(), session=session, active="privacy"))
    found = getattr(result, "found", True)
    title = _DONE[action] if found else "No data held: nothing changed"
    return html_response(page(title, change_body(result) + _back(), session=session, active="privacy"))


# -- the audit chain's verdict -------------------------------------------------------------------------------


def verdict_section(verdict: api_audit.AuditVerdict) -> str:
    status = "Intact" if verdict.ok else "Tampering detected"
    advice = "" if verdict.ok else (
        "<p>Do not rely on entries from the one named on. Keep a copy of the database and the anchor file as"
        " they are, and tell your security team.</p>"
    )  # fmt: skip
    lines = "".join(f"<p>{e(line)}</p>" for line in verdict.message.splitlines())
    return (
        '<section aria-labelledby="verify"><h2 id="verify">Audit log integrity</h2>'
        f'<p class="status {"status-ok" if verdict.ok else "status-bad"}"><strong>{status}</strong></p>'
        f'{lines}{advice}<p><a href="/ui/privacy/audit">Read the audit log</a></p></section>'
    )


@ui_handler
async def privacy_page(request: web.Request) -> web.Response:
    """``GET /ui/privacy``: the five forms and the audit chain's verification result."""
    session = await require_session(request, Role.PRIVACY)
    verdict = await api_audit.audit_verdict(request.app[STATE])
    intro = (
        "<p>Answer a person's request about their data. Type their e-mail address in the form of the right they"
        " asked for: it is sent in the form's body, never in an address, and the audit log keeps only a blind"
        " index of it.</p>"
    )
    forms = "".join(right_form(action, session.csrf) for action in _RIGHTS)
    return html_response(page("Privacy: subject rights", intro + verdict_section(verdict) + forms,
                              session=session, active="privacy"))  # fmt: skip


# -- the audit log -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilters:
    action: str  # "" for every action
    since: str  # YYYY-MM-DD or ""
    until: str  # YYYY-MM-DD or "" (inclusive: the whole day)
    before_id: int  # the cursor: entries older than this id

    def query(self, **changes: object) -> str:
        values = {"action": self.action, "since": self.since, "until": self.until, **changes}
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def audit_filters(query: Mapping[str, str]) -> AuditFilters:
    """Filters from the GET form; FormProblem names the field to correct. Empty fields mean no filter."""
    action, since, until = (query.get(name, "").strip() for name in ("action", "since", "until"))
    if action and action not in {a.value for a in audit.Action}:
        raise FormProblem("action: choose one from the list")
    for name, value in (("since", since), ("until", until)):
        try:
            date.fromisoformat(value) if value else None
        except ValueError:
            raise FormProblem(f"{name}: give a date as YYYY-MM-DD") from None
    cursor = query.get("cursor", "")
    if cursor and not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise FormProblem("cursor: follow the 'older entries' link rather than editing the address")
    return AuditFilters(action, since, until, int(cursor) if cursor else _NEWEST)


def newest_first_query(filters: AuditFilters, limit: int) -> tuple[str, list[Any]]:
    """The API's query (``api_audit.audit_query``) walked backwards: newest first, from a cursor down."""
    try:
        since = api_audit.parse_time("since", filters.since) if filters.since else None
        until = api_audit.parse_time("until", filters.until) + _DAY_MS if filters.until else None
    except BadRequest as exc:
        raise FormProblem(exc.message) from None
    actions = api_audit.parse_actions([filters.action]) if filters.action else []
    sql, args = api_audit.audit_query(
        since=since, until=until, actions=actions, after_id=filters.before_id, limit=limit
    )  # fmt: skip
    return sql.replace("WHERE id > $1", "WHERE id < $1").replace("ORDER BY id", "ORDER BY id DESC"), args


def _filter_form(filters: AuditFilters) -> str:
    options = ['<option value="">Every action</option>'] + [
        f'<option value="{a.value}"{" selected" if a.value == filters.action else ""}>{a.value}</option>'
        for a in audit.Action
    ]
    return (
        '<form method="get" action="/ui/privacy/audit" class="form filters">'
        f'<p class="field"><label for="audit-action">Action</label><select id="audit-action" name="action">'
        f"{''.join(options)}</select></p>"
        f'<p class="field"><label for="audit-since">From (UTC)</label><input id="audit-since" name="since"'
        f' type="date" value="{e(filters.since)}"></p>'
        f'<p class="field"><label for="audit-until">To (UTC, inclusive)</label><input id="audit-until" name="until"'
        f' type="date" value="{e(filters.until)}"></p><p><button type="submit">Filter</button></p></form>'
    )


def entries_body(entries: list[api_audit.AuditEntry], filters: AuditFilters, more: bool) -> str:
    """The table of entries (subjects by blind-index prefix) and the links to page through them."""
    filtered = bool(filters.action or filters.since or filters.until)
    if not entries:
        text = (
            "No entries match these filters: widen the dates or choose every action."
            if filtered
            else "The audit log is empty: entries appear when someone reads a report or answers a request."
        )
        return empty_state(text)  # fmt: skip
    rows = [[_when(x.at), x.action, x.outcome, (x.subject_index or "")[:INDEX_PREFIX] + ("…" * bool(x.subject_index)),
             f"{x.role} {x.token_id}", x.detail, x.id] for x in entries]  # fmt: skip
    table = _table("Audit log entries, newest first", ["When", "Action", "Outcome", "Subject (blind index)",
                                                       "By", "Detail", "Entry"], rows)  # fmt: skip
    links = []
    if filters.before_id != _NEWEST:
        links.append(f'<a href="/ui/privacy/audit?{e(filters.query())}">Newest entries</a>')
    if more:
        links.append(f'<a href="/ui/privacy/audit?{e(filters.query(cursor=entries[-1].id))}">Older entries</a>')
    nav = f'<nav aria-label="Audit log pages" class="pager">{" ".join(links)}</nav>' if links else ""
    return table + nav


@ui_handler
async def audit_page(request: web.Request) -> web.Response:
    """``GET /ui/privacy/audit``: the log, newest first, filtered by action and dates, a page at a time."""
    session = await require_session(request, Role.PRIVACY)
    state = request.app[STATE]
    try:
        filters = audit_filters(request.query)
        sql, args = newest_first_query(filters, AUDIT_PAGE_SIZE)
    except FormProblem as exc:
        empty = AuditFilters("", "", "", _NEWEST)
        body = error_state(f"{exc}. Correct the filter and try again.") + _filter_form(empty)
        return html_response(page("Audit log", body, session=session, active="audit"), 400)
    rows = await state.store.fetch(sql, *args)
    entries = [api_audit._entry(row) for row in rows[:AUDIT_PAGE_SIZE]]
    body = _filter_form(filters) + entries_body(entries, filters, len(rows) > AUDIT_PAGE_SIZE)
    return html_response(page("Audit log", body, session=session, active="audit"))
