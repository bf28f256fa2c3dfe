"""What the API and the dashboard (``tracker/ui``) read of reports, written once so a page can never
show a figure the API would not: a message's report, its list entry, the list filtered by list name
and date, and what the pages add on top (medians of recent messages, the open-rate trend).

Every figure comes from ``build``, where the thresholds were applied. The ``read_*`` functions write
the audit entry the API writes for the same read, so a page and the API leave the same trail.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

from politetenant.settings import TrackerSettings, TrackingMode
from politetenant.tracker.http.state import TrackerState
from politetenant.tracker.privacy import audit
from politetenant.tracker.reports.build import build_report, headline, rates, report_csv, suppressed_report
from politetenant.tracker.reports.report_data import load_report_inputs, message_page, rules_for
from politetenant.tracker.reports.thresholds import headline_visible
from politetenant.tracker.storage.rows import MessageRow

SEGMENT = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # the attribute names messages accept
# A keyset cursor, created_at.id of the last message shown: every string it allows is a place in the list.
MESSAGE_CURSOR = re.compile(r"^([0-9]{1,15})\.(msg_[0-9a-f]{20})$")
SCAN_BATCH = 200  # messages read per query while filtering by list name
SCAN_BUDGET = 10_000  # messages one filtered page may scan before it hands back a cursor
HEADLINE_TTL_SECONDS = 300.0  # how long a message's headline serves as context for another message's page
MEDIAN_FIGURES = ("recipients", "opens_unique", "open_rate", "clicks_unique", "click_rate", "click_to_open",
                  "read_rate")  # fmt: skip


class SegmentRefused(ValueError):
    """A segment the message cannot be split by; ``status`` and ``code`` are the API's answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class InvalidCursor(ValueError):
    """A cursor no list page made (the API answers 400 invalid_cursor)."""


def check_segment(settings: TrackerSettings, message: MessageRow, segment: str | None) -> None:
    """Refuse a segment that is malformed, not one of the tenant's attributes, or of an aggregate message."""
    if segment is None:
        return
    if not SEGMENT.fullmatch(segment):
        raise SegmentRefused(400, "invalid_segment", "segment: name an attribute, e.g. ?segment=department")
    kept = settings.segment_attributes
    if segment not in kept:  # records keep no other attribute: there is nothing else to segment by
        names = ", ".join(kept) if kept else "none (the tenant keeps no attribute on its records)"
        raise SegmentRefused(422, "unknown_segment", f"segment: not a segment attribute of this tenant; it has {names}")
    if message.mode == TrackingMode.AGGREGATE.value:
        raise SegmentRefused(
            409,
            "aggregate_mode",
            "this message was sent in aggregate mode: it has no per-recipient records, so no segments",
        )


async def report_for(state: TrackerState, message: MessageRow, segment: str | None) -> dict[str, Any]:
    """Exactly what ``GET /api/v1/messages/{id}/report[?segment=]`` answers (raises SegmentRefused)."""
    check_segment(state.settings, message, segment)
    k = state.settings.min_segment_size
    if not headline_visible(message.tracked, k):
        return suppressed_report(message.id)  # nothing to load: nothing will be shown
    inputs = await load_report_inputs(state.store, state.sealer, message, rules_for(state.settings, message), segment)
    return await asyncio.to_thread(build_report, message, inputs, k)  # folding segments is CPU work


def audit_detail(message: MessageRow, segment: str | None) -> str:
    return f"message={message.id}" + ("" if segment is None else f" segment={segment}")


async def read_report(
    state: TrackerState, principal_token_id: str, role: str, message: MessageRow, segment: str | None
) -> dict[str, Any]:
    """A report read by someone (a Role is a str): the report, and its ``report.read`` audit entry."""
    report = await report_for(state, message, segment)
    detail = audit_detail(message, segment)
    await audit.record(
        state.store, state.keyring, (principal_token_id, str(role)), audit.Action.REPORT_READ, detail=detail
    )
    return report


async def read_export(
    state: TrackerState, principal_token_id: str, role: str, message: MessageRow, segment: str | None
) -> str | None:
    """The report as CSV, audited as ``report.export``; None for a suppressed message (audited "refused")."""
    report = await report_for(state, message, segment)
    actor, detail = (principal_token_id, str(role)), audit_detail(message, segment)
    outcome = "refused" if report["suppressed"] else "ok"
    await audit.record(state.store, state.keyring, actor, audit.Action.REPORT_EXPORT, outcome=outcome, detail=detail)
    return None if report["suppressed"] else report_csv(report)


async def record_list_read(state: TrackerState, principal_token_id: str, role: str) -> None:
    """The audit entry of reading the message list (headlines of many reports), as the API writes it."""
    await audit.record(
        state.store, state.keyring, (principal_token_id, str(role)), audit.Action.REPORT_READ, detail="list"
    )


async def summary(state: TrackerState, message: MessageRow, report: dict[str, Any] | None = None) -> dict[str, Any]:
    """A message as the list shows it: its report's headline (the same code, so they never disagree),
    its subject and list name. ``report``: the message's report when the caller has just read it (a
    segmented one carries the same headline), so a page never reads one report twice."""
    sealer = state.sealer
    return {
        **headline(report if report is not None else await report_for(state, message, None)),
        "created_at": message.created_at,
        "mode": message.mode,
        "subject": sealer.open_text("message.subject", message.subject, row=message.id),
        "list_name": sealer.open_text("message.list_name", message.list_name, row=message.id),
    }


async def recent_headlines(
    state: TrackerState,
    limit: int = 20,
    before: MessageRow | None = None,
    known: Mapping[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The tenant's latest messages (older than ``before`` when given), newest first, as the list shows
    them; ``known``: reports already read, by message id."""
    rows = await message_page(state.store, limit, None if before is None else (before.created_at, before.id))
    return [await summary(state, message, (known or {}).get(message.id)) for message in rows]


async def context_headlines(
    state: TrackerState, limit: int, known: Mapping[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """``recent_headlines`` for context figures (the medians beside a message page): each other message's
    headline is reused for HEADLINE_TTL_SECONDS, so a page costs one report, not ``limit`` of them; the
    list page itself always reads current figures."""
    now, cache = time.monotonic(), state.headline_cache
    rows = await message_page(state.store, limit, None)
    out = []
    for message in rows:
        hit = cache.get(message.id)
        if message.id in known or hit is None or now - hit[0] > HEADLINE_TTL_SECONDS:
            if len(cache) > 10_000:
                cache.clear()
            cache[message.id] = (now, await summary(state, message, known.get(message.id)))
        out.append(cache[message.id][1])
    return out


def _figures(item: dict[str, Any]) -> dict[str, float | None]:
    unique = {name: (item.get(name) or {}).get("unique") for name in ("opens", "clicks", "reads")}
    rate = rates(item["tracked"], unique["opens"], unique["clicks"], unique["reads"])
    return {"recipients": item["recipients"], "opens_unique": unique["opens"], "open_rate": rate["open"],
            "clicks_unique": unique["clicks"], "click_rate": rate["click"], "click_to_open": rate["click_to_open"],
            "read_rate": rate["read"]}  # fmt: skip


def medians(headlines: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Median of each figure over the messages that show it (suppressed ones show none; aggregate-mode
    ones no distinct people); None when no message does. Rates as the report defines them."""
    shown = [_figures(item) for item in headlines if not item["suppressed"]]
    out: dict[str, float | None] = {}
    for name in MEDIAN_FIGURES:
        values = [value for figures in shown if (value := figures[name]) is not None]
        out[name] = statistics.median(values) if values else None
    return out


def open_rate_trend(headlines: Sequence[dict[str, Any]]) -> list[tuple[int, float | None]]:
    """(created_at, open rate) of each message, oldest first; None where the message shows no rate."""
    ordered = sorted(headlines, key=lambda item: (item["created_at"], item["id"]))
    return [(item["created_at"], None if item["suppressed"] else _figures(item)["open_rate"]) for item in ordered]


def parse_cursor(raw: str | None) -> tuple[int, str] | None:
    """The (created_at, id) a ``next_cursor`` names; raises InvalidCursor for one no page made."""
    if raw is None:
        return None
    match = MESSAGE_CURSOR.fullmatch(raw)
    if match is None:
        raise InvalidCursor("cursor: pass back the next_cursor of a previous page")
    return int(match.group(1)), match.group(2)


def cursor_of(message: MessageRow) -> str:
    return f"{message.created_at}.{message.id}"


async def filtered_messages(
    state: TrackerState,
    limit: int,
    cursor: str | None,
    list_name: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A list page: newest first, created in ``[since_ms, until_ms)``, of list ``list_name`` (exact), with
    the next page's cursor (None on the last page).

    The date range is SQL on the indexed created_at. List names are sealed (random nonces: equal names
    have unequal ciphertexts), so the filter opens each candidate's name: cost grows with the messages
    scanned, not those shown (an AES-GCM open is microseconds; 10,000 is a few tens of ms). A page
    scans at most SCAN_BUDGET messages and then hands back a cursor, so it can hold fewer than
    ``limit`` items while more follow. A blind index of the list name would make this a look-up.
    """
    position = parse_cursor(cursor)
    if until_ms is not None and (position is None or position > (until_ms, "")):
        position = (until_ms, "")  # (t, "") means "created before t"
    batch = limit + 1 if list_name is None else max(SCAN_BATCH, limit + 1)
    found: list[MessageRow] = []
    scanned, exhausted = 0, False
    while len(found) <= limit and scanned < SCAN_BUDGET and not exhausted:
        rows = await message_page(state.store, batch, position, since_ms=since_ms)
        exhausted = len(rows) < batch
        for row in rows:
            scanned, position = scanned + 1, (row.created_at, row.id)
            if list_name is None or _list_name(state, row) == list_name:
                found.append(row)
                if len(found) > limit:
                    break
    page = found[:limit]
    if len(found) > limit:
        next_cursor: str | None = cursor_of(page[-1])
    elif exhausted or position is None:
        next_cursor = None
    else:  # the scan budget ran out: go on from the last message scanned
        next_cursor = f"{position[0]}.{position[1]}"
    return [await summary(state, message) for message in page], next_cursor


def _list_name(state: TrackerState, message: MessageRow) -> str:
    return state.sealer.open_text("message.list_name", message.list_name, row=message.id)


async def read_messages(
    state: TrackerState,
    principal_token_id: str,
    role: str,
    limit: int,
    cursor: str | None,
    list_name: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """``filtered_messages`` read by someone, audited as the API's list is."""
    page = await filtered_messages(state, limit, cursor, list_name, since_ms, until_ms)
    await record_list_read(state, principal_token_id, role)
    return page


async def list_names(state: TrackerState) -> list[str]:
    """Every list name the tenant's messages use, sorted, for the filter's choices. Each name is sealed
    under its own nonce, so all are opened: one pass over the messages, off the event loop."""
    names: set[str] = set()

    def read(rows: list[tuple[Any, ...]]) -> None:
        for message_id, sealed in rows:
            names.add(state.sealer.open_text("message.list_name", bytes(sealed), row=message_id))

    async for rows in state.store.stream("SELECT id, list_name FROM messages"):
        await asyncio.to_thread(read, rows)
    return sorted(names)
