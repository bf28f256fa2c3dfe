"""The building blocks of the PoliteTenant models: CEL rules, the camelCase base, checked string types.

``tenant.py`` and ``tracking.py`` build the resource from these; a rule or type is defined here once,
so the CRD, the README's field reference and ``polite-operator render`` all read the same words.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from politetenant.operator.model.patterns import CIDR_PATTERN, QUANTITY_PATTERN

# A recipient attribute name and a language tag, as the tracker's settings check them.
SEGMENT_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
LANGUAGE_TAG_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
# Any character str.strip() keeps (the tracker refuses a blank notice), written out rather than \S:
# RE2's \s is ASCII only, Python's and pydantic's are Unicode, and both sides must agree.
_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())  # U+3000 is the last one
NOT_BLANK_PATTERN = f"[^{_WHITESPACE}]"
MAX_SEGMENTS = 20
MAX_NOTICE_LANGUAGES = 20
MAX_NETWORKS = 256


def _quantity_from_int(value: object) -> object:
    """YAML ``cpu: 1`` is an integer; quantities are int-or-string in Kubernetes, so take it as "1"."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _said_in_words(pattern: str, message: str) -> BeforeValidator:
    """A check of ``pattern`` that says what was expected (``message``, ``{value}`` the value given), run
    before pydantic's own, whose message quotes the regular expression: same verdict, readable words."""
    compiled = re.compile(pattern)

    def check(value: object) -> object:
        if isinstance(value, str) and compiled.search(value) is None:
            raise PydanticCustomError("pattern_in_words", message, {"value": value})
        return value

    return BeforeValidator(check)


# Field before BeforeValidator: the pattern must stay on the string the validator hands on.
Quantity = Annotated[
    str,
    Field(pattern=QUANTITY_PATTERN, max_length=64, json_schema_extra={"x-kubernetes-int-or-string": True}),
    BeforeValidator(_quantity_from_int),
]
Cidr = Annotated[
    str,
    Field(max_length=43, pattern=CIDR_PATTERN),
    _said_in_words(CIDR_PATTERN, "'{value}' is not a network in CIDR notation, e.g. 203.0.113.0/24 or 2001:db8::/32"),
]
SegmentName = Annotated[
    str,
    Field(max_length=40, pattern=SEGMENT_PATTERN),
    _said_in_words(
        SEGMENT_PATTERN,
        "'{value}' is not an attribute name: up to 40 lower-case letters, digits or _, starting with a letter",
    ),
]
LanguageTag = Annotated[
    str,
    Field(max_length=35, pattern=LANGUAGE_TAG_PATTERN),
    _said_in_words(LANGUAGE_TAG_PATTERN, "'{value}' is not a language tag such as en, de or pt-BR"),
]
NoticeText = Annotated[
    str,
    Field(min_length=1, max_length=1000, pattern=NOT_BLANK_PATTERN),
    _said_in_words(NOT_BLANK_PATTERN, "a notice must not be blank"),
]


@dataclass(frozen=True, slots=True)
class CelRule:
    """A CEL rule the API server runs on a node of the tenant, and the message ``kubectl apply`` shows.

    ``field_path`` (relative to the node) is where the error points. A rule reading ``oldSelf`` is a
    transition rule: the API server runs it on updates only, with ``oldSelf`` the stored value.
    """

    rule: str
    message: str
    field_path: str | None = None

    @property
    def is_transition(self) -> bool:
        return "oldSelf" in self.rule

    def as_validation(self) -> dict[str, str]:
        """The ``x-kubernetes-validations`` entry."""
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry

    def require(self, holds: bool) -> None:
        """The pydantic side of the rule: raise the same message when it does not hold."""
        if not holds:
            raise PydanticCustomError("tenant_rule", self.message)


def cel(*rules: CelRule) -> dict[str, Any]:
    """``x-kubernetes-validations`` for a model or field (``json_schema_extra``)."""
    return {"x-kubernetes-validations": [rule.as_validation() for rule in rules]}


class Spec(BaseModel):
    """Base of every part of the spec: camelCase on the wire, unknown fields refused.

    Integers and booleans are ``strict``: the API server refuses ``replicas: "2"``, so must we.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _no_repeats(name: str, what: str) -> Callable[[Any], Any]:
    """A field validator for an ``x-kubernetes-list-type: set`` list: the API server refuses a repeated
    item, so must we (None passes: an absent list)."""

    def check(values: list[Any] | None) -> list[Any] | None:
        if values is not None and len(set(values)) != len(values):
            raise PydanticCustomError("duplicate", "{name} must not repeat {what}", {"name": name, "what": what})
        return values

    return check
