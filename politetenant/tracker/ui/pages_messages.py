"""The analyst's pages: the message list (``/ui/messages``), one message's report
(``/ui/messages/{id}``) and its CSV export, rendered on the server from the report JSON.

Every figure printed here is a value of the JSON that ``reports.dashboard`` returns, which is what
the API returns: this module never compares a count with the minimum segment size. A figure the
report gives as null or leaves out is written with ``layout.fewer_than(k)``. Each figure carries
``data-figure`` (its path in the report JSON, list items by index) and ``data-value`` (the JSON
value), so a test, or a curious analyst, can hold the page against ``GET /api/v1/messages/{id}/report``.
Reads are audited as the API audits them (``report.read``, ``report.export``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final
from urllib.parse import quote, urlencode

from aiohttp import web

from politetenant.settings import TrackingMode
from politetenant.tracker.http.auth import Role
from politetenant.tracker.http.errors import NotFound
from politetenant.tracker.http.state import STATE, TrackerState
from politetenant.tracker.reports import dashboard
from politetenant.tracker.reports.build import WEEKDAYS, rates
from politetenant.tracker.storage.rows import MessageRow
from politetenant.tracker.ui import charts, layout
from politetenant.tracker.ui.layout import e, empty_state, error_state, fewer_than, html_response, page, ui_handler
from politetenant.tracker.ui.session import UiSession, require_session

PAGE_SIZE: Final = 20
DAY_MS: Final = 86_400_000
ALL_MESSAGES: Final = '<a href="/ui/messages">Show all messages</a>'
EMPTY_TEXT: Final = "No messages yet: register one with POST /api/v1/messages — see README"
DIMENSION_TITLES: Final = {"device": "Device", "os": "Operating system", "browser": "Browser"}
PLACE_TITLES: Final = {"country": "Country", "city": "City"}


@dataclass
class QueryProblem(Exception):
    """A query string the page cannot use: shown as the page's error state with ``status``."""

    status: int
    text: str


@dataclass(frozen=True)
class ListFilters:
    """The list page's filters as typed (``since_ms``/``until_ms``: the UTC days, ``until`` exclusive)."""

    list_name: str | None = None
    day_from: str = ""
    day_to: str = ""
    since_ms: int | None = None
    until_ms: int | None = None
    cursor: str | None = None

    def query(self, cursor: str | None = None) -> str:
        """The query string that shows these filters again (at ``cursor``)."""
        pairs = [("list", self.list_name or ""), ("from", self.day_from), ("to", self.day_to)]
        pairs += [("cursor", cursor)] if cursor else []
        return urlencode([(k, v) for k, v in pairs if v])


def day_start_ms(raw: str, field: str) -> int:
    """Midnight UTC of a ``YYYY-MM-DD`` day, in epoch ms (what ``<input type=date>`` sends)."""
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise QueryProblem(400, f"{field}: give a date as YYYY-MM-DD, e.g. 2024-05-31") from None
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def list_filters(query: Mapping[str, str]) -> ListFilters:
    """The filters of ``GET /ui/messages?list=&from=&to=&cursor=``; an empty field is no filter."""
    day_from, day_to = query.get("from", "").strip(), query.get("to", "").strip()
    since = day_start_ms(day_from, "from") if day_from else None
    until = day_start_ms(day_to, "to") + DAY_MS if day_to else None  # the "to" day is included
    if since is not None and until is not None and since >= until:
        raise QueryProblem(400, "from: the first day must not be after the last day")
    return ListFilters(query.get("list") or None, day_from, day_to, since, until, query.get("cursor") or None)


def lookup(report: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of the report JSON (list items by index); None when absent."""
    value: Any = report
    for key in path.split("."):
        if isinstance(value, list):
            value = value[int(key)] if key.isdigit() and int(key) < len(value) else None
        else:
            value = value.get(key) if isinstance(value, Mapping) else None
    return value


def count_text(value: int | float) -> str:
    whole = isinstance(value, int) or value.is_integer()  # a median of counts may end in .5
    return f"{int(value):,}" if whole else f"{value:,.1f}"


def rate_text(value: float) -> str:
    return f"{value * 100:.1f}%"


def when_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


RATE_BASES: Final = {"rates.open": "tracked", "rates.click": "tracked", "rates.click_to_open": "opens.unique",
                     "rates.read": "opens.unique"}  # fmt: skip


def undefined(report: Mapping[str, Any], path: str) -> bool:
    """Whether the report leaves ``path`` null because it does not exist, not because it is hidden: a
    rate over a base of 0, or a count of distinct people or copies in aggregate mode (one record)."""
    if report.get("mode") == TrackingMode.AGGREGATE.value and path.endswith((".unique", ".records")):
        return True
    for rate, base in RATE_BASES.items():
        if path == rate or path.endswith("." + rate):
            return bool(lookup(report, path[: len(path) - len(rate)] + base) == 0)
    return False


def fig(report: Mapping[str, Any], path: str, k: int, kind: str = "count", prefix: str = "") -> str:
    """One figure of the report with its data attributes; null or absent: ``fewer_than(k)``."""
    value = lookup(report, path)
    if value is None:
        text = '<span class="undefined-figure">not defined</span>' if undefined(report, path) else fewer_than(k)
        return f'<span data-figure="{e(prefix + path)}" data-value="null">{text}</span>'
    text = rate_text(value) if kind == "rate" else f"{value / 1000:.1f} s" if kind == "ms" else count_text(value)
    return f'<span data-figure="{e(prefix + path)}" data-value="{e(json.dumps(value))}">{text}</span>'


def table(caption: str, headers: Sequence[str], rows: Sequence[Sequence[str]], *, first_is_header: bool = True) -> str:
    """An accessible table (caption, ``th scope``) in the horizontal scroll wrapper; cells are HTML."""
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in headers)
    body = []
    for row in rows:
        cells = [f'<th scope="row">{row[0]}</th>' if first_is_header else f"<td>{row[0]}</td>"]
        body.append("<tr>" + "".join(cells + [f"<td>{cell}</td>" for cell in row[1:]]) + "</tr>")
    return f"{layout.table_open(caption)}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def with_table(chart: str, data: str) -> str:
    return f'<figure class="chart-block">{chart}<details><summary>Show as table</summary>{data}</details></figure>'


def breakdown_rows(report: Mapping[str, Any], path: str, k: int) -> list[list[str]]:
    """Rows of a ``{"buckets": [{"label", "records"}], "other"}`` section, "other" always last."""
    section = lookup(report, path) or {"buckets": []}
    rows = [[e(b["label"]), fig(report, f"{path}.buckets.{i}.records", k)] for i, b in enumerate(section["buckets"])]
    return [*rows, ["Other", fig(report, f"{path}.other", k)]]


def options(values: Sequence[str], chosen: str | None, blank: str) -> str:
    """A select's options: ``blank`` (the empty value, no filter) first, then ``values``."""
    shown = [f'<option value="{e(v)}"{" selected" if v == chosen else ""}>{e(v)}</option>' for v in values]
    return f'<option value="">{e(blank)}</option>' + "".join(shown)


def section(title: str, body: str, anchor: str) -> str:
    return f'<section aria-labelledby="{anchor}"><h2 id="{anchor}">{e(title)}</h2>{body}</section>'


TILES: Final = (  # (label, figure path, kind, key of dashboard.medians)
    ("Recipients", "recipients", "count", "recipients"), ("People who opened", "opens.unique", "count", "opens_unique"),
    ("Open rate", "rates.open", "rate", "open_rate"), ("People who clicked", "clicks.unique", "count", "clicks_unique"),
    ("Click-through rate", "rates.click", "rate", "click_rate"),
    ("Click-to-open rate", "rates.click_to_open", "rate", "click_to_open"),
    ("Read rate", "rates.read", "rate", "read_rate"),
)  # fmt: skip
AGGREGATE_TILES: Final = (("Recipients", "recipients", "count", "recipients"),
                          ("Opens (all hits)", "opens.total", "count", ""),
                          ("Clicks (all hits)", "clicks.total", "count", ""))  # fmt: skip
AGGREGATE_NOTE: Final = "<p>Aggregate mode: one record for everyone, so no per-person figures, rates or breakdowns.</p>"


def tiles(report: Mapping[str, Any], medians: Mapping[str, float | None], k: int) -> str:
    """KPI tiles, each beside the tenant's median of its recent messages."""
    aggregate = report.get("mode") == TrackingMode.AGGREGATE.value
    out = []
    for label, path, kind, key in AGGREGATE_TILES if aggregate else TILES:
        median, beside = medians.get(key) if key else None, "no recent message to compare"
        if median is not None:
            text = rate_text(median) if kind == "rate" else count_text(median)
            beside = f'median of recent messages: <span data-median="{e(key)}" data-value="{median}">{text}</span>'
        out.append(
            f'<div class="tile"><h3 class="tile-label">{e(label)}</h3>'
            f'<p class="tile-value">{fig(report, path, k, kind)}</p><p class="tile-median">{beside}</p></div>'
        )
    return f'<div class="tiles">{"".join(out)}</div>{AGGREGATE_NOTE if aggregate else ""}'


def timeline_html(report: Mapping[str, Any], k: int) -> str:
    timeline = report["timeline"]
    series = {name.capitalize(): [(w["start"], w["end"], w["records"]) for w in timeline[name]] for name in timeline}
    rows = [[e(f"{when_text(w['start'])} to {when_text(w['end'])}"), e(name),
             fig(report, f"timeline.{name}.{i}.records", k)]
            for name in timeline for i, w in enumerate(timeline[name])]  # fmt: skip
    chart = charts.time_series(series, title="People's first opens and clicks over time")
    return with_table(chart, table("First opens and first clicks per window", ("Window", "Series", "People"), rows))


def heatmap_html(report: Mapping[str, Any], k: int) -> str:
    heat = report["heatmap"]
    cells = {(c["weekday"], c["hour"]): c["records"] for c in heat["cells"]}
    rows = [
        [e(f"{WEEKDAYS[c['weekday']]} {c['hour']:02d}:00"), fig(report, f"heatmap.cells.{i}.records", k)]
        for i, c in enumerate(heat["cells"])
    ]
    rows.append(["Other hours", fig(report, "heatmap.other", k)])
    chart = charts.heatmap(cells, title="People's first opens by weekday and hour (UTC)", k=k)
    return with_table(chart, table("First opens by weekday and hour, UTC", ("Weekday and hour", "People"), rows))


def bars_html(report: Mapping[str, Any], path: str, title: str, k: int) -> str:
    data = lookup(report, path) or {"buckets": [], "other": None}
    items = [(b["label"], b["records"]) for b in data["buckets"]] + [("Other", data["other"])]
    chart = charts.bars(items, title=title, k=k)
    return with_table(chart, table(title, (title, "People"), breakdown_rows(report, path, k)))


def links_html(report: Mapping[str, Any], k: int) -> str:
    people = lookup(report, "clicks.unique")
    rows = []
    for i, link in enumerate(report["links"]["buckets"]):
        clicks = link["clicks"]
        share = "" if clicks is None or not people else rate_text(clicks["unique"] / people)
        url = f'<a href="{e(link["url"])}" rel="noreferrer noopener">{e(link["url"])}</a>'
        base = f"links.buckets.{i}.clicks"
        rows.append([e(link["text"]), url, fig(report, f"{base}.unique", k), fig(report, f"{base}.total", k), share])
    rows.append(["Other", "", fig(report, "links.other.unique", k), fig(report, "links.other.total", k), ""])
    headers = ("Link text", "URL", "People who clicked", "Clicks", "Share of people who clicked")
    return table("Clicks per link", headers, rows)


def apart_html(report: Mapping[str, Any], k: int) -> str:
    """Opens that were not a person's own: reported apart, never in the people's figures or rates."""
    rows = [
        ["Apple Mail Privacy Protection (opens)", fig(report, "privacy_proxy_opens.unique", k),
         fig(report, "privacy_proxy_opens.total", k)],
        ["Mail image proxies (counted as people's opens; no device or place)", fig(report, "proxied_opens.unique", k),
         fig(report, "proxied_opens.total", k)],
        ["Machines: gateways, scanners and scripts (opens)", fig(report, "machine.records", k),
         fig(report, "machine.opens", k)],
        ["Machines (clicks)", "", fig(report, "machine.clicks", k)],
    ]  # fmt: skip
    out = table("Hits that were not a person's own", ("Source", "Copies", "Hits"), rows)
    if lookup(report, "machine.by_reason") is not None:
        reasons = breakdown_rows(report, "machine.by_reason", k)
        out += table("Machine hits by reason", ("Reason", "Copies"), reasons)
    return out


SEGMENT_COLUMNS: Final = (
    ("People tracked", "tracked", "count"), ("Opened", "opens.unique", "count"), ("Open rate", "rates.open", "rate"),
    ("Clicked", "clicks.unique", "count"), ("Click-through", "rates.click", "rate"),
    ("Click-to-open", "rates.click_to_open", "rate"), ("Read rate", "rates.read", "rate"),
    ("Machine copies", "machine.records", "count"),
)  # fmt: skip


def segments_html(report: Mapping[str, Any], message_id: str, kept: Sequence[str], chosen: str | None, k: int) -> str:
    """The segment select (a GET form) and, when one is chosen, each group's figures."""
    form = (
        f'<form method="get" action="/ui/messages/{e(quote(message_id))}" class="filters">'
        f'<label for="segment">Segment by</label><select id="segment" name="segment">'
        f"{options(kept, chosen, 'Whole message')}</select>"
        '<button type="submit">Show</button></form>'
    )
    segments = report.get("segments")
    if segments is None:
        return form
    headers = ("Group", *(c[0] for c in SEGMENT_COLUMNS))
    rows = [[e(entry["value"]), *(fig(report, f"segments.values.{i}.{p}", k, kind) for _, p, kind in SEGMENT_COLUMNS)]
            for i, entry in enumerate(segments["values"])]  # fmt: skip
    if segments["other"] is not None:
        label = f"Other groups together (each fewer than {k} people, or folded so none can be worked out)"
        rows.append([e(label), *(fig(report, f"segments.other.{p}", k, kind) for _, p, kind in SEGMENT_COLUMNS)])
    caption = f"Figures by {segments['attribute']}; a group below the threshold is never named"
    return form + table(caption, headers, rows)


def report_html(report: Mapping[str, Any], medians: Mapping[str, float | None], k: int) -> str:
    """Everything a non-suppressed report shows, section by section, in the JSON's own figures."""
    parts = [section("Headline", tiles(report, medians, k), "kpi")]
    if report.get("mode") == TrackingMode.AGGREGATE.value:
        return "".join([*parts, section("Not a person's own", apart_html(report, k), "apart")])
    parts.append(section("Opens and clicks over time", timeline_html(report, k), "timeline"))
    parts.append(section("When people first opened", heatmap_html(report, k), "heatmap"))
    median = f"<p>Median read time: {fig(report, 'read_time.median_ms', k, 'ms')}</p>"
    parts.append(section("Read time", median + bars_html(report, "read_time", "Read time", k), "read-time"))
    devices = "".join(bars_html(report, f"breakdowns.{d}", t, k) for d, t in DIMENSION_TITLES.items())
    parts.append(section("Device, operating system and browser", devices, "devices"))
    places = (table(t, (t, "People"), breakdown_rows(report, f"breakdowns.{d}", k)) for d, t in PLACE_TITLES.items())
    parts.append(section("Country and city", "".join(places), "places"))
    parts.append(section("Links", links_html(report, k), "links"))
    parts.append(section("Not a person's own: proxies and machines", apart_html(report, k), "apart"))
    return "".join(parts)


def message_body(message_id: str, subject: str, list_name: str, report: Mapping[str, Any],
                 medians: Mapping[str, float | None], kept: Sequence[str], segment: str | None,
                 k: int) -> str:  # fmt: skip
    """The message page's body; a suppressed report shows that it is and nothing else."""
    intro = f'<h1>{e(subject)}</h1><p class="meta">List: {e(list_name)}</p>'
    if report["suppressed"]:
        return intro + error_state(f"Fewer than {k} tracked recipients: no figures.")
    meta = f'<p class="meta">Sent {e(when_text(report["created_at"]))} · {e(report["mode"])} mode</p>'
    query = f"?{urlencode({'segment': segment})}" if segment else ""
    csv_link = f'<p><a href="/ui/messages/{e(quote(message_id))}/export.csv{e(query)}" download>Export as CSV</a></p>'
    body = intro + meta + csv_link + report_html(report, medians, k)
    if report.get("mode") != TrackingMode.AGGREGATE.value and kept:
        body += section("Segments", segments_html(report, message_id, kept, segment, k), "segments")
    return body


LIST_FIGURES: Final = (("recipients", "count"), ("rates.open", "rate"), ("rates.click", "rate"))


def list_rows(messages: Sequence[Mapping[str, Any]], k: int) -> str:
    """The message list: newest first; a suppressed message shows no figure."""
    head = ("Date", "Subject", "List", "Recipients", "Open rate (people)", "Click rate (people)")
    rows = []
    for i, m in enumerate(messages):
        link = f'<a href="/ui/messages/{e(quote(m["id"]))}">{e(m["subject"])}</a>'
        cells, prefix = [e(when_text(m["created_at"])), link, e(m["list_name"])], f"messages.{i}."
        if m["suppressed"]:
            rows.append([*cells, f"{fewer_than(k)} recipients", "no figures", "no figures"])
        elif m["mode"] == TrackingMode.AGGREGATE.value:  # one record for everyone: no people, no rates
            rows.append([*cells, fig(m, "recipients", k, prefix=prefix), *["aggregate mode: no rates"] * 2])
        else:  # a headline carries people's figures, not rates: derived by the report's own definition
            people = (m["opens"]["unique"], m["clicks"]["unique"], m["reads"]["unique"])
            shown = {**m, "rates": rates(m["tracked"], *people)}
            rows.append([*cells, *(fig(shown, key, k, kind, prefix=prefix) for key, kind in LIST_FIGURES)])
    return table("Messages, newest first", head, rows, first_is_header=False)


def filters_form(filters: ListFilters, names: Sequence[str]) -> str:
    return (
        '<form method="get" action="/ui/messages" class="filters">'
        f'<p class="field"><label for="list">List</label><select id="list" name="list">'
        f"{options(names, filters.list_name, 'All lists')}</select></p>"
        f'<p class="field"><label for="from">From</label><input type="date" id="from" name="from"'
        f' value="{e(filters.day_from)}"></p><p class="field"><label for="to">To</label>'
        f'<input type="date" id="to" name="to" value="{e(filters.day_to)}"></p>'
        '<button type="submit">Filter</button></form>'
    )


def trend_html(points: Sequence[tuple[int, float | None]]) -> str:
    """The open rate across the tenant's recent messages (a gap where a message shows no rate)."""
    if not points:
        return ""
    chart = charts.sparkline(points, title="Open rate of recent messages, oldest to newest")
    rows = [[e(when_text(at)), "no figure" if r is None else rate_text(r)] for at, r in points]
    return with_table(chart, table("Open rate of recent messages", ("Sent", "Open rate"), rows))


def list_body(messages: Sequence[Mapping[str, Any]], next_cursor: str | None, filters: ListFilters,
              names: Sequence[str], trend: Sequence[tuple[int, float | None]], k: int) -> str:  # fmt: skip
    body = "<h1>Messages</h1>" + trend_html(trend) + filters_form(filters, names)
    filtered = bool(filters.list_name or filters.since_ms or filters.until_ms or filters.cursor)
    if not messages:
        if filtered:
            return body + empty_state("No messages match these filters.", ALL_MESSAGES)
        return body + empty_state(EMPTY_TEXT)
    body += list_rows(messages, k)
    if next_cursor is not None:
        body += f'<p><a href="/ui/messages?{e(filters.query(next_cursor))}" rel="next">Older messages</a></p>'
    return body


def _problem(session: UiSession, title: str, status: int, text: str) -> web.Response:
    return html_response(page(title, f"<h1>{e(title)}</h1>" + error_state(text), session=session), status)


async def _message(state: TrackerState, request: web.Request) -> MessageRow:
    message = await state.store.get_message(request.match_info["id"])
    if message is None:
        raise NotFound("no message with this id")
    return message


@ui_handler
async def messages_page(request: web.Request) -> web.Response:
    """``GET /ui/messages``: newest first, filtered by list and dates, a trend of the open rate."""
    state = request.app[STATE]
    session = await require_session(request, Role.ANALYST)
    try:
        filters = list_filters(request.query)
        messages, next_cursor = await dashboard.read_messages(
            state, session.token_id, session.role, PAGE_SIZE, filters.cursor, filters.list_name,
            filters.since_ms, filters.until_ms,
        )  # fmt: skip
    except QueryProblem as problem:
        return _problem(session, "Messages", problem.status, problem.text)
    except dashboard.InvalidCursor as problem:
        return _problem(session, "Messages", 400, str(problem))
    # The first page, unfiltered, is the recent messages: no second read of the same reports.
    recent = messages if filters == ListFilters() else await dashboard.context_headlines(state, PAGE_SIZE, {})
    trend = dashboard.open_rate_trend(recent)
    names = await dashboard.list_names(state)
    body = list_body(messages, next_cursor, filters, names, trend, state.settings.min_segment_size)
    return html_response(page("Messages", body, session=session, active="messages"))


@ui_handler
async def message_page(request: web.Request) -> web.Response:
    """``GET /ui/messages/{id}[?segment=ATTR]``: one message's report, beside the tenant's medians."""
    state = request.app[STATE]
    session = await require_session(request, Role.ANALYST)
    message, segment = await _message(state, request), request.query.get("segment") or None
    try:
        report = await dashboard.read_report(state, session.token_id, session.role, message, segment)
    except dashboard.SegmentRefused as refused:
        return _problem(session, "Message", refused.status, refused.message)
    medians: Mapping[str, float | None] = {}
    if not report["suppressed"]:  # the medians read the recent messages' headlines: the list's read
        medians = dashboard.medians(await dashboard.context_headlines(state, PAGE_SIZE, {message.id: report}))
        await dashboard.record_list_read(state, session.token_id, session.role)
    subject = state.sealer.open_text("message.subject", message.subject, row=message.id)
    list_name = state.sealer.open_text("message.list_name", message.list_name, row=message.id)
    kept, k = state.settings.segment_attributes, state.settings.min_segment_size
    body = message_body(message.id, subject, list_name, report, medians, kept, segment, k)
    return html_response(page(subject, body, session=session, active="messages"))


@ui_handler
async def export_csv(request: web.Request) -> web.Response:
    """``GET /ui/messages/{id}/export.csv[?segment=ATTR]``: the API's CSV; a 403 page when suppressed."""
    state = request.app[STATE]
    session = await require_session(request, Role.ANALYST)
    message, segment = await _message(state, request), request.query.get("segment") or None
    try:
        text = await dashboard.read_export(state, session.token_id, session.role, message, segment)
    except dashboard.SegmentRefused as refused:
        return _problem(session, "Export", refused.status, refused.message)
    if text is None:
        k = state.settings.min_segment_size
        refusal = f"This message reached fewer than {k} tracked people: its figures cannot be exported."
        return _problem(session, "Export refused", 403, refusal)
    headers = {**layout.SECURITY_HEADERS}
    headers["Content-Disposition"] = f'attachment; filename="{message.id}-report.csv"'
    return web.Response(text=text, content_type="text/csv", charset="utf-8", headers=headers)
