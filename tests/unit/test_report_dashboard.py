"""What the dashboard computes from the list's headlines (medians, the open-rate trend) and the checks
it shares with the API (segments, cursors), on known inputs."""

from __future__ import annotations

from typing import Any

import pytest

from politetenant.settings import TrackerSettings
from politetenant.tracker.reports.dashboard import (
    InvalidCursor,
    SegmentRefused,
    check_segment,
    medians,
    open_rate_trend,
    parse_cursor,
)
from politetenant.tracker.storage.rows import MessageRow


def shown(
    created_at: int, tracked: int, opens: int | None, clicks: int | None, reads: int | None, recipients: int = 0
) -> dict[str, Any]:
    """A list entry of a message whose figures are shown (None: aggregate mode, no distinct people)."""
    return {
        "id": f"msg_{created_at:020x}",
        "suppressed": False,
        "created_at": created_at,
        "recipients": recipients or tracked,
        "tracked": tracked,
        "opens": {"unique": opens, "total": 99},
        "clicks": {"unique": clicks, "total": 99},
        "reads": {"unique": reads},
    }


def suppressed(created_at: int) -> dict[str, Any]:
    return {"id": f"msg_{created_at:020x}", "suppressed": True, "created_at": created_at}


HEADLINES = [  # newest first, as the list gives them
    suppressed(500),
    shown(400, 40, 20, 10, 5, recipients=42),  # open 0.5, click 0.25, click-to-open 0.5, read 0.25
    shown(300, 20, 4, 0, 4),  # open 0.2, click 0, click-to-open 0, read 1
    shown(200, 10, 10, 5, 0),  # open 1, click 0.5, click-to-open 0.5, read 0
    shown(100, 30, None, None, None),  # aggregate mode: only its recipients count
]


def test_medians_are_over_messages_that_show_each_figure() -> None:
    assert medians(HEADLINES) == {
        "recipients": 25,  # 42, 20, 10, 30: the suppressed message adds nothing
        "opens_unique": 10,
        "open_rate": 0.5,
        "clicks_unique": 5,
        "click_rate": 0.25,
        "click_to_open": 0.5,
        "read_rate": 0.25,
    }


def test_medians_of_nothing_shown_are_none() -> None:
    assert set(medians([suppressed(1), suppressed(2)]).values()) == {None}
    assert medians([])["open_rate"] is None


def test_open_rate_trend_is_oldest_first_with_gaps_where_no_rate_is_shown() -> None:
    assert open_rate_trend(HEADLINES) == [(100, None), (200, 1.0), (300, 0.2), (400, 0.5), (500, None)]


def test_cursor_is_the_lists_keyset_and_anything_else_is_refused() -> None:
    assert parse_cursor(None) is None
    assert parse_cursor("1700000000000.msg_0123456789abcdef0123") == (1_700_000_000_000, "msg_0123456789abcdef0123")
    for bad in ("", "x", "1.msg_zz", "1700000000000.msg_0123456789abcdef0123;"):
        with pytest.raises(InvalidCursor):
            parse_cursor(bad)


def message(mode: str) -> MessageRow:
    return MessageRow("msg_00000000000000000001", 0, mode, b"s", b"s", b"s", b"s", 12, 12, 10, None, 1, "tok")


@pytest.mark.parametrize(
    ("segment", "mode", "status", "code"),
    [
        ("Dept;drop", "anonymous", 400, "invalid_segment"),
        ("grade", "anonymous", 422, "unknown_segment"),
        ("department", "aggregate", 409, "aggregate_mode"),
    ],
)
def test_segments_are_refused_as_the_api_refuses_them(segment: str, mode: str, status: int, code: str) -> None:
    settings = TrackerSettings.model_validate(
        {"tenant_id": "acme", "public_base_url": "https://t.example", "segment_attributes": ("department",)}
    )
    check_segment(settings, message("anonymous"), "department")
    check_segment(settings, message(mode), None)
    with pytest.raises(SegmentRefused) as refused:
        check_segment(settings, message(mode), segment)
    assert (refused.value.status, refused.value.code) == (status, code)
