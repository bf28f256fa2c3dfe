"""Message reports under the minimum-segment rule.

The rule is enforced here, server-side, in one function: below the tenant's threshold a report
carries only its id and ``suppressed: true``, so no figure can leak through the API.
"""

from __future__ import annotations

from typing import Any

from politetenant.settings import TrackingMode
from politetenant.tracker.storage.rows import EventTally, MessageRow


def is_suppressed(population: int, min_segment_size: int) -> bool:
    return population < min_segment_size


def build_report(message: MessageRow, tally: EventTally, min_segment_size: int) -> dict[str, Any]:
    # The figures describe the tracked people only: a sender knows who objected (their tokens were
    # null), so the threshold must hold for the tracked population, not the recipient list.
    if is_suppressed(message.tracked, min_segment_size):
        return {"id": message.id, "suppressed": True}
    aggregate = message.mode == TrackingMode.AGGREGATE.value
    return {
        "id": message.id,
        "suppressed": False,
        "mode": message.mode,
        "created_at": message.created_at,
        "recipients": message.recipients,
        "tracked": message.tracked,
        # Aggregate mode has one record per message: distinct-recipient figures do not exist.
        "opens": {"unique": None if aggregate else tally.opens_unique, "total": tally.opens_total},
        "clicks": {"unique": None if aggregate else tally.clicks_unique, "total": tally.clicks_total},
        "reads": {"unique": None if aggregate else tally.reads_unique},
        "bots": {"opens": tally.bot_opens, "clicks": tally.bot_clicks},
        "content": {
            "links": message.link_count,
            "word_count": message.word_count,
            "flesch_reading_ease": message.flesch,
        },
    }
