"""What a report is made of, from the database: the message's links, its records' segment values,
and its events streamed and folded per record. No threshold is applied here (see ``thresholds``).

``Accumulator`` keeps state per record, never per event, so a message with a million events needs
memory for its records only; each distinct sealed city is opened once. Definitions (human figures
exclude suspected bots: judged so on arrival, or seen sooner after registration than the scanner
window, as ``Store.tally`` counts them):
- an *opener* is a record with a human open or read; device, OS, browser, country and city are
  those of its first open, so every breakdown is a partition of the openers;
- read time is a reader's longest read: glanced < 3 s, skimmed < 10 s, read from 10 s;
- the timeline counts openers by the hour of their first open, clickers by that of their first click.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from politetenant.crypto import Sealer
from politetenant.tracker.reports.thresholds import ALL
from politetenant.tracker.storage.base import SELECT_MESSAGE, Store
from politetenant.tracker.storage.rows import EventKind, MessageRow

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


def read_bucket(read_ms: int) -> str:
    if read_ms < GLANCED_BELOW_MS:
        return "glanced"
    return "skimmed" if read_ms < SKIMMED_BELOW_MS else "read"


class _Record:
    """What one record contributes; bounded per record whatever the number of its events."""

    __slots__ = ("first_click", "first_open", "links", "place", "read_ms", "segment")

    def __init__(self, segment: str) -> None:
        self.segment = segment
        self.first_open: int | None = None
        self.place: tuple[str, str, str, str | None, bytes | None] | None = None  # at the first open
        self.first_click: int | None = None
        self.read_ms = -1
        self.links = 0  # bit n: clicked link n


@dataclass
class Tally:
    """Raw figures of one population (a message or a segment), before the threshold is applied."""

    tracked: int = 0
    opens_total: int = 0
    opens_unique: int = 0
    reads_unique: int = 0
    clicks_total: int = 0
    clicks_unique: int = 0
    bot_opens: int = 0
    bot_clicks: int = 0
    breakdowns: dict[str, Counter[str]] = field(default_factory=lambda: {d: Counter() for d in DIMENSIONS})
    read_buckets: Counter[str] = field(default_factory=Counter)
    read_times: list[int] = field(default_factory=list)
    first_opens: Counter[int] = field(default_factory=Counter)  # hour -> openers
    first_clicks: Counter[int] = field(default_factory=Counter)  # hour -> clickers
    link_clicks: Counter[int] = field(default_factory=Counter)  # link -> human clicks
    link_clickers: Counter[int] = field(default_factory=Counter)  # link -> distinct clickers
    click_masks: list[int] = field(default_factory=list)  # one per clicker: the links they clicked

    def merge(self, other: Tally) -> None:
        for name in ("tracked", "opens_total", "opens_unique", "reads_unique", "clicks_total", "clicks_unique"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.bot_opens += other.bot_opens
        self.bot_clicks += other.bot_clicks
        for d in DIMENSIONS:
            self.breakdowns[d].update(other.breakdowns[d])
        self.read_buckets.update(other.read_buckets)
        self.first_opens.update(other.first_opens)
        self.first_clicks.update(other.first_clicks)
        self.link_clicks.update(other.link_clicks)
        self.link_clickers.update(other.link_clickers)
        self.read_times += other.read_times
        self.click_masks += other.click_masks


class Accumulator:
    """Folds streamed event rows into per-segment tallies (one segment, ``ALL``, when unsegmented)."""

    def __init__(
        self,
        created_at: int,
        early_ms: int,
        *,
        segment_of: Mapping[bytes, str] | None = None,
        open_city: Callable[[bytes], str] = lambda sealed: UNKNOWN,
    ) -> None:
        self.human_from = created_at + early_ms
        self.segment_of = segment_of
        self.open_city = open_city
        self.records: dict[bytes, _Record] = {}
        self.tallies: dict[str, Tally] = {}
        self._places: dict[tuple[str, str, str, str | None, bytes | None], Any] = {}

    def _tally(self, segment: str) -> Tally:
        tally = self.tallies.get(segment)
        if tally is None:
            tally = self.tallies[segment] = Tally()
        return tally

    def add(self, rows: Iterable[EventRow]) -> None:
        records, human_from, segment_of = self.records, self.human_from, self.segment_of
        for record_id, kind, link_no, at, country, city, os_, device, browser, bot, read_ms in rows:
            record = records.get(record_id)
            if record is None:
                segment = ALL if segment_of is None else segment_of.get(record_id, UNKNOWN)
                record = records[record_id] = _Record(segment)
                self._tally(segment)
            tally = self.tallies[record.segment]
            if bot or at < human_from:
                if kind == EventKind.CLICK:
                    tally.bot_clicks += 1
                else:
                    tally.bot_opens += 1
            elif kind == EventKind.CLICK:
                tally.clicks_total += 1
                tally.link_clicks[link_no or 0] += 1
                record.links |= 1 << (link_no or 0)
                if record.first_click is None or at < record.first_click:
                    record.first_click = at
            else:
                if kind == EventKind.OPEN:
                    tally.opens_total += 1
                elif (read_ms or 0) > record.read_ms:  # a read: keep the longest
                    record.read_ms = read_ms or 0
                if record.first_open is None or at < record.first_open:
                    record.first_open = at
                    place = (device, os_, browser, country, city)
                    record.place = self._places.setdefault(place, place)  # shared: few distinct places

    def finish(self, populations: Mapping[str, int]) -> dict[str, Tally]:
        """Per-record state becomes per-segment counts; ``populations``: tracked records per segment."""
        cities: dict[bytes, str] = {}
        seen: Counter[str] = Counter(record.segment for record in self.records.values())
        for segment in set(populations) | set(seen):
            # A record erased while the report ran may have left events behind: still counted.
            self._tally(segment).tracked = max(populations.get(segment, 0), seen[segment])
        for record in self.records.values():
            tally = self.tallies[record.segment]
            if record.first_open is not None and record.place is not None:
                tally.opens_unique += 1
                tally.first_opens[record.first_open // HOUR_MS] += 1
                device, os_, browser, country, city = record.place
                if city is not None and city not in cities:
                    cities[city] = self.open_city(city)  # each distinct ciphertext opened once
                breakdowns = tally.breakdowns
                breakdowns["device"][device or UNKNOWN] += 1
                breakdowns["os"][os_ or UNKNOWN] += 1
                breakdowns["browser"][browser or UNKNOWN] += 1
                breakdowns["country"][country or UNKNOWN] += 1
                place = f"{cities[city]}, {country or UNKNOWN}" if city is not None else UNKNOWN
                tally.breakdowns["city"][place] += 1
            if record.read_ms >= 0:
                tally.reads_unique += 1
                tally.read_buckets[read_bucket(record.read_ms)] += 1
                tally.read_times.append(record.read_ms)
            if record.links:
                tally.clicks_unique += 1
                tally.first_clicks[(record.first_click or 0) // HOUR_MS] += 1
                tally.click_masks.append(record.links)
                for link in _bits(record.links):
                    tally.link_clickers[link] += 1
        return self.tallies


def _bits(mask: int) -> list[int]:
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
)
RECORD_ATTRIBUTES = "SELECT id, attributes FROM records WHERE message_id = $1"
LINKS_OF_MESSAGE = "SELECT link_no, url, text FROM links WHERE message_id = $1 AND url IS NOT NULL ORDER BY link_no"
_MESSAGE_COLUMNS = SELECT_MESSAGE.split(" FROM ", 1)[0]
FIRST_MESSAGES = f"{_MESSAGE_COLUMNS} FROM messages ORDER BY created_at DESC, id DESC LIMIT $1"
MESSAGES_BEFORE = (
    f"{_MESSAGE_COLUMNS} FROM messages WHERE created_at < $1 OR (created_at = $1 AND id < $2)"
    " ORDER BY created_at DESC, id DESC LIMIT $3"
)
# One page of an individual-mode message's recipients with their human figures. A recipient finds
# its record through the keyed pseudonym both carry; objectors have none.
_HUMAN = "e.bot = 0 AND e.occurred_at >= $3"
RECIPIENTS_PAGE = (
    "SELECT p.id, p.email, p.name, p.attributes, MAX(CASE WHEN rec.id IS NULL THEN 0 ELSE 1 END),"
    f" MIN(CASE WHEN e.kind IN (1, 2) AND {_HUMAN} THEN e.occurred_at END),"
    f" SUM(CASE WHEN e.kind = 1 AND {_HUMAN} THEN 1 ELSE 0 END),"
    f" SUM(CASE WHEN e.kind = 3 AND {_HUMAN} THEN 1 ELSE 0 END),"
    f" MAX(CASE WHEN e.kind = 2 AND {_HUMAN} THEN e.read_ms END)"
    " FROM (SELECT id, email_index, email, name, attributes FROM recipients"
    "       WHERE message_id = $1 AND id > $2 ORDER BY id LIMIT $4) p"
    " LEFT JOIN records rec ON rec.message_id = $1 AND rec.subject_index = p.email_index"
    " LEFT JOIN events e ON e.record_id = rec.id"
    " GROUP BY p.id, p.email, p.name, p.attributes ORDER BY p.id"
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
    return [
        LinkInfo(int(n), sealer.open_optional("link.text", text) or "", sealer.open_text("link.url", bytes(url)))
        for n, url, text in rows
    ]


async def load_segments(store: Store, sealer: Sealer, message_id: str, attribute: str) -> dict[bytes, str]:
    """Record id -> its value of ``attribute`` (UNKNOWN when it has none), streamed and opened."""
    values: dict[str, str] = {}  # one string object per distinct value
    segment_of: dict[bytes, str] = {}

    def read(rows: list[tuple[Any, ...]]) -> None:
        for record_id, sealed in rows:
            value = UNKNOWN
            if sealed is not None:
                found = json.loads(sealer.open("record.attributes", bytes(sealed))).get(attribute)
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


async def load_report_inputs(
    store: Store, sealer: Sealer, message: MessageRow, early_ms: int, attribute: str | None = None
) -> ReportInputs:
    """Stream the message's events through an Accumulator; CPU work runs off the event loop."""
    segment_of = None if attribute is None else await load_segments(store, sealer, message.id, attribute)
    populations = {ALL: message.tracked} if segment_of is None else Counter(segment_of.values())
    accumulator = Accumulator(
        message.created_at, early_ms, segment_of=segment_of, open_city=SealedTexts(sealer, "event.city")
    )
    async for rows in stream_events(store, message.id):
        await asyncio.to_thread(accumulator.add, rows)
    tallies = await asyncio.to_thread(accumulator.finish, populations)
    return ReportInputs(tallies, await load_links(store, sealer, message.id), attribute)


async def message_page(store: Store, limit: int, before: tuple[int, str] | None = None) -> list[MessageRow]:
    """Newest first: up to ``limit`` messages older than ``before`` (created_at, id)."""
    if before is None:
        rows = await store.fetch(FIRST_MESSAGES, limit)
    else:
        rows = await store.fetch(MESSAGES_BEFORE, before[0], before[1], limit)
    return [MessageRow(*row) for row in rows]


class RecipientFigures(NamedTuple):
    id: int  # the recipient row, for paging
    email: str
    name: str | None
    attributes: dict[str, str] | None
    tracked: bool
    first_open_at: int | None
    opens: int
    clicks: int
    read_ms: int | None


async def recipient_page(
    store: Store, sealer: Sealer, message: MessageRow, early_ms: int, after: int, limit: int
) -> list[RecipientFigures]:
    """Recipients of an individual-mode message after row ``after``, opened, with human figures."""
    human_from = message.created_at + early_ms
    rows = await store.fetch(RECIPIENTS_PAGE, message.id, after, human_from, limit)
    page = []
    for rid, email, name, attributes, tracked, first_open, opens, clicks, read_ms in rows:
        opened = sealer.open_optional("recipient.attributes", attributes)
        page.append(
            RecipientFigures(
                int(rid),
                sealer.open_text("recipient.email", bytes(email)),
                sealer.open_optional("recipient.name", name),
                None if opened is None else json.loads(opened),
                bool(tracked),
                None if first_open is None else int(first_open),
                int(opens or 0),
                int(clicks or 0),
                None if read_ms is None else int(read_ms),
            )
        )
    return page
