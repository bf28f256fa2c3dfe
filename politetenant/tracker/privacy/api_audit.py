"""``GET /api/v1/audit``: the audit log, read-only, for the privacy officer; and ``audit verify`` for the CLI.

Entries are listed in the order they were chained (ascending id), filtered by time and action, a page
at a time with an opaque cursor. There is no route that writes, edits or deletes an entry: other
methods on the path answer 405, and tampering in the database shows up in ``verify_audit_command``.
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
from politetenant.tracker.http.state import STATE
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


def add_routes(router: web.UrlDispatcher) -> None:
    # GET only (and the HEAD aiohttp adds): PUT, PATCH, DELETE and POST answer 405.
    router.add_get("/api/v1/audit", list_audit)


async def verify_audit_command(store: Store, keyring: Keyring) -> tuple[int, str]:
    """``polite-tracker audit verify``: (exit code, message); 0 the chain holds, 1 it is broken."""
    check = await audit.verify_chain(store, keyring)
    if check.ok:
        if check.entries == 0:
            return 0, "audit log is empty; nothing to verify"
        return 0, f"audit log intact: {check.entries} entries, hash chain verified"
    return 1, (
        f"audit log broken at entry id {check.first_broken_id} (entry {check.entries} in order): it was altered,"
        " an entry before it was deleted, or it was signed by a key version that is not loaded;"
        " entries from there on cannot be trusted"
    )
