"""Charts for the dashboard: inline SVG strings rendered on the server, so a page needs no JavaScript.

Every chart is a pure function of figures the report already made threshold-safe: a hidden figure
reaches a chart as ``None`` (or is absent) and is drawn as "fewer than k", never as a number, because
its true value is never passed in. The markup uses presentation attributes and CSS classes only (the
Content-Security-Policy forbids ``style`` attributes and ``<style>`` elements); the presentation
attributes give sane colours without the stylesheet, and CSS rules on the classes override them.
Each chart has ``role="img"``, an ``aria-label`` summarising it and a ``<title>``; ``as_table`` gives the
same figures as a table for a ``<details>`` beside the chart. The same input always gives the same
string (fixed-precision coordinates, no locale, no clock).

CSS classes, for the stylesheet author:

- ``chart`` on every ``<svg>``, plus ``chart-time-series``, ``chart-bars``, ``chart-heatmap`` or
  ``chart-sparkline``; ``chart-axis`` (axis lines, tick labels, axis captions), ``chart-grid`` (grid
  lines), ``chart-legend``, ``chart-empty`` (the "no data" text).
- ``chart-series-1``, ``chart-series-2``, ... one per series of a time series (areas and legend swatches).
- ``chart-row`` (a row of a bar chart), ``chart-label``, ``chart-bar``, ``chart-value``,
  ``chart-hidden`` (the "fewer than k" text of a hidden figure).
- ``heat-0`` (zero) to ``heat-4`` (busiest quarter), ``heat-hidden`` (fewer than k): on the ``<g>`` that
  holds the heatmap cells of that class (cells inherit its fill) and on the legend's swatches.
- ``chart-line``, ``chart-dot``, ``chart-value`` in a sparkline.
- ``as_table``: ``table-wrap`` (the scrolling wrapper), ``num`` (numeric cells), ``hidden-figure``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from politetenant.tracker.ui.layout import table_open

HOUR_MS = 3_600_000
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
SERIES_COLOURS = ("#2563eb", "#d9480f", "#2f9e44", "#9c36b5")
# Heatmap classes and their default presentation attributes (the stylesheet may override them).
HEAT_GROUPS = {
    **{str(b): f' fill="{c}"' for b, c in enumerate(("#eef2f7", "#c6dbef", "#6baed6", "#2171b5", "#08306b"))},
    # pointer-events: the <title> of a hidden cell shows on hover although the cell is barely painted.
    "hidden": ' fill="#888" fill-opacity="0.12" stroke="#888" stroke-dasharray="2 2" pointer-events="all"',
}
# Candidate x-axis tick steps in hours: a tick every hour up to every four weeks, then doubling.
TIME_STEPS_H = (1, 2, 3, 6, 12, 24, 48, 168, 336, 672)
MAX_LABEL = 24  # characters of a bar label drawn; the whole label is in the row's <title>

Cell = str | int | None


def e(value: object) -> str:
    """Escape text for an attribute or text node (HTML and XML alike)."""
    return html.escape(str(value), quote=True)


def fmt_count(n: int) -> str:
    """A count with thousands separators: 1234567 -> "1,234,567"."""
    return f"{n:,}"


def fmt_percent(fraction: float) -> str:
    """A rate given as a fraction, as a percentage with one decimal: 0.4321 -> "43.2%"."""
    return f"{fraction * 100:.1f}%"


def fewer_than(k: int) -> str:
    """The one wording of a hidden figure (plain text; ``as_table`` wraps it like ``layout.fewer_than``)."""
    return f"fewer than {k}"


def fmt_time(ms: int) -> str:
    """A UTC instant as "3 May 2024 09:00" (fixed month names: no locale in the output)."""
    t = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return f"{t.day} {MONTHS[t.month - 1]} {t.year} {t:%H:%M}"


def fmt_window(start_ms: int, end_ms: int) -> str:
    """A timeline window as a table row label: "3 May 2024 09:00 – 3 May 2024 12:00 UTC"."""
    return f"{fmt_time(start_ms)} – {fmt_time(end_ms)} UTC"


def _c(v: float) -> str:
    """A coordinate with at most one decimal, so output is stable and small."""
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _svg(kind: str, size: tuple[int, int], title: str, label: str, body: str) -> str:
    width, height = size
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" role="img" aria-label="{e(label)}"'
        f' viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" font-size="12">'
        f"<title>{e(title)}</title>{body}</svg>"
    )


def _empty(kind: str, size: tuple[int, int], title: str, text: str) -> str:
    width, height = size
    body = (
        f'<text class="chart-empty" x="{width // 2}" y="{height // 2}" text-anchor="middle"'
        f' fill="currentColor">{e(text)}</text>'
    )
    return _svg(kind, size, title, f"{title}: {text}", body)


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2 or 5 times a power of ten that is at least ``raw``."""
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))


def _fmt_tick(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:,.{decimals}f}"


def _time_ticks(t0: int, t1: int) -> tuple[int, list[int]]:
    """Tick step (hours) and tick instants (ms) on UTC multiples of the step, at most six of them."""
    span_h = max(1.0, (t1 - t0) / HOUR_MS)
    step = next((s for s in TIME_STEPS_H if span_h / s <= 6), 0)
    if not step:
        step = TIME_STEPS_H[-1] * 2 ** math.ceil(math.log2(span_h / 6 / TIME_STEPS_H[-1]))
    first = -(-t0 // (step * HOUR_MS)) * step * HOUR_MS
    return step, list(range(first, t1 + 1, step * HOUR_MS))


def _time_labels(step_h: int, ticks: Sequence[int]) -> list[tuple[str, str]]:
    """(line 1, line 2) per tick: hours with the date under the first tick of each day, or dates."""
    labels: list[tuple[str, str]] = []
    previous_day = ""
    for tick in ticks:
        t = datetime.fromtimestamp(tick / 1000, tz=UTC)
        day = f"{t.day} {MONTHS[t.month - 1]}"
        if step_h >= 24:
            labels.append((day, ""))
        else:
            labels.append((f"{t:%H:%M}", day if day != previous_day else ""))
        previous_day = day
    return labels


def time_series(series: Mapping[str, Sequence[tuple[int, int, int]]], *, title: str) -> str:
    """Opens/clicks over time as step areas, one per series; windows are (start_ms, end_ms, count).

    Windows are uneven (the report widens them until each meets the threshold), so each is drawn at
    its count *per hour*: the area of a window, not its height, is its count, and a wide late window
    does not look like a peak. Exact counts per window belong in the table beside the chart.
    """
    size = (400, 220)
    windows = [w for ws in series.values() for w in ws]
    if not windows:
        return _empty("time-series", (400, 48), title, "No activity yet")
    x0, x1, top, base = 48, 370, 30, 176  # room on the right for the last time label
    t0, t1 = min(w[0] for w in windows), max(w[1] for w in windows)
    t1 = max(t1, t0 + HOUR_MS)
    rates = [v / max((end - start) / HOUR_MS, 1e-9) for start, end, v in windows]
    y_step = _nice_step(max(max(rates), 1e-9) / 4)
    y_max = y_step * max(1, math.ceil(max(rates) / y_step - 1e-9))

    def x(ms: int) -> float:
        return x0 + (x1 - x0) * (ms - t0) / (t1 - t0)

    def y(rate: float) -> float:
        return base - (base - top) * rate / y_max

    parts = []
    for i in range(round(y_max / y_step) + 1):
        yy = _c(y(i * y_step))
        parts.append(
            f'<line class="chart-grid" x1="{x0}" x2="{x1}" y1="{yy}" y2="{yy}" stroke="#ccc" stroke-width="0.5"/>'
        )
        parts.append(
            f'<text class="chart-axis" x="{x0 - 4}" y="{yy}" dy="4" text-anchor="end" fill="currentColor">'
            f"{_fmt_tick(i * y_step, y_step)}</text>"
        )
    step_h, ticks = _time_ticks(t0, t1)
    for tick, (line1, line2) in zip(ticks, _time_labels(step_h, ticks), strict=True):
        xx = _c(x(tick))
        second = f'<tspan x="{xx}" dy="13">{line2}</tspan>' if line2 else ""
        parts.append(
            f'<line class="chart-axis" x1="{xx}" x2="{xx}" y1="{base}" y2="{base + 4}" stroke="currentColor"/>'
        )
        parts.append(
            f'<text class="chart-axis" x="{xx}" y="{base + 16}" text-anchor="middle" fill="currentColor">'
            f"{line1}{second}</text>"
        )
    parts.append(f'<line class="chart-axis" x1="{x0}" x2="{x1}" y1="{base}" y2="{base}" stroke="currentColor"/>')
    parts.append('<text class="chart-axis" x="4" y="15" fill="currentColor">per hour</text>')
    parts.append(f'<text class="chart-axis" x="{x1}" y="216" text-anchor="end" fill="currentColor">UTC</text>')
    summary = []
    legend_x = 68
    for n, (name, ws) in enumerate(series.items(), start=1):
        colour = SERIES_COLOURS[(n - 1) % len(SERIES_COLOURS)]
        points: list[tuple[float, float]] = []
        end_prev: int | None = None
        for start, end, v in sorted(ws):
            if end_prev is not None and start != end_prev:
                points += [(x(end_prev), base), (x(start), base)]
            elif end_prev is None:
                points.append((x(start), base))
            rate = y(v / max((end - start) / HOUR_MS, 1e-9))
            points += [(x(start), rate), (x(end), rate)]
            end_prev = end
        total = sum(v for _, _, v in ws)
        if points and end_prev is not None:
            points.append((x(end_prev), base))
            d = "M" + " L".join(f"{_c(px)} {_c(py)}" for px, py in points) + " Z"
            parts.append(
                f'<path class="chart-series-{n}" d="{d}" fill="{colour}" fill-opacity="0.3" stroke="{colour}"'
                f' stroke-width="1.5"/>'
            )
        text = f"{name} ({fmt_count(total)})"
        parts.append(
            f'<g class="chart-legend"><rect class="chart-series-{n}" x="{legend_x}" y="6" width="10" height="10"'
            f' fill="{colour}"/><text x="{legend_x + 14}" y="15" fill="currentColor">{e(text)}</text></g>'
        )
        legend_x += 14 + 7 * len(text) + 12
        summary.append(f"{fmt_count(total)} {name}")
    label = f"{title}: {', '.join(summary)} between {fmt_time(t0)} and {fmt_time(t1)} UTC, drawn per hour"
    return _svg("time-series", size, title, label, "".join(parts))


def bars(items: Sequence[tuple[str, int | None]], *, title: str, k: int) -> str:
    """Horizontal bars with label and value; a ``None`` value is hidden: no bar, "fewer than k"."""
    if not items:
        return _empty("bars", (400, 40), title, "Nothing to show yet")
    row_h, label_w, bar_x, bar_w = 24, 150, 156, 150
    size = (400, 8 + row_h * len(items))
    top = max((v for _, v in items if v is not None), default=0)
    parts = []
    for i, (name, value) in enumerate(items):
        y = 8 + i * row_h
        shown = name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "…"
        figure = fewer_than(k) if value is None else fmt_count(value)
        row = [
            f"<title>{e(name)}: {figure}</title>",
            f'<text class="chart-label" x="{label_w}" y="{y + 16}" text-anchor="end" fill="currentColor">'
            f"{e(shown)}</text>",
        ]
        if value is None:
            row.append(
                f'<text class="chart-value chart-hidden" x="{bar_x}" y="{y + 16}" fill="currentColor"'
                f' font-style="italic">{figure}</text>'
            )
        else:
            width = bar_w * value / top if top else 0.0
            row.append(
                f'<rect class="chart-bar" x="{bar_x}" y="{y + 4}" width="{_c(width)}" height="{row_h - 8}"'
                f' fill="{SERIES_COLOURS[0]}"/>'
            )
            row.append(
                f'<text class="chart-value" x="{_c(bar_x + width + 4)}" y="{y + 16}" fill="currentColor">'
                f"{figure}</text>"
            )
        parts.append(f'<g class="chart-row">{"".join(row)}</g>')
    said = [f"{name} {fewer_than(k) if v is None else fmt_count(v)}" for name, v in items[:10]]
    more = f", and {len(items) - 10} more" if len(items) > 10 else ""
    return _svg("bars", size, title, f"{title}: {', '.join(said)}{more}", "".join(parts))


def heat_bucket(value: int, top: int) -> int:
    """The class (0..4) of a shown cell: 0 for zero, then quarters of the busiest cell's count."""
    if value <= 0 or top <= 0:
        return 0
    return min(4, -(-4 * value // top))


def heatmap(cells: Mapping[tuple[int, int], int | None], *, title: str, k: int) -> str:
    """Weekday (0 = Monday) x hour-of-day (UTC) counts; an absent or ``None`` cell is "fewer than k"."""
    for day, hour in cells:
        if not (0 <= day < 7 and 0 <= hour < 24):
            raise ValueError(f"heatmap cell ({day}, {hour}) is outside Mon..Sun x 0..23")
    size, x0, y0, cell = (400, 172), 36, 22, 15
    shown = {key: v for key, v in cells.items() if v is not None}
    top = max(shown.values(), default=0)
    # Cells are grouped by class, and the group carries the default fill: a class on each of 168 cells
    # would cost 3 KB. Hidden cells are tinted with a dashed outline (no per-cell hatching, same reason).
    groups: dict[str, list[str]] = {bucket: [] for bucket in HEAT_GROUPS}
    for day in range(7):
        for hour in range(24):
            value = shown.get((day, hour))
            figure = fewer_than(k) if value is None else fmt_count(value)
            groups["hidden" if value is None else str(heat_bucket(value, top))].append(
                f'<rect x="{x0 + hour * cell}" y="{y0 + day * cell}" width="{cell - 1}" height="{cell - 1}">'
                f"<title>{DAYS[day]} {hour:02d}:00: {figure}</title></rect>"
            )
    parts = [
        f'<text class="chart-axis" x="{x0 + h * cell + 7}" y="{y0 - 6}" text-anchor="middle" fill="currentColor">'
        f"{h:02d}</text>"
        for h in range(0, 24, 3)
    ]
    parts += [
        f'<text class="chart-axis" x="{x0 - 4}" y="{y0 + d * cell + 11}" text-anchor="end" fill="currentColor">'
        f"{DAYS[d]}</text>"
        for d in range(7)
    ]
    parts += [f'<g class="heat-{b}"{HEAT_GROUPS[b]}>{"".join(rects)}</g>' for b, rects in groups.items() if rects]
    legend_y = y0 + 7 * cell + 14
    legend = [f'<text x="{x0}" y="{legend_y + 10}" fill="currentColor">0</text>']
    for b in range(5):
        legend.append(
            f'<rect class="heat-{b}" x="{x0 + 12 + b * 14}" y="{legend_y}" width="13" height="13"'
            f"{HEAT_GROUPS[str(b)]}/>"
        )
    legend.append(f'<text x="{x0 + 86}" y="{legend_y + 10}" fill="currentColor">{fmt_count(top)}</text>')
    hx = x0 + 170
    legend.append(
        f'<rect class="heat-hidden" x="{hx}" y="{legend_y}" width="13" height="13"{HEAT_GROUPS["hidden"]}/>'
        f'<text x="{hx + 18}" y="{legend_y + 10}" fill="currentColor">{fewer_than(k)}</text>'
    )
    parts.append(f'<g class="chart-legend" font-size="11">{"".join(legend)}</g>')
    parts.append(
        f'<text class="chart-axis" x="{x0 + 24 * cell}" y="{y0 - 6}" text-anchor="end" fill="currentColor">UTC</text>'
    )
    if top:
        (bd, bh), _ = max(shown.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
        busiest = f"busiest {DAYS[bd]} {bh:02d}:00 UTC with {fmt_count(top)}"
    else:
        busiest = "no activity shown"
    label = f"{title}: {busiest}; {len(groups['hidden'])} of 168 hours {fewer_than(k)}"
    return _svg("heatmap", size, title, label, "".join(parts))


def sparkline(points: Sequence[tuple[int, float | None]], *, title: str) -> str:
    """Open rate (a fraction) across recent messages, oldest to newest; ``None`` is a gap (no figure)."""
    size = (200, 40)
    values = [v for _, v in points if v is not None]
    if not values:
        return _empty("sparkline", size, title, "No figures yet")
    ordered = sorted(points, key=lambda p: p[0])
    xs = [p[0] for p in ordered]
    lo, hi = min(values), max(values)
    x0, x1, top, base = 4.0, 146.0, 6.0, 34.0

    def x(i: int) -> float:
        if xs[-1] == xs[0]:
            return (x0 + x1) / 2 if len(xs) == 1 else x0 + (x1 - x0) * i / (len(xs) - 1)
        return x0 + (x1 - x0) * (xs[i] - xs[0]) / (xs[-1] - xs[0])

    def y(v: float) -> float:
        return (top + base) / 2 if hi - lo < 1e-12 else base - (base - top) * (v - lo) / (hi - lo)

    runs: list[list[tuple[float, float]]] = [[]]
    for i, (_, v) in enumerate(ordered):
        if v is None:
            runs.append([])
        else:
            runs[-1].append((x(i), y(v)))
    parts = []
    for run in runs:
        if len(run) > 1:
            pts = " ".join(f"{_c(px)},{_c(py)}" for px, py in run)
            parts.append(f'<polyline class="chart-line" points="{pts}" fill="none" stroke="currentColor"/>')
        elif run:
            parts.append(
                f'<circle class="chart-dot" cx="{_c(run[0][0])}" cy="{_c(run[0][1])}" r="1.5" fill="currentColor"/>'
            )
    figures = [(i, v) for i, (_, v) in enumerate(ordered) if v is not None]
    (last_i, last), first = figures[-1], figures[0][1]
    parts.append(
        f'<circle class="chart-dot" cx="{_c(x(last_i))}" cy="{_c(y(last))}" r="2.5" fill="{SERIES_COLOURS[0]}"/>'
    )
    parts.append(f'<text class="chart-value" x="152" y="24" fill="currentColor">{fmt_percent(last)}</text>')
    gaps = len(points) - len(values)
    label = (
        f"{title}: {len(points)} messages, from {fmt_percent(first)} to {fmt_percent(last)}, "
        f"lowest {fmt_percent(lo)}, highest {fmt_percent(hi)}"
        + (f"; {gaps} without a figure (below the threshold)" if gaps else "")
    )
    return _svg("sparkline", size, title, label, "".join(parts))


def as_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], caption: str, *, k: int | None = None) -> str:
    """The same figures as an accessible table, for a ``<details>`` beside a chart.

    The first cell of each row is its header (``th scope="row"``); ints get thousands separators and
    the ``num`` class; ``None`` is a hidden figure, worded "fewer than k" (so ``k`` is then required).
    """

    def cell(value: Cell, first: bool) -> str:
        if value is None:
            if k is None:
                raise ValueError("a hidden figure (None) needs k to be worded")
            text, cls = f'<span class="hidden-figure">{fewer_than(k)}</span>', ' class="num"'
        elif isinstance(value, int):
            text, cls = fmt_count(value), ' class="num"'
        else:
            text, cls = e(value), ""
        return f'<th scope="row"{cls}>{text}</th>' if first else f"<td{cls}>{text}</td>"

    head = "".join(f'<th scope="col">{e(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(cell(v, i == 0) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"{table_open(caption)}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
