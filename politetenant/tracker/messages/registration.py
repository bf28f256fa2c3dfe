"""Registering a message: from the sender's request to the rows stored and the tokens returned.

A message decides its tracking mode, rewrites the HTML, seals every personal field and builds one
tracking record per recipient as the mode dictates:
- individual: a record per recipient, carrying a keyed pseudonym (blind index) of the recipient;
- anonymous: a record per recipient with its segment attributes, stored in an order shuffled over the
  whole message and with no column pointing back at the recipient row;
- in both, a record keeps only the tenant's segment attributes, generalised so that each record's
  combination is shared by at least ``min_segment_size`` tracked recipients (``generalise``);
- aggregate: one record for the whole message; every recipient gets the same token.
Recipients on the objection list get no record and a ``null`` token.
Every sealed value is bound to its row (the identities are listed in ``crypto.sealing``), so a value
copied into another row of its column does not open.

A message may name 100,000 recipients, so nothing here needs them all in memory at once. A first pass
over the validated recipients keeps a few dozen bytes per recipient in a ``Census`` (blind indexes and
segment class, nothing readable) and packs what the rows need (``PackedRecipients``: the fields'
UTF-8, smaller than the JSON they came from, which can then go). From that, ``plan_message`` settles
everything decided for the message as a whole (objectors, generalised classes, record ids, storage
order), ``record_batches`` yields the records, and ``recipient_batches`` builds each recipient's row
and token in request order, batch by batch, column by column (one call seals a batch's e-mails).
``prepare_message`` runs the same steps in memory for a message already parsed.
"""

from __future__ import annotations

import binascii
import functools
import json
import os
import secrets
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import TypeVar

from politetenant.crypto import Keyring, Sealer, TokenCodec, link_row, normalise_email
from politetenant.crypto.tokens import RECORD_ID_BYTES
from politetenant.settings import TrackerSettings, TrackingMode
from politetenant.tracker.http.errors import PayloadTooLarge, Unprocessable
from politetenant.tracker.messages.api_models import MessageIn, RecipientIn
from politetenant.tracker.messages.generalise import Combination, combination_of, generalised_classes
from politetenant.tracker.messages.html_rewrite import HONEYPOT_LINK, TOKEN_PLACEHOLDER, rewrite_html
from politetenant.tracker.messages.notice import notice_for
from politetenant.tracker.messages.readability import measure, text_of_html
from politetenant.tracker.storage.base import Store
from politetenant.tracker.storage.rows import LinkRow, MessageRow, RecipientRow, RecordRow


def resolve_mode(requested: TrackingMode | None, settings: TrackerSettings) -> TrackingMode:
    """The tenant's default when none is asked for; a mode the tenant does not allow is refused."""
    if requested is None:
        return settings.default_mode
    if requested not in settings.modes:
        allowed = ", ".join(m.value for m in settings.modes)
        locked = " (the tenant has locked its mode)" if settings.mode_locked else ""
        raise Unprocessable(
            f"mode {requested.value!r} is not allowed for this tenant{locked}; allowed: {allowed}",
            code="mode_not_allowed",
        )
    return requested


def check_limits(body: MessageIn, settings: TrackerSettings, recipients: int | None = None) -> None:
    """The tenant's ceilings; ``recipients`` counts them when ``body`` was read batch by batch."""
    count = len(body.recipients) if recipients is None else recipients
    html_bytes = len(body.html.encode("utf-8"))
    if html_bytes > settings.max_html_bytes:
        raise PayloadTooLarge(f"html: {html_bytes} bytes; this tenant accepts at most {settings.max_html_bytes}")
    if TOKEN_PLACEHOLDER in body.html:
        # Substitution would hand each recipient's token to whatever URL the sender put it in.
        raise Unprocessable(f"html: must not contain {TOKEN_PLACEHOLDER}; the tracker inserts it", code="invalid_field")
    if count > settings.max_recipients:
        raise Unprocessable(
            f"recipients: {count} given; at most {settings.max_recipients} per message",
            code="too_many_recipients",
        )


_Row = TypeVar("_Row", RecipientRow, RecordRow)
BATCH_ROWS = 5_000  # rows per COPY / INSERT batch: large enough to amortise, small enough to stay bounded
_INDEX_BYTES = 32  # a blind index (HMAC-SHA256)


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(10)


class _AttributeEncoder:
    """Canonical JSON of attribute maps, memoised: 100,000 recipients share a few departments."""

    def __init__(self) -> None:
        self._cache: dict[tuple[tuple[str, str], ...], bytes] = {}
        self._encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode

    def __call__(self, attributes: dict[str, str]) -> bytes | None:
        if not attributes:
            return None
        key = tuple(attributes.items())  # unsorted: cheaper; maps in another order get an entry of their own
        encoded = self._cache.get(key)
        if encoded is None:
            if len(self._cache) >= 10_000:  # all distinct: the memo would only cost memory
                self._cache.clear()
            encoded = self._cache[key] = self._encode(attributes).encode()
        return encoded


class Census:
    """The first pass over a message's recipients: per recipient, its blind index under each loaded key
    version (for the objection list, and the stored ``email_index``) and its segment class (for
    ``generalise``), packed in arrays: about 40 bytes a recipient and nothing readable.

    Past ``limit`` recipients it only counts, so an oversized message is refused without the work."""

    def __init__(self, keyring: Keyring, segments: Sequence[str], limit: int | None = None) -> None:
        self._names = sorted(set(segments))
        self._limit = limit
        self.count = 0
        self.indexes = bytearray()  # newest key version, _INDEX_BYTES per recipient
        self._index = keyring.index_mac(keyring.current.version).digest  # blind_index, without its look-ups
        self._older = [
            (keyring.index_mac(v).digest, bytearray()) for v in keyring.versions if v != keyring.current.version
        ]
        self._class_ids: dict[Combination, int] = {}
        self.class_of = array("i")

    def add(self, recipient: RecipientIn) -> None:
        self.count += 1
        if self._limit is not None and self.count > self._limit:
            return
        normalised = normalise_email(recipient.email).encode("utf-8")
        self.indexes += self._index(normalised)
        for index, indexes in self._older:
            indexes += index(normalised)
        combination = combination_of(recipient.attributes, self._names)
        self.class_of.append(self._class_ids.setdefault(combination, len(self._class_ids)))

    @property
    def classes(self) -> list[Combination]:
        """Segment combinations by class id."""
        return list(self._class_ids)

    def index(self, position: int) -> bytes:
        """The recipient's blind index under the newest key version."""
        return bytes(self.indexes[position * _INDEX_BYTES : (position + 1) * _INDEX_BYTES])

    def all_indexes(self, position: int) -> list[bytes]:
        """Its indexes under every loaded version: the objection list may predate a rotation."""
        at = slice(position * _INDEX_BYTES, (position + 1) * _INDEX_BYTES)
        return [self.index(position), *(bytes(older[at]) for _, older in self._older)]


_NO_NAME = 0xFFFF  # a name's length (UTF-8 of at most 200 characters) that says there is none
_NO_ATTRIBUTES, _OWN_ATTRIBUTES = -1, -2  # an attribute reference: none, or (_OWN_ATTRIBUTES - length) in place
_SHARED_MOST = 4_096  # distinct attribute maps kept once and referred to; past that, packed in place


class PackedRecipients:
    """The recipients as the first pass validated them, packed for the second, so the body is neither
    kept nor validated twice: about 50 bytes a recipient against 130 of JSON.

    Per recipient: the UTF-8 of its e-mail and name, back to back in one ``bytes`` per ``chunk``
    recipients (fixed pieces: one buffer grown to megabytes leaves holes the allocator keeps), their
    lengths, and its attributes' canonical JSON as a reference to the few distinct maps a message has
    (or, past ``_SHARED_MOST`` of them, in place after the name). Past ``limit`` recipients it keeps
    nothing (the message is refused)."""

    def __init__(self, limit: int | None = None, chunk: int = BATCH_ROWS) -> None:
        self.count = 0
        self.chunk = chunk
        self._limit = limit
        self._chunks: list[bytes] = []
        self._pending: list[bytes] = []  # the chunk being filled
        self._lengths = array("H")  # two per recipient: its e-mail's and its name's (or _NO_NAME)
        self._attributes = array("i")  # per recipient: an index in _shared, _NO_ATTRIBUTES, or in place
        self._shared: list[bytes] = []
        self._shared_ids: dict[bytes, int] = {}
        self._encode = _AttributeEncoder()

    def add(self, recipient: RecipientIn) -> None:
        if self._limit is not None and self.count >= self._limit:
            return
        self.count += 1
        pending, lengths = self._pending, self._lengths
        email = recipient.email.encode("utf-8")
        pending.append(email)
        lengths.append(len(email))
        if recipient.name is None:
            lengths.append(_NO_NAME)
        else:
            name = recipient.name.encode("utf-8")
            pending.append(name)
            lengths.append(len(name))
        self._attributes.append(self._reference(self._encode(recipient.attributes)))
        if self.count % self.chunk == 0:
            self._chunks.append(b"".join(pending))
            pending.clear()

    def _reference(self, attributes: bytes | None) -> int:
        if attributes is None:
            return _NO_ATTRIBUTES
        shared = self._shared_ids.get(attributes)
        if shared is not None:
            return shared
        if len(self._shared) < _SHARED_MOST:
            self._shared_ids[attributes] = len(self._shared)
            self._shared.append(attributes)
            return len(self._shared) - 1
        self._pending.append(attributes)
        return _OWN_ATTRIBUTES - len(attributes)

    def batch(self, index: int) -> tuple[list[bytes], list[bytes | None], list[bytes | None]]:
        """The e-mails, names and attributes (UTF-8) of the ``index``-th ``chunk`` of recipients."""
        data = self._chunks[index] if index < len(self._chunks) else b"".join(self._pending)
        lengths, references, shared = self._lengths, self._attributes, self._shared
        emails: list[bytes] = []
        names: list[bytes | None] = []
        attributes: list[bytes | None] = []
        at = 0
        for position in range(index * self.chunk, min((index + 1) * self.chunk, self.count)):
            size = lengths[2 * position]
            emails.append(data[at : at + size])
            at += size
            size = lengths[2 * position + 1]
            if size == _NO_NAME:
                names.append(None)
            else:
                names.append(data[at : at + size])
                at += size
            reference = references[position]
            if reference >= 0:
                attributes.append(shared[reference])
            elif reference == _NO_ATTRIBUTES:
                attributes.append(None)
            else:
                size = _OWN_ATTRIBUTES - reference
                attributes.append(data[at : at + size])
                at += size
        return emails, names, attributes


_LIST_WHOLE = 100_000  # objection lists up to this size are read whole: one query, not one per batch
_SELECT_OBJECTIONS = "SELECT subject_index FROM objections LIMIT $1"


async def find_objected(census: Census, store: Store, batch: int = BATCH_ROWS) -> set[int]:
    """Positions of the recipients on the objection list (every one, if an address is listed twice).

    A tenant's objection list is short next to a big message: read whole (blind indexes, nothing
    readable), it answers 100,000 recipients in one query; a longer one is asked batch by batch."""
    listed = {bytes(row[0]) for row in await store.fetch(_SELECT_OBJECTIONS, _LIST_WHOLE + 1)}
    if len(listed) <= _LIST_WHOLE:
        if not listed:
            return set()
        return {p for p in range(census.count) if not listed.isdisjoint(census.all_indexes(p))}
    del listed
    found: set[int] = set()
    for start in range(0, census.count, batch):
        wanted: dict[bytes, list[int]] = {}
        for position in range(start, min(start + batch, census.count)):
            for index in census.all_indexes(position):
                wanted.setdefault(index, []).append(position)
        for index in await store.objected(list(wanted)):
            found.update(wanted[index])
    return found


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything decided for the message as a whole before any recipient's row is built."""

    message: MessageRow
    links: list[LinkRow]
    html_template: str
    mode: TrackingMode
    objected: frozenset[int]
    record_ids: bytes  # RECORD_ID_BYTES per recipient position (aggregate: the one record's id)
    kept: list[bytes | None]  # per census class: canonical JSON of the attributes its records keep
    order: Sequence[int]  # tracked positions in the order their records are stored
    shared_token: str | None  # aggregate

    def record_id(self, position: int) -> bytes:
        return _slice(self.record_ids, RECORD_ID_BYTES, position)


def _slice(packed: bytes, size: int, position: int) -> bytes:
    return packed[position * size : (position + 1) * size]


def _kept_attributes(census: Census, objected: frozenset[int], settings: TrackerSettings) -> list[bytes | None]:
    """Records keep only segment attributes, generalised to classes of min_segment_size (k-anonymity at
    rest), counted over the tracked recipients only; the recipient row keeps the whole map (the
    person's own data, for subject access)."""
    tracked: Counter[int] = Counter(census.class_of)
    for position in objected:
        tracked[census.class_of[position]] -= 1
    classes = census.classes
    settled = generalised_classes({classes[c]: tracked[c] for c in range(len(classes))}, settings.min_segment_size)
    encode = _AttributeEncoder()
    return [encode(dict(settled[combination])) for combination in classes]


def plan_message(
    body: MessageIn,
    census: Census,
    objected: set[int],
    mode: TrackingMode,
    settings: TrackerSettings,
    sealer: Sealer,
    codec: TokenCodec,
    created_by: str,
) -> Plan:
    """Rewrite the HTML, seal the message's own fields and settle the records (ids, attributes, order)."""
    message_id = new_message_id()
    rewritten = rewrite_html(
        body.html, settings.public_base_url, body.no_track_urls, notice=notice_for(settings, body.language)
    )
    readability = measure(text_of_html(body.html))
    tracked = census.count - len(objected)
    shared_token = None
    order: Sequence[int] = array("i")
    if mode is TrackingMode.AGGREGATE:
        record_ids = os.urandom(RECORD_ID_BYTES)
        kept: list[bytes | None] = []
        shared_token = codec.issue(record_ids) if tracked else None
    else:
        record_ids = os.urandom(RECORD_ID_BYTES * census.count)
        kept = _kept_attributes(census, frozenset(objected), settings)
        # Storage order must not pair records with recipients (anonymous mode): records go in the order
        # of their ids, which are random (os.urandom), so the order is a uniform shuffle over the whole
        # message, settled before any record is written. Index order also keeps the primary key's
        # B-tree growing at its end instead of being written all over.
        record_id = functools.partial(_slice, record_ids, RECORD_ID_BYTES)
        order = array("i", sorted((p for p in range(census.count) if p not in objected), key=record_id))
    links = [LinkRow(message_id, HONEYPOT_LINK, None, None)]
    links += [
        LinkRow(
            message_id,
            link.number,
            sealer.seal_text("link.url", link.url, row=link_row(message_id, link.number)),
            sealer.seal_text("link.text", link.text, row=link_row(message_id, link.number)),
        )
        for link in rewritten.links
    ]
    message = MessageRow(
        id=message_id,
        created_at=int(time.time() * 1000),
        mode=mode.value,
        subject=sealer.seal_text("message.subject", body.subject, row=message_id),
        from_name=sealer.seal_text("message.from_name", body.from_name, row=message_id),
        from_email=sealer.seal_text("message.from_email", body.from_email, row=message_id),
        list_name=sealer.seal_text("message.list_name", body.list_name, row=message_id),
        recipients=census.count,
        tracked=tracked,
        word_count=readability.words,
        flesch=readability.flesch_reading_ease,
        link_count=len(rewritten.links),
        created_by=created_by,
    )
    return Plan(message, links, rewritten.template, mode, frozenset(objected), record_ids, kept, order, shared_token)


def record_batches(plan: Plan, census: Census, sealer: Sealer, batch: int = BATCH_ROWS) -> Iterator[list[RecordRow]]:
    """The message's records in storage order, ``batch`` at a time. They depend on the census alone."""
    message_id = plan.message.id
    if plan.mode is TrackingMode.AGGREGATE:
        if plan.shared_token is not None:
            yield [RecordRow(plan.record_ids, message_id, None, None)]
        return
    kept, class_of, record_ids, size = plan.kept, census.class_of, plan.record_ids, RECORD_ID_BYTES
    indexes = bytes(census.indexes) if plan.mode is TrackingMode.INDIVIDUAL else None
    for start in range(0, len(plan.order), batch):
        positions = plan.order[start : start + batch]
        ids = [record_ids[p * size : (p + 1) * size] for p in positions]  # plan.record_id(p), inline
        attributes = sealer.seal_rows("record.attributes", [kept[class_of[p]] for p in positions], ids)
        # The pseudonym is the blind index under the newest key version, as the recipient row's.
        pseudonyms = repeat(None) if indexes is None else [_slice(indexes, _INDEX_BYTES, p) for p in positions]
        yield _rows(RecordRow, zip(ids, repeat(message_id), attributes, pseudonyms))


def _rows(kind: type[_Row], values: Iterator[tuple[object, ...]]) -> list[_Row]:
    """Named tuples of ``kind`` made in C (``kind(*v)`` is a Python call each, a tenth of a batch's cost)."""
    return list(map(tuple.__new__, repeat(kind), values))


def recipient_batches(
    plan: Plan, census: Census, packed: PackedRecipients, sealer: Sealer, codec: TokenCodec
) -> Iterator[tuple[list[RecipientRow], list[bytes], list[str | None]]]:
    """Per chunk of ``packed`` recipients in request order: their rows, e-mails (UTF-8) and tokens."""
    message_id, objected, record_ids, size = plan.message.id, plan.objected, plan.record_ids, RECORD_ID_BYTES
    row_of = (message_id + "/").encode()  # recipient_row(message_id, index), encoded
    if packed.count != census.count:
        raise ValueError("the census and the packed recipients come from different readings")
    for number, start in enumerate(range(0, census.count, packed.chunk)):
        stop = min(start + packed.chunk, census.count)
        block = bytes(census.indexes[start * _INDEX_BYTES : stop * _INDEX_BYTES])
        indexes = [block[at : at + _INDEX_BYTES] for at in range(0, len(block), _INDEX_BYTES)]  # census.index
        rows = [row_of + binascii.hexlify(index) for index in indexes]
        emails, names, attributes = packed.batch(number)
        fields = (("recipient.email", emails), ("recipient.name", names), ("recipient.attributes", attributes))
        sealed = [sealer.seal_rows(field, values, rows) for field, values in fields]
        stored = _rows(RecipientRow, zip(repeat(message_id), indexes, *sealed))
        tokens: list[str | None]
        if plan.mode is TrackingMode.AGGREGATE:
            tokens = [None if p in objected else plan.shared_token for p in range(start, stop)]
        else:
            tracked = [p for p in range(start, stop) if p not in objected] if objected else range(start, stop)
            issued = iter(codec.issue_many([record_ids[p * size : (p + 1) * size] for p in tracked]))
            tokens = [None if p in objected else next(issued) for p in range(start, stop)]
        yield stored, emails, tokens


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    message: MessageRow
    recipients: list[RecipientRow]
    records: list[RecordRow]
    links: list[LinkRow]
    html_template: str
    tokens: list[str | None]  # in request order


def prepare_message(
    body: MessageIn,
    mode: TrackingMode,
    settings: TrackerSettings,
    sealer: Sealer,
    codec: TokenCodec,
    objected: set[int],
    created_by: str,
) -> PreparedMessage:
    """Every row of a message already parsed, in memory (the route streams the same steps instead).
    ``objected`` holds positions of recipients who objected."""
    census, packed = Census(sealer.keyring, settings.segment_attributes), PackedRecipients()
    for recipient in body.recipients:
        census.add(recipient)
        packed.add(recipient)
    plan = plan_message(body, census, objected, mode, settings, sealer, codec, created_by)
    recipients: list[RecipientRow] = []
    tokens: list[str | None] = []
    for rows, _, batch_tokens in recipient_batches(plan, census, packed, sealer, codec):
        recipients += rows
        tokens += batch_tokens
    records = [record for batch in record_batches(plan, census, sealer) for record in batch]
    return PreparedMessage(plan.message, recipients, records, plan.links, plan.html_template, tokens)
