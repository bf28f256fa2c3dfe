"""The few Kubernetes API calls ``kubectl polite`` makes, over the kubernetes client, configured the
way kubectl finds its cluster; every failure comes out as a ``PluginError`` with its exit code."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from politetenant.operator.kube.client import MERGE_PATCH
from politetenant.operator.model.tenant import GROUP, KIND, NAMESPACE_PREFIX, PLURAL, VERSION

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

FIELD_MANAGER = "kubectl-polite"  # shows in managedFields who changed spec.legalHold


class PluginError(Exception):
    """A failure the user can act on; the message says what happened, ``exit_code`` how it ends."""

    exit_code = EXIT_FAILED


class UsageError(PluginError):
    exit_code = EXIT_USAGE


class Unreachable(PluginError):
    exit_code = EXIT_UNREACHABLE


class ApiRefusal(PluginError):
    """The API server answered with an error Status (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _status_message(exc: ApiException) -> str:
    """The ``message`` of the API server's Status body, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc.reason or f"HTTP {exc.status}")


def _connection_problem(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    # urllib3 prefixes the connection object's repr: keep what the OS said.
    return str(reason).rsplit(">: ", 1)[-1]


class TenantApi:
    """The few calls the plug-in makes; failures come out as PluginErrors that name the server."""

    def __init__(self, api_client: Any, server: str, request_timeout: float | None = None) -> None:
        self.server = server
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._timeout = request_timeout or None

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            status = int(exc.status or 0)
            if status == 0:  # the client's way of reporting TLS failures
                raise Unreachable(f"cannot reach the Kubernetes API at {self.server}: {exc.reason}") from None
            if status >= 500:
                raise Unreachable(
                    f"the Kubernetes API at {self.server} answered {status}: {_status_message(exc)}"
                ) from None
            if status == 401:
                raise ApiRefusal(
                    status, f"the Kubernetes API at {self.server} did not accept the credentials: log in again"
                ) from None
            raise ApiRefusal(status, _status_message(exc)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unreachable(f"cannot reach the Kubernetes API at {self.server}: {_connection_problem(exc)}") from None

    def get(self, name: str) -> dict[str, Any]:
        try:
            return dict(self._call(self._custom.get_cluster_custom_object, GROUP, VERSION, PLURAL, name))
        except ApiRefusal as exc:
            if exc.status == 404:
                raise PluginError(f"politetenant {name} not found") from None
            raise

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386) of the tenant."""
        try:
            return dict(
                self._call(
                    self._custom.patch_cluster_custom_object,
                    GROUP,
                    VERSION,
                    PLURAL,
                    name,
                    body,
                    field_manager=FIELD_MANAGER,
                    _content_type=MERGE_PATCH,
                )
            )
        except ApiRefusal as exc:
            if exc.status == 404:
                raise PluginError(f"politetenant {name} not found") from None
            raise PluginError(f"the API server refused the change: {exc}") from None

    def _list_events(self, selector: str, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            response = self._call(
                self._core.list_event_for_all_namespaces, field_selector=selector, _preload_content=False
            )
        else:
            response = self._call(
                self._core.list_namespaced_event, namespace, field_selector=selector, _preload_content=False
            )
        return [item for item in json.loads(response.data).get("items") or [] if isinstance(item, dict)]

    def events(self, tenant: dict[str, Any], operator_namespace: str) -> tuple[list[dict[str, Any]], str]:
        """Events about the tenant, and a note on where they were looked for when not cluster-wide.

        One cluster-wide list finds them wherever the operator posted them (kubectl describe does the
        same). Without the right to list cluster-wide, look where they can be: the operator's
        namespace, ``default`` and the tenant's own. Events of an earlier tenant of the same name
        (another uid) are left out.
        """
        meta = tenant["metadata"]
        selector = f"involvedObject.name={meta['name']},involvedObject.kind={KIND}"
        try:
            found, note = self._list_events(selector, None), ""
        except ApiRefusal as exc:
            if exc.status != 403:
                raise
            found, searched = [], []
            for namespace in dict.fromkeys((operator_namespace, "default", NAMESPACE_PREFIX + meta["name"])):
                try:
                    found += self._list_events(selector, namespace)
                    searched.append(namespace)
                except ApiRefusal as refusal:
                    if refusal.status not in (403, 404):
                        raise
            note = f" in namespaces {', '.join(searched)}" if searched else " (not allowed to list Events)"
        uid = meta.get("uid")
        return [e for e in found if not uid or (e.get("involvedObject") or {}).get("uid") in (None, uid)], note


def connect(kubeconfig: str | None, context: str | None, request_timeout: float | None = None) -> TenantApi:
    """An API client configured the way kubectl finds its cluster."""
    cfg = client.Configuration()
    if kubeconfig and not Path(kubeconfig).expanduser().is_file():
        raise UsageError(f"--kubeconfig {kubeconfig}: no such file")
    paths = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    if any(Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p):
        try:
            contexts, _current = config.list_kube_config_contexts(paths)  # type: ignore[no-untyped-call]
            if context and context not in [c["name"] for c in contexts or []]:
                raise UsageError(f"--context {context}: no such context in {paths}")
            config.load_kube_config(  # type: ignore[no-untyped-call]
                paths, context=context, client_configuration=cfg, persist_config=False
            )
        except config.ConfigException as exc:
            raise UsageError(f"kubeconfig {paths}: {exc}") from None
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        if context:
            raise UsageError("--context needs a kubeconfig; none found (running in a pod, with its service account)")
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        raise UsageError("no cluster configured: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config")
    # One attempt per request: a refused connection is reported at once, not retried with warnings.
    cfg.retries = 0
    return TenantApi(client.ApiClient(cfg), cfg.host, request_timeout)
