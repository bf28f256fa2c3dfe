"""``/api/v1/openapi.json``: the API described from the same pydantic models that parse it.

Each API module lists its operations (``OPERATIONS``) next to its handlers; this module turns them
into an OpenAPI 3.1 document. Error bodies are one schema for every route, as errors.py makes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
ERROR_TEXT = {
    400: "Malformed request (bad JSON, wrong content type, bad parameter).",
    401: "Missing or invalid bearer token.",
    403: "The token's role may not do this, or the figures are below the tenant's threshold.",
    404: "No such resource.",
    405: "Method not allowed.",
    409: "Not possible for this message's tracking mode.",
    413: "Body or HTML larger than this tenant accepts.",
    422: "A field is invalid; the message names it.",
    503: "Database unavailable or events cannot be kept right now; retry.",
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    roles: tuple[str, ...] = ()  # empty: public
    body: type[BaseModel] | None = None
    response: type[BaseModel] | dict[str, Any] | None = None
    status: int = 200
    content_type: str = "application/json"
    parameters: tuple[dict[str, Any], ...] = ()
    errors: tuple[int, ...] = ()
    extra_responses: Mapping[int, dict[str, Any]] = field(default_factory=dict)


def _schema(model: type[BaseModel] | dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if isinstance(model, dict):
        return model
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs.update(schema.pop("$defs", {}))
    defs[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(op: Operation, defs: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if op.response is not None:
        content = {op.content_type: {"schema": _schema(op.response, defs)}}
        responses[str(op.status)] = {"description": "Success.", "content": content}
    else:
        responses[str(op.status)] = {"description": "Success."}
    errors = set(op.errors) | ({401, 403} if op.roles else set()) | ({400, 413, 422} if op.body else set())
    errors |= {503} if op.roles else set()
    for status in sorted(errors):
        responses[str(status)] = {
            "description": ERROR_TEXT[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    for status, spec in op.extra_responses.items():
        responses[str(status)] = spec
    out: dict[str, Any] = {"summary": op.summary, "responses": responses}
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in _path_params(op.path)
    ]
    out["parameters"] = params + list(op.parameters)
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(op.body, defs)}}}
    if op.roles:
        out["security"] = [{"bearer": []}]
        out["description"] = "Role: " + " or ".join(op.roles) + "."
    else:
        out["security"] = []
    return out


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.replace(".", "/").split("/") if part.startswith("{") and part.endswith("}")]


def build_document(operations: Iterable[Operation], *, version: str = "0.1.0") -> dict[str, Any]:
    defs: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, defs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "PoliteTenant tracker API",
            "version": version,
            "description": "Privacy-first e-mail tracking of one tenant. Errors are JSON {error, message}.",
        },
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


DOCUMENT_OPERATION = Operation("GET", "/api/v1/openapi.json", "This document", response={"type": "object"})


def openapi_handler(operations: Iterable[Operation]) -> Callable[[web.Request], Awaitable[web.Response]]:
    document = build_document(list(operations))

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(document)

    return handler
