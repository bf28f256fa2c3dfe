"""Dashboard sessions: an API token is exchanged once for a cookie; pages ask ``require_session``.

The cookie is 32 random bytes (base64url); the database keeps only the SHA-256 of the cookie as sent,
so a copy of the table signs nobody in. The CSRF token of a session is an HMAC keyed by the cookie's
bytes: never stored, recomputed on each request, useless without the HttpOnly cookie. A session ends
after SESSION_SECONDS, at sign-out, or as soon as its API token is revoked (checked on every request
by a join with ``api_tokens``). The API token itself is never stored here, logged, put in a URL or
written back into a page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

from aiohttp import web

from politetenant.tracker.http.auth import Principal, Role
from politetenant.tracker.http.errors import Unauthorized
from politetenant.tracker.http.state import STATE
from politetenant.tracker.judging.client_ip import Peer
from politetenant.tracker.ui.layout import (
    SESSION_COOKIE,
    SIGN_IN_PATH,
    SignInRequired,
    UiBadRequest,
    UiForbidden,
    UiTooLarge,
    e,
    html_response,
    page,
    see_other,
)

__all__ = [
    "SESSION_COOKIE",
    "SignInRequired",
    "UiForbidden",
    "UiSession",
    "check_csrf",
    "read_form",
    "require_session",
]

SESSION_SECONDS: Final = 3600
_CSRF_LABEL: Final = b"politetenant/ui/csrf"
_COOKIE_SHAPE: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of 32 bytes, unpadded
_MAX_FIELDS: Final = 50

SENDER_REFUSED: Final = "Sender tokens cannot sign in: use an analyst or privacy token."
TOKEN_REFUSED: Final = "That token is not valid: it is unknown, revoked or mistyped. Paste the whole token."

SELECT_SESSION: Final = (
    "SELECT s.token_id, s.role, s.expires_at, t.id FROM ui_sessions s"
    " LEFT JOIN api_tokens t ON t.id = s.token_id AND t.revoked_at IS NULL WHERE s.id_hash = $1"
)
INSERT_SESSION: Final = (
    "INSERT INTO ui_sessions (id_hash, token_id, role, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)"
)
DELETE_SESSION: Final = "DELETE FROM ui_sessions WHERE id_hash = $1"
DELETE_EXPIRED: Final = "DELETE FROM ui_sessions WHERE expires_at <= $1"


@dataclass(frozen=True)
class UiSession:
    """A signed-in user as pages see them; ``expires_at`` is epoch milliseconds, like every timestamp."""

    token_id: str
    role: Role
    csrf: str
    expires_at: int

    @property
    def principal(self) -> Principal:
        """The API token behind the session, for audit entries written as the API writes them."""
        return Principal(token_id=self.token_id, role=self.role)


# -- decisions (pure) ---------------------------------------------------------------------------------
def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_cookie() -> str:
    """A fresh session cookie value: base64url of 32 random bytes."""
    return _b64(secrets.token_bytes(32))


def cookie_secret(value: str) -> bytes | None:
    """The 32 bytes a cookie value encodes, or None for anything else (forged, truncated, padded)."""
    if not _COOKIE_SHAPE.match(value):
        return None
    raw = base64.urlsafe_b64decode(value + "=")
    return raw if _b64(raw) == value else None  # one spelling per secret: no equivalent variants


def cookie_hash(value: str) -> bytes:
    """What the database keeps of a cookie: SHA-256 of the value as the browser sends it."""
    return hashlib.sha256(value.encode("ascii")).digest()


def csrf_for(secret: bytes) -> str:
    """The session's CSRF token: HMAC-SHA256 keyed by the cookie's bytes, so only its holder knows it."""
    return _b64(hmac.new(secret, _CSRF_LABEL, hashlib.sha256).digest())


def came_over_https(scheme: str, peer_trusted: bool, forwarded_proto: str | None) -> bool:
    """Whether the browser's connection was https: the socket says so, or a trusted proxy does (the
    right-most X-Forwarded-Proto, written by the proxy nearest to us). Anyone else's header is ignored."""
    if scheme == "https":
        return True
    if not peer_trusted or not forwarded_proto:
        return False
    return forwarded_proto.split(",")[-1].strip().lower() == "https"


SessionVerdict = Literal["valid", "missing", "expired", "revoked"]


def session_verdict(row: Sequence[Any] | None, now_ms: int) -> SessionVerdict:
    """Judge a SELECT_SESSION row: (token id, role, expires at, the token's id if still in force)."""
    if row is None:
        return "missing"
    if int(row[2]) <= now_ms:
        return "expired"
    return "valid" if row[3] is not None else "revoked"


def landing_path(role: Role) -> str:
    """Where a signed-in user starts: the page of their role."""
    return "/ui/privacy" if role is Role.PRIVACY else "/ui/messages"


def parse_form(body: bytes) -> dict[str, str]:
    """An urlencoded body as a dict; the first value of a repeated field wins. UiBadRequest when the
    body is not UTF-8 or has too many fields."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise UiBadRequest("The form could not be read; reload the page and try again.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def check_csrf(session: UiSession, form: Mapping[str, str]) -> None:
    """Refuse a POST whose ``csrf`` field is not this session's (another site's form, or a stale page)."""
    supplied = form.get("csrf", "").encode("utf-8")
    if not hmac.compare_digest(supplied, session.csrf.encode("ascii")):
        raise UiForbidden(
            "This form did not come from your current session; reload the page and try again.", session=session
        )


# -- request helpers ----------------------------------------------------------------------------------
def _now_ms() -> int:
    return int(time.time() * 1000)


async def read_form(request: web.Request, max_bytes: int = 16_384) -> dict[str, str]:
    """The urlencoded body of a POST, read up to ``max_bytes`` (UiTooLarge beyond, UiBadRequest for a
    body of another content type; an empty body is an empty form, so a missing csrf field is a 403)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise UiTooLarge("The form is larger than this dashboard accepts.")
    body = bytearray()
    async for chunk in request.content.iter_chunked(8192):
        body += chunk
        if len(body) > max_bytes:
            raise UiTooLarge("The form is larger than this dashboard accepts.")
    if body and request.content_type != "application/x-www-form-urlencoded":
        raise UiBadRequest("Send the form as application/x-www-form-urlencoded.")
    return parse_form(bytes(body))


async def require_session(request: web.Request, *roles: Role) -> UiSession:
    """The request's session, or SignInRequired (no, forged, expired or revoked session; the dead row
    is deleted now) or UiForbidden (a role not in ``roles``; no roles: any signed-in user)."""
    value = request.cookies.get(SESSION_COOKIE, "")
    secret = cookie_secret(value)
    if secret is None:
        raise SignInRequired("no session")
    digest = cookie_hash(value)
    store = request.app[STATE].store
    rows = await store.fetch(SELECT_SESSION, digest)
    verdict = session_verdict(rows[0] if rows else None, _now_ms())
    if verdict != "valid":
        if rows:
            await store.execute(DELETE_SESSION, digest)
        raise SignInRequired(verdict)
    token_id, role_name, expires_at, _ = rows[0]
    session = UiSession(token_id=str(token_id), role=Role(role_name), csrf=csrf_for(secret), expires_at=int(expires_at))
    if roles and session.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise UiForbidden(
            f"This page is for the {allowed} role; you are signed in as {session.role.value}.", session=session
        )
    return session


# -- pages and handlers -------------------------------------------------------------------------------
def sign_in_page(message: str = "", *, notice: str = "") -> str:
    """The sign-in form; ``message`` is a refusal, ``notice`` good news. The token field is never filled in."""
    alert = f'<p class="form-error" role="alert">{e(message)}</p>' if message else ""
    info = f'<p class="notice" role="status">{e(notice)}</p>' if notice else ""
    body = (
        f"{info}{alert}"
        '<p id="token-help">Sign in with an API token of role <strong>analyst</strong> (message reports) or '
        "<strong>privacy</strong> (subject requests and the audit log). Sender tokens, which mailing systems "
        "use to register messages, cannot sign in. An administrator creates a token with "
        "<code>polite-tracker token create --role analyst</code>.</p>"
        f'<form class="sign-in" method="post" action="{SIGN_IN_PATH}">'
        '<label for="token">API token</label>'
        '<input id="token" name="token" type="password" required autocomplete="off" spellcheck="false"'
        ' autocapitalize="off" aria-describedby="token-help">'
        '<button type="submit">Sign in</button></form>'
        f"<p>You stay signed in for {SESSION_SECONDS // 60} minutes; the token is exchanged for a session "
        "cookie and is not kept by your browser.</p>"
    )
    return page("Sign in", body, session=None)


async def sign_in_form(request: web.Request) -> web.Response:
    """GET /ui/sign-in."""
    notice = "You are signed out." if "signed_out" in request.query else ""
    return html_response(sign_in_page(notice=notice))


async def sign_in(request: web.Request) -> web.Response:
    """POST /ui/sign-in: check the token as the API does, then open a session and go to the role's page."""
    if request.headers.get("Sec-Fetch-Site") == "cross-site":  # another site's form signing the user in
        raise UiForbidden("Sign in from this dashboard's own sign-in page.")
    form = await read_form(request)
    state = request.app[STATE]
    try:
        principal = await state.auth.check_token(form.get("token", ""))
    except Unauthorized:
        response = html_response(sign_in_page(TOKEN_REFUSED), status=401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="polite-tracker"'
        return response
    if principal.role is Role.SENDER:
        return html_response(sign_in_page(SENDER_REFUSED), status=403)
    cookie, now = new_cookie(), _now_ms()
    await state.store.execute(DELETE_EXPIRED, now)  # expired sessions are swept here, and when presented
    await state.store.execute(
        INSERT_SESSION, cookie_hash(cookie), principal.token_id, principal.role.value, now, now + SESSION_SECONDS * 1000
    )
    secure = came_over_https(
        request.scheme,
        Peer.of(request.remote, state.trusted_proxies).trusted,
        ", ".join(request.headers.getall("X-Forwarded-Proto", [])) or None,
    )
    response = see_other(landing_path(principal.role))
    response.set_cookie(
        SESSION_COOKIE, cookie, path="/ui/", max_age=SESSION_SECONDS, httponly=True, samesite="Strict", secure=secure
    )
    return response


async def sign_out(request: web.Request) -> web.Response:
    """POST /ui/sign-out (csrf): delete the session's row and expire the cookie."""
    session = await require_session(request)
    check_csrf(session, await read_form(request))
    await request.app[STATE].store.execute(DELETE_SESSION, cookie_hash(request.cookies[SESSION_COOKIE]))
    response = see_other(f"{SIGN_IN_PATH}?signed_out=1")
    response.del_cookie(SESSION_COOKIE, path="/ui/")
    return response


async def landing(request: web.Request) -> web.Response:
    """GET /ui/: the page of the signed-in role (or, via SignInRequired, the sign-in page)."""
    return see_other(landing_path((await require_session(request)).role))
