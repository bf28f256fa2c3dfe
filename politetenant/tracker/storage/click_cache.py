"""Where a click goes, as this worker remembers it: record -> message, and (message, link) -> target.

A click needs the message its record belongs to and the link's sealed URL, opened (AES-GCM) and
quoted. Both are facts that do not change while they exist: a record's id is random and names one
message for good, a link's URL is fixed when the message is stored (a reseal seals the same text
again). So a worker keeps them, in two bounded maps: one entry per record (16-byte id -> message id)
and one per link of a message, which also keeps the opened, quoted ``Location`` once a click has
needed it, so each link is opened once per worker rather than once per click. A message this
worker registered is remembered from its rows (``remember_message``): its first clicks need no
database read at all. Other workers (and this one, for older messages) learn a record from the
batched look-up (``click_lookups``).

What can end a fact is deletion: an erasure removes a person's records, retention removes old
messages with their links, possibly in another process. Every entry therefore lives at most
``ttl_seconds`` from when it was learnt (a hit does not extend it), after which the database is asked
again; ``clear`` drops everything at once (an erasure in this worker). Opened URLs can carry
personal data: they live only here, in memory, bounded, and are never logged.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import repeat

from politetenant.tracker.storage.rows import ClickTarget, LinkRow

MAX_RECORDS = 100_000  # ~150 bytes each: a few newsletters' worth of recipients
MAX_LINKS = 10_000
TTL_SECONDS = 600.0  # how long a deleted message or record can still be clicked through


@dataclass(slots=True)
class LinkTarget:
    """One link of one message: its sealed URL (None for the honeypot link) and, once a click has
    opened it, the ``Location`` to redirect to, and the lean server's whole 302 for it but the date
    (``lean_server.redirect_before_date``): every click after the first writes it as it is."""

    message_id: str
    sealed_url: bytes | None
    expires: float
    location: str | None = None
    redirect: bytes | None = None


class ClickCache:
    """The two bounded maps (least recently used entries go first), with their time to live."""

    def __init__(
        self, *, max_records: int = MAX_RECORDS, max_links: int = MAX_LINKS, ttl_seconds: float = TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.max_records, self.max_links, self.ttl_seconds = max_records, max_links, ttl_seconds
        self._clock = clock
        self._records: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._links: OrderedDict[tuple[str, int], LinkTarget] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def link_count(self) -> int:
        return len(self._links)

    def get(self, record_id: bytes, link_no: int) -> LinkTarget | None:
        """The link's target when this worker knows it (and learnt it less than the TTL ago)."""
        records = self._records
        entry = records.get(record_id)
        if entry is None:
            return None
        now = self._clock()
        message_id, expires = entry
        if expires <= now:
            del records[record_id]
            return None
        key = (message_id, link_no)
        link = self._links.get(key)
        if link is None:
            return None
        if link.expires <= now:
            del self._links[key]
            return None
        records.move_to_end(record_id)
        self._links.move_to_end(key)
        return link

    def learn(self, record_id: bytes, link_no: int, target: ClickTarget) -> LinkTarget:
        """Remember what the database said of one click: its record's message and the link."""
        now = self._clock()
        expires = now + self.ttl_seconds
        self._record(record_id, target.message_id, expires)
        key = (target.message_id, link_no)
        link = self._links.get(key)
        if link is None or link.expires <= now or link.sealed_url != target.url:
            link = self._link(key, LinkTarget(target.message_id, target.url, expires))
        return link

    def remember_message(self, message_id: str, record_ids: Iterable[bytes], links: Iterable[LinkRow]) -> None:
        """Remember a message this worker is storing: its records and its links' sealed URLs, so the
        recipients' first clicks need no database read. (Records of a message whose storing then
        fails are harmless here: their tokens were never handed out.)"""
        expires = self._clock() + self.ttl_seconds
        for link in links:
            self._link((message_id, link.link_no), LinkTarget(message_id, link.url, expires))
        entry = (message_id, expires)  # one tuple shared by all the message's records: a third less memory
        records = self._records
        # New keys go to the end, in C; record ids are random, so none is there already (one that were
        # would keep its place and only leave the cache sooner).
        records.update(zip(record_ids, repeat(entry)))
        while len(records) > self.max_records:
            records.popitem(last=False)

    def forget_link(self, message_id: str, link_no: int) -> None:
        """Drop one link (its sealed URL did not open: the next click asks the database again)."""
        self._links.pop((message_id, link_no), None)

    def clear(self) -> None:
        self._records.clear()
        self._links.clear()

    def _record(self, record_id: bytes, message_id: str, expires: float) -> None:
        records = self._records
        records[record_id] = (message_id, expires)
        records.move_to_end(record_id)
        while len(records) > self.max_records:
            records.popitem(last=False)

    def _link(self, key: tuple[str, int], link: LinkTarget) -> LinkTarget:
        links = self._links
        links[key] = link
        links.move_to_end(key)
        while len(links) > self.max_links:
            links.popitem(last=False)
        return link
