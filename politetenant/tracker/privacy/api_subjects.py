"""``/api/v1/subjects/*``: the privacy officer answers data-subject requests.

The e-mail travels in the JSON body only (a query string is refused: URLs end up in logs), is turned
into blind indexes at once, and never appears in a response error, a log line or the audit log. Every
request, accepted or refused, is written to the audit log.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from politetenant.tracker.http.auth import Principal, Role
from politetenant.tracker.http.errors import ApiError, BadRequest, Unprocessable
from politetenant.tracker.http.openapi import Operation
from politetenant.tracker.http.state import STATE, TrackerState
from politetenant.tracker.messages.api_messages import read_json_body
from politetenant.tracker.messages.api_models import AttributeName, AttributeValue, Email
from politetenant.tracker.privacy import audit, subjects

EXPORT_FILENAME = "subject-export.json"
_NO_STORE = {"Cache-Control": "no-store"}


SubjectEmail = Email  # one definition of a valid address (api_models)


class SubjectIn(BaseModel):
    """Who the request is about."""

    model_config = ConfigDict(extra="forbid")

    email: SubjectEmail


class RectifyIn(SubjectIn):
    """``name``: the corrected name (null removes it); ``attributes``: the complete set of HR attributes
    to hold for the person on every message, replacing what each held ({} removes them all)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"anyOf": [{"required": ["name"]}, {"required": ["attributes"]}]}
    )

    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict, max_length=32, json_schema_extra={"additionalProperties": False}
    )

    @model_validator(mode="after")
    def _something_to_change(self) -> RectifyIn:
        if not {"name", "attributes"} & self.model_fields_set:
            raise ValueError("name or attributes: give at least one of them to change")
        return self


OPERATIONS = [
    Operation("POST", "/api/v1/subjects/access", "Everything held about a person, and their interactions where"
              " the tracking mode makes them linkable", roles=("privacy",), body=SubjectIn,
              response=subjects.AccessDocument),
    Operation("POST", "/api/v1/subjects/export", "The access document as a downloadable JSON file",
              roles=("privacy",), body=SubjectIn, response=subjects.AccessDocument),
    Operation("POST", "/api/v1/subjects/rectify", "Correct a person's name and HR attributes", roles=("privacy",),
              body=RectifyIn, response=subjects.RectifyResult),
    Operation("POST", "/api/v1/subjects/erase", "Erase a person's recipient rows and, in individual mode, their"
              " records and interactions", roles=("privacy",), body=SubjectIn, response=subjects.EraseResult),
    Operation("POST", "/api/v1/subjects/object", "Stop tracking a person in future messages", roles=("privacy",),
              body=SubjectIn, response=subjects.ObjectResult),
]  # fmt: skip

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


def describe_body_error(exc: ValidationError) -> tuple[str, str]:
    """(code, message) naming the fields at fault, never their values; keys that do not look like field
    names (a misplaced address, say) are not repeated either."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if errors and errors[0]["type"] in ("json_invalid", "json_type"):
        return "malformed_json", "the body is not valid JSON; send a JSON object"
    parts = []
    for err in errors[:5]:
        loc = ".".join(
            str(p) if isinstance(p, int) or _IDENTIFIER.match(str(p)) else "<key>" for p in err["loc"]
        )  # fmt: skip
        message = err["msg"] if err["type"] != "value_error" else str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc or 'body'}: {message}")
    return "invalid_field", "; ".join(parts)


Body = TypeVar("Body", bound=SubjectIn)


async def _record(
    state: TrackerState, principal: Principal, action: audit.Action, subject: subjects.Subject | None,
    outcome: str, detail: str,
) -> None:  # fmt: skip
    await audit.record(
        state.store, state.keyring, (principal.token_id, principal.role.value), action,
        subject_index=None if subject is None else subject.current_index, outcome=outcome, detail=detail,
    )  # fmt: skip


async def _parse(request: web.Request, model: type[Body], action: audit.Action) -> tuple[TrackerState, Principal, Body]:
    """Authorise, then read the body; a refused request is audited (without a subject) and re-raised."""
    state = request.app[STATE]
    principal = await state.auth.require(request, Role.PRIVACY)
    try:
        if request.query_string:
            raise BadRequest(
                "query parameters are not accepted here: URLs are logged; send the e-mail in the JSON body",
                code="query_not_allowed",
            )
        raw = await read_json_body(request)
        try:
            body = model.model_validate_json(raw)
        except ValidationError as exc:
            code, message = describe_body_error(exc)
            raise (BadRequest if code == "malformed_json" else Unprocessable)(message, code=code) from None
    except ApiError as exc:
        await record_refusal(state, principal, action, exc.code)
        raise
    return state, principal, body


def _json(model: BaseModel, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=model.model_dump_json(), content_type="application/json", headers={**_NO_STORE, **(headers or {})}
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- answering a right: shared by the API and the dashboard (ui/pages_privacy.py), so both call the same
# functions and write the same audit entries; the callers differ only in how the body arrives.


async def record_refusal(state: TrackerState, principal: Principal, action: audit.Action, code: str) -> None:
    """Audit a request refused before it named anyone (bad body, no confirmation): no subject index."""
    await _record(state, principal, action, None, "rejected", code)


async def answer_access(
    state: TrackerState, principal: Principal, body: SubjectIn, action: audit.Action
) -> subjects.AccessDocument:
    """The access document (``action`` is access or export: the audit entry says which was asked for)."""
    subject = subjects.Subject.of(state.keyring, body.email)
    document = await subjects.access(state.store, state.sealer, subject, _now_ms())
    outcome = "ok" if document.found else "no_data"
    await _record(state, principal, action, subject, outcome, f"messages={len(document.messages)}")
    return document


async def answer_rectify(state: TrackerState, principal: Principal, body: RectifyIn) -> subjects.RectifyResult:
    subject = subjects.Subject.of(state.keyring, body.email)
    changes = {field: getattr(body, field) for field in ("name", "attributes") if field in body.model_fields_set}
    result = await subjects.rectify(state.store, state.sealer, subject, **changes)
    detail = f"messages={result.updated.messages} fields={','.join(result.changed)}"
    await _record(state, principal, audit.Action.SUBJECT_RECTIFY, subject, "ok" if result.found else "no_data", detail)
    return result


async def answer_erase(state: TrackerState, principal: Principal, body: SubjectIn) -> subjects.EraseResult:
    subject = subjects.Subject.of(state.keyring, body.email)
    result = await subjects.erase(state.store, subject, state.erased)
    counts = result.erased
    detail = f"messages={counts.messages} recipient_rows={counts.recipient_rows} records={counts.records}"
    detail += f" events={counts.events}"
    await _record(state, principal, audit.Action.SUBJECT_ERASE, subject, "ok" if result.found else "no_data", detail)
    return result


async def answer_object(state: TrackerState, principal: Principal, body: SubjectIn) -> subjects.ObjectResult:
    subject = subjects.Subject.of(state.keyring, body.email)
    result = await subjects.object_to_tracking(state.store, subject, _now_ms())
    messages = await subjects.message_count(state.store, subject)
    detail = f"messages={messages} already_objected={str(result.already_objected).lower()}"
    await _record(state, principal, audit.Action.SUBJECT_OBJECT, subject, "ok", detail)
    return result


# -- the API's handlers ------------------------------------------------------------------------------------


async def access(request: web.Request) -> web.Response:
    state, principal, body = await _parse(request, SubjectIn, audit.Action.SUBJECT_ACCESS)
    return _json(await answer_access(state, principal, body, audit.Action.SUBJECT_ACCESS))


async def export(request: web.Request) -> web.Response:
    state, principal, body = await _parse(request, SubjectIn, audit.Action.SUBJECT_EXPORT)
    document = await answer_access(state, principal, body, audit.Action.SUBJECT_EXPORT)
    return _json(document, {"Content-Disposition": f'attachment; filename="{EXPORT_FILENAME}"'})


async def rectify(request: web.Request) -> web.Response:
    state, principal, body = await _parse(request, RectifyIn, audit.Action.SUBJECT_RECTIFY)
    return _json(await answer_rectify(state, principal, body))


async def erase(request: web.Request) -> web.Response:
    state, principal, body = await _parse(request, SubjectIn, audit.Action.SUBJECT_ERASE)
    return _json(await answer_erase(state, principal, body))


async def object_to_tracking(request: web.Request) -> web.Response:
    state, principal, body = await _parse(request, SubjectIn, audit.Action.SUBJECT_OBJECT)
    return _json(await answer_object(state, principal, body))


_HANDLERS: dict[str, Callable[[web.Request], Awaitable[web.Response]]] = {
    "/api/v1/subjects/access": access,
    "/api/v1/subjects/export": export,
    "/api/v1/subjects/rectify": rectify,
    "/api/v1/subjects/erase": erase,
    "/api/v1/subjects/object": object_to_tracking,
}


def add_routes(router: web.UrlDispatcher) -> None:
    for path, handler in _HANDLERS.items():
        router.add_post(path, handler)
