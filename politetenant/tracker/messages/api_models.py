"""Request and response bodies of the HTTP API (the wire contract in docs/architecture.md, Contracts)."""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationInfo

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


def _hand_over(recipient: RecipientIn, info: ValidationInfo) -> Any:
    """With a ``visit`` callable in the validation context, each valid recipient goes to it as soon as
    it is parsed and None takes its place in the list: no model stays alive per recipient, and the
    checks, errors and field paths are those of a plain validation."""
    visit = info.context.get("visit") if isinstance(info.context, dict) else None
    if visit is None:
        return recipient
    visit(recipient)
    return None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Annotated[str, StringConstraints(max_length=998)]
    from_name: Annotated[str, StringConstraints(max_length=200)]
    from_email: Email
    list_name: Annotated[str, StringConstraints(max_length=200)]
    mode: TrackingMode | None = None
    html: Annotated[str, StringConstraints(max_length=MAX_HTML_CHARS)]
    no_track_urls: list[Url] = Field(default_factory=list, max_length=10_000)
    # Items are None when validated with a ``visit`` context (see _hand_over): only the count remains.
    recipients: list[Annotated[RecipientIn, AfterValidator(_hand_over)]] = Field(
        min_length=1, max_length=MAX_RECIPIENTS
    )
    # The language of the tenant's notice to recipients: used when the tenant has a text for it,
    # else the tenant's default language; ignored when the tenant has no notice.
    language: LanguageTag | None = None


# A run of recipients cut from a body (``split_body``), validated exactly as inside MessageIn.
RECIPIENT_BATCH = TypeAdapter(list[Annotated[RecipientIn, AfterValidator(_hand_over)]])


@dataclass(frozen=True, slots=True)
class SplitBody:
    """A message body cut so its recipients can be read a batch at a time.

    pydantic parses a whole JSON document into a tree before validating it: for 100,000 recipients
    that tree is some 50 MB. So the envelope (every field, with the recipients cut down to the first)
    and each run of recipients are validated on their own, by the same models, in JSON mode."""

    envelope: bytes
    count: int  # recipients
    batches: list[tuple[int, int]]  # byte ranges of the raw body, each a comma-separated run of items


_WHITESPACE = re.compile(r"[ \t\n\r]*")
# The C scanner json.loads uses: (value, end) of the JSON value at an offset.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
_SCAN_STRING: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def split_body(raw: bytes | bytearray, batch: int) -> SplitBody | None:
    """The cuts of a well-formed body whose ``recipients`` is a non-empty array within the hard ceiling;
    None for anything else (malformed JSON, a repeated key...), which the caller validates whole to
    answer with pydantic's own error."""
    try:
        text = raw.decode("utf-8")
        cut = _cut(text, batch)
    except (StopIteration, ValueError, IndexError):  # the scanner's ways of saying "not JSON"
        return None
    if cut is None or not 0 < cut[2] <= MAX_RECIPIENTS:
        return None
    (start, end), first, count, runs = cut
    envelope = (text[:start] + "[" + text[first[0] : first[1]] + "]" + text[end:]).encode()
    if raw.isascii():
        return SplitBody(envelope, count, runs)
    # Character offsets to byte offsets, one run at a time.
    at, byte_at, batches = 0, 0, []
    for run_start, run_end in runs:
        byte_start = byte_at + len(text[at:run_start].encode())
        byte_end = byte_start + len(text[run_start:run_end].encode())
        batches.append((byte_start, byte_end))
        at, byte_at = run_end, byte_end
    return SplitBody(envelope, count, batches)


_Cut = tuple[tuple[int, int], tuple[int, int], int, list[tuple[int, int]]]


def _cut(text: str, batch: int) -> _Cut | None:
    """(the recipients array's span, its first item's span, its item count, runs of ``batch`` items)."""
    skip = _WHITESPACE.match
    at = skip(text, 0).end()  # type: ignore[union-attr]
    if text[at] != "{":
        return None
    found: _Cut | None = None
    seen = False
    at += 1
    while True:
        at = skip(text, at).end()  # type: ignore[union-attr]
        if text[at] != '"':
            return None
        key, at = _SCAN_STRING(text, at + 1)
        at = skip(text, at).end()  # type: ignore[union-attr]
        if text[at] != ":":
            return None
        at = skip(text, at + 1).end()  # type: ignore[union-attr]
        if key == "recipients":
            if seen or text[at] != "[":
                return None
            seen = True
            found, at = _items(text, at, batch)
        else:
            at = _SCAN(text, at)[1]
        at = skip(text, at).end()  # type: ignore[union-attr]
        if text[at] == "}":
            break
        if text[at] != ",":
            return None
        at += 1
    if skip(text, at + 1).end() != len(text):  # type: ignore[union-attr]
        return None
    return found


def _items(text: str, at: int, batch: int) -> tuple[_Cut | None, int]:
    skip = _WHITESPACE.match
    start = at
    at = skip(text, at + 1).end()  # type: ignore[union-attr]
    if text[at] == "]":
        return None, at + 1
    runs: list[tuple[int, int]] = []
    run_start, count, first = at, 0, (at, at)
    while True:
        item_start = at
        at = _SCAN(text, at)[1]
        count += 1
        if count == 1:
            first = (item_start, at)
        item_end = at
        if text[at] != "," and text[at] != "]":
            at = skip(text, at).end()  # type: ignore[union-attr]
        if text[at] == "]":
            runs.append((run_start, item_end))
            return ((start, at + 1), first, count, runs), at + 1
        if text[at] != ",":
            raise ValueError("not JSON")
        at = skip(text, at + 1).end()  # type: ignore[union-attr]
        if count % batch == 0:
            runs.append((run_start, item_end))
            run_start = at


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
