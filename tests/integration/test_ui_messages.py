"""The analyst's dashboard pages over a real socket, on SQLite and PostgreSQL: the message list and
one message's report show exactly the API's figures (every ``data-figure`` is checked against the
API's JSON), a group below the threshold shows no number, the CSV is the API's, a privacy officer's
session is refused, and each page read is in the audit log as the API's would be."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from typing import Any

import pytest

from politetenant.tracker.http.auth import Role
from politetenant.tracker.reports import dashboard
from politetenant.tracker.reports.build import rates
from politetenant.tracker.ui.pages_messages import QueryProblem, fig, list_filters
from tests.conftest import Tracker
from tests.integration.test_reports_api import audit_rows, get, hit, people, register, store_reads, tokens_of
from tests.support import UA_CHROME, UA_OUTLOOK, UA_SCANNER

VOID = frozenset({"area", "br", "col", "hr", "img", "input", "link", "meta", "source", "wbr"})


class Figures(HTMLParser):
    """Every element carrying ``data-figure`` (or ``data-median``): its attributes and visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[dict[str, str], str]] = []
        self._open: list[tuple[dict[str, str], list[str], int]] = []  # collecting, with nesting depth

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID:
            return  # no end tag will come
        self._open = [(a, parts, depth + 1) for a, parts, depth in self._open]
        values = {name: value or "" for name, value in attrs}
        if "data-figure" in values or "data-median" in values:
            self._open.append((values, [], 0))

    def handle_endtag(self, tag: str) -> None:
        still = []
        for attrs, parts, depth in self._open:
            if depth == 0:
                self.found.append((attrs, " ".join("".join(parts).split())))
            else:
                still.append((attrs, parts, depth - 1))
        self._open = still

    def handle_data(self, data: str) -> None:
        for _, parts, _ in self._open:
            parts.append(data)


def figures_of(html: str) -> list[tuple[dict[str, str], str]]:
    parser = Figures()
    parser.feed(html)
    return parser.found


def at(document: Any, path: str) -> Any:
    """The value at a dotted path of the API's JSON (list items by index)."""
    for key in path.split("."):
        document = document[int(key)] if isinstance(document, list) else document[key]
    return document


async def sign_in(t: Tracker, role: Role = Role.ANALYST) -> None:
    resp = await t.client.post("/ui/sign-in", data={"token": t.tokens[role]}, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    assert "polite_session" in resp.cookies


async def page(t: Tracker, path: str, status: int = 200) -> str:
    await t.flush()
    resp = await t.client.get(path, allow_redirects=False)
    text = await resp.text()
    assert resp.status == status, text
    if status == 200:
        assert resp.headers["Content-Type"].startswith("text/html")
    return text


def check_figures(html: str, report: dict[str, Any], k: int, prefix: str = "") -> set[str]:
    """Every figure on the page is the API's value at its path; a hidden one reads "fewer than k"."""
    shown = set()
    for attrs, text in figures_of(html):
        if "data-figure" not in attrs:
            continue
        path = attrs["data-figure"].removeprefix(prefix)
        value = json.loads(attrs["data-value"])
        try:
            expected = at(report, path)
        except (KeyError, IndexError, TypeError):
            expected = None  # absent from the JSON: the page must say so, not print a number
        assert value == expected, path
        if value is None:  # hidden, or a rate with nobody to divide by
            assert text in (f"fewer than {k}", "not defined"), (path, text)
        shown.add(path)
    return shown


async def delivered(t: Tracker, recipients: int | list[dict[str, Any]] = 20, **kw: Any) -> dict[str, Any]:
    """A message with opens from phones and desktops, clicks, reads and a scanner."""
    out = await register(t, recipients, **kw)
    tokens = tokens_of(out)
    for token in tokens[:12]:
        await hit(t, f"/o/{token}.gif")
    for token in tokens[:6]:
        await hit(t, f"/o/{token}.gif", ua=UA_OUTLOOK)
        await hit(t, f"/c/{token}/1", ua=UA_CHROME)
    await hit(t, f"/o/{tokens[-1]}.gif", ua=UA_SCANNER)
    await store_reads(t, tokens[:6], 1_500)
    await store_reads(t, tokens[6:12], 12_000)
    return out


@pytest.mark.settings(min_segment_size=5)
async def test_every_figure_of_the_message_page_is_the_api_reports(tracker: Tracker) -> None:
    older = await delivered(tracker)
    out = await delivered(tracker)
    report = await get(tracker, f"/api/v1/messages/{out['id']}/report")
    listing = await get(tracker, "/api/v1/messages")
    await sign_in(tracker)
    html = await page(tracker, f"/ui/messages/{out['id']}")
    shown = check_figures(html, report, 5)
    # The tiles, the timeline, the read time, devices, places, links: all there, all the API's.
    assert {"recipients", "opens.unique", "rates.open", "clicks.unique", "rates.click", "rates.click_to_open",
            "read_time.median_ms", "breakdowns.device.buckets.0.records", "breakdowns.city.buckets.0.records",
            "links.buckets.0.clicks.unique", "timeline.opens.0.records"} <= shown  # fmt: skip
    if "heatmap" in report:
        assert "heatmap.cells.0.records" in shown
    assert ">12<" in html and "60.0%" in html  # people's opens and open rate, as a person reads them
    medians = dashboard.medians(listing["messages"])
    for attrs, _ in figures_of(html):
        if "data-median" in attrs:
            assert json.loads(attrs["data-value"]) == medians[attrs["data-median"]]
    assert f'href="/ui/messages/{out["id"]}/export.csv"' in html
    assert 'rel="noreferrer noopener"' in html and "<script" not in html and not re.search(r"\sstyle=", html)
    reads = await audit_rows(tracker, "report.read")
    assert ("analyst", f"message={out['id']}", "ok") in reads
    assert f"message={older['id']}" not in {detail for _, detail, _ in reads}  # medians read headlines only


@pytest.mark.settings(min_segment_size=5, segment_attributes=("department",))
async def test_a_group_below_the_threshold_shows_no_number(tracker: Tracker) -> None:
    out = await register(tracker, people(("Finance", 12), ("Sales", 14), ("Legal", 3)))
    tokens = tokens_of(out)
    for token in tokens:
        await hit(tracker, f"/o/{token}.gif")
    for token in tokens[12:15]:  # three of Sales's copies also opened by a gateway: a figure below k
        await hit(tracker, f"/o/{token}.gif", ua=UA_SCANNER)
    report = await get(tracker, f"/api/v1/messages/{out['id']}/report?segment=department")
    await sign_in(tracker)
    html = await page(tracker, f"/ui/messages/{out['id']}?segment=department")
    shown = check_figures(html, report, 5)
    assert {"segments.values.0.tracked", "segments.values.0.opens.unique", "segments.other.tracked"} <= shown
    # Legal (3 people) is folded with Finance into "other": neither is named, so no number sits by them.
    assert "Legal" not in html and "Finance" not in html
    assert at(report, "segments.other.tracked") == 15
    (sales_row,) = re.findall(r"<tr><th scope=\"row\">Sales</th>.*?</tr>", html)
    assert at(report, "segments.values.0.machine") is None  # three gateway copies: hidden in the API
    assert 'data-figure="segments.values.0.machine.records" data-value="null"' in sales_row
    assert not re.search(r">3<", sales_row)
    assert "fewer than 5" in sales_row


@pytest.mark.settings(min_segment_size=5, segment_attributes=("department",))
async def test_the_csv_is_the_apis_and_is_audited_as_an_export(tracker: Tracker) -> None:
    out = await delivered(tracker)
    await tracker.flush()
    for query in ("", "?segment=department"):
        api = await tracker.client.get(
            f"/api/v1/messages/{out['id']}/export.csv{query}", headers=tracker.auth(Role.ANALYST)
        )
        await sign_in(tracker)
        ui = await tracker.client.get(f"/ui/messages/{out['id']}/export.csv{query}")
        assert ui.status == 200 and ui.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert ui.headers["Content-Disposition"] == api.headers["Content-Disposition"]
        assert ui.headers["Cache-Control"] == "no-store"
        assert await ui.text() == await api.text()
    exports = await audit_rows(tracker, "report.export")
    assert exports.count(("analyst", f"message={out['id']} segment=department", "ok")) == 2


async def test_a_suppressed_message_shows_only_that_it_is(tracker: Tracker) -> None:
    out = await register(tracker, 9)  # below the default threshold of 10
    for token in tokens_of(out):
        await hit(tracker, f"/o/{token}.gif")
    await sign_in(tracker)
    html = await page(tracker, f"/ui/messages/{out['id']}")
    assert "Fewer than 10 tracked recipients: no figures." in html
    assert "data-figure" not in html and "export.csv" not in html
    listing = await page(tracker, "/ui/messages")
    assert "fewer than 10</span> recipients" in listing and 'data-figure="messages.0.' not in listing
    refused = await page(tracker, f"/ui/messages/{out['id']}/export.csv", status=403)
    assert "cannot be exported" in refused
    assert await audit_rows(tracker, "report.export") == [("analyst", f"message={out['id']}", "refused")]


@pytest.mark.settings(min_segment_size=5)
async def test_the_list_is_newest_first_filtered_and_paged(tracker: Tracker) -> None:
    await sign_in(tracker)
    assert "No messages yet: register one with POST /api/v1/messages" in await page(tracker, "/ui/messages")
    ids = []
    for n in range(21):
        name = "Dublin" if n % 2 else "Cork"
        out = await register(tracker, 6, list_name=name, subject=f"Update number {n}")
        for token in tokens_of(out)[: 1 + n % 5]:
            await hit(tracker, f"/o/{token}.gif")
        ids.append(out["id"])
    api = await get(tracker, "/api/v1/messages")
    html = await page(tracker, "/ui/messages")
    shown = re.findall(r'href="/ui/messages/(msg_[0-9a-f]+)"', html)
    assert shown == [m["id"] for m in api["messages"]] == ids[::-1][:20]  # newest first, one page
    newest = await get(tracker, f"/api/v1/messages/{ids[-1]}/report")
    for entry in api["messages"]:  # the list's headlines carry people's figures; the rates are the report's
        entry["rates"] = rates(entry["tracked"], entry["opens"]["unique"], entry["clicks"]["unique"], None)
    assert api["messages"][0]["rates"]["open"] == newest["rates"]["open"]
    assert "messages.0.rates.open" in check_figures(html, api, 5)
    assert 'role="img"' in html  # the open-rate trend
    older = re.search(r'href="/ui/messages\?(cursor=[^"]+)"[^>]*>Older messages<', html)
    assert older is not None
    last = await page(tracker, "/ui/messages?" + older.group(1).replace("&amp;", "&"))
    assert re.findall(r'href="/ui/messages/(msg_[0-9a-f]+)"', last) == [ids[0]]
    cork = await page(tracker, "/ui/messages?list=Cork")
    listed = re.findall(r'href="/ui/messages/(msg_[0-9a-f]+)"', cork)
    assert listed == [i for n, i in enumerate(ids) if n % 2 == 0][::-1]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    both = await page(tracker, f"/ui/messages?list=Cork&from={today}&to={today}")  # the "to" day is included
    assert re.findall(r'href="/ui/messages/(msg_[0-9a-f]+)"', both) == listed
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86_400))
    assert "No messages match these filters." in await page(tracker, f"/ui/messages?from={tomorrow}")
    bad = await page(tracker, "/ui/messages?from=31/05/2024", status=400)
    assert "give a date as YYYY-MM-DD" in bad


@pytest.mark.settings(segment_attributes=("department",))
async def test_a_privacy_officer_cannot_read_the_analysts_pages(tracker: Tracker) -> None:
    out = await delivered(tracker)
    await sign_in(tracker, Role.PRIVACY)
    for path in ("/ui/messages", f"/ui/messages/{out['id']}", f"/ui/messages/{out['id']}/export.csv"):
        resp = await tracker.client.get(path, allow_redirects=False)
        assert resp.status == 403, path
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "data-figure" not in await resp.text()
    assert await audit_rows(tracker, "report.read") == []


@pytest.mark.settings(segment_attributes=("department",))
async def test_a_segment_the_tenant_does_not_keep_is_explained(tracker: Tracker) -> None:
    out = await delivered(tracker)
    await sign_in(tracker)
    html = await page(tracker, f"/ui/messages/{out['id']}?segment=grade", status=422)
    assert "not a segment attribute of this tenant; it has department" in html
    await page(tracker, "/ui/messages/msg_00000000000000000000", status=404)


def test_filters_take_whole_utc_days_and_empty_rates_are_not_defined() -> None:
    filters = list_filters({"list": "Cork", "from": "2024-05-01", "to": "2024-05-31", "cursor": ""})
    assert (filters.since_ms, filters.until_ms) == (1_714_521_600_000, 1_717_200_000_000)  # to: June 1st, 00:00
    assert filters.query("c1") == "list=Cork&from=2024-05-01&to=2024-05-31&cursor=c1"
    with pytest.raises(QueryProblem):
        list_filters({"from": "2024-06-02", "to": "2024-06-01"})
    segment = {"tracked": 6, "opens": {"unique": 0}, "rates": {"click_to_open": None}}
    assert fig(segment, "rates.click_to_open", 5, "rate").endswith(">not defined</span></span>")
    assert "fewer than 5" in fig({"opens": {"unique": 7}, "rates": {"read": None}}, "rates.read", 5, "rate")
    aggregate = {"mode": "aggregate", "opens": {"unique": None, "total": 3}}  # one record: no distinct people
    assert "not defined" in fig(aggregate, "opens.unique", 5) and ">3<" in fig(aggregate, "opens.total", 5)
