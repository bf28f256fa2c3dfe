"""The demo's history: eight messages over the past weeks, so the dashboard has shapes to show.

One message shows how hits are judged; a dashboard needs more: a trend across messages, opens by
hour and weekday, departments, devices and cities above the minimum segment, Apple's prefetches and
a gateway's scans apart. This module plans such a history (pure and seeded, so a test can check its
shape); ``demo_replay`` writes it the honest way, through the API and real hits, then moves it back
in time with ``retime``: registration and hits are stamped "now", and a demo cannot wait three weeks.
"""

from __future__ import annotations

import html
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from politetenant.tracker.judging.verdicts import counts_as_person
from politetenant.tracker.storage.rows import EventKind

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
STAFF = 800
# (department, share of the staff, how much likelier than average its people open the mail)
DEPARTMENTS = (
    ("Engineering", 0.30, 0.80),
    ("Sales", 0.20, 0.95),
    ("Operations", 0.18, 0.90),
    ("Finance", 0.13, 1.05),
    ("People", 0.11, 1.25),
    ("Legal", 0.02, 1.10),  # about 16 people: a group the dashboard often shows as "fewer than N"
    ("Facilities", 0.06, 1.00),
)
# (city of the GeoIP sample, weight, the campus its people belong to)
CITIES = (
    ("Dublin", 30, "Dublin"),
    ("Berlin", 16, "Berlin"),
    ("Frankfurt am Main", 12, "Berlin"),
    ("New York", 14, "New York"),
    ("Ashburn", 6, "New York"),
    ("San Francisco", 9, "Remote"),
    ("Singapore", 8, "Remote"),
    ("Sydney", 5, "Remote"),
)
DEVICE_WEIGHTS = {
    "Outlook on Windows": 34,
    "iPhone Mail": 22,
    "Chrome on Windows": 18,
    "Apple Mail on macOS": 14,
    "Gmail on Android": 12,
}
APPLE_MAIL = ("iPhone Mail", "Apple Mail on macOS")
APPLE_MPP_SHARE = 0.6  # of Apple Mail users, those who turned Mail Privacy Protection on
GATEWAY_SHARE = 0.12  # copies the security gateway opens at delivery, following every link
READER_SHARE = 0.45  # openers whose client streams the read-time beacon (Gmail's proxy never does)
# Hours of the day (UTC) people open mail that waited for them: office hours, a lunch dip, evenings.
HOUR_WEIGHTS = (1, 1, 1, 1, 1, 1, 2, 6, 14, 16, 12, 10, 7, 11, 12, 10, 8, 5, 3, 3, 3, 2, 1, 1)


@dataclass(frozen=True, slots=True)
class Person:
    """Someone on the staff: where and on what they read their mail."""

    email: str
    name: str
    department: str
    campus: str
    city: str
    device: str  # a key of DEVICE_WEIGHTS (demo_replay.DEVICES holds their user agents)
    apple_mpp: bool  # Apple's proxy prefetches their mail; their own opens never reach the tracker
    gmail_proxy: bool  # Gmail's image proxy fetches the beacons for them


@dataclass(frozen=True, slots=True)
class CopyPlan:
    """What happens to one person's copy of a message, in ms after the message was sent."""

    person: Person
    gateway_scan: bool  # the gateway opens it at delivery and follows every link, the hidden one too
    opens: tuple[int, ...]  # the person's opens (empty: not opened, or not yet)
    read_seconds: float | None  # how long they keep it open from the first open (read-time beacon)
    clicks: tuple[tuple[int, int], ...]  # (ms after sending, link number)


@dataclass(frozen=True, slots=True)
class MessagePlan:
    subject: str
    list_name: str
    links: tuple[tuple[str, str], ...]  # (text, URL) of each tracked link, numbered from 1
    sent_at: int  # epoch ms
    delivery_ms: int  # after sent_at: when the gateway and Apple's proxy fetch
    open_rate: float  # the chance an average person opens it (before department and Apple)
    click_rate: float  # the chance an opener clicks
    copies: tuple[CopyPlan, ...]

    @property
    def html(self) -> str:
        paragraphs = "".join(
            f'<p>{html.escape(text)}: <a href="{html.escape(url)}">{html.escape(text)}</a></p>\n'
            for text, url in self.links
        )
        return f"<html><body>\n<h1>{html.escape(self.subject)}</h1>\n{paragraphs}</body></html>"


# (subject, list, which staff it goes to, open rate, click rate, links)
MESSAGES: tuple[tuple[str, str, str, float, float, tuple[tuple[str, str], ...]], ...] = (
    ("Benefits enrolment opens on Monday", "All staff", "all", 0.80, 0.30,
     (("Compare the plans", "https://hr.example.com/benefits/plans"),
      ("Enrol", "https://hr.example.com/benefits/enrol"), ("FAQ", "https://hr.example.com/benefits/faq"))),
    ("Phishing drill: what we learned", "All staff", "all", 0.62, 0.14,
     (("The results", "https://security.example.com/drill-results"),
      ("Report a phish", "https://security.example.com/report"))),
    ("On-call rota changes from next week", "Engineering and Operations", "engineering+operations", 0.72, 0.40,
     (("The new rota", "https://wiki.example.com/oncall/rota"),
      ("Swap a shift", "https://wiki.example.com/oncall/swap"))),
    ("The Dublin canteen reopens", "Dublin campus", "dublin", 0.88, 0.12,
     (("This week's menu", "https://intranet.example.com/dublin/menu"),)),
    ("Quarterly results: a word from our CEO", "All staff", "all", 0.68, 0.22,
     (("Watch the recording", "https://intranet.example.com/q-results/video"),
      ("Slides", "https://intranet.example.com/q-results/slides"),
      ("Ask a question", "https://intranet.example.com/q-results/ask"))),
    ("Learning week: pick a course", "All staff", "all", 0.55, 0.33,
     (("Course catalogue", "https://learning.example.com/catalogue"),
      ("Book a slot", "https://learning.example.com/book"))),
    ("Expense tool: receipts by photo", "Sales, Finance and People", "sales+finance+people", 0.65, 0.26,
     (("How it works", "https://finance.example.com/expenses/howto"),
      ("Open the tool", "https://finance.example.com/expenses"))),
    ("Office move: Berlin and Frankfurt", "Berlin campus", "berlin", 0.84, 0.18,
     (("Floor plans", "https://intranet.example.com/berlin/floors"),
      ("Moving checklist", "https://intranet.example.com/berlin/checklist"))),
)  # fmt: skip
DAYS_AGO = (24, 21, 17, 14, 11, 7, 4, 2)  # when each of MESSAGES went out


def staff(rng: random.Random, count: int = STAFF) -> list[Person]:
    """The demo company's people: departments, cities and devices drawn with the weights above."""
    people = []
    for i in range(count):
        department = rng.choices([d for d, _, _ in DEPARTMENTS], weights=[w for _, w, _ in DEPARTMENTS])[0]
        city, _, campus = rng.choices(CITIES, weights=[w for _, w, _ in CITIES])[0]
        device = rng.choices(list(DEVICE_WEIGHTS), weights=list(DEVICE_WEIGHTS.values()))[0]
        people.append(
            Person(
                email=f"staff{i:03d}@example.com",
                name=f"Staff Member {i:03d}",
                department=department,
                campus=campus,
                city=city,
                device=device,
                apple_mpp=device in APPLE_MAIL and rng.random() < APPLE_MPP_SHARE,
                gmail_proxy=device == "Gmail on Android",
            )
        )
    return people


def audience(people: Sequence[Person], who: str) -> list[Person]:
    """The people a list reaches: ``all``, a campus, or departments joined by ``+``."""
    if who == "all":
        return list(people)
    wanted = set(who.split("+"))
    return [p for p in people if p.campus.lower() in wanted or p.department.lower() in wanted]


def sending_time(now_ms: int, days_ago: int, rng: random.Random) -> int:
    """A weekday morning (UTC) about ``days_ago`` days back: nobody sends the staff news on a Sunday."""
    day = (now_ms // DAY - days_ago) * DAY
    weekday = (day // DAY + 3) % 7  # 1970-01-01 was a Thursday; 0 is Monday
    if weekday >= 5:
        day -= (weekday - 4) * DAY  # back to the Friday
    return day + 8 * HOUR + rng.randrange(0, 150) * MINUTE


def first_open(sent_at: int, rng: random.Random) -> int:
    """When a person first opens a message sent at ``sent_at``: many in the first hour or two, the
    rest over the following days in office hours, rarely at a weekend."""
    if rng.random() < 0.35:
        return sent_at + 6 * MINUTE + int(rng.expovariate(1 / 50) * MINUTE)
    midnight = sent_at // DAY * DAY
    day = midnight + rng.choices(range(5), weights=(45, 30, 12, 8, 5))[0] * DAY
    weekday = (day // DAY + 3) % 7
    if weekday >= 5 and rng.random() < 0.85:
        day += (7 - weekday) * DAY  # it waited for Monday
    at = day + rng.choices(range(24), weights=HOUR_WEIGHTS)[0] * HOUR + rng.randrange(HOUR)
    return max(at, sent_at + 6 * MINUTE)


def _read_seconds(rng: random.Random) -> float:
    """A reader's hold, in seconds: glanced (< 3), skimmed (< 10) or read; short, so the demo stays fast."""
    kind = rng.choices(("glanced", "skimmed", "read"), weights=(45, 35, 20))[0]
    if kind == "glanced":
        return rng.uniform(0.6, 2.6)
    return rng.uniform(3.5, 9.0) if kind == "skimmed" else rng.uniform(10.4, 11.2)


def plan_copy(
    person: Person, message: tuple[float, float, int], sent_at: int, now_ms: int, rng: random.Random
) -> CopyPlan:
    """One copy's fate: ``message`` is (open rate, click rate, tracked links)."""
    open_rate, click_rate, links = message
    factor = next(f for d, _, f in DEPARTMENTS if d == person.department)
    gateway_scan = rng.random() < GATEWAY_SHARE
    opens: list[int] = []
    if not person.apple_mpp and rng.random() < min(open_rate * factor, 0.95):
        first = first_open(sent_at, rng)
        if first < now_ms - MINUTE:  # otherwise they have not opened it yet
            opens.append(first - sent_at)
            again = first + 30 * MINUTE + int(rng.expovariate(1 / 8) * HOUR)
            if rng.random() < 0.25 and again < now_ms - MINUTE:
                opens.append(again - sent_at)
    read_seconds = None
    if opens and not person.gmail_proxy and rng.random() < READER_SHARE:
        read_seconds = round(_read_seconds(rng), 2)
    clicks: list[tuple[int, int]] = []
    if opens and rng.random() < click_rate:
        link = rng.choices(range(1, links + 1), weights=[4 if n == 1 else 1 for n in range(1, links + 1)])[0]
        at = opens[0] + rng.randrange(15, 300) * 1000
        clicks.append((at, link))
        if links >= 3 and rng.random() < 0.2:  # a second link, never all of them
            second = next(n for n in range(1, links + 1) if n != link)
            clicks.append((at + rng.randrange(40, 600) * 1000, second))
    clicks = [(at, link) for at, link in clicks if sent_at + at < now_ms - MINUTE]
    return CopyPlan(person, gateway_scan, tuple(opens), read_seconds, tuple(clicks))


def plan_history(now_ms: int, seed: int = 14) -> list[MessagePlan]:
    """The whole history, oldest message first, as of ``now_ms``; the same seed gives the same plan."""
    rng = random.Random(seed)
    people = staff(rng)
    plans = []
    for (subject, list_name, who, open_rate, click_rate, links), days_ago in zip(MESSAGES, DAYS_AGO, strict=True):
        sent_at = sending_time(now_ms, days_ago, rng)
        copies = tuple(
            plan_copy(p, (open_rate, click_rate, len(links)), sent_at, now_ms, rng) for p in audience(people, who)
        )
        delivery_ms = rng.randrange(1, 4) * MINUTE  # people open from 6 minutes on
        plans.append(MessagePlan(subject, list_name, links, sent_at, delivery_ms, open_rate, click_rate, copies))
    return plans


@dataclass(frozen=True, slots=True)
class StoredHit:
    event_id: bytes
    kind: int  # EventKind
    occurred_at: int  # epoch ms, as stamped on arrival
    reason: int  # events.bot: whether the tracker judged it a person's on arrival


def retime(
    plan: MessagePlan, copy: CopyPlan, hits: Sequence[StoredHit], *, delivered_from: int
) -> list[tuple[int, bytes]]:
    """(planned time, event id) of one copy's stored hits: why a demo's database may be edited.

    Machines' hits (the gateway's, Apple's prefetch) were the delivery's, replayed from
    ``delivered_from`` on: they keep their spacing and move to the planned delivery time. The
    person's own hits move to the times the plan gave them, kind by kind in the order they arrived;
    should the counts not match the plan (a hit refused), they keep their spacing after the first open.
    """
    moved: list[tuple[int, bytes]] = []
    people: dict[int, list[StoredHit]] = defaultdict(list)
    for hit in sorted(hits, key=lambda h: h.occurred_at):
        if not counts_as_person(hit.reason):
            moved.append((plan.sent_at + plan.delivery_ms + hit.occurred_at - delivered_from, hit.event_id))
        else:
            people[hit.kind].append(hit)
    if not people:
        return moved
    start = plan.sent_at + (copy.opens[0] if copy.opens else plan.delivery_ms + MINUTE)
    planned = {
        EventKind.OPEN: [plan.sent_at + at for at in copy.opens],
        EventKind.READ: [start] if copy.read_seconds is not None else [],
        EventKind.CLICK: [plan.sent_at + at for at, _ in copy.clicks],
    }
    earliest = min(h.occurred_at for run in people.values() for h in run)
    for kind, run in people.items():
        times = planned.get(EventKind(kind), [])
        if len(times) == len(run):
            moved.extend((at, hit.event_id) for at, hit in zip(times, run, strict=True))
        else:
            moved.extend((start + hit.occurred_at - earliest, hit.event_id) for hit in run)
    return moved


def registration(plan: MessagePlan) -> dict[str, Any]:
    """The ``POST /api/v1/messages`` body of a planned message."""
    recipients = [
        {"email": c.person.email, "name": c.person.name,
         "attributes": {"department": c.person.department, "campus": c.person.campus}}
        for c in plan.copies
    ]  # fmt: skip
    return {"subject": plan.subject, "from_name": "Internal Communications", "from_email": "news@example.com",
            "list_name": plan.list_name, "html": plan.html, "recipients": recipients}  # fmt: skip


def department_sizes(plan: MessagePlan) -> Counter[str]:
    """Recipients of a message per department (what its segment view groups by)."""
    return Counter(c.person.department for c in plan.copies)
