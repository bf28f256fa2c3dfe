"""``GET /api/v1/audit``: the audit log, read-only, for the privacy officer; ``GET /api/v1/audit/verify``
and ``audit verify`` (CLI) for its integrity.

Entries are listed in the order they were chained (ascending id), filtered by time and action, a page
at a time with an opaque cursor. There is no route that writes, edits or deletes an entry: other
methods on the path answer 405, and tampering in the database shows up in the verification, which
holds the hash chain and, when the tenant has one, the anchor file against what is stored.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from politetenant.crypto import Keyring
from politetenant.tracker.http.auth import Role
from politetenant.tracker.http.errors import BadRequest
from politetenant.tracker.http.openapi import Operation
from politetenant.tracker.http.state import STATE, TrackerState
from politetenant.tracker.privacy import audit
from politetenant.tracker.storage.base import Store

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_PARAMETERS = ("since", "until", "action", "limit", "cursor")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_MS_MAX = 253_402_300_800_000  # 10000-01-01: beyond it a number is not a time we could hold


class AuditEntry(BaseModel):
    id: int
    at: datetime
    at_ms: int
    token_id: str
    role: str
    action: str
    subject_index: str | None  # hex of the blind index (key version in key_version); never an address
    outcome: str
    detail: str
    key_version: int
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_cursor: str | None  # pass as ?cursor= for the next page; null: this was the last one


class AnchorVerdict(BaseModel):
    configured: bool  # false: deletion of the newest entries cannot be detected
    lines: int
    ok: bool
    truncated_after: int | None  # the newest stored entry id when anchored entries past it are gone
    problem: str | None = None  # why the anchor file could not be read, if it could not


class AuditVerdict(BaseModel):
    entries: int
    ok: bool
    first_broken_id: int | None
    anchor: AnchorVerdict
    message: str  # the same verdict ``polite-tracker audit verify`` prints


def _query_parameter(name: str, description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description, **extra}


_TIME_SCHEMA = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": _EPOCH_MS_MAX - 1},
                          {"type": "string", "format": "date-time"}]}  # fmt: skip
OPERATIONS = [
    Operation("GET", "/api/v1/audit", "The audit log: who did what to which subject (blind index), when, and how"
              " it went", roles=("privacy",), response=AuditPage, errors=(400,), parameters=(
                  _query_parameter("since", "Entries at or after this time: ISO-8601 or epoch milliseconds.",
                                   _TIME_SCHEMA),
                  _query_parameter("until", "Entries before this time: ISO-8601 or epoch milliseconds.",
                                   _TIME_SCHEMA),
                  _query_parameter("action", "Only these actions (comma separated).",
                                   {"type": "array", "minItems": 1,
                                    "items": {"type": "string", "enum": [a.value for a in audit.Action]}},
                                   style="form", explode=False),
                  _query_parameter("limit", f"Entries per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
                                   {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
                  _query_parameter("cursor", "The next_cursor of the previous page.",
                                   {"type": "string", "pattern": "^[0-9]{1,18}$"}),
              )),
    Operation("GET", "/api/v1/audit/verify", "Verify the audit log: its hash chain, and against the tenant's anchor"
              " file that deletion of its newest entries would show in", roles=("privacy",), response=AuditVerdict),
]  # fmt: skip


def parse_time(name: str, value: str) -> int:
    """Epoch milliseconds from ISO-8601 (no zone: UTC) or from epoch milliseconds."""
    text = value.strip().upper()  # RFC 3339 allows a lower-case 't' and 'z'
    if text.isascii() and text.isdigit():
        ms = int(text)
        if ms < _EPOCH_MS_MAX:
            return ms
        raise BadRequest(f"{name}: epoch milliseconds out of range", code="invalid_parameter")
    if "T" in text:  # an unescaped '+' of a zone offset arrives as a space
        text = re.sub(r" (\d{2}(:?\d{2})?)$", r"+\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"{name}: give an ISO-8601 time such as 2025-03-01T09:00:00Z, or epoch milliseconds",
            code="invalid_parameter",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)  # exact: float seconds would round 0.123 to 122


def _parse_int(name: str, value: str, low: int, high: int) -> int:
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise BadRequest(f"{name}: give a whole number from {low} to {high}", code="invalid_parameter")
    return int(value)


def parse_actions(values: list[str]) -> list[str]:
    known = {a.value for a in audit.Action}
    actions = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if not actions or any(a not in known for a in actions):
        raise BadRequest(f"action: use one or more of {', '.join(sorted(known))}", code="invalid_parameter")
    return sorted(set(actions))


def audit_query(
    *, since: int | None, until: int | None, actions: list[str], after_id: int, limit: int
) -> tuple[str, list[Any]]:
    """SQL and parameters for one page (``limit`` + 1 rows are asked for, to know if another follows)."""
    args: list[Any] = [after_id]
    conditions = ["id > $1"]
    if since is not None:
        args.append(since)
        conditions.append(f"at >= ${len(args)}")
    if until is not None:
        args.append(until)
        conditions.append(f"at < ${len(args)}")
    if actions:
        start = len(args) + 1
        args.extend(actions)
        conditions.append(f"action IN ({', '.join(f'${i}' for i in range(start, len(args) + 1))})")
    args.append(limit + 1)
    sql = (
        "SELECT id, at, token_id, role, action, subject_index, outcome, detail, key_version, hash FROM audit"
        f" WHERE {' AND '.join(conditions)} ORDER BY id LIMIT ${len(args)}"
    )
    return sql, args


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    at_ms = int(row[1])
    return AuditEntry(
        id=int(row[0]),
        at=_EPOCH + timedelta(milliseconds=at_ms),
        at_ms=at_ms,
        token_id=row[2],
        role=row[3],
        action=row[4],
        subject_index=None if row[5] is None else bytes(row[5]).hex(),
        outcome=row[6],
        detail=row[7],
        key_version=int(row[8]),
        hash=bytes(row[9]).hex(),
    )


async def list_audit(request: web.Request) -> web.Response:
    state = request.app[STATE]
    await state.auth.require(request, Role.PRIVACY)
    query = request.query
    unknown = sorted(set(query) - set(_PARAMETERS))
    if unknown:
        shown = ", ".join(name if re.fullmatch(r"[a-z_]{1,20}", name) else "?" for name in unknown)
        raise BadRequest(
            f"unknown query parameter(s) {shown}; accepted: {', '.join(_PARAMETERS)}", code="invalid_parameter"
        )
    since = parse_time("since", query["since"]) if "since" in query else None
    until = parse_time("until", query["until"]) if "until" in query else None
    actions = parse_actions(query.getall("action")) if "action" in query else []
    limit = _parse_int("limit", query["limit"], 1, MAX_LIMIT) if "limit" in query else DEFAULT_LIMIT
    after_id = _parse_int("cursor", query["cursor"], 0, 10**18 - 1) if "cursor" in query else 0

    sql, args = audit_query(since=since, until=until, actions=actions, after_id=after_id, limit=limit)
    rows = await state.store.fetch(sql, *args)
    entries = [_entry(row) for row in rows[:limit]]
    page = AuditPage(entries=entries, next_cursor=str(entries[-1].id) if len(rows) > limit else None)
    return web.Response(
        body=page.model_dump_json(), content_type="application/json", headers={"Cache-Control": "no-store"}
    )


async def audit_verdict(state: TrackerState) -> AuditVerdict:
    """The chain's verdict with the anchor file of the settings: what the API and the dashboard show."""
    path = state.settings.audit_anchor_path
    problem: str | None = None
    try:
        check = await audit.verify_chain(state.store, state.keyring, path)
    except audit.AnchorError as exc:  # the chain is still worth checking; the anchor then does not hold
        problem = str(exc)
        check = await audit.verify_chain(state.store, state.keyring)
    message = verdict_text(check, path)[1]
    if problem is not None:
        message = "\n".join([message.splitlines()[0], problem])
    return AuditVerdict(
        entries=check.entries,
        ok=check.ok and problem is None,
        first_broken_id=check.first_broken_id,
        anchor=AnchorVerdict(
            configured=path is not None,
            lines=check.anchor.lines,
            ok=check.anchor.ok and problem is None,
            truncated_after=check.anchor.truncated_after,
            problem=problem,
        ),
        message=message,
    )


async def verify_audit(request: web.Request) -> web.Response:
    state = request.app[STATE]
    await state.auth.require(request, Role.PRIVACY)
    verdict = await audit_verdict(state)
    return web.Response(
        body=verdict.model_dump_json(), content_type="application/json", headers={"Cache-Control": "no-store"}
    )


def add_routes(router: web.UrlDispatcher) -> None:
    # GET only (and the HEAD aiohttp adds): PUT, PATCH, DELETE and POST answer 405.
    router.add_get("/api/v1/audit", list_audit)
    router.add_get("/api/v1/audit/verify", verify_audit)


EXIT_INTACT, EXIT_BROKEN, EXIT_UNREADABLE_ANCHOR = 0, 1, 2


def _anchor_lines(check: audit.ChainCheck, anchor_path: str | None) -> list[str]:
    """What the anchor says, one line per finding; problems first."""
    anchor = check.anchor
    if not anchor.configured:
        return [
            "no audit anchor configured (audit_anchor_path): deletion of the newest entries cannot be detected"
            " without one"
        ]
    found: list[str] = []
    if anchor.truncated_after is not None:
        found.append(
            f"audit log truncated: the anchor names entry id {anchor.newest_anchored_id}, but the newest stored"
            f" entry is id {anchor.truncated_after}: at least {anchor.truncated} of the newest entries were deleted"
        )
    if anchor.first_missing_id is not None:
        found.append(f"audit entry id {anchor.first_missing_id}, named by the anchor, is missing: it was deleted")
    if anchor.first_mismatch_id is not None:
        found.append(
            f"audit entry id {anchor.first_mismatch_id} is stored with another hash than the anchor names:"
            " it was rewritten, or the log was replaced"
        )
    if anchor.ok:
        if anchor.lines == 0:
            found.append(f"anchor {anchor_path} holds no lines yet: no entry can be checked against it")
        else:
            found.append(f"anchor {anchor_path}: {anchor.lines} lines, every anchored entry stored as anchored")
    if anchor.unanchored:
        found.append(f"{anchor.unanchored} entries newer than the anchor's newest line are not anchored")
    return found


def verdict_text(check: audit.ChainCheck, anchor_path: str | None) -> tuple[int, str]:
    """(exit code, message) of a finished check: 0 all holds, 1 the chain or the anchor shows tampering."""
    if check.chain_ok:
        chain = (
            "audit log is empty; nothing to verify"
            if check.entries == 0
            else f"audit log intact: {check.entries} entries, hash chain verified"
        )
    else:
        chain = (
            f"audit log broken at entry id {check.first_broken_id} (entry {check.broken_position} in order): it was"
            " altered, an entry before it was deleted, or it was signed by a key version that is not loaded;"
            " entries from there on cannot be trusted"
        )
    if check.chain_ok and not check.anchor.ok:
        chain = f"hash chain of {check.entries} entries holds, but"
    return (EXIT_INTACT if check.ok else EXIT_BROKEN), "\n".join([chain, *_anchor_lines(check, anchor_path)])


async def verify_audit_command(store: Store, keyring: Keyring, anchor_path: str | None = None) -> tuple[int, str]:
    """``polite-tracker audit verify``: (exit code, message); 0 everything holds, 1 the chain is broken
    or the anchor shows entries deleted or rewritten, 2 the anchor file cannot be read (names the line)."""
    try:
        check = await audit.verify_chain(store, keyring, anchor_path)
    except audit.AnchorError as exc:
        return EXIT_UNREADABLE_ANCHOR, str(exc)
    return verdict_text(check, anchor_path)
