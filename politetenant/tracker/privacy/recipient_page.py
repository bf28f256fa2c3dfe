"""The recipient's page, ``/p/{token}``: what is recorded for the holder of this e-mail, and a form
to stop being tracked (``POST /p/{token}/object``). Filled in by issue 13's recipient-transparency work."""

from __future__ import annotations

from aiohttp import web

from politetenant.tracker.http.openapi import Operation

OPERATIONS: list[Operation] = []


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the page and its form on the public listener."""
