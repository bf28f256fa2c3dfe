"""kopf's annotation storages, less the deep copies of whole objects they make on every event.

For every watched event kopf builds the object's *essence* (``DiffBaseStorage.build``: a deep copy of
the whole body, metadata and status included, of which it then drops both) and clears the progress
annotations off it and off the last-handled essence (``ProgressStorage.clear``: a deep copy each).
At 500 tenants and their children these ``copy.deepcopy`` calls were most of kopf's own CPU. The
essences here are exactly kopf's: the same fields removed, the same annotations kept; only the copies
are cheaper (JSON round trips in C, and no copy of the stanzas the essence drops anyway).

kopf also builds both essences, and their diff, for every event of every watched kind, though only the
kinds with change handlers (create, update, resume, delete) read them. The operator watches a dozen
kinds of children for their indices and events alone, so the diff-base storage is told which kinds
have change handlers (``changing``) and gives every other kind no essence at all: the children's
events, most of all events at scale, cost no copy.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any, cast

import kopf
from kopf._cogs.structs import bodies, dicts

# What kopf's essence keeps of metadata (labels, annotations) and what its key naming reads of it.
_METADATA_READ = ("labels", "annotations", "ownerReferences")


def json_copy(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of an object that came as JSON: a JSON round trip (in C) copies it several times
    faster than ``deepcopy``; anything JSON cannot carry is copied by ``deepcopy``."""
    try:
        copied: dict[str, Any] = json.loads(json.dumps(dict(body)))
    except (TypeError, ValueError):
        return copy.deepcopy(dict(body))
    return copied


class ProgressStorage(kopf.AnnotationsProgressStorage):
    """``AnnotationsProgressStorage`` whose ``clear`` copies the essence through JSON."""

    def clear(self, *, essence: bodies.BodyEssence) -> bodies.BodyEssence:
        cleared = cast(bodies.BodyEssence, json_copy(essence))
        annotations = cleared.get("metadata", {}).get("annotations", {})
        keys = {key for key in annotations if self.prefix and key.startswith(f"{self.prefix}/")}
        self.remove_annotations(cleared, keys)
        self.remove_empty_stanzas(cleared)
        return cleared


class DiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """``AnnotationsDiffBaseStorage`` whose ``build`` copies only what the essence keeps: the body less
    its status and with only the metadata kopf reads (when no handler asks for extra fields); for a
    kind outside ``changing`` ((apiVersion, kind) pairs; None: every kind) it builds an empty essence
    and fetches none, as nothing reads them."""

    def __init__(self, *, prefix: str, key: str, changing: Collection[tuple[str, str]] | None = None) -> None:
        super().__init__(prefix=prefix, key=key)
        self.changing = None if changing is None else frozenset(changing)

    def _changes_handled(self, body: Mapping[str, Any]) -> bool:
        return self.changing is None or (body.get("apiVersion"), body.get("kind")) in self.changing

    def fetch(self, *, body: bodies.Body) -> bodies.BodyEssence | None:
        if not self._changes_handled(body):
            return None
        return super().fetch(body=body)

    def build(self, *, body: bodies.Body, extra_fields: Iterable[dicts.FieldSpec] | None = None) -> bodies.BodyEssence:
        if not self._changes_handled(body):
            return cast(bodies.BodyEssence, {})
        extra = list(extra_fields or ())
        if extra:
            return super().build(body=body, extra_fields=extra)
        metadata = body.get("metadata", {})
        trimmed = {key: value for key, value in body.items() if key not in ("status", "metadata")}
        trimmed["metadata"] = {key: metadata[key] for key in _METADATA_READ if key in metadata}
        return super().build(body=kopf.Body(cast(bodies.RawBody, trimmed)), extra_fields=extra)
