"""Repeated runs of a bench case on a shared machine."""

from __future__ import annotations

from typing import Any


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median seconds: on a shared machine one run can take a third longer than the next,
    baseline and product alike, so each case is run several times, interleaved with its baseline, and
    the medians are compared."""
    return dict(sorted(runs, key=lambda r: float(r["seconds"]))[len(runs) // 2])
