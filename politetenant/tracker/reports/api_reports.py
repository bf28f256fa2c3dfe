"""Reading what messages did: the list, a report, its CSV export (analyst), and per-recipient rows
of an individual-mode message (privacy). Every read is written to the audit log.

Thresholds are applied in ``reports``/``thresholds`` before anything leaves this module; the only
per-recipient data served is ``/recipients``, to the privacy role, for individual-mode messages.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from politetenant.settings import TrackingMode
from politetenant.tracker.http.auth import Principal, Role
from politetenant.tracker.http.errors import ApiError, BadRequest, Forbidden, NotFound, Unprocessable
from politetenant.tracker.http.openapi import Operation
from politetenant.tracker.http.state import STATE, TrackerState
from politetenant.tracker.privacy import audit
from politetenant.tracker.reports.dashboard import (
    MESSAGE_CURSOR,
    SEGMENT,
    InvalidCursor,
    SegmentRefused,
    audit_detail,
    check_segment,
    filtered_messages,
    read_export,
    read_report,
    record_list_read,
)
from politetenant.tracker.reports.recipients import recipient_page
from politetenant.tracker.reports.report_data import rules_for
from politetenant.tracker.storage.rows import MessageRow

# Keyset cursors: every string the pattern allows is a place in the list (the API never 400s one).
_RECIPIENT_CURSOR = re.compile(r"^([0-9]{1,18})$")  # the last recipient row
_NO_STORE = {"Cache-Control": "no-store"}


class Conflict(ApiError):
    status, code = 409, "conflict"


# -- response shapes, for the OpenAPI document (tests validate real responses against them) ----------
class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UniqueTotal(_Out):
    unique: int | None  # null in aggregate mode: one record for everyone, no distinct people
    total: int


class UniqueOnly(_Out):
    unique: int | None


class BotCounts(_Out):
    opens: int
    clicks: int


class ReasonBucket(_Out):
    label: str  # a machine reason: scanner_agent, gateway_click, honeypot_burst...
    records: int  # records with a hit judged so (a record counts once per reason it has)


class ReasonBreakdown(_Out):
    buckets: list[ReasonBucket]
    other: int | None


class MachineFigures(_Out):
    records: int | None  # null in aggregate mode
    opens: int
    clicks: int
    by_reason: ReasonBreakdown | None  # null in aggregate mode


class ContentFigures(_Out):
    links: int
    word_count: int
    flesch_reading_ease: float | None


class ReportRates(_Out):
    open: float | None
    click: float | None
    click_to_open: float | None
    read: float | None  # readers / openers (people's)


class HeatmapCell(_Out):
    weekday: int = Field(ge=0, le=6)  # UTC, Monday = 0
    hour: int = Field(ge=0, le=23)  # UTC
    records: int  # openers whose first open fell in that hour of that weekday


class OpensHeatmap(_Out):
    cells: list[HeatmapCell]  # cells below the threshold are never shown
    other: int | None  # the openers of the cells not shown; null: none, or below the threshold


class ReportBucket(_Out):
    label: str
    records: int


class ReportBreakdown(_Out):
    buckets: list[ReportBucket]  # labels below the threshold are never named
    other: int | None  # null: nothing folded, or "other" itself below the threshold


class ReadTimeBreakdown(ReportBreakdown):
    median_ms: int | None


class LinkClicks(_Out):
    unique: int
    total: int


class LinkFigures(_Out):
    link: int
    text: str
    url: str
    clicks: LinkClicks | None  # null: below the threshold, counted in "other"


class LinkBreakdown(_Out):
    buckets: list[LinkFigures]
    other: LinkClicks | None


class TimeWindow(_Out):
    start: int  # epoch ms, on the hour
    end: int  # exclusive
    records: int  # people whose first open (or click) falls in the window


class ReportTimeline(_Out):
    opens: list[TimeWindow]
    clicks: list[TimeWindow]


class ApartFigures(_Out):
    """Hits that were not a person's own; each object is null while its records are 1 to k-1 (in a
    segment: in any segment). ``bots`` adds up the machine and privacy-proxy hits shown."""

    proxied_opens: UniqueTotal | None  # webmail image proxies fetching for a person: in opens too
    privacy_proxy_opens: UniqueTotal | None  # Apple Mail Privacy Protection: never in opens or rates
    machine: MachineFigures | None
    bots: BotCounts


class PopulationFigures(ApartFigures):
    tracked: int
    opens: UniqueTotal
    clicks: UniqueTotal
    reads: UniqueOnly
    rates: ReportRates
    read_time: ReadTimeBreakdown
    breakdowns: dict[str, ReportBreakdown]
    links: LinkBreakdown
    timeline: ReportTimeline


class SegmentFigures(PopulationFigures):
    value: str


class ReportSegments(_Out):
    attribute: str
    values: list[SegmentFigures]
    other: PopulationFigures | None  # the segments below the threshold, together


class MessageReport(_Out):
    """A message's report; when ``suppressed`` only ``id`` is there besides it."""

    id: str
    suppressed: bool
    mode: str | None = None
    created_at: int | None = None
    recipients: int | None = None
    tracked: int | None = None
    opens: UniqueTotal | None = None
    clicks: UniqueTotal | None = None
    reads: UniqueOnly | None = None
    proxied_opens: UniqueTotal | None = None
    privacy_proxy_opens: UniqueTotal | None = None
    machine: MachineFigures | None = None
    bots: BotCounts | None = None
    content: ContentFigures | None = None
    rates: ReportRates | None = None
    read_time: ReadTimeBreakdown | None = None
    breakdowns: dict[str, ReportBreakdown] | None = None
    links: LinkBreakdown | None = None
    timeline: ReportTimeline | None = None
    heatmap: OpensHeatmap | None = None  # the whole message's openers only, never per segment
    segments: ReportSegments | None = None


class MessageSummary(_Out):
    id: str
    suppressed: bool
    created_at: int
    mode: str
    subject: str
    list_name: str
    recipients: int | None = None
    tracked: int | None = None
    opens: UniqueTotal | None = None
    clicks: UniqueTotal | None = None
    reads: UniqueOnly | None = None
    proxied_opens: UniqueTotal | None = None
    privacy_proxy_opens: UniqueTotal | None = None
    machine: MachineFigures | None = None
    bots: BotCounts | None = None
    content: ContentFigures | None = None


class MessagePage(_Out):
    messages: list[MessageSummary]
    next_cursor: str | None


class RecipientFiguresOut(_Out):
    email: str
    name: str | None
    attributes: dict[str, str] | None
    tracked: bool  # false: the person objected, nothing was recorded
    opened: bool
    first_open_at: int | None
    opens: int
    clicks: int
    read_ms: int | None


class MessageRecipientsPage(_Out):
    id: str
    recipients: list[RecipientFiguresOut]
    next_cursor: str | None


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _limit_parameter(default: int, maximum: int) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": 1, "maximum": maximum}
    return _query("limit", f"Items per page, 1 to {maximum} (default {default}).", schema)


def _cursor_parameter(pattern: re.Pattern[str]) -> dict[str, Any]:
    return _query("cursor", "The next_cursor of the previous page.", {"type": "string", "pattern": pattern.pattern})


_SEGMENT_PARAMETER = _query(
    "segment",
    "A segment attribute of the tenant (department, campus...): the same figures per value.",
    {"type": "string", "pattern": SEGMENT.pattern},
)
OPERATIONS = [
    Operation("GET", "/api/v1/messages", "Messages, newest first, with their headline figures (thresholds applied)",
              roles=("analyst",), response=MessagePage, errors=(400,),
              parameters=(_limit_parameter(20, 100), _cursor_parameter(MESSAGE_CURSOR))),
    Operation("GET", "/api/v1/messages/{id}/report", "A message's report under the minimum-segment rule; bots apart",
              roles=("analyst",), response=MessageReport, errors=(400, 404, 409, 422),
              parameters=(_SEGMENT_PARAMETER,)),
    Operation("GET", "/api/v1/messages/{id}/export.csv", "The report as CSV; refused (403) when suppressed",
              roles=("analyst",), response={"type": "string"}, content_type="text/csv", errors=(400, 404, 409, 422),
              parameters=(_SEGMENT_PARAMETER,)),
    Operation("GET", "/api/v1/messages/{id}/recipients", "Per-recipient figures of an individual-mode message",
              roles=("privacy",), response=MessageRecipientsPage, errors=(400, 404, 409),
              parameters=(_limit_parameter(100, 1000), _cursor_parameter(_RECIPIENT_CURSOR))),
]  # fmt: skip


def add_routes(router: web.UrlDispatcher) -> None:
    """The read side of ``/api/v1/messages``; app.py calls this next to the register route."""
    router.add_get("/api/v1/messages", list_messages)
    router.add_get("/api/v1/messages/{id}/report", message_report)
    router.add_get("/api/v1/messages/{id}/export.csv", export_csv)
    router.add_get("/api/v1/messages/{id}/recipients", message_recipients)


def _actor(principal: Principal) -> tuple[str, str]:
    return principal.token_id, principal.role.value


def _limit(request: web.Request, default: int, maximum: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise BadRequest(f"limit: give a whole number from 1 to {maximum}", code="invalid_limit")
    return int(raw)


def _cursor(request: web.Request, pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    """The parts of ``?cursor=`` (None when absent); one this API cannot have made is a 400."""
    raw = request.query.get("cursor")
    if raw is None:
        return None
    match = pattern.fullmatch(raw)
    if match is None:
        raise BadRequest("cursor: pass back the next_cursor of a previous page", code="invalid_cursor")
    return match.groups()


async def _message(state: TrackerState, request: web.Request) -> MessageRow:
    message = await state.store.get_message(request.match_info["id"])
    if message is None:
        raise NotFound("no message with this id")
    return message


_REFUSALS: dict[int, type[ApiError]] = {400: BadRequest, 409: Conflict, 422: Unprocessable}


def _segment(request: web.Request, state: TrackerState, message: MessageRow) -> str | None:
    segment = request.query.get("segment")
    try:
        check_segment(state.settings, message, segment)
    except SegmentRefused as refused:
        raise _REFUSALS[refused.status](refused.message, code=refused.code) from None
    return segment


async def message_report(request: web.Request) -> web.Response:
    """``GET /api/v1/messages/{id}/report[?segment=ATTR]``: figures under the minimum-segment rule."""
    state = request.app[STATE]
    principal = await state.auth.require(request, Role.ANALYST)
    message = await _message(state, request)
    segment = _segment(request, state, message)
    report = await read_report(state, *_actor(principal), message, segment)  # audited there, as the dashboard's
    return web.json_response(report, headers=_NO_STORE)


async def export_csv(request: web.Request) -> web.Response:
    """``GET /api/v1/messages/{id}/export.csv[?segment=ATTR]``: the report as CSV; refused when suppressed."""
    state = request.app[STATE]
    principal = await state.auth.require(request, Role.ANALYST)
    message = await _message(state, request)
    text = await read_export(state, *_actor(principal), message, _segment(request, state, message))
    if text is None:
        k = state.settings.min_segment_size
        raise Forbidden(
            f"this message reached fewer than {k} tracked people; its figures cannot be exported", code="suppressed"
        )
    return web.Response(
        text=text,
        content_type="text/csv",
        charset="utf-8",
        headers={**_NO_STORE, "Content-Disposition": f'attachment; filename="{message.id}-report.csv"'},
    )


async def list_messages(request: web.Request) -> web.Response:
    """``GET /api/v1/messages?limit=N&cursor=C``: newest first, with headline figures (thresholds applied).
    Each headline comes from the report's own code (``dashboard.summary``), so the two never disagree."""
    state = request.app[STATE]
    principal = await state.auth.require(request, Role.ANALYST)
    limit = _limit(request, default=20, maximum=100)
    try:
        items, next_cursor = await filtered_messages(state, limit, request.query.get("cursor"))
    except InvalidCursor as exc:
        raise BadRequest(str(exc), code="invalid_cursor") from None
    await record_list_read(state, *_actor(principal))
    return web.json_response({"messages": items, "next_cursor": next_cursor}, headers=_NO_STORE)


async def message_recipients(request: web.Request) -> web.Response:
    """``GET /api/v1/messages/{id}/recipients?limit=N&cursor=C`` (privacy): one row per recipient,
    only for individual-mode messages, whose records are linkable to people for this purpose."""
    state = request.app[STATE]
    principal = await state.auth.require(request, Role.PRIVACY)
    message = await _message(state, request)
    if message.mode != TrackingMode.INDIVIDUAL.value:
        raise Conflict(
            f"this message was sent in {message.mode} mode: no stored link connects its records to recipients, "
            "so per-recipient figures do not exist; only individual-mode messages have them",
            code="not_individual_mode",
        )
    limit = _limit(request, default=100, maximum=1000)
    cursor = _cursor(request, _RECIPIENT_CURSOR)
    after = 0 if cursor is None else int(cursor[0])
    rows = await recipient_page(
        state.store, state.sealer, message, rules_for(state.settings, message), after, limit + 1
    )
    page, more = rows[:limit], len(rows) > limit
    await audit.record(
        state.store, state.keyring, _actor(principal), audit.Action.RECIPIENTS_READ, detail=audit_detail(message, None)
    )
    body = {
        "id": message.id,
        "recipients": [
            {
                "email": r.email,
                "name": r.name,
                "attributes": r.attributes,
                "tracked": r.tracked,
                "opened": r.figures.first_open_at is not None,
                "first_open_at": r.figures.first_open_at,
                "opens": r.figures.opens,
                "clicks": r.figures.clicks,
                "read_ms": r.figures.read_ms,
            }
            for r in page
        ],
        "next_cursor": str(page[-1].id) if more else None,
    }
    return web.json_response(body, headers=_NO_STORE)
