"""Templates to objects without parsing YAML per tenant: the layout is parsed once, the values slot in.

Every value a template prints goes through ``tojson`` (see ``tenant``). Rendered with a ``tojson`` that
prints a numbered placeholder instead, a template gives text that depends only on its layout and its
``{% if %}``/``{% for %}`` branches, not on the values: the same for most tenants. That text is parsed
with the YAML loader once and kept as JSON text whose placeholders are then swapped for each
tenant's values as JSON, and ``json.loads`` (C, fast) builds fresh objects for every render. YAML
object construction runs in Python and was a sixth of the operator's CPU at 500 tenants.

The objects are the ones the YAML path gives: a value is what YAML reads back from its ``tojson``
text (JSON is YAML), and a value whose JSON YAML would read differently (a float such as ``1e-05``,
which YAML 1.1 reads as a string) is read by YAML itself. A layout this cannot express (a placeholder
inside a longer string, a key whose value is not a string, a non-JSON scalar such as a date) returns
None and the caller parses the whole text with YAML, as before.
"""

from __future__ import annotations

import contextvars
import json
import math
import re
from collections.abc import Callable
from typing import Any

import yaml

# libyaml's safe loader when PyYAML has it (five times faster, same objects), else the Python one.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MARK = "@polite-slot-"
_SLOT = re.compile(r'"@polite-slot-(\d+)@"')
_SLOT_TEXT = re.compile(r"@polite-slot-(\d+)@")
_LAYOUTS_KEPT = 256  # distinct layouts per process: a few per template (branches), far below this

_slots: contextvars.ContextVar[list[str]] = contextvars.ContextVar("render_slots")
_layouts: dict[str, str | None] = {}


def slot_filter(yaml_json: Callable[..., str]) -> Callable[..., str]:
    """The ``tojson`` of the layout environment: records the value's JSON, prints a placeholder.

    ``yaml_json`` is the YAML path's own ``tojson``; it runs where its checks matter (non-ASCII text,
    whose unpaired surrogates it refuses) or where YAML would read the JSON differently (floats).
    """

    def tojson(value: Any) -> str:
        slots = _slots.get()
        text = json.dumps(value, sort_keys=True)
        if "\\u" in text:
            yaml_json(value, sort_keys=True)  # raises RenderError on an unpaired surrogate
        if not _plain(value):
            read = yaml.load(yaml_json(value, sort_keys=True), Loader=SAFE_LOADER)  # noqa: S506 - a safe loader
            text = json.dumps(read, sort_keys=True)
        slots.append(text)
        return f'"{_MARK}{len(slots) - 1}@"'

    return tojson


def render(render_layout: Callable[[], str]) -> list[dict[str, Any]] | None:
    """The documents of one template render (``render_layout`` renders it with ``slot_filter``), or
    None when its layout cannot be filled in as JSON (the caller then parses the real text as YAML)."""
    slots: list[str] = []
    token = _slots.set(slots)
    try:
        layout_text = render_layout()
    finally:
        _slots.reset(token)
    if layout_text in _layouts:
        skeleton = _layouts[layout_text]
    else:
        skeleton = _skeleton(layout_text)
        if len(_layouts) >= _LAYOUTS_KEPT:
            _layouts.clear()
        _layouts[layout_text] = skeleton
    if skeleton is None:
        return None
    try:
        docs: list[dict[str, Any]] = json.loads(_SLOT.sub(lambda match: slots[int(match[1])], skeleton))
    except ValueError:  # a placeholder key whose value is not a string: JSON has no such key
        return None
    return docs


def _skeleton(layout_text: str) -> str | None:
    """The layout's documents as JSON text with the placeholders in it, or None if JSON cannot carry them."""
    try:
        docs = [doc for doc in yaml.load_all(layout_text, Loader=SAFE_LOADER) if doc is not None]
    except yaml.YAMLError:
        return None
    if not all(isinstance(doc, dict) and _fits(doc) for doc in docs):
        return None
    return json.dumps(docs)


def _fits(node: Any) -> bool:
    """JSON keeps this node as is, and any placeholder in it is a whole string value."""
    if isinstance(node, dict):
        return all(isinstance(k, str) and _whole(k) and _fits(v) for k, v in node.items())
    if isinstance(node, list):
        return all(_fits(item) for item in node)
    if isinstance(node, str):
        return _whole(node)
    if isinstance(node, float):
        return math.isfinite(node)
    return node is None or isinstance(node, (bool, int))


def _whole(text: str) -> bool:
    """No placeholder in ``text``, or ``text`` is exactly one."""
    return _MARK not in text or _SLOT_TEXT.fullmatch(text) is not None


def _plain(value: Any) -> bool:
    """YAML reads this value's JSON exactly as JSON does: no floats (YAML 1.1 reads ``1e-05`` or
    ``Infinity`` as strings), only string keys."""
    if isinstance(value, str) or value is None or isinstance(value, (bool, int)):
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(item) for item in value)
    return False
