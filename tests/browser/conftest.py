"""Fixtures of the browser tests: one Chromium and one live tracker per module, so a module costs one
browser start (about a second) however many pages it looks at."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.harness import Browser, LiveTracker, browser_missing, live_tracker, start_browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, 1280 px wide (``Browser.window`` narrows it for a while)."""
    missing = browser_missing()
    if missing is not None:  # the only reason to skip: a broken page must fail, never skip
        pytest.skip(missing)
    with start_browser() as session:
        yield session


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, geoip_path: str) -> Iterator[LiveTracker]:
    """A tracker on SQLite serving on a loopback port, with an API token per role."""
    with live_tracker(tmp_path_factory.mktemp("live-tracker"), geoip_path) as tracker:
        yield tracker
