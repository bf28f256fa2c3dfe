"""Message reports: raw tallies (``report_data``) shaped into the API's JSON and CSV under the
minimum-segment rule, which ``thresholds`` applies in one place.

The whole-message report (and its openers' heatmap) is folded first; a segmented report
(``?segment=ATTR``) folds its segments side by side and never finer than the whole, so no figure
hidden in one is recovered from the other.
Hits that were not a person's own (proxied, Apple's privacy proxy, machines by reason) are reported
apart, each figure shown only while the records it counts are none or at least k, in every row.
``report_csv`` renders the JSON, so an export can never show more than the report.
"""

from __future__ import annotations

import csv
import io
import statistics
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from politetenant.settings import TrackingMode
from politetenant.tracker.judging.verdicts import reason_label
from politetenant.tracker.reports.report_data import (
    DIMENSIONS,
    HOUR_MS,
    READ_BUCKETS,
    LinkInfo,
    ReportInputs,
    Tally,
    heatmap_cells,
    merged,
    weekday_hour,
)
from politetenant.tracker.reports.thresholds import (
    ALL,
    TableFold,
    Window,
    coarsen,
    fold_table,
    headline_visible,
    part_visible,
    safe_remainder,
)
from politetenant.tracker.storage.rows import MessageRow

OTHER = "(other)"
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # the heatmap's weekday 0 to 6, UTC
#: What the message list shows of each message: the headline of its report, computed the same way.
HEADLINE_KEYS = ("id", "suppressed", "mode", "created_at", "recipients", "tracked", "opens", "clicks", "reads",
                 "proxied_opens", "privacy_proxy_opens", "machine", "bots", "content")  # fmt: skip
# Figures reported apart from the people's, each about a part of the tracked records.
_APART: dict[str, Callable[[Tally], int]] = {
    "proxied_opens": lambda t: t.proxied_opens_unique,
    "privacy_proxy_opens": lambda t: t.privacy_opens_unique,
    "machine": lambda t: t.machine_records,
}


def suppressed_report(message_id: str) -> dict[str, Any]:
    return {"id": message_id, "suppressed": True}


def headline(report: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of a report (all there is of a suppressed one)."""
    return {key: report[key] for key in HEADLINE_KEYS if key in report}


def build_report(message: MessageRow, figures: ReportInputs, min_segment_size: int) -> dict[str, Any]:
    """The report of a message under the minimum-segment rule."""
    # The figures describe the tracked people only: a sender knows who objected (their tokens were
    # null), so the threshold must hold for the tracked population, not the recipient list.
    if not headline_visible(message.tracked, min_segment_size):
        return suppressed_report(message.id)
    total = merged(figures.tallies.values())
    report = _headline(message, total)
    if message.mode == TrackingMode.AGGREGATE.value:
        report.update(_apart(total, ALL, None))
        return report  # one record for everyone: totals are all there is
    k = min_segment_size
    plan = _plan({ALL: total}, k, figures.links)
    report.update(_apart(total, ALL, plan))
    report.update(_body(total, ALL, plan, figures.links, k))
    cells, shown = heatmap_cells(total.first_opens), heatmap_fold(total.first_opens, plan.opens, k)
    report["heatmap"] = {
        "cells": [{"weekday": d, "hour": h, "records": cells[(d, h)]} for d, h in sorted(shown.shown)],
        "other": shown.other_of(ALL),
    }
    if figures.attribute is not None:
        report["segments"] = _segments(figures, plan, k)
    return report


def _headline(message: MessageRow, t: Tally) -> dict[str, Any]:
    aggregate = message.mode == TrackingMode.AGGREGATE.value
    return {
        "id": message.id,
        "suppressed": False,
        "mode": message.mode,
        "created_at": message.created_at,
        "recipients": message.recipients,
        "tracked": message.tracked,
        # Aggregate mode has one record per message: distinct-recipient figures do not exist.
        "opens": {"unique": None if aggregate else t.opens_unique, "total": t.opens_total},
        "clicks": {"unique": None if aggregate else t.clicks_unique, "total": t.clicks_total},
        "reads": {"unique": None if aggregate else t.reads_unique},
        "content": {
            "links": message.link_count,
            "word_count": message.word_count,
            "flesch_reading_ease": message.flesch,
        },
    }


def _apart(t: Tally, row: str, plan: _Plan | None) -> dict[str, Any]:
    """Hits that were not a person's own, apart from the people's figures; ``plan``: None in aggregate
    mode, where one record is everyone's (no record counts, and the tracked population is the part).

    ``bots`` adds up what is shown of the machine and privacy-proxy hits, so it reveals nothing hidden.
    """
    records = plan is not None
    shown = set(_APART) if plan is None else plan.apart
    proxied = privacy = machine = None
    if "proxied_opens" in shown:
        proxied = {"unique": t.proxied_opens_unique if records else None, "total": t.proxied_opens_total}
    if "privacy_proxy_opens" in shown:
        privacy = {"unique": t.privacy_opens_unique if records else None, "total": t.privacy_opens_total}
    if "machine" in shown:
        reasons = None
        if plan is not None:
            labels = plan.reasons.shown
            reasons = {
                "buckets": [{"label": reason_label(n), "records": t.reason_records[n]} for n in labels],
                "other": plan.reasons.other_of(row),
            }
        machine = {
            "records": t.machine_records if records else None,
            "opens": t.machine_opens,
            "clicks": t.machine_clicks,
            "by_reason": reasons,
        }
    bots = {
        "opens": (t.machine_opens if machine else 0) + (t.privacy_opens_total if privacy else 0),
        "clicks": t.machine_clicks if machine else 0,
    }
    return {"proxied_opens": proxied, "privacy_proxy_opens": privacy, "machine": machine, "bots": bots}


@dataclass(frozen=True)
class _Plan:
    """The threshold decisions for a table of rows (ALL, or the segments side by side)."""

    breakdowns: dict[str, TableFold[str, str]]
    read_time: TableFold[str, str]
    links: TableFold[str, int]
    opens: list[Window[str]]
    clicks: list[Window[str]]
    apart: frozenset[str]  # the figures of _APART shown in every row
    reasons: TableFold[str, int]  # machine records by reason


def _overlap(masks: Iterable[tuple[int, int]], folded: frozenset[int]) -> tuple[int, int]:
    """Records (mask, count) under some folded label, and those under folded labels only."""
    hidden = sum(1 << n for n in folded)
    union = only = 0
    for mask, count in masks:
        if mask & hidden:
            union += count
            only += 0 if mask & ~hidden else count
    return union, only


def _plan(rows: Mapping[str, Tally], k: int, links: Sequence[LinkInfo], whole: _Plan | None = None) -> _Plan:
    """Fold every breakdown of ``rows`` together; ``whole``: the message's plan, never to be refined."""

    def link_remainder(row: str, folded: frozenset[int]) -> tuple[int, int]:
        return _overlap(((m, 1) for m in rows[row].click_masks), folded)

    def reason_remainder(row: str, folded: frozenset[int]) -> tuple[int, int]:
        return _overlap(rows[row].reason_masks.items(), folded)  # a record can have several reasons

    def cuts(windows: list[Window[str]]) -> set[int] | None:
        return None if whole is None else {w.start for w in windows} | {w.end for w in windows}

    breakdowns = {}
    for d in DIMENSIONS:
        candidates = None if whole is None else whole.breakdowns[d].shown
        breakdowns[d] = fold_table({r: t.breakdowns[d] for r, t in rows.items()}, k, candidates=candidates)
    return _Plan(
        breakdowns=breakdowns,
        read_time=fold_table(
            {r: t.read_buckets for r, t in rows.items()}, k, candidates=None if whole is None else whole.read_time.shown
        ),
        links=fold_table(
            {r: t.link_clickers for r, t in rows.items()},
            k,
            # Only the message's links are named; anything else (a person on the honeypot) is "other".
            candidates={link.link_no for link in links} if whole is None else whole.links.shown,
            remainder=link_remainder,
        ),
        opens=coarsen({r: t.first_opens for r, t in rows.items()}, k, boundaries=cuts(whole.opens if whole else [])),
        clicks=coarsen({r: t.first_clicks for r, t in rows.items()}, k, boundaries=cuts(whole.clicks if whole else [])),
        apart=frozenset(name for name, part in _APART.items() if part_visible((part(t) for t in rows.values()), k)),
        reasons=fold_table(
            {r: t.reason_records for r, t in rows.items()},
            k,
            candidates=None if whole is None else whole.reasons.shown,
            remainder=reason_remainder,
        ),
    )


def _rate(part: int | None, whole: int | None) -> float | None:
    return round(part / whole, 4) if part is not None and whole else None


def rates(tracked: int, opens: int | None, clicks: int | None, reads: int | None) -> dict[str, float | None]:
    """A population's rates from its people's figures (None: not defined, or a figure not shown); one
    definition for the report and for what the dashboard computes from the list's headlines."""
    # read: of the people who opened, how many read (person hits only)
    return {"open": _rate(opens, tracked), "click": _rate(clicks, tracked), "click_to_open": _rate(clicks, opens),
            "read": _rate(reads, opens)}  # fmt: skip


Cell = tuple[int, int]  # (weekday, hour of the day), UTC


def heatmap_fold(first_opens: Mapping[int, int], windows: Sequence[Window[str]], k: int) -> TableFold[str, Cell]:
    """Which (weekday, hour) cells of the openers' heatmap are shown: ``fold_table`` over the cells,
    then, while the shown cells and the opens timeline (``windows``) together give a small part away,
    one more cell is left out of the candidates and the table folded again.

    A timeline window and the cells of the hours it holds overlap: a window of 7 whose hours show a
    cell of 5 tells that 2 people opened in its other hours. Windows joined by a shown cell (a cell
    gathers its hour across weeks) form a group whose openers minus its shown cells is known exactly;
    that remainder must be 0 or at least ``k``, as ``fold_table``'s own is.
    """
    cells = heatmap_cells(first_opens)
    candidates = set(cells)
    while True:  # each turn leaves one cell out: at worst every cell is folded, and nothing leaks
        decision = fold_table({ALL: cells}, k, candidates=candidates)
        victim = _window_leak(first_opens, windows, cells, decision.shown, k)
        if victim is None:
            return decision
        candidates.discard(victim)


def _window_leak(opens: Mapping[int, int], windows: Sequence[Window[str]], cells: Counter[Cell], shown: Sequence[Cell],
                 k: int) -> Cell | None:  # fmt: skip
    """The smallest shown cell of a group of windows whose remainder is small, or None."""
    starts, group = [w.start for w in windows], list(range(len(windows)))  # union-find over windows

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = i = group[group[i]]
        return i

    home: dict[Cell, int] = {}  # a shown cell -> a window holding one of its hours
    for hour in (h for h, n in opens.items() if n > 0 and weekday_hour(h) in shown):
        w = bisect_right(starts, hour) - 1
        group[root(w)] = root(home.setdefault(weekday_hour(hour), w))
    left: Counter[int] = Counter()
    for i, window in enumerate(windows):
        left[root(i)] += window.counts[ALL]
    for cell in shown:
        left[root(home[cell])] -= cells[cell]
    small = {r for r, n in left.items() if not safe_remainder(n, k)}
    return min((c for c in shown if root(home[c]) in small), key=lambda c: (cells[c], c), default=None)


def _body(t: Tally, row: str, plan: _Plan, links: Sequence[LinkInfo], k: int) -> dict[str, Any]:
    def buckets(decision: TableFold[str, str], counts: Mapping[str, int], order: Sequence[str] = ()) -> dict[str, Any]:
        labels = [label for label in order if label in decision.shown] if order else decision.shown
        return {
            "buckets": [{"label": label, "records": counts[label]} for label in labels],
            "other": decision.other_of(row),
        }

    link_fold = plan.links
    other_clickers = link_fold.other_of(row)
    median = statistics.median(t.read_times) if headline_visible(len(t.read_times), k) else None
    return {
        "rates": rates(t.tracked, t.opens_unique, t.clicks_unique, t.reads_unique),
        "read_time": {
            "median_ms": None if median is None else int(median),
            **buckets(plan.read_time, t.read_buckets, READ_BUCKETS),
        },
        "breakdowns": {d: buckets(plan.breakdowns[d], t.breakdowns[d]) for d in DIMENSIONS},
        "links": {
            "buckets": [
                {
                    "link": link.link_no,
                    "text": link.text,
                    "url": link.url,
                    "clicks": (
                        {"unique": t.link_clickers[link.link_no], "total": t.link_clicks[link.link_no]}
                        if link.link_no in link_fold.shown
                        else None
                    ),
                }
                for link in links
            ],
            "other": None
            if other_clickers is None
            else {"unique": other_clickers, "total": sum(t.link_clicks[n] for n in link_fold.folded)},
        },
        "timeline": {
            "opens": [
                {"start": w.start * HOUR_MS, "end": w.end * HOUR_MS, "records": w.counts[row]} for w in plan.opens
            ],
            "clicks": [
                {"start": w.start * HOUR_MS, "end": w.end * HOUR_MS, "records": w.counts[row]} for w in plan.clicks
            ],
        },
    }


def _segments(figures: ReportInputs, whole: _Plan, k: int) -> dict[str, Any]:
    """Segments below the threshold fold into "other"; every figure is folded side by side."""
    tallies = figures.tallies
    decision = fold_table({ALL: {s: t.tracked for s, t in tallies.items()}}, k)
    rows: dict[str, Tally] = {s: tallies[s] for s in decision.shown}
    if decision.folded:
        rows[OTHER] = merged(tallies[s] for s in decision.folded)
    plan = _plan(rows, k, figures.links, whole)

    def entry(row: str) -> dict[str, Any]:
        t = rows[row]
        return {
            "tracked": t.tracked,
            "opens": {"unique": t.opens_unique, "total": t.opens_total},
            "clicks": {"unique": t.clicks_unique, "total": t.clicks_total},
            "reads": {"unique": t.reads_unique},
            **_apart(t, row, plan),
            **_body(t, row, plan, figures.links, k),
        }

    return {
        "attribute": figures.attribute,
        "values": [{"value": s, **entry(s)} for s in decision.shown],
        "other": entry(OTHER) if OTHER in rows else None,
    }


# --------------------------------------------------------------------------------------------------
# CSV export: one row per figure, the same figures the JSON shows.

CSV_COLUMNS = ("segment", "section", "item", "detail", "metric", "value")
_SUMMARY = {  # CSV metric -> where the JSON holds it
    "recipients": "recipients",
    "tracked": "tracked",
    "opens_unique": "opens.unique",
    "opens_total": "opens.total",
    "clicks_unique": "clicks.unique",
    "clicks_total": "clicks.total",
    "reads_unique": "reads.unique",
    "proxied_opens_unique": "proxied_opens.unique",
    "proxied_opens_total": "proxied_opens.total",
    "privacy_proxy_opens_unique": "privacy_proxy_opens.unique",
    "privacy_proxy_opens_total": "privacy_proxy_opens.total",
    "machine_records": "machine.records",
    "machine_opens": "machine.opens",
    "machine_clicks": "machine.clicks",
    "bot_opens": "bots.opens",
    "bot_clicks": "bots.clicks",
    "open_rate": "rates.open",
    "click_rate": "rates.click",
    "click_to_open_rate": "rates.click_to_open",
    "read_rate": "rates.read",
    "median_read_ms": "read_time.median_ms",
}


def _cell(value: Any) -> Any:
    # A spreadsheet runs a cell starting with these as a formula: link texts and cities are data.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def _csv_rows(segment: str, body: Mapping[str, Any]) -> Iterable[tuple[Any, ...]]:
    for metric, path in _SUMMARY.items():
        value: Any = body
        for key in path.split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is not None:
            yield segment, "summary", "", "", metric, value
    sections = [("read_time", body.get("read_time"))]
    sections += [(d, body.get("breakdowns", {}).get(d)) for d in DIMENSIONS]
    sections += [("machine_reason", (body.get("machine") or {}).get("by_reason"))]
    for section, data in sections:
        if data is None:
            continue
        for bucket in data["buckets"]:
            yield segment, section, bucket["label"], "", "records", bucket["records"]
        if data["other"] is not None:
            yield segment, section, OTHER, "", "records", data["other"]
    links = body.get("links")
    if links is not None:
        for link in links["buckets"]:
            if link["clicks"] is not None:
                for metric in ("unique", "total"):
                    yield segment, "link", link["text"], link["url"], f"clicks_{metric}", link["clicks"][metric]
        if links["other"] is not None:
            for metric in ("unique", "total"):
                yield segment, "link", OTHER, "", f"clicks_{metric}", links["other"][metric]
    heatmap = body.get("heatmap")
    if heatmap is not None:
        for c in heatmap["cells"]:
            yield segment, "heatmap", WEEKDAYS[c["weekday"]], f"{c['hour']:02d}:00Z", "records", c["records"]
        if heatmap["other"] is not None:
            yield segment, "heatmap", OTHER, "", "records", heatmap["other"]
    for series, windows in body.get("timeline", {}).items():
        for window in windows:
            yield (
                segment,
                f"timeline_{series}",
                _iso(window["start"]),
                _iso(window["end"]),
                "records",
                window["records"],
            )


def report_csv(report: Mapping[str, Any]) -> str:
    """The report as CSV (long format); a suppressed report has no rows to give."""
    if report.get("suppressed", True):
        raise ValueError("a suppressed report cannot be exported")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in _csv_rows("", report):
        writer.writerow([_cell(v) for v in row])
    segments = report.get("segments")
    if segments is not None:
        for entry in segments["values"]:
            for row in _csv_rows(str(entry["value"]), entry):
                writer.writerow([_cell(v) for v in row])
        if segments["other"] is not None:
            for row in _csv_rows(OTHER, segments["other"]):
                writer.writerow([_cell(v) for v in row])
    return out.getvalue()
