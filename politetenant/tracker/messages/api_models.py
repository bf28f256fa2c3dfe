"""Request and response bodies of the HTTP API (the wire contract in docs/architecture.md, Contracts)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from politetenant.settings import TrackingMode

# No control characters: JSON Schema's \s and Python's disagree on some of them (U+0085).
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$"
Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=320, pattern=EMAIL_PATTERN)]
AttributeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
AttributeValue = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=4096)]  # matched after stripping, as links are
# A BCP 47 language tag as mail clients and HTTP use it (en, de, pt-BR, zh-Hant-TW).
LanguageTag = Annotated[str, StringConstraints(max_length=35, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")]

# Hard ceilings; the tenant's TrackerSettings may set lower ones (checked after parsing).
MAX_HTML_CHARS = 32 * 1024 * 1024
MAX_RECIPIENTS = 1_000_000


class RecipientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict, max_length=32, json_schema_extra={"additionalProperties": False}
    )


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Annotated[str, StringConstraints(max_length=998)]
    from_name: Annotated[str, StringConstraints(max_length=200)]
    from_email: Email
    list_name: Annotated[str, StringConstraints(max_length=200)]
    mode: TrackingMode | None = None
    html: Annotated[str, StringConstraints(max_length=MAX_HTML_CHARS)]
    no_track_urls: list[Url] = Field(default_factory=list, max_length=10_000)
    recipients: list[RecipientIn] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    # The language of the tenant's notice to recipients: used when the tenant has a text for it,
    # else the tenant's default language; ignored when the tenant has no notice.
    language: LanguageTag | None = None


class RecipientOut(BaseModel):
    email: str
    token: str | None


class MessageOut(BaseModel):
    id: str
    mode: TrackingMode
    html_template: str
    recipients: list[RecipientOut]
    # For recipients whose token is null (they objected): the body as given, with no beacon and no
    # rewritten link. Absent when nobody objected.
    html_untracked: str | None = None
