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

A message may name 100,000 recipients, so nothing here needs them all in memory at once.
``plan_envelope`` settles what the message decides on its own (id, rewritten HTML, sealed fields,
links) before any recipient is read, so its row can be stored first. A first pass over the validated
recipients keeps (``packing``) a few dozen bytes per recipient in a ``Census`` (blind indexes and segment class,
nothing readable) and packs their fields (``PackedRecipients``: their UTF-8, smaller than the JSON they
came from, which can then go); ``recipient_rows`` seals and builds each chunk's recipient rows as soon
as it is read, column by column (one call seals a chunk's e-mails), so the database stores them while
the next chunk is read. Once all are read, ``plan_records`` settles everything decided over the whole
message (objectors, generalised classes, record ids, storage order), ``record_batches`` yields the
records and ``token_batches`` each recipient's token in request order.
``prepare_message`` runs the same steps in memory for a message already parsed.
"""

from __future__ import annotations

import binascii
import dataclasses
import functools
import os
import secrets
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import TypeVar

from politetenant.crypto import Sealer, TokenCodec, link_row
from politetenant.crypto.tokens import RECORD_ID_BYTES
from politetenant.settings import TrackerSettings, TrackingMode
from politetenant.tracker.http.errors import PayloadTooLarge, Unprocessable
from politetenant.tracker.messages.api_models import MessageIn
from politetenant.tracker.messages.generalise import generalised_classes
from politetenant.tracker.messages.html_rewrite import HONEYPOT_LINK, TOKEN_PLACEHOLDER, rewrite_html
from politetenant.tracker.messages.notice import notice_for
from politetenant.tracker.messages.packing import (
    BATCH_ROWS,
    INDEX_BYTES,
    AttributeEncoder,
    Census,
    PackedRecipients,
)
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


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(10)


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
    encode = AttributeEncoder()
    return [encode(dict(settled[combination])) for combination in classes]


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the message settles on its own, before any recipient is read: its row, links and template.
    The row counts every recipient as tracked until the objection list has been read (``plan_records``
    gives the final count); it is stored first, so the recipients' rows can follow as they are read."""

    message: MessageRow
    links: list[LinkRow]
    html_template: str
    mode: TrackingMode


def plan_envelope(
    body: MessageIn, mode: TrackingMode, settings: TrackerSettings, sealer: Sealer, created_by: str, recipients: int
) -> Envelope:
    """Rewrite the HTML and seal the message's own fields."""
    message_id = new_message_id()
    rewritten = rewrite_html(
        body.html, settings.public_base_url, body.no_track_urls, notice=notice_for(settings, body.language)
    )
    readability = measure(text_of_html(body.html))
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
        recipients=recipients,
        tracked=recipients,
        word_count=readability.words,
        flesch=readability.flesch_reading_ease,
        link_count=len(rewritten.links),
        created_by=created_by,
    )
    return Envelope(message, links, rewritten.template, mode)


def plan_records(
    envelope: Envelope, census: Census, objected: set[int], settings: TrackerSettings, codec: TokenCodec
) -> Plan:
    """Settle the records (ids, attributes, order) once every recipient has been read."""
    mode = envelope.mode
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
    message = dataclasses.replace(envelope.message, recipients=census.count, tracked=tracked)
    return Plan(
        message, envelope.links, envelope.html_template, mode, frozenset(objected), record_ids, kept, order,
        shared_token,
    )  # fmt: skip


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
        pseudonyms = repeat(None) if indexes is None else [_slice(indexes, INDEX_BYTES, p) for p in positions]
        yield _rows(RecordRow, zip(ids, repeat(message_id), attributes, pseudonyms))


def _rows(kind: type[_Row], values: Iterator[tuple[object, ...]]) -> list[_Row]:
    """Named tuples of ``kind`` made in C (``kind(*v)`` is a Python call each, a tenth of a batch's cost)."""
    return list(map(tuple.__new__, repeat(kind), values))


def recipient_rows(
    message_id: str, census: Census, packed: PackedRecipients, number: int, sealer: Sealer
) -> list[RecipientRow]:
    """The rows of the ``number``-th chunk of ``packed`` recipients, in request order: they need the
    message's id and the census, not the plan, so they can be stored as soon as the chunk is read."""
    row_of = (message_id + "/").encode()  # recipient_row(message_id, index), encoded
    start = number * packed.chunk
    stop = min(start + packed.chunk, packed.count)
    if stop > census.count:
        raise ValueError("the census and the packed recipients come from different readings")
    block = bytes(census.indexes[start * INDEX_BYTES : stop * INDEX_BYTES])
    indexes = [block[at : at + INDEX_BYTES] for at in range(0, len(block), INDEX_BYTES)]  # census.index
    rows = [row_of + binascii.hexlify(index) for index in indexes]
    emails, names, attributes = packed.batch(number)
    fields = (("recipient.email", emails), ("recipient.name", names), ("recipient.attributes", attributes))
    sealed = [sealer.seal_rows(field, values, rows) for field, values in fields]
    return _rows(RecipientRow, zip(repeat(message_id), indexes, *sealed))


def token_batches(
    plan: Plan, census: Census, packed: PackedRecipients, codec: TokenCodec
) -> Iterator[tuple[list[bytes], list[str | None]]]:
    """Per chunk of ``packed`` recipients in request order: their e-mails (UTF-8) and tokens (None:
    objected)."""
    objected, record_ids, size = plan.objected, plan.record_ids, RECORD_ID_BYTES
    if packed.count != census.count:
        raise ValueError("the census and the packed recipients come from different readings")
    for number, start in enumerate(range(0, census.count, packed.chunk)):
        stop = min(start + packed.chunk, census.count)
        tokens: list[str | None]
        if plan.mode is TrackingMode.AGGREGATE:
            tokens = [None if p in objected else plan.shared_token for p in range(start, stop)]
        else:
            tracked = [p for p in range(start, stop) if p not in objected] if objected else range(start, stop)
            issued = iter(codec.issue_many([record_ids[p * size : (p + 1) * size] for p in tracked]))
            tokens = [None if p in objected else next(issued) for p in range(start, stop)]
        yield packed.emails(number), tokens


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
    envelope = plan_envelope(body, mode, settings, sealer, created_by, census.count)
    recipients = [
        row
        for number in range(packed.chunks)
        for row in recipient_rows(envelope.message.id, census, packed, number, sealer)
    ]
    plan = plan_records(envelope, census, objected, settings, codec)
    tokens = [token for _, batch in token_batches(plan, census, packed, codec) for token in batch]
    records = [record for batch in record_batches(plan, census, sealer) for record in batch]
    return PreparedMessage(plan.message, recipients, records, plan.links, plan.html_template, tokens)
