"""Rights of the individual: access, export, rectify, erase, object — found by blind index only.

A person is looked up under the blind index of their e-mail for every loaded key version, so rows
written before a key rotation are found too; the plaintext address is never a query parameter.
What can be linked to them depends on each message's tracking mode:
- individual: recipient rows, and records carrying their keyed pseudonym (with those records' events);
- anonymous: recipient rows only; records hold no link to anyone, by design, and stay as they are;
- aggregate: recipient rows only; the single per-message record holds counts, never people.
Building the documents is pure (``build_access``); the async functions read and write the Store.
Sealed values are opened and written bound to their row (identities in ``crypto.sealing``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from politetenant.crypto import Keyring, Sealer, blind_index, blind_indexes, link_row, recipient_row
from politetenant.settings import TrackingMode
from politetenant.tracker.storage.base import Store, marks
from politetenant.tracker.storage.erased import ErasedRecords, remember_erased

NOT_FOUND = "No data is held for this e-mail address: it is not a recipient of any stored message."
INTERACTIONS_NOTE = {
    TrackingMode.INDIVIDUAL: "Sent in individual mode: these are the interactions recorded for this person.",
    TrackingMode.ANONYMOUS: (
        "Sent in anonymous mode: interaction data is stored with no link to any recipient, so it is not linkable"
        " to this person."
    ),
    TrackingMode.AGGREGATE: (
        "Sent in aggregate mode: only message-wide counts exist and nothing is recorded per person, so"
        " interaction data is not linkable to this person."
    ),
}
NOT_TRACKED = "Sent in individual mode, but this person was not tracked for this message (they had objected)."
KEPT_COUNTS = (
    "Aggregate counts already published are kept: each message keeps its recipient count, and reports already"
    " produced are not changed."
)
OBJECTION_KEPT = "The objection on file is kept (as a blind index, never the address) so the person stays untracked."
OBJECTION_EFFECT = (
    "Future messages to this person carry no beacon and no rewritten links: registering a message returns a null"
    " token for them and the untracked HTML (html_untracked) to send them instead."
)
OBJECTION_PAST = "Messages already sent are unchanged; use erase to remove what is held about this person."
OBJECTION_HELD = "The objection is held as a blind index of the e-mail address, never the address itself."

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KINDS: dict[int, Literal["open", "read", "click"]] = {1: "open", 2: "read", 3: "click"}


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)  # exact, unlike float seconds


def encode_attributes(attributes: dict[str, str]) -> bytes | None:
    """Canonical JSON, as registration stores it; an empty map is stored as nothing."""
    return json.dumps(attributes, sort_keys=True, separators=(",", ":")).encode() if attributes else None


@dataclass(frozen=True, slots=True)
class Subject:
    """A person as the database knows them: blind indexes, never the address."""

    current_index: bytes  # names them in the audit log and the objection list
    indexes: tuple[bytes, ...]  # every loaded key version: look-ups find rows from before a rotation

    @classmethod
    def of(cls, keyring: Keyring, email: str) -> Subject:
        return cls(blind_index(keyring, email), tuple(blind_indexes(keyring, email)))


# -- the documents a privacy officer receives ---------------------------------------------------------


class HeldData(BaseModel):
    email: str
    name: str | None
    attributes: dict[str, str]


class Interaction(BaseModel):
    kind: Literal["open", "read", "click"]
    at: datetime
    link: int | None
    url: str | None
    country: str | None
    region: str | None
    city: str | None
    os: str
    device: str
    browser: str
    suspected_bot: bool
    read_ms: int | None


class MessageAccess(BaseModel):
    id: str
    sent_at: datetime
    subject: str
    from_name: str
    from_email: str
    list_name: str
    mode: TrackingMode
    held: list[HeldData]
    interactions: list[Interaction] | None  # None: nothing is linkable to the person (mode)
    interactions_note: str


class ObjectionStatus(BaseModel):
    objected: bool
    since: datetime | None


class AccessDocument(BaseModel):
    found: bool
    generated_at: datetime
    messages: list[MessageAccess]
    objection: ObjectionStatus
    notes: list[str]


class Counts(BaseModel):
    recipient_rows: int
    messages: int
    records: int
    events: int = 0


class EraseResult(BaseModel):
    found: bool
    erased: Counts
    notes: list[str]


class RectifyResult(BaseModel):
    found: bool
    changed: list[Literal["name", "attributes"]]
    updated: Counts
    notes: list[str]


class ObjectResult(BaseModel):
    objected: bool
    already_objected: bool
    since: datetime
    notes: list[str]


# -- rows read from the Store ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldRow:
    """One recipients row of the person, with the message it belongs to (still sealed)."""

    recipient_id: int
    message_id: str
    email_index: bytes  # with message_id, the row identity its sealed fields are bound to
    email: bytes
    name: bytes | None
    attributes: bytes | None
    sent_at: int
    mode: str
    subject: bytes
    from_name: bytes
    from_email: bytes
    list_name: bytes


def _b(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


async def held_rows(store: Store, subject: Subject) -> list[HeldRow]:
    sql = (
        "SELECT r.id, r.message_id, r.email_index, r.email, r.name, r.attributes, m.created_at, m.mode, m.subject,"
        " m.from_name, m.from_email, m.list_name FROM recipients r JOIN messages m ON m.id = r.message_id"
        f" WHERE r.email_index IN ({marks(len(subject.indexes))}) ORDER BY m.created_at, r.message_id, r.id"
    )
    return [
        HeldRow(
            int(r[0]), r[1], bytes(r[2]), bytes(r[3]), _b(r[4]), _b(r[5]), int(r[6]), r[7], *(bytes(v) for v in r[8:12])
        )
        for r in await store.fetch(sql, *subject.indexes)
    ]


async def record_ids(store: Store, subject: Subject) -> list[tuple[bytes, str]]:
    """(record id, message id) of the person's individual-mode records."""
    sql = f"SELECT id, message_id FROM records WHERE subject_index IN ({marks(len(subject.indexes))})"
    return [(bytes(r[0]), r[1]) for r in await store.fetch(sql, *subject.indexes)]


async def interaction_rows(store: Store, subject: Subject) -> list[tuple[Any, ...]]:
    """Events of the person's individual-mode records, as rows in the order ``_interaction`` reads."""
    sql = (
        "SELECT r.message_id, e.kind, e.link_no, e.occurred_at, e.country, e.region, e.city, e.os, e.device,"
        " e.browser, e.bot, e.read_ms, l.url FROM records r JOIN events e ON e.record_id = r.id"
        " LEFT JOIN links l ON l.message_id = r.message_id AND l.link_no = e.link_no"
        f" WHERE r.subject_index IN ({marks(len(subject.indexes))}) ORDER BY e.occurred_at, e.event_id"
    )
    return await store.fetch(sql, *subject.indexes)


async def objected_since(store: Store, subject: Subject) -> int | None:
    sql = f"SELECT MIN(created_at) FROM objections WHERE subject_index IN ({marks(len(subject.indexes))})"
    rows = await store.fetch(sql, *subject.indexes)
    return None if not rows or rows[0][0] is None else int(rows[0][0])


# -- access and export ------------------------------------------------------------------------------------


def _held(sealer: Sealer, row: HeldRow) -> HeldData:
    rid = recipient_row(row.message_id, row.email_index)
    attributes = (
        {} if row.attributes is None else json.loads(sealer.open("recipient.attributes", row.attributes, row=rid))
    )
    return HeldData(
        email=sealer.open_text("recipient.email", row.email, row=rid),
        name=sealer.open_optional("recipient.name", row.name, row=rid),
        attributes=attributes,
    )


def _interaction(sealer: Sealer, row: tuple[Any, ...]) -> Interaction:
    message_id, kind, link_no, occurred_at, country, region, city, os, device, browser, bot, read_ms, url = row
    return Interaction(
        kind=_KINDS.get(int(kind), "open"),
        at=from_ms(int(occurred_at)),
        link=link_no,
        url=None if url is None else sealer.open_text("link.url", bytes(url), row=link_row(message_id, int(link_no))),
        country=country,
        region=sealer.open_optional("event.region", _b(region)),
        city=sealer.open_optional("event.city", _b(city)),
        os=os,
        device=device,
        browser=browser,
        suspected_bot=bool(bot),
        read_ms=read_ms,
    )


def build_access(
    sealer: Sealer,
    held: Sequence[HeldRow],
    records: Sequence[tuple[bytes, str]],
    interactions: Sequence[tuple[Any, ...]],
    objected_at: int | None,
    now_ms: int,
) -> AccessDocument:
    """The access document from the person's rows: one entry per message, interactions as the mode allows."""
    by_message: dict[str, list[HeldRow]] = defaultdict(list)
    for row in held:
        by_message[row.message_id].append(row)
    tracked = {message_id for _, message_id in records}
    events: dict[str, list[Interaction]] = defaultdict(list)
    for event in interactions:
        events[event[0]].append(_interaction(sealer, event))

    messages: list[MessageAccess] = []
    for message_id, rows in by_message.items():
        first = rows[0]
        mode = TrackingMode(first.mode)
        held_data: list[HeldData] = []
        for row in rows:  # a person listed twice in one message: both rows, unless identical
            data = _held(sealer, row)
            if data not in held_data:
                held_data.append(data)
        linkable = mode is TrackingMode.INDIVIDUAL
        note = INTERACTIONS_NOTE[mode] if not linkable or message_id in tracked else NOT_TRACKED
        messages.append(
            MessageAccess(
                id=message_id,
                sent_at=from_ms(first.sent_at),
                subject=sealer.open_text("message.subject", first.subject, row=message_id),
                from_name=sealer.open_text("message.from_name", first.from_name, row=message_id),
                from_email=sealer.open_text("message.from_email", first.from_email, row=message_id),
                list_name=sealer.open_text("message.list_name", first.list_name, row=message_id),
                mode=mode,
                held=held_data,
                interactions=events.get(message_id, []) if linkable else None,
                interactions_note=note,
            )
        )
    objection = ObjectionStatus(
        objected=objected_at is not None, since=None if objected_at is None else from_ms(objected_at)
    )
    notes = [] if messages else [NOT_FOUND]
    if objection.objected:
        notes.append(OBJECTION_EFFECT)
    return AccessDocument(
        found=bool(messages), generated_at=from_ms(now_ms), messages=messages, objection=objection, notes=notes
    )


async def access(store: Store, sealer: Sealer, subject: Subject, now_ms: int) -> AccessDocument:
    held = await held_rows(store, subject)
    records = await record_ids(store, subject)
    interactions = await interaction_rows(store, subject) if records else []
    objected_at = await objected_since(store, subject)
    return build_access(sealer, held, records, interactions, objected_at, now_ms)


# -- erase, rectify, object ----------------------------------------------------------------------------------


def _modes(held: Sequence[HeldRow]) -> dict[TrackingMode, int]:
    """How many distinct messages of each mode the person was sent."""
    seen: dict[str, TrackingMode] = {row.message_id: TrackingMode(row.mode) for row in held}
    counts: dict[TrackingMode, int] = defaultdict(int)
    for mode in seen.values():
        counts[mode] += 1
    return counts


def erase_notes(modes: dict[TrackingMode, int], found: bool, objected: bool) -> list[str]:
    notes = [] if found else ["No data is held for this e-mail address; there was nothing to erase."]
    if modes.get(TrackingMode.INDIVIDUAL):
        notes.append(
            f"Individual mode ({modes[TrackingMode.INDIVIDUAL]} message(s)): the person's tracking records and"
            " their interactions were removed; later reports of those messages no longer count them. The"
            " e-mails already sent still open and their links still work, and nothing more is recorded."
        )
    if modes.get(TrackingMode.ANONYMOUS):
        notes.append(
            f"Anonymous mode ({modes[TrackingMode.ANONYMOUS]} message(s)): interaction records carry no link to"
            " any recipient and cannot be found, by design; they stay, not linkable to this person."
        )
    if modes.get(TrackingMode.AGGREGATE):
        notes.append(
            f"Aggregate mode ({modes[TrackingMode.AGGREGATE]} message(s)): nothing was recorded per person; the"
            " message-wide counts stay."
        )
    if found:
        notes.append(KEPT_COUNTS)
    if objected:
        notes.append(OBJECTION_KEPT)
    return notes


async def erase(store: Store, subject: Subject, erased: ErasedRecords) -> EraseResult:
    """Remove the person's recipient rows and individual-mode records with their events. Idempotent.

    Each step finds its rows by blind index on its own, so a retry after a failure part-way finishes
    the job; events go before their records because they are found through them. The records' ids
    are kept first (``storage.erased``): opens of the e-mails already sent then store nothing.
    """
    held = await held_rows(store, subject)
    await remember_erased(store, erased, await record_ids(store, subject))
    indexes = marks(len(subject.indexes))
    events = await store.execute(
        f"DELETE FROM events WHERE record_id IN (SELECT id FROM records WHERE subject_index IN ({indexes}))",
        *subject.indexes,
    )
    records = await store.execute(f"DELETE FROM records WHERE subject_index IN ({indexes})", *subject.indexes)
    rows = await store.execute(f"DELETE FROM recipients WHERE email_index IN ({indexes})", *subject.indexes)
    objected = await objected_since(store, subject) is not None
    found = bool(held or records or rows)
    counts = Counts(recipient_rows=rows, messages=len({r.message_id for r in held}), records=records, events=events)
    return EraseResult(found=found, erased=counts, notes=erase_notes(_modes(held), found, objected))


_UNSET: Any = object()


async def rectify(
    store: Store, sealer: Sealer, subject: Subject, *, name: str | None = _UNSET, attributes: dict[str, str] = _UNSET
) -> RectifyResult:
    """Rewrite name and/or attributes on every recipients row (sealed under the current key) and on the
    person's individual-mode records; pass only what changes. Anonymous records are not linkable."""
    changed: list[Literal["name", "attributes"]] = []  # also the recipients columns written
    if name is not _UNSET:
        changed.append("name")
    if attributes is not _UNSET:
        changed.append("attributes")
    if not changed:
        raise ValueError("rectify needs a name or attributes to change")
    encoded = None if attributes is _UNSET else encode_attributes(attributes)

    held = await held_rows(store, subject)
    updates: list[list[Any]] = []
    for row in held:  # each row sealed on its own: a fresh nonce, never a shared ciphertext
        rid = recipient_row(row.message_id, row.email_index)  # unchanged: rectify never rewrites the e-mail
        values: list[Any] = []
        if "name" in changed:
            values.append(sealer.seal_optional("recipient.name", name, row=rid))
        if "attributes" in changed:
            values.append(None if encoded is None else sealer.seal("recipient.attributes", encoded, row=rid))
        updates.append([*values, row.recipient_id])
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changed, start=1))
    await store.executemany(f"UPDATE recipients SET {assignments} WHERE id = ${len(changed) + 1}", updates)

    records: list[tuple[bytes, str]] = []
    if "attributes" in changed:
        records = await record_ids(store, subject)
        sealed = [
            (None if encoded is None else sealer.seal("record.attributes", encoded, row=record_id), record_id)
            for record_id, _ in records
        ]
        await store.executemany("UPDATE records SET attributes = $1 WHERE id = $2", sealed)

    modes = _modes(held)
    notes = [] if held else ["No data is held for this e-mail address; nothing was changed."]
    if records:
        notes.append("Individual mode: the person's tracking records now carry the corrected attributes.")
    if "attributes" in changed and modes.get(TrackingMode.ANONYMOUS):
        notes.append(
            f"Anonymous mode ({modes[TrackingMode.ANONYMOUS]} message(s)): interaction records are not linkable to"
            " the person and keep the attributes they were sent with."
        )
    counts = Counts(recipient_rows=len(held), messages=len({r.message_id for r in held}), records=len(records))
    return RectifyResult(found=bool(held), changed=changed, updated=counts, notes=notes)


async def object_to_tracking(store: Store, subject: Subject, now_ms: int) -> ObjectResult:
    """Put the person on the objection list under the current key version. Idempotent."""
    since = await objected_since(store, subject)
    if subject.current_index not in await store.objected([subject.current_index]):
        # Also after a rotation: an objection under an old version only would lapse with that version.
        await store.add_objection(subject.current_index, now_ms if since is None else since)
    return ObjectResult(
        objected=True,
        already_objected=since is not None,
        since=from_ms(now_ms if since is None else since),
        notes=[OBJECTION_EFFECT, OBJECTION_PAST, OBJECTION_HELD],
    )


async def message_count(store: Store, subject: Subject) -> int:
    """Distinct messages the person was sent (for the audit entry's detail)."""
    sql = f"SELECT COUNT(DISTINCT message_id) FROM recipients WHERE email_index IN ({marks(len(subject.indexes))})"
    rows = await store.fetch(sql, *subject.indexes)
    return int(rows[0][0]) if rows else 0
