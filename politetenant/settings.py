"""TrackerSettings: the contract the operator writes (a ConfigMap) and the tracker reads.

One model, read from a YAML file and/or ``POLITE_*`` environment variables (environment wins), so a
laptop, the demo and a Kubernetes pod configure the tracker the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "POLITE_"
SPOOL_MIN_BYTES = 4 * 1024 * 1024  # a few batches of events: less is a typo (a missing unit), not a budget


class TrackingMode(StrEnum):
    INDIVIDUAL = "individual"
    ANONYMOUS = "anonymous"
    AGGREGATE = "aggregate"


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the field and what to fix."""


class TrackerSettings(BaseModel):
    """Everything a tenant's tracker needs to know about its tenant and its limits.

    ``spool_max_bytes`` (default 1 GiB, at least 4 MiB) bounds the spool directory, where events wait
    on disk while the database is away: the operator sets it below the size of the volume it mounts
    at ``spool_dir``, so that the disk never fills and a SIGTERM can always write out what is in
    memory. Beyond the budget, while the database takes no events, hits are answered 503.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_id: str = Field("local", min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    public_base_url: str = Field("http://127.0.0.1:8080", pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    default_mode: TrackingMode = TrackingMode.ANONYMOUS
    allowed_modes: tuple[TrackingMode, ...] = (
        TrackingMode.INDIVIDUAL,
        TrackingMode.ANONYMOUS,
        TrackingMode.AGGREGATE,
    )
    mode_locked: bool = False
    min_segment_size: int = Field(10, ge=5, le=1_000_000)
    retention_interaction_days: int = Field(395, ge=1)
    retention_message_days: int = Field(730, ge=1)
    legal_hold: bool = False

    # Bot and scanner judgement.
    scanner_networks: tuple[str, ...] = ()
    scanner_user_agents: tuple[str, ...] = ()
    scanner_window_seconds: float = Field(
        10.0, ge=0, le=3600, description="hits this soon after the message's first hit are a gateway's delivery scan"
    )
    apple_privacy_networks: tuple[str, ...] = Field(
        ("17.0.0.0/8",), description="a bare 'Mozilla/5.0' from here is Apple Mail Privacy Protection"
    )
    gateway_networks: tuple[str, ...] | None = Field(
        None, description="mail security gateways' networks; None: the built-in list (judging/networks.py)"
    )
    burst_seconds: float = Field(10.0, ge=0, le=3600, description="hits of one copy this close together are a burst")
    gateway_click_seconds: float = Field(
        120.0, ge=0, le=86_400, description="a gateway click counts only after an open of the copy this soon before"
    )

    # What records keep, and what recipients are told.
    segment_attributes: tuple[str, ...] = Field(
        (), description="recipient attributes kept on tracking records (report segments); all others are dropped"
    )
    notice_texts: dict[str, str] = Field(
        default_factory=dict, description="language -> notice appended to every message; empty: no notice"
    )
    notice_default_language: str = Field("en", pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")

    # The audit chain's head, anchored outside the database (an append-only file).
    audit_anchor_path: str | None = None

    # Read-time beacon.
    read_max_seconds: float = Field(30.0, gt=0, le=120)
    read_frame_seconds: float = Field(1.0, gt=0, le=10)
    read_streams_per_worker: int = Field(2_000, ge=0, le=100_000)

    # Ingest.
    flush_interval_seconds: float = Field(0.5, gt=0, le=60)
    flush_batch_size: int = Field(1_000, ge=1, le=100_000)
    buffer_max_events: int = Field(50_000, ge=1)
    spool_dir: str = "./polite-data/spool"
    spool_max_bytes: int = Field(
        1024 * 1024 * 1024, description="bytes of spool files (all workers) beyond which hits get 503 during an outage"
    )

    # Input limits.
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_html_bytes: int = Field(6 * 1024 * 1024, ge=1024)
    max_recipients: int = Field(250_000, ge=1)

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("scanner_networks", "apple_privacy_networks", "gateway_networks")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        import ipaddress

        for entry in value or ():
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not a CIDR network") from exc
        return value

    @field_validator("segment_attributes")
    @classmethod
    def _attribute_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import re

        for name in value:
            if re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name) is None:
                raise ValueError(f"{name!r} is not an attribute name (lowercase letters, digits, _; at most 40)")
        if len(set(value)) != len(value):
            raise ValueError("an attribute is named twice")
        return value

    @field_validator("notice_texts")
    @classmethod
    def _notices(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        for language, text in value.items():
            if re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*", language) is None:
                raise ValueError(f"{language!r} is not a language tag (e.g. en, de, pt-BR)")
            if not text.strip() or len(text) > 1000:
                raise ValueError(f"the {language} notice must be 1 to 1000 characters")
        return value

    @field_validator("spool_max_bytes")
    @classmethod
    def _spool_budget(cls, value: int) -> int:
        if value < SPOOL_MIN_BYTES:
            raise ValueError(
                f"must be at least {SPOOL_MIN_BYTES} bytes ({SPOOL_MIN_BYTES // 2**20} MiB), room for a few batches;"
                f" got {value}"
            )
        return value

    @model_validator(mode="after")
    def _modes_agree(self) -> TrackerSettings:
        if self.default_mode not in self.allowed_modes:
            raise ValueError(
                f"default_mode {self.default_mode.value!r} is not in allowed_modes "
                f"{[m.value for m in self.allowed_modes]}"
            )
        if self.notice_texts and self.notice_default_language not in self.notice_texts:
            raise ValueError(
                f"notice_default_language {self.notice_default_language!r} has no text in notice_texts"
                f" (languages: {sorted(self.notice_texts)})"
            )
        return self

    @property
    def modes(self) -> tuple[TrackingMode, ...]:
        """Modes a message may ask for: a locked tenant allows only its default."""
        return (self.default_mode,) if self.mode_locked else self.allowed_modes


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, field in TrackerSettings.model_fields.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if "tuple" in str(field.annotation):
            values[name] = [part.strip() for part in raw.replace(";", ",").split(",") if part.strip()]
        else:
            values[name] = raw
    return values


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: where, and what to fix."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{source}: {loc}: {err['msg']}")
    return "\n".join(lines)


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> TrackerSettings:
    """Read the YAML file (if any), overlay ``POLITE_*`` variables, validate."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = "settings"
    if path:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError(f"{source}: file not found") from exc
        except OSError as exc:
            raise SettingsError(f"{source}: cannot read ({exc.strerror})") from exc
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{source}: not valid YAML ({exc.__class__.__name__})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise SettingsError(f"{source}: expected a mapping of setting names to values")
        data.update(loaded)
    data.update(_from_env(environ))
    try:
        return TrackerSettings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc, source)) from exc
