"""The audit log: who did what to which subject, when, and how it went — append-only, hash-chained.

Each entry's hash is an HMAC over the previous entry's hash and the entry's own fields, under a key
derived from the tenant's index key. Editing, deleting or reordering a row breaks the chain from
there on, and without the tenant's keys the chain cannot be recomputed. Entries name subjects by
blind index only, and ``detail`` never holds personal data.

The chain alone cannot show that its newest entries were deleted: what remains is still a valid
chain. So the head is also anchored outside the database: after each entry is stored, one line
``<entry id> <hash hex>`` is appended to the tenant's anchor file (``audit_anchor_path``), which the
operator collects; ``verify_chain`` then requires every anchored (id, hash) to be stored as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from politetenant.crypto import Keyring
from politetenant.tracker.storage.base import Store

COLUMNS = ("at", "token_id", "role", "action", "subject_index", "outcome", "detail", "key_version")
SYSTEM_ACTOR = ("cli", "operator")  # token id and role of actions taken from the command line

log = logging.getLogger(__name__)


class Action(StrEnum):
    REPORT_READ = "report.read"
    REPORT_EXPORT = "report.export"
    RECIPIENTS_READ = "recipients.read"
    SUBJECT_ACCESS = "subject.access"
    SUBJECT_EXPORT = "subject.export"
    SUBJECT_RECTIFY = "subject.rectify"
    SUBJECT_ERASE = "subject.erase"
    SUBJECT_OBJECT = "subject.object"
    TOKEN_CREATE = "token.create"
    TOKEN_REVOKE = "token.revoke"
    KEY_ROTATE = "key.rotate"
    RESEAL = "key.reseal"
    PURGE = "purge"


def _audit_key(keyring: Keyring, version: int) -> bytes:
    keys = keyring.get(version)
    if keys is None:
        raise ValueError(f"key version {version} is not loaded; cannot check audit entries it signed")
    return hmac.new(keys.index_key, b"politetenant/audit-chain", hashlib.sha256).digest()


def entry_hash(keyring: Keyring, version: int, prev: bytes | None, values: Sequence[Any]) -> bytes:
    """HMAC of (previous hash, this entry's fields in COLUMNS order)."""
    fields = [bytes(v).hex() if isinstance(v, bytes | memoryview) else v for v in values]
    canonical = json.dumps(fields, separators=(",", ":")).encode()
    return hmac.new(_audit_key(keyring, version), (prev or b"") + canonical, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class _Anchor:
    path: str
    on_failure: Callable[[], None] | None


_anchor: _Anchor | None = None  # one tracker process serves one tenant: its anchor is process-wide


def use_anchor(path: str | None, on_failure: Callable[[], None] | None = None) -> None:
    """Anchor every entry this process records from now on in ``path`` (None: stop anchoring).
    ``on_failure`` is called (e.g. a counter's ``inc``) each time a line could not be written."""
    global _anchor
    _anchor = None if path is None else _Anchor(path, on_failure)


def anchor_line(entry_id: int, digest: bytes) -> bytes:
    return f"{entry_id} {digest.hex()}\n".encode()


def append_anchor(path: str, entry_id: int, digest: bytes) -> None:
    """Append one anchor line. O_APPEND and a single write() per line keep lines of concurrent worker
    processes whole. No fsync: the anchor guards against rows deleted in the database, not against a
    crash of this host; a line lost in a crash only leaves its entry unanchored (verify says so), while
    an fsync per entry would put a disk flush on every audited API call."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        line = anchor_line(entry_id, digest)
        if os.write(fd, line) != len(line):
            raise OSError(f"short write to {path}")
    finally:
        os.close(fd)


def _anchor_entry(anchor: _Anchor, entry_id: int, digest: bytes) -> None:
    """The entry is stored whatever happens here: a full disk must not fail the request it records."""
    try:
        append_anchor(anchor.path, entry_id, digest)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        log.warning("audit anchor %s: entry id %d stored but not anchored: %s", anchor.path, entry_id, reason)
        if anchor.on_failure is not None:
            anchor.on_failure()


async def record(
    store: Store,
    keyring: Keyring,
    actor: tuple[str, str],
    action: Action,
    *,
    subject_index: bytes | None = None,
    outcome: str = "ok",
    detail: str = "",
) -> int:
    """Append one entry, and anchor it (see ``use_anchor``); ``actor`` is (API token id, role), or
    SYSTEM_ACTOR for the command line."""
    version = keyring.current.version
    values = [int(time.time() * 1000), actor[0], actor[1], action.value, subject_index, outcome, detail, version]
    linked: list[bytes] = []

    def link(prev: bytes | None) -> bytes:
        linked.append(entry_hash(keyring, version, prev, values))
        return linked[-1]  # the last call is the one stored, should a store ever retry

    entry_id = await store.append_chained("audit", COLUMNS, values, link)
    anchor = _anchor
    if anchor is not None:
        _anchor_entry(anchor, entry_id, linked[-1])
    return entry_id


class AnchorError(ValueError):
    """The anchor file cannot be read as an anchor: names the file and line, never its contents."""


_LINE = re.compile(rb"([0-9]{1,18}) ([0-9a-f]{64})\n")


@dataclass(frozen=True, slots=True)
class Anchored:
    lines: int
    hashes: dict[int, bytes]  # entry id -> anchored hash
    conflicting: frozenset[int]  # ids anchored twice with different hashes: at most one can be true


def parse_anchor(path: str) -> Anchored:
    """Every line of the anchor file; a missing file is an anchor with no lines yet."""
    hashes: dict[int, bytes] = {}
    conflicting: set[int] = set()
    count = 0
    try:
        with open(path, "rb") as lines:
            for count, line in enumerate(lines, start=1):
                match = _LINE.fullmatch(line)
                if match is None:
                    raise AnchorError(
                        f"audit anchor {path} line {count}: malformed; every line is '<entry id> <64 hex digits>'"
                    )
                entry_id, digest = int(match[1]), bytes.fromhex(match[2].decode())
                if hashes.setdefault(entry_id, digest) != digest:
                    conflicting.add(entry_id)
    except FileNotFoundError:
        return Anchored(0, {}, frozenset())
    except OSError as exc:
        raise AnchorError(f"audit anchor {path}: cannot be read: {exc.strerror or exc.__class__.__name__}") from None
    return Anchored(count, hashes, frozenset(conflicting))


@dataclass(frozen=True, slots=True)
class AnchorCheck:
    """The anchor against the stored entries. ``truncated_after`` is the newest stored id (0: none)
    when the newest anchored entry is gone, and ``truncated`` how many anchored entries at least are
    missing past it."""

    configured: bool
    lines: int = 0
    newest_anchored_id: int | None = None
    truncated_after: int | None = None
    truncated: int = 0
    first_missing_id: int | None = None  # an anchored id gone from before the newest stored entry
    first_mismatch_id: int | None = None  # an anchored id stored with another hash: rewritten
    unanchored: int = 0  # stored entries newer than the newest anchored one (a failed write, or no anchor yet)

    @property
    def ok(self) -> bool:
        return self.truncated_after is None and self.first_missing_id is None and self.first_mismatch_id is None


NO_ANCHOR = AnchorCheck(configured=False)


def compare_anchor(
    anchored: Anchored, stored: dict[int, bytes], newest_stored: int | None, unanchored: int = 0
) -> AnchorCheck:
    """Pure: ``stored`` maps the anchored ids found in the database to their stored hashes;
    ``newest_stored`` is the newest id in the database (None: empty)."""
    newest = max(anchored.hashes, default=None)
    mismatched = [
        i for i, h in stored.items() if i in anchored.conflicting or not hmac.compare_digest(h, anchored.hashes[i])
    ]
    missing = sorted(i for i in anchored.hashes if i not in stored)
    beyond = [i for i in missing if newest_stored is None or i > newest_stored]
    within = [i for i in missing if newest_stored is not None and i <= newest_stored]
    return AnchorCheck(
        configured=True,
        lines=anchored.lines,
        newest_anchored_id=newest,
        truncated_after=(newest_stored or 0) if beyond else None,
        truncated=len(beyond),
        first_missing_id=within[0] if within else None,
        first_mismatch_id=min(mismatched, default=None),
        unanchored=unanchored,
    )


@dataclass(frozen=True, slots=True)
class ChainCheck:
    entries: int
    first_broken_id: int | None
    broken_position: int | None = None  # 1-based place of the first broken entry in id order
    anchor: AnchorCheck = field(default=NO_ANCHOR)

    @property
    def chain_ok(self) -> bool:
        return self.first_broken_id is None

    @property
    def ok(self) -> bool:
        return self.first_broken_id is None and self.anchor.ok


async def verify_chain(store: Store, keyring: Keyring, anchor_path: str | None = None) -> ChainCheck:
    """Walk the whole log in id order (streamed), find the first entry whose hash does not hold, and
    hold the anchor file (if any) against what is stored. AnchorError: the anchor is unreadable."""
    anchored = await asyncio.to_thread(parse_anchor, anchor_path) if anchor_path is not None else None
    sql = f"SELECT id, {', '.join(COLUMNS)}, prev_hash, hash FROM audit ORDER BY id"
    prev: bytes | None = None
    count = 0
    broken: tuple[int, int] | None = None  # (id, position)
    newest: int | None = None
    stored: dict[int, bytes] = {}  # anchored ids only
    newest_anchored = -1 if anchored is None else max(anchored.hashes, default=0)
    unanchored = 0
    async for rows in store.stream(sql):
        for row in rows:
            count += 1
            entry_id, stored_hash = int(row[0]), bytes(row[-1])
            newest = entry_id
            if anchored is not None and entry_id in anchored.hashes:
                stored[entry_id] = stored_hash
            unanchored += entry_id > newest_anchored
            if broken is None and not _holds(keyring, prev, row):
                broken = (entry_id, count)
            prev = stored_hash
    anchor = NO_ANCHOR if anchored is None else compare_anchor(anchored, stored, newest, unanchored)
    return ChainCheck(count, broken[0] if broken else None, broken[1] if broken else None, anchor)


def _holds(keyring: Keyring, prev: bytes | None, row: Sequence[Any]) -> bool:
    values = list(row[1 : 1 + len(COLUMNS)])
    values[4] = bytes(values[4]) if values[4] is not None else None
    stored_prev = bytes(row[-2]) if row[-2] is not None else None
    try:
        expected = entry_hash(keyring, int(values[7]), prev, values)
    except ValueError:
        return False
    return stored_prev == prev and hmac.compare_digest(expected, bytes(row[-1]))
