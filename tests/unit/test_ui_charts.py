"""Dashboard charts: well-formed inline SVG the CSP allows, accessible, hidden figures never drawn as numbers."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from politetenant.tracker.ui.charts import as_table, bars, heat_bucket, heatmap, sparkline, time_series

SVG = "{http://www.w3.org/2000/svg}"
K = 10
HOUR = 3_600_000
SENT = int(datetime(2024, 5, 3, 9, tzinfo=UTC).timestamp() * 1000)  # a Friday, 09:00 UTC
XSS = "<script>alert('x')</script> & co"


def timeline() -> str:
    return time_series(
        {
            "opens": [
                (SENT, SENT + HOUR, 120),
                (SENT + HOUR, SENT + 3 * HOUR, 40),
                (SENT + 3 * HOUR, SENT + 30 * HOUR, 27),
            ],
            "clicks": [(SENT, SENT + 2 * HOUR, 15), (SENT + 2 * HOUR, SENT + 30 * HOUR, 11)],
        },
        title="Opens and clicks over time",
    )


def full_heatmap() -> str:
    cells: dict[tuple[int, int], int | None] = {(d, h): 1000 * d + h * 37 for d in range(7) for h in range(24)}
    cells[(2, 3)] = None
    return heatmap(cells, title="Opens by weekday and hour", k=K)


CHARTS: dict[str, Callable[[], str]] = {
    "time_series": timeline,
    "time_series_empty": lambda: time_series({}, title="Nothing"),
    "bars": lambda: bars([("Desktop", 1_234_567), ("Mobile", 420), ("Other", None)], title="Devices", k=K),
    "bars_empty": lambda: bars([], title="Devices", k=K),
    "heatmap": full_heatmap,
    "heatmap_all_hidden": lambda: heatmap({}, title="Opens", k=K),
    "sparkline": lambda: sparkline([(1, 0.41), (2, None), (3, 0.5), (4, 0.432)], title="Open rate"),
    "sparkline_empty": lambda: sparkline([(1, None)], title="Open rate"),
}


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def texts(element: ET.Element) -> str:
    return " ".join(t.strip() for t in element.itertext() if t.strip())


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_every_chart_is_a_well_formed_accessible_image_that_scales(name: str) -> None:
    root = parse(CHARTS[name]())
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert len(root.get("aria-label", "")) > 10
    assert root[0].tag == f"{SVG}title" and (root[0].text or "").strip()
    assert root.get("width") == "100%"
    assert "chart" in (root.get("class") or "").split()
    # Drawn in a viewBox at most 400 wide with 11-12 px text: at 360 px wide the text stays >= 9.9 px.
    _, _, width, _ = (float(v) for v in (root.get("viewBox") or "").split())
    assert width <= 400


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_no_chart_needs_an_inline_style_the_csp_would_block(name: str) -> None:
    markup = CHARTS[name]()
    root = parse(markup)
    assert all("style" not in el.attrib for el in root.iter())
    assert all(el.tag != f"{SVG}style" for el in root.iter())
    assert "<script" not in markup.lower() and "href" not in markup  # nothing to run, nothing to fetch


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_the_same_figures_always_render_the_same_markup(name: str) -> None:
    assert CHARTS[name]() == CHARTS[name]()


def test_a_hidden_bar_is_not_drawn_and_says_fewer_than_k() -> None:
    root = parse(bars([("Dublin, IE", 1_234_567), ("Cork, IE", None)], title="Cities", k=K))
    dublin, cork = root.iter(f"{SVG}g")
    assert dublin.find(f"{SVG}rect[@class='chart-bar']") is not None
    assert "1,234,567" in texts(dublin)
    assert cork.find(f"{SVG}rect") is None
    assert texts(cork) == "Cork, IE: fewer than 10 Cork, IE fewer than 10"
    assert "fewer than 10" in (root.get("aria-label") or "")


def test_bars_are_scaled_to_the_largest_shown_value() -> None:
    root = parse(bars([("a", 200), ("b", 50), ("c", None)], title="Links", k=K))
    widths = [float(r.get("width") or 0) for r in root.iter(f"{SVG}rect")]
    assert len(widths) == 2 and widths[0] == 4 * widths[1] > 0


def test_a_long_bar_label_is_shortened_but_kept_whole_in_its_title() -> None:
    url = "https://intranet.example.com/news/2024/05/a-very-long-article-name"
    row = next(parse(bars([(url, 12)], title="Links", k=K)).iter(f"{SVG}g"))
    drawn = row.find(f"{SVG}text[@class='chart-label']")
    assert drawn is not None and (drawn.text or "").endswith("…") and len(drawn.text or "") <= 24
    assert url in (row.findtext(f"{SVG}title") or "")


def heat_cells(markup: str) -> dict[str, str]:
    """Each heatmap cell's <title> text -> its class (carried by the group that holds the cell)."""
    return {
        cell.findtext(f"{SVG}title") or "": group.get("class") or ""
        for group in parse(markup).iter(f"{SVG}g")
        for cell in group.findall(f"{SVG}rect")
        if cell.find(f"{SVG}title") is not None
    }


def test_a_hidden_heatmap_cell_shows_fewer_than_k_and_no_count() -> None:
    # The true counts were (Tue 10:00) 7 and (Wed 11:00) 3: the caller passes neither, only None/absent.
    markup = heatmap({(0, 9): 437, (1, 10): None}, title="Opens", k=K)
    cells = heat_cells(markup)
    assert cells["Mon 09:00: 437"] == "heat-4"
    assert cells["Tue 10:00: fewer than 10"] == "heat-hidden"
    assert cells["Wed 11:00: fewer than 10"] == "heat-hidden"
    assert list(cells.values()).count("heat-hidden") == 167
    label = parse(markup).get("aria-label") or ""
    assert "busiest Mon 09:00 UTC with 437" in label
    assert "167 of 168 hours fewer than 10" in label


@pytest.mark.parametrize("hidden", [set(), {(2, 3)}, {(d, h) for d in range(7) for h in range(24)}])
def test_a_full_heatmap_stays_small(hidden: set[tuple[int, int]]) -> None:
    counts = {(d, h): 100_000 + 1000 * d + h for d in range(7) for h in range(24)}
    markup = heatmap({key: None if key in hidden else v for key, v in counts.items()}, title="Opens", k=K)
    assert len(markup.encode()) < 20_000
    cells = heat_cells(markup)
    assert len(cells) == 168
    assert list(cells.values()).count("heat-hidden") == len(hidden)


def test_heat_classes_split_shown_counts_into_zero_and_four_quarters() -> None:
    assert [heat_bucket(v, 100) for v in (0, 1, 25, 26, 50, 51, 75, 76, 100)] == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert heat_bucket(0, 0) == 0


def test_a_heatmap_cell_outside_the_week_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        heatmap({(7, 0): 12}, title="Opens", k=K)


def test_labels_and_titles_are_escaped_not_injected() -> None:
    for markup in (
        bars([(XSS, 12)], title=XSS, k=K),
        time_series({XSS: [(SENT, SENT + HOUR, 12)]}, title=XSS),
        heatmap({}, title=XSS, k=K),
        sparkline([(1, 0.5)], title=XSS),
    ):
        assert "<script" not in markup
        root = parse(markup)
        assert root.findtext(f"{SVG}title") == XSS
        assert XSS in (root.get("aria-label") or "")


def test_time_series_has_a_utc_time_axis_totals_and_uneven_windows_drawn_per_hour() -> None:
    root = parse(timeline())
    axis = texts(root)
    assert "12:00 3 May" in axis and "00:00 4 May" in axis and "UTC" in axis and "per hour" in axis
    assert "opens (187)" in axis and "clicks (26)" in axis
    label = root.get("aria-label") or ""
    assert "187 opens, 26 clicks between 3 May 2024 09:00 and 4 May 2024 15:00 UTC" in label
    opens = root.find(f"{SVG}path[@class='chart-series-1']")
    assert opens is not None
    ys = [float(y) for y in re.findall(r"[\d.]+ ([\d.]+)", opens.get("d") or "")]
    baseline = max(ys)
    heights = sorted({round(baseline - y, 1) for y in ys} - {0.0}, reverse=True)
    # 120 in one hour, 40 in two (20/h), 27 in 27 hours (1/h): a wide window never looks like a peak.
    assert heights[0] / heights[1] == pytest.approx(6, rel=0.02)
    assert heights[0] / heights[2] == pytest.approx(120, rel=0.05)


def test_time_series_counts_use_thousands_separators() -> None:
    root = parse(time_series({"opens": [(SENT, SENT + HOUR, 123_456)]}, title="Opens"))
    assert "opens (123,456)" in texts(root)
    assert "123,456 opens" in (root.get("aria-label") or "")


def test_sparkline_leaves_gaps_for_messages_without_a_figure() -> None:
    root = parse(sparkline([(1, 0.40), (2, 0.42), (3, None), (4, 0.45), (5, 0.4321)], title="Open rate"))
    assert len(root.findall(f"{SVG}polyline")) == 2
    assert texts(root) == "Open rate 43.2%"
    label = root.get("aria-label") or ""
    assert "5 messages, from 40.0% to 43.2%, lowest 40.0%, highest 45.0%" in label
    assert "1 without a figure" in label


def test_an_isolated_sparkline_point_between_gaps_is_still_visible() -> None:
    root = parse(sparkline([(1, None), (2, 0.3), (3, None)], title="Open rate"))
    assert root.find(f"{SVG}polyline") is None
    assert len(root.findall(f"{SVG}circle")) == 2  # the point itself and the "latest" marker


def test_as_table_is_an_accessible_equivalent_with_hidden_figures_worded() -> None:
    markup = as_table(("Device", "People"), [("Desktop", 1_234_567), (XSS, None)], "Devices <all>", k=K)
    assert "<script" not in markup
    root = parse(markup)
    table = root.find("table")
    assert root.get("class") == "table-wrap" and table is not None
    assert table.findtext("caption") == "Devices <all>"
    assert [th.get("scope") for th in table.iter("th")] == ["col", "col", "row", "row"]
    first, second = table.iter("tr").__next__(), list(table.iter("tr"))[1:]
    assert texts(first) == "Device People"
    assert [texts(tr) for tr in second] == ["Desktop 1,234,567", f"{XSS} fewer than 10"]
    hidden = table.find(".//span[@class='hidden-figure']")
    assert hidden is not None and hidden.text == "fewer than 10"


def test_as_table_refuses_a_hidden_figure_it_cannot_word() -> None:
    with pytest.raises(ValueError, match="needs k"):
        as_table(("Device", "People"), [("Tablet", None)], "Devices")
