"""The audit log: who did what to which subject, when, and how it went — append-only, hash-chained.

Each entry's hash is an HMAC over the previous entry's hash and the entry's own fields, under a key
derived from the tenant's index key. Editing, deleting or reordering a row breaks the chain from
there on, and without the tenant's keys the chain cannot be recomputed. Entries name subjects by
blind index only, and ``detail`` never holds personal data.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from politetenant.crypto import Keyring
from politetenant.tracker.storage.base import Store

COLUMNS = ("at", "token_id", "role", "action", "subject_index", "outcome", "detail", "key_version")
SYSTEM_ACTOR = ("cli", "operator")  # token id and role of actions taken from the command line


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
    """Append one entry; ``actor`` is (API token id, role), or SYSTEM_ACTOR for the command line."""
    version = keyring.current.version
    values = [int(time.time() * 1000), actor[0], actor[1], action.value, subject_index, outcome, detail, version]
    return await store.append_chained("audit", COLUMNS, values, lambda prev: entry_hash(keyring, version, prev, values))


@dataclass(frozen=True, slots=True)
class ChainCheck:
    entries: int
    first_broken_id: int | None

    @property
    def ok(self) -> bool:
        return self.first_broken_id is None


async def verify_chain(store: Store, keyring: Keyring) -> ChainCheck:
    """Walk the whole log in id order (streamed) and find the first entry whose hash does not hold."""
    sql = f"SELECT id, {', '.join(COLUMNS)}, prev_hash, hash FROM audit ORDER BY id"
    prev: bytes | None = None
    count = 0
    async for rows in store.stream(sql):
        for row in rows:
            count += 1
            entry_id, values = row[0], list(row[1 : 1 + len(COLUMNS)])
            values[4] = bytes(values[4]) if values[4] is not None else None
            stored_prev = bytes(row[-2]) if row[-2] is not None else None
            stored_hash = bytes(row[-1])
            try:
                expected = entry_hash(keyring, int(values[7]), prev, values)
            except ValueError:
                return ChainCheck(count, entry_id)
            if stored_prev != prev or not hmac.compare_digest(expected, stored_hash):
                return ChainCheck(count, entry_id)
            prev = stored_hash
    return ChainCheck(count, None)
