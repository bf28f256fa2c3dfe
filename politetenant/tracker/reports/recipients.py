"""Per-recipient figures of an individual-mode message, for the privacy officer's ``/recipients``:
what each person did with their copy, judged by the same rules as the report (people's hits only).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

from politetenant.crypto import Sealer, recipient_row
from politetenant.tracker.judging.behaviour import CopyRules, Hit, judge_copy
from politetenant.tracker.judging.verdicts import Reason, counts_as_person
from politetenant.tracker.reports.report_data import first_hit
from politetenant.tracker.storage.base import Store
from politetenant.tracker.storage.rows import EventKind, MessageRow

# One page of an individual-mode message's recipients, and their records' events. A recipient finds
# its record through the keyed pseudonym both carry; objectors have none.
_PAGE = (
    " FROM (SELECT id, email_index, email, name, attributes FROM recipients"
    "       WHERE message_id = $1 AND id > $2 ORDER BY id LIMIT $3) p"
)
_RECORD_OF = " JOIN records rec ON rec.message_id = $1 AND rec.subject_index = p.email_index"
RECIPIENTS_PAGE = (
    f"SELECT p.id, p.email_index, p.email, p.name, p.attributes, rec.id{_PAGE} LEFT{_RECORD_OF} ORDER BY p.id"
)
RECIPIENT_EVENTS = (
    f"SELECT DISTINCT rec.id, e.kind, e.link_no, e.occurred_at, e.bot, e.read_ms, e.event_id{_PAGE}{_RECORD_OF}"
    " JOIN events e ON e.record_id = rec.id ORDER BY rec.id, e.occurred_at, e.kind"
)


class CopyFigures(NamedTuple):
    """A person's figures from one copy's judged hits (the privacy officer's per-recipient row)."""

    first_open_at: int | None = None
    opens: int = 0
    clicks: int = 0
    read_ms: int | None = None

    def plus(self, other: CopyFigures) -> CopyFigures:
        firsts = [t for t in (self.first_open_at, other.first_open_at) if t is not None]
        reads = [t for t in (self.read_ms, other.read_ms) if t is not None]
        return CopyFigures(
            min(firsts, default=None), self.opens + other.opens, self.clicks + other.clicks, max(reads, default=None)
        )


def copy_figures(hits: Sequence[Hit], read_ms: Sequence[int | None], reasons: Sequence[int]) -> CopyFigures:
    """What the person did with a copy, by the same rules as the report: people's hits only."""
    first_open, opens, clicks, longest = None, 0, 0, None
    for hit, ms, reason in zip(hits, read_ms, reasons, strict=True):
        if not counts_as_person(reason):
            continue
        if hit.kind == EventKind.CLICK:
            clicks += 1
            continue
        opens += hit.kind == EventKind.OPEN
        first_open = hit.occurred_at if first_open is None else min(first_open, hit.occurred_at)
        if hit.kind == EventKind.READ and reason == Reason.PERSON and (ms or 0) > (longest or -1):
            longest = ms or 0
    return CopyFigures(first_open, opens, clicks, longest)


class RecipientFigures(NamedTuple):
    id: int  # the recipient row, for paging
    email: str
    name: str | None
    attributes: dict[str, str] | None
    tracked: bool
    figures: CopyFigures


async def _copies_of_page(
    store: Store, message: MessageRow, rules: CopyRules, after: int, limit: int
) -> dict[bytes, CopyFigures]:
    """Each record of the page's recipients, judged as the report judges it."""
    start = await first_hit(store, message.id)
    rows = await store.fetch(RECIPIENT_EVENTS, message.id, after, limit)
    copies: dict[bytes, CopyFigures] = {}
    begin = 0
    for end in range(1, len(rows) + 1):
        if end < len(rows) and rows[end][0] == rows[begin][0]:
            continue
        run = rows[begin:end]
        hits = [Hit(int(kind), link_no, int(at), int(bot)) for _, kind, link_no, at, bot, _, _ in run]
        reasons = judge_copy(hits, start, rules)
        copies[bytes(run[0][0])] = copy_figures(hits, [row[5] for row in run], reasons)
        begin = end
    return copies


async def recipient_page(
    store: Store, sealer: Sealer, message: MessageRow, rules: CopyRules, after: int, limit: int
) -> list[RecipientFigures]:
    """Recipients of an individual-mode message after row ``after``, opened, with people's figures."""
    rows = await store.fetch(RECIPIENTS_PAGE, message.id, after, limit)
    copies = await _copies_of_page(store, message, rules, after, limit)
    page: list[RecipientFigures] = []
    for rid, email_index, email, name, attributes, record_id in rows:
        figures = CopyFigures() if record_id is None else copies.get(bytes(record_id), CopyFigures())
        if page and page[-1].id == int(rid):  # one address registered twice: both records are theirs
            page[-1] = page[-1]._replace(tracked=True, figures=page[-1].figures.plus(figures))
            continue
        row = recipient_row(message.id, bytes(email_index))
        opened = sealer.open_optional("recipient.attributes", attributes, row=row)
        page.append(
            RecipientFigures(
                int(rid),
                sealer.open_text("recipient.email", bytes(email), row=row),
                sealer.open_optional("recipient.name", name, row=row),
                None if opened is None else json.loads(opened),
                record_id is not None,
                figures,
            )
        )
    return page
