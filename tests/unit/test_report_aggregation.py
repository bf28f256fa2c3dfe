"""Reports from hand-made events: people's figures, proxies and machines apart, read time, timeline,
links, segments, CSV."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from politetenant.tracker.http.openapi import build_document
from politetenant.tracker.judging.behaviour import CopyRules
from politetenant.tracker.judging.verdicts import Reason
from politetenant.tracker.reports.api_reports import OPERATIONS, MessageReport
from politetenant.tracker.reports.build import build_report, heatmap_fold, report_csv
from politetenant.tracker.reports.report_data import (
    HOUR_MS,
    Accumulator,
    EventRow,
    LinkInfo,
    ReportInputs,
    heatmap_cells,
    read_bucket,
    weekday_hour,
)
from politetenant.tracker.reports.thresholds import ALL, coarsen, fold_table
from politetenant.tracker.server.app import api_operations
from politetenant.tracker.storage.rows import MessageRow

CREATED = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS  # on the hour
EARLY_MS = 2_000
RULES = CopyRules(early_ms=EARLY_MS, burst_ms=10_000, gateway_click_ms=120_000, link_count=2)
K = 5
LINKS = [LinkInfo(1, "new policy", "https://intranet.example.com/policy"), LinkInfo(2, "FAQ", "https://hr.example/faq")]
CITIES = {b"sealed-dublin": "Dublin", b"sealed-cork": "Cork"}


def message(tracked: int = 20, mode: str = "anonymous") -> MessageRow:
    return MessageRow(
        id="msg_00000000000000000001", created_at=CREATED, mode=mode, subject=b"s", from_name=b"s",
        from_email=b"s", list_name=b"s", recipients=tracked + 2, tracked=tracked, word_count=100, flesch=60.0,
        link_count=2, created_by="tok",
    )  # fmt: skip


def rid(n: int) -> bytes:
    return n.to_bytes(12, "big")


def ev(
    record: int, kind: int = 1, *, minutes: float = 30, link: int | None = None, device: str = "mobile",
    os: str = "iOS", browser: str = "Apple Mail", country: str | None = "IE", city: bytes | None = b"sealed-dublin",
    bot: int = 0, read_ms: int | None = None,
) -> EventRow:  # fmt: skip
    at = CREATED + int(minutes * 60_000)
    return (rid(record), kind, link, at, country, city, os, device, browser, bot, read_ms)


def accumulator(mode: str = "anonymous", first_hit: int | None = CREATED, **kw: Any) -> Accumulator:
    """``first_hit``: the message's first hit; by default at sending, as a gateway's delivery scan."""
    rules = dataclasses.replace(RULES, per_copy=mode != "aggregate")
    return Accumulator(rules, first_hit, open_city=CITIES.__getitem__, **kw)


def report_of(
    events: Iterable[EventRow], *, tracked: int = 20, mode: str = "anonymous", k: int = K,
    segments: Mapping[bytes, str] | None = None, attribute: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    acc = accumulator(mode, segment_of=segments)
    events = sorted(events, key=lambda e: (e[0], e[3], e[1]))  # as the database streams them
    acc.add(events[: len(events) // 2])  # in two batches, as streamed
    acc.add(events[len(events) // 2 :])
    populations: dict[str, int] = {ALL: tracked}
    if segments is not None:
        populations = {}
        for value in segments.values():
            populations[value] = populations.get(value, 0) + 1
    tallies = acc.finish(populations)
    return build_report(message(tracked, mode), ReportInputs(tallies, LINKS, attribute), k)


def test_headline_counts_people_and_hits_apart_and_rates_use_the_tracked_population() -> None:
    events = [ev(r) for r in range(8)] + [ev(0, minutes=90), ev(1, minutes=95)]  # 8 openers, 10 opens
    events += [ev(2, 2, read_ms=5000), ev(9, 2, read_ms=1000)]  # a reader who had not opened counts as opener
    events += [ev(3, 3, link=1), ev(3, 3, link=2, minutes=45), ev(4, 3, link=1)]  # both links, minutes apart
    report = report_of(events)
    assert report["suppressed"] is False
    assert report["opens"] == {"unique": 9, "total": 10}
    assert report["reads"] == {"unique": 2}
    assert report["clicks"] == {"unique": 2, "total": 3}
    assert report["bots"] == {"opens": 0, "clicks": 0}
    assert report["machine"] == {"records": 0, "opens": 0, "clicks": 0, "by_reason": {"buckets": [], "other": None}}
    assert report["proxied_opens"] == report["privacy_proxy_opens"] == {"unique": 0, "total": 0}
    assert report["rates"] == {"open": 0.45, "click": 0.1, "click_to_open": 0.2222, "read": 0.2222}
    assert report["recipients"] == 22 and report["tracked"] == 20


def test_machines_and_early_hits_are_reported_apart_by_reason_and_never_in_peoples_figures() -> None:
    humans = [ev(r, device="desktop") for r in range(6)]
    bots = [ev(r, bot=Reason.HONEYPOT, device="bot") for r in range(6, 15)]
    bots += [ev(r, minutes=0.01, device="bot") for r in range(15, 20)]  # 0.6 s after the first hit
    bots += [ev(r, 3, link=1, bot=Reason.SCANNER_AGENT, device="bot") for r in range(6, 12)]
    report = report_of(humans + bots)
    assert report["opens"] == {"unique": 6, "total": 6}
    assert report["clicks"] == {"unique": 0, "total": 0}
    assert report["bots"] == {"opens": 14, "clicks": 6}
    assert report["machine"] == {
        "records": 14,
        "opens": 14,
        "clicks": 6,
        "by_reason": {
            "buckets": [
                {"label": "honeypot", "records": 9},
                {"label": "scanner_agent", "records": 6},
                {"label": "early_hit", "records": 5},
            ],
            "other": None,
        },
    }
    assert report["breakdowns"]["device"]["buckets"] == [{"label": "desktop", "records": 6}]
    assert sum(w["records"] for w in report["timeline"]["opens"]) == 6
    assert all(link["clicks"] is None for link in report["links"]["buckets"])


def test_message_below_the_threshold_shows_only_its_id() -> None:
    assert report_of([ev(0)], tracked=4) == {"id": "msg_00000000000000000001", "suppressed": True}


@pytest.mark.parametrize(
    ("read_ms", "bucket"),
    [(0, "glanced"), (2_999, "glanced"), (3_000, "skimmed"), (9_999, "skimmed"), (10_000, "read"), (30_000, "read")],
)
def test_read_time_bucket_edges(read_ms: int, bucket: str) -> None:
    assert read_bucket(read_ms) == bucket


def test_read_time_buckets_use_each_readers_longest_read_and_the_median() -> None:
    events = [ev(r, 2, read_ms=2_999) for r in range(5)]  # glanced
    events += [ev(r, 2, read_ms=3_000) for r in range(5, 10)]  # skimmed
    events += [ev(r, 2, read_ms=1_000) for r in range(10, 15)] + [ev(r, 2, read_ms=10_000) for r in range(10, 15)]
    report = report_of(events)
    assert report["read_time"]["buckets"] == [
        {"label": "glanced", "records": 5},
        {"label": "skimmed", "records": 5},
        {"label": "read", "records": 5},
    ]
    assert report["read_time"]["other"] is None
    assert report["read_time"]["median_ms"] == 3_000


def test_read_time_of_a_handful_of_readers_shows_no_median_and_no_buckets() -> None:
    report = report_of([ev(r, 2, read_ms=12_000) for r in range(4)])
    assert report["read_time"] == {"median_ms": None, "buckets": [], "other": None}


def test_small_read_bucket_never_shows_and_its_neighbour_joins_other() -> None:
    events = [ev(r, 2, read_ms=1_000) for r in range(12)] + [ev(r, 2, read_ms=5_000) for r in range(12, 18)]
    events += [ev(r, 2, read_ms=20_000) for r in range(18, 20)]  # two careful readers
    rt = report_of(events)["read_time"]
    assert rt["buckets"] == [{"label": "glanced", "records": 12}]
    assert rt["other"] == 8  # 6 skimmed + 2 read: 20 readers = 12 + 8, nothing below 5 to subtract


def test_timeline_counts_each_opener_once_in_the_hour_of_the_first_open() -> None:
    events = [ev(r, minutes=10) for r in range(6)] + [ev(r, minutes=70) for r in range(6)]  # re-opens
    events += [ev(r, minutes=130) for r in range(6, 12)] + [ev(12, minutes=190)]
    opens = report_of(events)["timeline"]["opens"]
    assert opens == [
        {"start": CREATED, "end": CREATED + 2 * HOUR_MS, "records": 6},
        {"start": CREATED + 2 * HOUR_MS, "end": CREATED + 4 * HOUR_MS, "records": 7},  # the late one joins
    ]


def test_clicks_per_link_name_the_link_and_fold_a_small_link_into_other() -> None:
    events = [ev(r, 3, link=1) for r in range(8)] + [ev(0, 3, link=1)]
    events += [ev(r, 3, link=2) for r in range(10, 13)]  # only three people clicked the FAQ
    report = report_of(events)
    links = report["links"]
    # Showing link 1 (8) would give the FAQ's 3 away as clicks.unique (11) - 8: both fold into other.
    assert links == {
        "buckets": [
            {"link": 1, "text": "new policy", "url": "https://intranet.example.com/policy", "clicks": None},
            {"link": 2, "text": "FAQ", "url": "https://hr.example/faq", "clicks": None},
        ],
        "other": {"unique": 11, "total": 12},
    }
    assert report["clicks"] == {"unique": 11, "total": 12}


def test_a_link_clicked_by_many_shows_beside_a_folded_one_when_what_is_left_is_large() -> None:
    events = [ev(r, 3, link=1) for r in range(12)] + [ev(r, 3, link=2) for r in range(12, 15)]
    events += [ev(r, 3, link=2) for r in range(15, 17)]
    links = report_of(events)["links"]
    assert links["buckets"][1]["clicks"] == {"unique": 5, "total": 5}
    events = [ev(r, 3, link=1) for r in range(12)] + [ev(r, 3, link=2) for r in range(12, 15)]
    links = report_of(events)["links"]
    assert [b["clicks"] for b in links["buckets"]] == [None, None]
    assert links["other"] == {"unique": 15, "total": 15}


def test_breakdowns_describe_each_openers_first_open_and_fold_small_places() -> None:
    events = [ev(r, minutes=5, device="mobile") for r in range(12)]
    events += [ev(r, minutes=50, device="desktop") for r in range(12)]  # later opens elsewhere: ignored
    events += [ev(r, device="desktop", city=b"sealed-cork") for r in range(12, 18)]
    events += [ev(r, device="tablet", country=None, city=None) for r in range(18, 20)]
    b = report_of(events)["breakdowns"]
    # tablet (2) folds; "other" would be 2, so desktop (6) joins it: 20 = 12 + 8
    assert b["device"] == {"buckets": [{"label": "mobile", "records": 12}], "other": 8}
    assert b["city"] == {"buckets": [{"label": "Dublin, IE", "records": 12}], "other": 8}
    assert b["country"] == {"buckets": [], "other": 20}  # IE 18 would leave the 2 unknowns derivable
    labels = {x["label"] for d in b.values() for x in d["buckets"]}
    assert "tablet" not in labels and "(unknown)" not in labels


def test_each_sealed_city_is_opened_once() -> None:
    opened: list[bytes] = []

    def open_city(sealed: bytes) -> str:
        opened.append(sealed)
        return CITIES[sealed]

    acc = Accumulator(RULES, CREATED, open_city=open_city)
    acc.add([ev(r, city=b"sealed-dublin" if r % 2 else b"sealed-cork") for r in range(200)])
    acc.finish({ALL: 200})
    assert sorted(opened) == [b"sealed-cork", b"sealed-dublin"]


def test_memory_holds_one_copys_hits_at_a_time() -> None:
    acc = accumulator()
    held = 0
    for r in range(20):
        acc.add([ev(r, kind, minutes=30 + n) for n in range(50) for kind in (1, 2)])
        held = max(held, len(acc.run))
    assert held == 100  # one record's hits, never the message's 2,000
    assert len(acc._places) == 1  # one shared (device, os, browser, country, city) tuple
    assert acc.finish({ALL: 20})[ALL].opens_unique == 20 and not acc.run


def test_one_record_for_everyone_is_judged_hit_by_hit() -> None:
    acc = accumulator("aggregate")
    held = 0
    for batch in range(10):
        acc.add([ev(0, minutes=30 + batch + n / 1000) for n in range(5_000)])
        held = max(held, len(acc.run))
    assert held < 5_000
    assert acc.finish({ALL: 20})[ALL].opens_total == 50_000


def test_events_out_of_record_order_are_refused_not_misjudged() -> None:
    acc = accumulator()
    acc.add([ev(2), ev(3)])
    with pytest.raises(ValueError, match="ordered by record"):
        acc.add([ev(1)])


def test_aggregate_message_reports_totals_only() -> None:
    events = [ev(0) for _ in range(30)] + [ev(0, 3, link=1) for _ in range(4)] + [ev(0, bot=2)]
    events += [ev(0, 3, link=0, bot=Reason.HONEYPOT), ev(0, minutes=0.01), ev(0, bot=Reason.PRIVACY_PROXY)]
    report = report_of(events, mode="aggregate")
    # Everyone's copy: a honeypot hit marks no one else's hits; the early window still applies.
    assert report["opens"] == {"unique": None, "total": 30}
    assert report["clicks"] == {"unique": None, "total": 4}
    assert report["machine"] == {"records": None, "opens": 2, "clicks": 1, "by_reason": None}
    assert report["privacy_proxy_opens"] == {"unique": None, "total": 1}
    assert report["bots"] == {"opens": 3, "clicks": 1}
    for section in ("breakdowns", "links", "timeline", "read_time", "rates", "segments"):
        assert section not in report


def department(r: int) -> str:
    return "Finance" if r < 10 else "Sales" if r < 22 else "Legal" if r < 25 else "HR"


def test_segments_show_the_same_figures_and_small_segments_fold_into_other() -> None:
    segments = {rid(r): department(r) for r in range(28)}  # Finance 10, Sales 12, Legal 3, HR 3
    events = [ev(r, minutes=10) for r in range(28)] + [ev(r, 3, link=1) for r in range(0, 28, 2)]
    report = report_of(events, tracked=28, segments=segments, attribute="department")
    seg = report["segments"]
    assert seg["attribute"] == "department"
    assert [v["value"] for v in seg["values"]] == ["Sales", "Finance"]
    assert seg["other"]["tracked"] == 6  # Legal + HR together, never apart
    assert "Legal" not in str(seg) and "HR" not in str(seg)
    parts = [*seg["values"], seg["other"]]
    for key in ("opens", "clicks"):
        for figure in ("unique", "total"):
            assert sum(p[key][figure] for p in parts) == report[key][figure]
    sales = seg["values"][0]
    assert sales["tracked"] == 12 and sales["opens"] == {"unique": 12, "total": 12}
    assert sales["rates"]["open"] == 1.0
    for part in parts:
        assert set(part) >= {"tracked", "opens", "clicks", "reads", "bots", "rates", "read_time", "breakdowns"}


def test_segment_breakdowns_are_never_finer_than_the_whole_message() -> None:
    segments = {rid(r): "A" if r < 15 else "B" for r in range(30)}
    events = [ev(r, device="mobile") for r in range(30) if r not in (3, 20)]
    events += [ev(3, device="watch"), ev(20, device="watch")]
    report = report_of(events, tracked=30, segments=segments, attribute="team")
    whole = report["breakdowns"]["device"]
    assert whole == {"buckets": [], "other": 30}  # "watch" (2) forces mobile into other
    for part in report["segments"]["values"]:
        assert part["breakdowns"]["device"]["buckets"] == []  # else mobile 14 + 14 would leave 2


def test_segment_timelines_share_windows_that_each_segment_fills() -> None:
    segments = {rid(r): "A" if r < 10 else "B" for r in range(20)}
    events = [ev(r, minutes=10 + 60 * (r % 3)) for r in range(20)]
    report = report_of(events, tracked=20, segments=segments, attribute="team")
    whole = {(w["start"], w["end"]) for w in report["timeline"]["opens"]}
    cuts = {t for window in whole for t in window}
    for part in report["segments"]["values"]:
        for w in part["timeline"]["opens"]:
            assert w["records"] >= K and w["start"] in cuts and w["end"] in cuts


def test_csv_holds_the_reports_figures_and_neutralises_formulas() -> None:
    links = [LinkInfo(1, "=HYPERLINK(1)", "https://x.example/"), LinkInfo(2, "FAQ", "https://hr.example/faq")]
    acc = accumulator()
    acc.add(sorted([ev(r, 3, link=1) for r in range(10)] + [ev(r) for r in range(10)]))
    acc.add([ev(r, bot=Reason.SCANNER_AGENT) for r in range(10, 16)])
    report = build_report(message(), ReportInputs(acc.finish({ALL: 20}), links), K)
    rows = list(csv.reader(io.StringIO(report_csv(report))))
    assert rows[0] == ["segment", "section", "item", "detail", "metric", "value"]
    cells = {(r[1], r[2], r[4]): r[5] for r in rows[1:]}
    assert cells[("summary", "", "opens_unique")] == "10"
    assert cells[("summary", "", "clicks_total")] == "10"
    assert cells[("device", "mobile", "records")] == "10"
    assert cells[("link", "'=HYPERLINK(1)", "clicks_unique")] == "10"
    assert cells[("summary", "", "machine_records")] == "6" and cells[("summary", "", "bot_opens")] == "6"
    assert cells[("summary", "", "proxied_opens_unique")] == cells[("summary", "", "privacy_proxy_opens_total")] == "0"
    assert cells[("machine_reason", "scanner_agent", "records")] == "6"
    assert not any(cell.startswith("=") for r in rows for cell in r)


def test_csv_of_a_suppressed_report_is_refused() -> None:
    with pytest.raises(ValueError, match="suppressed"):
        report_csv({"id": "msg_x", "suppressed": True})


def test_reports_match_the_schema_the_openapi_document_publishes() -> None:
    segments = {rid(r): department(r) for r in range(28)}
    events = [ev(r, minutes=10 + r) for r in range(28)] + [ev(r, 3, link=1) for r in range(0, 28, 2)]
    events += [ev(r, 2, read_ms=100 * r) for r in range(28)]
    reports = [
        report_of(events, tracked=28, segments=segments, attribute="department"),
        report_of(events, tracked=28),
        report_of(events, mode="aggregate"),
        report_of(events, tracked=3),
    ]
    for report in reports:
        assert MessageReport.model_validate(report).model_dump(exclude_unset=True) == report
    document = build_document(OPERATIONS)
    assert set(document["paths"]) == {
        "/api/v1/messages",
        "/api/v1/messages/{id}/report",
        "/api/v1/messages/{id}/export.csv",
        "/api/v1/messages/{id}/recipients",
    }


def test_report_schemas_keep_their_names_in_the_whole_apps_document() -> None:
    # The document keys component schemas by class name: another module's model of the same name
    # would silently replace ours (a "Counts" once did).
    operations = [*api_operations(), *OPERATIONS]
    schemas = build_document(operations)["components"]["schemas"]
    models = {m for op in operations for m in (op.body, op.response) if isinstance(m, type)}
    for model in models:
        own = model.model_json_schema(ref_template="#/components/schemas/{model}")
        nested = own.pop("$defs", {})
        assert schemas[model.__name__] == own, model
        for name, schema in nested.items():
            assert schemas[name] == schema, (model, name)


# --------------------------------------------------------------------------------------------------
# Proxies and machines, apart from the people's figures.


def test_proxied_opens_are_peoples_opens_with_no_device_place_or_read_time() -> None:
    people = [ev(r, device="desktop") for r in range(10)] + [ev(r, 2, read_ms=5_000) for r in range(10)]
    # Gmail's image proxy fetching for ten people: whatever device and place its request carried.
    proxied = [ev(r, bot=Reason.PROXIED) for r in range(10, 20)]
    proxied += [ev(r, 2, read_ms=30_000, bot=Reason.PROXIED) for r in range(10, 20)]
    report = report_of(people + proxied)
    assert report["opens"] == {"unique": 20, "total": 20}
    assert report["proxied_opens"] == {"unique": 10, "total": 10}
    assert report["rates"]["open"] == 1.0
    assert report["reads"] == {"unique": 10}  # the proxy's stream time is nobody's reading
    assert report["read_time"]["buckets"] == [{"label": "skimmed", "records": 10}]
    assert report["breakdowns"]["device"]["buckets"] == [
        {"label": "(unknown)", "records": 10},
        {"label": "desktop", "records": 10},
    ]
    assert report["breakdowns"]["city"]["buckets"] == [
        {"label": "(unknown)", "records": 10},
        {"label": "Dublin, IE", "records": 10},
    ]
    assert report["bots"] == {"opens": 0, "clicks": 0}


def test_apple_privacy_proxy_opens_are_apart_and_never_in_rates() -> None:
    people = [ev(r) for r in range(6)]
    apple = [ev(r, minutes=5, bot=Reason.PRIVACY_PROXY) for r in range(12)]  # on delivery, read or not
    report = report_of(people + apple)
    assert report["opens"] == {"unique": 6, "total": 6}
    assert report["rates"]["open"] == 0.3
    assert report["privacy_proxy_opens"] == {"unique": 12, "total": 12}
    assert report["machine"]["records"] == 0
    assert report["bots"] == {"opens": 12, "clicks": 0}


def test_a_copy_that_hits_the_honeypot_in_the_same_burst_counts_for_no_one() -> None:
    events = []
    for r in range(10):  # a gateway: opens, follows the policy link and the hidden one within seconds
        events += [ev(r, minutes=30), ev(r, 3, link=1, minutes=30.05), ev(r, 3, link=0, minutes=30.1, bot=3)]
    events += [ev(r, minutes=90) for r in range(5)]  # five people open their copies later
    report = report_of(events)
    assert report["opens"] == {"unique": 5, "total": 5}
    assert report["clicks"] == {"unique": 0, "total": 0}
    assert report["machine"]["records"] == 10 and report["machine"]["clicks"] == 20
    # a record counts once per reason it has
    buckets = report["machine"]["by_reason"]["buckets"]
    assert sorted(buckets, key=lambda b: b["label"]) == [
        {"label": "honeypot", "records": 10},
        {"label": "honeypot_burst", "records": 10},
    ]


def test_a_gateway_click_counts_only_after_the_persons_open() -> None:
    gateway = Reason.GATEWAY_NETWORK
    events = [ev(r, minutes=30) for r in range(6)] + [ev(r, 3, link=1, minutes=31, bot=gateway) for r in range(6)]
    events += [ev(r, 3, link=1, minutes=31, bot=gateway) for r in range(6, 12)]  # no open: the gateway's check
    report = report_of(events)
    assert report["clicks"] == {"unique": 6, "total": 6}
    assert report["machine"]["by_reason"]["buckets"] == [{"label": "gateway_click", "records": 6}]


def test_a_small_machine_population_is_hidden_and_left_out_of_bots() -> None:
    events = [ev(r) for r in range(10)] + [ev(r, bot=Reason.SCANNER_AGENT) for r in range(10, 13)]
    events += [ev(r, bot=Reason.PROXIED) for r in range(13, 15)]
    report = report_of(events)
    assert report["machine"] is None  # three copies: as good as naming them
    assert report["proxied_opens"] is None
    assert report["privacy_proxy_opens"] == {"unique": 0, "total": 0}
    assert report["bots"] == {"opens": 0, "clicks": 0}
    assert report["opens"] == {"unique": 12, "total": 12}


def test_small_reasons_fold_into_other_and_never_leave_a_small_remainder() -> None:
    events = [ev(r, bot=Reason.SCANNER_AGENT) for r in range(12)] + [ev(r, bot=Reason.LIBRARY) for r in range(12, 18)]
    events += [ev(r, bot=Reason.HEAD) for r in range(18, 20)] + [ev(r, bot=Reason.PREFETCH) for r in range(18, 21)]
    by_reason = report_of(events, tracked=21)["machine"]["by_reason"]
    assert by_reason == {"buckets": [{"label": "scanner_agent", "records": 12}], "other": 9}
    events = [ev(r, bot=Reason.SCANNER_AGENT) for r in range(12)] + [ev(r, bot=Reason.LIBRARY) for r in range(12, 15)]
    by_reason = report_of(events)["machine"]["by_reason"]
    # scanner_agent 12 of 15 machine records would give the library's 3 away: both fold.
    assert by_reason == {"buckets": [], "other": 15}


def test_segments_show_a_figure_apart_only_when_every_segment_can() -> None:
    segments = {rid(r): "A" if r < 12 else "B" for r in range(24)}
    events = [ev(r) for r in range(24)] + [ev(r, 3, link=1, bot=Reason.SCANNER_AGENT) for r in range(6)]
    events += [ev(r, 3, link=1, bot=Reason.SCANNER_AGENT) for r in (12, 13)]  # B: two machine copies
    events += [ev(r, bot=Reason.PRIVACY_PROXY) for r in range(5)] + [
        ev(r, bot=Reason.PRIVACY_PROXY) for r in range(12, 17)
    ]
    report = report_of(events, tracked=24, segments=segments, attribute="team")
    assert report["machine"]["records"] == 8  # the whole message shows it...
    parts = [*report["segments"]["values"], report["segments"]["other"]]
    assert [p for p in parts if p is not None] and all(p["machine"] is None for p in parts if p is not None)
    # ...but no segment does: B's 2 would be whole minus A's 6.
    assert [p["privacy_proxy_opens"] for p in report["segments"]["values"]] == [{"unique": 5, "total": 5}] * 2
    assert [p["bots"] for p in report["segments"]["values"]] == [{"opens": 5, "clicks": 0}] * 2
    assert report["bots"] == {"opens": 10, "clicks": 8}


# --------------------------------------------------------------------------------------------------
# The openers' heatmap (weekday x hour of the first open, UTC) and the read rate.


def test_weekday_and_hour_are_utc_with_monday_zero() -> None:
    assert weekday_hour(CREATED // HOUR_MS) == (1, 22)  # 2023-11-14 22:00 UTC, a Tuesday
    assert weekday_hour(0) == (3, 0)  # the epoch was a Thursday
    assert weekday_hour(4 * 24 + 23) == (0, 23)  # 1970-01-05, a Monday


def test_heatmap_counts_each_opener_once_and_a_small_cell_never_shows() -> None:
    events = [ev(r, minutes=30) for r in range(12)] + [ev(r, minutes=90) for r in range(12)]  # re-opens
    events += [ev(r, minutes=25 * 60 + 30) for r in range(12, 18)]  # Wednesday 23h
    events += [ev(r, minutes=26 * 60 + 30) for r in range(18, 20)]  # two on Thursday 0h
    report = report_of(events)
    # Thursday's 2 fold; Wednesday's 6 joins them, else 20 - 12 - 6 would give the 2 away.
    assert report["heatmap"] == {"cells": [{"weekday": 1, "hour": 22, "records": 12}], "other": 8}
    assert report["opens"]["unique"] == 20


def test_a_heatmap_cell_is_folded_when_the_timeline_would_give_a_small_hour_away() -> None:
    day = (CREATED // HOUR_MS) // 24 * 24  # hour 0 of a day: no cell wraps round
    first_opens = {day: 1, day + 1: 1, day + 2: 5, day + 5: 10, day + 8: 6, day + 9: 1, day + 10: 2}
    windows = coarsen({ALL: first_opens}, K)
    assert [w.counts[ALL] for w in windows] == [7, 10, 9]
    alone = fold_table({ALL: heatmap_cells(first_opens)}, K)
    assert sorted(alone.shown) == [(1, 2), (1, 5), (1, 8)] and alone.other_of(ALL) == 5  # fine on its own...
    fold = heatmap_fold(first_opens, windows, K)
    # ...but the first window (7) minus its 5 would tell 2 opened at 0h or 1h; the last, 9 - 6, three.
    assert fold.shown == ((1, 5),) and fold.other_of(ALL) == 16


def test_heatmap_is_the_whole_messages_only_and_absent_in_aggregate_mode() -> None:
    segments = {rid(r): "A" if r < 10 else "B" for r in range(20)}
    report = report_of([ev(r) for r in range(20)], segments=segments, attribute="team")
    assert report["heatmap"] == {"cells": [{"weekday": 1, "hour": 22, "records": 20}], "other": None}
    assert all("heatmap" not in part for part in report["segments"]["values"])
    assert "heatmap" not in report_of([ev(0) for _ in range(30)], mode="aggregate")


def test_read_rate_is_readers_over_openers_and_undefined_without_openers() -> None:
    events = [ev(r) for r in range(10)] + [ev(r, 2, read_ms=4_000) for r in range(4)]
    assert report_of(events)["rates"]["read"] == 0.4
    assert report_of([])["rates"] == {"open": 0.0, "click": 0.0, "click_to_open": None, "read": None}


def test_csv_carries_the_heatmap_and_the_read_rate() -> None:
    events = [ev(r, minutes=30) for r in range(12)] + [ev(r, 2, read_ms=4_000) for r in range(6)]
    events += [ev(r, minutes=25 * 60 + 30) for r in range(12, 18)] + [ev(r, minutes=26 * 60 + 30) for r in (18, 19)]
    rows = list(csv.reader(io.StringIO(report_csv(report_of(events)))))
    cells = {(r[1], r[2], r[3], r[4]): r[5] for r in rows[1:]}
    assert cells[("heatmap", "Tue", "22:00Z", "records")] == "12"
    assert cells[("heatmap", "(other)", "", "records")] == "8"
    assert not [r for r in rows if r[1] == "heatmap" and r[2] in ("Wed", "Thu")]
    assert cells[("summary", "", "", "read_rate")] == "0.3"


def test_the_sql_verdict_lists_are_the_verdict_classes_of_every_reason() -> None:
    """The SQL path classes stored reasons with lists built from ``verdicts``: every reason is in the
    list of its class, a number no version knows in none (so it counts as machine)."""
    from politetenant.tracker.judging.verdicts import VerdictClass, counts_as_person, verdict_class
    from politetenant.tracker.reports import report_sql

    def listed(sql_list: str) -> set[int]:
        return {int(n) for n in sql_list.split(", ")}

    for reason in [*Reason, 99]:
        verdict = verdict_class(reason)
        assert (reason in listed(report_sql.PEOPLE)) == counts_as_person(reason)
        assert (reason in listed(report_sql.PERSON)) == (verdict is VerdictClass.PERSON)
        assert (reason in listed(report_sql.PROXIED)) == (verdict is VerdictClass.PROXIED)
        assert (reason in listed(report_sql.PRIVACY)) == (verdict is VerdictClass.PRIVACY_PROXY)
        assert (reason not in listed(report_sql.NOT_MACHINE)) == (verdict is VerdictClass.MACHINE)


def test_a_record_summed_in_sql_counts_as_the_same_record_folded_hit_by_hit() -> None:
    """One record (an unknown reason's bit 63 arrives negative from SQL) gives the Accumulator's tally."""
    from politetenant.tracker.reports.report_sql import summary

    hits = [ev(1, minutes=30, country="DE", city=b"sealed-cork"), ev(1, 2, minutes=31, read_ms=5_000),
            ev(1, 3, minutes=32, link=2), ev(1, 3, minutes=33, link=2), ev(1, minutes=34, bot=99)]  # fmt: skip
    folded = accumulator()
    folded.add(hits)
    place = ("mobile", "iOS", "Apple Mail", "DE", b"sealed-cork")
    per_hit = (1, 0, 0, 1, 0, 2)  # opens, proxied opens, privacy opens, machine opens, machine clicks, clicks
    row = (rid(1), 0, hits[0][3], hits[2][3], 5_000, -(1 << 63), 0, 0, *per_hit, 0, 2, Reason.PERSON, *place)
    summed = accumulator()
    summed.add_record(summary(row, 2))
    assert summed.finish({ALL: 1}) == folded.finish({ALL: 1})
