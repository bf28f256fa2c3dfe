"""``kubectl polite``: rotate a tenant's keys, place or lift a legal hold, read a tenant's health.

kubectl runs ``kubectl-polite`` from PATH for ``kubectl polite ...``. The plug-in asks; the operator
acts: ``rotate-keys`` sets the ``polite.io/rotate-keys`` annotation to a new value (the same
trigger an SRE can set with ``kubectl annotate``); ``legal-hold`` merge-patches ``spec.legalHold``,
the user's own field, so the API server's CEL rules judge it; ``status`` reads ``status`` and the
tenant's Events. Cluster access works as kubectl's: ``--kubeconfig``, then ``KUBECONFIG``, then
``~/.kube/config``, then the pod's service account; ``--context`` picks a context.

Exit codes: 0 done; 1 the cluster said no (unknown tenant, refused change, wait timed out);
2 bad arguments or kubeconfig; 3 the API server cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from politetenant.operator.model.names import vault_name
from politetenant.operator.model.tenant import (
    CONDITION_TYPES,
    DNS_LABEL_PATTERN,
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    NAMESPACE_PREFIX,
    PLURAL,
    VERSION,
)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

ROTATE_KEYS_ANNOTATION = "polite.io/rotate-keys"
FIELD_MANAGER = "kubectl-polite"  # shows in managedFields who changed spec.legalHold
MERGE_PATCH = "application/merge-patch+json"
# Where Events about a cluster-scoped tenant are: kopf posts them in its credentials' default
# namespace (kopf/_cogs/clients/events.py: in a pod, the pod's; from a kubeconfig, the context's;
# else "default"), and the operator sets that to its own namespace, politetenant-system unless the
# chart was installed elsewhere.
OPERATOR_NAMESPACE = os.environ.get("POLITE_OPERATOR_NAMESPACE", "politetenant-system")
POLL_SECONDS = 2.0
# Markers GitOps controllers put on what they manage: a kubectl change to spec is reverted by the
# next sync unless it is made in git too.
GITOPS_MARKERS = {
    "argocd.argoproj.io/tracking-id": "Argo CD",
    "kustomize.toolkit.fluxcd.io/name": "Flux",
    "helm.toolkit.fluxcd.io/name": "Flux",
}


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


# -- pure helpers: values, ages, tables ---------------------------------------------------------------
def tenant_name(text: str) -> str:
    """``NAME`` as typed, checked to be a tenant name (argparse type)."""
    if len(text) > MAX_NAME_LENGTH or not re.fullmatch(DNS_LABEL_PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a tenant name: use lower-case letters, digits and '-', starting and ending "
            f"with a letter or digit, at most {MAX_NAME_LENGTH} characters"
        )
    return text


def event_count(text: str) -> int:
    """How many Events to show: 0 or more (argparse type)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: use 0 or more")
    return int(text)


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a kubectl-style duration: ``90``, ``90s``, ``1m30s``, ``1.5h`` (argparse type)."""
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use e.g. 30s, 5m or 1h")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def human_age(seconds: float) -> str:
    """An age as kubectl prints one (apimachinery's ``duration.HumanDuration``): 45s, 5m30s, 3h, 9d."""
    if seconds < -1:
        return "<invalid>"
    total = max(int(seconds), 0)
    if total < 120:
        return f"{total}s"
    minutes, hours = total // 60, total // 3600
    days, years = hours // 24, hours // (24 * 365)
    if minutes < 10:
        return f"{minutes}m{total % 60}s" if total % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def _timeout_text(seconds: float) -> str:
    return f"{seconds:g}s" if seconds < 120 else human_age(seconds)


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp from the API (``Z`` or an offset, with or without fractions), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(value: object, now: datetime) -> str:
    """How long ago ``value`` (a timestamp string) was, or ``-`` when it is missing or unreadable."""
    moment = parse_time(value)
    return human_age((now - moment).total_seconds()) if moment else "-"


def clean(value: object) -> str:
    """One line of printable text: newlines, tabs and escape sequences from the API become spaces.

    Condition and Event messages come from whoever wrote them; a raw ESC could restyle or rewrite
    the terminal, and a newline would break the table.
    """
    text = "" if value is None else str(value)
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text).strip()


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns aligned as kubectl aligns them (three spaces apart), no trailing blanks."""
    lines = [[clean(cell) or "-" for cell in row] for row in [headers, *rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def rotation_value(now: datetime, suffix: str | None = None) -> str:
    """A new value for the rotate annotation: RFC 3339 time and a random suffix, unique per call."""
    return f"{now.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}-{suffix or secrets.token_hex(4)}"


def rotate_patch(value: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {ROTATE_KEYS_ANNOTATION: value}}}


def legal_hold_patch(on: bool) -> dict[str, Any]:
    return {"spec": {"legalHold": on}}


def keys_version(tenant: dict[str, Any]) -> int | None:
    version = ((tenant.get("status") or {}).get("keys") or {}).get("version")
    return version if isinstance(version, int) else None


def gitops_manager(tenant: dict[str, Any]) -> str | None:
    """Which GitOps controller manages the tenant, from the markers it leaves, or None."""
    meta = tenant.get("metadata") or {}
    marks = {**(meta.get("labels") or {}), **(meta.get("annotations") or {})}
    return next((tool for key, tool in GITOPS_MARKERS.items() if key in marks), None)


def _ordered_conditions(status: dict[str, Any]) -> list[dict[str, Any]]:
    rank = {kind: i for i, kind in enumerate(CONDITION_TYPES)}
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    return sorted(conditions, key=lambda c: (rank.get(str(c.get("type")), len(rank)), str(c.get("type"))))


def condition_rows(status: dict[str, Any], now: datetime) -> list[list[str]]:
    """TYPE, STATUS, REASON, AGE (since the last transition), MESSAGE; Ready first, as in the CRD."""
    return [
        [
            str(c.get("type", "")),
            str(c.get("status", "")),
            str(c.get("reason", "")),
            age(c.get("lastTransitionTime"), now),
            str(c.get("message", "")),
        ]
        for c in _ordered_conditions(status)
    ]


def event_time(event: dict[str, Any]) -> datetime | None:
    """When an Event was last seen, from whichever of its time fields the writer filled in."""
    series = event.get("series") or {}
    for value in (series.get("lastObservedTime"), event.get("lastTimestamp"), event.get("eventTime")):
        if moment := parse_time(value):
            return moment
    return parse_time(event.get("firstTimestamp")) or parse_time((event.get("metadata") or {}).get("creationTimestamp"))


def _event_count(event: dict[str, Any]) -> int:
    count = (event.get("series") or {}).get("count") or event.get("count") or 1
    return count if isinstance(count, int) else 1


def event_rows(events: Sequence[dict[str, Any]], now: datetime) -> list[list[str]]:
    """TYPE, REASON, AGE, MESSAGE; a repeated Event reads ``5m (x4 over 1h)`` as in kubectl describe."""
    rows = []
    for event in events:
        last = event_time(event)
        when = human_age((now - last).total_seconds()) if last else "-"
        count = _event_count(event)
        if count > 1 and (first := parse_time(event.get("firstTimestamp"))):
            when += f" (x{count} over {human_age((now - first).total_seconds())})"
        rows.append([str(event.get("type", "")), str(event.get("reason", "")), when, str(event.get("message", ""))])
    return rows


def latest_events(events: Iterable[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The ``limit`` most recent Events, oldest first (the order kubectl describe uses)."""
    epoch = datetime.min.replace(tzinfo=UTC)
    ordered = sorted(events, key=lambda e: event_time(e) or epoch)
    return ordered[-limit:] if limit > 0 else []


def status_document(tenant: dict[str, Any], events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The tenant's health for machines (``-o json``): the API's own field names and values."""
    meta, spec, status = tenant.get("metadata") or {}, tenant.get("spec") or {}, tenant.get("status") or {}
    return {
        "name": meta.get("name"),
        "displayName": spec.get("displayName"),
        "region": spec.get("region"),
        "phase": status.get("phase"),
        "namespace": status.get("namespace"),
        "endpoint": status.get("endpoint"),
        "keys": status.get("keys"),
        "legalHold": bool(spec.get("legalHold", False)),
        "deletionPolicy": spec.get("deletionPolicy", "Retain"),
        "deleting": bool(meta.get("deletionTimestamp")),
        "generation": meta.get("generation"),
        "observedGeneration": status.get("observedGeneration"),
        "conditions": _ordered_conditions(status),
        "events": [
            {
                "type": e.get("type"),
                "reason": e.get("reason"),
                "message": e.get("message"),
                "count": _event_count(e),
                "lastSeen": (t.isoformat() if (t := event_time(e)) else None),
                "namespace": (e.get("metadata") or {}).get("namespace"),
            }
            for e in events
        ],
    }


def _keys_line(status: dict[str, Any], now: datetime) -> str:
    keys = status.get("keys") or {}
    if keys.get("version") is None:
        return "-"
    rotated = f", rotated {age(keys['rotatedAt'], now)} ago" if keys.get("rotatedAt") else ""
    return f"version {keys['version']}{rotated}"


def _generation_line(meta: dict[str, Any], status: dict[str, Any]) -> str:
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is None or observed is None or generation == observed:
        return f"{generation if generation is not None else '-'} (observed {observed if observed is not None else '-'})"
    return f"{generation} (status describes {observed}: the operator has not caught up yet)"


def describe_tenant(
    tenant: dict[str, Any], events: Sequence[dict[str, Any]], now: datetime, events_note: str = ""
) -> str:
    """The human ``status`` page: facts, the conditions table, the latest Events."""
    meta, spec, status = tenant.get("metadata") or {}, tenant.get("spec") or {}, tenant.get("status") or {}
    facts = [
        ("Name", meta.get("name")),
        ("Display name", spec.get("displayName")),
        ("Phase", status.get("phase") or ("Deleting" if meta.get("deletionTimestamp") else None)),
        ("Region", spec.get("region")),
        ("Namespace", status.get("namespace")),
        ("Endpoint", status.get("endpoint")),
        ("Keys", _keys_line(status, now)),
        ("Legal hold", "on" if spec.get("legalHold") else "off"),
        ("Deletion policy", spec.get("deletionPolicy", "Retain")),
        ("Generation", _generation_line(meta, status)),
    ]
    lines = [f"{label + ':':<17}{clean(value) or '-'}" for label, value in facts]
    lines.append("")
    if rows := condition_rows(status, now):
        lines += ["Conditions:", render_table(("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"), rows)]
    else:
        lines.append("Conditions:      none reported yet (is the operator running?)")
    lines.append("")
    if events:
        lines += [
            f"Events (latest {len(events)}, oldest first){events_note}:",
            render_table(("TYPE", "REASON", "AGE", "MESSAGE"), event_rows(events, now)),
        ]
    else:
        lines.append(f"Events:          none found{events_note}")
    return "\n".join(lines) + "\n"


def rotation_plan(tenant: dict[str, Any], value: str) -> str:
    """What happens after ``rotate-keys``, in the words an SRE checks against."""
    name = tenant["metadata"]["name"]
    version = keys_version(tenant)
    provider = ((tenant.get("spec") or {}).get("keys") or {}).get("provider", "local")
    where = f"rotates Vault Transit key {vault_name(name)}" if provider == "vault" else "rotates the local key"
    nxt = f"data key version {version + 1}" if version is not None else "a new data key version"
    return (
        f"politetenant {name}: asked the operator to rotate its keys ({ROTATE_KEYS_ANNOTATION}={value}).\n"
        f"The operator {where}, issues {nxt}, rolls the tracker and reports it in status.keys and an Event;\n"
        "older key versions keep decrypting older rows until they are re-sealed.\n"
    )


# -- the Kubernetes API: a thin layer over the kubernetes client -------------------------------------
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


# -- commands ------------------------------------------------------------------------------------------
def _deleting(tenant: dict[str, Any]) -> bool:
    return bool((tenant.get("metadata") or {}).get("deletionTimestamp"))


def _condition(tenant: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in _ordered_conditions(tenant.get("status") or {}) if c.get("type") == kind), {})


def wait_for_rotation(api: TenantApi, name: str, before: int | None, timeout: float) -> int:
    """Poll until ``status.keys.version`` passes ``before``; the new version. A blip of the API is waited out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            current = api.get(name)
        except Unreachable:
            if time.monotonic() >= deadline:
                raise
        else:
            version = keys_version(current)
            if version is not None and (before is None or version > before):
                return version
            if time.monotonic() >= deadline:
                keys = _condition(current, "KeysReady")
                why = (
                    f" KeysReady is {keys.get('status')}: {keys.get('reason')} {clean(keys.get('message'))}"
                    if keys
                    else ""
                )
                raise PluginError(
                    f"timed out after {_timeout_text(timeout)}: status.keys.version is still {before or 'unset'}.{why}"
                )
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))


def rotate_keys(api: TenantApi, name: str, *, wait: bool, timeout: float, out: TextIO) -> int:
    tenant = api.get(name)
    if _deleting(tenant):
        raise PluginError(f"politetenant {name} is being deleted; its keys are not rotated")
    before = keys_version(tenant)
    value = rotation_value(datetime.now(UTC))
    api.patch(name, rotate_patch(value))
    out.write(rotation_plan(tenant, value))
    if not wait:
        out.write(f"Follow it with: kubectl polite status {name}\n")
        return 0
    out.write(f"Waiting up to {_timeout_text(timeout)} for status.keys.version to pass {before or 'unset'}...\n")
    out.flush()
    out.write(f"Keys rotated: version {wait_for_rotation(api, name, before, timeout)}.\n")
    return 0


def legal_hold(api: TenantApi, name: str, *, on: bool, out: TextIO, err: TextIO) -> int:
    tenant = api.get(name)
    spec = tenant.get("spec") or {}
    state = "on" if on else "off"
    if bool(spec.get("legalHold", False)) == on:
        out.write(f"politetenant {name}: legal hold is already {state}; nothing changed.\n")
        return 0
    if on and spec.get("deletionPolicy") == "Delete":
        err.write(
            f"warning: politetenant {name} has deletionPolicy Delete, and the API server refuses a legal hold "
            "with it (deletionPolicy Delete is refused while legalHold is true): set deletionPolicy Retain first.\n"
        )
    if tool := gitops_manager(tenant):
        err.write(
            f"warning: {tool} manages politetenant {name}: set spec.legalHold: {str(on).lower()} in git too, "
            "or the next sync puts the old value back.\n"
        )
    api.patch(name, legal_hold_patch(on))
    if on:
        out.write(
            f"politetenant {name}: legal hold is on. Retention deletes nothing (its CronJob is suspended) "
            "and deleting the tenant waits until the hold is lifted.\n"
        )
    else:
        out.write(f"politetenant {name}: legal hold is off. Retention resumes on its schedule.\n")
        if _deleting(tenant):
            policy = spec.get("deletionPolicy", "Retain")
            out.write(f"The tenant is being deleted; deletion now proceeds (deletionPolicy {policy}).\n")
    return 0


def show_status(api: TenantApi, name: str, *, output: str, limit: int, operator_namespace: str, out: TextIO) -> int:
    tenant = api.get(name)
    found, note = api.events(tenant, operator_namespace)
    events = latest_events(found, limit)
    if output == "table":
        out.write(describe_tenant(tenant, events, datetime.now(UTC), note))
    elif output == "json":
        out.write(json.dumps(status_document(tenant, events), indent=2) + "\n")
    else:
        out.write(yaml.safe_dump(status_document(tenant, events), sort_keys=False))
    return 0


# -- command line ---------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Bad arguments end as a UsageError (exit 2) naming what to fix, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\nSee '{self.prog} --help'.")


def _add_connection_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # The flags work before or after the command, as kubectl's do. On a subcommand they default to
    # SUPPRESS, so one left out there does not overwrite the value given before the command.
    unset = None if top else argparse.SUPPRESS
    parser.add_argument("--kubeconfig", default=unset, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", default=unset, help="kubeconfig context to use")
    parser.add_argument(
        "--request-timeout",
        type=parse_duration,
        default=30.0 if top else argparse.SUPPRESS,
        metavar="DURATION",
        help="give up on one API request after this long (default 30s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kubectl polite", description="Operate PoliteTenants: keys, legal hold, health.")
    _add_connection_flags(parser, top=True)
    connection = _Parser(add_help=False)
    _add_connection_flags(connection, top=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    rotate = sub.add_parser("rotate-keys", parents=[connection], help="rotate a tenant's encryption keys")
    rotate.add_argument("name", type=tenant_name, metavar="NAME")
    rotate.add_argument("--wait", action="store_true", help="wait until status.keys.version increases")
    rotate.add_argument(
        "--timeout", type=parse_duration, default=300.0, metavar="DURATION", help="with --wait (default 5m)"
    )
    hold = sub.add_parser("legal-hold", parents=[connection], help="place (on) or lift (off) a tenant's legal hold")
    hold.add_argument("name", type=tenant_name, metavar="NAME")
    hold.add_argument("state", choices=("on", "off"), metavar="on|off")
    status = sub.add_parser("status", parents=[connection], help="a tenant's phase, conditions and latest Events")
    status.add_argument("name", type=tenant_name, metavar="NAME")
    status.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    status.add_argument("--events", type=event_count, default=10, metavar="N", help="latest Events shown (default 10)")
    status.add_argument(
        "--operator-namespace",
        default=OPERATOR_NAMESPACE,
        help="where the operator runs, searched for Events when listing them cluster-wide is not allowed",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("name a command: rotate-keys, legal-hold or status\nSee 'kubectl polite --help'.")
        api = connect(args.kubeconfig, args.context, args.request_timeout)
        if args.command == "rotate-keys":
            return rotate_keys(api, args.name, wait=args.wait, timeout=args.timeout, out=out)
        if args.command == "legal-hold":
            return legal_hold(api, args.name, on=args.state == "on", out=out, err=err)
        return show_status(
            api, args.name, output=args.output, limit=args.events, operator_namespace=args.operator_namespace, out=out
        )
    except PluginError as exc:
        err.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
