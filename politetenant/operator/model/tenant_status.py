"""The PoliteTenant status as pydantic models: written by the operator only, never part of the spec.

The CRD's status schema is generated from ``PoliteTenantStatus`` (``model.crd``); conditions are
shaped like metav1.Condition so kubectl, kstatus and GitOps tools read them; ``Reconciling`` and
``Stalled`` are kstatus's abnormal-true conditions (``model.status`` says when each holds).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# metav1.Condition's rules for condition types (ours are CamelCase words) and reasons.
CONDITION_TYPE_PATTERN = r"^[A-Z][A-Za-z0-9]*$"
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

CONDITION_TYPES = (
    "Ready",
    "Reconciling",
    "Stalled",
    "NamespaceReady",
    "KeysReady",
    "DatabaseReady",
    "TrackerReady",
    "RetentionReady",
    "Placement",
)
PHASES = ("Pending", "Provisioning", "Ready", "Degraded", "Deleting", "Failed")


class StatusPart(BaseModel):
    """Base of the status parts: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Condition(StatusPart):
    """One aspect of the tenant's health, shaped like metav1.Condition so tools read it."""

    type: str = Field(
        max_length=64,
        pattern=CONDITION_TYPE_PATTERN,
        description="Ready, Reconciling, Stalled (the kstatus conditions), NamespaceReady, KeysReady, "
        "DatabaseReady, TrackerReady, RetentionReady or Placement.",
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
        description="Why, in one CamelCase word from the operator's list of reasons.",
    )
    message: str = Field("", max_length=32768, description="Why, for people.")
    observed_generation: int | None = Field(None, ge=0, description="Spec generation the condition was set from.")
    last_transition_time: str | None = Field(
        None, json_schema_extra={"format": "date-time"}, description="When status last changed (RFC 3339)."
    )


class DatabaseStatus(StatusPart):
    engine: Literal["cnpg", "statefulset", "external"] | None = Field(
        None,
        description="The engine resolved when the tenant was first provisioned; it never changes by itself.",
    )


class KeysStatus(StatusPart):
    version: int | None = Field(None, ge=1, le=0xFFFF, description="Newest key version; new data is sealed with it.")
    rotated_at: str | None = Field(
        None, json_schema_extra={"format": "date-time"}, description="When the keys were last rotated (RFC 3339)."
    )


class PoliteTenantStatus(StatusPart):
    """What the operator observed; written by the operator only."""

    observed_generation: int | None = Field(None, ge=0, description="Spec generation the status describes.")
    phase: Literal["Pending", "Provisioning", "Ready", "Degraded", "Deleting", "Failed"] | None = Field(
        None, description="Summary for people; tools read conditions."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Current state of each aspect, one per type.",
    )
    namespace: str | None = Field(None, max_length=63, description="The tenant's namespace.")
    endpoint: str | None = Field(None, max_length=2048, description="Base URL of the tenant's tracker.")
    keys: KeysStatus | None = Field(None, description="The tenant's key versions.")
    database: DatabaseStatus | None = Field(None, description="The tenant's database.")
