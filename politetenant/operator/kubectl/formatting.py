"""What ``kubectl polite`` reads and prints: argument values, ages and tables as kubectl shows them,
the status page and its JSON, and the patches the commands send. Pure functions, no API calls."""

from __future__ import annotations

import argparse
import re
import secrets
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from politetenant.operator.model.names import ROTATE_ANNOTATION, vault_name
from politetenant.operator.model.patterns import DNS_LABEL_PATTERN
from politetenant.operator.model.tenant import MAX_NAME_LENGTH
from politetenant.operator.model.tenant_status import CONDITION_TYPES

# Markers GitOps controllers put on what they manage: a kubectl change to spec is reverted by the
# next sync unless it is made in git too.
GITOPS_MARKERS = {
    "argocd.argoproj.io/tracking-id": "Argo CD",
    "kustomize.toolkit.fluxcd.io/name": "Flux",
    "helm.toolkit.fluxcd.io/name": "Flux",
}


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


def timeout_text(seconds: float) -> str:
    """A wait as the user typed it for short ones (``30s``), as an age for long ones."""
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
    return {"metadata": {"annotations": {ROTATE_ANNOTATION: value}}}


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


def ordered_conditions(status: dict[str, Any]) -> list[dict[str, Any]]:
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
        for c in ordered_conditions(status)
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
        "conditions": ordered_conditions(status),
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
        f"politetenant {name}: asked the operator to rotate its keys ({ROTATE_ANNOTATION}={value}).\n"
        f"The operator {where}, issues {nxt}, rolls the tracker and reports it in status.keys and an Event;\n"
        "older key versions keep decrypting older rows until they are re-sealed.\n"
    )
