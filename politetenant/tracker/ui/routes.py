"""Every route of the dashboard, in one place; ``server/app.py`` calls ``add_routes`` once.

Each handler runs inside ``ui_handler``, so every /ui/ response is HTML with the security headers,
including 404s for unknown paths under /ui/. None of these routes is in the OpenAPI document: they
are pages for a browser, not the API's contract.
"""

from __future__ import annotations

import importlib
from typing import Final, cast

from aiohttp import web

from politetenant.tracker.ui import session
from politetenant.tracker.ui.layout import CSS_HEADERS, UiHandler, UiNotFound, see_other, stylesheet, ui_handler

_PAGES_PACKAGE: Final = "politetenant.tracker.ui"


def _page(module: str, name: str) -> UiHandler:
    """A handler of a page module, imported at its first request: the page modules pull in the whole
    report and privacy stack, and a page that fails to import then fails alone (a 500 page, logged)
    instead of taking the tracker's beacons and API down with it."""

    async def handler(request: web.Request) -> web.StreamResponse:
        fn = cast(UiHandler, getattr(importlib.import_module(f"{_PAGES_PACKAGE}.{module}"), name))
        return await fn(request)

    handler.__name__ = handler.__qualname__ = name
    return handler


async def stylesheet_handler(request: web.Request) -> web.Response:
    """GET /ui/static/app.css: cached for a year; pages link it at a URL versioned by its content."""
    return web.Response(body=stylesheet(), headers=CSS_HEADERS)


async def not_found(request: web.Request) -> web.Response:
    raise UiNotFound("There is no page at this address.")


async def to_root(request: web.Request) -> web.Response:
    return see_other("/ui/")


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the dashboard: sessions, the stylesheet, the analyst's and the privacy officer's pages."""
    routes: list[tuple[str, str, UiHandler]] = [
        ("GET", "/ui", to_root),
        ("GET", "/ui/", session.landing),
        ("GET", "/ui/sign-in", session.sign_in_form),
        ("POST", "/ui/sign-in", session.sign_in),
        ("POST", "/ui/sign-out", session.sign_out),
        ("GET", "/ui/static/app.css", stylesheet_handler),
        ("GET", "/ui/messages", _page("pages_messages", "messages_page")),
        ("GET", "/ui/messages/{id}", _page("pages_messages", "message_page")),
        ("GET", "/ui/messages/{id}/export.csv", _page("pages_messages", "export_csv")),
        ("GET", "/ui/privacy", _page("pages_privacy", "privacy_page")),
        ("POST", "/ui/privacy/subjects/{action}", _page("pages_privacy", "subject_action")),
        ("GET", "/ui/privacy/audit", _page("pages_privacy", "audit_page")),
        ("*", "/ui/{tail:.*}", not_found),  # last: an HTML 404 for any other path or method under /ui/
    ]
    for method, path, handler in routes:
        router.add_route(method, path, ui_handler(handler))
