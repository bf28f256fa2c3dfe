"""KubeClient over HTTP: the paths and verbs it sends, 404 as absence, refusals as KubeError, and one
fresh login after a 401 (a rotated ServiceAccount token)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from politetenant.operator.kube.client import KubeClient, KubeError


@dataclass
class Credentials:
    """The parts of kopf.ConnectionInfo the client reads."""

    server: str
    token: str
    trust_env: bool = False
    proxy_url: str | None = None

    def as_http_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def as_ssl_context(self) -> Any:
        raise AssertionError("plain HTTP needs no TLS context")


@dataclass
class Api:
    """A tiny API server: one stored ConfigMap, a token that can be rotated, every request recorded."""

    token: str = "t1"
    seen: list[tuple[str, str, str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.seen.append((request.method, request.path, request.headers.get("Content-Type", ""), body))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"kind": "Status", "reason": "Unauthorized", "message": "nope"}, status=401)
        if request.path.endswith("/configmaps/missing"):
            return web.json_response({"kind": "Status", "reason": "NotFound", "message": "not found"}, status=404)
        if request.method == "POST" and request.path.endswith("/configmaps"):
            return web.json_response({"kind": "Status", "reason": "AlreadyExists", "message": "exists"}, status=409)
        return web.json_response({"kind": "ConfigMap", "metadata": {"name": "x"}, "echo": body})


@pytest.fixture
async def api() -> AsyncIterator[tuple[Api, str]]:
    state = Api()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield state, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_the_client_speaks_paths_verbs_and_merge_patch(api: tuple[Api, str]) -> None:
    state, url = api
    errors: list[KubeError] = []
    client = KubeClient(lambda: Credentials(url, "t1"), on_error=errors.append)  # type: ignore[arg-type,return-value]
    try:
        assert await client.get("v1", "ConfigMap", "missing", "ns") is None
        patched = await client.patch("apps/v1", "Deployment", "tracker", {"spec": {"replicas": 3}}, "ns")
        assert patched["echo"] == {"spec": {"replicas": 3}}
        with pytest.raises(KubeError) as refused:
            await client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}})
        assert refused.value.conflict and refused.value.reason == "AlreadyExists"
        assert await client.delete("v1", "Namespace", "polite-acme")
    finally:
        await client.close()
    assert [(m, p) for m, p, _, _ in state.seen] == [
        ("GET", "/api/v1/namespaces/ns/configmaps/missing"),
        ("PATCH", "/apis/apps/v1/namespaces/ns/deployments/tracker"),
        ("POST", "/api/v1/namespaces/ns/configmaps"),
        ("DELETE", "/api/v1/namespaces/polite-acme"),
    ]
    assert state.seen[1][2] == "application/merge-patch+json"
    assert [e.reason for e in errors] == ["AlreadyExists"]  # counted for the metrics; 404 is not an error


async def test_a_rotated_token_is_fetched_again_once(api: tuple[Api, str]) -> None:
    state, url = api
    tokens = iter(["old", "new", "newer"])
    client = KubeClient(lambda: Credentials(url, next(tokens)))  # type: ignore[arg-type,return-value]
    state.token = "new"
    try:
        assert await client.get("v1", "Namespace", "a") is not None  # 401 with "old", then "new" works
        state.token = "rotated-again-and-unknown"
        with pytest.raises(KubeError) as refused:
            await client.get("v1", "Namespace", "a")
        assert refused.value.status == 401
    finally:
        await client.close()
    assert json.dumps([m for m, *_ in state.seen]) == json.dumps(["GET", "GET", "GET", "GET"])


async def test_an_api_that_does_not_answer_is_a_kube_error() -> None:
    client = KubeClient(lambda: Credentials("http://127.0.0.1:9", "t"), timeout=2)  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(KubeError) as unreachable:
            await client.get("v1", "Namespace", "a")
        assert unreachable.value.status == 0 and unreachable.value.reason == "Unreachable"
    finally:
        await client.close()
