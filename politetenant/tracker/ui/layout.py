"""The page shell every dashboard page shares, the one stylesheet, and the errors pages turn into.

Pages are plain strings built with ``e()`` around every value; ``page()`` wraps a body in the document
(landmarks, skip link, nav by role, the sign-out form), ``html_response()`` adds PAGE_HEADERS, and
``ui_handler`` turns the failures a page can meet into HTML pages: a browser never sees JSON here.
The CSP forbids inline styles and scripts, so nothing here writes ``style=`` or ``<script>``.
"""

from __future__ import annotations

import functools
import hashlib
import html
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Final

from aiohttp import web

from politetenant.tracker.http.auth import Role
from politetenant.tracker.http.errors import ApiError
from politetenant.tracker.storage.base import StorageUnavailable

if TYPE_CHECKING:  # session.py renders its sign-in page with this module: no import cycle at run time
    from politetenant.tracker.ui.session import UiSession

log = logging.getLogger(__name__)

PRODUCT: Final = "PoliteTenant"
SIGN_IN_PATH: Final = "/ui/sign-in"
SIGN_OUT_PATH: Final = "/ui/sign-out"
CSS_PATH: Final = "/ui/static/app.css"
SESSION_COOKIE: Final = "polite_session"

# Every /ui/ response (ui_handler adds the first four to responses pages build themselves, such as a CSV).
SECURITY_HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PAGE_HEADERS: Final[dict[str, str]] = {**SECURITY_HEADERS, "Content-Type": "text/html; charset=utf-8"}
CSS_HEADERS: Final[dict[str, str]] = {
    **SECURITY_HEADERS,
    "Cache-Control": "public, max-age=31536000, immutable",  # safe: the URL changes with the content
    "Content-Type": "text/css; charset=utf-8",
}

# The links of the nav, by the role that may follow them: (key for ``active``, label, path).
NAV: Final[dict[Role, tuple[tuple[str, str, str], ...]]] = {
    Role.ANALYST: (("messages", "Messages", "/ui/messages"),),
    Role.PRIVACY: (("privacy", "Privacy", "/ui/privacy"), ("audit", "Audit log", "/ui/privacy/audit")),
}


# -- errors a page can raise; ui_handler renders each -------------------------------------------------
class UiError(Exception):
    """A failure the user can act on, shown as an HTML page with ``status``; the text is never personal."""

    status = 400
    title = "Bad request"

    def __init__(self, text: str, *, session: UiSession | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.session = session  # the page keeps its nav when the user is signed in


class SignInRequired(UiError):
    """No session, or one that expired, was forged or whose API token was revoked: 303 to the sign-in page."""

    status, title = 303, "Sign in"


class UiForbidden(UiError):
    status, title = 403, "Not allowed"


class UiBadRequest(UiError):
    status, title = 400, "Bad request"


class UiTooLarge(UiError):
    status, title = 413, "Too large"


class UiNotFound(UiError):
    status, title = 404, "Not found"


# -- building blocks ----------------------------------------------------------------------------------
def e(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)


def fewer_than(k: int) -> str:
    """The one wording of a figure the report hides (null or absent): pages never compare counts themselves."""
    return f'<span class="hidden-figure">fewer than {int(k)}</span>'


def table_open(caption: str) -> str:
    """A table's start inside its sideways-scrolling wrapper, captioned. The wrapper is a focusable,
    labelled region, so a keyboard user can scroll a table wider than a 360-px screen."""
    label = e(caption)
    return f'<div class="table-wrap" role="region" tabindex="0" aria-label="{label}"><table><caption>{label}</caption>'


def empty_state(text: str, action_html: str = "") -> str:
    """What a page shows when there is nothing yet; ``action_html`` (already safe HTML) says what to do."""
    return f'<div class="empty-state"><p>{e(text)}</p>{action_html}</div>'


def error_state(text: str) -> str:
    """A failure inside a page that still renders (one panel could not be built, say)."""
    return f'<div class="error-state" role="alert"><p>{e(text)}</p></div>'


@functools.cache
def stylesheet() -> bytes:
    """The CSS, read once from the package (it ships as package data next to this module)."""
    return resources.files("politetenant.tracker.ui").joinpath("static/app.css").read_bytes()


@functools.cache
def stylesheet_url() -> str:
    """The CSS's URL, versioned by its content, so it can be cached for a year and still change."""
    return f"{CSS_PATH}?v={hashlib.sha256(stylesheet()).hexdigest()[:12]}"


def _nav(session: UiSession | None, active: str) -> str:
    if session is None:
        return ""
    current = ' aria-current="page"'
    links = "".join(
        f'<li><a href="{e(path)}"{current if key == active else ""}>{e(label)}</a></li>'
        for key, label, path in NAV.get(session.role, ())
    )
    sign_out = (
        f'<form class="sign-out" method="post" action="{SIGN_OUT_PATH}">'
        f'<input type="hidden" name="csrf" value="{e(session.csrf)}">'
        f'<span class="signed-in-as">Signed in as {e(session.role.value)}</span>'
        '<button type="submit">Sign out</button></form>'
    )
    return f'<nav aria-label="Main"><ul class="nav-links">{links}</ul>{sign_out}</nav>'


def page(title: str, body: str, *, session: UiSession | None, active: str = "") -> str:
    """The whole HTML document around ``body`` (already safe HTML). The title becomes the page's one
    ``<h1>`` unless the body brings its own heading (a page whose heading holds more than text)."""
    heading = "" if "<h1" in body else f"<h1>{e(title)}</h1>"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · {PRODUCT}</title>"
        f'<link rel="stylesheet" href="{e(stylesheet_url())}"></head><body>'
        '<a class="skip-link" href="#main">Skip to main content</a>'
        f'<header class="site-header"><a class="brand" href="/ui/">{PRODUCT}</a>{_nav(session, active)}</header>'
        f'<main id="main" tabindex="-1">{heading}{body}</main></body></html>\n'
    )


def html_response(html_text: str, status: int = 200) -> web.Response:
    """A page as a response, with PAGE_HEADERS."""
    return web.Response(body=html_text.encode("utf-8"), status=status, headers=PAGE_HEADERS)


def see_other(location: str) -> web.Response:
    """303 to a path of this dashboard (never a token, never another origin), with a link for the rare
    client that does not follow it."""
    body = page("Moved", f'<p><a href="{e(location)}">Continue</a></p>', session=None)
    response = html_response(body, status=303)
    response.headers["Location"] = location
    return response


def error_page(status: int, title: str, text: str, *, session: UiSession | None = None) -> web.Response:
    """The page for a failure: what happened and where to go from here."""
    back = (
        f'<p><a href="{SIGN_IN_PATH}">Go to the sign-in page</a></p>'
        if session is None
        else '<p><a href="/ui/">Back to the dashboard</a></p>'
    )
    return html_response(page(title, f'<p class="error-text">{e(text)}</p>{back}', session=session), status)


# -- the wrapper every /ui/ handler runs in -----------------------------------------------------------
UiHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ui_handler(fn: UiHandler) -> UiHandler:
    """Turn what a page raises into an HTML page (303/400/403/404/413/503, 500 for a bug, logged without
    request details) and give every response the security headers. Wrapping twice is harmless."""
    if getattr(fn, "_ui_wrapped", False):
        return fn

    @functools.wraps(fn)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await fn(request)
        except SignInRequired:
            response = see_other(SIGN_IN_PATH)
            if SESSION_COOKIE in request.cookies:  # a dead cookie is dropped, not sent again and again
                response.del_cookie(SESSION_COOKIE, path="/ui/")
        except UiError as exc:
            response = error_page(exc.status, exc.title, exc.text, session=exc.session)
        except ApiError as exc:  # raised by the report and privacy code the API shares; messages are for users
            response = error_page(exc.status, _TITLES.get(exc.status, "Request refused"), exc.message)
        except StorageUnavailable:
            response = error_page(503, "Unavailable", "The database is unavailable; try again in a minute.")
        except web.HTTPRequestEntityTooLarge:
            response = error_page(413, "Too large", "The form is larger than this dashboard accepts.")
        except Exception:
            route = request.match_info.route.resource
            log.exception("ui: unhandled error on %s %s", request.method, route.canonical if route else "?")
            response = error_page(500, "Internal error", "Something went wrong; it has been logged.")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    wrapped._ui_wrapped = True  # type: ignore[attr-defined]
    return wrapped


_TITLES: Final = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Not possible", 413: "Too large"}
