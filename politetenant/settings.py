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
        2.0, ge=0, le=3600, description="hits this soon after registration are machine prefetches"
    )

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

    @field_validator("scanner_networks")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not a CIDR network") from exc
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
