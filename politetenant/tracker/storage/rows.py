"""Rows as they cross the storage boundary: sealed bytes in, sealed bytes out.

Storage never sees a plaintext personal field; sealing and opening happen above it. Events are plain
tuples (a NamedTuple) because they are created on the hot path, one per beacon hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple


class EventKind(IntEnum):
    OPEN = 1
    READ = 2
    CLICK = 3


class Event(NamedTuple):
    """One judged interaction; the IP and user agent were dropped before this was built."""

    event_id: bytes  # 16 bytes, unique: makes spool replay idempotent
    record_id: bytes
    kind: int
    link_no: int | None
    occurred_at: int  # epoch milliseconds
    country: str | None
    region: bytes | None  # sealed: a city-state's region names its city
    city: bytes | None  # sealed
    os: str
    device: str
    browser: str
    bot: int
    read_ms: int | None


EVENT_COLUMNS = Event._fields


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: str
    created_at: int
    mode: str
    subject: bytes
    from_name: bytes
    from_email: bytes
    list_name: bytes
    recipients: int
    tracked: int
    word_count: int
    flesch: float | None
    link_count: int
    created_by: str


class RecipientRow(NamedTuple):
    message_id: str
    email_index: bytes
    email: bytes
    name: bytes | None
    attributes: bytes | None


class RecordRow(NamedTuple):
    id: bytes
    message_id: str
    attributes: bytes | None  # sealed segment attributes (anonymous/individual)
    subject_index: bytes | None  # keyed pseudonym, individual mode only


class LinkRow(NamedTuple):
    message_id: str
    link_no: int
    url: bytes | None  # None: the honeypot
    text: bytes | None


@dataclass(frozen=True, slots=True)
class ClickTarget:
    message_id: str
    url: bytes | None


@dataclass(frozen=True, slots=True)
class ApiTokenRow:
    id: str
    role: str
    secret_hash: bytes
    created_at: int


@dataclass(frozen=True, slots=True)
class BootstrapImport:
    """What importing a role's bootstrap token did: stored it (revoking the role's previous one), or
    nothing, because it is in force already or was revoked (a stale copy of a rotated Secret)."""

    outcome: str  # "imported" | "unchanged" | "revoked" | "conflict"
    revoked_ids: tuple[str, ...] = ()
