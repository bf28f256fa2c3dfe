"""What a tenant tracks and how it judges: modes, segments, the recipient notice, people vs machines.

The ``tracking`` and ``judging`` parts of the PoliteTenant spec; the tracker receives them as its
TrackerSettings (``render/tenant.py``), so each field's words here are what the tracker does.
"""

from __future__ import annotations

import re
from typing import Self

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from politetenant.operator.model.spec_types import (
    LANGUAGE_TAG_PATTERN,
    MAX_NETWORKS,
    MAX_NOTICE_LANGUAGES,
    MAX_SEGMENTS,
    CelRule,
    Cidr,
    LanguageTag,
    NoticeText,
    SegmentName,
    Spec,
    _no_repeats,
    cel,
)
from politetenant.settings import TrackingMode

DEFAULT_MODE_ALLOWED = CelRule(
    "self.defaultMode in self.allowedModes", "defaultMode must be one of allowedModes", ".defaultMode"
)
# A CRD cannot constrain map keys in OpenAPI, hence a rule for the language tags.
NOTICE_LANGUAGE_TAGS = CelRule(
    f"self.texts.all(language, language.matches('{LANGUAGE_TAG_PATTERN}'))",
    "every key of texts must be a language tag such as en, de or pt-BR",
    ".texts",
)
NOTICE_DEFAULT_HAS_TEXT = CelRule(
    "self.defaultLanguage in self.texts",
    "defaultLanguage must be one of the languages of texts: recipients of other languages read that text",
    ".defaultLanguage",
)


class Notice(Spec):
    """What every tracked message tells its recipients, in their language."""

    model_config = ConfigDict(json_schema_extra=cel(NOTICE_LANGUAGE_TAGS, NOTICE_DEFAULT_HAS_TEXT))

    texts: dict[str, NoticeText] = Field(
        max_length=MAX_NOTICE_LANGUAGES,
        description="The notice in each language, by language tag (en, de, pt-BR): plain text, the words of the "
        "link to the recipient's page.",
    )
    default_language: LanguageTag = Field(
        "en",
        description="Language of the notice of a message that asks for none, or for one without a text; a key "
        "of texts.",
    )

    @field_validator("texts")
    @classmethod
    def _languages(cls, texts: dict[str, str]) -> dict[str, str]:
        NOTICE_LANGUAGE_TAGS.require(all(re.search(LANGUAGE_TAG_PATTERN, language) for language in texts))
        return texts

    @model_validator(mode="after")
    def _default_has_text(self) -> Self:
        NOTICE_DEFAULT_HAS_TEXT.require(self.default_language in self.texts)
        return self


class Tracking(Spec):
    model_config = ConfigDict(json_schema_extra=cel(DEFAULT_MODE_ALLOWED))

    default_mode: TrackingMode = Field(TrackingMode.ANONYMOUS, description="Mode of a message that names none.")
    allowed_modes: list[TrackingMode] = Field(
        default_factory=lambda: [TrackingMode.INDIVIDUAL, TrackingMode.ANONYMOUS, TrackingMode.AGGREGATE],
        min_length=1,
        max_length=3,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Modes a message may ask for; a request for another mode is refused, never changed.",
    )
    mode_locked: bool = Field(
        False, strict=True, description="Only defaultMode is allowed: a message asking for another mode is refused."
    )
    min_segment_size: int = Field(
        10, ge=5, le=100_000, strict=True, description="Fewest people any figure may describe (never below 5)."
    )
    segments: list[SegmentName] = Field(
        default_factory=list,
        max_length=MAX_SEGMENTS,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Recipient attributes (department, site) kept on tracking records, by which reports may be "
        "segmented; every other attribute a sender passes is dropped.",
    )
    notice: Notice | None = Field(
        None,
        description="A short notice appended to every tracked message, linking to the recipient's page (/p/), "
        "where they see what is recorded and may object; unset, messages carry none.",
    )

    _segments_are_a_set = field_validator("segments")(_no_repeats("segments", "an attribute"))

    @field_validator("allowed_modes")
    @classmethod
    def _modes_are_a_set(cls, modes: list[TrackingMode]) -> list[TrackingMode]:
        # The CRD says x-kubernetes-list-type: set, so the API server refuses a repeated mode too.
        if len(set(modes)) != len(modes):
            raise PydanticCustomError("duplicate", "allowedModes must not repeat a mode")
        return modes

    @model_validator(mode="after")
    def _default_mode_is_allowed(self) -> Self:
        DEFAULT_MODE_ALLOWED.require(self.default_mode in self.allowed_modes)
        return self


class Judging(Spec):
    """How the tracker tells people from machines (the judging classes of DESIGN section 4)."""

    apple_privacy_networks: list[Cidr] = Field(
        default_factory=lambda: ["17.0.0.0/8"],
        max_length=MAX_NETWORKS,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Networks (CIDR) from which a bare Mozilla/5.0 open is Apple Mail Privacy Protection, "
        "reported apart and never in rates.",
    )
    gateway_networks: list[Cidr] | None = Field(
        None,
        max_length=MAX_NETWORKS,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Networks (CIDR) of mail security gateways, whose hits are machines; unset: the tracker's "
        "built-in list (Microsoft, Mimecast, Proofpoint, Barracuda); an empty list: none.",
    )
    scanner_networks: list[Cidr] = Field(
        default_factory=list,
        max_length=MAX_NETWORKS,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Networks (CIDR) of the customer's own security scanners, whose hits are machines.",
    )
    early_hit_seconds: int = Field(
        10,
        ge=0,
        le=3600,
        strict=True,
        description="Hits this soon after a message's first hit are a gateway's delivery scan.",
    )
    burst_seconds: int = Field(
        10, ge=0, le=3600, strict=True, description="Hits of one copy this close together are one burst."
    )
    gateway_click_seconds: int = Field(
        120,
        ge=0,
        le=86_400,
        strict=True,
        description="A click from a gateway network counts as a person's only after an open of the copy this soon "
        "before.",
    )

    _apple_is_a_set = field_validator("apple_privacy_networks")(_no_repeats("applePrivacyNetworks", "a network"))
    _gateways_are_a_set = field_validator("gateway_networks")(_no_repeats("gatewayNetworks", "a network"))
    _scanners_are_a_set = field_validator("scanner_networks")(_no_repeats("scannerNetworks", "a network"))
