"""The demo's history plan: weeks of messages a dashboard can draw, and how its hits move back in time."""

from __future__ import annotations

import random

from politetenant.tracker.cli.demo import message_lines
from politetenant.tracker.cli.demo_history import (
    DAY,
    HOUR,
    MINUTE,
    CopyPlan,
    Person,
    StoredHit,
    audience,
    department_sizes,
    plan_history,
    registration,
    retime,
    sending_time,
    staff,
)
from politetenant.tracker.judging.verdicts import Reason
from politetenant.tracker.storage.rows import EventKind

NOW = 1796626800000  # Monday 2026-12-07, 07:00 UTC
K = 10  # the demo tenant's minimum segment


def _weekday(ms: int) -> int:
    return (ms // DAY + 3) % 7  # 0 Monday


def test_history_spreads_eight_messages_over_weeks_of_weekday_mornings() -> None:
    plans = plan_history(NOW)
    sent = [p.sent_at for p in plans]
    assert len(plans) == 8 and sent == sorted(sent) and len(set(sent)) == 8
    assert (NOW - sent[0]) > 21 * DAY and (NOW - sent[-1]) > DAY  # three weeks back, none today
    assert all(_weekday(s) < 5 and 8 * HOUR <= s % DAY < 11 * HOUR for s in sent)


def test_every_planned_hit_is_after_delivery_and_before_now() -> None:
    for plan in plan_history(NOW):
        for copy in plan.copies:
            times = [*copy.opens, *(at for at, _ in copy.clicks)]
            assert all(plan.delivery_ms + MINUTE < t and plan.sent_at + t < NOW for t in times)
            assert all(at > copy.opens[0] for at, _ in copy.clicks)  # a click follows an open
            assert all(1 <= link <= len(plan.links) for _, link in copy.clicks)  # never the hidden link
            assert len({link for _, link in copy.clicks}) < max(len(plan.links), 2)  # never every link


def test_messages_have_different_open_and_click_rates() -> None:
    plans = plan_history(NOW)
    opened = [sum(1 for c in p.copies if c.opens) / len(p.copies) for p in plans]
    clicked = [sum(1 for c in p.copies if c.clicks) / max(1, sum(1 for c in p.copies if c.opens)) for p in plans]
    assert len({round(r, 2) for r in opened}) == 8 and max(opened) - min(opened) > 0.2
    assert max(clicked) - min(clicked) > 0.15


def test_departments_are_large_enough_to_show_and_one_is_not() -> None:
    plans = plan_history(NOW)
    for plan in plans:
        sizes = department_sizes(plan)
        assert sum(1 for n in sizes.values() if n >= K) >= 2  # a segment view always has groups to show
        assert len(plan.copies) >= 200  # a few hundred recipients each
    everyone = department_sizes(plans[0])
    assert len(everyone) == 7 and sorted(everyone.values())[1] >= 3 * K
    assert any(0 < department_sizes(p).get("Legal", 0) < K for p in plans)  # "fewer than N" has a case


def test_people_are_spread_over_cities_devices_and_apple_privacy() -> None:
    people = staff(random.Random(1))
    assert len({p.city for p in people}) == 8 and len({p.device for p in people}) == 5
    apple = sum(p.apple_mpp for p in people) / len(people)
    assert 0.1 < apple < 0.35  # Apple's prefetch at every delivery, but not most of the staff
    assert all(p.gmail_proxy == (p.device == "Gmail on Android") for p in people)


def test_lists_reach_a_campus_or_departments() -> None:
    people = staff(random.Random(2))
    assert {p.campus for p in audience(people, "dublin")} == {"Dublin"}
    assert {p.department for p in audience(people, "engineering+operations")} == {"Engineering", "Operations"}
    assert audience(people, "all") == people


def test_sending_time_moves_a_weekend_back_to_the_friday() -> None:
    sunday = NOW - 1 * DAY
    assert _weekday(sunday) == 6
    sent = sending_time(NOW, 1, random.Random(3))
    assert _weekday(sent) == 4 and NOW - sent < 4 * DAY


def test_registration_sends_departments_and_no_attribute_beyond_the_plan() -> None:
    plan = plan_history(NOW)[2]
    body = registration(plan)
    assert body["list_name"] == "Engineering and Operations" and len(body["recipients"]) == len(plan.copies)
    assert {r["attributes"]["department"] for r in body["recipients"]} == {"Engineering", "Operations"}
    assert body["html"].count("<a href=") == len(plan.links)


def _copy(opens: tuple[int, ...], clicks: tuple[tuple[int, int], ...], read: float | None) -> CopyPlan:
    person = Person("a@example.com", "A", "Sales", "Dublin", "Dublin", "Outlook on Windows", False, False)
    return CopyPlan(person, True, opens, read, clicks)


def test_retime_moves_delivery_hits_together_and_people_hits_to_their_planned_times() -> None:
    plan = plan_history(NOW)[0]
    copy = _copy((2 * HOUR, 30 * HOUR), ((2 * HOUR + 60_000, 1),), 4.0)
    arrived = 1_800_000_000_000  # "now", when the demo replayed them
    gateway = Reason.GATEWAY_NETWORK
    hits = [
        StoredHit(b"g-open", EventKind.OPEN, arrived, gateway),
        StoredHit(b"g-click", EventKind.CLICK, arrived + 40, gateway),
        StoredHit(b"open-1", EventKind.OPEN, arrived + 900, Reason.PERSON),
        StoredHit(b"read", EventKind.READ, arrived + 901, Reason.PERSON),
        StoredHit(b"open-2", EventKind.OPEN, arrived + 950, Reason.PERSON),
        StoredHit(b"click", EventKind.CLICK, arrived + 990, Reason.PERSON),
    ]
    moved = {event: at for at, event in retime(plan, copy, hits, delivered_from=arrived - 10)}
    delivery = plan.sent_at + plan.delivery_ms
    assert moved[b"g-open"] == delivery + 10 and moved[b"g-click"] == delivery + 50  # spacing kept
    assert moved[b"open-1"] == moved[b"read"] == plan.sent_at + 2 * HOUR
    assert moved[b"open-2"] == plan.sent_at + 30 * HOUR
    assert moved[b"click"] == plan.sent_at + 2 * HOUR + 60_000


def test_retime_keeps_spacing_when_the_tracker_stored_other_hits_than_planned() -> None:
    plan = plan_history(NOW)[0]
    copy = _copy((2 * HOUR,), (), None)
    hits = [
        StoredHit(b"open-1", EventKind.OPEN, 5_000, Reason.PERSON),
        StoredHit(b"open-2", EventKind.OPEN, 5_300, Reason.PROXIED),
    ]
    moved = {event: at for at, event in retime(plan, copy, hits, delivered_from=0)}
    assert moved == {b"open-1": plan.sent_at + 2 * HOUR, b"open-2": plan.sent_at + 2 * HOUR + 300}


def test_the_printed_list_shows_no_figure_of_a_suppressed_message() -> None:
    lines = message_lines(
        [
            {"id": "m1", "suppressed": True, "created_at": NOW},
            {"id": "m2", "suppressed": False, "created_at": NOW - DAY, "recipients": 200, "tracked": 200,
             "opens": {"unique": 90, "total": 120}, "subject": "Benefits"},
        ]
    )  # fmt: skip
    assert lines[0] == "Mon 2026-12-07 07:00  (fewer recipients than the minimum segment)"
    assert lines[1] == "Sun 2026-12-06 07:00   200 recipients  opened  45%  Benefits"
