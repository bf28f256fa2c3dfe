"""Errors users can act on: one type per failure, mapped once to an HTTP status and a JSON body.

Messages never carry personal data (no e-mail, IP, user agent, URL of a recipient's link).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from politetenant.tracker.storage.base import StorageUnavailable

log = logging.getLogger(__name__)


class _NoClientDetails(logging.Filter):
    """aiohttp's server logger names the client's address and its exceptions quote the bytes of a
    malformed request (a user agent, say). Keep what kind of request was refused; drop the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        record.msg, record.args = "refused a malformed request (%s)", (type(exc).__name__ if exc else "no detail",)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        if record.levelno > logging.WARNING:  # a client's mistake, not the tracker's
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_SERVER_LOG_FILTER = _NoClientDetails()


def redact_server_log() -> None:
    """Install the filter on aiohttp's server logger (once, however many apps a process builds)."""
    server_log = logging.getLogger("aiohttp.server")
    if _SERVER_LOG_FILTER not in server_log.filters:
        server_log.addFilter(_SERVER_LOG_FILTER)


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class Unprocessable(ApiError):
    status, code = 422, "invalid_request"


class ServiceUnavailable(ApiError):
    status, code = 503, "unavailable"


ERROR_HEADERS = {"Cache-Control": "no-store"}  # besides the JSON content type


def error_body(code: str, message: str) -> dict[str, str]:
    """The one JSON shape of every error, for aiohttp's responses and the lean server's alike."""
    return {"error": code, "message": message}


def error_response(status: int, code: str, message: str) -> web.Response:
    headers = dict(ERROR_HEADERS)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="polite-tracker"'
    return web.json_response(error_body(code, message), status=status, headers=headers)


_HTTP_CODES = {
    404: ("not_found", "no such path"),
    405: ("method_not_allowed", "method not allowed on this path"),
    413: ("payload_too_large", "the request body is larger than this tracker accepts"),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into ``{"error", "message"}`` JSON; never a stack trace to a client."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except StorageUnavailable:
        return error_response(503, "database_unavailable", "the database is unavailable; try again shortly")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
        response = error_response(exc.status, code, message)
        if "Allow" in exc.headers:  # a 405 must say what is allowed
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
        log.exception("unhandled error on %s %s", request.method, route)
        return error_response(500, "internal", "internal error; it has been logged")
