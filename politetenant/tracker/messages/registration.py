"""Registering a message: from the sender's request to the rows stored and the tokens returned.

``prepare_message`` is pure apart from randomness: it decides the tracking mode, rewrites the HTML,
seals every personal field and builds one tracking record per recipient as the mode dictates:
- individual: a record per recipient, carrying a keyed pseudonym (blind index) of the recipient;
- anonymous: a record per recipient with its segment attributes, stored in shuffled order and with
  no column pointing back at the recipient row;
- in both, a record keeps only the tenant's segment attributes, generalised so that each record's
  combination is shared by at least ``min_segment_size`` tracked recipients (``generalise``);
- aggregate: one record for the whole message; every recipient gets the same token.
Recipients on the objection list get no record and a ``null`` token.
Every sealed value is bound to its row (the identities are listed in ``crypto.sealing``), so a value
copied into another row of its column does not open.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from politetenant.crypto import Sealer, TokenCodec, blind_index, link_row, new_record_id, recipient_row
from politetenant.settings import TrackerSettings, TrackingMode
from politetenant.tracker.http.errors import PayloadTooLarge, Unprocessable
from politetenant.tracker.messages.api_models import MessageIn
from politetenant.tracker.messages.generalise import record_attributes
from politetenant.tracker.messages.html_rewrite import HONEYPOT_LINK, TOKEN_PLACEHOLDER, rewrite_html
from politetenant.tracker.messages.notice import notice_for
from politetenant.tracker.messages.readability import measure, text_of_html
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


def check_limits(body: MessageIn, settings: TrackerSettings) -> None:
    html_bytes = len(body.html.encode("utf-8"))
    if html_bytes > settings.max_html_bytes:
        raise PayloadTooLarge(f"html: {html_bytes} bytes; this tenant accepts at most {settings.max_html_bytes}")
    if TOKEN_PLACEHOLDER in body.html:
        # Substitution would hand each recipient's token to whatever URL the sender put it in.
        raise Unprocessable(f"html: must not contain {TOKEN_PLACEHOLDER}; the tracker inserts it", code="invalid_field")
    if len(body.recipients) > settings.max_recipients:
        raise Unprocessable(
            f"recipients: {len(body.recipients)} given; at most {settings.max_recipients} per message",
            code="too_many_recipients",
        )


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    message: MessageRow
    recipients: list[RecipientRow]
    records: list[RecordRow]
    links: list[LinkRow]
    html_template: str
    tokens: list[str | None]  # in request order


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(10)


class _AttributeEncoder:
    """Canonical JSON of attribute maps, memoised: 100,000 recipients share a few departments."""

    def __init__(self) -> None:
        self._cache: dict[tuple[tuple[str, str], ...], bytes] = {}
        self._encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode

    def __call__(self, attributes: dict[str, str]) -> bytes | None:
        if not attributes:
            return None
        key = tuple(sorted(attributes.items()))
        encoded = self._cache.get(key)
        if encoded is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            encoded = self._cache[key] = self._encode(attributes).encode()
        return encoded


def prepare_message(
    body: MessageIn,
    mode: TrackingMode,
    settings: TrackerSettings,
    sealer: Sealer,
    codec: TokenCodec,
    email_indexes: Sequence[bytes],
    objected: set[int],
    created_by: str,
) -> PreparedMessage:
    """Build every row of a message. ``objected`` holds positions of recipients who objected."""
    message_id = new_message_id()
    rewritten = rewrite_html(
        body.html, settings.public_base_url, body.no_track_urls, notice=notice_for(settings, body.language)
    )
    readability = measure(text_of_html(body.html))
    keyring = sealer.keyring

    recipients: list[RecipientRow] = []
    records: list[RecordRow] = []
    tokens: list[str | None] = []
    shared_token: str | None = None
    if mode is TrackingMode.AGGREGATE and len(objected) < len(body.recipients):
        record_id = new_record_id()
        records.append(RecordRow(record_id, message_id, None, None))
        shared_token = codec.issue(record_id)

    encode_attributes = _AttributeEncoder()
    # Records keep only segment attributes, generalised to classes of min_segment_size (k-anonymity at
    # rest); the recipient row keeps the whole map: it is the person's own data, for subject access.
    kept = (
        []
        if mode is TrackingMode.AGGREGATE
        else record_attributes(
            [r.attributes for r in body.recipients], objected, settings.segment_attributes, settings.min_segment_size
        )
    )
    for position, recipient in enumerate(body.recipients):
        attributes = encode_attributes(recipient.attributes)
        email_index = email_indexes[position]
        row = recipient_row(message_id, email_index)
        recipients.append(
            RecipientRow(
                message_id,
                email_index,
                sealer.seal_text("recipient.email", recipient.email, row=row),
                sealer.seal_optional("recipient.name", recipient.name, row=row),
                None if attributes is None else sealer.seal("recipient.attributes", attributes, row=row),
            )
        )
        if position in objected:
            tokens.append(None)
        elif mode is TrackingMode.AGGREGATE:
            tokens.append(shared_token)
        else:
            record_id = new_record_id()
            pseudonym = blind_index(keyring, recipient.email) if mode is TrackingMode.INDIVIDUAL else None
            kept_map = encode_attributes(kept[position] or {})
            attrs = None if kept_map is None else sealer.seal("record.attributes", kept_map, row=record_id)
            records.append(RecordRow(record_id, message_id, attrs, pseudonym))
            tokens.append(codec.issue(record_id))

    if mode is TrackingMode.ANONYMOUS:
        # Row order must not pair records with recipients.
        random.SystemRandom().shuffle(records)

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
        recipients=len(body.recipients),
        tracked=len(body.recipients) - len(objected),
        word_count=readability.words,
        flesch=readability.flesch_reading_ease,
        link_count=len(rewritten.links),
        created_by=created_by,
    )
    return PreparedMessage(message, recipients, records, links, rewritten.template, tokens)
