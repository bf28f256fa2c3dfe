"""What a report is made of, from the database: the message's links, its records' segment values,
and its records' figures folded into tallies. No threshold is applied here (see ``thresholds``).

Most records are judged and aggregated in SQL (``report_sql``, ``report_load``); the records a
per-copy rule may fire on arrive here as events ordered by (record, time), and each record's hits
are judged together when its run ends (``judging.behaviour.judge_copy``: the reason stored on
arrival, then the burst, honeypot, gateway and early-window rules), so memory holds one record's
hits, and each distinct sealed city is opened once. Definitions, by the class of each hit's reason
(``judging.verdicts``):
- people's figures (``opens``, ``clicks``) count ``person`` and ``proxied`` hits; an *opener* is a
  record with a person's open or read; device, OS, browser, country and city are those of its first
  open (a proxy's fetch tells none of them: "(unknown)"), so every breakdown is a partition of the
  openers; reads and read time come from ``person`` hits only;
- read time is a reader's longest read: glanced < 3 s, skimmed < 10 s, read from 10 s;
- the timeline counts openers by the hour of their first open, clickers by that of their first click;
  the heatmap counts openers by the weekday and hour (UTC) of their first open, from the same counts;
- every ``opens`` total counts open-beacon hits (``proxied_opens``, ``privacy_proxy_opens``,
  ``machine``), and ``unique`` the records with an open or read of that class; ``machine`` counts
  records with any hit judged machine, once per reason they have.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from politetenant.crypto import Sealer, link_row
from politetenant.settings import TrackerSettings, TrackingMode
from politetenant.tracker.judging.behaviour import CLICK, OPEN, CopyRules, Hit, judge_copy
from politetenant.tracker.judging.verdicts import Reason, VerdictClass, verdict_class
from politetenant.tracker.reports.report_sql import Place, RecordSummary
from politetenant.tracker.reports.thresholds import ALL
from politetenant.tracker.storage.base import SELECT_MESSAGE, Store
from politetenant.tracker.storage.rows import MessageRow

HOUR_MS = 3_600_000
GLANCED_BELOW_MS = 3_000
SKIMMED_BELOW_MS = 10_000
READ_BUCKETS = ("glanced", "skimmed", "read")
DIMENSIONS = ("device", "os", "browser", "country", "city")
UNKNOWN = "(unknown)"

# record_id, kind, link_no, occurred_at, country, city (sealed), os, device, browser, bot, read_ms
EventRow = tuple[bytes, int, int | None, int, str | None, bytes | None, str, str, str, int, int | None]


class LinkInfo(NamedTuple):
    link_no: int
    text: str
    url: str


def weekday_hour(hour_number: int) -> tuple[int, int]:
    """(weekday, hour of the day), UTC, Monday = 0, of an hour counted from the epoch (a Thursday)."""
    return (hour_number // 24 + 3) % 7, hour_number % 24


def heatmap_cells(first_opens: Mapping[int, int]) -> Counter[tuple[int, int]]:
    """Openers by the weekday and hour of their first open: the timeline's hourly counts, folded onto
    one week (each opener is in one hour, so this is a partition of the openers too)."""
    cells: Counter[tuple[int, int]] = Counter()
    for hour, openers in first_opens.items():
        cells[weekday_hour(hour)] += openers
    return cells


def read_bucket(read_ms: int) -> str:
    if read_ms < GLANCED_BELOW_MS:
        return "glanced"
    return "skimmed" if read_ms < SKIMMED_BELOW_MS else "read"


class RecordFigures:
    """What one copy contributes once its hits are judged; bounded whatever the number of its events.
    Filled hit by hit here, or from one aggregated row per record (``report_sql``)."""

    __slots__ = ("first_click", "first_open", "links", "place", "privacy", "proxied", "read_ms", "reasons")

    def __init__(self) -> None:
        self.first_open: int | None = None  # a person's first open or read
        self.place: Place | None = None  # at the first open
        self.first_click: int | None = None
        self.read_ms = -1
        self.links = 0  # bit n: a person clicked link n
        self.reasons = 0  # bit r: a hit judged machine for reason r
        self.proxied = False  # opened through a webmail image proxy
        self.privacy = False  # fetched by Apple Mail Privacy Protection


@dataclass
class Tally:
    """Raw figures of one population (a message or a segment), before the threshold is applied."""

    tracked: int = 0
    opens_total: int = 0
    opens_unique: int = 0
    reads_unique: int = 0
    clicks_total: int = 0
    clicks_unique: int = 0
    proxied_opens_total: int = 0
    proxied_opens_unique: int = 0
    privacy_opens_total: int = 0
    privacy_opens_unique: int = 0
    machine_records: int = 0
    machine_opens: int = 0
    machine_clicks: int = 0
    breakdowns: dict[str, Counter[str]] = field(default_factory=lambda: {d: Counter() for d in DIMENSIONS})
    read_buckets: Counter[str] = field(default_factory=Counter)
    read_times: list[int] = field(default_factory=list)
    first_opens: Counter[int] = field(default_factory=Counter)  # hour -> openers
    first_clicks: Counter[int] = field(default_factory=Counter)  # hour -> clickers
    link_clicks: Counter[int] = field(default_factory=Counter)  # link -> people's clicks
    link_clickers: Counter[int] = field(default_factory=Counter)  # link -> distinct clickers
    click_masks: list[int] = field(default_factory=list)  # one per clicker: the links they clicked
    reason_records: Counter[int] = field(default_factory=Counter)  # reason (its bit) -> machine records
    reason_masks: Counter[int] = field(default_factory=Counter)  # reasons of a machine record -> records

    def merge(self, other: Tally) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for d in DIMENSIONS:
            self.breakdowns[d].update(other.breakdowns[d])
        for counter in ("read_buckets", "first_opens", "first_clicks", "link_clicks", "link_clickers",
                        "reason_records", "reason_masks"):  # fmt: skip
            getattr(self, counter).update(getattr(other, counter))
        self.read_times += other.read_times
        self.click_masks += other.click_masks


_COUNTS = tuple(name for name, kind in Tally.__annotations__.items() if kind == "int")
NOWHERE: Place = ("", "", "", None, None)  # a proxy's fetch says nothing of the person's device or place
_VERDICT = {int(reason): verdict_class(reason) for reason in Reason}  # one look-up per hit, on the hot path
_CHUNK = 4096  # per_copy=False: hits are judged on their own, so they need not wait for the run's end


def reason_bit(reason: int) -> int:
    """Bit of a machine reason in a record's mask (a number this version does not know: bit 63)."""
    return reason if 0 <= reason < 63 else 63


class Accumulator:
    """Folds event rows, streamed ordered by (record, time), into per-segment tallies (one segment,
    ``ALL``, when unsegmented). Each record's hits are judged together (``judge_copy``) when its run
    ends, so memory holds one record's hits, never the message's."""

    def __init__(
        self,
        rules: CopyRules,
        first_hit_ms: int | None,
        *,
        segment_of: Mapping[bytes, str] | None = None,
        open_city: Callable[[bytes], str] = lambda sealed: UNKNOWN,
    ) -> None:
        self.rules, self.first_hit_ms = rules, first_hit_ms
        self.segment_of = segment_of
        self.open_city = open_city
        self.tallies: dict[str, Tally] = {}
        self.seen: Counter[str] = Counter()  # records with events, per segment
        self.run: list[EventRow] = []  # the current record's hits not judged yet
        self._record_id: bytes | None = None
        self._record = RecordFigures()
        self._tally = Tally()
        self._places: dict[Place, Place] = {}
        self._cities: dict[bytes, str] = {}

    def _population(self, segment: str) -> Tally:
        tally = self.tallies.get(segment)
        if tally is None:
            tally = self.tallies[segment] = Tally()
        return tally

    def add(self, rows: Iterable[EventRow]) -> None:
        for row in rows:
            record_id = row[0]
            if record_id != self._record_id:
                if self._record_id is not None and record_id < self._record_id:
                    raise ValueError("events must be streamed ordered by record id, then time")
                self._close()
                self._record_id, self._record = record_id, RecordFigures()
                segment = ALL if self.segment_of is None else self.segment_of.get(record_id, UNKNOWN)
                self.seen[segment] += 1
                self._tally = self._population(segment)
            self.run.append(row)
            if not self.rules.per_copy and len(self.run) >= _CHUNK:
                self._judge_run()

    def _judge_run(self) -> None:
        hits = [Hit(row[1], row[2], row[3], row[9]) for row in self.run]
        for row, reason in zip(self.run, judge_copy(hits, self.first_hit_ms, self.rules), strict=True):
            self._fold(row, reason)
        self.run.clear()

    def _fold(self, row: EventRow, reason: int) -> None:
        _, kind, link_no, at, country, city, os_, device, browser, _, read_ms = row
        record, tally, verdict = self._record, self._tally, _VERDICT.get(reason, VerdictClass.MACHINE)
        if verdict is VerdictClass.MACHINE:
            record.reasons |= 1 << reason_bit(reason)
            if kind == CLICK:
                tally.machine_clicks += 1
            elif kind == OPEN:
                tally.machine_opens += 1
        elif verdict is VerdictClass.PRIVACY_PROXY:  # Apple fetches images on delivery; it follows no link
            record.privacy = True
            tally.privacy_opens_total += kind == OPEN
        elif kind == CLICK:
            tally.clicks_total += 1
            tally.link_clicks[link_no or 0] += 1
            record.links |= 1 << (link_no or 0)
            if record.first_click is None or at < record.first_click:
                record.first_click = at
        else:
            proxied = verdict is VerdictClass.PROXIED
            record.proxied |= proxied
            if kind == OPEN:
                tally.opens_total += 1
                tally.proxied_opens_total += proxied
            elif not proxied and (read_ms or 0) > record.read_ms:  # a person's read: keep the longest
                record.read_ms = read_ms or 0
            if record.first_open is None or at < record.first_open:
                record.first_open = at
                place = NOWHERE if proxied else (device, os_, browser, country, city)
                record.place = self._places.setdefault(place, place)  # shared: few distinct places

    def _close(self) -> None:
        """The current record's run has ended: judge its hits and count it once."""
        if self._record_id is None:
            return
        self._judge_run()
        self._count(self._record, self._tally)
        self._record_id = None

    def add_record(self, summary: RecordSummary) -> None:
        """A record judged and folded in SQL (``report_sql``): its figures are counted as a run's are."""
        self._close()
        segment = ALL if self.segment_of is None else self.segment_of.get(summary.record_id, UNKNOWN)
        self.seen[segment] += 1
        tally = self._population(segment)
        opens, proxied_opens, privacy_opens, machine_opens, machine_clicks, clicks = summary.per_hit  # PER_HIT
        tally.opens_total += opens
        tally.proxied_opens_total += proxied_opens
        tally.privacy_opens_total += privacy_opens
        tally.machine_opens += machine_opens
        tally.machine_clicks += machine_clicks
        tally.clicks_total += clicks
        record = RecordFigures()
        for link, n in summary.link_clicks.items():
            tally.link_clicks[link] += n
            record.links |= 1 << link
        record.first_open, record.first_click, record.read_ms = summary.first_open, summary.first_click, summary.read_ms
        record.reasons, record.proxied, record.privacy = summary.reasons, summary.proxied, summary.privacy
        if summary.first_open is not None:
            place = NOWHERE if summary.place is None else summary.place
            record.place = self._places.setdefault(place, place)
        self._count(record, tally)

    def add_tally(self, segment: str, tally: Tally, records: int) -> None:
        """Figures of ``records`` records (with events) judged and counted in SQL (``report_sql_pg``)."""
        self._close()
        self.seen[segment] += records
        self._population(segment).merge(tally)

    def _count(self, record: RecordFigures, tally: Tally) -> None:
        """Count one record, its hits judged, in its population once."""
        if record.first_open is not None and record.place is not None:
            tally.opens_unique += 1
            tally.first_opens[record.first_open // HOUR_MS] += 1
            device, os_, browser, country, city = record.place
            breakdowns = tally.breakdowns
            breakdowns["device"][device or UNKNOWN] += 1
            breakdowns["os"][os_ or UNKNOWN] += 1
            breakdowns["browser"][browser or UNKNOWN] += 1
            breakdowns["country"][country or UNKNOWN] += 1
            breakdowns["city"][UNKNOWN if city is None else f"{self._city(city)}, {country or UNKNOWN}"] += 1
        if record.read_ms >= 0:
            tally.reads_unique += 1
            tally.read_buckets[read_bucket(record.read_ms)] += 1
            tally.read_times.append(record.read_ms)
        if record.links:
            tally.clicks_unique += 1
            tally.first_clicks[(record.first_click or 0) // HOUR_MS] += 1
            tally.click_masks.append(record.links)
            for link in bits(record.links):
                tally.link_clickers[link] += 1
        tally.proxied_opens_unique += record.proxied
        tally.privacy_opens_unique += record.privacy
        if record.reasons:
            tally.machine_records += 1
            tally.reason_masks[record.reasons] += 1
            for reason in bits(record.reasons):
                tally.reason_records[reason] += 1

    def _city(self, sealed: bytes) -> str:
        city = self._cities.get(sealed)
        if city is None:
            city = self._cities[sealed] = self.open_city(sealed)  # each distinct ciphertext opened once
        return city

    def finish(self, populations: Mapping[str, int]) -> dict[str, Tally]:
        """The last run is judged; ``populations``: tracked records per segment."""
        self._close()
        for segment in set(populations) | set(self.seen):
            # A record erased while the report ran may have left events behind: still counted.
            self._population(segment).tracked = max(populations.get(segment, 0), self.seen[segment])
        return self.tallies


def bits(mask: int) -> list[int]:
    return [n for n in range(mask.bit_length()) if mask >> n & 1]


def merged(tallies: Iterable[Tally]) -> Tally:
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    return total


@dataclass(frozen=True)
class ReportInputs:
    """Everything a full report is built from: tallies per segment and the message's links."""

    tallies: Mapping[str, Tally]  # {ALL: ...} when unsegmented
    links: Sequence[LinkInfo] = ()
    attribute: str | None = None  # the segment attribute, when segmented


# --------------------------------------------------------------------------------------------------
# Loading. SQL is written once with $n parameters and runs on both backends.

EVENTS_OF_MESSAGE = (
    "SELECT e.record_id, e.kind, e.link_no, e.occurred_at, e.country, e.city, e.os, e.device, e.browser,"
    " e.bot, e.read_ms FROM records r JOIN events e ON e.record_id = r.id WHERE r.message_id = $1"
    " ORDER BY e.record_id, e.occurred_at, e.kind, e.event_id"
)
FIRST_HIT = "SELECT MIN(e.occurred_at) FROM records r JOIN events e ON e.record_id = r.id WHERE r.message_id = $1"
RECORD_ATTRIBUTES = "SELECT id, attributes FROM records WHERE message_id = $1"
LINKS_OF_MESSAGE = "SELECT link_no, url, text FROM links WHERE message_id = $1 AND url IS NOT NULL ORDER BY link_no"
_MESSAGE_COLUMNS = SELECT_MESSAGE.split(" FROM ", 1)[0]
FIRST_MESSAGES = f"{_MESSAGE_COLUMNS} FROM messages ORDER BY created_at DESC, id DESC LIMIT $1"
#: Newest first from a keyset position, no older than $1: created_at is indexed, so a date range costs
#: what its messages cost. ($2, "") as the position means "created before $2".
MESSAGES_BETWEEN = (
    f"{_MESSAGE_COLUMNS} FROM messages WHERE created_at >= $1 AND (created_at < $2 OR (created_at = $2 AND id < $3))"
    " ORDER BY created_at DESC, id DESC LIMIT $4"
)
_NEVER = 2**62  # a created_at later than any (epoch ms), for a range with no upper end
MESSAGES_BEFORE = (
    f"{_MESSAGE_COLUMNS} FROM messages WHERE created_at < $1 OR (created_at = $1 AND id < $2)"
    " ORDER BY created_at DESC, id DESC LIMIT $3"
)


class SealedTexts:
    """Opens sealed values of one field, each distinct ciphertext once (cities repeat a lot)."""

    def __init__(self, sealer: Sealer, field: str, limit: int = 100_000) -> None:
        self.sealer, self.field, self.limit = sealer, field, limit
        self._opened: dict[bytes, str] = {}

    def __call__(self, sealed: bytes) -> str:
        text = self._opened.get(sealed)
        if text is None:
            if len(self._opened) >= self.limit:
                self._opened.clear()
            text = self._opened[sealed] = self.sealer.open_text(self.field, bytes(sealed))
        return text


async def load_links(store: Store, sealer: Sealer, message_id: str) -> list[LinkInfo]:
    """The message's tracked links (not the honeypot), opened."""
    rows = await store.fetch(LINKS_OF_MESSAGE, message_id)
    links = []
    for n, url, text in rows:
        row = link_row(message_id, int(n))
        opened = sealer.open_text("link.url", bytes(url), row=row)
        links.append(LinkInfo(int(n), sealer.open_optional("link.text", text, row=row) or "", opened))
    return links


async def load_segments(store: Store, sealer: Sealer, message_id: str, attribute: str) -> dict[bytes, str]:
    """Record id -> its value of ``attribute`` (UNKNOWN when it has none), streamed and opened."""
    values: dict[str, str] = {}  # one string object per distinct value
    segment_of: dict[bytes, str] = {}

    def read(rows: list[tuple[Any, ...]]) -> None:
        for record_id, sealed in rows:
            value = UNKNOWN
            if sealed is not None:
                opened = sealer.open("record.attributes", bytes(sealed), row=bytes(record_id))
                found = json.loads(opened).get(attribute)
                if found is not None:
                    value = values.setdefault(str(found), str(found))
            segment_of[bytes(record_id)] = value

    async for rows in store.stream(RECORD_ATTRIBUTES, message_id):
        await asyncio.to_thread(read, rows)
    return segment_of


async def stream_events(store: Store, message_id: str, batch: int = 5000) -> AsyncIterator[list[EventRow]]:
    """Every event of the message, in batches: never all in memory."""
    async for rows in store.stream(EVENTS_OF_MESSAGE, message_id, batch=batch):
        yield rows


def rules_for(settings: TrackerSettings, message: MessageRow) -> CopyRules:
    """The behaviour rules of a message: the tenant's windows, its links, whether copies are people's."""
    aggregate = message.mode == TrackingMode.AGGREGATE.value
    return CopyRules.from_settings(settings, link_count=message.link_count, per_copy=not aggregate)


async def first_hit(store: Store, message_id: str) -> int | None:
    """The message's earliest event, whoever made it: where the early window starts."""
    rows = await store.fetch(FIRST_HIT, message_id)
    return None if not rows or rows[0][0] is None else int(rows[0][0])


async def load_report_inputs(
    store: Store, sealer: Sealer, message: MessageRow, rules: CopyRules, attribute: str | None = None
) -> ReportInputs:
    """The message's tallies and links: see ``report_load`` (imported here, as it builds on this module)."""
    from politetenant.tracker.reports.report_load import load_inputs

    return await load_inputs(store, sealer, message, rules, attribute)


async def message_page(
    store: Store, limit: int, before: tuple[int, str] | None = None, *, since_ms: int | None = None
) -> list[MessageRow]:
    """Newest first: up to ``limit`` messages older than ``before`` (created_at, id) and created at or
    after ``since_ms``."""
    if since_ms is not None:
        created, last_id = before or (_NEVER, "")
        rows = await store.fetch(MESSAGES_BETWEEN, since_ms, created, last_id, limit)
    elif before is None:
        rows = await store.fetch(FIRST_MESSAGES, limit)
    else:
        rows = await store.fetch(MESSAGES_BEFORE, before[0], before[1], limit)
    return [MessageRow(*row) for row in rows]
